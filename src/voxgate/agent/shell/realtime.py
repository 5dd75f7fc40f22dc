"""The voice agent's asyncio shell: the executor of one call's conversation engine.

``RealtimeSession`` runs one call around ``core/engine.Engine``, which owns every decision and every piece of the
call's state. The session tells it what happens — client events (from the call and its sidebands), each input frame
with the VAD's speech probability, the recognizer's results, what response runners report, the time — and carries
out the actions it answers, in order and nothing more: events out (serialised here, once), recognizer requests (on
the call's recognizer thread, in order, their results told back by number), runners started, made live and
stopped, audio written, flushed, paused and cleared, the input gated, the engine's timer set. Blocking model calls
run in threads; every task a call starts is tracked and ends with the call. ``tests/test_agent_layout.py`` checks
that this module reads and writes none of the engine's state, only calls its inputs.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import concurrent.futures
import logging
import time
import weakref

from ..core import delegation as dl
from ..core import engine as en
from ..core import live_events as lv
from ..core import events as ev
from ..core.conversation import (ClearOutput, ConfigureAudio, ConfigureDenoise, ConfigureRecognizer, Emit, EndSession,
                                 Record)
from ..core.events import EventIds
from ..core.live_face import LiveFace, SendDtmf
from ..core.realtime_face import RealtimeFace
from ...audio import Resampler
from ...tracing import CallTrace
from ..models import MissingModel
from ..models.interfaces import Configurable, Peeking
from ..models.noise import NoiseReduction
from ..core.reply import Called, Ended, Failed, Said
from .base import Agent, CallIO
from .responders import ToolCall
from .runner import Runner

log = logging.getLogger("voxgate.agent")

LIVE_SESSIONS: "weakref.WeakSet[RealtimeSession]" = weakref.WeakSet()  # for leak checks: empty once calls are gone
FEED_AHEAD = 250  # frames (5 s) a push-to-talk buffer may run ahead of its recognizer before the reader waits
REPLAY = 32  # events a GPT-Live sideband gets when it attaches, before the live stream


class VoiceAgent(Agent):
    sample_rate = 16000  # the recognizers' and the VAD's rate; Opus codes 16 kHz natively
    takes_events = True  # the Realtime protocol: a sideband may attach

    def __init__(self, stack):
        self.stack = stack
        self.any_voice = stack.languages.any_voice  # the transceiver checks session voices by it
        self.session: RealtimeSession | None = None  # the running session
        self._running = asyncio.Event()  # set once it runs

    async def run(self, call: CallIO) -> None:
        self.session = RealtimeSession(call, self.stack)
        self._running.set()
        try:
            await self.session.run()
        finally:
            self.session = None

    # the declared inputs (``shell.base.Agent``): what a transport may tell a running agent
    async def wait_running(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._running.wait(), timeout)
        except asyncio.TimeoutError:
            pass
        return self.session is not None

    def dtmf(self, digit: str, at: int) -> None:
        if self.session is not None:
            self.session.dtmf(digit, at)

    def attach(self, sink) -> None:
        if self.session is not None:
            self.session.attach(sink)

    def detach(self, sink) -> None:
        if self.session is not None:
            self.session.detach(sink)

    def submit(self, event: dict) -> None:
        if self.session is not None:
            self.session.submit(event)


class RealtimeSession:
    def __init__(self, call: CallIO, stack):
        self.call, self.stack = call, stack
        self.metrics = stack.metrics
        self.vad = stack.new_vad()
        # the API the call speaks: the engine reads client events by its face, and we send by the same one
        self.face = LiveFace(call.transport, stack.languages.any_voice, call.call_id, time.time(),
                             fork_of=getattr(call, "fork_of", None)) if call.api == "live" else RealtimeFace()
        self.engine = en.Engine(instructions=stack.instructions, model=stack.model_name, asr=stack.asr_name,
                                voice=stack.voice_name, vad=self.vad.name, responder=stack.responder.name,
                                paced=call.paced, out_rate=call.sample_rate, languages=stack.languages, face=self.face)
        self.session_id = self.engine.session_id
        self.asr = None  # taken from the stack's pool when the call starts
        self.denoise = None  # models/noise.NoiseReduction, while the session asks for it
        self.asr_pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="asr")  # keeps ASR ops in order
        self._feeding = 0  # frames handed to the recognizer's thread and not yet taken
        self._last_feed: asyncio.Future | None = None
        self.runners: dict[str, Runner] = {}  # the runners of the responses in progress, by id
        self.backends: dict[str, asyncio.Future] = {}  # GPT-Live's delegated requests running, by key
        self.event_ids = EventIds(self.session_id[5:17])
        self.sinks: list = []  # sideband connections: callables that take each server event too
        self.recent: collections.deque = collections.deque(maxlen=REPLAY)  # replayed to a new sideband (GPT-Live)
        self.reflect_in = self.reflect_out = None  # GPT-Live sidebands hear the call's audio at 24 kHz
        self.inbox: asyncio.Queue = asyncio.Queue()  # client events from the call and its sidebands, in order
        self.input_open = asyncio.Event()  # the engine takes input frames (it gates them while a turn is committed)
        self.input_open.set()
        self._timer: asyncio.TimerHandle | None = None
        self.recording = None  # call.recording.Recording, while the call records
        self.said: list[dict] = []  # what was said, for the recording's sidecar
        self.timings: list[dict] = []  # each response's status and timing, for the sidecar
        self.trace = None  # tracing.CallTrace, when tracing is on
        self.stored: dict | None = None  # a GPT-Live session's resolved config, for the sidecar (forks start from it)
        self.tasks: set[asyncio.Future] = set()  # everything this call started: cancelled when it ends
        LIVE_SESSIONS.add(self)

    # ------------------------------------------------------------- plumbing
    def emit(self, event: ev.ServerEvent):
        """Send a server event to the call and its sidebands: the one place events become JSON-ready dicts. A face
        may send the call less than its sidebands (GPT-Live's data-channel permissions bind the frontend only)."""
        now, event_id = time.monotonic(), self.event_ids.next()
        if self.recording is not None:
            self._note(event)
        wire = self.face.wire(event, event_id, now)
        if wire is not None:  # else not in this API's vocabulary (or not for the frontend)
            self.call.send_event(wire)
        if self.face.replays or self.sinks:
            side = self.face.wire(event, event_id, now, sideband=True)
            if side is not None:
                if self.face.replays:
                    self.recent.append(side)
                for sink in list(self.sinks):
                    sink(side)

    def spawn(self, coro) -> asyncio.Future:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    # the sideband (a WebSocket beside a WebRTC call): it sees every server event and sends client events
    def attach(self, sink) -> None:
        """A sideband from now on (a face that ``replays``, GPT-Live's, first gives it the last events sent)."""
        for wire in list(self.recent):
            sink(wire)
        self.sinks.append(sink)

    def detach(self, sink) -> None:
        if sink in self.sinks:
            self.sinks.remove(sink)

    def submit(self, event: dict) -> None:
        """A client event from a sideband (trusted: the app's server): handled in order with the call's own."""
        self.inbox.put_nowait((event, True))

    def dtmf(self, digit: str, at: int) -> None:
        """A key the caller pressed (a phone)."""
        self.execute(self.engine.dtmf(digit, at))

    # ------------------------------------------------------------- carrying out the engine's actions
    def execute(self, actions: list) -> None:
        """Carry out the engine's actions, in order. An action whose outcome the engine needs (what a clear dropped)
        tells it at once, and what it answers is carried out there, before the next."""
        for a in actions:
            t = type(a)
            if t is Emit:
                self.emit(a.event)
            elif t is en.AsrFeed:
                self._feed(a.frame)
            elif t is en.WriteAudio:
                self.call.write_audio(a.pcm, a.ids)
                if self.recording is not None:
                    self.recording.agent(a.pcm)
                if self.sinks and self.face.replays:
                    self._reflect(a.pcm, "session.output_audio.delta", "delta")
            elif t is en.AsrStart:
                self._asr(-1, "start")
                for f in a.frames:  # the prefix padding: the start of the word VAD was slow to call speech
                    self._feed(f)
            elif t is en.AsrDecode:
                self._asr(a.req, a.kind, a.handle)
            elif t is en.AsrCancel:
                self._asr(-1, "cancel")
            elif t is en.StartRunner:
                r = Runner(a.rid, a.config, a.messages, live=a.live, models=self.stack, call=self.call,
                           report=lambda what, rid=a.rid: self.execute(self.engine.report(rid, what,
                                                                                          time.monotonic())))
                self.runners[a.rid] = r
                r.start()
            elif t is en.GoLive:
                if a.rid in self.runners:  # else it has ended: what it made was held, and is delivered now
                    self.runners[a.rid].go_live()
            elif t is en.StopRunner:
                r = self.runners.pop(a.rid, None)
                if r is not None:
                    r.stop()
            elif t is dl.StartBackend:
                self.backends[a.key] = self.spawn(self._backend(a))
            elif t is dl.StopBackend:
                task = self.backends.pop(a.key, None)
                if task is not None:
                    task.cancel()
            elif t is en.FlushAudio:
                self.call.flush_audio()
            elif t is en.PauseOutput:
                self.call.pause_audio(a.on)
            elif t is ClearOutput:
                dropped = self.call.clear_audio()
                if self.recording is not None:
                    self.recording.cleared(dropped)
                self.execute(self.engine.output_cleared(a.why, dropped, time.monotonic()))
            elif t is en.WatchSent:
                self.call.audio_sent().add_done_callback(
                    lambda f, rid=a.rid: None if f.cancelled() else
                    self.execute(self.engine.first_sent(rid, f.result(), time.monotonic())))
            elif t is en.WatchDrained:
                self.spawn(self._drained(a.rid))
            elif t is en.GateInput:
                (self.input_open.set if a.open else self.input_open.clear)()
            elif t is en.WarmResponder:
                self.spawn(self.stack.responder.warm(a.messages, a.instructions))
            elif t is en.Count:
                self._count(a)
            elif t is en.Observe:
                self.metrics.observe(a.status, a.timing)
                if self.trace is not None:
                    self.trace.response(a.marks, a.info)
            elif t is ConfigureAudio:
                configure = getattr(self.call, "configure_audio", None)
                if configure is not None:  # a WebSocket call encodes its audio as the session says
                    configure(a.input_format, a.output_format)
            elif t is ConfigureRecognizer:
                if isinstance(self.asr, Configurable):  # read by its next decode, on its own thread
                    self.asr.configure(a.language, a.prompt)
            elif t is ConfigureDenoise:
                self._configure_denoise(a.kind)
            elif t is Record:
                self._record()
            elif t is SendDtmf:
                ok = self.call.send_dtmf(a.key)
                self.execute(self.engine.dtmf_sent(a.key, a.client_event_id, ok, time.monotonic()))
            elif t is EndSession:
                self.call.end_call(a.reason)
            else:
                raise TypeError(f"unknown action {a!r}")
        self._arm_timer()

    def _count(self, a: en.Count) -> None:
        if a.metric == "speculation":
            self.metrics.speculations.labels(a.label).inc()
        elif a.metric == "barge_in":
            self.metrics.barge_ins.inc()
        elif a.metric == "false_interruption":
            self.metrics.false_interruptions.inc()
        elif a.metric == "delegation":
            self.metrics.delegations.inc()

    def _arm_timer(self) -> None:
        due = self.engine.next_deadline()
        if due is None or (self._timer is not None and not self._timer.cancelled() and self._timer.when() <= due):
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_at(due, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.execute(self.engine.timer(time.monotonic()))

    async def _drained(self, rid: str):
        await self.call.queue_below(0)  # resolved by the transport when its queue empties (or is cleared)
        self.execute(self.engine.drained(rid, time.monotonic()))

    # ------------------------------------------------------------- the recording
    def _record(self) -> None:
        rec = self.call.recordings
        if self.recording is None and rec is not None:
            self.recording = rec.open(self.call.call_id, self.call.sample_rate, self.call.sample_rate)

    def _note(self, event) -> None:
        """What the sidecar keeps of an event: the session (GPT-Live's, resolved: what a fork starts from), the
        conversation's messages, each response's timing. A Live session's sidecar is rewritten as it goes."""
        t = type(event)
        if t is ev.ItemDone and event.item.get("type") == "message":
            text = " ".join(c.get("text") or c.get("transcript") or "" for c in event.item.get("content") or [])
            if text.strip():
                self.said.append({"id": event.item.get("id"), "role": event.item.get("role"), "text": text.strip()})
        elif t is ev.TranscriptionCompleted:
            self.said.append({"id": event.item_id, "role": "user", "text": event.transcript})
        elif t is ev.ResponseDone:
            r = event.response
            self.timings.append({"id": r["id"], "status": r["status"],
                                 "timing_ms": (r.get("voxgate") or {}).get("timing")})
            return
        elif t is lv.SessionStarted:
            self.stored = event.session
        else:
            return
        if self.stored is not None:
            self.call.recordings.describe(self.recording, self._meta())

    def _meta(self) -> dict:
        from ...call.recording import owner_hash

        return {"id": self.call.call_id, "api": self.call.api, "transport": self.call.transport,
                "owner_sha256": owner_hash(self.call.owner), "session": self.stored, "conversation": self.said,
                "responses": self.timings}

    def _finish_recording(self) -> None:
        rec, self.recording = self.recording, None
        try:
            self.call.recordings.finish(rec, self._meta())
        except OSError:
            log.warning("recording of %s could not be finished", self.call.call_id, exc_info=True)

    async def _backend(self, a: dl.StartBackend):
        """A delegated request on the backend (``--delegate``; the responder by default): each thing it makes told to
        the engine as it comes, then its end (or failure: the session goes on)."""
        def tell(what):
            self.execute(self.engine.backend(a.key, what, time.monotonic()))

        end = Ended()
        stream = self.stack.backend.stream(a.messages, a.instructions, tools=a.tools or None,
                                           tool_choice=a.tool_choice, max_tokens=a.max_tokens)
        try:
            async for part in stream:
                if isinstance(part, ToolCall):
                    tell(Called(part.name, part.call_id, part.arguments))
                elif part:
                    tell(Said(part))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a failing backend ends this request with an error event, not the call
            log.warning("delegated request %s failed", a.key, exc_info=True)
            end = Failed(_describe(exc))
        finally:
            await stream.aclose()
            self.backends.pop(a.key, None)
        tell(end)

    def _configure_denoise(self, kind: str | None) -> None:
        if kind is None:
            self.denoise = None
            return
        try:
            self.denoise = NoiseReduction(kind)
        except MissingModel as exc:
            self.denoise = None
            self.execute(self.engine.denoise_unavailable(str(exc), time.monotonic()))

    # ------------------------------------------------------------- the recognizer (one thread, in order)
    def _feed(self, frame: bytes):
        fut = asyncio.get_running_loop().run_in_executor(self.asr_pool, self.asr.feed, frame)
        self._feeding += 1
        self._last_feed = fut
        fut.add_done_callback(self._fed)

    def _fed(self, fut):
        self._feeding -= 1
        if fut.cancelled():
            return
        now = time.monotonic()
        if fut.exception() is not None:
            self._failed(fut.exception())
            self.execute(self.engine.recognizer_failed(_describe(fut.exception()), now))
        else:
            self.execute(self.engine.heard(fut.result(), now))

    def _asr(self, req: int, kind: str, handle=None):
        """A recognizer request on the call's recognizer thread; a numbered one's result (or failure: the turn's
        transcription then fails, the call goes on) goes back to the engine."""
        fn = {"start": self.asr.start, "cancel": self.asr.cancel, "finish": self.asr.finish,
              "draft": getattr(self.asr, "peek_draft", None), "scored": getattr(self.asr, "peek_scored", None),
              "refine": handle}[kind]
        fut = asyncio.get_running_loop().run_in_executor(self.asr_pool, fn)
        fut.add_done_callback(lambda f: self._answered(req, f))

    def _answered(self, req: int, fut):
        if fut.cancelled():
            return
        exc, now = fut.exception(), time.monotonic()
        if exc is not None:
            self._failed(exc)
        if req < 0:
            if exc is not None:
                self.execute(self.engine.recognizer_failed(_describe(exc), now))
            return
        self.execute(self.engine.recognized(req, None if exc else fut.result(), now,
                                            error=_describe(exc) if exc else None))

    def _failed(self, exc: BaseException):
        log.warning("recognizer failed on %s: %r", self.session_id, exc)

    # ------------------------------------------------------------- the call
    async def run(self):
        self.asr = await self.stack.acquire_asr()
        hearing = en.Hearing(partials=getattr(self.asr, "partials", True), peeks=isinstance(self.asr, Peeking))
        self.trace = CallTrace.start(self.call.call_id, {
            "voxgate.transport": self.call.transport, "voxgate.api": self.call.api,
            "gen_ai.system": "voxgate", **(self.call.trace_attributes or {})}, self.call.traceparent)
        if self.call.recordings is not None and self.call.recordings.all:  # --record: every call
            self._record()
        self.execute(self.engine.start(self.call.session_config, hearing, time.monotonic()))
        pump = self.spawn(self._pump_events())
        try:
            await asyncio.gather(self._audio_loop(), self._event_loop())
        finally:
            pump.cancel()
            self.execute(self.engine.close(time.monotonic()))
            if self._timer is not None:
                self._timer.cancel()
            for r in list(self.runners.values()):
                r.stop()
            for task in list(self.tasks):
                task.cancel()
            try:  # the call's transport may cancel us while we wait here (a WebRTC session closing): what follows
                # must run all the same, or the recognizer never goes back to the pool
                await asyncio.gather(*(r.task for r in self.runners.values() if r.task), return_exceptions=True)
                await asyncio.gather(*self.tasks, return_exceptions=True)
            finally:
                self.runners.clear()
                if self.recording is not None:
                    self._finish_recording()
                if self.trace is not None:
                    self.trace.end("ended")
                self.asr_pool.shutdown(wait=True, cancel_futures=True)
                self.stack.release_asr(self.asr)

    async def _audio_loop(self):
        """Each frame: noise reduction (if the session asks), the VAD, the engine. A push-to-talk buffer that runs
        more than ``FEED_AHEAD`` frames ahead of its recognizer waits for it (the frames queue in the client's
        socket, not in our memory)."""
        async for frame in self.call.audio():
            if self.sinks and self.face.replays:  # what the caller said, before mute and noise reduction
                self._reflect(frame, "session.input_audio.append", "audio")
            if self.recording is not None:  # what the caller said, as the agent heard it
                self.recording.caller(frame)
            if self.denoise is not None:
                frame = self.denoise(frame)
            self.execute(self.engine.frame(frame, self.vad(frame), time.monotonic()))
            if self._feeding > FEED_AHEAD and self._last_feed is not None:
                await asyncio.wait([self._last_feed])
            if not self.input_open.is_set():
                await self.input_open.wait()

    def _reflect(self, pcm: bytes, kind: str, field: str) -> None:
        """The call's audio, both ways, to GPT-Live sidebands: PCM16 24 kHz with its place on the session's
        timeline."""
        inbound = kind == "session.input_audio.append"
        resample = self.reflect_in if inbound else self.reflect_out
        if resample is None:
            resample = Resampler(self.call.sample_rate, 24000)
            if inbound:
                self.reflect_in = resample
            else:
                self.reflect_out = resample
        data = resample(pcm)
        if not data:
            return
        end = self.face.ms(time.monotonic())
        wire = {"type": kind, field: base64.b64encode(data).decode(), "start_ms": max(0, end - len(data) // 48),
                "end_ms": end}
        for sink in list(self.sinks):
            sink(wire)

    async def _pump_events(self):
        async for event in self.call.events():
            self.inbox.put_nowait((event, False))
        self.inbox.put_nowait(None)

    async def _event_loop(self):
        while (item := await self.inbox.get()) is not None:
            event, trusted = item
            self.execute(self.engine.client_event(event, time.monotonic(), trusted))


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
