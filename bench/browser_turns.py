"""The turn a person waits for, measured in headless Chromium: end of their speech -> the first reply audio heard.

`voxgate transceiver --agent voice` (the embedded stack: Moonshine, SmolLM2, the Piper voice) behind `voxgate relay`,
as `voxgate demo` runs them. Chromium's microphone asks questions in voices the agent never uses (espeak-ng and
flite), a few per call with long silences between them; the page (bench/browser.html) sends the session the
official SDKs send (`semantic_vad`, eagerness auto) and taps the microphone and the remote track with AudioWorklets,
stamping the data channel's events on the same clock (the AudioContext's).

Per question, on the browser's clock:
- end of speech: the last loud microphone block before the question's trailing silence;
- heard: the first loud block of the remote track after it (what the user hears, jitter buffer and all);
- the stages between, as the page saw them arrive: `speech_stopped` (the end of the turn), `response.created`,
  the first transcript delta, `output_audio_buffer.started`; and the server's own breakdown from the response's
  `voxgate.timing`.

A sentence with a 0.7 s pause in the middle ("Set a timer for ... twenty minutes, please.") is also asked in each
call: it must stay one turn (`--pauses 0` leaves it out).

``--models-elsewhere``: the same, with the three stages in other processes on loopback (faster-whisper-server with
Whisper tiny.en, llama.cpp's server with SmolLM2, another voxgate's /v1/audio/speech: ``common.models_elsewhere``),
for the turn with each stage remote against the embedded stack; both on this machine's two cores (``--remote-asr box``:
the recognizer is another voxgate's Moonshine by HTTP instead).

    python bench/browser_turns.py [--rounds 1] [--voices en-us+f3,en+m3,...] [--models-elsewhere] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
import wave

from common import models_elsewhere, serve_dir, start_agent  # first: it puts src/ on the path

from bargein import RATE, say

VOICES = ["en-us+f3", "en+m3", "en-us+m2", "flite:slt", "flite:rms", "en-gb-x-rp+f4"]
QUESTIONS = [
    "What is the capital of France?", "How many legs does a spider have?", "Can you recommend a good book?",
    "Why is the sky blue?", "What should I cook for dinner tonight?", "How far away is the moon?",
    "What is your favorite color?", "Tell me a fun fact about octopuses.", "How do I make a cup of tea?",
    "What time is it in Tokyo?", "Is it going to rain tomorrow?", "What's a good name for a dog?",
]
PAUSED = ("Set a timer for", "twenty minutes, please.")
LOUD = 0.03  # a block this loud is speech (the page's peaks are in [0, 1])
GAP_S = 9.0  # silence after each question: the answer is heard whole before the next one
SESSION = {"type": "realtime", "audio": {"input": {"turn_detection": {"type": "semantic_vad"}}}}


def mic_wav(path: str, voice: str, questions: list[str], paused: bool) -> list[tuple[str, float, float]]:
    """1 s of silence, then each question followed by GAP_S of silence (the paused sentence last, its two halves
    0.7 s apart); returns (text, start s, end s) per question, as written in the file."""
    gap = lambda s: b"\0\0" * int(s * RATE)  # noqa: E731
    audio, spans = gap(1.0), []
    items = [(q, say(q, voice)) for q in questions]
    if paused:
        items.append((" ... ".join(PAUSED), say(PAUSED[0], voice) + gap(0.7) + say(PAUSED[1], voice)))
    for text, pcm in items:
        start = len(audio) / 2 / RATE
        audio += pcm
        spans.append((text, start, len(audio) / 2 / RATE))
        audio += gap(GAP_S)
    with wave.open(path, "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(RATE)
        w.writeframes(audio)
    return spans


def speech_spans(blocks: list, quiet_ms: float = 1500.0) -> list[tuple[float, float]]:
    """Loud stretches of a level track [(t ms, peak)], split where it stays quiet ``quiet_ms``."""
    spans, start, last = [], None, None
    for t, p in blocks:
        if p <= LOUD:
            continue
        if start is None or t - last > quiet_ms:
            if start is not None:
                spans.append((start, last))
            start = t
        last = t
    if start is not None:
        spans.append((start, last))
    return spans


def turns(result: dict, n: int) -> list[dict]:
    """Per question (the microphone's loud stretches, in order): the end of its speech, when the reply was first
    heard, and when each stage's event arrived, all from the end of speech (ms)."""
    mic = speech_spans(result["mic"])
    remote, events = result["remote"], result["events"]
    rows = []
    for i, (start, end) in enumerate(mic[:n]):
        nxt = mic[i + 1][0] if i + 1 < len(mic) else float("inf")
        row = {"end": end}
        playing = any(end - 300 <= t <= end and p > LOUD for t, p in remote)  # the previous answer still playing
        heard = next((t for t, p in remote if end < t < nxt and p > LOUD), None)
        row["heard"] = None if heard is None or playing else round(heard - end, 1)
        mine = [e for e in events if start < e[0] < nxt]
        for name, key in (("input_audio_buffer.speech_stopped", "speech_stopped"),
                          ("response.created", "response_created"),
                          ("response.output_audio_transcript.delta", "first_delta"),
                          ("output_audio_buffer.started", "audio_started")):
            t = next((e[0] for e in mine if e[1] == name), None)
            row[key] = None if t is None else round(t - end, 1)
        row["turns"] = sum(e[1] == "input_audio_buffer.speech_stopped" for e in mine)
        said = [e[2] for e in mine if e[1] == "conversation.item.input_audio_transcription.completed"]
        row["transcript"] = said[0] if said else None
        # this question's response: the first created after its speech; its events may come after the next question
        rid = next((e[3] for e in mine if e[1] == "response.created"), None)
        answers = [e[2] for e in events if e[1] == "response.output_audio_transcript.done" and e[3] == rid]
        row["answer"] = answers[0] if answers else None
        done = [e[2] for e in events if e[1] == "response.done" and e[3] == rid]
        row["server"] = (done[0] or {}).get("timing") if done else None
        row["status"] = (done[0] or {}).get("status") if done else None
        live_in = [e for e in mine if e[1] == "session.input_transcript.delta"]
        if live_in:  # a GPT-Live session: one input delta per turn, the voice's words as output deltas
            row["turns"] = len(live_in)
            row["transcript"] = live_in[0][2]
            out = [e for e in mine if e[1] == "session.output_transcript.delta"]
            row["first_delta"] = round(out[0][0] - end, 1) if out else None
            row["answer"] = "".join(e[2] or "" for e in out).strip() or None
        rows.append(row)
    return rows


def pct(values: list[float], q: float) -> float:
    v = sorted(values)
    return v[min(len(v) - 1, int(round(q * (len(v) - 1))))]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--voices", default=",".join(VOICES))
    ap.add_argument("--per-call", type=int, default=2, help="questions per call")
    ap.add_argument("--pauses", type=int, default=1, help="1: each call also says the sentence with a 0.7 s pause")
    ap.add_argument("--responder", default="auto")
    ap.add_argument("--asr", default="auto")
    ap.add_argument("--models-elsewhere", action="store_true", help="ASR, language model and voice by URL")
    ap.add_argument("--remote-asr", default="whisper", choices=("whisper", "box"),
                    help="with --models-elsewhere: faster-whisper-server, or another voxgate's Moonshine")
    ap.add_argument("--api", default="realtime", choices=("realtime", "live"),
                    help="live: the calls are GPT-Live sessions (POST /v1/live/sessions); the first audio heard is "
                         "the voice's (its answer to small talk, or its acknowledgement of a delegated question)")
    ap.add_argument("--json")
    ap.add_argument("--server-log", help="the transceiver's INFO log (each response's stage marks) to this file")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    from voxgate.lab.chromium import launch

    tmp = tempfile.mkdtemp(prefix="voxgate-turns-")
    server, page_port = serve_dir()
    stop_models = None
    if args.models_elsewhere:
        _, kwargs, stop_models = models_elsewhere(tmp, asr=args.remote_asr)
        procs, url = start_agent(log=args.server_log, **kwargs)
    else:
        procs, url = start_agent(args.responder, args.asr, args.server_log)
    rows, paused_rows, k = [], [], 0
    try:
        with sync_playwright() as p:
            for rnd in range(args.rounds):
                for voice in args.voices.split(","):
                    questions = [QUESTIONS[(k + j) % len(QUESTIONS)] for j in range(args.per_call)]
                    k += args.per_call
                    wav = os.path.join(tmp, "mic.wav")
                    spans = mic_wav(wav, voice, questions, bool(args.pauses))
                    browser = launch(p, f"{wav}%noloop")
                    page = browser.new_page()
                    page.goto(f"http://127.0.0.1:{page_port}/browser.html")
                    session = {"model": "gpt-live-1"} if args.api == "live" else SESSION
                    page.evaluate(f"run({url!r}, {json.dumps(session)}, {json.dumps(args.api)})")
                    time.sleep(spans[-1][2] + GAP_S - 1.0)
                    result = page.evaluate("window.result")
                    browser.close()
                    for (text, _, _), row in zip(spans, turns(result, len(spans))):
                        row.update(voice=voice, question=text)
                        is_paused = text.startswith(PAUSED[0])
                        (paused_rows if is_paused else rows).append(row)
                        srv = row["server"] or {}
                        print(f"round {rnd + 1} {voice:14s} {text[:38]!r:41s} heard {row['heard']!s:>6} ms "
                              f"(stopped {row['speech_stopped']!s:>6}, created {row['response_created']!s:>6}, "
                              f"delta {row['first_delta']!s:>6}, started {row['audio_started']!s:>6}; "
                              f"spec {srv.get('committed')}, {row['status']}) turns {row['turns']} "
                              f"heard as {row['transcript']!r} -> {(row['answer'] or '')[:60]!r}", flush=True)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)
        if stop_models is not None:
            stop_models()
        server.shutdown()
    heard = [r["heard"] for r in rows if r["heard"] is not None]
    print(f"\n{len(heard)}/{len(rows)} questions answered and timed ({len(args.voices.split(','))} voices, "
          f"{args.rounds} round(s))")
    if heard:
        print(f"end of speech -> first reply audio heard in Chromium: median {statistics.median(heard):.0f} ms, "
              f"p90 {pct(heard, 0.9):.0f} ms (min {min(heard):.0f}, max {max(heard):.0f})")
        print("stage, as the page saw it (median ms from the end of speech):")
        for key in ("speech_stopped", "response_created", "first_delta", "audio_started", "heard"):
            v = [r[key] for r in rows if r[key] is not None]
            if v:
                print(f"  {key:18s} {statistics.median(v):7.0f}  (p90 {pct(v, 0.9):.0f}, n={len(v)})")
        server_rows = [r["server"] for r in rows if r["server"]]
        keys = sorted({k for s in server_rows for k, v in s.items() if isinstance(v, (int, float))
                       and not isinstance(v, bool)})
        if keys:
            print("the server's voxgate.timing (median ms):")
            for key in keys:
                v = [s[key] for s in server_rows if key in s]
                print(f"  {key:40s} {statistics.median(v):7.0f}  (n={len(v)})")
            print(f"  speculation committed: {sum(bool(s.get('committed')) for s in server_rows)}/{len(server_rows)}")
    if paused_rows:
        one = sum(r["turns"] == 1 for r in paused_rows)
        print(f"\nthe sentence with a 0.7 s pause stayed one turn: {one}/{len(paused_rows)}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"questions": rows, "paused": paused_rows}, fh, indent=1)


if __name__ == "__main__":
    main()
