"""The pluggable stages of the voice agent, each behind a small interface, with the embedded implementations.

VAD: webrtcvad (``webrtcvad-wheels``, C) with an energy fallback. ASR: Moonshine (``models/moonshine.py``) is the
default where its wheel exists (x86-64 Linux); PocketSphinx, here (ships an en-US model; streaming partial
hypotheses), is the fallback elsewhere and ``--asr pocketsphinx``. TTS is ``models/piper.py``; responders live in
``responders.py``. Models come inside packages: nothing is downloaded at run time; a missing package raises
``MissingModel`` naming what to install.
"""

from __future__ import annotations

import array
import math
import re

ASR_RATE = 16000


class MissingModel(RuntimeError):
    """A stage that cannot load. ``install`` is what to ``pip install``; ``message``, when the fix is not a pip
    install (a CPU, a system library, a crash), replaces the sentence, and ``install`` is then empty."""

    def __init__(self, what: str, install: str, message: str | None = None):
        super().__init__(message or f"{what} is not installed: pip install {install}")
        self.install = install


# ---------------------------------------------------------------- VAD
class EnergyVad:
    """Fallback VAD: RMS of the frame against a fixed speech level (no model)."""

    name = "energy"

    def __init__(self, level: float = 500.0):
        self.level = level

    def __call__(self, pcm16k: bytes) -> float:
        a = array.array("h", pcm16k)
        if not a:
            return 0.0
        rms = math.sqrt(sum(x * x for x in a) / len(a))
        return min(1.0, rms / (2 * self.level))


class WebRtcVad:
    """webrtcvad on each 10 ms half of a 20 ms frame; the probability is the share of halves it calls speech."""

    name = "webrtcvad"

    def __init__(self, aggressiveness: int = 2):
        try:
            import webrtcvad
        except ImportError:
            raise MissingModel("the webrtcvad VAD", "webrtcvad-wheels") from None
        self.vad = webrtcvad.Vad(aggressiveness)

    def __call__(self, pcm16k: bytes) -> float:
        half = len(pcm16k) // 2
        if half != 320:  # webrtcvad needs exact 10/20/30 ms frames
            return 1.0 if self.vad.is_speech(pcm16k[: 640].ljust(640, b"\0"), ASR_RATE) else 0.0
        return (self.vad.is_speech(pcm16k[:half], ASR_RATE) + self.vad.is_speech(pcm16k[half:], ASR_RATE)) / 2


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


def default_vad():
    try:
        return WebRtcVad()
    except MissingModel:
        return EnergyVad()


# ---------------------------------------------------------------- ASR
class PocketSphinxAsr:
    """Streaming recognition at 16 kHz; one decoder per call (they are not shared across threads).

    The decoder adapts its cepstral mean to the voice it hears and keeps it across utterances: good within a
    call, but a pooled decoder must forget the previous caller, so ``reset`` restores the model's initial mean."""

    name = "pocketsphinx"

    def __init__(self):
        try:
            from pocketsphinx import Decoder
        except ImportError:
            raise MissingModel("the PocketSphinx recognizer", "pocketsphinx") from None
        self.decoder = Decoder(loglevel="FATAL")
        self.initial_cmn = self.decoder.get_cmn(False)
        self.active = False

    def reset(self):
        """Forget the last call: end any open utterance, restore the initial cepstral mean."""
        self.finish()
        self.decoder.set_cmn(self.initial_cmn)

    def start(self):
        """Begin an utterance (one still open is dropped: feed() may have opened it already)."""
        if self.active:
            self.decoder.end_utt()
        self.decoder.start_utt()
        self.active = True

    def feed(self, pcm16k: bytes) -> str:
        """Add audio; return the current partial hypothesis ('' if none yet)."""
        if not self.active:
            self.start()
        self.decoder.process_raw(pcm16k, False, False)
        hyp = self.decoder.hyp()
        return hyp.hypstr if hyp is not None else ""

    def cancel(self):
        """End the utterance and forget it (the input buffer was cleared)."""
        if self.active:
            self.decoder.end_utt()
            self.active = False

    def finish(self) -> str:
        """End the utterance (blocking, tens of ms: call it off the event loop); return the final text."""
        if not self.active:
            return ""
        self.decoder.end_utt()
        self.active = False
        hyp = self.decoder.hyp()
        return hyp.hypstr if hyp is not None else ""


# ---------------------------------------------------------------- text chunking for early TTS


class Chunker:
    """Cut streamed text into TTS chunks: the first as soon as a clause ends or ``first_words`` words are
    complete (so the first audio comes early: two words are ~60 ms of Piper and ~30 ms of SmolLM2, four words cost a
    turn ~60 ms more), the second at a clause or after ``4 × first_words`` words (it must be synthesized while the
    first plays: a whole long sentence would leave a gap after the first two words), later ones at sentence ends
    (commas only once a sentence is long). Models stream tokens with leading spaces (" weather"), so a word is
    complete when the next begins."""

    def __init__(self, first_words: int = 2, long_clause: int = 12):
        self.buf = ""
        self.n = 0  # chunks cut so far
        self.first_words = first_words
        self.long_clause = long_clause

    def push(self, delta: str) -> list[str]:
        self.buf += delta
        out = []
        while True:
            piece = self._cut()
            if piece is None:
                return out
            if piece:
                out.append(piece)
                self.n += 1

    def _cut(self) -> str | None:
        sentence = re.search(r"[.!?;:](\s)", self.buf)
        comma = re.search(r",(\s)", self.buf)
        early = self.n < 2  # the first two chunks: short, so the audio flows from the start
        if early or (comma and len(self.buf[: comma.start()].split()) >= self.long_clause):
            m = min((x for x in (sentence, comma) if x), key=lambda x: x.start(), default=None)
        else:
            m = sentence
        if m is not None:
            piece, self.buf = self.buf[: m.start() + 1].strip(), self.buf[m.end():]
            return piece
        # words as spoken: each digit counts as one ("140,875,776" is nine words of audio to synthesize)
        said = len(re.findall(r"\d|[^\W\d_]+", self.buf.rstrip().rsplit(" ", 1)[0])) if " " in self.buf.strip() else 0
        if early and len(self.buf.split()) > 1 and said >= self.first_words * (1 if self.n == 0 else 4):
            cut = self.buf.rstrip().rfind(" ")  # everything before the word still being streamed
            piece, self.buf = self.buf[:cut].strip(), self.buf[cut:]
            return piece
        return None

    def flush(self) -> list[str]:
        piece, self.buf = self.buf.strip(), ""
        return [piece] if piece else []

