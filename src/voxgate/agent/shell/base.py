"""The contract between a transceiver call and a voice agent.

An agent sees a call as plain audio and JSON events: an async stream of 20 ms
s16le mono PCM frames at the rate it asks for, a writer for PCM out that the
transceiver paces on a 20 ms clock, ``clear_audio()`` that drops queued output
at once (barge-in), and the data channel's JSON messages both ways.
"""

from __future__ import annotations

import abc
import asyncio
from typing import AsyncIterator


class CallIO(abc.ABC):
    """What the transceiver hands an agent for one call."""

    call_id: str
    sample_rate: int
    session_config: dict | None = None  # a Realtime session object given with the offer, if any
    # True: the transport plays the audio on its own clock (WebRTC), so the agent knows what was heard and owns the
    # output buffer (output_audio_buffer.* events, truncation on barge-in). False (WebSocket): the client plays
    # what it gets and truncates itself
    paced: bool = True

    @abc.abstractmethod
    def audio(self) -> AsyncIterator[bytes]:
        """20 ms PCM frames from the caller; ends when the call ends."""

    @abc.abstractmethod
    def write_audio(self, pcm: bytes, ids: dict | None = None) -> None:
        """Queue PCM (any length) for the caller; sent paced, one 20 ms frame per tick. ``ids``: the response,
        item, output and content index it belongs to (a WebSocket sends them with the audio)."""

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
        queues output calls ``_queue_changed()`` whenever its queue shrinks (a frame sent, the queue cleared)."""
        fut = asyncio.get_running_loop().create_future()
        if self.queued_audio_ms <= ms:
            fut.set_result(None)
        else:
            self.__dict__.setdefault("_queue_waiters", []).append((ms, fut))
        return fut

    def _queue_changed(self) -> None:
        waiters = self.__dict__.get("_queue_waiters")
        if not waiters:  # the usual case, once per frame sent
            return
        queued = self.queued_audio_ms
        keep = []
        for ms, fut in waiters:
            if fut.done():
                continue
            if queued <= ms:
                fut.set_result(None)
            else:
                keep.append((ms, fut))
        self.__dict__["_queue_waiters"] = keep

    @abc.abstractmethod
    def audio_sent(self) -> "asyncio.Future[float]":
        """A future that resolves (with ``time.monotonic()``) when the next audio packet leaves for the caller."""

    @abc.abstractmethod
    def events(self) -> AsyncIterator[dict]:
        """JSON messages from the caller's data channel; ends when the call ends."""

    @abc.abstractmethod
    def send_event(self, event: dict) -> bool:
        """Send one JSON message on the data channel; False if no channel is open."""


async def until_none(queue: asyncio.Queue) -> AsyncIterator:
    """The items of ``queue`` until a None marks its end: how a call's audio() and events() streams end."""
    while (item := await queue.get()) is not None:
        yield item


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


class Agent(abc.ABC):
    sample_rate: int = 24000  # the PCM rate the agent wants, both ways

    @abc.abstractmethod
    async def run(self, call: CallIO) -> None:
        """Serve one call until its audio and events end."""
