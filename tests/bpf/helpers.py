"""Small helpers for the privileged tests: sockets inside a namespace, crafted frames, event decoding."""

from __future__ import annotations

import socket
import struct

from palisade.bpf import netns

from .mirrors import LtEvent


def udp_socket(ns: str, bind_ip: str | None = None, port: int = 0) -> socket.socket:
    """A UDP socket living in namespace ``ns`` (created while this thread is switched into it)."""
    with netns.entered(ns):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if bind_ip is not None:
        s.bind((bind_ip, port))
    return s


def delivered(
    rx: socket.socket, tx: socket.socket, dst: tuple[str, int], payload: bytes, wait: float = 0.3
) -> bool:
    """Send one datagram and report whether it arrived."""
    tx.sendto(payload, dst)
    rx.settimeout(wait)
    try:
        while True:
            data, _ = rx.recvfrom(2048)
            if data == payload:
                return True
    except TimeoutError:
        return False


def udp_frame(src: str, dst: str, sport: int, dport: int, payload: bytes = b"x") -> bytes:
    """Ethernet + IPv4 + UDP, checksums zero (the program does not check them)."""
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, socket.inet_aton(src), socket.inet_aton(dst)
    )
    return bytes(6) + bytes.fromhex("020000000001") + b"\x08\x00" + ip + udp


def event(raw: bytes) -> LtEvent:
    return LtEvent.from_buffer_copy(raw)


def ip_of(addr_n: int) -> str:
    return socket.inet_ntoa(struct.pack("=I", addr_n))
