"""One response: responder output -> output items (a spoken or text message, function calls) -> events and PCM.

A response's output is a list of items in ``output_index`` order: a message (audio, or text when the response's
``output_modalities`` is ``["text"]``), opened by the first piece of text, and function calls, each announced whole
as the responder makes it. A response that only calls tools speaks nothing.

A speculative response (partial inference) runs exactly like a live one, but everything it would emit (events,
audio, items for the conversation) is held. ``commit()`` releases what is held, in order, and goes live;
``cancel()`` throws it away. Nothing speculative ever reaches the caller before the turn has ended.

An out-of-band response (``conversation: "none"``) runs beside the conversation: it cancels nothing, and its items
stay out of the conversation.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass

from ...audio import Resampler
from ..core import events as ev
from ..core.conversation import ResponseConfig
from ..core.events import new_id
from .responders import ToolCall
from ..core.text import Chunker


log = logging.getLogger("voxgate.agent")

AHEAD_MS = 1000
ARGUMENT_PIECE = 24  # function-call arguments go out in pieces of this many characters, as a model streams them


@dataclass(frozen=True)
class Event:
    """A server event the response emits (in order; held while it is speculative)."""

    event: ev.ServerEvent


@dataclass(frozen=True)
class ItemAdded:
    """An output item began: the conversation announces it after the item before it."""

    item: dict


@dataclass(frozen=True)
class ItemDone:
    item: dict


@dataclass(frozen=True)
class Failed:
    """The responder or the synthesizer failed: the response ends ``failed``, the call goes on."""

    message: str


@dataclass(frozen=True)
class Finished:
    """The response's closing events are out (``status`` says how it ended)."""


class Response:
    """The runner of one response (the I/O: the responder, TTS, the call). ``conversation.Conversation`` decides
    when it starts, goes live and ends; ``realtime.RealtimeSession`` carries that out and takes what the runner
    reports: ``report(response, Event | ItemAdded | ItemDone | Failed | Finished)``, the one way out of it.
    ``models``: the agent's stack (``responder``, ``tts``); ``call``: the ``CallIO`` its audio goes to."""

    def __init__(self, rid: str, config: ResponseConfig, messages: list[dict], *, speculative: bool, models, call,
                 report, conversation_id: str | None = None):
        self.models = models
        self.call = call
        self.report = report
        self.conversation_id = conversation_id
        self.config = config
        self.id = rid
        self.messages = messages
        self.speculative = speculative
        self.live = not speculative
        self.text = ""
        self.output: list[dict] = []  # the output items, in output_index order
        self.message: dict | None = None  # the message item, once text has come
        self.held: list[tuple[str, object]] = []
        self.status = "in_progress"
        self.reason = None
        self.marks: dict[str, float] = {"started": time.monotonic()}
        self.written_ms = 0.0
        self.task: asyncio.Task | None = None
        self.first_sent: asyncio.Future | None = None  # resolves when the first audio packet leaves
        self._went_live = asyncio.Event()
        if self.live:
            self._went_live.set()
        self._chunks = 0
        self._tokens = 0
        self.barged = False  # the user talked over it (its audio was cleared, not played out)

    @property
    def item_id(self) -> str | None:
        """The message item's id (what barge-in truncates), or None for a response that has said nothing."""
        return self.message["id"] if self.message else None

    # ------------------------------------------------------------- control
    def start(self):
        self.task = asyncio.ensure_future(self._run())
        return self

    def commit(self, turn_end: float):
        """Go live: release what was held (events, then audio), in the order it was produced."""
        self.marks["committed"] = turn_end
        self.live = True
        self._went_live.set()
        held, self.held = self.held, []
        for kind, payload in held:
            self._deliver(kind, payload)

    async def cancel(self, reason: str):
        if self.status != "in_progress":
            return
        self.status, self.reason = "cancelled", reason
        if self.task is not None and self.task is not asyncio.current_task():
            self.task.cancel()
            try:
                await self.task
            except (asyncio.CancelledError, Exception):
                pass
        if self.live:
            self._finish_events()

    # ------------------------------------------------------------- output
    def _out(self, kind: str, payload=None):
        if self.live:
            self._deliver(kind, payload)
        else:
            self.held.append((kind, payload))

    def _deliver(self, kind: str, payload):
        if kind == "event":
            self.report(self, Event(payload))
        elif kind == "item_added":  # previous_item_id is read when the event goes out: a held item's comes later
            self.report(self, ItemAdded(payload))
        elif kind == "item_done":
            self.report(self, ItemDone(payload))
        elif kind == "audio":
            if "first_audio_written" not in self.marks:
                self.marks["first_audio_written"] = time.monotonic()
                if self.call.paced:  # WebRTC and SIP only: a WebSocket client plays what it gets
                    self.report(self, Event(ev.OutputStarted(self.id)))
                self.first_sent = self.call.audio_sent()
                self.first_sent.add_done_callback(lambda f: self.marks.setdefault("first_audio_sent", f.result())
                                                  if not f.cancelled() else None)
            self.call.write_audio(payload, self._ids(self.message))
            self.written_ms += len(payload) / 2 / self.call.sample_rate * 1000
        elif kind == "flush":
            self.call.flush_audio()
        elif kind == "done":
            self._finish_events()

    def _ids(self, item: dict) -> dict:
        return {"response_id": self.id, "item_id": item["id"], "output_index": self.output.index(item),
                "content_index": 0}

    @property
    def item_status(self) -> str:
        """The status of the response's message item once it has ended."""
        return "completed" if self.status == "completed" else "incomplete"

    def _message_content(self) -> list[dict]:
        if self.config.audio:
            return [{"type": "output_audio", "transcript": self.text}]
        return [{"type": "output_text", "text": self.text}]

    def _message_item(self, status: str) -> dict:
        return {"id": self.message["id"], "object": "realtime.item", "type": "message", "role": "assistant",
                "status": status, "content": self._message_content()}

    # ------------------------------------------------------------- the work
    def _ask(self, messages: list[dict], max_tokens: int | None):
        c = self.config
        return self.models.responder.stream(messages, c.instructions, tools=c.tools or None,
                                            tool_choice=c.tool_choice, max_tokens=max_tokens, language=c.language)

    async def _run(self):
        self._out("event", ev.ResponseCreated(self.describe()))
        chunker = Chunker()
        resample = Resampler(self.models.tts.rate_of(self.config.voice), self.call.sample_rate)
        c = self.config
        stream = self._ask(self.messages, c.max_output_tokens)
        stopped = False  # the model was stopped after the first words: it continues from them once they are audio
        try:
            while True:
                part = await anext(stream, None)
                if part is None:
                    if not stopped:
                        break
                    stopped = False
                    left = c.max_output_tokens - self._tokens if c.max_output_tokens else None
                    stream = self._ask(self.messages + [{"role": "assistant", "content": self.text}], left)
                    continue
                if "first_token" not in self.marks:
                    self.marks["first_token"] = time.monotonic()
                if isinstance(part, ToolCall):
                    self._tool_call(part)
                    continue
                if not part:
                    continue
                self._text(part)
                if c.audio:
                    chunks = chunker.push(part)
                    if chunks and self._chunks == 0 and self.models.responder.continues and len(self.output) == 1:
                        await stream.aclose()  # the first audio is what the user waits for: it gets the cores
                        stopped = True
                    for chunk in chunks:
                        await self._speak(chunk, resample)
                self._tokens += 1
                if c.max_output_tokens and self._tokens >= c.max_output_tokens:
                    self.status, self.reason = "incomplete", "max_output_tokens"
                    break
            if c.audio:
                for chunk in chunker.flush():
                    await self._speak(chunk, resample)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a failing model ends this response, not the call
            log.warning("response %s failed", self.id, exc_info=True)
            self.status, self.reason = "failed", "error"
            self.report(self, Failed(f"response failed: {exc}"))
        else:
            if self.status == "in_progress":
                self.status = "completed"
        finally:
            await stream.aclose()
        if c.audio and self.message is not None:
            self._out("flush")
        self._out("done")

    def _text(self, delta: str):
        if self.message is None:  # the first words open the message item
            self.message = {"id": new_id("item")}
            self.output.append(self.message)
            item = self._message_item("in_progress")
            self._out("event", ev.OutputItemAdded(self.id, self.output.index(self.message), item))
            self._out("item_added", item)
            part = {"type": "audio", "transcript": ""} if self.config.audio else {"type": "text", "text": ""}
            self._out("event", ev.ContentPartAdded(**self._ids(self.message), part=part))
        self.text += delta
        kind = ev.AudioTranscriptDelta if self.config.audio else ev.TextDelta
        self._out("event", kind(**self._ids(self.message), delta=delta))

    def _tool_call(self, call: ToolCall):
        """A function call item, whole: added, its arguments in pieces, done (then the client runs the tool)."""
        item = {"id": new_id("item"), "object": "realtime.item", "type": "function_call", "status": "in_progress",
                "name": call.name, "call_id": call.call_id, "arguments": ""}
        self.output.append(item)
        index = len(self.output) - 1
        ids = {"response_id": self.id, "item_id": item["id"], "output_index": index, "call_id": call.call_id}
        self._out("event", ev.OutputItemAdded(self.id, index, dict(item)))
        self._out("item_added", dict(item))
        args = call.arguments
        for i in range(0, len(args), ARGUMENT_PIECE):
            self._out("event", ev.ArgumentsDelta(**ids, delta=args[i:i + ARGUMENT_PIECE]))
        self._out("event", ev.ArgumentsDone(**ids, name=call.name, arguments=args))
        item.update(status="completed", arguments=args)
        self._out("event", ev.OutputItemDone(self.id, index, dict(item)))
        self._out("item_done", dict(item))

    async def _speak(self, text: str, resample):
        """Synthesize one chunk. Only the first runs ahead while speculative; later ones wait until the response
        is live and the call has less than AHEAD_MS queued, so TTS never works far ahead of playback (a barge-in
        then throws away little, and the response stays in progress while it speaks)."""
        tts = self.models.tts
        self._chunks += 1
        if self._chunks > 1:
            await self._went_live.wait()
            await self.call.queue_below(AHEAD_MS)  # the transport resolves it as its queue drains
        c = self.config
        if self._chunks == 1:
            self.marks["first_chunk"] = time.monotonic()
        async for pcm in _pieces(tts.synthesize, text, voice=c.voice, speed=c.speed):
            if "first_tts_audio" not in self.marks:
                self.marks["first_tts_audio"] = time.monotonic()
            self._out("audio", resample(pcm))

    def _finish_events(self):
        s = self.marks["started"]
        log.info("response %s %s: %s", self.id, self.status,
                 " ".join(f"{k}={(v - s) * 1000:.0f}ms" for k, v in sorted(self.marks.items(), key=lambda kv: kv[1])))
        if self.message is not None:
            ids, emit = self._ids(self.message), lambda event: self.report(self, Event(event))
            if self.config.audio:
                emit(ev.AudioDone(**ids))
                emit(ev.AudioTranscriptDone(**ids, transcript=self.text))
                part = {"type": "audio", "transcript": self.text}
            else:
                emit(ev.TextDone(**ids, text=self.text))
                part = {"type": "text", "text": self.text}
            emit(ev.ContentPartDone(**ids, part=part))
            item = self._message_item(self.item_status)
            emit(ev.OutputItemDone(self.id, ids["output_index"], item))
            self._deliver("item_done", item)
        self.report(self, Finished())

    # ------------------------------------------------------------- reporting
    STAGES = ("pause", "peeked", "started", "turn_end", "final_transcript", "first_token", "first_chunk",
              "first_tts_audio", "committed", "first_audio_written", "first_audio_sent")

    def timing_ms(self) -> dict:
        """Each stage's time (ms) from the end of the turn (``speech_stopped``, ``turn_end_to_*``) and from the end of
        the user's speech (``speech_end_to_*``). A speculation's stages before the turn ended (``pause``: the
        partial-inference point, ``peeked``: its decode done, ``started``) come out negative from the turn's end."""
        m = self.marks
        t0 = m.get("turn_end") or m.get("committed") or m["started"]
        out = {"speculative": self.speculative, "committed": "committed" in m}
        for stage in self.STAGES:
            if stage in m and stage != "turn_end":
                out[f"turn_end_to_{stage}"] = round((m[stage] - t0) * 1000, 1)
        if "speech_end" in m:
            for stage in self.STAGES:
                if stage in m:
                    out[f"speech_end_to_{stage}"] = round((m[stage] - m["speech_end"]) * 1000, 1)
        return out

    def output_items(self) -> list[dict]:
        """The output items as they stand now (a message's text so far, or as heard after a truncation)."""
        out = []
        for item in self.output:
            if item is self.message:
                status = "in_progress" if self.status == "in_progress" else self.item_status
                out.append(self._message_item(status))
            else:
                out.append(dict(item))
        return out

    def describe(self) -> dict:
        c = self.config
        r = {"id": self.id, "object": "realtime.response", "status": self.status,
             "status_details": None, "output": [] if self.status == "in_progress" else self.output_items(),
             "conversation_id": self.conversation_id if c.in_conversation else None,
             "output_modalities": list(c.modalities), "max_output_tokens": c.max_output_tokens or "inf",
             "metadata": c.metadata,
             "usage": {"total_tokens": 0, "input_tokens": 0, "output_tokens": self._tokens}}
        if c.audio:
            r["audio"] = {"output": {"format": c.output_format, "voice": c.voice, "speed": c.speed}}
        if self.status != "in_progress":
            r["status_details"] = {"type": self.status, "reason": self.reason}
            r["voxgate"] = {"timing": self.timing_ms()}  # ours, beside the API's fields (clients ignore it)
        return r


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
