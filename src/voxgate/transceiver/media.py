"""The audio seam between a WebRTC session and the agent: Opus RTP in -> PCM frames, PCM out -> paced Opus RTP.

Why not aiortc's RTCRtpReceiver/Sender: they run a decoder thread and a
jitter buffer per track (80 ms before the agent hears anything) and an encoder
task per track. Here the receiver decodes each packet as it arrives (reordered
late packets are dropped, gaps are left to Opus PLC-free silence) and one
process-wide 20 ms clock sends every session's next frame, so per-session cost
is one Opus decode and one encode per frame. Codecs come from PyAV (libopus).
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import random
import time
from collections import deque
from typing import AsyncIterator

import av
from aiortc.rtp import RtcpSenderInfo, RtcpSrPacket, RtpPacket

from ..agent.shell.base import CallIO, until_none
from ..audio import Framer, Resampler

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
    """The receiver of the client's audio: ``aiortc_glue.receive_rtp`` hands it each packet as it is decrypted."""

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
        self.last_arrival: float | None = None
        self.max_gap = 0.0  # the longest silence between two packets, in seconds (what a relay failover costs)
        self._framer = Framer(frame_bytes(rate))

    def on_rtp(self, packet: RtpPacket) -> None:
        now = time.monotonic()
        if self.last_arrival is not None and now - self.last_arrival > self.max_gap:
            self.max_gap = now - self.last_arrival
        self.last_arrival = now
        self.packets += 1
        self.bytes += len(packet.payload)
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

    def on_rtcp(self, packet) -> None:
        self.rtcp += 1

    def on_end(self) -> None:
        self.on_pcm(None)


class PacedOut:
    """Queue of agent PCM, sent as RTP on the audio's own clock (sans-IO: the caller passes ``now``); a subclass
    says how a 20 ms frame is encoded (``encode``) and how far the RTP clock moves per frame (``ts_step``).

    A talk spurt starts the moment audio is written to an idle call. Within a spurt each 20 ms frame is due at
    its media time (at most ``LEAD`` early), so queued speech is paced at real time; a frame written late (an
    echo or a streamed reply arriving behind its media time) goes at once and keeps its contiguous timestamp,
    so lateness never turns into a standing queue. Nothing to send for longer than ``GAP`` ends the spurt: the
    next one starts with the marker bit and a timestamp that reflects the silence."""

    LEAD = 0.02
    GAP = 0.04
    CLOSE_FRAMES = 3  # silence sent after a cut: the decoder plays silence, not its loss concealment
    # True: a packet every 20 ms for the whole call, silence when there is nothing to say (a phone line: carriers and
    # SBCs hang up on a call without media, jitter buffers resynchronise on every gap); each talk spurt's first
    # packet still carries the marker bit. False (WebRTC): packets only while speaking, as browsers expect
    continuous = False

    def __init__(self, rate: int, payload_type: int, ssrc: int, codec_rate: int, ts_step: int):
        self.rate, self.pt, self.ssrc = rate, payload_type, ssrc
        self.codec_rate, self.ts_step = codec_rate, ts_step
        self.samples = codec_rate * FRAME_MS // 1000
        self.resample = Resampler(rate, codec_rate)
        self.frames: deque[bytes] = deque()  # 20 ms at codec_rate each
        self._framer = Framer(self.samples * 2)
        self.seq = random.getrandbits(16)
        self.ts_base = random.getrandbits(32)
        self.spurt_start: float | None = None  # when the current talk spurt began
        self.spurt_frames = 0
        self.spurt_ts = 0  # unwrapped RTP timestamp of the spurt's first frame
        self.last_ts: int | None = None  # unwrapped timestamp of the last packet
        self.packets = self.bytes = 0
        self.paused = False
        self._closing = 0  # silence frames still to send before a pause goes quiet
        self._filled = False  # continuous: the last packet was filling silence (the next speech starts a spurt)

    def encode(self, pcm: bytes) -> bytes | None:
        """One 20 ms frame of s16 PCM at ``codec_rate`` as an RTP payload (None: the codec holds it for now)."""
        raise NotImplementedError

    def write(self, pcm: bytes) -> None:
        self.frames.extend(self._framer.push(self.resample(pcm)))

    def flush(self) -> None:
        """Pad and queue a trailing partial frame (end of an utterance)."""
        self.frames.extend(self._framer.flush())

    def clear(self) -> int:
        """Drop everything queued at once (barge-in); returns the milliseconds dropped. A talk spurt cut short ends
        with ``CLOSE_FRAMES`` of silence: when packets simply stop, the browser's jitter buffer conceals the "loss"
        by stretching the last speech for ~150 ms (bench/bargein.py measured the agent audible ~225 ms after the
        user's onset that way)."""
        dropped = len(self.frames) * FRAME_MS
        unclosed = not self.paused or self._closing  # a pause that sent its closing silence needs no more
        self.frames.clear()
        self._framer.clear()
        self._closing = 0
        if dropped and self.spurt_start is not None and unclosed:
            self.frames.extend([b"\0" * (self.samples * 2)] * self.CLOSE_FRAMES)
            self._closing = self.CLOSE_FRAMES if self.paused else 0
        return dropped

    def pause(self, on: bool, now: float) -> None:
        """Hold the queue (speech over the agent, not yet known to be a turn) or play on. A spurt paused mid-way
        ends with ``CLOSE_FRAMES`` of silence, as a cut does; playing on starts a new spurt where it stopped."""
        if on and not self.paused and self.frames and not self.idle(now):
            self.frames.extendleft([b"\0" * (self.samples * 2)] * self.CLOSE_FRAMES)
            self._closing = self.CLOSE_FRAMES
        if not on:
            if self._closing:  # the closing silence not yet sent is not worth sending now
                for _ in range(self._closing):
                    self.frames.popleft()
            self._closing = 0
        self.paused = on

    @property
    def filling(self) -> bool:
        """The last packet was silence filling the line (``continuous``), not the agent's audio."""
        return self._filled

    @property
    def queued_ms(self) -> int:
        return len(self.frames) * FRAME_MS

    def idle(self, now: float) -> bool:
        """No talk spurt in progress: audio written now would start one (and go out at once)."""
        return self.spurt_start is None or now - (self.spurt_start + self.spurt_frames * FRAME_MS / 1000) > self.GAP

    def next_packet(self, now: float) -> bytes | None:
        """The next RTP packet if one is due at ``now``, else None."""
        silent = not self.frames or (self.paused and not self._closing)
        if silent and not self.continuous:
            return None
        marker = 0
        if self.idle(now):
            wall_ts = int(now * 50) * self.ts_step  # the media clock follows wall time across silences
            self.spurt_ts = wall_ts if self.last_ts is None else max(wall_ts, self.last_ts + self.ts_step)
            self.spurt_start, self.spurt_frames, marker = now, 0, 1
        elif self.spurt_start + self.spurt_frames * FRAME_MS / 1000 > now + self.LEAD:
            return None  # ahead of real time: wait
        if silent:  # continuous: the line carries silence between the agent's words
            payload = self.encode(b"\0" * (self.samples * 2))
            self._filled = True  # (the marker stays only on the stream's first packet)
        else:
            payload = self.encode(self.frames.popleft())
            if self._filled:  # speech after filling silence: a talk spurt begins, on the same clock
                marker, self._filled = 1, False
        if self._closing and not silent:
            self._closing -= 1
        ts = self.spurt_ts + self.spurt_frames * self.ts_step
        self.spurt_frames += 1
        if not payload:
            return None
        self.last_ts = ts
        rtp = RtpPacket(payload_type=self.pt, marker=marker, sequence_number=self.seq,
                        timestamp=(self.ts_base + ts) & 0xFFFFFFFF, ssrc=self.ssrc, payload=payload)
        self.seq = (self.seq + 1) & 0xFFFF
        self.packets += 1
        self.bytes += len(payload)
        return rtp.serialize()

    def sender_report(self, now: float) -> bytes:
        wall = int(now * 50) * self.ts_step
        ts = wall if self.last_ts is None else max(self.last_ts, wall)
        ntp = int((time.time() + 2208988800) * (1 << 32))
        sr = RtcpSrPacket(ssrc=self.ssrc, sender_info=RtcpSenderInfo(
            ntp_timestamp=ntp, rtp_timestamp=(self.ts_base + ts) & 0xFFFFFFFF,
            packet_count=self.packets, octet_count=self.bytes))
        return bytes(sr)


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


class PacedCall(CallIO):
    """The ``CallIO`` half a paced transport shares (a WebRTC session, a phone call): audio from ``_audio_q``,
    events from ``_event_q``, output queued on ``out`` (a ``PacedOut``) and sent by ``tick(now)``, which the
    transceiver's shared clock calls too; ``_sent`` resolves ``audio_sent()`` as packets leave. A transport says
    when it can send and how a packet goes out (``can_send``, ``send_rtp``, ``send_rtcp``)."""

    state: str
    out: PacedOut
    agent: object
    call_id: str

    def tick(self, now: float, limit: int = 2) -> None:
        """Send what is due of this call's audio at ``now`` (at most ``limit`` packets: a call that fell behind
        catches up over a few steps, not in one burst), and a sender report every 5 s. Synchronous: the clock
        calls it for many calls per step, so no coroutine per packet."""
        if not self.can_send():
            return
        for _ in range(limit):
            data = self.out.next_packet(now)
            if data is None:
                break
            if not self.out.filling:  # the agent's audio, not a phone line's silence between its words
                if "first_audio_out" not in self.times:
                    self.times["first_audio_out"] = now
                self._sent.resolve(now)
            self.send_rtp(data)
            self._queue_changed()
        if self.out.packets and now >= self._next_report:
            self._next_report = now + 5.0
            self.send_rtcp(self.out.sender_report(now))

    def can_send(self) -> bool:
        """The transport is up: packets may go (until then what is due waits in the queue)."""
        raise NotImplementedError

    def send_rtp(self, packet: bytes) -> None:
        raise NotImplementedError

    def send_rtcp(self, packet: bytes) -> None:
        raise NotImplementedError

    async def _run_agent(self):
        """The agent on this call until it returns; a failure is logged and ends the call (``agent_failed``)."""
        try:
            await self.agent.run(self)
        except asyncio.CancelledError:
            raise
        except Exception:
            logging.getLogger("voxgate.transceiver").exception("agent failed on %s", self.call_id)
            await self.agent_failed()

    async def agent_failed(self) -> None:
        raise NotImplementedError

    def audio(self) -> AsyncIterator[bytes]:
        return until_none(self._audio_q)

    def write_audio(self, pcm: bytes, ids: dict | None = None) -> None:
        if self.state == "closed":
            return
        self.out.write(pcm)
        if self.out.frames:
            # whatever is due already (a talk spurt's first packet, a frame written behind its media time) goes
            # now, not at the clock's next step; the rest waits for its media time
            self.tick(time.monotonic())

    def flush_audio(self) -> None:
        self.out.flush()

    def clear_audio(self) -> int:
        dropped = self.out.clear()
        self._queue_changed()
        return dropped

    def pause_audio(self, paused: bool) -> None:
        self.out.pause(paused, time.monotonic())

    @property
    def queued_audio_ms(self) -> int:
        return self.out.queued_ms

    def audio_sent(self):
        return self._sent.add()

    def events(self) -> AsyncIterator[dict]:
        return until_none(self._event_q)
