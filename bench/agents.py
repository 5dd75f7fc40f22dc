"""Capacity of the whole agent: N concurrent calls of the embedded voice agent, each asking questions on a loop.

`voxgate transceiver --agent voice` (VAD, Moonshine, SmolLM2, Piper on this machine's cores) behind `voxgate relay`,
as `voxgate demo` runs them. N aiortc clients (one process beside it, `voxgate.client.call.place_call`) call at
once, each with the session the official SDKs send (`semantic_vad`), and speak a question every `--period` seconds in
voices the agent never uses (espeak-ng and flite), their starts spread over the first period. Per N:

- the turn: end of the user's speech -> the first reply audio packet sent, the server's own ``voxgate.timing``
  (``speech_end_to_first_audio_sent``) of every completed response: median and p90, each stage's median; and how
  many questions got an answer (a reply the caller's next question cut short counts: it was answered);
- CPU per call: the transceiver's CPU seconds (its threads included, from /proc) over the calls' seconds, in % of
  one core; the clients' CPU is reported beside it (they share the two cores, as a browser does not).

The headline: calls per core at p90 <= 1 s, the most calls that kept the p90 turn under a second, over the cores.

``--models-elsewhere``: the three models in other processes, the way LiveKit counts its ~6 agents per core (media,
VAD and turn detection on the agent's box, the models served elsewhere): another voxgate's model APIs for the
recognizer (Moonshine) and the voice (Piper), llama.cpp's own server for the language model (SmolLM2), all pinned to
the second core with the clients; the relay and the transceiver pinned to the first. (faster-whisper-server's
Whisper tiny.en needs ~0.7 s of a core per decode: on one shared core it cannot keep up with one call.) Those real
models on one core are the limit long before the transceiver is; ``--models-elsewhere stub`` answers the three APIs
after fixed delays (ASR 60 ms, first token 150 ms, first audio 120 ms: ``voxgate.lab.stub_models``), as a GPU box
would, so the calls a core of the agent's box carries at p90 <= 1 s are measured. The transceiver's own CPU per call is then what an
agent call costs the box, and ``100 / that`` its calls per core; the turn is measured too, but it is bounded by the
one core the three model servers share here, not by the transceiver.

    python bench/agents.py [--calls 1,2,4,6,8] [--seconds 48] [--period 12] [--models-elsewhere] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import random
import statistics
import tempfile
import time
import wave

from common import cpu_seconds, models_elsewhere, pin, start_agent  # first: it puts src/ on the path

from bargein import RATE, say

VOICES = ["en-us+f3", "en+m3", "en-us+m2", "flite:slt", "flite:rms", "en-gb-x-rp+f4", "en-us+f4", "flite:awb"]
QUESTIONS = [
    "What is the capital of France?", "How many legs does a spider have?", "Why is the sky blue?",
    "How far away is the moon?", "What is your favorite color?", "How do I make a cup of tea?",
    "What time is it in Tokyo?", "Is it going to rain tomorrow?", "What's a good name for a dog?",
    "Tell me a fun fact about octopuses.", "What should I cook for dinner tonight?", "Can you recommend a good book?",
]
STAGES = ("peeked", "turn_end", "final_transcript", "first_token", "first_chunk", "first_tts_audio")
SESSION = {"type": "realtime", "audio": {"input": {"turn_detection": {"type": "semantic_vad"}}}}


def mic_wav(path: str, voice: str, seconds: float, period: float, offset: float, first: int) -> int:
    """``offset`` s of silence, then a question every ``period`` s until ``seconds``; returns how many."""
    audio, n, t = b"\0\0" * int(offset * RATE), 0, offset
    while t + period <= seconds:
        pcm = say(QUESTIONS[(first + n) % len(QUESTIONS)], voice)
        audio += pcm + b"\0\0" * max(0, int(period * RATE) - len(pcm) // 2)
        t += period
        n += 1
    with wave.open(path, "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(RATE)
        w.writeframes(audio)
    return n


async def calls(url: str, n: int, seconds: float, period: float, tmp: str) -> tuple[list, int]:
    from voxgate.client.call import place_call

    rng = random.Random(n)
    jobs, asked = [], 0
    for i in range(n):
        wav = os.path.join(tmp, f"mic{i}.wav")
        asked += mic_wav(wav, VOICES[i % len(VOICES)], seconds, period, rng.uniform(0.5, period), i * 3)
        jobs.append(place_call(url, wav, os.path.join(tmp, f"out{i}.wav"), duration=seconds + 3, session=SESSION))
    return await asyncio.gather(*jobs, return_exceptions=True), asked


def pct(values: list[float], q: float) -> float:
    v = sorted(values)
    return v[min(len(v) - 1, int(round(q * (len(v) - 1))))]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", default="1,2,4,6,8")
    ap.add_argument("--seconds", type=float, default=48.0)
    ap.add_argument("--period", type=float, default=12.0, help="a question every this many seconds, per call")
    ap.add_argument("--models-elsewhere", nargs="?", const="box", choices=("box", "stub"),
                    help="ASR, language model and voice in other processes on the second core: real models (box: "
                         "another voxgate's Moonshine and Piper, llama.cpp's server), or stub (fixed delays, no CPU)")
    ap.add_argument("--json")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="voxgate-agents-")
    model_pids, stop_models = [], None
    if args.models_elsewhere:
        model_pids, kwargs, stop_models = models_elsewhere(tmp, cpus="1", asr=args.models_elsewhere)
        procs, url = start_agent(**kwargs)
        for p in procs:
            pin(p.pid, "0")
        os.sched_setaffinity(0, {1})  # the clients beside the models, off the transceiver's core
    else:
        procs, url = start_agent()
    transceiver = procs[1].pid
    rows = []
    try:
        for n in [int(x) for x in args.calls.split(",")]:
            cpu0, me0, t0 = cpu_seconds([transceiver]), time.process_time(), time.monotonic()
            models0 = cpu_seconds(model_pids)
            results, asked = asyncio.run(calls(url, n, args.seconds, args.period, tmp))
            wall = time.monotonic() - t0
            cpu, mine = cpu_seconds([transceiver]) - cpu0, time.process_time() - me0
            models_cpu = cpu_seconds(model_pids) - models0
            turns, stages, failed = [], {}, [r for r in results if isinstance(r, BaseException)]
            statuses, heard = collections.Counter(), []
            for r in results:
                if isinstance(r, BaseException):
                    continue
                for e in r["events"]:
                    if e.get("type") == "response.done":
                        statuses[e["response"]["status"] + ":" + str((e["response"].get("status_details") or {})
                                                                       .get("reason"))] += 1
                    if e.get("type") == "conversation.item.input_audio_transcription.completed":
                        heard.append(e["transcript"])
                    if e.get("type") == "error":
                        print(f"           error on a call: {e['error']}", flush=True)
                    if e.get("type") == "response.done" and e["response"]["status"] == "completed":
                        t = (e["response"].get("voxgate") or {}).get("timing") or {}
                        if "speech_end_to_first_audio_sent" in t:
                            turns.append(t["speech_end_to_first_audio_sent"])
                            for stage in STAGES:
                                if f"speech_end_to_{stage}" in t:
                                    stages.setdefault(stage, []).append(t[f"speech_end_to_{stage}"])
            answered = sum(v for k, v in statuses.items() if k.startswith("completed") or k.endswith("turn_detected"))
            row = {"calls": n, "questions": asked, "answered": answered, "failed_calls": len(failed),
                   "median_ms": round(statistics.median(turns)) if turns else None,
                   "p90_ms": round(pct(turns, 0.9)) if turns else None,
                   "cpu_per_call_pct": round(100 * cpu / (n * wall), 1), "server_cpu_pct": round(100 * cpu / wall),
                   "clients_cpu_pct": round(100 * mine / wall),
                   "models_cpu_pct": round(100 * models_cpu / wall) if model_pids else None,
                   "stages_median_ms": {k: round(statistics.median(v)) for k, v in stages.items()},
                   "responses": dict(statuses), "turns_heard": len(heard), "heard": heard}
            rows.append(row)
            print(f"{n:3d} calls: {row['answered']:3d}/{asked} questions answered ({len(turns)} replies heard through, the "
                  f"rest cut short by the caller's next question), turn median {row['median_ms']} ms, "
                  f"p90 {row['p90_ms']} ms; transceiver {row['server_cpu_pct']} % of a core "
                  f"({row['cpu_per_call_pct']} % per call), clients {row['clients_cpu_pct']} %"
                  + (f", model servers {row['models_cpu_pct']} %" if model_pids else "")
                  + (f"; {len(failed)} calls failed: {failed[0]!r}" if failed else ""), flush=True)
            print("           stages, median ms from the end of speech: "
                  + ", ".join(f"{k} {v}" for k, v in row["stages_median_ms"].items())
                  + f"; {len(heard)} user turns; responses {dict(statuses)}", flush=True)
    finally:
        for p in procs:
            p.terminate()
            p.wait(10)
        if stop_models is not None:
            stop_models()
    ok = [r for r in rows if r["p90_ms"] is not None and r["p90_ms"] <= 1000 and not r["failed_calls"]
          and r["answered"] >= 0.9 * r["questions"]]
    cores = 1 if args.models_elsewhere else (os.cpu_count() or 1)  # elsewhere: the transceiver has one core
    if ok:
        best = max(ok, key=lambda r: r["calls"])
        print(f"\ncalls per core at p90 <= 1 s: {best['calls'] / cores:.1f} ({best['calls']} calls on {cores} cores)")
    else:
        print("\nno load kept the p90 turn under 1 s")
    if args.models_elsewhere and rows:
        per_call = statistics.median(r["cpu_per_call_pct"] for r in rows)
        print(f"the transceiver's own CPU per agent call, median over the loads: {per_call:.1f} % of a core -> "
              f"{100 / per_call:.0f} calls per core for the agent's box (LiveKit documents ~6)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"cores": cores, "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
