"""Voice activity detection: webrtcvad (``webrtcvad-wheels``, C) with an energy fallback (no model)."""

from __future__ import annotations

from ..core.turns import level as loudness
from . import ASR_RATE, MissingModel


class EnergyVad:
    """Fallback VAD: RMS of the frame against a fixed speech level (no model)."""

    name = "energy"

    def __init__(self, level: float = 500.0):
        self.level = level

    def __call__(self, pcm16k: bytes) -> float:
        return min(1.0, loudness(pcm16k) / (2 * self.level))


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


def default_vad():
    try:
        return WebRtcVad()
    except MissingModel:
        return EnergyVad()
