"""An in-process ``CallIO`` for driving an agent without WebRTC: tests and ``bench/turns.py``.

Input frames are pushed by the caller (paced or not); output audio is "sent" by
a 20 ms clock of its own, as the transceiver's pacer would, so barge-in and
first-packet timing behave as on a real call.
"""

from __future__ import annotations

import asyncio
import collections
import time

from ..audio import Framer
from ..call.io import CallIO, until_none


class LocalCall(CallIO):
    def __init__(self, sample_rate: int, call_id: str = "local"):
        super().__init__(call_id, sample_rate)
        self.frame_bytes = sample_rate // 50 * 2
        self._audio_q: asyncio.Queue = asyncio.Queue()
        self._event_q: asyncio.Queue = asyncio.Queue()
        self.out_queue: collections.deque = collections.deque()  # 20 ms frames waiting to be "sent"
        self._framer = Framer(self.frame_bytes)
        self.sent_audio = bytearray()
        self.sent_log: list[tuple[float, int]] = []  # (time, bytes) per sent frame
        self.events_out: list[dict] = []
        self.event_times: list[float] = []
        self._clock: asyncio.Task | None = None
        self.paused = False

    def start_clock(self):
        self._clock = asyncio.ensure_future(self._run_clock())

    async def _run_clock(self):
        loop = asyncio.get_running_loop()
        t0, i = loop.time(), 0
        while True:
            i += 1
            await asyncio.sleep(max(0.0, t0 + i * 0.02 - loop.time()))
            if self.out_queue and not self.paused:
                frame = self.out_queue.popleft()
                self.sent_audio += frame
                now = time.monotonic()
                self.sent_log.append((now, len(frame)))
                self.sent.resolve(now)
                self.queue_changed()

    # caller side
    def push_audio(self, pcm: bytes):
        for i in range(0, len(pcm) - self.frame_bytes + 1, self.frame_bytes):  # whole frames only
            self._audio_q.put_nowait(pcm[i:i + self.frame_bytes])

    def push_event(self, event: dict):
        self._event_q.put_nowait(event)

    def end(self):
        self._audio_q.put_nowait(None)
        self._event_q.put_nowait(None)
        if self._clock:
            self._clock.cancel()

    def events_of(self, etype: str) -> list[dict]:
        return [e for e in self.events_out if e["type"] == etype]

    # CallIO
    def audio(self):
        return until_none(self._audio_q)

    def write_audio(self, pcm: bytes, ids: dict | None = None) -> None:
        self.out_queue.extend(self._framer.push(pcm))

    def flush_audio(self) -> None:
        self.out_queue.extend(self._framer.flush())

    def clear_audio(self) -> int:
        dropped = len(self.out_queue) * 20
        self.out_queue.clear()
        self._framer.clear()
        self.queue_changed()
        return dropped

    def pause_audio(self, paused: bool) -> None:
        self.paused = paused

    @property
    def queued_audio_ms(self) -> int:
        return len(self.out_queue) * 20

    def events(self):
        return until_none(self._event_q)

    def send_event(self, event: dict) -> bool:
        self.events_out.append(event)
        self.event_times.append(time.monotonic())
        return True

    def time_of(self, etype: str, nth: int = 0) -> float:
        return [t for e, t in zip(self.events_out, self.event_times) if e["type"] == etype][nth]
