"""The conversation engine, sans-IO: the one owner of a call's state, and the one that acts on it.

``Engine`` puts together what a voice conversation is: the conversation (``conversation.Conversation``: settings,
audio formats, items, which response is live), turn detection (``turns.TurnTaker``), the input buffer (the user
item being spoken, what the recognizer has heard of it), the recognizer's requests in flight, and every response's
record (``reply.Reply``) from its start to its last event. It applies its own decisions: it is told what happens
and answers with what the outside must do, in the manner of aioquic's ``QuicConnection`` and h11's ``Connection``.

What it is told (each takes the time, ``now``, and returns a list of actions):

- ``start`` (the session's opening settings), ``client_event`` (a client's event, parsed JSON; ``trusted``: from the
  app's server, a sideband, rather than a frontend);
- ``frame`` (20 ms of 16 kHz input, with the VAD's speech probability);
- ``recognized`` (the result of a recognizer request it made, by the request's number), ``heard`` (what a fed
  frame made the recognizer hear), ``recognizer_failed``;
- ``report`` (what a response runner made: ``reply.Said`` ... ``reply.Failed``), ``first_sent`` (its first packet
  left), ``output_cleared`` (how much queued audio a ``ClearOutput`` dropped), ``drained`` (the output queue
  emptied after a reply played), ``denoise_unavailable``;
- ``dtmf`` (a key pressed on a phone), ``timer`` (the time reached ``next_deadline()``), ``close`` (the call ended).

What it answers, for the executor (``shell/realtime.RealtimeSession``) to carry out and nothing more: send an
event (``Emit``); recognizer work (``AsrStart``, ``AsrFeed``, ``AsrDecode``, ``AsrCancel``, ``ConfigureRecognizer``);
runners (``StartRunner``, ``GoLive``, ``StopRunner``, ``WarmResponder``); output (``WriteAudio``, ``FlushAudio``,
``PauseOutput``, ``ClearOutput``, ``WatchSent``, ``WatchDrained``); input (``GateInput``, ``ConfigureAudio``,
``ConfigureDenoise``); metrics (``Count``, ``Observe``). It owns no audio device, no thread, no clock and no task:
``tests/test_agent_protocol.py`` drives it through every sequence of events, turns and reports hypothesis can make,
with executors that only answer.

A recognizer blocks for hundreds of ms, so its work is asked for, numbered, and its results come back later, in
order (the executor runs one call's requests on one thread). While the turn's final transcript is being decoded the
engine gates the input (``GateInput(False)``): the frames that follow wait in the transport, and client events in
the engine, and both are taken once the turn is committed, in the order they came.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

from . import eou, events as ev
from .conversation import (CancelResponse, ClearInput, ClearOutput, CommitResponse, ConfigureDenoise, Conversation,
                           Emit, EndInput, MuteInput, SetResponding, StartResponse)
from .events import error_event, new_id
from .realtime_face import RealtimeFace
from .reply import Called, Ended, Failed, Marked, Reply, Said, Spoke
from .turns import (EndOfTurn, Hold, IdleTimeout, Interrupt, JudgeInterruption, Release, Resume, Speculate,
                    SpeechStarted, TurnTaker, level, transcript_fits)

FIRST_PACKET_WAIT = 0.2  # response.done waits this long at most for the reply's first packet (its timing field)
STALL = 0.3  # a turn whose input stops for this long hears silence (a WebSocket client that stopped appending)
STALL_MAX_FRAMES = 200  # ... at most 4 s of it at a time


# ---------------------------------------------------------------- what the executor is asked to do
@dataclass(frozen=True)
class Hearing:
    """What the call's recognizer can do (``models/interfaces``): stream partial hypotheses, decode the utterance at
    a pause and keep listening (``Peeking``)."""

    partials: bool = True
    peeks: bool = False


@dataclass(frozen=True)
class AsrStart:
    """Open an utterance (and feed it ``frames``: the audio before speech was called, the prefix padding)."""

    frames: tuple = ()


@dataclass(frozen=True)
class AsrFeed:
    """Feed 20 ms; what the recognizer then hears comes back as ``Engine.partial``."""

    frame: bytes


@dataclass(frozen=True)
class AsrDecode:
    """Decode, answered by ``Engine.recognized(req, result)``: ``draft`` (the utterance so far, and a beam's
    refinement to run after it: ``(text, surest, refine)``), ``refine`` (run ``handle``, the draft's refinement),
    ``scored`` (``(text, surest)``), ``finish`` (the utterance's text; it closes)."""

    req: int
    kind: str
    handle: object = None


@dataclass(frozen=True)
class AsrCancel:
    """Drop the open utterance, undecoded."""


@dataclass(frozen=True)
class StartRunner:
    """Make response ``rid``: ask the responder with ``messages`` and speak what it says; ``live``: its audio is
    wanted now (a speculation's waits for ``GoLive`` after its first piece)."""

    rid: str
    config: object
    messages: list
    live: bool


@dataclass(frozen=True)
class GoLive:
    rid: str


@dataclass(frozen=True)
class StopRunner:
    rid: str


@dataclass(frozen=True)
class WarmResponder:
    """The user started a turn: the responder may read the conversation so far now (``messages``: what the turn's
    request will begin with), so that when the turn ends only the new words are left to read. The embedded model's
    prompt cache then holds the last answer: a second question's first token ~60 ms instead of ~155."""

    messages: list
    instructions: str


@dataclass(frozen=True)
class WriteAudio:
    pcm: bytes
    ids: dict


@dataclass(frozen=True)
class FlushAudio:
    """The reply's audio ends here (a transport that frames its audio sends the last partial frame)."""


@dataclass(frozen=True)
class PauseOutput:
    on: bool


@dataclass(frozen=True)
class WatchSent:
    """Tell ``first_sent(rid, t)`` when the next audio written leaves as a packet."""

    rid: str


@dataclass(frozen=True)
class WatchDrained:
    """Tell ``drained(rid)`` when the output queue is empty (or cleared)."""

    rid: str


@dataclass(frozen=True)
class GateInput:
    """Stop (False) or resume (True) taking input frames."""

    open: bool


@dataclass(frozen=True)
class Count:
    """A counter: ``speculation`` (with its outcome), ``barge_in``, ``false_interruption``."""

    metric: str
    label: str = ""


@dataclass(frozen=True)
class Observe:
    """A response ended: its status and timing, for the histograms; its marks (monotonic seconds) and what it was,
    for a trace."""

    status: str
    timing: dict
    marks: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)


@dataclass
class _Ending:
    """A turn whose end was detected, waiting for its final transcript."""

    item_id: str
    create_response: bool
    marks: dict
    final: int | None = None  # the final decode's request, once asked


class Engine:
    def __init__(self, *, instructions: str, model: str, asr: str, voice: str, vad: str, responder: str,
                 paced: bool = True, out_rate: int = 24000, ids=new_id, languages=None, face=None):
        self.conv = Conversation(instructions=instructions, model=model, asr=asr, voice=voice, vad=vad,
                                 responder=responder, ids=ids, languages=languages)
        self.face = face or RealtimeFace()  # the API vocabulary its client events come in (realtime_face.py)
        self.turn_cfg = self.conv.turn_cfg
        self.tt = TurnTaker(self.turn_cfg)
        self.paced, self.out_rate = paced, out_rate  # the server plays the audio out (WebRTC, SIP); its rate
        self.hearing = Hearing()
        self.t_ms = 0  # the input stream's time: 20 ms per frame
        self.ring: collections.deque = collections.deque()  # the frames before speech started (prefix padding)
        self.utterance = False  # the recognizer has an utterance open
        self.item: str | None = None  # the user item the input buffer will become, while one is open
        self.segments: list[str] = []  # utterances closed by a speculation whose decode was final
        self.peeked: str | None = None  # the last pause's decode of the utterance still open
        self.partial = ""  # what the client has been told of the transcript (the deltas so far)
        self.held_text = ""  # what was recognized of speech over the agent that is held (not yet a turn)
        self.asr_error: str | None = None  # the recognizer failed during this turn: its transcription fails
        self.requests: dict[int, tuple] = {}  # recognizer requests in flight: number -> (purpose, details)
        self._reqs = 0
        self.ending: _Ending | None = None
        self.backlog: collections.deque = collections.deque()  # frames that came while the input was gated
        self.waiting_events: collections.deque = collections.deque()  # client events that came meanwhile
        self.replies: dict[str, Reply] = {}  # every response from its start to its last event
        self.muted = False  # the client muted its input: the engine hears silence
        self.last_frame: float | None = None  # when the last input frame came (a turn's input that stops is silence)
        self.silence = b""  # a frame of it, as long as the input's

    @property
    def session_id(self) -> str:
        return self.conv.session_id

    @property
    def conversation_id(self) -> str:
        return self.conv.conversation_id

    def start(self, initial: dict | None, hearing: Hearing = Hearing(), now: float = 0.0) -> list:
        self.hearing = hearing
        return self._apply(self.face.start(self.conv, initial, now), now)

    def close(self, now: float, reason: str = "remote_hangup") -> list:
        """The call ended: every response still in progress is cancelled (``call_ended``), its closing events out,
        and the face's last word, if it has one (Live's ``session.closed``)."""
        out = []
        for rid in list(self.replies):
            out += self._cancel(rid, "call_ended", now)
        last = self.face.closing(now, reason)
        return out + ([Emit(last)] if last is not None else [])

    def next_deadline(self) -> float | None:
        due = [r.done_due for r in self.replies.values() if r.done_due is not None]
        if self._stalls():
            due.append(self.last_frame + STALL)
        if (face := self.face.next_deadline()) is not None:
            due.append(face)
        return min(due) if due else None

    def _stalls(self) -> bool:
        """A turn is in progress and its input may stop (a paced call's frames come every 20 ms; a WebSocket
        client's when it sends them): its end must not wait for frames that never come."""
        return (self.last_frame is not None and self.turn_cfg.enabled and self.ending is None
                and self.tt.state != TurnTaker.IDLE)

    def timer(self, now: float) -> list:
        out = self._apply(self.face.timer(self.conv, now), now)  # its own (GPT-Live's usage, acknowledgements)
        for r in list(self.replies.values()):
            if r.done_due is not None and r.done_due <= now:
                out += self._send_done(r)
        if self._stalls() and now >= self.last_frame + STALL:  # the input stopped mid-turn: it is silence
            n = min(STALL_MAX_FRAMES, int((now - self.last_frame) / 0.02))
            self.last_frame = now
            for _ in range(n):
                if self.ending is not None or self.tt.state == TurnTaker.IDLE:
                    break
                out += self._frame(self.silence, 0.0, now)
        return out

    # ------------------------------------------------------------- applying the conversation's decisions
    def _apply(self, actions: list, now: float) -> list:
        out = []
        for a in actions:
            t = type(a)
            if t is SetResponding:
                self.tt.set_responding(a.on)
            elif t is StartResponse:
                r = self.conv.responses[a.rid]
                self.replies[a.rid] = r
                r.marks.update({"started": now, **a.marks})
                out.append(StartRunner(a.rid, a.config, a.messages, live=not a.speculative))
                if a.speculative:
                    out.append(Count("speculation", "started"))
                out += self._deliver(r, [("event", ev.ResponseCreated(r.describe(self.conversation_id)))], now)
            elif t is CommitResponse:
                r = self.replies[a.rid]
                r.marks.update(a.marks)
                r.marks["committed"] = a.turn_end
                held, r.held = r.held, []
                out.append(GoLive(a.rid))
                out += self._deliver(r, held, now)
            elif t is CancelResponse:
                out += self._cancel(a.rid, a.reason, now)
            elif t is EndInput:
                end = self.t_ms
                out += self._reset_turn()
                out += self._end_turn(EndOfTurn(end, a.create_response), now)
            elif t is ClearInput:
                out += self._clear_input()
            elif t is MuteInput:
                self.muted = a.on
            else:  # Emit, ClearOutput, ConfigureAudio, ConfigureRecognizer, ConfigureDenoise, EndSession: the executor's
                out.append(a)
        return out

    # ------------------------------------------------------------- client events
    def client_event(self, event: dict, now: float, trusted: bool = False) -> list:
        """A client's event. While a turn's final transcript is decoded, events wait for its commit (a push-to-talk
        client's ``commit`` then ``response.create`` answers the committed turn)."""
        if self.ending is not None:
            self.waiting_events.append((event, trusted))
            return []
        self.conv.input_open = self.item is not None or self.tt.state != TurnTaker.IDLE
        try:
            return self._apply(self.face.client_event(self.conv, event, now, trusted), now)
        except Exception as exc:  # one bad event never ends the session
            return [Emit(error_event("event_failed", f"{event.get('type')}: {exc}", None, event.get("event_id"),
                                     "server_error"))]

    # ------------------------------------------------------------- audio
    def frame(self, pcm: bytes, speech_prob: float, now: float) -> list:
        """20 ms of input (after noise reduction), with the VAD's speech probability."""
        if self.ending is not None:  # the input is gated: it comes after the turn being committed
            self.backlog.append((pcm, speech_prob))
            return []
        if self.muted:
            pcm, speech_prob = bytes(len(pcm)), 0.0
        self.last_frame = now
        if len(self.silence) != len(pcm):
            self.silence = bytes(len(pcm))
        return self._frame(pcm, speech_prob, now)

    def _frame(self, pcm: bytes, speech_prob: float, now: float) -> list:
        self.t_ms += 20
        cfg = self.turn_cfg
        if not cfg.enabled:  # push-to-talk: every frame goes to the input buffer until it is committed or cleared
            out = []
            if self.item is None:
                self._open_buffer()
                out += self._open_utterance(())
            return out + [AsrFeed(pcm)]
        self.ring.append(pcm)
        while len(self.ring) > max(1, cfg.prefix_padding_ms // 20):
            self.ring.popleft()
        before = self.tt.state
        out, decodes = [], []  # a decode the frame asks for (at a pause, of held speech) includes the frame
        for action in self.tt.frame(speech_prob, self.t_ms, level(pcm)):
            if type(action) in (Speculate, JudgeInterruption):
                decodes.append(action)
            else:
                out += self._turn(action, now)
        state = self.tt.state
        if before != TurnTaker.IDLE and state != TurnTaker.IDLE:
            if self.utterance:
                out.append(AsrFeed(pcm))
            elif state == TurnTaker.SPEAKING:  # speech resumed after a speculation: open a new utterance
                out += self._open_utterance(tuple(self.ring)[-5:])
        if state == TurnTaker.SPEAKING:
            self.ring.clear()
        for action in decodes:
            out += self._turn(action, now)
        return out

    def _open_utterance(self, frames: tuple) -> list:
        self.utterance = True
        return [AsrStart(frames)]

    def _ask(self, kind: str, purpose: str, *details, handle=None) -> AsrDecode:
        self._reqs += 1
        self.requests[self._reqs] = (purpose, *details)
        if kind == "finish":
            self.utterance = False
        return AsrDecode(self._reqs, kind, handle)

    def _turn(self, action, now: float) -> list:
        t = type(action)
        if t is SpeechStarted:
            out = [Emit(ev.SpeechStarted(self._open_buffer(), action.audio_start_ms))]
            if action.held:  # what was recognized while it was held is the start of the turn
                out += self._transcribed(self.held_text)
            c = self.conv
            if c.responds and self.turn_cfg.create_response and c.items and c.live is None and c.playing is None:
                out.append(WarmResponder(c.messages(), c.instructions))
            if not action.held:  # held speech: the recognizer has had it since Hold
                out += self._open_utterance(tuple(self.ring))
                self.ring.clear()
            return out
        if t is Hold:  # speech over the agent: silent at once, the answer kept until the speech is judged
            self.held_text = ""
            out = [PauseOutput(True)] + self._open_utterance(tuple(self.ring))
            self.ring.clear()
            return out
        if t is JudgeInterruption:
            if self.hearing.peeks:
                return [self._ask("scored", "judge", action.speech_ms)]
            return self._judged_interruption(self.held_text, 1.0, action.speech_ms)
        if t is Release:
            out = [PauseOutput(False)]
            if action.false_interruption:  # a backchannel or a noise: forget it, the answer goes on
                self.held_text = ""
                self.utterance = False
                out += [AsrCancel(), Count("false_interruption")]
            return out
        if t is Interrupt:
            return self._barge_in()
        if t is Speculate:
            # close the utterance so far and prepare the reply from it; if speech resumes, a new one opens. A
            # recognizer that decodes at a pause keeps the utterance open (a pause inside a sentence must not cut it
            # in two decodes); one that only finishes utterances closes it
            if self.hearing.peeks:
                return [self._ask("draft", "pause", now)]
            return [self._ask("finish", "pause", now)]
        if t is Resume:
            return self._discard_speculation("resumed", now)
        if t is EndOfTurn:
            return self._end_turn(action, now)
        if t is IdleTimeout:
            return self._idle_timeout(action, now)
        raise TypeError(f"unknown turn action {action!r}")

    # ------------------------------------------------------------- the input buffer
    def _open_buffer(self) -> str:
        """A new input buffer (the user item it will become): nothing recognized in it yet."""
        self.item = self.conv.new_id("item")
        self.segments, self.partial, self.peeked = [], "", None
        return self.item

    def _reset_turn(self) -> list:
        """The turn taker starts over; speech over the agent that it held goes with it, so the answer plays on."""
        self.tt.reset()
        return [PauseOutput(False)]

    def _clear_input(self) -> list:
        """input_audio_buffer.clear: what was heard is dropped (undecoded), decodes in flight for it too."""
        out = self._reset_turn() + [AsrCancel()]
        self.utterance = False
        self.item, self.segments, self.partial, self.peeked = None, [], "", None
        for req, (purpose, *_) in list(self.requests.items()):
            if purpose in ("pause", "refine"):
                self.requests[req] = ("void",)
        return out

    def transcript(self) -> str:
        """The user's turn so far: the utterances closed by speculations, and what the last pause's decode heard of
        the one still open."""
        return " ".join(s for s in self.segments + [self.peeked or ""] if s)

    def _transcribed(self, text: str) -> list:
        """A partial hypothesis (or, from a recognizer without partials, the whole transcript): the new part as a
        delta."""
        if self.item is None:
            if self.tt.held is not None:  # speech over the agent, not (yet) a turn: kept for its judgement
                self.held_text = text
            return []
        if not text or text == self.partial:
            return []
        prev, self.partial = self.partial, text
        if not text.startswith(prev):
            return []
        return [Emit(ev.TranscriptionDelta(self.item, 0, text[len(prev):]))]

    def _segment(self, text: str) -> list:
        """A final decode of an utterance (the turn's last, or one a speculation closed)."""
        self.segments.append(text)
        return [] if self.hearing.partials else self._transcribed(self.transcript())

    # ------------------------------------------------------------- what the recognizer says
    def heard(self, text: str, now: float) -> list:
        return self._transcribed(text)

    def recognizer_failed(self, error: str, now: float) -> list:
        """The recognizer failed (a feed, a decode): the turn's transcription fails when it is committed, and the
        call goes on."""
        if self.asr_error is None:
            self.asr_error = error
        return []

    def recognized(self, req: int, result, now: float, error: str | None = None) -> list:
        """The result of request ``req`` (``error``: it failed; the result is then empty)."""
        purpose, *details = self.requests.pop(req, ("void",))
        if error is not None:
            self.recognizer_failed(error, now)
        out: list = []
        if purpose == "judge":
            text, sure = result if result and error is None else ("", 1.0)
            out = self._judged_interruption(text, sure, details[0])
        elif purpose == "pause":
            out = self._paused(req, result if error is None else None, details[0], now)
        elif purpose == "refine":
            draft, paused_at = details
            out = self._refined(draft, result if error is None else draft, paused_at, now)
        elif purpose == "final":
            out = self._segment(result if error is None and result else "")
        return out + self._advance_ending(now)

    def _judged_interruption(self, text: str, sure: float, speech_ms: int) -> list:
        """Held speech, decoded: words make it a turn; a backchannel, a cough or a laugh do not."""
        self.tt.interruption(not eou.is_backchannel(text, speech_ms, sure))
        return []

    def _paused(self, req: int, result, paused_at: float, now: float) -> list:
        """The decode at a pause. A recognizer unsure of a word decodes the audio again with a beam meanwhile (a
        ``refine`` request follows); the reply is prepared from this draft at once, and made again if the beam hears
        other words. (Waiting for the beam instead, measured in the browser bench: the median turn ~25 ms later,
        the p90 no better.)"""
        out: list = []
        refine = None
        if self.hearing.peeks:
            text, _, refine = result if result else ("", 1.0, None)
        else:  # the utterance was finished: its text is a segment of the turn whatever happens next
            out += self._segment(result or "")
            text = None
        if not self.tt.speculating:  # speech resumed, or the turn ended, while it decoded
            return out
        if text is not None:
            self.peeked = text
            if not self.hearing.partials:
                out += self._transcribed(self.transcript())
        out += self._judged(paused_at, now)
        if refine is not None:
            out.append(self._ask("refine", "refine", text, paused_at, handle=refine))
        return out

    def _refined(self, draft: str, better: str, paused_at: float, now: float) -> list:
        """The beam's decode of the audio the draft was decoded from. If its words differ, the speculation made
        from the draft is void, and the verdict and speculation are made again from it."""
        if self.peeked is not draft or transcript_fits(better, draft):  # speech resumed meanwhile, or it agrees
            return []
        pausing = self.tt.speculating  # else the turn has ended and its end takes the better decode
        out = self._discard_speculation("refined", now)
        self.peeked = better
        return out + (self._judged(paused_at, now) if pausing else [])

    def _judged(self, paused_at: float, now: float) -> list:
        """What was said up to this pause: the verdict (semantic_vad) and the reply prepared from it."""
        transcript = self.transcript()
        if self.turn_cfg.semantic:  # the turn ends on what was said: judge it now, at the pause
            verdict = eou.verdict(transcript)
            self.tt.judge(verdict)
            if verdict == eou.OPEN:  # it waits for more speech: a reply prepared now would most likely be void
                return []
        if self.turn_cfg.partial_inference and self.turn_cfg.create_response and not self.face.delegates(transcript):
            return self._apply(self.conv.speculate(transcript, {"pause": paused_at, "peeked": now}), now)
        return []

    def _discard_speculation(self, why: str, now: float) -> list:
        self.peeked = None
        if self.conv.spec is None:
            return []
        return self._apply(self.conv.discard_speculation(), now) + [Count("speculation", why)]

    # ------------------------------------------------------------- the end of a turn
    def _end_turn(self, action: EndOfTurn, now: float) -> list:
        """The turn ends: its item (the open buffer's, or a new one) and ``speech_stopped``; the input waits while
        the final transcript is made (the pause's decode, if nothing was said since, else the recognizer's
        ``finish``: what partial inference saves), then the turn is committed."""
        if self.ending is not None:  # a client's commit of the turn already ending
            return []
        item_id = self.item or self.conv.new_id("item")
        speech_end = now - (self.t_ms - action.audio_end_ms) / 1000
        self.ending = _Ending(item_id, action.create_response, {"turn_end": now, "speech_end": speech_end})
        return ([Emit(ev.SpeechStopped(item_id, action.audio_end_ms)), GateInput(False)]
                + self._advance_ending(now))

    def _advance_ending(self, now: float) -> list:
        e = self.ending
        if e is None or e.final in self.requests:
            return []
        if any(p in ("pause", "refine") for p, *_ in self.requests.values()):
            return []  # a decode a speculation started: its text belongs to this turn
        if e.final is None and self.utterance:
            if self.peeked is not None:  # decoded at the last pause, and nothing said since
                peeked, self.peeked = self.peeked, None
                self.utterance = False
                return [AsrCancel()] + self._segment(peeked) + self._advance_ending(now)
            e.final = self._reqs + 1
            return [self._ask("finish", "final")]
        return self._commit_turn(now)

    def _commit_turn(self, now: float) -> list:
        """The turn's final transcript is in: the user item, its transcription, and the response (the speculation
        committed if it was made from these words, else a new one)."""
        e, self.ending = self.ending, None
        e.marks["final_transcript"] = now
        transcript = self.transcript()
        self.peeked = None
        out = self._apply(self.conv.commit_user_item(e.item_id, transcript, self.asr_error), now)
        self.asr_error = None
        self.item, self.partial = None, ""
        spec = self.conv.spec
        failed = {spec} if spec is not None and self.replies[spec].status == "failed" else set()
        taken = self.face.takes_turn(self.conv, transcript, e.create_response, now)  # GPT-Live may delegate it
        if taken is not None:
            actions = self.conv.discard_speculation() + taken
        else:
            actions = self.conv.end_of_turn(transcript, e.create_response, e.marks, transcript_fits, failed)
        out += self._apply(actions, now)
        if taken is not None:
            out.append(Count("delegation", "made"))
        if spec is not None:
            committed = any(type(a) is CommitResponse for a in actions)
            out.append(Count("speculation", "committed" if committed else
                             "mismatch" if e.create_response and transcript else "no_response"))
        while self.waiting_events and self.ending is None:  # what waited for the commit, in order
            event, trusted = self.waiting_events.popleft()
            out += self.client_event(event, now, trusted)
        if self.ending is None:
            out.append(GateInput(True))
        while self.backlog and self.ending is None:
            out += self.frame(*self.backlog.popleft(), now)
        return out

    def _idle_timeout(self, action: IdleTimeout, now: float) -> list:
        """The user said nothing for idle_timeout_ms: the silent audio becomes an (empty) user item, and the agent
        checks whether they are still there, as the API's server VAD does."""
        item_id = self.conv.new_id("item")
        out = [Emit(ev.TimeoutTriggered(item_id, action.audio_start_ms, action.audio_end_ms))]
        out += self.conv.commit_user_item(item_id, "")
        self.item, self.partial = None, ""
        if self.turn_cfg.create_response and self.conv.live is None and self.conv.responds:
            seconds = round(self.turn_cfg.idle_timeout_ms / 1000)
            nudge = {"role": "system", "content": f"The user has said nothing for {seconds} seconds. Briefly and "
                                                  "kindly check whether they are still there."}
            out += self._apply(self.conv.respond({"turn_end": now}, [nudge]), now)
        return out

    # ------------------------------------------------------------- barge-in and the output
    def _barge_in(self) -> list:
        """The user talks over the agent: silence at once (the executor says how much it dropped:
        ``output_cleared``), then the reply is cancelled and truncated to what was heard."""
        rid = self.conv.live or self.conv.playing
        if rid is None:
            return []
        return [ClearOutput("barge_in"), PauseOutput(False)]

    def output_cleared(self, why: str, dropped_ms: float, now: float) -> list:
        if why != "barge_in":
            return []
        rid, actions = self.conv.barge_in()
        if rid is None:
            return []
        r = self.replies.get(rid)
        if r is not None:
            r.barged = True
        out = self._apply(actions, now)
        if self.paced and r is not None:
            # WebRTC, SIP: the server knows what was played, so it clears and truncates itself. Over a WebSocket the
            # client plays the audio: it truncates (conversation.item.truncate) to what it played, as the API says
            out.append(Emit(ev.OutputCleared(rid)))
            if r.written_ms > 0 and r.item_id is not None:
                heard_ms = max(0, int(r.written_ms - dropped_ms))
                out += self.conv.truncate(r.item_id, heard_ms, r.written_ms)
        return out + [Count("barge_in")]

    def drained(self, rid: str, now: float) -> list:
        """The output queue emptied after reply ``rid``'s audio (or was cleared)."""
        r = self.replies.pop(rid, None)
        if r is None:
            return []
        out = self._apply(self.face.response_over(self.conv, rid, r.status), now)  # (a Live fixture's end)
        if self.conv.playing == rid or (self.conv.playing is None and not r.barged):
            return out + self._apply(self.conv.drained(rid), now)
        return out

    # ------------------------------------------------------------- what runners report
    def report(self, rid: str, what, now: float) -> list:
        """What the runner of response ``rid`` made (``reply.Said`` ... ``reply.Failed``)."""
        r = self.replies.get(rid)
        if r is None or r.status != "in_progress":  # it was cancelled: what was still on its way is void
            return []
        t = type(what)
        if t is Said:
            return self._deliver(r, r.said(what.text), now)
        if t is Spoke:  # the voice of what was said (none before the first words: there is no item to carry it)
            return self._deliver(r, [("audio", what.pcm)], now) if r.message is not None else []
        if t is Marked:
            r.marks.setdefault(what.stage, now)
            return []
        if t is Called:
            return self._deliver(r, r.called(what), now)
        if t is Failed:
            r.status, r.reason = "failed", "error"
            return [Emit(error_event("response_failed", what.message, None, None, "server_error"))] + \
                self._end(r, now)
        if t is Ended:
            r.status, r.reason = what.status, what.reason
            return self._end(r, now)
        raise TypeError(f"unknown report {what!r}")

    def dtmf_sent(self, key: str, client_event_id: str | None, ok: bool, now: float) -> list:
        """A key the face asked to send (GPT-Live's ``transport.dtmf.send``) went out, or could not."""
        return self._apply(self.face.dtmf_sent(key, client_event_id, ok), now)

    def backend(self, key: str, what, now: float) -> list:
        """What a backend request (``delegation.StartBackend``) made: ``Said``, ``Called``, ``Ended`` or ``Failed``."""
        return self._apply(self.face.backend(self.conv, key, what, now), now)

    def first_sent(self, rid: str, t: float, now: float) -> list:
        r = self.replies.get(rid)
        if r is None:
            return []
        r.marks.setdefault("first_audio_sent", t)
        r.watching_sent = False
        return self._send_done(r) if r.done_due is not None else []

    def dtmf(self, digit: str, at: int) -> list:
        """A key the caller pressed on a phone (``at``: Unix seconds), told to the client as OpenAI's SIP calls do."""
        return [Emit(ev.DtmfReceived(digit, at))]

    def denoise_unavailable(self, message: str, now: float) -> list:
        self.conv.noise_reduction = None
        return [ConfigureDenoise(None), Emit(error_event("noise_reduction_unavailable", message,
                                                         "session.audio.input.noise_reduction"))]

    def _end(self, r: Reply, now: float) -> list:
        flush = [("flush", None)] if r.config.audio and r.message is not None else []
        return [StopRunner(r.rid)] + self._deliver(r, flush + [("done", None)], now)

    def _cancel(self, rid: str, reason: str, now: float) -> list:
        r = self.replies.get(rid)
        if r is None:
            return []
        if r.holds:  # a held speculation ends without a word, whatever it had made
            self.replies.pop(rid, None)
            if r.status == "in_progress":
                r.status, r.reason = "cancelled", reason
            return [StopRunner(rid)]
        if r.status != "in_progress":
            return []
        r.status, r.reason = "cancelled", reason
        return [StopRunner(rid)] + self._deliver(r, [("done", None)], now)

    def _deliver(self, r: Reply, outputs: list, now: float) -> list:
        """A reply's outputs as actions (held while it is speculative)."""
        if r.holds:
            r.held += outputs
            return []
        out = []
        for kind, payload in outputs:
            if kind == "event":
                out.append(Emit(payload))
            elif kind == "item_added":  # previous_item_id is read now: a held item's comes later
                out += self.conv.item_added(r.config, payload)
            elif kind == "item_done":
                out += self.conv.item_done(r.config, payload, r.written_ms)
            elif kind == "audio":
                if "first_audio_written" not in r.marks:
                    r.marks["first_audio_written"] = now
                    if self.paced:  # WebRTC and SIP only: a WebSocket client plays what it gets
                        out.append(Emit(ev.OutputStarted(r.rid)))
                    r.watching_sent = True
                    out.append(WatchSent(r.rid))
                out.append(WriteAudio(payload, r.ids(r.message)))
                r.written_ms += len(payload) / 2 / self.out_rate * 1000
            elif kind == "flush":
                out.append(FlushAudio())
            elif kind == "done":
                out += self._deliver(r, r.closing(), now) + self._finished(r, now)
        return out

    def _finished(self, r: Reply, now: float) -> list:
        """The reply's closing events are out. A completed one with audio written plays on (barge-in stays armed
        until its playback drains); ``response.done`` waits (at most ``FIRST_PACKET_WAIT``) for its first packet to
        leave, so its timing field is complete."""
        plays = r.status == "completed" and r.written_ms > 0 and self.paced
        out = self._apply(self.conv.response_done(r.rid, r.status, plays), now)
        if r.watching_sent and r.status == "completed":
            r.done_due = now + FIRST_PACKET_WAIT
            return out
        return out + self._send_done(r)

    def _send_done(self, r: Reply) -> list:
        r.done_due = None
        if r.done_sent:
            return []
        r.done_sent = True
        info = {"id": r.rid, "status": r.status, "reason": r.reason, "tokens": r.tokens, "barged": r.barged,
                "model": self.conv.names["responder"],
                "tool_calls": sum(1 for i in r.output_items() if i.get("type") == "function_call")}
        out = [Emit(ev.ResponseDone(r.describe(self.conversation_id))),
               Observe(r.status, r.timing_ms(), dict(r.marks), info)]
        if r.status == "completed" and r.written_ms > 0 and self.paced:  # say when its audio has played
            return out + [WatchDrained(r.rid)]
        self.replies.pop(r.rid, None)
        return out + self._apply(self.face.response_over(self.conv, r.rid, r.status), r.marks.get("started", 0.0))
