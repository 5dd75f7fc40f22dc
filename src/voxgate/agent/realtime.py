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

from .base import Agent, CallIO
from .response import Response, new_id
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

    async def run(self, call: CallIO) -> None:
        await RealtimeSession(call, self.stack).run()


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
        self.session_id = new_id("sess")
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

    def error(self, type_: str, code: str, message: str, param=None, event_id=None):
        self.emit({"type": "error", "error": {"type": type_, "code": code, "message": message, "param": param,
                                              "event_id": event_id}})

    def last_item_id(self):
        return self.items[-1]["id"] if self.items else None

    def messages(self) -> list[dict]:
        """The conversation as chat messages: each item's text (or transcript, as heard after a truncation)."""
        out = []
        for item in self.items:
            text = " ".join(c.get("text") or c.get("transcript") or "" for c in item.get("content") or []
                            if isinstance(c, dict)).strip()
            if text:
                out.append({"role": item["role"], "content": text})
        return out

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
            "type": "realtime", "object": "realtime.session", "id": self.session_id, "model": self.stack.model_name,
            "instructions": self.instructions, "output_modalities": ["audio"],
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
        initial = getattr(self.call, "session_config", None)  # the `session` part of a multipart offer
        ignored = self._apply_session(initial) if isinstance(initial, dict) else []
        self.emit({"type": "session.created", "session": self.session_with(ignored)})
        try:
            await asyncio.gather(self._audio_loop(), self._event_loop())
        finally:
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
        if transcript and self.tt.speculating and self.spec is None:
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
        if not action.create_response or not transcript:
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

    def _add_item(self, item: dict):
        """Append a finished item to the conversation and announce it."""
        prev = self.last_item_id()
        self.items.append(item)
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

    async def _respond(self, marks: dict, extra: list | None = None):
        """A live response to the conversation as it stands (and ``extra`` messages after it)."""
        r = Response(self, self.messages() + (extra or []), speculative=False)
        r.marks.update(marks)
        await self._go_live(r)
        r.start()

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
        self.emit({"type": "output_audio_buffer.cleared", "response_id": r.id})
        if r.written_ms > 0:
            keep = max(0, round(len(r.text.split()) * heard_ms / r.written_ms))
            self._truncate(r.item_id, heard_ms, " ".join(r.text.split()[:keep]))
        self.metrics.barge_ins.inc()

    def _truncate(self, item_id: str, audio_end_ms: int, transcript: str):
        for item in self.items:
            if item["id"] == item_id:
                item["content"][0]["transcript"] = transcript
        self.emit({"type": "conversation.item.truncated", "item_id": item_id, "content_index": 0,
                   "audio_end_ms": audio_end_ms})

    def on_response_done(self, r: Response):
        """Called by the response once its closing events are out. ``response.done`` waits (at most a few
        ticks) for the response's first packet to leave, so its timing field is complete."""
        if r.status in ("completed", "cancelled", "failed"):
            self.items.append(r._item(r.item_status))
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
        if r.status == "completed":
            asyncio.ensure_future(self._announce_drained(r))

    async def _announce_drained(self, r: Response):
        while self.call.queued_audio_ms > 0 and self.live is None and self.playing is r:
            await asyncio.sleep(0.02)
        if self.playing is r:
            self.playing = None
            self.tt.set_responding(False)
        if self.live is None and self.call.queued_audio_ms == 0:
            self.emit({"type": "output_audio_buffer.stopped", "response_id": r.id})

    # ------------------------------------------------------------- client events
    async def _event_loop(self):
        async for event in self.call.events():
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
        if etype == "input_audio_buffer.append":
            return self.error("invalid_request_error", "not_supported",
                              "over WebRTC the input audio is the microphone track; append is not used", None, eid)
        if etype == "conversation.item.create":
            return self._item_create(event.get("item"), eid)
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
            return self._truncate(event.get("item_id"), int(event.get("audio_end_ms", 0)), "")
        if etype == "response.create":
            return await self._respond({"turn_end": time.monotonic()})
        if etype == "response.cancel":
            if self.live is None:
                return self.error("invalid_request_error", "response_cancel_not_active", "no active response",
                                  None, eid)
            await self.live.cancel("client_cancelled")
            return
        if etype == "output_audio_buffer.clear":
            self.call.clear_audio()
            rid = self.live.id if self.live else None
            return self.emit({"type": "output_audio_buffer.cleared", "response_id": rid})

    def _session_update(self, event: dict, eid):
        session = event.get("session")
        if not isinstance(session, dict):
            return self.error("invalid_request_error", "invalid_value", "session.update needs a 'session' object",
                              "session", eid)
        self.emit({"type": "session.updated", "session": self.session_with(self._apply_session(session))})

    def _apply_session(self, session: dict) -> list[str]:
        """Apply a Realtime session object; return what was ignored (named, not failed)."""
        ignored = []
        if "instructions" in session:
            self.instructions = str(session["instructions"])
        audio = session.get("audio") or {}
        inp = audio.get("input") or {}
        td_present = "turn_detection" in inp or "turn_detection" in session
        if td_present:
            td = inp.get("turn_detection", session.get("turn_detection"))
            ignored += self.turn_cfg.update(td)
        vx = session.get("voxgate") or {}
        if "partial_inference" in vx:
            self.turn_cfg.partial_inference = bool(vx["partial_inference"])
        for key in session:
            if key not in ("type", "instructions", "audio", "turn_detection", "voxgate", "model",
                           "output_modalities", "tracing", "tools", "tool_choice", "truncation",
                           "max_output_tokens", "include"):
                ignored.append(key)
        for key in ("model", "tools", "tracing"):
            if session.get(key):
                ignored.append(f"{key} (served by {self.stack.model_name})" if key == "model" else key)
        return ignored

    def _item_create(self, item, eid):
        if not isinstance(item, dict) or item.get("type", "message") != "message":
            return self.error("invalid_request_error", "invalid_value", "only message items are supported",
                              "item", eid)
        role = item.get("role", "user")
        content = [c for c in item.get("content") or [] if isinstance(c, dict)]
        if role not in ("user", "assistant", "system") or not any(c.get("text") or c.get("transcript") for c in content):
            return self.error("invalid_request_error", "invalid_value", "item needs a role and text content",
                              "item.content", eid)
        self._add_item({"id": item.get("id") or new_id("item"), "object": "realtime.item", "type": "message",
                        "role": role, "status": "completed", "content": content})
