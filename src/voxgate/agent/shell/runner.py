"""One response's I/O: the responder's stream and the voice, reported to the engine as they make things.

A ``Runner`` asks the responder (``models.responder.stream``) and the voice (``models.tts``) and reports each thing
it gets (``core/reply``: ``Said``, ``Called``, ``Spoke``, ``Marked``, then ``Ended`` or ``Failed``) with
``report(what)``; the engine (``core/engine.Engine``) owns the response: its events, its state, whether its audio
is held or written. The runner decides only how the models are driven:

- the first words are spoken as soon as they are a chunk (``core/text.Chunker``); a responder that can
  ``continue`` is stopped after them so the first audio gets the cores, and asked again from what it said;
- only the first chunk is synthesized while the response is speculative; later ones wait until it goes live
  (``go_live``) and the call has less than ``AHEAD_MS`` queued, so the voice never works far ahead of playback
  (a barge-in then throws away little);
- ``max_output_tokens`` ends it ``incomplete``.
"""

from __future__ import annotations

import asyncio
import logging
import threading

from ...audio import Resampler
from ..core.reply import Called, Ended, Failed, Marked, Said, Spoke
from ..core.text import Chunker
from .responders import ToolCall

log = logging.getLogger("voxgate.agent")

AHEAD_MS = 1000


class Runner:
    """``models``: the agent's stack (``responder``, ``tts``); ``call``: the ``CallIO`` (its rate and queue);
    ``report``: where what it makes goes (the engine, through the session)."""

    def __init__(self, rid: str, config, messages: list[dict], *, live: bool, models, call, report):
        self.id, self.config, self.messages = rid, config, messages
        self.models, self.call, self.report = models, call, report
        self.task: asyncio.Task | None = None
        self._live = asyncio.Event()
        if live:
            self._live.set()
        self._said = ""  # what the responder said so far (asked again from it after a stop)
        self._chunks = 0
        self._tokens = 0
        self._calls = 0

    def start(self) -> "Runner":
        self.task = asyncio.ensure_future(self._run())
        return self

    def go_live(self) -> None:
        self._live.set()

    def stop(self) -> None:
        if self.task is not None and self.task is not asyncio.current_task():
            self.task.cancel()

    def _ask(self, messages: list[dict], max_tokens: int | None):
        c = self.config
        if c.say is not None:  # words given to speak as they are (GPT-Live's acknowledgements, commentary)
            return _verbatim(c.say)
        return self.models.responder.stream(messages, c.instructions, tools=c.tools or None,
                                            tool_choice=c.tool_choice, max_tokens=max_tokens, language=c.language)

    async def _run(self):
        c = self.config
        if c.fixture is not None:
            return await self._play(c.fixture)
        chunker = Chunker()
        resample = Resampler(self.models.tts.rate_of(c.voice), self.call.sample_rate)
        stream = self._ask(self.messages, c.max_output_tokens)
        stopped = False  # the model was stopped after the first words: it continues from them once they are audio
        end = Ended()
        try:
            while True:
                part = await anext(stream, None)
                if part is None:
                    if not stopped:
                        break
                    stopped = False
                    left = c.max_output_tokens - self._tokens if c.max_output_tokens else None
                    stream = self._ask(self.messages + [{"role": "assistant", "content": self._said}], left)
                    continue
                self.report(Marked("first_token"))
                if isinstance(part, ToolCall):
                    self._calls += 1
                    self.report(Called(part.name, part.call_id, part.arguments))
                    continue
                if not part:
                    continue
                self._said += part
                self.report(Said(part))
                if c.audio:
                    chunks = chunker.push(part)
                    if chunks and self._chunks == 0 and self.models.responder.continues and not self._calls \
                            and c.say is None:
                        await stream.aclose()  # the first audio is what the user waits for: it gets the cores
                        stopped = True
                    for chunk in chunks:
                        await self._speak(chunk, resample)
                self._tokens += 1
                if c.max_output_tokens and self._tokens >= c.max_output_tokens:
                    end = Ended("incomplete", "max_output_tokens")
                    break
            if c.audio:
                for chunk in chunker.flush():
                    await self._speak(chunk, resample)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a failing model ends this response, not the call
            log.warning("response %s failed", self.id, exc_info=True)
            end = Failed(f"response failed: {exc}")
        finally:
            await stream.aclose()
        self.report(end)

    async def _play(self, pcm: bytes):
        """Given audio (PCM16 at 24 kHz), played as it is: 200 ms at a time, the call's queue kept short."""
        resample = Resampler(24000, self.call.sample_rate)
        self.report(Said(""))  # the item the audio belongs to
        for i in range(0, len(pcm), 9600):
            if i:
                await self.call.queue_below(AHEAD_MS)
            self.report(Spoke(resample(pcm[i:i + 9600])))
        self.report(Ended())

    async def _speak(self, text: str, resample):
        """Synthesize one chunk (the first at once; the later ones once live, with the call's queue short)."""
        self._chunks += 1
        if self._chunks > 1:
            await self._live.wait()
            await self.call.queue_below(AHEAD_MS)  # the transport resolves it as its queue drains
        else:
            self.report(Marked("first_chunk"))
        c = self.config
        async for pcm in _pieces(self.models.tts.synthesize, text, voice=c.voice, speed=c.speed):
            self.report(Marked("first_tts_audio"))
            self.report(Spoke(resample(pcm)))


async def _verbatim(text: str):
    """Given words, as a responder streams them (word by word: the first chunk is spoken before the rest is read)."""
    words = text.split(" ")
    for i, w in enumerate(words):
        yield w if i == 0 else " " + w


async def _pieces(synthesize, text: str, **kw):
    """A synthesizer's audio, each piece as it is made (a voice by URL streams its answer: the call plays the first
    200 ms while the rest arrives), from a thread; closing this stops the synthesis at its next piece."""
    loop = asyncio.get_running_loop()
    q: asyncio.Queue = asyncio.Queue()
    stop = threading.Event()

    def put(item):
        try:
            loop.call_soon_threadsafe(q.put_nowait, item)
        except RuntimeError:  # the loop is gone (the process is ending)
            stop.set()

    def run():
        try:
            gen = synthesize(text, **kw)
            try:
                for pcm in gen:
                    if stop.is_set():
                        break
                    put(pcm)
            finally:
                gen.close()
        except BaseException as exc:  # the synthesizer failed: raised in the response, as before
            put(exc)
        finally:
            put(None)

    loop.run_in_executor(None, run)  # ends at the synthesizer's next piece once stopped; its errors come by ``q``
    try:
        while (item := await q.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
