"""PCM helpers shared by the transceiver and the agent: s16 mono resampling through libswresample (PyAV)."""

from __future__ import annotations

import av


class Resampler:
    """s16 mono PCM from one rate to another; identity when the rates match. Keeps its filter state, so feed it
    one continuous stream."""

    def __init__(self, src: int, dst: int):
        self.src, self.dst = src, dst
        self.r = av.AudioResampler(format="s16", layout="mono", rate=dst) if src != dst else None

    def __call__(self, pcm: bytes) -> bytes:
        if self.r is None or not pcm:
            return pcm
        frame = av.AudioFrame(format="s16", layout="mono", samples=len(pcm) // 2)
        frame.sample_rate = self.src
        frame.planes[0].update(pcm)
        return b"".join(bytes(f.planes[0])[: f.samples * 2] for f in self.r.resample(frame))


class Framer:
    """Cuts a PCM stream into fixed-size frames, keeping the remainder for the next push."""

    def __init__(self, frame_bytes: int):
        self.frame_bytes = frame_bytes
        self.partial = b""

    def push(self, pcm: bytes) -> list[bytes]:
        data, n = self.partial + pcm, self.frame_bytes
        cut = len(data) - len(data) % n
        self.partial = data[cut:]
        return [data[i:i + n] for i in range(0, cut, n)]

    def flush(self) -> list[bytes]:
        """The remainder as one last frame, padded with silence."""
        tail, self.partial = self.partial, b""
        return [tail.ljust(self.frame_bytes, b"\0")] if tail else []

    def clear(self):
        self.partial = b""


class AvCodec:
    """One of libavcodec's audio codecs <-> s16 mono PCM at ``rate``: a payload in, PCM out, and back."""

    def __init__(self, name: str, rate: int):
        self.rate = rate
        self.dec = self._codec(name, "r", rate)
        self.enc = self._codec(name, "w", rate)

    @staticmethod
    def _codec(name: str, mode: str, rate: int):
        c = av.CodecContext.create(name, mode)
        c.sample_rate, c.layout, c.format = rate, "mono", "s16"
        return c

    def decode(self, data: bytes) -> bytes:
        if not data:
            return b""
        return b"".join(bytes(f.planes[0])[: f.samples * 2] for f in self.dec.decode(av.Packet(data)))

    def encode(self, pcm: bytes) -> bytes:
        if len(pcm) < 2:
            return b""
        frame = av.AudioFrame(format="s16", layout="mono", samples=len(pcm) // 2)
        frame.sample_rate = self.rate
        frame.planes[0].update(pcm[: len(pcm) // 2 * 2])
        return b"".join(bytes(p) for p in self.enc.encode(frame))


class G711(AvCodec):
    """G.711 μ-law (``audio/pcmu``) or A-law (``audio/pcma``) at 8 kHz <-> s16 mono PCM, through libavcodec."""

    RATE = 8000
    CODECS = {"audio/pcmu": "pcm_mulaw", "audio/pcma": "pcm_alaw"}

    def __init__(self, kind: str):
        super().__init__(self.CODECS[kind], self.RATE)
