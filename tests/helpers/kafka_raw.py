"""Send one hand-built Kafka request from a pod and wait for its answer (exit 0 answered, 1 not).

    python kafka_raw.py fetch-by-id HOST:PORT TOPIC_ID
A Fetch v16 names the topic only by its id (what librdkafka sends when Fetch v13+ is advertised)."""

from __future__ import annotations

import socket
import struct
import sys
import uuid

from palisade.kafka.protocol import encode_request_frame, parse_response, with_size_prefix

TIMEOUT = 4.0


def fetch_by_id(hostport: str, topic_id: str) -> int:
    host, _, port = hostport.rpartition(":")
    body = {
        "MaxWaitMs": 100,
        "MinBytes": 1,
        "MaxBytes": 1 << 20,
        "IsolationLevel": 0,
        "SessionId": 0,
        "SessionEpoch": -1,
        "Topics": [
            {
                "TopicId": str(uuid.UUID(topic_id)),
                "Partitions": [
                    {
                        "Partition": 0,
                        "CurrentLeaderEpoch": -1,
                        "FetchOffset": 0,
                        "LastFetchedEpoch": -1,
                        "LogStartOffset": -1,
                        "PartitionMaxBytes": 1 << 20,
                    }
                ],
            }
        ],
        "ForgottenTopicsData": [],
        "RackId": "",
    }
    frame = encode_request_frame(1, 16, 77, "raw-fetch", body)
    with socket.create_connection((host, int(port)), timeout=TIMEOUT) as s:
        s.settimeout(TIMEOUT)
        s.sendall(with_size_prefix(frame))
        try:
            head = s.recv(4, socket.MSG_WAITALL)
            (size,) = struct.unpack(">i", head)
            data = b""
            while len(data) < size:
                data += s.recv(size - len(data))
        except (OSError, struct.error) as exc:
            print(f"failed: no answer ({exc})")
            return 1
    resp = parse_response(data, 1, 16)
    print(f"answered: correlation id {resp.correlation_id}")
    return 0 if resp.correlation_id == 77 else 1


def produce_two(hostport: str, first: str, second: str, size: int) -> int:
    """One Produce v9 naming ``first`` (with ``size`` bytes of records, so ``second`` arrives in a later TCP
    segment) and then ``second``. Prints answered / reset / timeout; exit 0 only when answered."""
    host, _, port = hostport.rpartition(":")
    records = bytes(size)
    body = {
        "TransactionalId": None,
        "Acks": 1,
        "TimeoutMs": 3000,
        "TopicData": [
            {"Name": first, "PartitionData": [{"Index": 0, "Records": records}]},
            {"Name": second, "PartitionData": [{"Index": 0, "Records": b"x" * 64}]},
        ],
    }
    frame = encode_request_frame(0, 9, 91, "raw-produce", body)
    import time

    t0 = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=TIMEOUT) as s:
        s.settimeout(TIMEOUT * 2)
        try:
            s.sendall(with_size_prefix(frame))
            head = s.recv(4)
        except ConnectionResetError:
            print(f"reset after {time.monotonic() - t0:.2f} s")
            return 1
        except TimeoutError:
            print("timeout")
            return 1
    print("reset" if not head else "answered")
    return 0 if head else 1


if __name__ == "__main__":
    if sys.argv[1] == "fetch-by-id":
        sys.exit(fetch_by_id(sys.argv[2], sys.argv[3]))
    if sys.argv[1] == "produce-two":
        sys.exit(produce_two(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])))
    sys.exit(f"unknown command {sys.argv[1]}")
