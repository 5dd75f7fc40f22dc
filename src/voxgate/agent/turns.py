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

``semantic_vad``: the end of the turn follows what was said, not a fixed silence. At the pause that starts partial
inference the shell decodes the utterance and tells the turn taker whether it sounds complete (``judge``); a
complete one ends the turn after ``min_ms`` of silence (as soon as the verdict is in, if later), anything else
waits for more speech up to ``max_ms`` (the API's 8 / 4 / 2 s for eagerness low / medium / high; auto is medium).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

FRAME_MS = 20
START_FRAMES = 2  # consecutive speech frames before speech "starts": one noisy frame is not a turn
# semantic_vad: (silence before a complete-sounding turn ends, longest wait for an incomplete one), by eagerness
# (medium at 500 ms: people pause ~300-400 ms between two sentences of one turn, and 300 ms cut them off there)
EAGERNESS = {"high": (250, 2000), "medium": (500, 4000), "auto": (500, 4000), "low": (800, 8000)}


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
    def semantic_wait(self) -> tuple[int, int]:
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
        self.verdict: bool | None = None  # semantic_vad: does what was said so far sound complete (None: not judged)

    def set_responding(self, responding: bool):
        if self.responding and not responding:
            self._idle_ms, self._idle_armed = 0, True  # the agent finished: the user's silence counts from here
        self.responding = responding

    def reset(self):
        self.state, self._run, self._silence_ms, self.speculating = self.IDLE, 0, 0, False
        self.verdict = None

    def judge(self, complete: bool) -> None:
        """semantic_vad: the verdict on the utterance closed at the last pause (the next frame acts on it)."""
        if self.state == self.PAUSED:
            self.verdict = complete

    def frame(self, speech_prob: float, t_ms: int) -> list:
        """One 20 ms input frame ending at stream time ``t_ms``."""
        cfg = self.config
        if not cfg.enabled:
            return []
        speech = speech_prob >= cfg.threshold
        actions: list = []
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
                start = t_ms - self._run * FRAME_MS
                actions.append(SpeechStarted(max(0, start - cfg.prefix_padding_ms)))
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
            wants = True
        else:
            end_at = cfg.silence_duration_ms
            wants = cfg.partial_inference and cfg.create_response
        if wants and not self.speculating and self._silence_ms >= cfg.pause_ms and self._silence_ms < end_at:
            self.speculating = True
            actions.append(Speculate(self._speech_end_ms))
        if self._silence_ms >= end_at:
            self.state = self.IDLE
            self.speculating = False
            self._silence_ms = 0
            self.verdict = None
            actions.append(EndOfTurn(self._speech_end_ms, cfg.create_response))
        return actions

    def _semantic_end(self) -> int:
        """The silence (ms) at which a semantic_vad turn ends, given the verdict so far."""
        min_ms, max_ms = self.config.semantic_wait
        if self.verdict:
            return min_ms
        return max_ms


_PUNCT = re.compile(r"[^\w\s']+")


def normalize(text: str) -> str:
    return " ".join(_PUNCT.sub(" ", text.lower()).split())


def transcript_fits(speculative: str, final: str) -> bool:
    """May a response prepared from ``speculative`` answer ``final``? Same words, case and punctuation aside."""
    return normalize(speculative) == normalize(final)
