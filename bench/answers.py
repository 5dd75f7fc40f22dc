"""Answers worth hearing: the embedded language model's replies to everyday questions, scored by a written rubric.

    python bench/answers.py [--model PATH.gguf ...] [--json out.json]

Twenty spoken-style questions with a fact a listener would check (the capital of France, the legs of a spider),
asked one at a time with the agent's own instructions, through ``LlamaResponder.stream`` (the code a call uses:
SmolLM2-135M-Instruct by default; ``--model`` runs other gguf files through it, e.g. the Gemma 3 270M one from PyPI).

The rubric, per answer (``score``), 0-3 points:

- **right** (2 points): the answer contains one of the question's accepted words ("paris"; "8" or "eight");
- **speakable** (1 point): what a voice should say — at most 40 words, no markdown, no run of 10 or more digits and
  punctuation ("1.1.0.2018.1.1"), no URL, no tags or brackets (a prompt template leaking), no repeated line, not
  empty, not an echo of the question.

The "right" check is a keyword: an answer that names the word in a wrong sentence ("The planet closest to Earth is
Venus") still counts, so read ``--show`` before trusting small differences.

- **in the question's language** (checked apart from the score): an answer to an English question with French,
  Spanish or German function words in it, or letters outside ASCII, is not (SmolLM2 answered "Le Grand Paris ...").

And one conversation (``CONVERSATION``): twelve questions asked in a row, each with the history before it (as a call
keeps it), three times over: how many answers are not in the question's language, and how many repeat an answer
given before (a small model copies its previous turn).

Also measured, on this machine's two cores: time to the first token and tokens per second of the stream (median),
and the process's memory growth when the model loads. Each question starts from the instructions evaluated (as a
call's first turn does: ``prime``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import time

import common  # noqa: F401  (first: it puts src/ on the path)

from voxgate.agent.shell.responders import DEFAULT_INSTRUCTIONS, LlamaResponder

QUESTIONS = [
    ("What is the capital of France?", ["paris"]), ("How many days are in a week?", ["seven", "7"]),
    ("What color is the sky on a clear day?", ["blue"]), ("How many legs does a spider have?", ["eight", "8"]),
    ("What is the opposite of hot?", ["cold"]), ("Which planet do we live on?", ["earth"]),
    ("What do bees make?", ["honey"]), ("What is two plus three?", ["five", "5"]),
    ("What language do people speak in Spain?", ["spanish"]), ("What is frozen water called?", ["ice"]),
    ("How many hours are in a day?", ["24", "twenty-four", "twenty four"]), ("What animal says moo?", ["cow"]),
    ("What is the largest ocean on Earth?", ["pacific"]), ("Who wrote Romeo and Juliet?", ["shakespeare"]),
    ("What season comes after winter?", ["spring"]), ("What is the boiling point of water in Celsius?", ["100"]),
    ("How many minutes are in an hour?", ["sixty", "60"]), ("What is the capital of Japan?", ["tokyo"]),
    ("What gas do plants take in from the air?", ["carbon dioxide", "co2"]),
    ("What is the tallest animal in the world?", ["giraffe"]),
]


CONVERSATION = [
    "What is the capital of France?", "How many legs does a spider have?", "Can you recommend a good book?",
    "Why is the sky blue?", "What should I cook for dinner tonight?", "How far away is the moon?",
    "What is your favorite color?", "Tell me a fun fact about octopuses.", "How do I make a cup of tea?",
    "What time is it in Tokyo?", "Is it going to rain tomorrow?", "What's a good name for a dog?",
]
FOREIGN = re.compile(r"\b(?:est|le|la|les|une|il|elle|du|des|qui|avec|el|los|las|es|und|ist|der|die|das)\b", re.I)


def foreign(answer: str) -> bool:
    """Does an answer to an English question read as another language?"""
    return len(FOREIGN.findall(answer)) >= 2 or any(ord(ch) > 127 and ch.isalpha() for ch in answer)


async def conversation(r: LlamaResponder, rounds: int = 3) -> dict:
    """``CONVERSATION`` asked in a row, the history kept: answers not in English, and answers given twice."""
    wrong_language = repeats = n = 0
    for _ in range(rounds):
        messages, said = [], set()
        for question in CONVERSATION:
            messages.append({"role": "user", "content": question})
            answer = "".join([p async for p in r.stream(messages, DEFAULT_INSTRUCTIONS)]).strip()
            messages.append({"role": "assistant", "content": answer})
            wrong_language += foreign(answer)
            repeats += answer in said
            said.add(answer)
            n += 1
    return {"not_in_question_language": wrong_language, "repeated": repeats, "of": n}


def score(question: str, answer: str, accepted: list[str]) -> dict:
    text = answer.lower()
    right = any(re.search(rf"\b{re.escape(a)}\b", text) for a in accepted)
    words = answer.split()
    junk = (not words or len(words) > 40 or re.search(r"[*#`|]|^\s*-\s", answer, re.M)
            or re.search(r"[\d.,:;/_-]{10,}", answer) or "http" in text or re.search(r"[<>\[\]{}]", answer)
            or len(set(lines := [x for x in answer.splitlines() if x.strip()])) < len(lines)
            or text.strip(" ?.!") == question.lower().strip(" ?.!"))
    return {"right": right, "speakable": not junk, "score": 2 * right + (not junk), "foreign": foreign(answer)}


async def ask(r: LlamaResponder, question: str) -> tuple[str, float, float, int]:
    await asyncio.to_thread(r.prime, DEFAULT_INSTRUCTIONS)
    t0 = time.monotonic()
    first, parts = None, []
    async for part in r.stream([{"role": "user", "content": question}], DEFAULT_INSTRUCTIONS):
        if first is None:
            first = time.monotonic()
        parts.append(part)
    end = time.monotonic()
    first = first or end
    rate = (len(parts) - 1) / (end - first) if len(parts) > 1 and end > first else 0.0
    return "".join(parts).strip(), (first - t0) * 1000, rate, len(parts)


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) / 1024 for line in fh if line.startswith("VmRSS:"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", default=[], help="a gguf file to compare (repeatable)")
    ap.add_argument("--json")
    ap.add_argument("--show", action="store_true", help="print every answer")
    args = ap.parse_args()
    results = {}
    for path in [None] + args.model:
        rss0 = rss_mb()
        r = LlamaResponder(model_path=path)
        name = path.rsplit("/", 1)[-1] if path else "SmolLM2-135M-Instruct (embedded)"
        memory = rss_mb() - rss0
        rows = []
        for question, accepted in QUESTIONS:
            answer, first_ms, rate, tokens = asyncio.run(ask(r, question))
            rows.append({"question": question, "answer": answer, "first_token_ms": round(first_ms, 1),
                         "tokens_per_s": round(rate, 1), "tokens": tokens, **score(question, answer, accepted)})
            if args.show:
                print(f"  {rows[-1]['score']}  {question!r} -> {answer!r}")
        results[name] = {
            "right": sum(r["right"] for r in rows), "speakable": sum(r["speakable"] for r in rows),
            "score": sum(r["score"] for r in rows), "of": 3 * len(rows),
            "first_token_ms": statistics.median(r["first_token_ms"] for r in rows),
            "tokens_per_s": statistics.median(r["tokens_per_s"] for r in rows if r["tokens_per_s"]),
            "memory_mb": round(memory), "rows": rows, "foreign": sum(r["foreign"] for r in rows),
            "conversation": asyncio.run(conversation(r))}
    print(f"{'model':40s} {'right':>7s} {'speakable':>10s} {'score':>9s} {'first token':>12s} {'tokens/s':>9s} {'memory':>8s}"
          f" {'not English':>12s} {'in a conversation: not English':>31s} {'repeated':>9s}")
    for name, s in results.items():
        n, c = len(s["rows"]), s["conversation"]
        print(f"{name[:40]:40s} {s['right']:4d}/{n:<2d} {s['speakable']:7d}/{n:<2d} {s['score']:5d}/{s['of']:<3d}"
              f" {s['first_token_ms']:9.0f} ms {s['tokens_per_s']:9.1f} {s['memory_mb']:6d}MB {s['foreign']:9d}/{n:<2d}"
              f" {c['not_in_question_language']:28d}/{c['of']:<2d} {c['repeated']:6d}/{c['of']:<2d}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
