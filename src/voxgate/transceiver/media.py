"""The audio seam between a WebRTC session and the agent: Opus RTP in -> PCM frames, PCM out -> paced Opus RTP.

Why not aiortc's RTCRtpReceiver/Sender: they run a decoder thread and a
jitter buffer per track (80 ms before the agent hears anything) and an encoder
task per track. Here the receiver decodes each packet as it arrives (reordered
late packets are dropped, gaps are left to Opus PLC-free silence) and one
process-wide 20 ms clock sends every session's next frame, so per-session cost
is one Opus decode and one encode per frame. Codecs come from PyAV (libopus).
"""

from __future__ import annotations

import fractions
import random
import time
from collections import deque

import av
from aiortc.rtp import RtcpSenderInfo, RtcpSrPacket, RtpPacket

from ..wire.pcm import Framer, Resampler

OPUS_RATE = 48000
FRAME_MS = 20
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
    """Registered on an aiortc RTCDtlsTransport's RTP router as the receiver of the client's audio."""

    def __init__(self, rate: int, on_pcm):
        self.rate = rate
        self.on_pcm = on_pcm  # callable(bytes | None); None = the stream ended
        codec_rate = rate if rate in NATIVE_RATES else OPUS_RATE
        self.decoder = av.CodecContext.create("libopus", "r")
        self.decoder.format = "s16"
        self.decoder.layout = "mono"
        self.decoder.sample_rate = codec_rate
        self.resample = Resampler(codec_rate, rate)
        self.last_seq: int | None = None
        self.packets = self.bytes = self.lost = self.late = self.rtcp = 0
        self.first_packet_at: float | None = None
        self._framer = Framer(frame_bytes(rate))

    async def _handle_rtp_packet(self, packet: RtpPacket, arrival_time_ms: int) -> None:
        self.packets += 1
        self.bytes += len(packet.payload)
        if self.first_packet_at is None:
            self.first_packet_at = time.monotonic()
        if self.last_seq is not None:
            delta = (packet.sequence_number - self.last_seq) & 0xFFFF
            if delta == 0 or delta > 0x8000:  # duplicate or older than what we played: too late to use
                self.late += 1
                return
            self.lost += delta - 1
        self.last_seq = packet.sequence_number
        if not packet.payload:
            return
        pkt = av.Packet(packet.payload)
        pkt.pts = packet.timestamp
        pkt.time_base = TIME_BASE
        try:
            frames = self.decoder.decode(pkt)
        except av.error.FFmpegError:
            return
        if not frames:
            return
        if frames[0].sample_rate != self.resample.src:  # the decoder chose its own output rate
            self.resample = Resampler(frames[0].sample_rate, self.rate)
        pcm = b"".join(bytes(f.planes[0])[: f.samples * 2] for f in frames)
        self._emit(self.resample(pcm))

    def _emit(self, pcm: bytes):
        """Hand the agent whole 20 ms frames (the resampler may return a few samples more or less)."""
        for frame in self._framer.push(pcm):
            self.on_pcm(frame)

    async def _handle_rtcp_packet(self, packet) -> None:
        self.rtcp += 1

    def _handle_disconnect(self) -> None:
        self.on_pcm(None)


class OpusOut:
    """Queue of agent PCM, turned into one Opus RTP packet per tick of the shared 20 ms clock."""

    def __init__(self, rate: int, payload_type: int, ssrc: int, bitrate: int = 32000,
                 complexity: int = DEFAULT_COMPLEXITY):
        self.rate, self.pt, self.ssrc = rate, payload_type, ssrc
        self.codec_rate = rate if rate in NATIVE_RATES else OPUS_RATE
        self.samples = self.codec_rate * FRAME_MS // 1000
        self.encoder = av.CodecContext.create("libopus", "w")
        self.encoder.bit_rate = bitrate
        self.encoder.format = "s16"
        self.encoder.layout = "mono"
        self.encoder.sample_rate = self.codec_rate
        self.encoder.time_base = fractions.Fraction(1, self.codec_rate)
        self.encoder.options = {"application": "voip", "compression_level": str(complexity)}
        self.resample = Resampler(rate, self.codec_rate)
        self.frames: deque[bytes] = deque()  # 20 ms at codec_rate each
        self._framer = Framer(self.samples * 2)
        self.seq = random.getrandbits(16)
        self.ts_base = random.getrandbits(32)
        self.talking = False
        self.last_index = -1  # the clock slot of the last packet sent
        self.packets = self.bytes = 0
        self.first_packet_at: float | None = None
        self._pts = 0

    def write(self, pcm: bytes) -> None:
        self.frames.extend(self._framer.push(self.resample(pcm)))

    def flush(self) -> None:
        """Pad and queue a trailing partial frame (end of an utterance)."""
        self.frames.extend(self._framer.flush())

    def clear(self) -> int:
        """Drop everything queued at once (barge-in); returns the milliseconds dropped."""
        dropped = len(self.frames) * FRAME_MS
        self.frames.clear()
        self._framer.clear()
        return dropped

    @property
    def queued_ms(self) -> int:
        return len(self.frames) * FRAME_MS

    def tick(self, tick_index: int) -> bytes | None:
        """The RTP packet for this slot of the 20 ms clock, or None when there is nothing to say (or this slot
        was already used: at most one packet per slot)."""
        if not self.frames:
            self.talking = False
            return None
        if tick_index <= self.last_index:
            return None
        self.last_index = tick_index
        frame = av.AudioFrame(format="s16", layout="mono", samples=self.samples)
        frame.sample_rate = self.codec_rate
        frame.planes[0].update(self.frames.popleft())
        frame.pts = self._pts
        self._pts += self.samples
        packets = self.encoder.encode(frame)
        if not packets:
            return None
        payload = bytes(packets[0])
        rtp = RtpPacket(payload_type=self.pt, marker=0 if self.talking else 1,
                        sequence_number=self.seq, timestamp=(self.ts_base + tick_index * OPUS_FRAME) & 0xFFFFFFFF,
                        ssrc=self.ssrc, payload=payload)
        self.talking = True
        self.seq = (self.seq + 1) & 0xFFFF
        self.packets += 1
        self.bytes += len(payload)
        if self.first_packet_at is None:
            self.first_packet_at = time.monotonic()
        return rtp.serialize()

    def sender_report(self, tick_index: int) -> bytes:
        ntp = int((time.time() + 2208988800) * (1 << 32))
        sr = RtcpSrPacket(ssrc=self.ssrc, sender_info=RtcpSenderInfo(
            ntp_timestamp=ntp, rtp_timestamp=(self.ts_base + tick_index * OPUS_FRAME) & 0xFFFFFFFF,
            packet_count=self.packets, octet_count=self.bytes))
        return bytes(sr)
