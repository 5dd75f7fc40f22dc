"""Paced output, and the call that sends it: what a WebRTC session and a phone call share.

``PacedOut`` is the sans-IO queue of an agent's PCM, sent as RTP on the audio's own clock (the caller passes the
time); a transport's subclass encodes (Opus in ``transceiver.media``, G.711/G.722 in ``sip.media``). ``PacedCall``
is the ``CallIO`` of a paced transport: the audio and event queues with one overflow policy, one end-of-call rule
(``end_streams``), the output sent by ``tick(now)`` (at once when written, else on the transceiver's shared clock,
which asks ``due(now)``), the sent-waiters resolved as packets leave. A transport supplies how a packet goes out
(``can_send``, ``send_rtp``, ``send_rtcp``) and what ends it when its agent fails (``agent_failed``).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from typing import AsyncIterator

from aiortc.rtp import RtcpSenderInfo, RtcpSrPacket, RtpPacket

from ..audio import Framer, Resampler
from .io import CallIO, put_newest, until_none

FRAME_MS = 20
REPORT_EVERY = 5.0  # seconds between RTCP sender reports

log = logging.getLogger("voxgate.call")


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

    def sender_report(self, now: float, wall_clock: float) -> bytes:
        """An RTCP sender report at ``now`` (the media clock's time) and ``wall_clock`` (Unix time, for its NTP
        timestamp)."""
        wall = int(now * 50) * self.ts_step
        ts = wall if self.last_ts is None else max(self.last_ts, wall)
        ntp = int((wall_clock + 2208988800) * (1 << 32))
        sr = RtcpSrPacket(ssrc=self.ssrc, sender_info=RtcpSenderInfo(
            ntp_timestamp=ntp, rtp_timestamp=(self.ts_base + ts) & 0xFFFFFFFF,
            packet_count=self.packets, octet_count=self.bytes))
        return bytes(sr)


class PacedCall(CallIO):
    """The ``CallIO`` of a paced transport (a WebRTC session, a phone call). ``out``: its ``PacedOut``;
    ``audio_queue``/``event_queue``: how many frames and events wait for the agent (audio past that drops the oldest
    frame, counted in ``dropped_audio_frames``)."""

    def __init__(self, call_id: str, agent, out: PacedOut, session_config: dict | None = None, *,
                 audio_queue: int = 500, event_queue: int = 1000, api: str = "realtime"):
        super().__init__(call_id, agent.sample_rate, session_config, api)
        self.agent = agent
        self.out = out
        self.state = "new"  # new -> connected -> closed
        self.close_reason = ""
        self.ended = asyncio.Event()  # set when the call closes (its sideband ends with it)
        self.times = {"created": time.monotonic()}
        self.dropped_audio_frames = 0
        self.next_report = 0.0  # when the next RTCP sender report is due
        self._audio_q: asyncio.Queue = asyncio.Queue(maxsize=audio_queue)
        self._event_q: asyncio.Queue = asyncio.Queue(maxsize=event_queue)

    # ------------------------------------------------------------- the transport's side
    def can_send(self) -> bool:
        """The transport is up: packets may go (until then what is due waits in the queue)."""
        raise NotImplementedError

    def send_rtp(self, packet: bytes) -> None:
        raise NotImplementedError

    def send_rtcp(self, packet: bytes) -> None:
        raise NotImplementedError

    async def agent_failed(self) -> None:
        raise NotImplementedError

    def heard(self, frames, now: float) -> None:
        """The caller's decoded 20 ms frames, for the agent."""
        for pcm in frames:
            if "first_audio_in" not in self.times:
                self.times["first_audio_in"] = now
            if not put_newest(self._audio_q, pcm):  # the agent is not keeping up: it hears the newest
                self.dropped_audio_frames += 1

    def take_event(self, event: dict) -> bool:
        """A client event for the agent; False when too many wait."""
        try:
            self._event_q.put_nowait(event)
            return True
        except asyncio.QueueFull:
            return False

    def end_streams(self, reason: str) -> bool:
        """The one end-of-call rule: the call is closed, its reason and time kept, and the agent's audio and event
        streams end (the end marker lands even when the agent is behind). False if it had ended already."""
        if self.state == "closed":
            return False
        self.state, self.close_reason = "closed", reason
        self.times["closed"] = time.monotonic()
        self.ended.set()
        put_newest(self._audio_q, None)
        put_newest(self._event_q, None)
        return True

    # ------------------------------------------------------------- the clock
    def due(self, now: float) -> bool:
        """Something may be due at ``now`` (audio queued, a continuous line, a sender report): the shared clock
        ticks only such calls."""
        return bool(self.out.frames) or self.out.continuous or now >= self.next_report

    def tick(self, now: float, limit: int = 2) -> None:
        """Send what is due of this call's audio at ``now`` (at most ``limit`` packets: a call that fell behind
        catches up over a few steps, not in one burst), and a sender report every ``REPORT_EVERY`` s. Synchronous:
        the clock calls it for many calls per step, so no coroutine per packet."""
        if not self.can_send():
            return
        for _ in range(limit):
            data = self.out.next_packet(now)
            if data is None:
                break
            if not self.out.filling:  # the agent's audio, not a phone line's silence between its words
                if "first_audio_out" not in self.times:
                    self.times["first_audio_out"] = now
                self.sent.resolve(now)
            self.send_rtp(data)
            self.queue_changed()
        if self.out.packets and now >= self.next_report:
            self.next_report = now + REPORT_EVERY
            self.send_rtcp(self.out.sender_report(now, time.time()))

    async def run_agent(self):
        """The agent on this call until it returns; a failure is logged and ends the call (``agent_failed``)."""
        try:
            await self.agent.run(self)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("agent failed on %s", self.call_id)
            await self.agent_failed()

    # ------------------------------------------------------------- CallIO
    def audio(self) -> AsyncIterator[bytes]:
        return until_none(self._audio_q)

    def events(self) -> AsyncIterator[dict]:
        return until_none(self._event_q)

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
        self.queue_changed()
        return dropped

    def pause_audio(self, paused: bool) -> None:
        self.out.pause(paused, time.monotonic())

    @property
    def queued_audio_ms(self) -> int:
        return self.out.queued_ms

    def timings_ms(self) -> dict:
        t0 = self.times["created"]
        return {k: round((v - t0) * 1000, 1) for k, v in self.times.items() if k != "created"}
