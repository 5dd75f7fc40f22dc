"""``audio.input.noise_reduction``: WebRTC's noise suppressor on the caller's audio before VAD and recognition.

The suppressor is WebRTC's audio processing module (the one browsers run on a microphone) as the
``webrtc-noise-gain`` wheels: 10 ms chunks of 16 kHz s16 mono. ``near_field`` (a headset, a phone held to the ear)
suppresses at level 3 of 4 and leaves the level alone; ``far_field`` (a laptop or a speakerphone across the room)
suppresses at the highest level and lets the automatic gain lift a distant voice. Chosen and measured by
bench/noise.py (docs/performance.md): it helps against steady noise (street, fans, hum), not against other voices.
"""

from __future__ import annotations

from . import MissingModel

RATE = 16000
CHUNK = RATE // 100 * 2  # bytes of 10 ms
# type -> (auto gain target in dBFS below full scale, 0 = off; suppression level 0..4)
SETTINGS = {"near_field": (0, 3), "far_field": (3, 4)}  # chosen by bench/noise.py --levels


class NoiseReduction:
    """One call's suppressor (it keeps state across frames): 20 ms frames at 16 kHz in, the same out."""

    def __init__(self, kind: str):
        try:
            from webrtc_noise_gain import AudioProcessor
        except ImportError:
            raise MissingModel("noise reduction (WebRTC's suppressor)", "webrtc-noise-gain") from None
        gain, level = SETTINGS[kind]
        self.kind = kind
        self.ap = AudioProcessor(gain, level)

    @classmethod
    def custom(cls, gain: int, level: int) -> "NoiseReduction":
        """Other settings than the two types (bench/noise.py compares them)."""
        self = cls.__new__(cls)
        from webrtc_noise_gain import AudioProcessor

        self.kind, self.ap = f"gain {gain}, level {level}", AudioProcessor(gain, level)
        return self

    def __call__(self, frame: bytes) -> bytes:
        if len(frame) % CHUNK:
            return frame  # not whole 10 ms chunks: the agent only ever hands 20 ms frames at 16 kHz
        return b"".join(self.ap.Process10ms(frame[i:i + CHUNK]).audio for i in range(0, len(frame), CHUNK))
