"""Recognizers side by side on voices the agent never uses: word error rate, real-time factor, memory, load time.

The spoken set: 32 everyday utterances (questions, requests, numbers, names) spoken by espeak-ng in several voices
and accents (none of them the agent's Piper voice), at two speeds, then with noise (white noise at 15 dB SNR) and
over a telephone band (8 kHz, 300–3400 Hz). Each recognizer hears every clip the way the agent feeds it: 16 kHz
PCM in 20 ms frames, then ``finish()``. PocketSphinx (the old default) is the baseline.

Word error rate: (substitutions + deletions + insertions) / reference words, after lowercasing, dropping
punctuation and spelling small numbers out (so "20" and "twenty" match). Real-time factor: the CPU time the process
spent recognizing (all its threads: CTranslate2 decodes on its own) / audio length, one call at a time. Memory: the process's RSS growth when the model loads.

    python bench/asr.py [--recognizers pocketsphinx,moonshine,whisper] [--limit N] [--json out.json]
    python bench/asr.py --plain      # every utterance, clean, in each of nine voices without an accent

``--human`` is people, not synthesizers: the recordings that ship in speech packages with their transcripts, clean,
in street noise at 10 and 0 dB SNR (bench/noise.py's) and over a telephone band:

- the ``pocketsphinx`` 5.1.1 sdist on PyPI (its ``test/data``; fetched once into ~/.cache/voxgate-bench): five
  LibriVox sentences of Sense and Sensibility (a woman reading), five card names ("four queen of clubs"), "go
  forward ten meters", a TIDIGITS digit string, and "feels like these days go on forever";
- the ``moonshine-cpp`` wheel's ``test-data/beckett.wav`` ("Ever tried. Ever failed. No matter. ...").

``--plain`` is the set the issue's first measurement used (everyday questions in common synthetic voices, clean):
five espeak-ng voices (American and British, male and female variants) and the four flite voices, 160 words a
minute, 288 clips.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

import common  # noqa: F401  (first: it puts src/ on the path)

from voxgate.lab.wer import word_errors

UTTERANCES = [
    "What is the capital of France?", "Set a timer for twenty minutes, please.", "What's the weather like tomorrow?",
    "Call my mother on her mobile.", "How many ounces are in a pound?", "Play some relaxing music.",
    "Remind me to buy milk on the way home.", "What time does the pharmacy close today?",
    "Turn off the lights in the kitchen.", "How far is it from London to Paris?", "Who wrote Pride and Prejudice?",
    "Add eggs and bread to my shopping list.", "What is twelve times fourteen?", "Book a table for four at seven.",
    "How do I get to the train station?", "Can you tell me a joke?", "What is the population of Canada?",
    "Cancel my meeting with Sarah.", "Translate good morning into Spanish.", "How long should I boil an egg?",
    "What's on my calendar this afternoon?", "Send a message to David saying I'm running late.",
    "Is it going to rain this weekend?", "Convert one hundred dollars to euros.", "Where is the nearest gas station?",
    "Wake me up at six thirty tomorrow.", "What is the tallest mountain in the world?",
    "Open the garage door.", "How many days until Christmas?", "Read me the latest news.",
    "What's a good recipe for pancakes?", "Turn the volume down a little.",
]
# (engine, voice, words a minute, family): two synthesizers the agent never uses. espeak-ng's formant voices in
# several accents (its Scottish and Caribbean ones are hard even for people), a female variant and a fast speaker;
# flite's (Debian's `flite`) diphone and clustergen voices, closer to a human recording.
VOICES = [("espeak-ng", "en-us", 165, "espeak"), ("flite", "slt", 0, "flite"),
          ("espeak-ng", "en-gb", 165, "espeak"), ("flite", "awb", 0, "flite"),
          ("espeak-ng", "en-gb-scotland", 165, "espeak accents"), ("flite", "rms", 0, "flite"),
          ("espeak-ng", "en-us+f2", 165, "espeak"), ("flite", "kal16", 0, "flite"),
          ("espeak-ng", "en-029", 165, "espeak accents"), ("espeak-ng", "en-us+m3", 210, "espeak fast")]


def speak(text: str, engine: str, voice: str, speed: int, path: Path) -> np.ndarray:
    if engine == "flite":
        subprocess.run(["flite", "-voice", voice, "-t", text, "-o", str(path)], check=True, capture_output=True)
    else:
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(path), text], check=True,
                       capture_output=True)
    return resample(read_wav(path), 22050, 16000)


def read_wav(path: Path) -> np.ndarray:
    import wave

    with wave.open(str(path), "rb") as w:
        assert w.getsampwidth() == 2 and w.getnchannels() == 1
        rate = w.getframerate()
        data = np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32) / 32768
    return data if rate == 22050 else resample(data, rate, 22050)


def resample(x: np.ndarray, src: int, dst: int) -> np.ndarray:
    import av

    frame = av.AudioFrame.from_ndarray((x * 32767).astype(np.int16)[None, :], format="s16", layout="mono")
    frame.sample_rate = src
    r = av.AudioResampler(format="s16", layout="mono", rate=dst)
    out = [f.to_ndarray().reshape(-1) for f in r.resample(frame)] + [f.to_ndarray().reshape(-1) for f in r.resample(None)]
    return np.concatenate(out).astype(np.float32) / 32768


def noisy(x: np.ndarray, snr_db: float, rng) -> np.ndarray:
    power = float(np.mean(x ** 2)) or 1e-9
    return np.clip(x + rng.normal(0, np.sqrt(power / 10 ** (snr_db / 10)), x.size).astype(np.float32), -1, 1)


def telephone(x: np.ndarray) -> np.ndarray:
    """8 kHz and 300–3400 Hz, as a phone line carries it (FFT band-pass, then back to 16 kHz)."""
    y = resample(x, 16000, 8000)
    spec = np.fft.rfft(y)
    freqs = np.fft.rfftfreq(y.size, 1 / 8000)
    spec[(freqs < 300) | (freqs > 3400)] = 0
    return resample(np.fft.irfft(spec, y.size).astype(np.float32), 8000, 16000)


def clips(limit: int | None, tmp: Path):
    rng = np.random.default_rng(7)
    texts = UTTERANCES[:limit] if limit else UTTERANCES
    for i, text in enumerate(texts):  # each utterance in three voices, then two of them with noise / over a phone
        said = []
        for k in (i, i + 3, i + 7):
            engine, voice, speed, family = VOICES[k % len(VOICES)]
            said.append((voice_name(VOICES[k % len(VOICES)]), family, speak(text, engine, voice, speed, tmp / "c.wav")))
            yield text, said[-1][0], said[-1][1], "clean", said[-1][2]
        yield text, said[0][0], said[0][1], "noise 15 dB", noisy(said[0][2], 15, rng)
        yield text, said[1][0], said[1][1], "telephone", telephone(said[1][2])


PLAIN = [("espeak-ng", v, 160, "espeak") for v in ("en-us+f3", "en+m3", "en-us+m2", "en-us", "en-gb")] + \
        [("flite", v, 0, "flite") for v in ("slt", "awb", "rms", "kal16")]


def plain_clips(limit: int | None, tmp: Path):
    for text in UTTERANCES[:limit] if limit else UTTERANCES:
        for v in PLAIN:
            yield text, voice_name(v), v[3], "clean", speak(text, v[0], v[1], v[2], tmp / "c.wav")


POCKETSPHINX_SDIST = "pocketsphinx-5.1.1.tar.gz"
# the recordings of the sdist's test/data and what is said in them (from its .txt, .transcription and test code)
HUMAN = {
    "librivox/sense_and_sensibility_01_austen_64kb-0870.wav": ("librivox", None),
    "librivox/sense_and_sensibility_01_austen_64kb-0880.wav": ("librivox", None),
    "librivox/sense_and_sensibility_01_austen_64kb-0890.wav": ("librivox", None),
    "librivox/sense_and_sensibility_01_austen_64kb-0920.wav": ("librivox", None),
    "librivox/sense_and_sensibility_01_austen_64kb-0930.wav": ("librivox", None),
    "cards/001.wav": ("cards", "ten of clubs"), "cards/002.wav": ("cards", "four queen of clubs"),
    "cards/003.wav": ("cards", "seven of clubs"), "cards/004.wav": ("cards", "five five"),
    "cards/005.wav": ("cards", "eight of spades four of clubs seven of hearts"),
    "goforward.raw": ("commands", "go forward ten meters"),
    "tidigits/dhd.2934z.raw": ("digits", "two nine three four zero"),
    "forever/input_2_16k.wav": ("commands", "feels like these days go on forever"),
}


def pypi_sdist(name: str, cache: Path) -> Path:
    """A package's sdist from PyPI (the simple index), kept in ``cache``."""
    import re
    import urllib.request

    path = cache / name
    if not path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        project = name.rsplit("-", 1)[0]
        index = urllib.request.urlopen(f"https://pypi.org/simple/{project}/", timeout=60).read().decode()
        url = re.search(r'href="(https://[^"#]*/' + re.escape(name) + ')', index).group(1)
        tmp = path.with_suffix(".part")
        tmp.write_bytes(urllib.request.urlopen(url, timeout=300).read())
        tmp.replace(path)
    return path


def human_recordings() -> list[tuple[str, str, np.ndarray]]:
    """(transcript, source, 16 kHz audio) of every recording above."""
    import io
    import tarfile
    import wave

    out = []
    sdist = pypi_sdist(POCKETSPHINX_SDIST, Path.home() / ".cache" / "voxgate-bench")
    root = POCKETSPHINX_SDIST[: -len(".tar.gz")] + "/test/data/"
    with tarfile.open(sdist) as tar:
        for rel, (source, text) in HUMAN.items():
            data = tar.extractfile(root + rel).read()
            if text is None:
                text = tar.extractfile(root + rel[:-4] + ".txt").read().decode().strip()
            if rel.endswith(".wav"):
                with wave.open(io.BytesIO(data)) as w:
                    assert w.getframerate() == 16000 and w.getsampwidth() == 2 and w.getnchannels() == 1, rel
                    data = w.readframes(w.getnframes())
            out.append((text, f"pocketsphinx sdist: {source}", np.frombuffer(data, np.int16).astype(np.float32) / 32768))
    try:
        import moonshine_cpp

        with wave.open(str(Path(moonshine_cpp.__file__).parent / "test-data" / "beckett.wav")) as w:
            pcm = np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32) / 32768
        out.append(("Ever tried. Ever failed. No matter. Try again. Fail again. Fail better.",
                    "moonshine-cpp wheel: beckett", pcm))
    except ImportError:  # the wheel is x86-64 only
        pass
    return out


def human_clips(limit: int | None, tmp: Path):
    from noise import mix, street

    rng = np.random.default_rng(11)
    noise = street(60, rng)
    for i, (text, source, audio) in enumerate(human_recordings()[:limit]):
        yield text, source, "human", "clean", audio
        for snr in (10, 0):
            yield text, source, "human", f"street {snr} dB", mix(audio, noise, snr, 7919 * i, lead_s=0.3)
        yield text, source, "human", "telephone", telephone(audio)


def voice_name(v) -> str:
    engine, voice, speed, _ = v
    return f"flite {voice}" if engine == "flite" else f"{voice}@{speed}"


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def make(name: str):
    from voxgate.agent.models.pocketsphinx import PocketSphinxAsr

    if name == "pocketsphinx":
        return PocketSphinxAsr()
    if name == "moonshine":
        from voxgate.agent.models.moonshine import MoonshineAsr

        return MoonshineAsr()
    if name == "whisper":
        from voxgate.agent.models.whisper import WhisperAsr

        return WhisperAsr()
    raise SystemExit(f"unknown recognizer {name!r}")


def hear(asr, audio: np.ndarray) -> tuple[str, float]:
    pcm = (np.clip(audio, -1, 1) * 32767).astype(np.int16).tobytes()
    cpu0 = time.process_time()  # the whole process: some recognizers decode on threads of their own
    asr.start()
    for k in range(0, len(pcm), 640):
        asr.feed(pcm[k:k + 640].ljust(640, b"\0"))
    text = asr.finish()
    return text, time.process_time() - cpu0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--recognizers", default="pocketsphinx,moonshine,whisper")
    ap.add_argument("--limit", type=int, help="first N utterances only")
    ap.add_argument("--json")
    ap.add_argument("--show", action="store_true", help="print every hypothesis")
    ap.add_argument("--plain", action="store_true", help="clean speech in nine voices without an accent only")
    ap.add_argument("--human", action="store_true", help="human recordings that ship in packages, clean and noisy")
    args = ap.parse_args()
    if not shutil.which("espeak-ng"):
        raise SystemExit("bench/asr.py needs espeak-ng (apt-get install espeak-ng)")
    tmp = Path(tempfile.mkdtemp(prefix="voxgate-asr-"))
    data = list((human_clips if args.human else plain_clips if args.plain else clips)(args.limit, tmp))
    audio_s = sum(c[4].size for c in data) / 16000
    print(f"{len(data)} clips, {audio_s:.0f} s of speech, voices: " + (
        ", ".join(dict.fromkeys(c[1] for c in data)) if args.human
        else ", ".join(voice_name(v) for v in (PLAIN if args.plain else VOICES))))
    results = {}
    for name in args.recognizers.split(","):
        rss0, t0 = rss_mb(), time.monotonic()
        asr = make(name)
        load_ms, rss = (time.monotonic() - t0) * 1000, rss_mb() - rss0
        hear(asr, data[0][4])  # the first run pays one-time costs
        errors, words, cpu = {}, {}, 0.0
        for text, voice, family, variant, audio in data:
            hyp, spent = hear(asr, audio)
            cpu += spent
            e, n = word_errors(text, hyp)
            for key in ("all", variant, f"{variant} {voice}") + (
                    (f"clean {family}", f"clean {voice}") if variant == "clean" else ()):
                errors[key] = errors.get(key, 0) + e
                words[key] = words.get(key, 0) + n
            if args.show:
                print(f"  {name:12s} {variant:11s} {voice:18s} {text!r:50s} -> {hyp!r}")
        results[name] = {"wer": {k: round(errors[k] / words[k], 3) for k in errors}, "rtf": round(cpu / audio_s, 3),
                         "load_ms": round(load_ms), "rss_mb": round(rss, 1),
                         "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}
    variants = (["all", "clean", "street 10 dB", "street 0 dB", "telephone"] if args.human
                else ["all", "clean", "noise 15 dB", "telephone"])
    print(f"{'recognizer':14s}" + "".join(f"{'WER ' + v:>17s}" for v in variants) + f"{'RTF':>8s}{'load':>9s}{'memory':>9s}")
    for name, r in results.items():
        print(f"{name:14s}" + "".join(f"{r['wer'].get(v, float('nan')) * 100:16.1f}%" for v in variants)
              + f"{r['rtf']:8.3f}{r['load_ms']:7d}ms{r['rss_mb']:7.0f}MB")
    if args.human:
        for source in dict.fromkeys(c[1] for c in data):
            print(f"  {source:32s}" + "; ".join(
                f"{name} " + ", ".join(f"{v} {r['wer'].get(f'{v} {source}', float('nan')) * 100:.1f}%"
                                       for v in variants[1:]) for name, r in results.items()))
    families = sorted({f"clean {f}" for *_, f in VOICES})
    if not args.human:
        print("clean speech by voice family: " + "; ".join(
            f"{name} " + ", ".join(f"{k[6:]} {r['wer'][k] * 100:.1f}%" for k in families if k in r["wer"])
            for name, r in results.items()))
    if args.show:
        for name, r in results.items():
            print(f"{name}, clean speech by voice: " + ", ".join(
                f"{voice_name(v)} {r['wer'].get('clean ' + voice_name(v), float('nan')) * 100:.1f}%"
                for v in (PLAIN if args.plain else VOICES)))
    if "pocketsphinx" in results:
        base = results["pocketsphinx"]
        for name, r in results.items():
            if name != "pocketsphinx":
                print(f"{name} vs pocketsphinx: word errors x{r['wer']['all'] / max(base['wer']['all'], 1e-9):.2f}, "
                      f"CPU per second of speech x{r['rtf'] / max(base['rtf'], 1e-9):.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"clips": len(data), "audio_s": round(audio_s, 1), "results": results},
                                              indent=2))
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
