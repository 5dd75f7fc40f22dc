"""Turn latency of the voice agent, partial inference on and off, side by side, over a set of utterances.

Runs the agent in-process on the embedded stack (webrtcvad, PocketSphinx, SmolLM2 if installed else the
scripted responder, Piper) behind ``LocalCall``, which paces input and output on 20 ms clocks like the
transceiver. Each utterance (spoken by the embedded TTS) is played in real time with 1.5 s of trailing
silence; both modes run on the same utterance back to back. Latencies are taken from each response's
``voxgate_timing_ms``: from the end of the turn (``speech_stopped``, emitted silence_duration_ms after the
user's last speech frame) to the final transcript, first token, first TTS audio and first audio packet sent.

    python bench/turns.py [--responder auto|scripted|smollm2] [--asr pocketsphinx|moonshine] [--rounds 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics

import common  # noqa: F401  (first: it puts src/ on the path)

from voxgate.agent import load_agent
from voxgate.agent.harness import LocalCall
from voxgate.agent.stages import PiperTts
from voxgate.wire.pcm import Resampler

UTTERANCES = [
    "What is the weather like today?",
    "Can you tell me a fun fact about cats?",
    "Hello there.",
    "How far away is the moon?",
    "Please recommend a good book to read.",
    "What time does the store close tonight?",
]
STAGES = ["final_transcript", "first_token", "first_tts_audio", "first_audio_sent"]


async def one_turn(agent, speech: bytes, partial: bool) -> dict:
    prime = getattr(agent.stack.responder, "prime", None)
    if prime:  # every turn starts from the same cache state: the system prompt evaluated, nothing else
        await asyncio.to_thread(prime, agent.stack.instructions)
    call = LocalCall(16000)
    call.start_clock()
    task = asyncio.ensure_future(agent.run(call))
    call.push_event({"type": "session.update", "session": {"voxgate": {"partial_inference": partial}}})
    silence = b"\0" * 640
    frames = [silence] * 15 + [speech[i:i + 640] for i in range(0, len(speech) - 639, 640)] + [silence] * 75
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    for i, f in enumerate(frames):
        call.push_audio(f)
        await asyncio.sleep(max(0.0, t0 + (i + 1) * 0.02 - loop.time()))
    for _ in range(200):
        if call.events_of("response.done"):
            break
        await asyncio.sleep(0.05)
    call.end()
    await asyncio.wait_for(task, 10)
    done = call.events_of("response.done")
    if not done:
        raise RuntimeError("no response")
    t = done[0]["response"]["voxgate_timing_ms"]
    t["transcript"] = call.events_of("conversation.item.input_audio_transcription.completed")[0]["transcript"]
    return t


async def main_async(args):
    print("loading the embedded stack:")
    agent = load_agent("voice", responder=args.responder, asr=args.asr)
    print(f"responder: {agent.stack.responder.name}")
    tts = PiperTts(varied=False)
    speeches = [Resampler(tts.rate, 16000)(b"".join(tts.synthesize(u))) for u in UTTERANCES]
    rows = []
    for rnd in range(args.rounds):
        for u, speech in zip(UTTERANCES, speeches):
            for partial in ((True, False) if rnd % 2 == 0 else (False, True)):
                t = await one_turn(agent, speech, partial)
                t.update(utterance=u, partial=partial)
                rows.append(t)
                print(f"{'on ' if partial else 'off'} {u[:38]:38s} -> first audio sent "
                      f"{t.get('turn_end_to_first_audio_sent', float('nan')):6.1f} ms "
                      f"(transcript {t.get('turn_end_to_final_transcript', 0):5.1f}, token "
                      f"{t.get('turn_end_to_first_token', 0):5.1f}, tts {t.get('turn_end_to_first_tts_audio', 0):5.1f})"
                      f"{'' if t['committed'] or not partial else '  [speculation not used]'}", flush=True)
    print()
    print(f"medians over {len(UTTERANCES) * args.rounds} turns, ms after the end of the turn:")
    print(f"{'stage':18s} {'partial on':>11s} {'partial off':>12s}")
    summary = {}
    for stage in STAGES:
        key = f"turn_end_to_{stage}"
        on = statistics.median(r.get(key, 0.0) for r in rows if r["partial"])
        off = statistics.median(r.get(key, 0.0) for r in rows if not r["partial"])
        summary[stage] = {"on": on, "off": off}
        print(f"{stage:18s} {on:11.1f} {off:12.1f}")
    on, off = summary["first_audio_sent"]["on"], summary["first_audio_sent"]["off"]
    committed = sum(1 for r in rows if r["partial"] and r["committed"])
    print(f"\npartial inference: first audio {on:.0f} ms vs {off:.0f} ms -> {(1 - on / off) * 100:.0f} % faster; "
          f"{committed}/{sum(1 for r in rows if r['partial'])} speculations committed")
    end_on = statistics.median(r["speech_end_to_first_audio_sent"] for r in rows if r["partial"])
    end_off = statistics.median(r["speech_end_to_first_audio_sent"] for r in rows if not r["partial"])
    print(f"from the last speech frame (adds silence_duration_ms = 500): {end_on:.0f} ms vs {end_off:.0f} ms")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"rows": rows, "summary": summary}, fh, indent=1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--responder", default="auto")
    ap.add_argument("--asr", default="pocketsphinx", choices=("pocketsphinx", "moonshine", "auto"))
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--json")
    asyncio.run(main_async(ap.parse_args()))


if __name__ == "__main__":
    main()
