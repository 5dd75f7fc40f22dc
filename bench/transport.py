"""The transport's share of a turn: microphone -> server -> speaker in headless Chromium, voxgate vs plain aiortc, and
voxgate's Realtime WebSocket beside them.

Both servers run an echo: voxgate (`voxgate transceiver --agent echo`, behind `voxgate relay`) and plain aiortc
(bench/aiortc_server.py, the incoming track sent back). Chromium (Debian's package, via Playwright) plays a WAV of
short 1 kHz bursts as its microphone; bench/transport.html taps the microphone track and the remote track with
AudioWorklets and records the onset of every burst on each. The round trip per burst is remote onset - mic onset:
capture, encode, network, the server's receive path and echo, its send path, the browser's jitter buffer and decode.
That is the part of a turn the transport adds, browser to server and back, with no model in it.

The WebSocket run (``websocket``) is the same page and taps over ``GET /v1/realtime`` of the same transceiver: the
microphone's samples go up as 20 ms ``input_audio_buffer.append`` messages (PCM16 24 kHz, base64 JSON), the echo
comes back as ``response.output_audio.delta`` and is played the moment it arrives: TCP and no jitter buffer, so
what it adds is capture, JSON and base64 both ways, and the echo's resampling.

    python bench/transport.py [--seconds 12]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import wave

from common import HERE, SRC, free_port, serve_dir  # first: it puts src/ on the path

from voxgate.wire.token import new_secret_line


def bursts(path: str, seconds: float):
    rate = 48000
    frames = bytearray()
    for k in range(int(seconds * rate)):
        t = k / rate
        on = (t % 1.0) < 0.15 and t > 0.5
        frames += struct.pack("<h", int(16000 * math.sin(2 * math.pi * 1000 * t)) if on else 0)
    with wave.open(path, "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(rate)
        w.writeframes(bytes(frames))


def start(kind: str, tmp: str):
    env = {**os.environ, "PYTHONPATH": SRC}
    procs = []
    http = free_port()
    if kind == "voxgate":
        env["VOXGATE_SECRET"] = new_secret_line()
        relay = free_port()
        procs.append(subprocess.Popen([sys.executable, "-m", "voxgate", "--log-level", "WARNING", "relay", "--listen",
                                       f"127.0.0.1:{relay}", "--workers", "1"], stdout=subprocess.PIPE, text=True, env=env))
        json.loads(procs[-1].stdout.readline())
        procs.append(subprocess.Popen([sys.executable, "-m", "voxgate", "--log-level", "WARNING", "transceiver",
                                       "--http", f"127.0.0.1:{http}", "--media", f"127.0.0.1:{free_port()}", "--relay",
                                       f"127.0.0.1:{relay}", "--no-auth", "--calls-per-address", "0", "--agent", "echo", "--drain-timeout", "0"],
                                      stdout=subprocess.PIPE, text=True, env=env))
    else:
        procs.append(subprocess.Popen([sys.executable, os.path.join(HERE, "aiortc_server.py"), str(http)],
                                      stdout=subprocess.PIPE, text=True, env=env))
    json.loads(procs[-1].stdout.readline())
    return procs, f"http://127.0.0.1:{http}"


def measure(kind: str, wav: str, page_port: int, seconds: float, tmp: str) -> list[float]:
    from playwright.sync_api import sync_playwright

    from voxgate.lab.chromium import launch

    procs, url = start("voxgate" if kind == "websocket" else kind, tmp)
    try:
        with sync_playwright() as p:
            browser = launch(p, wav)
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{page_port}/transport.html")
            page.evaluate(f"runWs({url!r})" if kind == "websocket" else f"run({url!r})")
            time.sleep(seconds)
            mic, remote = page.evaluate("[window.result.mic, window.result.remote]")
            browser.close()
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)
    deltas = []
    for r in remote:
        before = [m for m in mic if m <= r]
        if before and r - before[-1] < 600:
            deltas.append(r - before[-1])
    return deltas


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=12)
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="voxgate-transport-")
    wav = os.path.join(tmp, "bursts.wav")
    bursts(wav, 60)
    server, page_port = serve_dir()
    kinds = ("voxgate", "aiortc", "websocket")
    results = {k: [] for k in kinds}
    for rnd in range(args.rounds):
        for kind in (kinds if rnd % 2 == 0 else kinds[::-1]):
            d = measure(kind, wav, page_port, args.seconds, tmp)
            results[kind] += d[2:]  # the first bursts land while the jitter buffers settle
            print(f"round {rnd + 1} {kind:9s}: {len(d)} bursts, round trip median {statistics.median(d[2:]) if len(d) > 2 else float('nan'):.1f} ms",
                  flush=True)
    server.shutdown()
    print()
    for kind, d in results.items():
        if d:
            d.sort()
            print(f"{kind:9s} microphone -> server echo -> speaker: median {statistics.median(d):.1f} ms, "
                  f"p90 {d[int(0.9 * (len(d) - 1))]:.1f} ms over {len(d)} bursts")


if __name__ == "__main__":
    main()
