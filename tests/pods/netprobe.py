"""Traffic helper the pod tests run inside pods (stdlib only, started with the test's interpreter).

    netprobe.py serve PORT [BIND]     TCP and UDP echo on PORT; replies "<peer ip> <data>"; prints "ready"
    netprobe.py check TARGET...       TARGET is tcp:IP:PORT, udp:IP:PORT or icmp:IP; prints a JSON object
                                      TARGET -> {"ok": bool, "peer": address the server saw, "error": ...}
    netprobe.py whoami                JSON: interfaces of this netns, /proc/self/cgroup, netns inode

ICMP uses a raw socket (the tests run as root): an echo request with this process's id, and the matching
echo reply from the target.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import sys
import threading
import time

TIMEOUT = 5.0


def serve(port: int, bind: str = "0.0.0.0") -> None:
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind((bind, port))
    tcp.listen(64)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind((bind, port))

    def udp_loop() -> None:
        while True:
            data, peer = udp.recvfrom(2048)
            udp.sendto(peer[0].encode() + b" " + data, peer)

    def handle(conn: socket.socket, peer: tuple[str, int]) -> None:
        with conn:
            conn.settimeout(TIMEOUT)
            try:
                data = conn.recv(2048)
                conn.sendall(peer[0].encode() + b" " + data)
            except OSError:
                pass

    threading.Thread(target=udp_loop, daemon=True).start()
    print("ready", flush=True)
    while True:
        conn, peer = tcp.accept()
        threading.Thread(target=handle, args=(conn, peer), daemon=True).start()


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def icmp_echo(ip: str) -> dict[str, object]:
    ident = os.getpid() & 0xFFFF
    payload = b"palisade-netprobe"
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as s:
        s.settimeout(TIMEOUT)
        for seq in range(1, 4):
            header = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
            packet = struct.pack("!BBHHH", 8, 0, _checksum(header + payload), ident, seq) + payload
            s.sendto(packet, (ip, 0))
            deadline = time.monotonic() + TIMEOUT / 3
            while time.monotonic() < deadline:
                try:
                    data, addr = s.recvfrom(2048)
                except TimeoutError:
                    break
                ihl = (data[0] & 0x0F) * 4
                kind, _code, _sum, rid, rseq = struct.unpack("!BBHHH", data[ihl : ihl + 8])
                if addr[0] == ip and kind == 0 and rid == ident and rseq == seq:
                    return {"ok": True, "peer": addr[0]}
    return {"ok": False, "error": "no echo reply"}


def check(target: str) -> dict[str, object]:
    proto, _, rest = target.partition(":")
    try:
        if proto == "icmp":
            return icmp_echo(rest)
        ip, _, port = rest.rpartition(":")
        token = f"token-{os.getpid()}-{time.monotonic_ns()}".encode()
        if proto == "tcp":
            with socket.create_connection((ip, int(port)), timeout=TIMEOUT) as s:
                s.sendall(token)
                reply = s.recv(2048)
        elif proto == "udp":
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.settimeout(TIMEOUT / 3)
                reply = b""
                for _ in range(3):
                    s.sendto(token, (ip, int(port)))
                    try:
                        reply = s.recv(2048)
                        break
                    except TimeoutError:
                        continue
        else:
            return {"ok": False, "error": f"unknown protocol {proto}"}
        peer, _, echoed = reply.partition(b" ")
        if echoed != token:
            return {"ok": False, "error": f"bad reply {reply!r}"}
        return {"ok": True, "peer": peer.decode()}
    except OSError as exc:
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}


def whoami() -> dict[str, object]:
    with open("/proc/self/cgroup") as f:
        cgroup = [line.strip() for line in f]
    st = os.stat("/proc/self/ns/net")
    return {
        "interfaces": sorted(name for _i, name in socket.if_nameindex()),
        "cgroup": cgroup,
        "netns": [st.st_dev, st.st_ino],
        "pid": os.getpid(),
    }


def main(argv: list[str]) -> int:
    if argv and argv[0] == "serve":
        serve(int(argv[1]), argv[2] if len(argv) > 2 else "0.0.0.0")
        return 0
    if argv and argv[0] == "check":
        print(json.dumps({t: check(t) for t in argv[1:]}))
        return 0
    if argv and argv[0] == "whoami":
        print(json.dumps(whoami()))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
