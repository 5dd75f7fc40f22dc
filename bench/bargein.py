"""Barge-in in headless Chromium: from the user's first syllable over the agent to the agent's silence, in parts.

`voxgate transceiver --agent voice` (Moonshine; the scripted responder, so the reply is long and starts at once) behind
`voxgate relay`; Chromium's microphone (an espeak-ng voice, not the agent's) asks a question, waits while the agent
answers, then talks over it. bench/bargein.html taps the microphone and the remote track with AudioWorklets (each
128-sample block's peak and its context time) and stamps the data channel's events with the same clock:

- onset: the first loud block of the interruption on the microphone;
- speech_started: `input_audio_buffer.speech_started` arrives (the VAD's onset rule, the uplink, the data channel);
- cleared: `output_audio_buffer.cleared` arrives (the response cancelled, the server's queue dropped);
- silent: the last loud block of the agent on the remote track before a 300 ms silence (what was already sent,
  and what the browser's jitter buffer still held).

    python bench/bargein.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import wave

from common import SRC, free_port, serve_dir  # first: it puts src/ on the path

from voxgate.wire.token import new_secret_line

VOICES = ["en-us+f3", "en+m3", "en-us+m2"]
LOUD, QUIET_MS = 0.05, 300


def mic_wav(path: str, voice: str) -> float:
    """Silence, a question, 1.2 s (the agent starts answering), the interruption, silence; returns when the interruption
    starts (s)."""
    def say(text):
        with tempfile.NamedTemporaryFile(suffix=".wav") as f:
            subprocess.run(["espeak-ng", "-v", voice, "-s", "160", "-w", f.name, text], check=True)
            with wave.open(f.name, "rb") as w:
                return w.getframerate(), w.readframes(w.getnframes())

    rate, q = say("What can you tell me about the sea?")
    _, stop = say("Wait, stop.")
    gap = lambda s: b"\0\0" * int(s * rate)  # noqa: E731
    audio = gap(1.0) + q + gap(1.2) + stop + gap(4.0)
    with wave.open(path, "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(rate)
        w.writeframes(audio)
    return (len(gap(1.0) + q + gap(1.2)) / 2) / rate


def start_servers():
    env = {**os.environ, "PYTHONPATH": SRC, "VOXGATE_SECRET": new_secret_line()}
    relay, http = free_port(), free_port()
    procs = [subprocess.Popen([sys.executable, "-m", "voxgate", "--log-level", "WARNING", "relay", "--listen",
                               f"127.0.0.1:{relay}", "--workers", "1"], stdout=subprocess.PIPE, text=True, env=env)]
    json.loads(procs[-1].stdout.readline())
    procs.append(subprocess.Popen([sys.executable, "-m", "voxgate", "--log-level", "WARNING", "transceiver", "--http",
                                   f"127.0.0.1:{http}", "--media", f"127.0.0.1:{free_port()}", "--relay",
                                   f"127.0.0.1:{relay}", "--no-auth", "--agent", "voice", "--responder", "scripted", "--asr", "auto",
                                   "--drain-timeout", "0"], stdout=subprocess.PIPE, text=True, env=env))
    json.loads(procs[-1].stdout.readline())
    return procs, f"http://127.0.0.1:{http}"


def parts(result: dict) -> dict | None:
    mic, remote, events = result["mic"], result["remote"], result["events"]
    started = [t for t, e in events if e == "input_audio_buffer.speech_started"]
    cleared = [t for t, e in events if e == "output_audio_buffer.cleared"]
    if len(started) < 2 or not cleared:
        return None  # the interruption did not land while the agent spoke
    # the interruption's onset: the first loud microphone block after the agent began speaking
    agent_on = next((t for t, p in remote if p > LOUD), None)
    onset = next((t for t, p in mic if agent_on and t > agent_on and p > LOUD), None)
    if onset is None or not any(onset - 100 <= t <= onset and p > LOUD for t, p in remote):
        return None  # the agent was not speaking when the user began (its reply had ended)
    last_loud, silent = None, None
    for t, p in remote:
        if t < onset:
            continue
        if p > LOUD:
            last_loud = t
        elif last_loud is not None and t - last_loud >= QUIET_MS:
            silent = last_loud
            break
    if silent is None:
        return None
    s = next(t for t in started if t > onset - 50)
    c = next(t for t in cleared if t > onset - 50)
    return {"speech_started": round(s - onset, 1), "cleared": round(c - onset, 1), "silent": round(silent - onset, 1)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    from voxgate.lab.chromium import launch

    tmp = tempfile.mkdtemp(prefix="voxgate-bargein-")
    server, page_port = serve_dir()
    procs, url = start_servers()
    rows = []
    try:
        with sync_playwright() as p:
            for rnd in range(args.rounds):
                for voice in VOICES:
                    wav = os.path.join(tmp, f"{voice}.wav")
                    at = mic_wav(wav, voice)
                    browser = launch(p, f"{wav}%noloop")
                    page = browser.new_page()
                    page.goto(f"http://127.0.0.1:{page_port}/bargein.html")
                    page.evaluate(f"run({url!r})")
                    time.sleep(at + 3.0)
                    result = page.evaluate("window.result")
                    browser.close()
                    r = parts(result)
                    print(f"round {rnd + 1} {voice:9s}: {r if r else 'the interruption missed the reply'}", flush=True)
                    if r:
                        rows.append(r)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)
        server.shutdown()
    if rows:
        print()
        for key, what in (("speech_started", "speech_started arrives (VAD onset rule + uplink)"),
                          ("cleared", "output_audio_buffer.cleared arrives"),
                          ("silent", "the agent is silent in the browser")):
            v = sorted(r[key] for r in rows)
            print(f"onset -> {what:50s} median {statistics.median(v):6.1f} ms  (min {v[0]:.1f}, max {v[-1]:.1f}, "
                  f"n={len(v)})")


if __name__ == "__main__":
    main()
