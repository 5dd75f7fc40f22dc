"""Model runtimes behind the agent's stages: each wraps one third-party inference library, and is the only module
that imports it (so its private names and version pins live in one place).

VAD: webrtcvad (``vad.py``) with an energy fallback. ASR: Moonshine (``moonshine.py``) is the default where its
wheel exists (x86-64 Linux); PocketSphinx (``pocketsphinx.py``; ships an en-US model, streaming partial hypotheses)
is the fallback elsewhere and ``--asr pocketsphinx``; Whisper (``whisper.py``) on request. TTS: Piper
(``piper.py``). The embedded LLM: llama.cpp (``llama.py``). Noise suppression: RNNoise (``noise.py``). Models come
inside packages: nothing is downloaded at run time; a missing package raises ``MissingModel`` naming what to
install.
"""

from __future__ import annotations

ASR_RATE = 16000  # what every recognizer and the VAD take: 16-bit mono PCM at 16 kHz


class MissingModel(RuntimeError):
    """A stage that cannot load. ``install`` is what to ``pip install``; ``message``, when the fix is not a pip
    install (a CPU, a system library, a crash), replaces the sentence, and ``install`` is then empty."""

    def __init__(self, what: str, install: str, message: str | None = None):
        super().__init__(message or f"{what} is not installed: pip install {install}")
        self.install = install
