"""The synthesizer's phonemizers and voices side by side: first-chunk latency, real-time factor, intelligibility.

Each row synthesizes 24 replies of the kind the agent gives (answers, numbers, names, a tool's result), with the
noise off so runs compare. First chunk: the time to synthesize a reply's first two words, which is what a turn
waits for (the agent's Chunker cuts the first chunk at two words). Real-time factor: synthesis time / audio length
over the whole replies. Intelligibility: Moonshine's word error rate on the audio, resampled to 16 kHz as a caller's
audio would be. The baseline is Piper with espeak-ng phonemes (``piper-tts``, GPL), run in the same process,
interleaved sentence by sentence with the others so a noisy machine slows all rows alike.

    python bench/tts.py [--limit N] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import common  # noqa: F401  (first: it puts src/ on the path)

from voxgate.agent.models.piper import PiperTts
from voxgate.lab.wer import word_errors
from voxgate.audio import Resampler

REPLIES = [
    "The capital of France is Paris.", "Sure, I set a timer for twenty minutes.",
    "Tomorrow will be sunny, with a high of eighteen degrees.", "There are sixteen ounces in a pound.",
    "Twelve times fourteen is one hundred and sixty eight.", "Pride and Prejudice was written by Jane Austen.",
    "The tallest mountain in the world is Mount Everest.", "I added eggs and bread to your shopping list.",
    "The train station is about ten minutes away on foot.", "Good morning in Spanish is buenos dias.",
    "Boil an egg for about nine minutes for a firm yolk.", "Your meeting with Sarah is cancelled.",
    "It is going to rain on Saturday afternoon.", "One hundred dollars is about ninety two euros.",
    "The nearest gas station is on Main Street.", "I will wake you up at six thirty tomorrow.",
    "There are twenty two days until Christmas.", "Canada has about forty million people.",
    "Photosynthesis turns sunlight into chemical energy.", "The pharmacy closes at nine tonight.",
    "I'm sorry, I didn't catch that. Could you say it again?", "Here is a joke: why did the scarecrow win an award?",
    "Mix flour, eggs and milk, then fry the batter in butter.", "London is about three hundred kilometres from Paris.",
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int)
    ap.add_argument("--voices", default="joe,river,juniper,basalt")
    args = ap.parse_args()
    from voxgate.agent.models.moonshine import MoonshineAsr

    asr = MoonshineAsr()
    rows = [("piper-espeak (GPL, baseline)", PiperTts(varied=False, phonemizer="espeak"), "joe", 1.0)]
    lexicon = PiperTts(varied=False)
    rows += [(f"piper lexicon, {v}", lexicon, v, 1.0) for v in args.voices.split(",")]
    rows += [("piper lexicon, joe, speed 1.4", lexicon, "joe", 1.4), ("piper lexicon, joe, speed 0.7", lexicon, "joe", 0.7)]
    replies = REPLIES[: args.limit] if args.limit else REPLIES
    for _, tts, voice, speed in rows:  # warm each path once (onnxruntime's first run, the dictionaries)
        b"".join(tts.synthesize("Hello there.", voice=voice, speed=speed))
    stats = {name: {"first": [], "synth": 0.0, "audio": 0.0, "err": 0, "words": 0} for name, *_ in rows}
    for text in replies:
        first = " ".join(text.split()[:2])
        for name, tts, voice, speed in rows:
            s = stats[name]
            t0 = time.perf_counter()
            b"".join(tts.synthesize(first, voice=voice, speed=speed))
            s["first"].append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            pcm = b"".join(tts.synthesize(text, voice=voice, speed=speed))
            s["synth"] += time.perf_counter() - t0
            rate = tts.rate_of(voice)
            s["audio"] += len(pcm) / 2 / rate
            asr.start()
            asr.feed(Resampler(rate, 16000)(pcm))
            e, n = word_errors(text, asr.finish())
            s["err"] += e
            s["words"] += n
    base = stats[rows[0][0]]
    print(f"{len(replies)} replies; WER by Moonshine base-en on the audio at 16 kHz\n")
    print(f"{'synthesizer':36s} {'first chunk ms':>15s} {'vs base':>8s} {'RTF':>6s} {'vs base':>8s} {'WER':>6s}")
    for name, *_ in rows:
        s = stats[name]
        med = statistics.median(s["first"])
        rtf = s["synth"] / s["audio"]
        print(f"{name:36s} {med:15.1f} {med / statistics.median(base['first']):8.2f} {rtf:6.3f} "
              f"{rtf / (base['synth'] / base['audio']):8.2f} {100 * s['err'] / s['words']:5.1f}%")


if __name__ == "__main__":
    main()
