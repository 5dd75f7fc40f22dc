"""Tool-call decisions of the embedded language model: does it call the tool when asked, and only then?

    python bench/tools.py [--model PATH.gguf]

Twenty requests, half of which need the weather tool, go through ``LlamaResponder.decide_tool`` (generation
constrained by the tools' JSON schema, then the grounding check) and, for comparison, through the same constrained
generation with no check. Prints precision and recall of the calls, whether the city was right, and the time per
decision. The default model is the embedded SmolLM2-135M-Instruct; ``--model`` tries another gguf with the same
code (a Gemma 3 270M gguf from PyPI, say).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from common import SRC  # noqa: F401  (puts src/ on the path)

from voxgate.agent.shell.embedded import LlamaResponder

from voxgate.agent.core.chat import grounded

WEATHER = {"type": "function", "name": "get_weather", "description": "The current weather in a city.",
           "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}
ASKS = [("What is the weather like in Paris today?", "Paris"), ("Is it going to rain in London?", "London"),
        ("What's the temperature in Berlin right now?", "Berlin"), ("Do I need an umbrella in Seattle?", "Seattle"),
        ("How cold is it in Oslo?", "Oslo"), ("Tell me the weather in Madrid.", "Madrid"),
        ("Is it sunny in Rome?", "Rome"), ("What's the forecast for Tokyo?", "Tokyo"),
        ("Will it snow in Denver tomorrow?", "Denver"), ("How hot is it in Cairo today?", "Cairo")]
CHATTER = ["Tell me a joke.", "How are you today?", "Who wrote Hamlet?", "What time is it?", "Thank you very much.",
           "Can you help me write an email?", "What is two plus two?", "Good morning!", "I like pizza.",
           "What is your name?"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="a gguf file instead of the embedded SmolLM2")
    args = ap.parse_args()
    r = LlamaResponder(model_path=args.model)
    rows = [(t, city) for t, city in ASKS] + [(t, None) for t in CHATTER]
    raw = {"tp": 0, "fp": 0, "city": 0}
    checked = {"tp": 0, "fp": 0, "city": 0}
    times = []
    for text, city in rows:
        msgs = [{"role": "user", "content": text}]
        t0 = time.monotonic()
        unchecked = r.decide_tool(msgs, [WEATHER], "auto", check=False)
        times.append(time.monotonic() - t0)
        auto = None
        if unchecked is not None and grounded(msgs, WEATHER, json.loads(unchecked.arguments)):
            auto = unchecked  # what decide_tool(..., check=True) returns: the same generation, kept if grounded
        for stats, c in ((raw, unchecked), (checked, auto)):
            if c is not None:
                stats["tp" if city else "fp"] += 1
                if city and json.loads(c.arguments).get("location", "").startswith(city):
                    stats["city"] += 1
        shown = unchecked.arguments if unchecked else "-"
        print(f"{text:45s} -> {shown:40s} {'kept' if auto else 'no call'}", flush=True)
    for name, s in (("constrained, unchecked", raw), ("constrained + grounding check", checked)):
        calls = s["tp"] + s["fp"]
        print(f"{name:30s}: calls {calls}/20, precision {s['tp'] / calls if calls else float('nan'):.2f}, "
              f"recall {s['tp'] / len(ASKS):.2f}, right city {s['city']}/{len(ASKS)}")
    print(f"decision time: median {statistics.median(times) * 1000:.0f} ms")


if __name__ == "__main__":
    main()
