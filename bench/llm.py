"""The embedded LLM's runtime, measured: xllamacpp (prebuilt wheel, what voxgate uses) against llama-cpp-python
(compiled on install), on the same SmolLM2 gguf, the same questions and prompts, side by side.

    python bench/llm.py [--llama-cpp-python /path/to/venv/bin/python] [--rounds 3]

Each configuration runs in its own process (one model each, resident memory measured alone), and the rounds
alternate between them, so a noisy neighbour on this shared machine hits all of them alike. Reported per
configuration: model load, first token after a warm system prompt (the prompt cache holds it, as on a call),
decode speed, and peak resident memory. The system prompt is voxgate's default; replies are capped at 40 tokens,
greedy, so both runtimes do the same work.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "src"))

QUESTIONS = ["What is the capital of France?", "How far away is the moon?", "Tell me a joke about cats.",
             "Why is the sky blue?", "What should I cook tonight?", "Who wrote Romeo and Juliet?"]

# one run in a child process: prints a JSON line
CHILD = r'''
import json, resource, sys, time
kind, path, threads, extra = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
system = sys.argv[5]
questions = json.loads(sys.argv[6])
t0 = time.monotonic()
if kind == "xllamacpp":
    import xllamacpp
    p = xllamacpp.CommonParams()
    p.model.path = path; p.n_ctx = 2048; p.n_parallel = 1; p.verbosity = -1
    p.cpuparams.n_threads = threads; p.cpuparams_batch.n_threads = threads; p.no_extra_bufts = not extra
    server = xllamacpp.Server(p)
    def ask(messages):
        marks = []
        def cb(chunk):
            c = chunk.get("choices") or [{}]
            if (c[0].get("delta") or {}).get("content"):
                marks.append(time.monotonic())
            return False
        t = time.monotonic()
        server.handle_chat_completions({"messages": messages, "max_tokens": 40, "temperature": 0, "stream": True}, cb)
        return t, marks
else:
    from llama_cpp import Llama
    llm = Llama(model_path=path, n_ctx=2048, n_threads=threads, n_threads_batch=threads, verbose=False)
    def ask(messages):
        marks = []
        t = time.monotonic()
        for part in llm.create_chat_completion(messages, max_tokens=40, temperature=0, stream=True):
            if part["choices"][0]["delta"].get("content"):
                marks.append(time.monotonic())
        return t, marks
load_ms = (time.monotonic() - t0) * 1000
ask([{"role": "system", "content": system}, {"role": "user", "content": "hi"}])  # warm: the system prompt is cached
rows = []
for q in questions:
    t, marks = ask([{"role": "system", "content": system}, {"role": "user", "content": q}])
    if marks:
        rate = (len(marks) - 1) / (marks[-1] - marks[0]) if len(marks) > 1 else 0.0
        rows.append({"first_ms": (marks[0] - t) * 1000, "tokens_per_s": rate, "tokens": len(marks)})
print(json.dumps({"load_ms": load_ms, "rows": rows,
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
'''


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--llama-cpp-python", metavar="PYTHON",
                    help="a Python whose environment has llama-cpp-python (built as pip builds it: for this CPU)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json")
    args = ap.parse_args()
    from voxgate.agent.core.chat import DEFAULT_INSTRUCTIONS
    from voxgate.agent.shell.embedded import smollm2_path

    path = smollm2_path()
    configs = [("xllamacpp, 1 thread", sys.executable, "xllamacpp", 1, False),
               ("xllamacpp, 2 threads", sys.executable, "xllamacpp", 2, False),
               ("xllamacpp, 2 threads, repack on", sys.executable, "xllamacpp", 2, True)]
    if args.llama_cpp_python:
        configs.append(("llama-cpp-python, 2 threads", args.llama_cpp_python, "llama_cpp", 2, True))
    results = {name: {"load_ms": [], "first_ms": [], "tokens_per_s": [], "rss_mb": []} for name, *_ in configs}
    for _ in range(args.rounds):
        for name, python, kind, threads, extra in configs:
            out = subprocess.run([python, "-c", CHILD, kind, path, str(threads), "1" if extra else "0",
                                  DEFAULT_INSTRUCTIONS, json.dumps(QUESTIONS)], capture_output=True, text=True,
                                 timeout=300)
            line = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""
            if not line.startswith("{"):
                print(f"{name}: failed: {out.stderr[-400:]}", file=sys.stderr)
                continue
            r = json.loads(line)
            s = results[name]
            s["load_ms"].append(r["load_ms"])
            s["rss_mb"].append(r["rss_mb"])
            s["first_ms"] += [x["first_ms"] for x in r["rows"]]
            s["tokens_per_s"] += [x["tokens_per_s"] for x in r["rows"] if x["tokens_per_s"]]
    base = results[configs[0][0]]
    base_rate = statistics.median(base["tokens_per_s"]) if base["tokens_per_s"] else None
    print(f"{'runtime':34s} {'load':>8s} {'first token':>12s} {'p90':>7s} {'tokens/s':>9s} {'x base':>7s} {'RSS':>7s}")
    for name, s in results.items():
        if not s["first_ms"]:
            continue
        first = statistics.median(s["first_ms"])
        p90 = statistics.quantiles(s["first_ms"], n=10)[-1] if len(s["first_ms"]) >= 2 else first
        rate = statistics.median(s["tokens_per_s"])
        print(f"{name:34s} {statistics.median(s['load_ms']):6.0f}ms {first:9.1f} ms {p90:5.1f}ms {rate:9.1f} "
              f"{rate / base_rate if base_rate else 0:7.2f} {max(s['rss_mb']):5.0f}MB")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
