"""Turn latency of the voice agent, partial inference on and off, side by side, over a set of utterances.

Runs the agent in-process on the embedded stack (webrtcvad, PocketSphinx, SmolLM2 if installed else the
scripted responder, Piper) behind ``LocalCall``, which paces input and output on 20 ms clocks like the
transceiver. Each utterance (spoken by the embedded TTS) is played in real time with 1.5 s of trailing
silence; both modes run on the same utterance back to back. Latencies are taken from each response's
``voxgate.timing``: from the end of the turn (``speech_stopped``, emitted silence_duration_ms after the
user's last speech frame) to the final transcript, first token, first TTS audio and first audio packet sent.

    python bench/turns.py [--responder auto|scripted|smollm2] [--asr pocketsphinx|moonshine] [--rounds 1] [--json out.json]

``--compare vad``: the end of the turn, ``server_vad`` (500 ms of silence) against ``semantic_vad`` (eagerness
auto), side by side on the same audio, in voices the agent does not use (three espeak-ng voices, two of flite's). Measured from
the last speech frame of the input (known from the audio, not from the VAD) to the first reply packet sent, over
complete questions; and over sentences with a 0.7 s pause in the middle ("Set a timer for … twenty minutes,
please."), whether the agent cut in (committed a turn before the sentence was finished).

    python bench/turns.py --compare vad [--asr moonshine] [--responder auto]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics

import common  # noqa: F401  (first: it puts src/ on the path)

from voxgate.agent import load_agent
from voxgate.lab.harness import LocalCall
from voxgate.agent.models.piper import PiperTts
from voxgate.audio import Resampler

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
    t = done[0]["response"]["voxgate"]["timing"]
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


COMPLETE = ["What is the capital of France?", "Can you tell me a fun fact about cats?", "How far away is the moon?",
            "What time does the store close tonight?", "Please recommend a good book to read.",
            "Is it going to rain tomorrow?"]
PAUSED = [("Set a timer for", "twenty minutes, please."), ("I would like to book a table for", "two people at eight."),
          ("Remind me to call", "my mother tomorrow."), ("What is the weather like in", "Paris today?"),
          ("Play some music by", "the Beatles."), ("Can you tell me how to get to", "the train station?"),
          ("Add milk and eggs to", "my shopping list."), ("Turn off the lights in", "the kitchen."),
          ("Send a message to", "John saying I am late."), ("How many calories are in", "a banana?")]
VOICES = ["en-us+f3", "en+m3", "flite:slt", "en-us+m2", "flite:awb"]  # espeak-ng's and flite's: none is the agent's
MODES = {"server_vad": {"type": "server_vad"}, "semantic_vad": {"type": "semantic_vad", "eagerness": "auto"}}


def espeak(text: str, voice: str) -> bytes:
    """``text`` in an espeak-ng voice (or ``flite:NAME``), 16 kHz, without the silence the synthesizer puts around
    it (so a pause placed between two parts is as long as it says)."""
    import subprocess
    import tempfile
    import wave

    with tempfile.NamedTemporaryFile(suffix=".wav") as f:
        if voice.startswith("flite:"):
            cmd = ["flite", "-voice", voice[6:], "-t", text, "-o", f.name]
        else:
            cmd = ["espeak-ng", "-v", voice, "-s", "160", "-w", f.name, text]
        subprocess.run(cmd, check=True, capture_output=True)
        with wave.open(f.name, "rb") as w:
            rate, pcm = w.getframerate(), w.readframes(w.getnframes())
    pcm = Resampler(rate, 16000)(pcm)
    frames = [pcm[i:i + 640] for i in range(0, len(pcm) - 639, 640)]
    levels = [max(abs(v) for v in memoryview(f).cast("h")) for f in frames]
    loud = [i for i, v in enumerate(levels) if v > 0.02 * max(levels)]
    return b"".join(frames[loud[0]:loud[-1] + 1])


async def vad_turn(agent, parts: list, td: dict) -> dict:
    """Play ``parts`` (PCM, or seconds of silence) then silence; the first reply packet after the last speech frame,
    and whether a turn was committed before it."""
    prime = getattr(agent.stack.responder, "prime", None)
    if prime:
        await asyncio.to_thread(prime, agent.stack.instructions)
    call = LocalCall(16000)
    call.start_clock()
    task = asyncio.ensure_future(agent.run(call))
    call.push_event({"type": "session.update", "session": {"audio": {"input": {"turn_detection": td}}}})
    silence = b"\0" * 640
    frames = [silence] * 15
    for p in parts:
        frames += [silence] * int(p * 50) if isinstance(p, float) else [p[i:i + 640] for i in range(0, len(p) - 639, 640)]
    # the last frame with speech in it (espeak-ng ends its files with silence of its own)
    levels = [max(abs(v) for v in memoryview(f).cast("h")) for f in frames]
    last_speech = max(i for i, v in enumerate(levels) if v > 0.02 * max(levels))
    frames += [silence] * 250  # 5 s: longer than any wait but semantic_vad low's
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    t_last, cut = None, False
    for i, f in enumerate(frames):
        call.push_audio(f)
        await asyncio.sleep(max(0.0, t0 + (i + 1) * 0.02 - loop.time()))
        if i == last_speech:
            t_last = loop.time()
            cut = bool(call.events_of("input_audio_buffer.committed"))
        if i > last_speech and call.sent_log and call.sent_log[-1][0] > t_last + 0.1:
            break
    call.end()
    await asyncio.wait_for(task, 10)
    sent = [t for t, _ in call.sent_log if t > t_last]
    transcripts = [e["transcript"] for e in call.events_of("conversation.item.input_audio_transcription.completed")]
    return {"cut": cut, "latency_ms": round((sent[0] - t_last) * 1000, 1) if sent else None,
            "transcripts": transcripts}


async def compare_vad(args):
    print("loading the embedded stack:")
    agent = load_agent("voice", responder=args.responder, asr=args.asr)
    print(f"responder: {agent.stack.responder.name}, recognizer: {agent.stack.asr_name}")
    rows = []
    for rnd in range(args.rounds):
        for k, voice in enumerate(VOICES):
            for q in COMPLETE:
                speech = espeak(q, voice)
                for mode in (MODES if (rnd + k) % 2 == 0 else dict(reversed(list(MODES.items())))):
                    r = await vad_turn(agent, [speech], MODES[mode])
                    rows.append({"kind": "complete", "mode": mode, "voice": voice, "text": q, **r})
                    print(f"{mode:13s} {voice:9s} {q[:40]:40s} first reply packet {r['latency_ms']} ms "
                          f"{r['transcripts']}", flush=True)
        for k, (a, b) in enumerate(PAUSED):
            voice = VOICES[k % len(VOICES)]
            parts = [espeak(a, voice), 0.7, espeak(b, voice)]
            for mode in MODES:
                r = await vad_turn(agent, parts, MODES[mode])
                rows.append({"kind": "paused", "mode": mode, "voice": voice, "text": f"{a} … {b}", **r})
                print(f"{mode:13s} {voice:9s} {a + ' … ' + b:48s} {'CUT IN' if r['cut'] else 'waited'} "
                      f"{r['transcripts']}", flush=True)
    print()
    for mode in MODES:
        lat = [r["latency_ms"] for r in rows if r["mode"] == mode and r["kind"] == "complete" and r["latency_ms"]]
        paused = [r for r in rows if r["mode"] == mode and r["kind"] == "paused"]
        print(f"{mode:13s}: last speech frame -> first reply packet, complete questions: median "
              f"{statistics.median(lat):.0f} ms (p90 {sorted(lat)[int(0.9 * (len(lat) - 1))]:.0f}, n={len(lat)}); "
              f"0.7 s pauses not cut: {sum(not r['cut'] for r in paused)}/{len(paused)}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--responder", default="auto")
    ap.add_argument("--asr", default="pocketsphinx", choices=("pocketsphinx", "moonshine", "auto"))
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--json")
    ap.add_argument("--compare", choices=("partial", "vad"), default="partial",
                    help="partial: partial inference on/off (server_vad); vad: server_vad vs semantic_vad")
    args = ap.parse_args()
    asyncio.run(compare_vad(args) if args.compare == "vad" else main_async(args))


if __name__ == "__main__":
    main()
