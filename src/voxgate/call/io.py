"""What a call is to the agent, whatever carries it: ``CallIO`` and the small parts every transport shares.

An agent sees a call as plain audio and JSON events: an async stream of 20 ms s16le mono PCM frames at the rate
it asks for, a writer for PCM out, ``clear_audio()`` that drops queued output at once (barge-in), and the client's
JSON events both ways. WebRTC sessions (``transceiver.session``), WebSocket sessions (``transceiver.websocket``)
and phone calls (``sip.server``) are transports over it; the agent never knows which one it has.
"""

from __future__ import annotations

import abc
import asyncio
from typing import AsyncIterator


class SentWaiters:
    """The futures ``CallIO.audio_sent()`` hands out, all resolved when the next audio packet leaves."""

    def __init__(self):
        self._futures: list[asyncio.Future] = []

    def add(self) -> "asyncio.Future[float]":
        fut = asyncio.get_running_loop().create_future()
        self._futures.append(fut)
        return fut

    def resolve(self, now: float) -> None:
        if not self._futures:  # the usual case, once per packet sent
            return
        futures, self._futures = self._futures, []
        for fut in futures:
            if not fut.done():
                fut.set_result(now)


class QueueWaiters:
    """The futures ``CallIO.queue_below(ms)`` hands out, each resolved once the output queue is at most its ``ms``."""

    def __init__(self):
        self._waiters: list[tuple[int, asyncio.Future]] = []

    def below(self, ms: int, queued: int) -> "asyncio.Future[None]":
        fut = asyncio.get_running_loop().create_future()
        if queued <= ms:
            fut.set_result(None)
        else:
            self._waiters.append((ms, fut))
        return fut

    def changed(self, queued: int) -> None:
        if not self._waiters:  # the usual case, once per frame sent
            return
        keep = []
        for ms, fut in self._waiters:
            if fut.done():
                continue
            if queued <= ms:
                fut.set_result(None)
            else:
                keep.append((ms, fut))
        self._waiters = keep


class CallIO(abc.ABC):
    """What a transport hands an agent for one call. ``paced``: the transport plays the audio on its own clock
    (WebRTC, a phone), so the agent knows what was heard and owns the output buffer (``output_audio_buffer.*``
    events, truncation on barge-in); False (a WebSocket): the client plays what it gets and truncates itself."""

    paced: bool = True
    transport: str = "webrtc"  # webrtc, websocket or sip
    owner: str | None = None  # the key that made the call (None: a phone call, or auth off)
    recordings = None  # call.recording.Recordings: where this call's recording goes, if it records
    fork_of: dict | None = None  # a GPT-Live fork's stored session ({session, conversation}), on a WebSocket
    traceparent: dict | None = None  # the signaling request's W3C trace context (traceparent, tracestate), if any
    trace_attributes: dict | None = None  # what the transport knows of the call, for its span (region, codec, …)

    def __init__(self, call_id: str, sample_rate: int, session_config: dict | None = None, api: str = "realtime"):
        self.call_id = call_id
        self.sample_rate = sample_rate
        self.session_config = session_config  # the session object given with the call, if any
        self.api = api  # the API the client speaks: realtime (OpenAI's Realtime) or live (GPT-Live)
        self.sent = SentWaiters()  # resolved as audio packets leave (``audio_sent``)
        self.waiters = QueueWaiters()  # resolved as the output queue shrinks (``queue_below``)

    @abc.abstractmethod
    def audio(self) -> AsyncIterator[bytes]:
        """20 ms PCM frames from the caller; ends when the call ends."""

    @abc.abstractmethod
    def write_audio(self, pcm: bytes, ids: dict | None = None) -> None:
        """Queue PCM (any length) for the caller. ``ids``: the response, item, output and content index it belongs to
        (a WebSocket sends them with the audio)."""

    @abc.abstractmethod
    def flush_audio(self) -> None:
        """Send a trailing partial frame too (pad it): the end of an utterance."""

    @abc.abstractmethod
    def clear_audio(self) -> int:
        """Drop all queued output now; returns the milliseconds dropped."""

    def pause_audio(self, paused: bool) -> None:
        """Hold queued output (True) or play on where it stopped (False): speech over the agent is held until it
        is known to be a turn. A transport that does not play the audio itself (a WebSocket) cannot: no-op."""

    @property
    @abc.abstractmethod
    def queued_audio_ms(self) -> int:
        """Output queued but not yet sent."""

    def queue_below(self, ms: int) -> "asyncio.Future[None]":
        """A future resolved once at most ``ms`` of output is queued (at once if that holds now). A transport that
        queues output calls ``queue_changed()`` whenever its queue shrinks (a frame sent, the queue cleared)."""
        return self.waiters.below(ms, self.queued_audio_ms)

    def queue_changed(self) -> None:
        self.waiters.changed(self.queued_audio_ms)

    def audio_sent(self) -> "asyncio.Future[float]":
        """A future that resolves (with ``time.monotonic()``) when the next audio packet leaves for the caller."""
        return self.sent.add()

    @abc.abstractmethod
    def events(self) -> AsyncIterator[dict]:
        """JSON messages from the caller (a data channel, a WebSocket); ends when the call ends."""

    @abc.abstractmethod
    def send_event(self, event: dict) -> bool:
        """Send one JSON message to the caller; False if it cannot be sent."""

    def send_dtmf(self, key: str) -> bool:
        """Send a key to the caller (a phone call only); False where the transport cannot."""
        return False

    def end_call(self, reason: str) -> None:
        """The agent ends the call (a Live client's ``session.close``), once what was sent has gone out."""


async def until_none(queue: asyncio.Queue) -> AsyncIterator:
    """The items of ``queue`` until a None marks its end: how a call's audio() and events() streams end."""
    while (item := await queue.get()) is not None:
        yield item


def put_newest(q: asyncio.Queue, item) -> bool:
    """Queue ``item``; if the queue is full, drop its oldest entry to make room (a call's one overflow policy: the
    agent hears the newest audio, and the end marker always lands). False if one was dropped."""
    try:
        q.put_nowait(item)
        return True
    except asyncio.QueueFull:
        q.get_nowait()
        q.put_nowait(item)
        return False
