"""RFC 4571 framing: datagrams over a TCP stream, each behind a 2-byte big-endian length (what ICE-TCP, RFC 6544,
carries STUN, DTLS and SRTP in). Sans-IO: bytes in, whole frames out.

``max_frame`` bounds one frame: WebRTC packets stay under the path MTU (~1200–1500 bytes), so a length far above it
is garbage or an attack, not a packet; and the bytes buffered while a frame is incomplete are bounded by it too.
"""

from __future__ import annotations

import struct

MAX_FRAME = 4096


class FramingError(ValueError):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def frame(data: bytes) -> bytes:
    if len(data) > 0xFFFF:
        raise FramingError("frame_too_large")
    return struct.pack("!H", len(data)) + data


class Deframer:
    """Feed stream bytes, get complete frames. Raises ``FramingError`` on a zero or oversized length (the stream
    cannot be resynchronised after that: close it)."""

    def __init__(self, max_frame: int = MAX_FRAME):
        self.max_frame = max_frame
        self.buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self.buf += data
        out = []
        while len(self.buf) >= 2:
            (n,) = struct.unpack_from("!H", self.buf)
            if n == 0:
                raise FramingError("empty_frame")
            if n > self.max_frame:
                raise FramingError("frame_too_large")
            if len(self.buf) < 2 + n:
                break
            out.append(bytes(self.buf[2:2 + n]))
            del self.buf[:2 + n]
        return out

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame held."""
        return len(self.buf)
