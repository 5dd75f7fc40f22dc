"""Noise reduction (``audio.input.noise_reduction``) measured: word errors and false turns in babble and street
noise at 10 and 0 dB SNR, with the suppressor off, ``near_field`` and ``far_field``.

Speech: bench/asr.py's questions in voices the agent never uses (espeak-ng and flite, rotating), each with a
second of noise before it (as a call has) and the noise going on under it. Noise, made here, no recordings:
- babble: five other voices (espeak-ng and flite) reading other sentences over each other;
- street (synthetic): brown noise, low engine rumble (40–120 Hz tones swept slowly) and a passing swell.
Each clip goes through what the agent runs, in its order: the suppressor (``agent/models/noise.py``, 20 ms frames at
16 kHz), then Moonshine on the utterance. False turns: the agent's VAD and turn-taker (webrtcvad, ``TurnTaker``
with the server defaults) over 30 s of noise alone, at the level it has in the mix; every ``SpeechStarted`` is a
turn the agent would have opened (and, while it speaks, a barge-in).

    python bench/noise.py [--limit N] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

import common  # noqa: F401  (first: it puts src/ on the path)
from asr import PLAIN, UTTERANCES, hear, speak

from voxgate.agent.models.noise import NoiseReduction
from voxgate.lab.wer import word_errors

RATE = 16000
MODES = (None, "near_field", "far_field")


def babble(tmp: Path, seconds: float, rng) -> np.ndarray:
    talkers = [("espeak-ng", "en-gb+f3", 170), ("flite", "awb", 0), ("espeak-ng", "en-us+m4", 150),
               ("flite", "kal16", 0), ("espeak-ng", "en-us+f2", 180)]
    out = np.zeros(int(seconds * RATE), np.float32)
    for k, (engine, voice, speed) in enumerate(talkers):
        track, pos = np.zeros_like(out), int(rng.uniform(0, RATE))
        order = rng.permutation(len(UTTERANCES))
        for i in order:
            if pos >= out.size:
                break
            said = speak(UTTERANCES[i], engine, voice, speed, tmp / f"b{k}.wav")
            said = said / (np.sqrt(np.mean(said ** 2)) + 1e-9)
            n = min(said.size, out.size - pos)
            track[pos:pos + n] += said[:n]
            pos += n + int(rng.uniform(0.05, 0.3) * RATE)
        out += track
    return out / np.sqrt(np.mean(out ** 2))


def street(seconds: float, rng) -> np.ndarray:
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    brown = np.cumsum(rng.normal(0, 1, n))
    brown -= np.convolve(brown, np.ones(RATE // 10) / (RATE // 10), mode="same")  # keep it from drifting
    rumble = sum(np.sin(2 * np.pi * (f + 8 * np.sin(2 * np.pi * t / p)) * t) for f, p in ((45, 7), (80, 11), (118, 5)))
    swell = 0.5 + 0.5 * np.sin(2 * np.pi * t / 9.0) ** 2  # a car passing every few seconds
    x = (brown / np.std(brown) + 0.6 * rumble) * swell
    return (x / np.sqrt(np.mean(x ** 2))).astype(np.float32)


def mix(speech: np.ndarray, noise: np.ndarray, snr_db: float, start: int, lead_s=1.0) -> np.ndarray:
    """``speech`` over ``noise`` at ``snr_db`` (speech power over its loud frames), a second of noise first."""
    lead = int(lead_s * RATE)
    frames = speech[: speech.size // 320 * 320].reshape(-1, 320)
    loud = frames[np.sqrt((frames ** 2).mean(axis=1)) > 0.01]
    power = float(np.mean(loud ** 2)) if loud.size else float(np.mean(speech ** 2))
    seg = np.resize(np.roll(noise, -start), lead + speech.size + RATE // 3)
    seg = seg * np.sqrt(power / 10 ** (snr_db / 10))
    seg[lead:lead + speech.size] += speech
    return np.clip(seg, -1, 1).astype(np.float32)


def denoise(audio: np.ndarray, mode: str | None) -> np.ndarray:
    if mode is None:
        return audio
    nr = NoiseReduction(mode) if isinstance(mode, str) else NoiseReduction.custom(*mode)
    pcm = (audio * 32767).astype(np.int16).tobytes()
    pcm = pcm[: len(pcm) // 640 * 640]
    out = b"".join(nr(pcm[i:i + 640]) for i in range(0, len(pcm), 640))
    return np.frombuffer(out, np.int16).astype(np.float32) / 32768


def heard_part(audio: np.ndarray, lead_s=1.0, padding_s=0.3) -> np.ndarray:
    """What the recognizer gets of a clip: from the agent's prefix padding before the speech (the suppressor ran on
    the whole call; the recognizer hears the turn)."""
    return audio[int((lead_s - padding_s) * RATE):]


def false_turns(noise: np.ndarray, scale: float, mode) -> tuple[int, float]:
    """Turns the agent opens on noise alone, and the share of the time it thinks someone is speaking."""
    from voxgate.agent.models.vad import WebRtcVad
    from voxgate.agent.core.turns import level
    from voxgate.agent.core.turns import SpeechStarted, TurnTaker

    audio = denoise(np.clip(noise * scale, -1, 1), mode)
    pcm = (audio * 32767).astype(np.int16).tobytes()
    vad, tt, starts, busy, n = WebRtcVad(), TurnTaker(), 0, 0, 0
    for i, k in enumerate(range(0, len(pcm) - 640, 640)):
        frame = pcm[k:k + 640]
        starts += sum(isinstance(a, SpeechStarted) for a in tt.frame(vad(frame), (i + 1) * 20, level(frame)))
        busy += tt.state != TurnTaker.IDLE
        n += 1
    return starts, busy / max(n, 1)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=32, help="questions (each in one voice)")
    ap.add_argument("--json")
    ap.add_argument("--levels", action="store_true", help="also every suppression level 1-4 without gain")
    args = ap.parse_args()
    modes = MODES + (tuple((0, lv) for lv in (1, 2, 3, 4)) if args.levels else ())
    from voxgate.agent.models.moonshine import MoonshineAsr

    rng = np.random.default_rng(11)
    tmp = Path(tempfile.mkdtemp(prefix="voxgate-noise-"))
    noises = {"babble": babble(tmp, 40, rng), "street": street(40, rng)}
    clips = []
    for i, text in enumerate(UTTERANCES[: args.limit]):
        engine, voice, speed, _ = PLAIN[i % len(PLAIN)]
        clips.append((text, speak(text, engine, voice, speed, tmp / "c.wav")))
    asr = MoonshineAsr()
    hear(asr, clips[0][1])
    words = sum(word_errors(t, t)[1] for t, _ in clips)
    speech_rms = float(np.mean([np.sqrt(np.mean(a[np.abs(a) > 0.01] ** 2)) for _, a in clips]))
    results = {"clips": len(clips), "clean": None, "wer": {}, "false_turns_per_min": {}}
    clean = sum(word_errors(t, hear(asr, a)[0])[0] for t, a in clips) / words
    results["clean"] = round(clean, 3)
    print(f"{len(clips)} questions, {words} words; clean speech WER {clean * 100:.1f}%")
    label = {m: (m or "off") if not isinstance(m, tuple) else f"ns{m[1]}" for m in modes}
    print("word errors; false turns a minute on noise alone, and the share of that time in a turn")
    print(f"{'noise':8s}{'SNR':>6s}" + "".join(f"{label[m]:>24s}" for m in modes))
    results["time_in_false_turns"] = {}
    for name, noise in noises.items():
        for snr in (10, 0):
            wer, turns, busy = {}, {}, {}
            scale = speech_rms / 10 ** (snr / 20)  # the noise's level in that mix, relative to typical speech
            for mode in modes:
                errors = 0
                for j, (text, audio) in enumerate(clips):
                    noisy = mix(audio, noise, snr, start=j * 7919 % noise.size)
                    errors += word_errors(text, hear(asr, heard_part(denoise(noisy, mode)))[0])[0]
                wer[label[mode]] = round(errors / words, 3)
                starts, share = false_turns(noise[: 30 * RATE], scale, mode)
                turns[label[mode]], busy[label[mode]] = starts * 2, round(share, 2)  # a minute: 30 s measured
            key = f"{name} {snr} dB"
            results["wer"][key], results["false_turns_per_min"][key] = wer, turns
            results["time_in_false_turns"][key] = busy
            print(f"{name:8s}{snr:5d}dB" + "".join(
                f"{wer[label[m]] * 100:8.1f}% {turns[label[m]]:4d}/min {busy[label[m]] * 100:3.0f}%" for m in modes))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
