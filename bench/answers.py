"""Answers worth hearing: the embedded language model's replies to everyday questions, scored by a written rubric.

    python bench/answers.py [--model PATH.gguf ...] [--ways agent,app,phone] [--json out.json]

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

Three ways of asking (``--ways``): ``agent`` (the agent's own instructions, what a session that sends none gets),
``app`` (an app's: "You are a helpful assistant.", what most apps send; the agent's rules are appended to it), and
``phone`` (the app's instructions, and the question as a phone caller's: spoken by flite's slt voice, sent as
μ-law at 8 kHz through the code a SIP call runs, and heard by Moonshine; the answer is to what it heard). The
reply's first words pass ``core/chat.unfit`` as in a call: one in another language, a list, a run of digits, markup
or no words is made again before it is spoken; ``redone`` counts those.

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

from voxgate.agent.core.chat import DEFAULT_INSTRUCTIONS

from voxgate.agent.shell.embedded import REDONE, LlamaResponder

APP_INSTRUCTIONS = "You are a helpful assistant."

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


async def ask(r: LlamaResponder, question: str, instructions: str = DEFAULT_INSTRUCTIONS
              ) -> tuple[str, float, float, int]:
    await asyncio.to_thread(r.prime, instructions)
    t0 = time.monotonic()
    first, parts = None, []
    async for part in r.stream([{"role": "user", "content": question}], instructions):
        if first is None:
            first = time.monotonic()
        parts.append(part)
    end = time.monotonic()
    first = first or end
    rate = (len(parts) - 1) / (end - first) if len(parts) > 1 and end > first else 0.0
    return "".join(parts).strip(), (first - t0) * 1000, rate, len(parts)


def phone_heard(questions: list[str]) -> list[str]:
    """Each question as a phone caller's, as the agent's recognizer hears it (see the module's docstring)."""
    import tempfile
    from pathlib import Path

    from asr import hear, speak
    from phone import through

    from voxgate.agent.models.moonshine import MoonshineAsr
    from voxgate.sip.sdp import Codec

    asr, tmp = MoonshineAsr(), Path(tempfile.mkdtemp(prefix="voxgate-answers-"))
    return [hear(asr, through(Codec(0, "PCMU", 8000), speak(q, "flite", "slt", 0, tmp / "q.wav")))[0]
            for q in questions]


def redone() -> int:
    return int(sum(s.value for m in REDONE.collect() for s in m.samples if s.name.endswith("_total")))


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) / 1024 for line in fh if line.startswith("VmRSS:"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", default=[], help="a gguf file to compare (repeatable)")
    ap.add_argument("--json")
    ap.add_argument("--show", action="store_true", help="print every answer")
    ap.add_argument("--ways", default="agent,app,phone", help="agent, app, phone (see above)")
    ap.add_argument("--no-conversation", action="store_true", help="skip the 36-answer conversation")
    args = ap.parse_args()
    ways = args.ways.split(",")
    heard = phone_heard([q for q, _ in QUESTIONS]) if "phone" in ways else None
    if heard and args.show:
        print("heard over the phone:", heard)
    results = {}
    for path in [None] + args.model:
        rss0 = rss_mb()
        r = LlamaResponder(model_path=path)
        name = path.rsplit("/", 1)[-1] if path else "SmolLM2-135M-Instruct (embedded)"
        memory = rss_mb() - rss0
        per_way = {}
        for way in ways:
            instructions = DEFAULT_INSTRUCTIONS if way == "agent" else APP_INSTRUCTIONS
            rows, redone0 = [], redone()
            for k, (question, accepted) in enumerate(QUESTIONS):
                asked = heard[k] if way == "phone" else question
                answer, first_ms, rate, tokens = asyncio.run(ask(r, asked, instructions))
                rows.append({"question": question, "asked": asked, "answer": answer,
                             "first_token_ms": round(first_ms, 1), "tokens_per_s": round(rate, 1), "tokens": tokens,
                             **score(question, answer, accepted)})
                if args.show:
                    print(f"  {way:5s} {rows[-1]['score']}  {asked!r} -> {answer!r}")
            per_way[way] = {
                "right": sum(x["right"] for x in rows), "speakable": sum(x["speakable"] for x in rows),
                "score": sum(x["score"] for x in rows), "of": 3 * len(rows), "n": len(rows),
                "foreign": sum(x["foreign"] for x in rows), "redone": redone() - redone0,
                "first_token_ms": statistics.median(x["first_token_ms"] for x in rows),
                "tokens_per_s": statistics.median([x["tokens_per_s"] for x in rows if x["tokens_per_s"]] or [0]),
                "rows": rows}
        results[name] = {"memory_mb": round(memory), "ways": per_way,
                         "conversation": None if args.no_conversation else asyncio.run(conversation(r))}
        del r
    print(f"{'model':34s} {'way':6s} {'right':>7s} {'speakable':>10s} {'score':>8s} {'first token':>12s} "
          f"{'tokens/s':>9s} {'memory':>7s} {'not English':>12s} {'redone':>7s}")
    for name, res in results.items():
        for way, s_ in res["ways"].items():
            n = s_["n"]
            print(f"{name[:34]:34s} {way:6s} {s_['right']:4d}/{n:<2d} {s_['speakable']:7d}/{n:<2d} "
                  f"{s_['score']:4d}/{s_['of']:<3d} {s_['first_token_ms']:9.0f} ms {s_['tokens_per_s']:9.1f} "
                  f"{res['memory_mb']:5d}MB {s_['foreign']:9d}/{n:<2d} {s_['redone']:6d}")
        c = res["conversation"]
        if c:
            print(f"{'':34s} a 12-question conversation x3: {c['not_in_question_language']}/{c['of']} not English, "
                  f"{c['repeated']}/{c['of']} repeated")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
