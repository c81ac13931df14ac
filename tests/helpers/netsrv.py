"""A tiny multi-port server for tests, run inside a pod: TCP echo ("hello\n" -> "echo hello\n"; each line
answered, so a test can hold a connection open and use it again), UDP echo, on the ports given."""

from __future__ import annotations

import argparse
import selectors
import socket


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tcp", type=int, action="append", default=[])
    ap.add_argument("--udp", type=int, action="append", default=[])
    ap.add_argument("--bind", default="0.0.0.0")
    a = ap.parse_args()
    sel = selectors.DefaultSelector()
    for p in a.tcp:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((a.bind, p))
        s.listen(128)
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, "accept")
    for p in a.udp:
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.bind((a.bind, p))
        sel.register(u, selectors.EVENT_READ, "udp")
    print("ready", flush=True)
    bufs: dict[socket.socket, bytes] = {}
    while True:
        for key, _ in sel.select():
            s = key.fileobj
            assert isinstance(s, socket.socket)
            if key.data == "accept":
                try:
                    c, _ = s.accept()
                except OSError:
                    continue
                c.setblocking(False)
                sel.register(c, selectors.EVENT_READ, "conn")
                bufs[c] = b""
            elif key.data == "udp":
                data, addr = s.recvfrom(65535)
                s.sendto(b"echo " + data, addr)
            else:
                try:
                    data = s.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    sel.unregister(s)
                    s.close()
                    bufs.pop(s, None)
                    continue
                buf = bufs[s] + data
                while b"\n" in buf:
                    line, _, buf = buf.partition(b"\n")
                    try:
                        s.sendall(b"echo " + line + b"\n")
                    except OSError:
                        pass
                bufs[s] = buf


if __name__ == "__main__":
    main()
