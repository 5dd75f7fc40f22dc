"""One Realtime connection, sans-IO: the one owner of a call's state.

``RealtimeConnection`` puts together what a Realtime call is: the conversation (``conversation.Conversation``:
settings, audio formats, items, responses), turn detection (``turns.TurnTaker``) and the input buffer (the user
item being spoken, what the recognizer has heard of it, what the last pause's decode said). It takes what the shell
(``shell/realtime.RealtimeSession``) observes — client events, each audio frame's VAD decision and loudness, the
recognizer's results, what response runners report — with the time, and returns typed actions: server events
(``events``), responses to start, commit or cancel, buffers to clear, turn actions (``turns``) whose I/O the shell
does. It owns no audio, no threads, no clock and no tasks: ``tests/test_agent_protocol.py`` runs it on fake time
through every sequence of client events and turns the protocol allows.

The recognizer's work is the shell's (it blocks for hundreds of ms); the connection says what its results mean:
``transcribed`` (a partial hypothesis: a delta), ``paused`` (the decode at a pause: the verdict of ``semantic_vad``
and the speculative response), ``refined`` (the beam's decode of the same audio, where the first was unsure),
``turn_committed`` (the final transcript: the user item, and the response committed or made anew).
"""

from __future__ import annotations

from dataclasses import dataclass

from . import eou, events as ev
from .conversation import CommitResponse, Conversation, Emit, ResponseConfig, SetResponding
from .events import new_id
from .turns import EndOfTurn, IdleTimeout, SpeechStarted, TurnTaker, transcript_fits


@dataclass(frozen=True)
class WarmResponder:
    """The user started a turn: the responder may read the conversation so far now (``messages``: what the turn's
    request will begin with), so that when the turn ends only the new words are left to read. The embedded model's
    prompt cache then holds the last answer: a second question's first token ~60 ms instead of ~155."""

    messages: list
    instructions: str


@dataclass(frozen=True)
class CountSpeculation:
    """What became of a speculative response (for the metrics): resumed, refined, committed, mismatch,
    no_response."""

    outcome: str


class RealtimeConnection:
    def __init__(self, *, instructions: str, model: str, asr: str, voice: str, vad: str, responder: str,
                 partials: bool = True, ids=new_id, languages=None):
        self.conv = Conversation(instructions=instructions, model=model, asr=asr, voice=voice, vad=vad,
                                 responder=responder, ids=ids, languages=languages)
        self.turn_cfg = self.conv.turn_cfg
        self.tt = TurnTaker(self.turn_cfg)
        self.partials = partials  # the recognizer streams partial hypotheses (else each decode is the delta)
        self.t_ms = 0  # the input stream's time: 20 ms per frame
        self.item: str | None = None  # the user item the input buffer will become, while one is open
        self.segments: list[str] = []  # utterances closed by a speculation whose decode was final
        self.peeked: str | None = None  # the last pause's decode of the utterance still open
        self.partial = ""  # what the client has been told of the transcript (the deltas so far)
        self.held_text = ""  # what was recognized of speech over the agent that is held (not yet a turn)
        self.asr_error: str | None = None  # the recognizer failed during this turn: its transcription fails

    @property
    def session_id(self) -> str:
        return self.conv.session_id

    def start(self, initial: dict | None) -> list:
        return self.conv.start(initial)

    def _own(self, actions: list) -> list:
        """The conversation's actions, with what concerns the turn taker (whether the agent is responding: speech
        then is a barge-in) carried out here; the rest is the shell's."""
        out = []
        for a in actions:
            if type(a) is SetResponding:
                self.tt.set_responding(a.on)
            else:
                out.append(a)
        return out

    # ------------------------------------------------------------- client events
    def client_event(self, event: dict, now: float) -> list:
        self.conv.input_open = self.item is not None or self.tt.state != TurnTaker.IDLE
        return self._own(self.conv.client_event(event, now))

    # ------------------------------------------------------------- what response runners report
    def item_added(self, config: ResponseConfig, item: dict) -> list:
        return self.conv.item_added(config, item)

    def item_done(self, config: ResponseConfig, item: dict, audio_ms: float = 0.0) -> list:
        return self.conv.item_done(config, item, audio_ms)

    def response_done(self, rid: str, status: str, queued_ms: int) -> list:
        return self._own(self.conv.response_done(rid, status, queued_ms))

    def drained(self, rid: str) -> list:
        return self._own(self.conv.drained(rid))

    # ------------------------------------------------------------- audio
    def frame(self, speech_prob: float, level: float | None) -> list:
        """One 20 ms frame of input: the turn taker's actions."""
        self.t_ms += 20
        return self.tt.frame(speech_prob, self.t_ms, level)

    def buffered_frame(self) -> bool:
        """With turn detection off (push-to-talk) every frame goes to the input buffer until the client commits or
        clears it: True when this one opens a new buffer (the recognizer then starts an utterance)."""
        self.t_ms += 20
        if self.item is not None:
            return False
        self.open_buffer()
        return True

    def reset_turn(self) -> None:
        """The turn taker starts over (the client committed or cleared the input itself)."""
        self.tt.reset()

    def open_buffer(self) -> str:
        """A new input buffer (the user item it will become): nothing recognized in it yet."""
        self.item = self.conv.new_id("item")
        self.segments, self.partial, self.peeked = [], "", None
        return self.item

    def clear_input(self) -> None:
        self.reset_turn()
        self.item, self.segments, self.partial, self.peeked = None, [], "", None

    def transcript(self) -> str:
        """The user's turn so far: the utterances closed by speculations, and what the last pause's decode heard of
        the one still open."""
        return " ".join(s for s in self.segments + [self.peeked or ""] if s)

    # ------------------------------------------------------------- what the recognizer says
    def transcribed(self, text: str) -> list:
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

    def asr_failed(self, error: str) -> bool:
        """The recognizer failed: the turn's transcription fails when it is committed. True the first time."""
        first = self.asr_error is None
        if first:
            self.asr_error = error
        return first

    def segment(self, text: str) -> list:
        """A final decode of an utterance (the turn's last, or one a speculation closed)."""
        self.segments.append(text)
        return [] if self.partials else self.transcribed(self.transcript())

    def take_peeked(self) -> str | None:
        """At the end of the turn: the pause's decode, if nothing was said since (the recognizer is then reset
        rather than asked to decode the same audio again)."""
        peeked, self.peeked = self.peeked, None
        return peeked

    # ------------------------------------------------------------- turn actions, judged
    def speech_started(self, action: SpeechStarted) -> list:
        out = [Emit(ev.SpeechStarted(self.open_buffer(), action.audio_start_ms))]
        if action.held:  # what was recognized while it was held is the start of the turn
            out += self.transcribed(self.held_text)
        c = self.conv
        if c.responds and self.turn_cfg.create_response and c.items and c.live is None and c.playing is None:
            out.append(WarmResponder(c.messages(), c.instructions))
        return out

    def held(self) -> None:
        self.held_text = ""

    def released(self, false_interruption: bool) -> None:
        if false_interruption:
            self.held_text = ""

    def interruption_judged(self, text: str, sure: float, speech_ms: int) -> bool:
        """Held speech, decoded: words make it a turn; a backchannel, a cough or a laugh do not."""
        real = not eou.is_backchannel(text, speech_ms, sure)
        self.tt.interruption(real)
        return real

    def paused(self, text: str | None, paused_at: float, now: float) -> list:
        """The decode of the utterance so far, at a pause (``text``; None from a recognizer that only finishes
        utterances: its text came as a ``segment``). A recognizer unsure of a word decodes the audio again with a
        beam meanwhile (``refined`` follows); the reply is prepared from this draft at once, and made again if the
        beam hears other words. (Waiting for the beam instead, measured in the browser bench: the median turn
        ~25 ms later, the p90 no better.)"""
        if not self.tt.speculating:  # speech resumed, or the turn ended, while it decoded
            return []
        out = []
        if text is not None:
            self.peeked = text
            if not self.partials:
                out += self.transcribed(self.transcript())
        return out + self._judged(paused_at, now)

    def refined(self, draft: str, better: str, paused_at: float, now: float) -> list:
        """The beam's decode of the audio the draft was decoded from. If its words differ, the speculation made
        from the draft is void, and the verdict and speculation are made again from it."""
        if self.peeked is not draft or transcript_fits(better, draft):  # speech resumed meanwhile, or it agrees
            return []
        pausing = self.tt.speculating  # else the turn has ended and its end takes the better decode
        out = self.discard_speculation("refined")
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
        if self.turn_cfg.partial_inference and self.turn_cfg.create_response:
            return self._own(self.conv.speculate(transcript, {"pause": paused_at, "peeked": now}))
        return []

    def resumed(self) -> list:
        """Speech resumed after a pause: the pause's decode is stale, its speculation void."""
        return self.discard_speculation("resumed")

    def discard_speculation(self, why: str) -> list:
        self.peeked = None
        if self.conv.spec is None:
            return []
        return self._own(self.conv.discard_speculation()) + [CountSpeculation(why)]

    def speech_stopped(self, action: EndOfTurn) -> tuple[str, list]:
        """The turn ends: its item (the open buffer's, or a new one) and ``speech_stopped``. The shell then has
        the recognizer finish (``take_peeked``, ``segment``) and calls ``turn_committed``."""
        item_id = self.item or self.conv.new_id("item")
        return item_id, [Emit(ev.SpeechStopped(item_id, action.audio_end_ms))]

    def turn_committed(self, item_id: str, create_response: bool, marks: dict, failed=()) -> list:
        """The turn's final transcript is in: the user item, its transcription, and the response (the
        speculation committed if it was made from these words, else a new one). ``failed``: speculative responses
        that failed (not to be committed)."""
        transcript = self.transcript()
        out = self.conv.commit_user_item(item_id, transcript, self.asr_error)
        self.asr_error = None
        self.item, self.partial = None, ""
        spec = self.conv.spec
        actions = self._own(self.conv.end_of_turn(transcript, create_response, marks, transcript_fits, failed))
        if spec is not None:
            committed = any(type(a) is CommitResponse for a in actions)
            actions.append(CountSpeculation("committed" if committed else
                                            "mismatch" if create_response and transcript else "no_response"))
        return out + actions

    def idle_timeout(self, action: IdleTimeout, now: float) -> list:
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
            out += self._own(self.conv.respond({"turn_end": now}, [nudge]))
        return out

    # ------------------------------------------------------------- barge-in
    def barge_in(self) -> tuple[str | None, list]:
        """The user talks over the agent: which response was speaking, and what to do about it."""
        rid, actions = self.conv.barge_in()
        return rid, self._own(actions)

    def heard(self, rid: str, item_id: str | None, written_ms: float, heard_ms: int) -> list:
        """After a barge-in on a paced transport (WebRTC, SIP: the server knows what was played), the output is
        cleared and the reply (its item is in the conversation by now) truncated to what the user heard of it."""
        out = [Emit(ev.OutputCleared(rid))]
        if written_ms > 0 and item_id is not None:
            out += self.conv.truncate(item_id, heard_ms, written_ms)
        return out
