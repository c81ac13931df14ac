"""Test client run inside a pod: `tcp HOST PORT`, `udp HOST PORT`, `ping HOST` (ICMP echo via the ping tool).
Exit 0 when the peer answered, 1 when it did not (timeout, refused, reset). Prints what happened.

`hold HOST PORT` keeps one TCP connection open: it prints ``connected``, then sends every line read from stdin
and prints the answer (or ``FAIL`` and the error); see helpers.held."""

from __future__ import annotations

import os
import socket
import struct
import sys

TIMEOUT = float(os.environ.get("NETCLIENT_TIMEOUT", "1.5"))


def tcp(host: str, port: int) -> int:
    try:
        with socket.create_connection((host, port), timeout=TIMEOUT) as s:
            s.settimeout(TIMEOUT)
            s.sendall(b"hello\n")
            data = s.recv(100)
            print(data.decode().strip())
            return 0 if data.startswith(b"echo hello") else 1
    except OSError as exc:
        print(f"failed: {exc}")
        return 1


def udp(host: str, port: int) -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(TIMEOUT)
    try:
        s.sendto(b"hello", (host, port))
        data, _ = s.recvfrom(100)
        print(data.decode())
        return 0 if data == b"echo hello" else 1
    except OSError as exc:
        print(f"failed: {exc}")
        return 1


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ping(host: str) -> int:
    """One ICMP echo request over a raw socket (we are root in the pod); 0 when the echo reply comes."""
    ident = os.getpid() & 0xFFFF
    hdr = struct.pack("!BBHHH", 8, 0, 0, ident, 1) + b"palisade"
    pkt = hdr[:2] + struct.pack("!H", _csum(hdr)) + hdr[4:]
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    s.settimeout(TIMEOUT)
    s.sendto(pkt, (host, 0))
    try:
        while True:
            data, addr = s.recvfrom(1500)
            ihl = (data[0] & 0x0F) * 4
            typ, _, _, rid, _ = struct.unpack("!BBHHH", data[ihl : ihl + 8])
            if typ == 0 and rid == ident and addr[0] == host:
                print(f"echo reply from {host}")
                return 0
    except OSError as exc:
        print(f"failed: {exc}")
        return 1


def connect(host: str, port: int) -> int:
    """Only the TCP handshake (for servers that speak first or not at all, e.g. a Kafka broker)."""
    try:
        with socket.create_connection((host, port), timeout=TIMEOUT):
            print("connected")
            return 0
    except OSError as exc:
        print(f"failed: {exc}")
        return 1


def hold(host: str, port: int) -> int:
    """A long-lived connection driven line by line from stdin (its answers, or FAIL, on stdout)."""
    s = socket.create_connection((host, port), timeout=3)
    s.settimeout(3)
    print("connected", flush=True)
    for line in sys.stdin:
        try:
            s.sendall(line.encode())
            print(s.recv(100).decode().strip(), flush=True)
        except OSError as e:
            print("FAIL", e, flush=True)
    return 0


if __name__ == "__main__":
    kind, host = sys.argv[1], sys.argv[2]
    if kind == "hold":
        sys.exit(hold(host, int(sys.argv[3])))
    if kind == "connect":
        sys.exit(connect(host, int(sys.argv[3])))
    if kind == "tcp":
        sys.exit(tcp(host, int(sys.argv[3])))
    if kind == "udp":
        sys.exit(udp(host, int(sys.argv[3])))
    if kind == "ping":
        sys.exit(ping(host))
    sys.exit(f"unknown kind {kind}")
