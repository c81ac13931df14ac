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


if __name__ == "__main__":
    if sys.argv[1] == "fetch-by-id":
        sys.exit(fetch_by_id(sys.argv[2], sys.argv[3]))
    sys.exit(f"unknown command {sys.argv[1]}")
