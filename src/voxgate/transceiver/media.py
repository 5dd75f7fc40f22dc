"""The audio seam between a WebRTC session and the agent: Opus RTP in -> PCM frames, PCM out -> paced Opus RTP
(the pacing is the call layer's, ``call.paced.PacedOut``; here the codec).

Why not aiortc's RTCRtpReceiver/Sender: they run a decoder thread and a
jitter buffer per track (80 ms before the agent hears anything) and an encoder
task per track. Here the receiver decodes each packet as it arrives (reordered
late packets are dropped, gaps are left to Opus PLC-free silence) and one
process-wide 20 ms clock sends every session's next frame, so per-session cost
is one Opus decode and one encode per frame. Codecs come from PyAV (libopus).
"""

from __future__ import annotations

import fractions

import av
from aiortc.rtp import RtpPacket

from ..audio import Framer, Resampler
from ..call.paced import FRAME_MS, PacedOut

OPUS_RATE = 48000
OPUS_FRAME = OPUS_RATE * FRAME_MS // 1000  # 960 samples
TIME_BASE = fractions.Fraction(1, OPUS_RATE)
# libopus encodes from and decodes to these rates natively (RTP timestamps stay at 48 kHz, RFC 7587): an agent
# asking for one of them costs no resampling at all
NATIVE_RATES = (8000, 12000, 16000, 24000, 48000)
DEFAULT_COMPLEXITY = 3  # libopus 0..10: 3 costs ~125 us per 20 ms frame here, 10 costs ~215 us (docs/performance.md)


def frame_bytes(rate: int) -> int:
    """Bytes of one 20 ms frame of s16 mono PCM at ``rate``."""
    return rate * FRAME_MS // 1000 * 2


class OpusIn:
    """The decoder of the client's audio: ``receive(packet, now)`` returns the 20 ms PCM frames (at ``rate``) a packet
    completes, as ``sip.media.PhoneIn`` does (``aiortc_glue.receive_rtp`` hands each packet as it is decrypted)."""

    def __init__(self, rate: int):
        self.rate = rate
        codec_rate = rate if rate in NATIVE_RATES else OPUS_RATE
        self.decoder = av.CodecContext.create("libopus", "r")
        self.decoder.format = "s16"
        self.decoder.layout = "mono"
        self.decoder.sample_rate = codec_rate
        self.resample = Resampler(codec_rate, rate)
        self.last_seq: int | None = None
        self.packets = self.bytes = self.lost = self.late = self.rtcp = 0
        self.last_arrival: float | None = None
        self.max_gap = 0.0  # the longest silence between two packets, in seconds (what a relay failover costs)
        self._framer = Framer(frame_bytes(rate))

    def receive(self, packet: RtpPacket, now: float) -> list[bytes]:
        if self.last_arrival is not None and now - self.last_arrival > self.max_gap:
            self.max_gap = now - self.last_arrival
        self.last_arrival = now
        self.packets += 1
        self.bytes += len(packet.payload)
        if self.last_seq is not None:
            delta = (packet.sequence_number - self.last_seq) & 0xFFFF
            if delta == 0 or delta > 0x8000:  # duplicate or older than what we played: too late to use
                self.late += 1
                return []
            self.lost += delta - 1
        self.last_seq = packet.sequence_number
        if not packet.payload:
            return []
        pkt = av.Packet(packet.payload)
        pkt.pts = packet.timestamp
        pkt.time_base = TIME_BASE
        try:
            frames = self.decoder.decode(pkt)
        except av.error.FFmpegError:
            return []
        if not frames:
            return []
        if frames[0].sample_rate != self.resample.src:  # the decoder chose its own output rate
            self.resample = Resampler(frames[0].sample_rate, self.rate)
        pcm = b"".join(bytes(f.planes[0])[: f.samples * 2] for f in frames)
        return list(self._framer.push(self.resample(pcm)))  # whole 20 ms frames (the resampler's output varies a little)


class OpusOut(PacedOut):
    """The agent's audio as Opus RTP (RTP clock at 48 kHz whatever rate libopus codes at, RFC 7587)."""

    def __init__(self, rate: int, payload_type: int, ssrc: int, bitrate: int = 32000,
                 complexity: int = DEFAULT_COMPLEXITY):
        codec_rate = rate if rate in NATIVE_RATES else OPUS_RATE
        super().__init__(rate, payload_type, ssrc, codec_rate, OPUS_FRAME)
        self.encoder = av.CodecContext.create("libopus", "w")
        self.encoder.bit_rate = bitrate
        self.encoder.format = "s16"
        self.encoder.layout = "mono"
        self.encoder.sample_rate = self.codec_rate
        self.encoder.time_base = fractions.Fraction(1, self.codec_rate)
        self.encoder.options = {"application": "voip", "compression_level": str(complexity)}
        self._pts = 0

    def encode(self, pcm: bytes) -> bytes | None:
        frame = av.AudioFrame(format="s16", layout="mono", samples=self.samples)
        frame.sample_rate = self.codec_rate
        frame.planes[0].update(pcm)
        frame.pts = self._pts
        self._pts += self.samples
        packets = self.encoder.encode(frame)
        return bytes(packets[0]) if packets else None
