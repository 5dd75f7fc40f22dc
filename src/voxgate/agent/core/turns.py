"""Turn-taking, sans-IO: server-VAD semantics of the Realtime API, barge-in, and the partial-inference points.

Feed it one decision per 20 ms input frame (speech or not, with the stream
time) and what the agent is doing (responding or not); it returns actions. It
owns no audio, no clock and no tasks, so every rule here is unit-tested alone.

Timeline of one user turn::

    speech ─────────────┐ pause_ms    silence_duration_ms
    frames  ▮▮▮▮▮▮▮▮▮▮▮▮ ·········|·························|
                         ^ speech ends ^ Speculate         ^ EndOfTurn (commit or redo)
                                       (partial inference)

If speech resumes after ``Speculate`` and before ``EndOfTurn``, ``Resume`` says
to throw the speculation away. Speech that starts while the agent responds
yields ``Interrupt`` when ``interrupt_response`` is set (barge-in).

False interruptions (``resume_false_interruption``, on by default): speech over the agent first ``Hold``s its audio
(the agent is silent at once, its answer kept) and says nothing to the client yet. The shell decodes it
(``JudgeInterruption``) when it stops, or once it has lasted ``min_interruption_ms`` (and every ``REJUDGE_MS`` more),
and it becomes a barge-in (``SpeechStarted`` then ``Interrupt``) as soon as that says words (``interruption(True)``),
or after ``MAX_HOLD_MS`` of speech whatever it is. A backchannel, a
cough or a laugh (``interruption(False)``, see ``eou.is_backchannel``) ``Release``s the audio where it paused, and
the client never hears of it: no speech_started, no item, no response.

``semantic_vad``: the end of the turn follows what was said, not a fixed silence. After ``SEMANTIC_PAUSE_MS`` of
silence the shell decodes the utterance so far and tells the turn taker how it sounds (``judge``, ``eou.verdict``):
a finished question ends the turn soonest, another finished sentence a little later (people pause ~300–400 ms
between two sentences of one turn), and anything unfinished waits for more speech up to the API's 8 / 4 / 2 s
(eagerness low / medium / high; auto is medium); never before the verdict is in.

Where the silence starts: with the frame's loudness (``level``), a frame the VAD still calls speech but that is
under ``TAIL_OF_PEAK`` of the turn's loudest frame, or not ``ABOVE_FLOOR`` times the noise floor, counts as
silence. webrtcvad holds on for ~100 ms after the last word (its own smoothing); a turn that ends on what was said
should not wait for that.
"""

from __future__ import annotations

import array
import math
import re
from dataclasses import dataclass

from .eou import COMPLETE, QUESTION

FRAME_MS = 20
START_FRAMES = 2  # consecutive speech frames before speech "starts": one noisy frame is not a turn
# semantic_vad, by eagerness: silence (ms) before the turn ends after a finished question, after another finished
# sentence, and the longest wait for an unfinished one. A question hands the floor over; after a statement people
# often go on (another sentence: ~300-700 ms later; or the words were complete but the thought was not, "Remind me
# to call ... my mother tomorrow"), so auto waits 600 ms there (800 kept no more of bench/browser_turns.py's paused
# sentences: the ones cut were heard as finished at the pause, "Set a timer for it", and a 0.7 s pause ran past
# both; and a question the recognizer wrote as a statement waited 800), and "high" answers both at once
EAGERNESS = {"high": (150, 250, 2000), "medium": (200, 600, 4000), "auto": (200, 600, 4000), "low": (500, 1200, 8000)}
SEMANTIC_PAUSE_MS = 60  # semantic_vad decodes what was said this early into a pause: the verdict must precede the end
TAIL_OF_PEAK = 0.03  # a frame this far under the turn's loudest is the end of a word, whatever the VAD says
ABOVE_FLOOR = 2.5  # ... or not this far above the noise floor (the VAD's silent frames)
MAX_HOLD_MS = 3000  # held speech this long is a turn whatever it sounds like
REJUDGE_MS = 400  # held speech judged a backchannel while it goes on is judged again after this much more


@dataclass
class TurnConfig:
    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500
    create_response: bool = True
    interrupt_response: bool = True
    pause_ms: int = 160  # partial inference starts after this much silence
    partial_inference: bool = True
    enabled: bool = True  # turn_detection null = the client commits turns itself
    idle_timeout_ms: int | None = None  # no speech this long after the agent finished: prompt the user (the API's)
    semantic: bool = False  # semantic_vad: the end of the turn follows what was said (``judge``)
    eagerness: str = "auto"
    resume_false_interruption: bool = True  # speech over the agent holds its audio until it is known to be a turn
    min_interruption_ms: int = 800  # ... this much speech is a turn whatever was said
    false_interruption_ms: int = 160  # ... silence after shorter speech: the shell judges what was said

    def update(self, td: dict | None) -> list[str]:
        """Apply a Realtime ``turn_detection`` object; return the names of what we ignored."""
        ignored = []
        if td is None:
            self.enabled = False
            return ignored
        self.enabled = True
        kind = td.get("type", "server_vad")
        self.semantic = kind == "semantic_vad"
        if self.semantic:
            self.eagerness = td.get("eagerness") or "auto"
        for key, typ in (("threshold", float), ("prefix_padding_ms", int), ("silence_duration_ms", int),
                         ("create_response", bool), ("interrupt_response", bool)):
            if key in td and td[key] is not None:
                setattr(self, key, typ(td[key]))
        if "idle_timeout_ms" in td:
            value = td["idle_timeout_ms"]
            self.idle_timeout_ms = int(value) if value else None
        for key in td:
            if key not in ("type", "threshold", "prefix_padding_ms", "silence_duration_ms", "create_response",
                           "interrupt_response", "idle_timeout_ms", "eagerness"):
                ignored.append(f"turn_detection.{key}")
        self.pause_ms = min(self.pause_ms, max(FRAME_MS, self.silence_duration_ms - FRAME_MS))
        return ignored

    @property
    def semantic_wait(self) -> tuple[int, int, int]:
        return EAGERNESS.get(self.eagerness, EAGERNESS["auto"])

    def as_dict(self) -> dict:
        if not self.enabled:
            return None
        if self.semantic:
            return {"type": "semantic_vad", "eagerness": self.eagerness, "create_response": self.create_response,
                    "interrupt_response": self.interrupt_response}
        return {"type": "server_vad", "threshold": self.threshold, "prefix_padding_ms": self.prefix_padding_ms,
                "silence_duration_ms": self.silence_duration_ms, "create_response": self.create_response,
                "interrupt_response": self.interrupt_response, "idle_timeout_ms": self.idle_timeout_ms}


# ---------------------------------------------------------------- actions
@dataclass(frozen=True)
class SpeechStarted:
    audio_start_ms: int  # includes prefix padding
    held: bool = False  # the speech began over the agent and was held: its audio is in the recognizer already


@dataclass(frozen=True)
class Hold:
    """Speech began over the agent: pause its audio (keep the rest) and start recognizing, telling no one yet."""

    audio_start_ms: int


@dataclass(frozen=True)
class JudgeInterruption:
    """Decode the held speech (it stopped, or it has gone on ``min_interruption_ms``) and call
    ``interruption(real)``; ``speech_ms``: how much of it was speech."""

    speech_ms: int


@dataclass(frozen=True)
class Release:
    """Resume the agent's held audio. ``false_interruption``: the held speech was not a turn (drop what was
    recognized of it); otherwise the response ended by itself while held, and the speech goes on as a turn."""

    false_interruption: bool


@dataclass(frozen=True)
class Interrupt:
    """Barge-in: clear output now, cancel the response, truncate what was not heard."""


@dataclass(frozen=True)
class Speculate:
    """First pause: prepare the response from what was said so far, but do not play it."""

    audio_end_ms: int


@dataclass(frozen=True)
class Resume:
    """The user kept talking: any speculation is void."""


@dataclass(frozen=True)
class EndOfTurn:
    audio_end_ms: int
    create_response: bool


@dataclass(frozen=True)
class IdleTimeout:
    """No speech for ``idle_timeout_ms`` since the agent last finished (or the session began): the silent stretch."""

    audio_start_ms: int
    audio_end_ms: int


class TurnTaker:
    IDLE, SPEAKING, PAUSED = "idle", "speaking", "paused"

    def __init__(self, config: TurnConfig | None = None):
        self.config = config or TurnConfig()
        self.state = self.IDLE
        self.responding = False
        self.speculating = False
        self._run = 0  # consecutive speech frames while idle
        self._silence_ms = 0
        self._speech_end_ms = 0
        self._idle_ms = 0  # silence while idle and not responding, toward idle_timeout_ms
        self._idle_armed = True  # fires once per silent stretch: re-armed by a finished response or by speech
        self.verdict: str | None = None  # semantic_vad: how what was said so far sounds (eou.verdict; None: not judged)
        self._peak = 0.0  # the loudest frame of this turn
        self._floor: float | None = None  # the noise floor: a running mean of the VAD's silent frames
        self.held: int | None = None  # speech over the agent not yet known to be a turn: its audio_start_ms
        self._held_ms = 0  # how much of it was speech
        self._judging = False  # JudgeInterruption is out; its answer is awaited
        self._judged_at = -1  # how much held speech the last judgement heard
        self._real: bool | None = None  # the answer, acted on at the next frame

    def set_responding(self, responding: bool):
        if self.responding and not responding:
            self._idle_ms, self._idle_armed = 0, True  # the agent finished: the user's silence counts from here
        self.responding = responding

    def reset(self):
        self.state, self._run, self._silence_ms, self.speculating = self.IDLE, 0, 0, False
        self.verdict = None
        self.held, self._judging, self._real = None, False, None

    def interruption(self, real: bool) -> None:
        """The shell's answer to ``JudgeInterruption``: was the held speech a turn (words) or not (a backchannel,
        a noise)? Acted on at the next frame; an answer overtaken by more speech is dropped."""
        if self.held is not None and self._judging:
            self._real, self._judging = real, False

    def judge(self, verdict: str) -> None:
        """semantic_vad: ``eou.OPEN`` / ``COMPLETE`` / ``QUESTION`` for what was said up to this pause (the next
        frame acts on it)."""
        if self.state == self.PAUSED:
            self.verdict = verdict

    def frame(self, speech_prob: float, t_ms: int, level: float | None = None) -> list:
        """One 20 ms input frame ending at stream time ``t_ms``; ``level``: its loudness (RMS, any unit)."""
        cfg = self.config
        if not cfg.enabled:
            return []
        speech = speech_prob >= cfg.threshold
        if level is not None:
            speech = self._gate(speech, level)
        actions: list = []
        if self.held is not None:
            return self._held_frame(speech, t_ms)
        if self.state == self.IDLE:
            if speech or self.responding:
                self._idle_ms = 0
                self._idle_armed = self._idle_armed or speech
            elif cfg.idle_timeout_ms and self._idle_armed:
                self._idle_ms += FRAME_MS
                if self._idle_ms >= cfg.idle_timeout_ms:
                    actions.append(IdleTimeout(t_ms - self._idle_ms, t_ms))
                    self._idle_ms, self._idle_armed = 0, False
            self._run = self._run + 1 if speech else 0
            if self._run >= START_FRAMES:
                self.state = self.SPEAKING
                self._peak = level or 0.0
                start = max(0, t_ms - self._run * FRAME_MS - cfg.prefix_padding_ms)
                if self.responding and cfg.interrupt_response and cfg.resume_false_interruption:
                    self.held, self._held_ms, self._judging, self._real = start, self._run * FRAME_MS, False, None
                    self._judged_at = -1
                    actions.append(Hold(start))
                else:
                    actions.append(SpeechStarted(start))
                    if self.responding and cfg.interrupt_response:
                        actions.append(Interrupt())
                self._run = 0
            return actions
        if speech:
            if self.state == self.PAUSED:
                self.state = self.SPEAKING
                self.verdict = None
                if self.speculating:
                    self.speculating = False
                    actions.append(Resume())
            self._silence_ms = 0
            return actions
        # silence after speech
        if self.state == self.SPEAKING:
            self.state = self.PAUSED
            self._speech_end_ms = t_ms - FRAME_MS
            self._silence_ms = 0
        self._silence_ms += FRAME_MS
        if cfg.semantic:
            end_at = self._semantic_end()
            # the utterance is decoded at the pause whatever partial_inference says: the verdict needs it
            wants, pause = True, SEMANTIC_PAUSE_MS
        else:
            end_at = cfg.silence_duration_ms
            wants, pause = cfg.partial_inference and cfg.create_response, cfg.pause_ms
        if wants and not self.speculating and self._silence_ms >= pause and self._silence_ms < end_at:
            self.speculating = True
            actions.append(Speculate(self._speech_end_ms))
        if self._silence_ms >= end_at:
            self.state = self.IDLE
            self.speculating = False
            self._silence_ms = 0
            self.verdict = None
            actions.append(EndOfTurn(self._speech_end_ms, cfg.create_response))
        return actions

    def _held_frame(self, speech: bool, t_ms: int) -> list:
        """A frame while speech over the agent is held: confirm it as a turn, release it, or wait."""
        cfg = self.config
        if self._real is not None:  # the shell's verdict on what was said up to its JudgeInterruption
            real, self._real = self._real, None
            if real:
                return self._confirm()
            if self.state == self.PAUSED and self._held_ms == self._judged_at:  # and nothing since: let it go
                self.reset()
                return [Release(True)]
        if not self.responding:  # the response ended (cancelled, failed) while held: this is a turn like any other
            return self._confirm() + [Release(False)]
        if speech:
            self.state = self.SPEAKING
            self._held_ms += FRAME_MS
            self._silence_ms = 0
            if self._held_ms >= MAX_HOLD_MS:  # a laugh this long is someone taking the floor
                return self._confirm()
            if not self._judging and self._held_ms >= max(cfg.min_interruption_ms, self._judged_at + REJUDGE_MS):
                return self._judge()  # long enough to be a turn, if it is words
            return []
        if self.state == self.SPEAKING:
            self.state = self.PAUSED
            self._speech_end_ms = t_ms - FRAME_MS
            self._silence_ms = 0
        self._silence_ms += FRAME_MS
        if self._silence_ms >= cfg.false_interruption_ms and not self._judging and self._judged_at != self._held_ms:
            return self._judge()  # it stopped short: what was it?
        return []

    def _judge(self) -> list:
        self._judging, self._judged_at = True, self._held_ms
        return [JudgeInterruption(self._held_ms)]

    def _confirm(self) -> list:
        """The held speech is a turn: it starts now for the client (at its real start), as a barge-in. A pause
        already under way counts from here, so the end of the turn still waits for its verdict or silence."""
        start, self.held, self._judging, self._real = self.held, None, False, None
        self._silence_ms = 0
        out = [SpeechStarted(start, held=True)]
        if self.responding and self.config.interrupt_response:
            out.append(Interrupt())
        return out

    def _semantic_end(self) -> int:
        """The silence (ms) at which a semantic_vad turn ends, given the verdict so far (none yet: not before it)."""
        question_ms, complete_ms, max_ms = self.config.semantic_wait
        if self.verdict is None:
            return max_ms if self.speculating else max(question_ms, SEMANTIC_PAUSE_MS + FRAME_MS)
        return {QUESTION: question_ms, COMPLETE: complete_ms}.get(self.verdict, max_ms)

    def _gate(self, speech: bool, level: float) -> bool:
        """The VAD's decision, with the end of a word taken from the loudness (see the module's docstring)."""
        if not speech:
            self._floor = level if self._floor is None else 0.95 * self._floor + 0.05 * level
            return False
        if self.state == self.IDLE:
            return True
        self._peak = max(self._peak, level)
        floor = ABOVE_FLOOR * self._floor if self._floor is not None else 0.0
        return level >= max(TAIL_OF_PEAK * self._peak, floor)


_PUNCT = re.compile(r"[^\w\s']+")


def normalize(text: str) -> str:
    return " ".join(_PUNCT.sub(" ", text.lower()).split())


def transcript_fits(speculative: str, final: str) -> bool:
    """May a response prepared from ``speculative`` answer ``final``? Same words, case and punctuation aside."""
    return normalize(speculative) == normalize(final)


try:  # looked up once: level() runs on every frame of every call
    import numpy as _np
except ImportError:  # the base install: level() does the same in pure Python, slower
    _np = None


def level(pcm16k: bytes) -> float:
    """A frame's loudness: the RMS of its 16-bit samples (``turns.TurnTaker`` finds the end of a word with it)."""
    if _np is None:
        a = array.array("h", pcm16k)
        return math.sqrt(sum(x * x for x in a) / len(a)) if a else 0.0
    a = _np.frombuffer(pcm16k, _np.int16).astype(_np.float32)
    return float(_np.sqrt(_np.dot(a, a) / a.size)) if a.size else 0.0
