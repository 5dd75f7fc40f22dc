"""Classify a UDP payload by its first byte, as RFC 7983 (updated by RFC 9443) lays out.

One 5-tuple carries STUN, DTLS and SRTP/SRTCP at once; the first byte tells
them apart without parsing. The relay uses this to keep STUN on its slow
(verifying) path and everything else on the fast path.
"""

from enum import IntEnum


class PacketClass(IntEnum):
    EMPTY = 0
    STUN = 1
    DTLS = 2
    RTP = 3  # RTP and RTCP share 128..191; rtcp-mux tells them apart by payload type
    ENCAP = 4  # voxgate relay<->transceiver encapsulation (see voxgate.wire.encap)
    OTHER = 5


def _table() -> tuple:
    table = [PacketClass.OTHER] * 256
    for b in range(0, 4):
        table[b] = PacketClass.STUN
    for b in range(20, 64):
        table[b] = PacketClass.DTLS
    for b in range(128, 192):
        table[b] = PacketClass.RTP
    from .encap import MAGIC

    table[MAGIC] = PacketClass.ENCAP
    return tuple(table)


_CLASS_OF_FIRST_BYTE = _table()
# 1 for the first bytes a relay forwards on its fast path: DTLS and SRTP/SRTCP of a known flow
FAST = bytes(1 if c in (PacketClass.DTLS, PacketClass.RTP) else 0 for c in _CLASS_OF_FIRST_BYTE)


def class_table() -> bytes:
    """The class of each first byte, as 256 bytes of ``PacketClass`` values (the C fast path has the twin)."""
    return bytes(_CLASS_OF_FIRST_BYTE)


def classify(data: bytes) -> PacketClass:
    """Return the class of a datagram from its first byte (EMPTY for no bytes)."""
    if not data:
        return PacketClass.EMPTY
    return _CLASS_OF_FIRST_BYTE[data[0]]
