"""The voice agent: OpenAI Realtime events on the data channel, server VAD, barge-in, partial inference.

``RealtimeSession`` runs one call: an audio loop (VAD -> ``TurnTaker`` -> ASR,
speculative and live ``Response``s) and an event loop (client events). All
state changes happen on the event loop; blocking model calls run in threads.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import time

from . import schema
from .base import Agent, CallIO
from .response import Response, ResponseConfig, new_id
from .turns import (EndOfTurn, IdleTimeout, Interrupt, Resume, Speculate, SpeechStarted, TurnConfig, TurnTaker,
                    transcript_fits)

log = logging.getLogger("voxgate.agent")

CLIENT_EVENTS = {
    "session.update", "input_audio_buffer.commit", "input_audio_buffer.clear", "input_audio_buffer.append",
    "conversation.item.create", "conversation.item.retrieve", "conversation.item.delete",
    "conversation.item.truncate", "response.create", "response.cancel", "output_audio_buffer.clear",
}


class VoiceAgent(Agent):
    sample_rate = 16000  # PocketSphinx's rate; Opus codes 16 kHz natively

    def __init__(self, stack):
        self.stack = stack
        self.session: RealtimeSession | None = None  # the running session (a sideband attaches to it)
        self.started = asyncio.Event()  # set once it runs

    async def run(self, call: CallIO) -> None:
        self.session = RealtimeSession(call, self.stack)
        self.started.set()
        try:
            await self.session.run()
        finally:
            self.session = None


class RealtimeSession:
    def __init__(self, call: CallIO, stack):
        self.call, self.stack = call, stack
        self.metrics = stack.metrics
        self.turn_cfg = TurnConfig()
        self.tt = TurnTaker(self.turn_cfg)
        self.vad = stack.new_vad()
        self.asr = None  # taken from the stack's pool when the call starts
        self.asr_pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="asr")  # keeps ASR ops in order
        self.instructions = stack.instructions
        self.tools: list[dict] = []
        self.tool_choice = "auto"
        self.modalities = ("audio",)
        self.max_output_tokens: int | None = None
        self.session_type = "realtime"  # "transcription": recognize turns, never respond
        self.session_id = new_id("sess")
        self.conversation_id = new_id("conv")
        self.audio_ms: dict[str, int] = {}  # assistant item -> milliseconds of audio it spoke
        self.oob: set[Response] = set()  # out-of-band responses in progress
        self.sinks: list = []  # sideband connections: callables that take each server event too
        self.inbox: asyncio.Queue = asyncio.Queue()  # client events from the call and its sidebands, in order
        self.items: list[dict] = []  # the conversation, as Realtime items (the responder's messages derive from it)
        self.live: Response | None = None  # generating
        self.playing: Response | None = None  # done generating, its audio still queued
        self.spec: Response | None = None
        self.t_ms = 0
        self.ring: collections.deque = collections.deque()
        self.segments: list[str] = []
        self.partial = ""
        self.user_item: str | None = None
        self.event_seq = 0
        self.closing: asyncio.Task | None = None  # the decode a speculation started (off the frame loop)
        self.asr_error: str | None = None  # the recognizer failed during this turn: the transcription failed

    # ------------------------------------------------------------- plumbing
    def emit(self, event: dict):
        self.event_seq += 1
        event.setdefault("event_id", f"event_{self.session_id[5:]}{self.event_seq:05d}")
        self.call.send_event(event)
        for sink in list(self.sinks):
            sink(event)

    # the sideband (a WebSocket beside a WebRTC call): it sees every server event and sends client events
    def attach(self, sink) -> None:
        self.sinks.append(sink)

    def detach(self, sink) -> None:
        if sink in self.sinks:
            self.sinks.remove(sink)

    def submit(self, event: dict) -> None:
        """A client event from a sideband: handled in order with the call's own."""
        self.inbox.put_nowait(event)

    def response_config(self, **override) -> ResponseConfig:
        """What a response is asked for: the session's settings, with ``response.create``'s overrides."""
        base = dict(instructions=self.instructions, tools=self.tools, tool_choice=self.tool_choice,
                    modalities=self.modalities, max_output_tokens=self.max_output_tokens)
        base.update(override)
        return ResponseConfig(**base)

    def error(self, type_: str, code: str, message: str, param=None, event_id=None):
        self.emit({"type": "error", "error": {"type": type_, "code": code, "message": message, "param": param,
                                              "event_id": event_id}})

    def last_item_id(self):
        return self.items[-1]["id"] if self.items else None

    def messages(self, items: list[dict] | None = None) -> list[dict]:
        """The conversation (or ``items``) as chat messages."""
        return chat_messages(self.items if items is None else items)

    def transcript(self) -> str:
        """The user's turn so far: the utterances closed by speculations, and the last one."""
        return " ".join(s for s in self.segments if s)

    def session_with(self, ignored: list[str]) -> dict:
        session = self.session_object()
        if ignored:
            session["voxgate"]["ignored"] = ignored
        return session

    def session_object(self) -> dict:
        return {
            "type": self.session_type, "object": "realtime.session", "id": self.session_id,
            "model": self.stack.model_name, "instructions": self.instructions,
            "output_modalities": list(self.modalities), "tools": self.tools, "tool_choice": self.tool_choice,
            "max_output_tokens": self.max_output_tokens or "inf",
            "audio": {
                "input": {"format": {"type": "audio/pcm", "rate": 24000},
                          "transcription": {"model": self.stack.asr_name},
                          "turn_detection": self.turn_cfg.as_dict()},
                "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": self.stack.voice_name},
            },
            "voxgate": {"partial_inference": self.turn_cfg.partial_inference, "pause_ms": self.turn_cfg.pause_ms,
                        "vad": self.vad.name, "responder": self.stack.responder.name},
        }

    async def run(self):
        self.asr = await self.stack.acquire_asr()
        initial = getattr(self.call, "session_config", None)  # a client secret's session, or a multipart offer's
        ignored = []
        if isinstance(initial, dict):
            try:
                ignored = schema.check_session(initial) + self._apply_session(initial)
            except schema.Invalid as exc:  # checked when given; a secret minted before a change is told here
                self.error("invalid_request_error", exc.code, str(exc), exc.param)
        self.emit({"type": "session.created", "session": self.session_with(ignored)})
        pump = asyncio.ensure_future(self._pump_events())
        try:
            await asyncio.gather(self._audio_loop(), self._event_loop())
        finally:
            pump.cancel()
            for r in list(self.oob):
                await r.cancel("call_ended")
            if self.closing is not None:
                self.closing.cancel()
                await asyncio.gather(self.closing, return_exceptions=True)
            for r in (self.spec, self.live):
                if r is not None:
                    await r.cancel("call_ended")
            self.asr_pool.shutdown(wait=True, cancel_futures=True)
            self.stack.release_asr(self.asr)

    # ------------------------------------------------------------- audio
    async def _audio_loop(self):
        """VAD every frame; ASR for every frame of a turn until a speculation closes the utterance (then only
        if speech resumes). Frames outside a turn go to a short ring, fed to ASR when speech starts, so word
        onsets the VAD was late on are kept. With turn detection off (push-to-talk) every frame goes to the input
        buffer, recognized as it comes, until the client commits or clears it."""
        pad_frames = max(1, self.turn_cfg.prefix_padding_ms // 20)
        async for frame in self.call.audio():
            self.t_ms += 20
            if not self.turn_cfg.enabled:
                if self.user_item is None:  # the buffer was committed or cleared: a new one starts
                    self._new_buffer()
                    await self._asr(self.asr.start)
                self._feed(frame)
                continue
            self.ring.append(frame)
            while len(self.ring) > pad_frames:
                self.ring.popleft()
            before = self.tt.state
            for action in self.tt.frame(self.vad(frame), self.t_ms):
                await self._act(action)
            state = self.tt.state
            if before != TurnTaker.IDLE and state != TurnTaker.IDLE:
                if self.asr.active:
                    self._feed(frame)
                elif state == TurnTaker.SPEAKING:  # speech resumed after a speculation: open a new utterance
                    await self._asr(self.asr.start)
                    for f in list(self.ring)[-5:]:
                        self._feed(f)
            if state == TurnTaker.SPEAKING:
                self.ring.clear()

    def _new_buffer(self) -> str:
        """A new input buffer (the user item it will become): nothing recognized in it yet."""
        self.user_item = new_id("item")
        self.segments, self.partial = [], ""
        return self.user_item

    def _feed(self, frame: bytes):
        fut = asyncio.get_running_loop().run_in_executor(self.asr_pool, self.asr.feed, frame)
        fut.add_done_callback(self._on_partial)

    def _on_partial(self, fut):
        if fut.cancelled():
            return
        if fut.exception() is not None:
            self._asr_failed(fut.exception())
            return
        self._on_text(fut.result())

    def _on_text(self, text: str):
        """A partial (or, from a recognizer without partials, the whole) transcript: the new part as a delta."""
        if self.user_item is None:
            return
        if text and text != self.partial:
            prev, self.partial = self.partial, text
            if text.startswith(prev):
                self.emit({"type": "conversation.item.input_audio_transcription.delta", "item_id": self.user_item,
                           "content_index": 0, "delta": text[len(prev):]})

    async def _asr(self, fn, *args):
        """A recognizer operation on the call's ASR thread. If it fails, the turn's transcription fails (the client is
        told when the turn is committed) and the call goes on: the result is then ''."""
        try:
            return await asyncio.get_running_loop().run_in_executor(self.asr_pool, fn, *args)
        except Exception as exc:  # a recognizer's bug or a broken model must not end the call
            self._asr_failed(exc)
            return ""

    def _asr_failed(self, exc: BaseException):
        if self.asr_error is None:
            log.warning("recognizer failed on %s: %r", self.session_id, exc)
        self.asr_error = f"{type(exc).__name__}: {exc}"

    async def _act(self, action):
        t = type(action)
        if t is SpeechStarted:
            await self._closed()  # a decode still running belongs to the turn before
            self.emit({"type": "input_audio_buffer.speech_started", "item_id": self._new_buffer(),
                       "audio_start_ms": action.audio_start_ms})
            await self._asr(self.asr.start)
            for f in list(self.ring):  # the prefix padding: the start of the word VAD was slow to call speech
                self._feed(f)
            self.ring.clear()
        elif t is Interrupt:
            await self.barge_in()
        elif t is Speculate:
            # close the utterance so far and prepare the reply from it; if speech resumes, a new one opens. The
            # decode runs off the frame loop: a recognizer that decodes whole utterances takes hundreds of ms, and
            # turn-taking (the end of the turn, a resumption, a barge-in) must not wait for it
            self.closing = asyncio.ensure_future(self._speculate(self.closing))
        elif t is Resume:
            await self._discard_speculation("resumed")
        elif t is EndOfTurn:
            await self._end_of_turn(action)
        elif t is IdleTimeout:
            await self._idle_timeout(action)

    async def _idle_timeout(self, action: IdleTimeout):
        """The user said nothing for idle_timeout_ms: the silent audio becomes an (empty) user item, and the agent
        checks whether they are still there, as the API's server VAD does."""
        item_id = new_id("item")
        self.emit({"type": "input_audio_buffer.timeout_triggered", "item_id": item_id,
                   "audio_start_ms": action.audio_start_ms, "audio_end_ms": action.audio_end_ms})
        self.user_item = item_id
        self._commit_user_item(item_id, "")
        if self.turn_cfg.create_response and self.live is None:
            seconds = round(self.turn_cfg.idle_timeout_ms / 1000)
            nudge = {"role": "system", "content": f"The user has said nothing for {seconds} seconds. Briefly and "
                                                  "kindly check whether they are still there."}
            await self._respond({"turn_end": time.monotonic()}, [nudge])

    async def _speculate(self, before: asyncio.Task | None):
        if before is not None:  # segments keep their order
            await before
        text = await self._asr(self.asr.finish)
        self._add_segment(text)
        transcript = self.transcript()
        if transcript and self.tt.speculating and self.spec is None and self.session_type == "realtime":
            msgs = self.messages() + [{"role": "user", "content": transcript}]
            self.spec = Response(self, msgs, speculative=True, transcript=transcript).start()
            self.metrics.speculations.labels("started").inc()

    def _add_segment(self, text: str):
        self.segments.append(text)
        if not getattr(self.asr, "partials", True):  # no partial hypotheses: each decoded segment as a delta
            self._on_text(self.transcript())

    async def _closed(self):
        """Wait for the decode a speculation started, if any (its text belongs before what follows)."""
        if self.closing is not None:
            closing, self.closing = self.closing, None
            await closing

    async def _discard_speculation(self, why: str):
        if self.spec is not None:
            spec, self.spec = self.spec, None
            await spec.cancel("discarded")
            self.metrics.speculations.labels(why).inc()

    async def _end_of_turn(self, action: EndOfTurn):
        now = time.monotonic()
        speech_end = now - (self.t_ms - action.audio_end_ms) / 1000
        item_id = self.user_item or new_id("item")
        self.emit({"type": "input_audio_buffer.speech_stopped", "item_id": item_id, "audio_end_ms": action.audio_end_ms})
        await self._closed()
        if self.asr.active:  # no speculation closed it: decode the turn now (this is what partial inference saves)
            self._add_segment(await self._asr(self.asr.finish))
        transcript = self.transcript()
        t_final = time.monotonic()
        self._commit_user_item(item_id, transcript)
        if not action.create_response or not transcript or self.session_type == "transcription":
            await self._discard_speculation("no_response")
            return
        marks = {"turn_end": now, "speech_end": speech_end, "final_transcript": t_final}
        spec, self.spec = self.spec, None
        if spec is not None and transcript_fits(spec.transcript_in, transcript) and spec.status != "failed":
            self.metrics.speculations.labels("committed").inc()
            spec.marks.update(marks)
            await self._go_live(spec)
            spec.commit(now)
        else:
            if spec is not None:
                await spec.cancel("discarded")
                self.metrics.speculations.labels("mismatch").inc()
            await self._respond(marks)

    def _add_item(self, item: dict, after: str | None = None):
        """Add a finished item to the conversation (at the end, or after the item ``after`` names; "root": first)
        and announce it."""
        if after is None or (self.items and after == self.items[-1]["id"]):
            at = len(self.items)
        else:
            at = 0 if after == "root" else next(i for i, x in enumerate(self.items) if x["id"] == after) + 1
        prev = self.items[at - 1]["id"] if at else None
        self.items.insert(at, item)
        self.emit({"type": "conversation.item.added", "previous_item_id": prev, "item": item})
        self.emit({"type": "conversation.item.done", "previous_item_id": prev, "item": item})

    def _commit_user_item(self, item_id: str, transcript: str):
        self.emit({"type": "input_audio_buffer.committed", "item_id": item_id, "previous_item_id": self.last_item_id()})
        self._add_item({"id": item_id, "object": "realtime.item", "type": "message", "role": "user",
                        "status": "completed", "content": [{"type": "input_audio", "transcript": transcript}]})
        if self.asr_error is not None:
            self.emit({"type": "conversation.item.input_audio_transcription.failed", "item_id": item_id,
                       "content_index": 0, "error": {"type": "server_error", "code": "transcription_failed",
                                                     "message": f"the recognizer failed: {self.asr_error}",
                                                     "param": None}})
            self.asr_error = None
        else:
            self.emit({"type": "conversation.item.input_audio_transcription.completed", "item_id": item_id,
                       "content_index": 0, "transcript": transcript,
                       "usage": {"type": "duration", "seconds": 0}})
        self.user_item, self.partial = None, ""

    async def _go_live(self, r: Response):
        if self.live is not None:
            await self.live.cancel("superseded")
        self.live = r
        self.tt.set_responding(True)

    async def _respond(self, marks: dict, extra: list | None = None, config: ResponseConfig | None = None,
                       items: list[dict] | None = None) -> Response:
        """A response to the conversation as it stands (or to ``items``), and ``extra`` messages after it. In the
        conversation it goes live (superseding the live one); out of band it runs beside it."""
        r = Response(self, self.messages(items) + (extra or []), speculative=False, config=config)
        r.marks.update(marks)
        if r.config.in_conversation:
            await self._go_live(r)
        else:
            self.oob.add(r)
        r.start()
        return r

    async def barge_in(self):
        """The user talks over the agent: silence at once, cancel, and truncate what was not heard."""
        r = self.live or self.playing
        if r is None:
            return
        dropped_ms = self.call.clear_audio()
        heard_ms = max(0, int(r.written_ms - dropped_ms))
        self.playing = None
        self.tt.set_responding(False)
        if r is self.live:
            await r.cancel("turn_detected")
        if self.call.paced:
            # WebRTC: the server knows what was played, so it clears and truncates itself. Over a WebSocket the
            # client plays the audio: it truncates (conversation.item.truncate) to what it played, as the API says
            self.emit({"type": "output_audio_buffer.cleared", "response_id": r.id})
            if r.written_ms > 0 and r.item_id is not None:
                keep = max(0, round(len(r.text.split()) * heard_ms / r.written_ms))
                self._truncate(r.item_id, heard_ms, " ".join(r.text.split()[:keep]))
        self.metrics.barge_ins.inc()

    def _truncate(self, item_id: str, audio_end_ms: int, transcript: str):
        for item in self.items:
            if item["id"] == item_id:
                item["content"][0]["transcript"] = transcript
        self.emit({"type": "conversation.item.truncated", "item_id": item_id, "content_index": 0,
                   "audio_end_ms": audio_end_ms})

    def _client_truncate(self, event: dict, eid):
        """``conversation.item.truncate`` as the API defines it: an assistant audio item, ``audio_end_ms`` within
        the audio it has, the transcript cut to the words heard by then (in proportion to the audio)."""
        item = next((i for i in self.items if i["id"] == event.get("item_id")), None)
        if item is None:
            return self.error("invalid_request_error", "item_not_found", "no such item", "item_id", eid)
        if item.get("type") != "message" or item.get("role") != "assistant":
            return self.error("invalid_request_error", "invalid_value", "only assistant messages can be truncated",
                              "item_id", eid)
        if event.get("content_index", 0) != 0:
            return self.error("invalid_request_error", "invalid_value", "content_index must be 0", "content_index",
                              eid)
        end = event.get("audio_end_ms")
        total = self.audio_ms.get(item["id"])
        if not isinstance(end, int) or isinstance(end, bool) or end < 0:
            return self.error("invalid_request_error", "invalid_value", "audio_end_ms must be a non-negative integer",
                              "audio_end_ms", eid)
        if total is not None and end > total + 20:
            return self.error("invalid_request_error", "invalid_value",
                              f"audio_end_ms {end} is past the item's audio ({total} ms)", "audio_end_ms", eid)
        words = (item["content"][0].get("transcript") or "").split()
        keep = len(words) if not total else max(0, round(len(words) * min(1.0, end / total)))
        self._truncate(item["id"], end, " ".join(words[:keep]))

    def on_response_done(self, r: Response):
        """Called by the response once its closing events are out. ``response.done`` waits (at most a few
        ticks) for the response's first packet to leave, so its timing field is complete."""
        self.oob.discard(r)
        if r.message is not None and r.config.in_conversation:
            self.audio_ms[r.item_id] = round(r.written_ms)  # what truncate checks audio_end_ms against
        if self.live is r:
            self.live = None
            if r.status == "completed" and self.call.queued_audio_ms > 0:
                self.playing = r  # still speaking: barge-in stays armed until playback drains
            else:
                self.tt.set_responding(False)
        sent = r.first_sent
        if sent is not None and not sent.done() and r.status == "completed":
            asyncio.ensure_future(self._done_after_first_packet(r, sent))
        else:
            self._emit_done(r)

    async def _done_after_first_packet(self, r: Response, sent):
        try:
            await asyncio.wait_for(asyncio.shield(sent), 0.2)
        except asyncio.TimeoutError:
            pass
        self._emit_done(r)

    def _emit_done(self, r: Response):
        self.emit({"type": "response.done", "response": r.describe()})
        self.metrics.observe(r)
        if r.status == "completed" and r.written_ms > 0:  # a response that spoke: say when its audio has played
            asyncio.ensure_future(self._announce_drained(r))

    async def _announce_drained(self, r: Response):
        while self.call.queued_audio_ms > 0 and self.live is None and self.playing is r:
            await asyncio.sleep(0.02)
        if self.playing is r:
            self.playing = None
            self.tt.set_responding(False)
        if self.live is None and self.call.queued_audio_ms == 0 and self.call.paced:
            self.emit({"type": "output_audio_buffer.stopped", "response_id": r.id})

    # ------------------------------------------------------------- client events
    async def _pump_events(self):
        async for event in self.call.events():
            self.inbox.put_nowait(event)
        self.inbox.put_nowait(None)

    async def _event_loop(self):
        while (event := await self.inbox.get()) is not None:
            try:
                await self.handle(event)
            except Exception as exc:  # one bad event never ends the session
                log.exception("client event failed")
                self.error("server_error", "event_failed", f"{event.get('type')}: {exc}", event_id=event.get("event_id"))

    async def handle(self, event: dict):
        etype, eid = event.get("type"), event.get("event_id")
        if not isinstance(etype, str):
            return self.error("invalid_request_error", "missing_type", "event has no 'type'", "type", eid)
        if etype not in CLIENT_EVENTS:
            return self.error("invalid_request_error", "unknown_event", f"unknown event type {etype!r}", "type", eid)
        if etype == "session.update":
            return self._session_update(event, eid)
        if etype == "input_audio_buffer.commit":
            if self.tt.state == TurnTaker.IDLE and self.user_item is None:
                return self.error("invalid_request_error", "input_audio_buffer_commit_empty",
                                  "the input audio buffer is empty", None, eid)
            end = self.t_ms
            self.tt.reset()
            # with turn detection off the client asks for the response itself (response.create), as the API defines
            return await self._end_of_turn(EndOfTurn(end, self.turn_cfg.enabled and self.turn_cfg.create_response))
        if etype == "input_audio_buffer.clear":
            self.tt.reset()
            # first in the recognizer's queue, before the next frame opens a new buffer: drop what was heard (no
            # decode: a whole-utterance recognizer would spend hundreds of ms on audio that is thrown away)
            dropped = asyncio.get_running_loop().run_in_executor(self.asr_pool, self.asr.cancel)
            self.user_item, self.segments, self.partial = None, [], ""
            if self.closing is not None:  # a decode a speculation started: its text is cleared too
                self.closing.cancel()
                self.closing = None
            await self._discard_speculation("cleared")
            await dropped
            return self.emit({"type": "input_audio_buffer.cleared"})
        if etype == "input_audio_buffer.append":  # a WebSocket call takes these itself, as audio
            return self.error("invalid_request_error", "not_supported",
                              "over WebRTC the input audio is the microphone track; append is not used", None, eid)
        if etype == "conversation.item.create":
            return self._item_create(event, eid)
        if etype == "conversation.item.retrieve":
            item = next((i for i in self.items if i["id"] == event.get("item_id")), None)
            if item is None:
                return self.error("invalid_request_error", "item_not_found", "no such item", "item_id", eid)
            return self.emit({"type": "conversation.item.retrieved", "item": item})
        if etype == "conversation.item.delete":
            before = len(self.items)
            self.items = [i for i in self.items if i["id"] != event.get("item_id")]
            if len(self.items) == before:
                return self.error("invalid_request_error", "item_not_found", "no such item", "item_id", eid)
            return self.emit({"type": "conversation.item.deleted", "item_id": event.get("item_id")})
        if etype == "conversation.item.truncate":
            return self._client_truncate(event, eid)
        if etype == "response.create":
            return await self._response_create(event, eid)
        if etype == "response.cancel":
            return await self._response_cancel(event, eid)
        if etype == "output_audio_buffer.clear":
            self.call.clear_audio()
            rid = self.live.id if self.live else None
            return self.emit({"type": "output_audio_buffer.cleared", "response_id": rid})

    async def _response_create(self, event: dict, eid):
        spec = event.get("response") or {}
        try:
            schema.check_response(spec, self.tools)
        except schema.Invalid as exc:
            return self.error("invalid_request_error", exc.code, str(exc), exc.param, eid)
        if self.session_type == "transcription":
            return self.error("invalid_request_error", "invalid_value", "a transcription session makes no responses",
                              "type", eid)
        override = {}
        for key, name in (("instructions", "instructions"), ("tools", "tools"), ("tool_choice", "tool_choice"),
                          ("conversation", "conversation"), ("metadata", "metadata")):
            if key in spec:
                override[name] = spec[key]
        if "output_modalities" in spec:
            override["modalities"] = tuple(spec["output_modalities"])
        if "max_output_tokens" in spec:
            override["max_output_tokens"] = None if spec["max_output_tokens"] == "inf" else spec["max_output_tokens"]
        items = None
        if "input" in spec:  # its own context instead of the conversation's
            try:
                items = [self._resolve(i) for i in spec["input"]]
            except KeyError as exc:
                return self.error("invalid_request_error", "item_not_found", f"no such item {exc.args[0]!r}",
                                  "response.input", eid)
        await self._respond({"turn_end": time.monotonic()}, config=self.response_config(**override), items=items)

    def _resolve(self, item: dict) -> dict:
        if item.get("type") == "item_reference":
            found = next((i for i in self.items if i["id"] == item["id"]), None)
            if found is None:
                raise KeyError(item["id"])
            return found
        return _normalized(item)

    async def _response_cancel(self, event: dict, eid):
        rid = event.get("response_id")
        targets = [r for r in [self.live, *self.oob] if r is not None and (rid is None or r.id == rid)]
        if rid is None:
            targets = targets[:1]
        if not targets:
            return self.error("invalid_request_error", "response_cancel_not_active",
                              "no active response" + (f" with id {rid!r}" if rid else ""), "response_id", eid)
        for r in targets:
            await r.cancel("client_cancelled")

    def _session_update(self, event: dict, eid):
        session = event.get("session")
        try:
            ignored = schema.check_session(session, tools_now=self.tools)
        except schema.Invalid as exc:
            return self.error("invalid_request_error", exc.code, str(exc), exc.param, eid)
        ignored += self._apply_session(session)
        self.emit({"type": "session.updated", "session": self.session_with(ignored)})

    def _apply_session(self, session: dict) -> list[str]:
        """Apply a session object ``schema.check_session`` accepted; return what else was not acted on."""
        ignored = []
        if "type" in session:
            self.session_type = session["type"]
        if "instructions" in session:
            self.instructions = session["instructions"]
        if "tools" in session:
            self.tools = [t for t in session["tools"] if t.get("type", "function") == "function"]
        if "tool_choice" in session:
            self.tool_choice = session["tool_choice"]
        if "output_modalities" in session:
            self.modalities = tuple(session["output_modalities"])
        if "max_output_tokens" in session:
            v = session["max_output_tokens"]
            self.max_output_tokens = None if v == "inf" else v
        audio = session.get("audio") or {}
        inp = audio.get("input") or {}
        if "turn_detection" in inp or "turn_detection" in session:
            td = inp.get("turn_detection", session.get("turn_detection"))
            ignored += self.turn_cfg.update(td)
        if "format" in inp or "format" in (audio.get("output") or {}):
            configure = getattr(self.call, "configure_audio", None)
            if configure is not None:  # a WebSocket call encodes its audio as the session says
                configure(inp.get("format"), (audio.get("output") or {}).get("format"))
        vx = session.get("voxgate") or {}
        if "partial_inference" in vx:
            self.turn_cfg.partial_inference = vx["partial_inference"]
        if session.get("model"):
            ignored.append(f"model (served by {self.stack.model_name})")
        return ignored

    def _item_create(self, event: dict, eid):
        item = event.get("item")
        try:
            schema.check_item(item)
        except schema.Invalid as exc:
            return self.error("invalid_request_error", exc.code, str(exc), exc.param, eid)
        item = _normalized(item)
        if any(i["id"] == item["id"] for i in self.items):
            return self.error("invalid_request_error", "duplicate_item_id", f"item {item['id']!r} already exists",
                              "item.id", eid)
        prev = event.get("previous_item_id")
        if prev is not None and prev != "root" and not any(i["id"] == prev for i in self.items):
            return self.error("invalid_request_error", "item_not_found", "no such previous item",
                              "previous_item_id", eid)
        self._add_item(item, after=prev)


def _normalized(item: dict) -> dict:
    """A client's item as the conversation holds it: an id, object and status, and the fields of its type."""
    out = {"id": item.get("id") or new_id("item"), "object": "realtime.item", "type": item.get("type", "message"),
           "status": "completed"}
    if out["type"] == "message":
        out["role"] = item["role"]
        out["content"] = [dict(c) for c in item["content"]]
    elif out["type"] == "function_call":
        out.update(name=item["name"], call_id=item["call_id"], arguments=item["arguments"])
    else:
        out.update(call_id=item["call_id"], output=item["output"])
    return out


def chat_messages(items: list[dict]) -> list[dict]:
    """Realtime items as chat-completions messages: a message's text (or its transcript, as heard after a
    truncation), consecutive function calls as one assistant message with ``tool_calls``, their outputs as ``tool``
    messages."""
    out: list[dict] = []
    for item in items:
        kind = item.get("type", "message")
        if kind == "function_call":
            call = {"id": item["call_id"], "type": "function",
                    "function": {"name": item["name"], "arguments": item["arguments"]}}
            if out and out[-1]["role"] == "assistant" and out[-1].get("tool_calls") is not None \
                    and not out[-1].get("content"):
                out[-1]["tool_calls"].append(call)
            else:
                out.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            out.append({"role": "tool", "tool_call_id": item["call_id"], "content": item["output"]})
        else:
            text = " ".join(c.get("text") or c.get("transcript") or "" for c in item.get("content") or []
                            if isinstance(c, dict)).strip()
            if text:
                out.append({"role": item["role"], "content": text})
    return out
