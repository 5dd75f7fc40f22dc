"""audio.input.noise_reduction: the session says what it does, and WebRTC's suppressor lowers noise and keeps speech
(bench/noise.py measures what that does to word errors and false turns)."""

import math

import numpy as np
import pytest

from helpers import speech_wav
from voxgate.agent.core.realtime_face import RealtimeFace
from voxgate.agent.core.conversation import Conversation, Emit

FACE = RealtimeFace()  # the Realtime vocabulary: client events become the conversation's decisions


def session_events(c, event):
    return [a.event.as_dict() for a in FACE.client_event(c, event, 0.0) if type(a) is Emit]


def test_the_session_reports_noise_reduction_and_turns_it_off():
    c = Conversation(instructions="x", model="m", asr="a", voice="joe", vad="webrtcvad", responder="r")
    c.start(None)
    [upd] = session_events(c, {"type": "session.update", "session": {
        "audio": {"input": {"noise_reduction": {"type": "far_field"}}}}})
    s = upd["session"]
    assert s["audio"]["input"]["noise_reduction"] == {"type": "far_field"} and c.noise_reduction == "far_field"
    assert not any("noise_reduction" in i for i in s["voxgate"].get("ignored", []))
    [upd] = session_events(c, {"type": "session.update", "session": {"audio": {"input": {"noise_reduction": None}}}})
    assert upd["session"]["audio"]["input"]["noise_reduction"] is None and c.noise_reduction is None
    [err] = session_events(c, {"type": "session.update", "session": {
        "audio": {"input": {"noise_reduction": {"type": "studio"}}}}})
    assert err["type"] == "error" and err["error"]["param"] == "session.audio.input.noise_reduction.type"


def rms(x):
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))


@pytest.mark.parametrize("kind", ["near_field", "far_field"])
def test_the_suppressor_lowers_steady_noise_and_keeps_speech(kind, tmp_path):
    pytest.importorskip("webrtc_noise_gain")
    import wave

    from voxgate.agent.models.noise import NoiseReduction
    from voxgate.audio import Resampler

    with wave.open(speech_wav(tmp_path / "s.wav", "Turn off the lights in the kitchen.")) as w:
        speech = np.frombuffer(Resampler(w.getframerate(), 16000)(w.readframes(w.getnframes())), np.int16)
    rng = np.random.default_rng(3)
    noise = rng.normal(0, rms(speech) / 10 ** (5 / 20), 16000 * 2 + speech.size)  # 5 dB under the speech
    mixed = noise.copy()
    mixed[32000:] += speech
    pcm = np.clip(mixed, -32768, 32767).astype(np.int16).tobytes()
    nr = NoiseReduction(kind)
    out = np.frombuffer(b"".join(nr(pcm[i:i + 640]) for i in range(0, len(pcm) - 639, 640)), np.int16)
    noise_before, noise_after = rms(mixed[16000:32000]), rms(out[16000:32000])  # after a second to adapt
    assert 20 * math.log10(noise_before / noise_after) > 10, (noise_before, noise_after)
    speech_part = slice(32000, 32000 + speech.size - 640)
    kept = rms(out[speech_part]) / rms(speech[: speech.size - 640])
    assert kept > 0.5, kept  # the voice survives (far_field's gain may lift it)
    assert len(out) == len(pcm) // 640 * 320  # every frame back, the same length
