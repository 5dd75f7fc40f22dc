"""Barge-in in headless Chromium: real interruptions silence the agent at once, backchannels do not end its answer.

`voxgate transceiver --agent voice` (Moonshine; the scripted responder, so the reply is long and starts at once) behind
`voxgate relay`; Chromium's microphone (an espeak-ng voice, not the agent's) asks a question, waits while the agent
answers, then talks over it: a real interruption ("Wait, stop.") or a backchannel ("Mm-hmm.", "Yeah.", a laugh,
a cough). bench/browser.html taps the microphone and the remote track with AudioWorklets (each
128-sample block's peak and its context time) and stamps the data channel's events with the same clock:

- onset: the first loud block of the interruption on the microphone;
- speech_started: `input_audio_buffer.speech_started` arrives (the VAD's onset rule, the uplink, the data channel);
- cleared: `output_audio_buffer.cleared` arrives (the response cancelled, the server's queue dropped);
- silent: the last loud block of the agent on the remote track before a 300 ms silence (what was already sent,
  and what the browser's jitter buffer still held).

A backchannel is kept when the answer goes on: no second speech_started, no output_audio_buffer.cleared, the
response completed; "resumed" is the onset → the agent loud again (the time it held its audio, if it did).

    python bench/bargein.py [--rounds 1] [--only interrupt|backchannel]
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

VOICES = ["en-us+f3", "en+m3", "en-us+m2", "flite:slt"]  # espeak-ng and flite: none of them the agent's
LOUD, QUIET_MS = 0.05, 300
RATE = 22050
CLIPS = [("interrupt", "Wait, stop."), ("interrupt", "No, tell me about mountains instead."), ("interrupt", "Stop."),
         ("backchannel", "*mm-hm*"), ("backchannel", "Yeah."), ("backchannel", "Okay."), ("backchannel", "Uh-huh."),
         ("backchannel", "Ha ha ha."), ("backchannel", "*cough*")]


def cough() -> bytes:
    """Two bursts of band-limited noise with a fast attack, at a speaking level: a cough, as the VAD hears one."""
    import numpy as np

    rng = np.random.default_rng(3)
    out = []
    for ms in (140, 110):
        n = RATE * ms // 1000
        noise = np.convolve(rng.normal(0, 1, n), np.hanning(9), "same")  # darker than white noise
        env = np.minimum(1, np.arange(n) / (RATE * 0.01)) * np.exp(-np.arange(n) / (RATE * ms / 3000))
        out += [noise * env / np.max(np.abs(noise)) * 0.6, np.zeros(RATE * 70 // 1000)]
    return (np.concatenate(out) * 32767).astype(np.int16).tobytes()


def hum(f0: float) -> bytes:
    """"Mm-hm" as people say it, which no synthesizer does (espeak-ng and flite spell it out, "M. H. M."): a nasal
    hum (harmonics of ``f0`` under a low nasal resonance), a breath, and a second hum rising in pitch."""
    import numpy as np

    def voiced(ms, f_from, f_to):
        n = RATE * ms // 1000
        f = np.linspace(f_from, f_to, n)
        phase = 2 * np.pi * np.cumsum(f) / RATE
        out = np.zeros(n)
        for k in range(1, int(3000 / f_to)):
            freq = k * f.mean()
            gain = np.exp(-((freq - 250) / 180) ** 2) + 0.08 * np.exp(-((freq - 2200) / 300) ** 2) + 0.02
            out += gain / k ** 0.5 * np.sin(k * phase)
        env = np.minimum(1, np.minimum(np.arange(n), n - np.arange(n)) / (RATE * 0.03))
        return out * env

    rng = np.random.default_rng(5)
    breath = rng.normal(0, 0.05, RATE * 70 // 1000) * np.hanning(RATE * 70 // 1000)
    x = np.concatenate([voiced(230, f0, f0 * 0.95), breath, voiced(280, f0 * 0.95, f0 * 1.3)])
    return (x / np.max(np.abs(x)) * 0.5 * 32767).astype(np.int16).tobytes()


PITCH = {"en-us+f3": 210, "en+m3": 110, "en-us+m2": 130, "flite:slt": 190}


def say(text: str, voice: str) -> bytes:
    """``text`` spoken in ``voice`` (espeak-ng, or flite:NAME), mono s16 at RATE; ``*cough*`` and ``*mm-hm*`` are
    made, not spoken."""
    if text == "*cough*":
        return cough()
    if text == "*mm-hm*":
        return hum(PITCH.get(voice, 150))
    with tempfile.NamedTemporaryFile(suffix=".wav") as f, tempfile.NamedTemporaryFile(suffix=".wav") as g:
        if voice.startswith("flite:"):
            subprocess.run(["flite", "-voice", voice[6:], "-t", text, "-o", f.name], check=True)
        else:
            subprocess.run(["espeak-ng", "-v", voice, "-s", "160", "-w", f.name, text], check=True)
        subprocess.run(["sox", f.name, "-r", str(RATE), "-c", "1", "-b", "16", g.name], check=True)
        with wave.open(g.name, "rb") as w:
            return w.readframes(w.getnframes())


def mic_wav(path: str, voice: str, interjection: str = "Wait, stop.") -> float:
    """Silence, a question, 1.2 s (the agent starts answering), the interjection, silence; returns when the
    interjection starts (s)."""
    rate = RATE
    q, stop = say("What can you tell me about the sea?", voice), say(interjection, voice)
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


def interjection_onset(result: dict) -> float | None:
    """The first loud microphone block after the agent began speaking (ms, the page's clock)."""
    agent_on = next((t for t, p in result["remote"] if p > LOUD), None)
    return next((t for t, p in result["mic"] if agent_on and t > agent_on and p > LOUD), None)


def kept(result: dict) -> dict:
    """A backchannel's outcome: was the answer kept, and how long was the agent held silent?"""
    remote, events = result["remote"], [row[:2] for row in result["events"]]  # (time, type): the rest is payload
    onset = interjection_onset(result)
    if onset is None:
        return {"landed": False}
    after = [e for t, e in events if t > onset - 50]
    started = sum(e == "input_audio_buffer.speech_started" for e in after)
    cut = "output_audio_buffer.cleared" in after or started > 0
    last_loud, quiet_from, resumed = None, None, None
    for t, p in remote:
        if t < onset:
            continue
        if p > LOUD:
            if quiet_from is not None:
                resumed = t
                break
            last_loud = t
        elif last_loud is not None and quiet_from is None and t - last_loud >= QUIET_MS:
            quiet_from = last_loud
    landed = any(onset - 300 <= t <= onset and p > LOUD for t, p in remote)
    return {"landed": landed, "kept": not cut, "held": quiet_from is not None,
            "resumed": round(resumed - onset, 1) if resumed is not None else None}


def parts(result: dict) -> dict:
    """A real interruption's outcome: did it interrupt (a second speech_started, output_audio_buffer.cleared), and,
    when it began while the agent was loud, how long until each part (else ``landed`` is False: the agent was
    between two words, and the silence is not the barge-in's)."""
    remote, events = result["remote"], [row[:2] for row in result["events"]]  # (time, type): the rest is payload
    started = [t for t, e in events if e == "input_audio_buffer.speech_started"]
    cleared = [t for t, e in events if e == "output_audio_buffer.cleared"]
    onset = interjection_onset(result)
    if onset is None:
        return {"interrupted": False, "landed": False}
    interrupted = any(t > onset - 50 for t in started) and any(t > onset - 50 for t in cleared)
    if not interrupted or not any(onset - 100 <= t <= onset and p > LOUD for t, p in remote):
        return {"interrupted": interrupted, "landed": False}
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
        return {"interrupted": True, "landed": False}
    s = next(t for t in started if t > onset - 50)
    c = next(t for t in cleared if t > onset - 50)
    return {"interrupted": True, "landed": True, "speech_started": round(s - onset, 1), "cleared": round(c - onset, 1),
            "silent": round(silent - onset, 1)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--only", choices=("interrupt", "backchannel"))
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    from voxgate.lab.chromium import launch

    tmp = tempfile.mkdtemp(prefix="voxgate-bargein-")
    server, page_port = serve_dir()
    procs, url = start_servers()
    rows, backchannels = [], []
    clips = [c for c in CLIPS if args.only in (None, c[0])]
    try:
        with sync_playwright() as p:
            for rnd in range(args.rounds):
                for kind, text in clips:
                    for voice in VOICES:
                        wav = os.path.join(tmp, "mic.wav")
                        at = mic_wav(wav, voice, text)
                        browser = launch(p, f"{wav}%noloop")
                        page = browser.new_page()
                        page.goto(f"http://127.0.0.1:{page_port}/browser.html")
                        page.evaluate(f"run({url!r})")
                        time.sleep(at + 3.0)
                        result = page.evaluate("window.result")
                        browser.close()
                        if kind == "interrupt":
                            r = parts(result)
                            print(f"round {rnd + 1} {voice:9s} {text!r:40s}: {r}", flush=True)
                            rows.append(r)
                        else:
                            r = kept(result)
                            print(f"round {rnd + 1} {voice:9s} {text!r:40s}: {r}", flush=True)
                            if r["landed"]:
                                backchannels.append((text, r))
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)
        server.shutdown()
    if rows:
        print(f"\nreal interruptions: {sum(r['interrupted'] for r in rows)}/{len(rows)} interrupted the agent; timed "
              f"where they began while it was loud (not between two of its words):")
        rows = [r for r in rows if r["landed"]]
    if rows:
        for key, what in (("speech_started", "speech_started arrives (VAD onset rule + uplink)"),
                          ("cleared", "output_audio_buffer.cleared arrives"),
                          ("silent", "the agent is silent in the browser")):
            v = sorted(r[key] for r in rows)
            print(f"onset -> {what:50s} median {statistics.median(v):6.1f} ms  (min {v[0]:.1f}, max {v[-1]:.1f}, "
                  f"n={len(v)})")
    if backchannels:
        n = len(backchannels)
        ok = sum(r["kept"] for _, r in backchannels)
        held = [r["resumed"] for _, r in backchannels if r["kept"] and r["resumed"] is not None]
        print(f"\nbackchannels over the agent: {ok}/{n} answers kept ({100 * ok / n:.0f} %)")
        for text in dict.fromkeys(t for t, _ in backchannels):
            mine = [r for t, r in backchannels if t == text]
            print(f"  {text!r:14s} kept {sum(r['kept'] for r in mine)}/{len(mine)}")
        if held:
            print(f"  when held, the agent resumed {statistics.median(held):.0f} ms after the onset (median; "
                  f"max {max(held):.0f})")


if __name__ == "__main__":
    main()
