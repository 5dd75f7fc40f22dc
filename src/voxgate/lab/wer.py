"""Word error rate, as bench/asr.py and the recognizer tests count it: lowercased, punctuation dropped, small
numbers spelled out (so "20" and "twenty" match; a longer digit string digit by digit, as digit strings are read:
"29340" = "two nine three four zero"), titles spelled out ("Mr." = "mister"), common contractions expanded
("what's" = "what is"), then a word-level edit distance."""

from __future__ import annotations

import re

_NUMBERS = {str(n): w for n, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())}
_NUMBERS.update({"30": "thirty", "40": "forty", "50": "fifty", "60": "sixty", "100": "one hundred"})
_CONTRACTIONS = {"what's": "what is", "it's": "it is", "i'm": "i am", "don't": "do not", "can't": "cannot",
                 "that's": "that is", "where's": "where is", "who's": "who is", "how's": "how is", "let's": "let us",
                 "there's": "there is", "isn't": "is not", "you're": "you are", "we're": "we are", "i'll": "i will"}


_TITLES = {"mr": "mister", "mrs": "missus", "dr": "doctor", "st": "saint"}


def _word(w: str) -> str:
    if w in _CONTRACTIONS or w in _NUMBERS or w in _TITLES:
        return _CONTRACTIONS.get(w) or _NUMBERS.get(w) or _TITLES[w]
    if w.isdigit():
        return " ".join(_NUMBERS[d] for d in w)
    return w


def normalize(text: str) -> list[str]:
    text = re.sub(r"\bto-(day|morrow|night)\b", r"to\1", text.lower())  # old spellings of one word
    text = text.replace("-", " ").replace("%", " percent")
    text = re.sub(r"\$(\d+)", r"\1 dollars", text)
    text = re.sub(r"(\d+):(\d+)", lambda m: f"{m.group(1)} {m.group(2)}", text)
    words = []
    for w in re.sub(r"[^a-z0-9' ]", " ", text.replace("\u2019", "'")).split():
        words += _word(w).split()
    return [w.replace("'", "") for w in words]


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(substitutions + deletions + insertions, words in the reference)."""
    ref, hyp = normalize(reference), normalize(hypothesis)
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1], len(ref)
