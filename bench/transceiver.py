"""Transceiver benchmark: echo sessions per core and setup time, voxgate vs plain aiortc, side by side.

For each server and each session count, one run: the server pinned to the last CPU, the load client
(bench/loadclient.py: real ICE, DTLS-SRTP and Opus on the wire, cheap on CPU) pinned to the first. After all calls
are connected and a 2 s warm-up, the server's CPU seconds over the window give CPU per session at steady state;
sessions per core = sessions / (CPU seconds / wall seconds). The echo ratio (packets back / packets sent) says
whether the server kept up; a run whose ratio is below 0.9 was saturated and its figure is a ceiling.
Setup time is the load client's POST -> DTLS connected, median and worst.

    python bench/transceiver.py [--sessions 10,30] [--seconds 8] [--rounds 1]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from common import HERE, SRC, cpu_seconds, free_port  # first: it puts src/ on the path
from voxgate.lab.peers import speech_wav

from voxgate.wire.token import new_secret_line

CPUS = sorted(os.sched_getaffinity(0))
CLIENT_CPU, SERVER_CPU = CPUS[0], CPUS[-1]


def speech(path: str) -> str:
    try:
        return speech_wav(path, "Testing one two three. The transceiver echoes this sentence back to the caller, "
                                "twenty milliseconds at a time.")
    except RuntimeError:  # no espeak-ng: a warbling tone will do
        pass
    import math
    import struct
    import wave

    with wave.open(path, "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(48000)
        w.writeframes(b"".join(struct.pack("<h", int(8000 * math.sin(k / (8 + 4 * math.sin(k / 9000)))))
                               for k in range(48000 * 4)))
    return path


def start_server(kind: str, tmp: str, complexity: int = 3):
    http = free_port()
    env = {**os.environ, "PYTHONPATH": SRC}
    if kind == "voxgate":
        secret = os.path.join(tmp, "secret")
        with open(secret, "w") as fh:
            fh.write(new_secret_line() + "\n")
        cmd = [sys.executable, "-m", "voxgate", "--log-level", "WARNING", "transceiver", "--http", f"127.0.0.1:{http}",
               "--media", f"127.0.0.1:{free_port()}", "--secret-file", secret, "--no-auth", "--calls-per-address", "0", "--agent", "echo", "--drain-timeout", "0",
               "--opus-complexity", str(complexity)]
    else:
        cmd = [sys.executable, os.path.join(HERE, "aiortc_server.py"), str(http)]
    proc = subprocess.Popen(["taskset", "-c", str(SERVER_CPU), *cmd], stdout=subprocess.PIPE, text=True, env=env)
    json.loads(proc.stdout.readline())
    return proc, f"http://127.0.0.1:{http}"


def run(kind: str, sessions: int, seconds: float, wav: str, tmp: str, complexity: int = 3) -> dict:
    proc, url = start_server(kind, tmp, complexity)
    try:
        client = subprocess.Popen(["taskset", "-c", str(CLIENT_CPU), sys.executable, os.path.join(HERE, "loadclient.py"),
                                   url, wav, str(sessions), str(seconds)], stdout=subprocess.PIPE, text=True,
                                  env={**os.environ, "PYTHONPATH": SRC})
        c0 = t0 = None
        result = None
        for line in client.stdout:
            ev = json.loads(line)
            if ev["event"] == "window_start":
                c0, t0 = cpu_seconds([proc.pid]), time.monotonic()
            elif ev["event"] == "done":
                cpu, wall = cpu_seconds([proc.pid]) - c0, time.monotonic() - t0
                result = dict(ev, server=kind, cpu_s=cpu, wall_s=wall, cpu_fraction=cpu / wall,
                              sessions_per_core=sessions / max(cpu / wall, 1e-6))
        client.wait(60)
        if result is None:
            raise RuntimeError(f"{kind}: the load client failed")
        return result
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", default="10,30")
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--servers", default="voxgate,aiortc")
    ap.add_argument("--opus-complexity", type=int, default=3, help="voxgate's libopus complexity (aiortc uses 10)")
    ap.add_argument("--json")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="voxgate-bench-")
    wav = speech(os.path.join(tmp, "speech.wav"))
    rows = []
    for rnd in range(args.rounds):
        for n in [int(x) for x in args.sessions.split(",")]:
            for kind in args.servers.split(","):
                r = run(kind, n, args.seconds, wav, tmp, args.opus_complexity)
                rows.append(r)
                print(f"round {rnd + 1} {kind:8s} {n:3d} sessions: server CPU {r['cpu_fraction'] * 100:5.1f}% "
                      f"-> {r['sessions_per_core']:6.1f} sessions/core, echo {r['echo_ratio']:.2f}, "
                      f"setup p50 {r['setup_ms_p50']:.1f} ms max {r['setup_ms_max']:.1f} ms", flush=True)
    print()
    print(f"{'server':8s} {'sessions':>8s} {'CPU %':>6s} {'sess/core':>9s} {'echo':>5s} {'setup p50':>10s}")
    for r in rows:
        print(f"{r['server']:8s} {r['sessions']:8d} {r['cpu_fraction'] * 100:6.1f} {r['sessions_per_core']:9.1f} "
              f"{r['echo_ratio']:5.2f} {r['setup_ms_p50']:8.1f}ms")
    by = {}
    for r in rows:
        by.setdefault((r["sessions"], r["server"]), []).append(r["sessions_per_core"])
    kept_up = {(r["sessions"], r["server"]) for r in rows if r["echo_ratio"] >= 0.9}
    for n in sorted({r["sessions"] for r in rows}):
        if (n, "voxgate") in by and (n, "aiortc") in by:
            v = sorted(by[(n, "voxgate")])[len(by[(n, "voxgate")]) // 2]
            a = sorted(by[(n, "aiortc")])[len(by[(n, "aiortc")]) // 2]
            if (n, "voxgate") in kept_up and (n, "aiortc") in kept_up:
                print(f"{n} sessions: voxgate / aiortc sessions per core = {v / a:.2f}")
            else:
                slow = [k for k in ("voxgate", "aiortc") if (n, k) not in kept_up]
                print(f"{n} sessions: {', '.join(slow)} saturated one core (echo < 0.9): no fair ratio at this load")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
