"""The voice agent's asyncio shell: audio in, Realtime events both ways, the models in threads.

``RealtimeSession`` runs one call around its sans-IO core, ``core/connection.RealtimeConnection`` (the
conversation, turn detection, the input buffer). It feeds the core what happens — client events, each frame's VAD
decision, the recognizer's results, what response runners report — and carries out the actions it returns:
events out (serialised here, once), recognizer operations, ``Response`` runners started, committed and cancelled,
the output paused, cleared or drained. Blocking model calls run in threads; every task a call starts is tracked
and ends with the call.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import time
import weakref

from ..core import events as ev
from ..core.connection import CountSpeculation, RealtimeConnection, WarmResponder
from ..core.conversation import (ClearInput, ClearOutput, CommitResponse, ConfigureAudio, ConfigureRecognizer, Emit,
                                 EndInput, StartResponse, CancelResponse)
from ..core.events import EventIds, error_event
from ..core.turns import (EndOfTurn, Hold, IdleTimeout, Interrupt, JudgeInterruption, Release, Resume, Speculate,
                          SpeechStarted, TurnTaker, level)
from ..models import MissingModel
from ..models.interfaces import Configurable
from ..models.noise import NoiseReduction
from .base import Agent, CallIO
from .response import Event, Failed, Finished, ItemAdded, ItemDone, Response

log = logging.getLogger("voxgate.agent")

LIVE_SESSIONS: "weakref.WeakSet[RealtimeSession]" = weakref.WeakSet()  # for leak checks: empty once calls are gone
FEED_AHEAD = 250  # frames (5 s) a push-to-talk buffer may run ahead of its recognizer before the reader waits


class VoiceAgent(Agent):
    sample_rate = 16000  # the recognizers' and the VAD's rate; Opus codes 16 kHz natively

    def __init__(self, stack):
        self.stack = stack
        self.any_voice = stack.languages.any_voice  # the transceiver checks session voices by it
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
        self.vad = stack.new_vad()
        self.conn = RealtimeConnection(instructions=stack.instructions, model=stack.model_name, asr=stack.asr_name,
                                       voice=stack.voice_name, vad=self.vad.name, responder=stack.responder.name,
                                       languages=stack.languages)
        self.core = self.conn.conv  # the conversation (settings, items, responses)
        self.asr = None  # taken from the stack's pool when the call starts
        self.denoise = None  # models/noise.NoiseReduction, while the session asks for it
        self.asr_pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="asr")  # keeps ASR ops in order
        self._feeding = 0  # frames handed to the recognizer's thread and not yet taken
        self.responses: dict[str, Response] = {}  # the runners of the responses in progress, by id
        self.ring: collections.deque = collections.deque()  # the frames before speech started (prefix padding)
        self.event_ids = EventIds(self.session_id[5:17])
        self.closing: asyncio.Task | None = None  # the decode a speculation started (off the frame loop)
        self.sinks: list = []  # sideband connections: callables that take each server event too
        self.inbox: asyncio.Queue = asyncio.Queue()  # client events from the call and its sidebands, in order
        self.tasks: set[asyncio.Future] = set()  # everything this call started: cancelled when it ends
        LIVE_SESSIONS.add(self)

    @property
    def session_id(self) -> str:
        return self.core.session_id

    @property
    def conversation_id(self) -> str:
        return self.core.conversation_id

    @property
    def tt(self) -> TurnTaker:
        return self.conn.tt

    # ------------------------------------------------------------- plumbing
    def emit(self, event: ev.ServerEvent):
        """Send a server event to the call and its sidebands: the one place events become JSON-ready dicts."""
        wire = event.as_dict(self.event_ids.next())
        self.call.send_event(wire)
        for sink in list(self.sinks):
            sink(wire)

    def error(self, type_: str, code: str, message: str, param=None, event_id=None):
        self.emit(error_event(code, message, param, event_id, type_))

    def spawn(self, coro) -> asyncio.Future:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    # the sideband (a WebSocket beside a WebRTC call): it sees every server event and sends client events
    def attach(self, sink) -> None:
        self.sinks.append(sink)

    def detach(self, sink) -> None:
        if sink in self.sinks:
            self.sinks.remove(sink)

    def submit(self, event: dict) -> None:
        """A client event from a sideband: handled in order with the call's own."""
        self.inbox.put_nowait(event)

    def do_now(self, actions: list) -> None:
        """Carry out the actions that need no waiting (events, flags, the output buffer)."""
        for a in actions:
            t = type(a)
            if t is Emit:
                self.emit(a.event)
            elif t is ClearOutput:
                self.call.clear_audio()
            elif t is ConfigureAudio:
                configure = getattr(self.call, "configure_audio", None)
                if configure is not None:  # a WebSocket call encodes its audio as the session says
                    configure(a.input_format, a.output_format)
            elif t is ConfigureRecognizer:
                if isinstance(self.asr, Configurable):  # read by its next decode, on its own thread
                    self.asr.configure(a.language, a.prompt)
            elif t is StartResponse:
                r = Response(a.rid, a.config, a.messages, speculative=a.speculative, models=self.stack, call=self.call,
                             report=self._reported, conversation_id=self.conversation_id)
                r.marks.update(a.marks)
                self.responses[a.rid] = r
                r.start()
                if a.speculative:
                    self.metrics.speculations.labels("started").inc()
            elif t is CommitResponse:
                r = self.responses[a.rid]
                r.marks.update(a.marks)
                r.commit(a.turn_end)
            elif t is CountSpeculation:
                self.metrics.speculations.labels(a.outcome).inc()
            elif t is WarmResponder:
                self.spawn(self.stack.responder.warm(a.messages, a.instructions))
            else:
                raise TypeError(f"{a!r} needs do()")

    async def do(self, actions: list) -> None:
        """Carry out the core's actions, in order."""
        for a in actions:
            t = type(a)
            if t is CancelResponse:
                r = self.responses.get(a.rid)
                if r is not None:
                    await r.cancel(a.reason)
                    if not r.live:  # a held speculation ends without events
                        self.responses.pop(a.rid, None)
            elif t is EndInput:
                end = self.conn.t_ms
                self._reset_turn()
                await self._end_of_turn(EndOfTurn(end, a.create_response))
            elif t is ClearInput:
                await self._clear_input()
            else:
                self.do_now([a])

    async def run(self):
        self.asr = await self.stack.acquire_asr()
        self.conn.partials = getattr(self.asr, "partials", True)
        self.do_now(self.conn.start(getattr(self.call, "session_config", None)))
        pump = self.spawn(self._pump_events())
        try:
            await asyncio.gather(self._audio_loop(), self._event_loop())
        finally:
            pump.cancel()
            if self.closing is not None:
                self.closing.cancel()
            for r in list(self.responses.values()):
                await r.cancel("call_ended")
            for task in list(self.tasks):
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
            self.responses.clear()
            self.asr_pool.shutdown(wait=True, cancel_futures=True)
            self.stack.release_asr(self.asr)

    # ------------------------------------------------------------- audio
    async def _audio_loop(self):
        """VAD every frame; ASR for every frame of a turn until a speculation closes the utterance (then only
        if speech resumes). Frames outside a turn go to a short ring, fed to ASR when speech starts, so word
        onsets the VAD was late on are kept. With turn detection off (push-to-talk) every frame goes to the input
        buffer, recognized as it comes, until the client commits or clears it."""
        cfg = self.conn.turn_cfg
        pad_frames = max(1, cfg.prefix_padding_ms // 20)
        async for frame in self.call.audio():
            if self.core.noise_reduction is not None:
                frame = self._denoised(frame)
            if not cfg.enabled:
                if self.conn.buffered_frame():  # the buffer was committed or cleared: a new one starts
                    await self._asr(self.asr.start)
                fed = self._feed(frame)
                if self._feeding > FEED_AHEAD:  # appended faster than the recognizer takes it: wait for it, so
                    await asyncio.wait([fed])  # the frames queue in the client's socket, not in our memory
                continue
            self.ring.append(frame)
            while len(self.ring) > pad_frames:
                self.ring.popleft()
            before = self.tt.state
            for action in self.conn.frame(self.vad(frame), level(frame)):
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

    def _denoised(self, frame: bytes) -> bytes:
        """The frame through the session's noise suppressor (made again when the session changes its type)."""
        kind = self.core.noise_reduction
        if self.denoise is None or self.denoise.kind != kind:
            try:
                self.denoise = NoiseReduction(kind)
            except MissingModel as exc:
                self.core.noise_reduction = None
                self.error("invalid_request_error", "noise_reduction_unavailable", str(exc),
                           "session.audio.input.noise_reduction")
                return frame
        return self.denoise(frame)

    def _feed(self, frame: bytes):
        fut = asyncio.get_running_loop().run_in_executor(self.asr_pool, self.asr.feed, frame)
        self._feeding += 1
        fut.add_done_callback(self._on_partial)
        return fut

    def _on_partial(self, fut):
        self._feeding -= 1
        if fut.cancelled():
            return
        if fut.exception() is not None:
            self._asr_failed(fut.exception())
            return
        self.do_now(self.conn.transcribed(fut.result()))

    async def _asr(self, fn, *args):
        """A recognizer operation on the call's ASR thread. If it fails, the turn's transcription fails (the client is
        told when the turn is committed) and the call goes on: the result is then ''."""
        try:
            return await asyncio.get_running_loop().run_in_executor(self.asr_pool, fn, *args)
        except Exception as exc:  # a recognizer's bug or a broken model must not end the call
            self._asr_failed(exc)
            return ""

    def _asr_failed(self, exc: BaseException):
        if self.conn.asr_failed(f"{type(exc).__name__}: {exc}"):
            log.warning("recognizer failed on %s: %r", self.session_id, exc)

    async def _act(self, action):
        t = type(action)
        if t is SpeechStarted:
            if not action.held:  # held speech: the recognizer has had it since Hold
                await self._closed()  # a decode still running belongs to the turn before
            self.do_now(self.conn.speech_started(action))
            if not action.held:
                await self._open_utterance()
        elif t is Hold:  # speech over the agent: silent at once, the answer kept until the speech is judged
            log.debug("%s: speech over the agent at %d ms: held", self.session_id, action.audio_start_ms)
            self.call.pause_audio(True)
            self.conn.held()
            await self._closed()
            await self._open_utterance()
        elif t is JudgeInterruption:
            self.spawn(self._judge_interruption(action.speech_ms))
        elif t is Release:
            self.call.pause_audio(False)
            self.conn.released(action.false_interruption)
            if action.false_interruption:  # a backchannel or a noise: forget it, the answer goes on
                await self._asr(self.asr.cancel)
                self.metrics.false_interruptions.inc()
        elif t is Interrupt:
            await self.barge_in()
        elif t is Speculate:
            # close the utterance so far and prepare the reply from it; if speech resumes, a new one opens. The
            # decode runs off the frame loop: a recognizer that decodes whole utterances takes hundreds of ms, and
            # turn-taking (the end of the turn, a resumption, a barge-in) must not wait for it
            self.closing = asyncio.ensure_future(self._speculate(self.closing, time.monotonic()))
        elif t is Resume:
            await self.do(self.conn.resumed())
        elif t is EndOfTurn:
            await self._end_of_turn(action)
        elif t is IdleTimeout:
            await self.do(self.conn.idle_timeout(action, time.monotonic()))

    async def _open_utterance(self):
        await self._asr(self.asr.start)
        for f in list(self.ring):  # the prefix padding: the start of the word VAD was slow to call speech
            self._feed(f)
        self.ring.clear()

    async def _judge_interruption(self, speech_ms: int):
        """Decode the held speech: words make it a turn, a backchannel or a noise does not (``eou.is_backchannel``)."""
        text, sure = self.conn.held_text, 1.0
        if hasattr(self.asr, "peek_scored"):
            text, sure = await self._asr(self.asr.peek_scored) or ("", 1.0)
        elif hasattr(self.asr, "peek"):
            text = await self._asr(self.asr.peek)
        real = self.conn.interruption_judged(text, sure, speech_ms)
        log.debug("%s: held speech (%d ms) judged %s: %r (sure %.2f)", self.session_id, speech_ms,
                  "a turn" if real else "not a turn", text, sure)

    async def _speculate(self, before: asyncio.Task | None, paused: float):
        if before is not None:  # segments keep their order
            await before
        refine = None
        if hasattr(self.asr, "peek_draft"):
            # a whole-utterance recognizer decodes what was said so far and keeps listening: if speech resumes, the
            # utterance goes on (a pause inside a word or a sentence must not cut it in two decodes). Its greedy
            # decode comes first; where it was unsure of a word, the beam's decode follows (below) while the
            # reply is already being prepared from the draft
            text, _, refine = await self._asr(self.asr.peek_draft) or ("", 1.0, None)
        elif hasattr(self.asr, "peek"):
            text = await self._asr(self.asr.peek)
        else:
            text = None
            self.do_now(self.conn.segment(await self._asr(self.asr.finish)))
        if not self.tt.speculating:
            return
        self.do_now(self.conn.paused(text, paused, time.monotonic()))
        if refine is not None:
            better = await self._asr(refine)
            await self.do(self.conn.refined(text, better, paused, time.monotonic()))

    async def _closed(self):
        """Wait for the decode a speculation started, if any (its text belongs before what follows)."""
        if self.closing is not None:
            closing, self.closing = self.closing, None
            await closing

    async def _end_of_turn(self, action: EndOfTurn):
        now = time.monotonic()
        speech_end = now - (self.conn.t_ms - action.audio_end_ms) / 1000
        item_id, stopped = self.conn.speech_stopped(action)
        self.do_now(stopped)
        await self._closed()
        if self.asr.active:
            peeked = self.conn.take_peeked()
            if peeked is not None:  # decoded at the last pause, and nothing said since
                await self._asr(self.asr.cancel)
                self.do_now(self.conn.segment(peeked))
            else:  # no speculation closed it: decode the turn now (this is what partial inference saves)
                self.do_now(self.conn.segment(await self._asr(self.asr.finish)))
        marks = {"turn_end": now, "speech_end": speech_end, "final_transcript": time.monotonic()}
        spec = self.responses.get(self.core.spec) if self.core.spec else None
        failed = {spec.id} if spec is not None and spec.status == "failed" else set()
        await self.do(self.conn.turn_committed(item_id, action.create_response, marks, failed))

    def _reset_turn(self):
        """The turn taker starts over; speech over the agent that it held goes with it, so the answer plays on."""
        self.conn.reset_turn()
        self.call.pause_audio(False)

    async def _clear_input(self):
        self.call.pause_audio(False)  # speech over the agent that was held goes with the input: the answer plays on
        # first in the recognizer's queue, before the next frame opens a new buffer: drop what was heard (no
        # decode: a whole-utterance recognizer would spend hundreds of ms on audio that is thrown away)
        dropped = asyncio.get_running_loop().run_in_executor(self.asr_pool, self.asr.cancel)
        self.conn.clear_input()
        if self.closing is not None:  # a decode a speculation started: its text is cleared too
            self.closing.cancel()
            self.closing = None
        await dropped

    async def barge_in(self):
        """The user talks over the agent: silence at once, cancel, and truncate what was not heard."""
        rid, actions = self.conn.barge_in()
        if rid is None:
            return
        r = self.responses.get(rid)
        dropped_ms = self.call.clear_audio()
        self.call.pause_audio(False)  # held speech confirmed as a turn: what was held is gone, the next answer plays
        if r is not None:
            r.barged = True
        await self.do(actions)
        if self.call.paced and r is not None:
            # WebRTC: the server knows what was played, so it clears and truncates itself. Over a WebSocket the
            # client plays the audio: it truncates (conversation.item.truncate) to what it played, as the API says
            heard_ms = max(0, int(r.written_ms - dropped_ms))
            self.do_now(self.conn.heard(rid, r.item_id, r.written_ms, heard_ms))
        self.metrics.barge_ins.inc()

    # ------------------------------------------------------------- what responses report
    def _reported(self, r: Response, what) -> None:
        """What a response runner reports (``response.Event`` ... ``Finished``), carried out in order."""
        t = type(what)
        if t is Event:
            self.emit(what.event)
        elif t is ItemAdded:
            self.do_now(self.conn.item_added(r.config, what.item))
        elif t is ItemDone:
            self.do_now(self.conn.item_done(r.config, what.item, r.written_ms))
        elif t is Failed:
            self.error("server_error", "response_failed", what.message)
        elif t is Finished:
            self._response_finished(r)
        else:
            raise TypeError(f"unknown report {what!r}")

    def _response_finished(self, r: Response):
        """The response's closing events are out. ``response.done`` waits (at most a few ticks) for the response's
        first packet to leave, so its timing field is complete."""
        self.responses.pop(r.id, None)
        self.do_now(self.conn.response_done(r.id, r.status, self.call.queued_audio_ms))
        sent = r.first_sent
        if sent is not None and not sent.done() and r.status == "completed":
            self.spawn(self._done_after_first_packet(r, sent))
        else:
            self._emit_done(r)

    async def _done_after_first_packet(self, r: Response, sent):
        try:
            await asyncio.wait_for(asyncio.shield(sent), 0.2)
        except asyncio.TimeoutError:
            pass
        self._emit_done(r)

    def _emit_done(self, r: Response):
        self.emit(ev.ResponseDone(r.describe()))
        self.metrics.observe(r)
        if r.status == "completed" and r.written_ms > 0 and self.call.paced:  # say when its audio has played
            self.spawn(self._announce_drained(r))

    async def _announce_drained(self, r: Response):
        await self.call.queue_below(0)  # resolved by the transport when its queue empties (or is cleared)
        if self.core.playing == r.id or (self.core.playing is None and not r.barged):
            self.do_now(self.conn.drained(r.id))

    # ------------------------------------------------------------- client events
    async def _pump_events(self):
        async for event in self.call.events():
            self.inbox.put_nowait(event)
        self.inbox.put_nowait(None)

    async def _event_loop(self):
        while (event := await self.inbox.get()) is not None:
            try:
                await self.do(self.conn.client_event(event, time.monotonic()))
            except Exception as exc:  # one bad event never ends the session
                log.exception("client event failed")
                self.error("server_error", "event_failed", f"{event.get('type')}: {exc}", event_id=event.get("event_id"))
