"""Relay <-> transceiver encapsulation: the client's real address rides with every packet.

The relay forwards a client's datagram to the transceiver with this header in
front, and the transceiver sends its replies back the same way, naming the
client. So the transceiver sees true client addresses (for XOR-MAPPED-ADDRESS
and per-client demux) and the relay's return path needs no lookup beyond "is
this a live flow of that transceiver".

Header, big-endian::

    0  1 byte   MAGIC (0xF1: "F" for forwarded, low nibble = version 1; RFC 7983 leaves 192..255 unused,
                so it cannot be mistaken for STUN, DTLS or RTP on a socket that takes both)
    1  1 byte   flags: bit 0 = IPv6, bit 1 = VERIFIED (transceiver -> relay only: the client has proven
                it receives what we send, e.g. finished DTLS; lifts the relay's anti-amplification cap),
                bit 2 = TCP (relay -> transceiver only: the client reached the relay over ICE-TCP, RFC 6544),
                bit 3 = FORGET (transceiver -> relay only: a control message, never sent to the client. The client's
                packets fail here (a STUN check for no live call, or one that fails integrity): drop its flow unless
                it is VERIFIED. The payload, if any, is the server ufrag the check named, whose call has ended: the
                relay learns no new flow from that token again)
    2  2 bytes  client port
    4  4|16     client IP
    .  ...      the original datagram

8 bytes of overhead for IPv4 clients, 20 for IPv6.
"""

from __future__ import annotations

import ipaddress
import socket
import struct

MAGIC = 0xF1
FLAG_IPV6 = 0x01
FLAG_VERIFIED = 0x02
FLAG_TCP = 0x04
FLAG_FORGET = 0x08
_KNOWN_FLAGS = FLAG_IPV6 | FLAG_VERIFIED | FLAG_TCP | FLAG_FORGET
V4_HEADER_LEN = 8
V6_HEADER_LEN = 20


class EncapError(ValueError):
    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def header(client: tuple[str, int], verified: bool = False, tcp: bool = False) -> bytes:
    """The header for ``client`` (ip, port); precompute it once per flow."""
    ip = ipaddress.ip_address(client[0])
    if ip.version == 6 and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    flags = (FLAG_IPV6 if ip.version == 6 else 0) | (FLAG_VERIFIED if verified else 0) | (FLAG_TCP if tcp else 0)
    return struct.pack("!BBH", MAGIC, flags, client[1]) + ip.packed


def forget(client: tuple[str, int], ufrag: str | bytes = b"") -> bytes:
    """The FORGET control message for ``client``'s flow; with ``ufrag``, its token is revoked for new flows too."""
    if isinstance(ufrag, str):
        ufrag = ufrag.encode()
    hdr = bytearray(header(client))
    hdr[1] |= FLAG_FORGET
    return bytes(hdr) + ufrag


def encapsulate(client: tuple[str, int], payload: bytes, verified: bool = False, tcp: bool = False) -> bytes:
    return header(client, verified, tcp) + payload


def over_tcp(data: bytes) -> bool:
    """Whether an encapsulated datagram (already decapsulated without error) carries the TCP flag."""
    return len(data) > 1 and bool(data[1] & FLAG_TCP)


def read_header(data, size: int | None = None) -> tuple[int, int, tuple[str, int]] | None:
    """``(header length, flags, client)`` of the header at the start of ``data`` (bytes, or a buffer holding
    ``size`` bytes), or None if it is malformed. The one header reader: ``decapsulate`` and the relay's pure-Python
    fast path both use it."""
    n = len(data) if size is None else size
    if n < V4_HEADER_LEN or data[0] != MAGIC or data[1] & ~_KNOWN_FLAGS:
        return None
    flags = data[1]
    hlen = V6_HEADER_LEN if flags & FLAG_IPV6 else V4_HEADER_LEN
    if n < hlen:
        return None
    ip = socket.inet_ntop(socket.AF_INET6 if hlen == V6_HEADER_LEN else socket.AF_INET, bytes(data[4:hlen]))
    return hlen, flags, (ip, (data[2] << 8) | data[3])


def decapsulate(data: bytes) -> tuple[tuple[str, int], bool, bytes]:
    """Return ``(client, verified, payload)``; raise ``EncapError`` naming what is malformed."""
    parsed = read_header(data)
    if parsed is None:
        _raise_malformed(data)
    hlen, flags, client = parsed
    return client, bool(flags & FLAG_VERIFIED), bytes(data[hlen:])


def _raise_malformed(data: bytes):
    """Say why ``read_header`` refused ``data``."""
    if len(data) < V4_HEADER_LEN:
        raise EncapError("truncated", f"{len(data)} bytes")
    if data[0] != MAGIC:
        raise EncapError("bad_magic", f"0x{data[0]:02x}")
    if data[1] & ~_KNOWN_FLAGS:
        raise EncapError("bad_flags", f"0x{data[1]:02x}")
    raise EncapError("truncated", f"{len(data)} bytes, header needs {V6_HEADER_LEN}")
