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
import secrets
import time
from dataclasses import dataclass, field

from ..wire.pcm import Resampler
from .responders import ToolCall
from .stages import Chunker
from .voices import DEFAULT_VOICE


log = logging.getLogger("voxgate.agent")

AHEAD_MS = 1000
ARGUMENT_PIECE = 24  # function-call arguments go out in pieces of this many characters, as a model streams them


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


@dataclass
class ResponseConfig:
    """What one response is asked for: the session's settings, overridden by ``response.create``'s ``response``."""

    instructions: str
    tools: list = field(default_factory=list)
    tool_choice: object = "auto"
    modalities: tuple = ("audio",)
    conversation: str = "auto"  # "none": out of band
    metadata: dict | None = None
    max_output_tokens: int | None = None  # None: "inf"
    voice: str = DEFAULT_VOICE  # as asked (ours or an OpenAI name: agent/voices.py)
    speed: float = 1.0

    @property
    def audio(self) -> bool:
        return "audio" in self.modalities

    @property
    def in_conversation(self) -> bool:
        return self.conversation != "none"


class Response:
    """The runner of one response (the I/O: the responder, TTS, the call); ``conversation.Conversation`` decides
    when it starts, goes live and ends, and ``realtime.RealtimeSession`` (``agent``) carries that out."""

    def __init__(self, agent, rid: str, config: ResponseConfig, messages: list[dict], *, speculative: bool,
                 transcript: str = ""):
        self.agent = agent  # RealtimeSession
        self.call = agent.call
        self.config = config
        self.id = rid
        self.messages = messages
        self.speculative = speculative
        self.live = not speculative
        self.transcript_in = transcript
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
        a = self.agent
        if kind == "event":
            a.emit(payload)
        elif kind == "item_added":  # previous_item_id is read when the event goes out: a held item's comes later
            a.response_item_added(self, payload)
        elif kind == "item_done":
            a.response_item_done(self, payload)
        elif kind == "audio":
            if "first_audio_written" not in self.marks:
                self.marks["first_audio_written"] = time.monotonic()
                if self.call.paced:  # WebRTC and SIP only: a WebSocket client plays what it gets
                    a.emit({"type": "output_audio_buffer.started", "response_id": self.id})
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
    async def _run(self):
        a = self.agent
        self._out("event", {"type": "response.created", "response": self.describe()})
        chunker = Chunker()
        resample = Resampler(a.stack.tts.rate_of(self.config.voice), self.call.sample_rate)
        c = self.config
        try:
            async for part in a.stack.responder.stream(self.messages, c.instructions, tools=c.tools or None,
                                                       tool_choice=c.tool_choice, max_tokens=c.max_output_tokens):
                if "first_token" not in self.marks:
                    self.marks["first_token"] = time.monotonic()
                if isinstance(part, ToolCall):
                    self._tool_call(part)
                    continue
                if not part:
                    continue
                self._text(part)
                if c.audio:
                    for chunk in chunker.push(part):
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
            self.status, self.reason = "failed", "error"
            self.agent.error("server_error", "response_failed", f"response failed: {exc}")
        else:
            if self.status == "in_progress":
                self.status = "completed"
        if c.audio and self.message is not None:
            self._out("flush")
        self._out("done")

    def _text(self, delta: str):
        if self.message is None:  # the first words open the message item
            self.message = {"id": new_id("item")}
            self.output.append(self.message)
            item = self._message_item("in_progress")
            self._out("event", {"type": "response.output_item.added", "response_id": self.id,
                                "output_index": self.output.index(self.message), "item": item})
            self._out("item_added", item)
            part = {"type": "audio", "transcript": ""} if self.config.audio else {"type": "text", "text": ""}
            self._out("event", {"type": "response.content_part.added", **self._ids(self.message), "part": part})
        self.text += delta
        kind = "response.output_audio_transcript.delta" if self.config.audio else "response.output_text.delta"
        self._out("event", {"type": kind, **self._ids(self.message), "delta": delta})

    def _tool_call(self, call: ToolCall):
        """A function call item, whole: added, its arguments in pieces, done (then the client runs the tool)."""
        item = {"id": new_id("item"), "object": "realtime.item", "type": "function_call", "status": "in_progress",
                "name": call.name, "call_id": call.call_id, "arguments": ""}
        self.output.append(item)
        index = len(self.output) - 1
        ids = {"response_id": self.id, "item_id": item["id"], "output_index": index}
        self._out("event", {"type": "response.output_item.added", "response_id": self.id, "output_index": index,
                            "item": dict(item)})
        self._out("item_added", dict(item))
        args = call.arguments
        for i in range(0, len(args), ARGUMENT_PIECE):
            self._out("event", {"type": "response.function_call_arguments.delta", **ids, "call_id": call.call_id,
                                "delta": args[i:i + ARGUMENT_PIECE]})
        self._out("event", {"type": "response.function_call_arguments.done", **ids, "call_id": call.call_id,
                            "name": call.name, "arguments": args})
        item.update(status="completed", arguments=args)
        self._out("event", {"type": "response.output_item.done", "response_id": self.id, "output_index": index,
                            "item": dict(item)})
        self._out("item_done", dict(item))

    async def _speak(self, text: str, resample):
        """Synthesize one chunk. Only the first runs ahead while speculative; later ones wait until the response
        is live and the call has less than AHEAD_MS queued, so TTS never works far ahead of playback (a barge-in
        then throws away little, and the response stays in progress while it speaks)."""
        tts = self.agent.stack.tts
        self._chunks += 1
        if self._chunks > 1:
            await self._went_live.wait()
            await self.call.queue_below(AHEAD_MS)  # the transport resolves it as its queue drains
        c = self.config
        pcm = await asyncio.to_thread(lambda: b"".join(tts.synthesize(text, voice=c.voice, speed=c.speed)))
        if "first_tts_audio" not in self.marks:
            self.marks["first_tts_audio"] = time.monotonic()
        self._out("audio", resample(pcm))

    def _finish_events(self):
        s = self.marks["started"]
        log.info("response %s %s: %s", self.id, self.status,
                 " ".join(f"{k}={(v - s) * 1000:.0f}ms" for k, v in sorted(self.marks.items(), key=lambda kv: kv[1])))
        if self.message is not None:
            a, ids = self.agent, self._ids(self.message)
            if self.config.audio:
                a.emit({"type": "response.output_audio.done", **ids})
                a.emit({"type": "response.output_audio_transcript.done", **ids, "transcript": self.text})
                part = {"type": "audio", "transcript": self.text}
            else:
                a.emit({"type": "response.output_text.done", **ids, "text": self.text})
                part = {"type": "text", "text": self.text}
            a.emit({"type": "response.content_part.done", **ids, "part": part})
            item = self._message_item(self.item_status)
            a.emit({"type": "response.output_item.done", "response_id": self.id, "output_index": ids["output_index"],
                    "item": item})
            self._deliver("item_done", item)
        self.agent.on_response_done(self)

    # ------------------------------------------------------------- reporting
    def timing_ms(self) -> dict:
        """Per-stage latency, measured from the end of the turn (speech_stopped) and from the end of speech."""
        m = self.marks
        t0 = m.get("turn_end") or m.get("committed") or m["started"]
        out = {"speculative": self.speculative, "committed": "committed" in m}
        for stage in ("final_transcript", "first_token", "first_tts_audio", "first_audio_written", "first_audio_sent"):
            if stage in m:
                out[f"turn_end_to_{stage}"] = round(max(0.0, m[stage] - t0) * 1000, 1)
        if "speech_end" in m and "first_audio_sent" in m:
            out["speech_end_to_first_audio_sent"] = round((m["first_audio_sent"] - m["speech_end"]) * 1000, 1)
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
             "conversation_id": self.agent.conversation_id if c.in_conversation else None,
             "output_modalities": list(c.modalities), "max_output_tokens": c.max_output_tokens or "inf",
             "metadata": c.metadata,
             "usage": {"total_tokens": 0, "input_tokens": 0, "output_tokens": self._tokens}}
        if c.audio:
            r["audio"] = {"output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": c.voice,
                                     "speed": c.speed}}
        if self.status != "in_progress":
            r["status_details"] = {"type": self.status, "reason": self.reason}
            r["voxgate_timing_ms"] = self.timing_ms()
        return r
