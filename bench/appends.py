"""Memory under the largest appends: N WebSocket clients each append the API's 15 MiB of base64 audio (229 s of
PCM16 at 24 kHz) at once to `voxgate demo` (the embedded voice stack), and commit it (push-to-talk) or clear it.
Prints the demo process's RSS before, at its peak (sampled every 50 ms) and after.

    python bench/appends.py [--clients 6] [--commit] [--agent voice|echo]

Measured 2026-12-07 (docs/security.md): six clients committing, +580 MB at the peak (+1 590 MB before the
hardening); the echo agent: +230-250 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time

import common  # noqa: F401  (src on the path)

from voxgate.lab.model_servers import wait_http
from voxgate.lab.ports import free_port


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        return int(re.search(r"VmRSS:\s+(\d+)", fh.read()).group(1)) / 1024


async def one(url: str, audio: str, commit: bool) -> str:
    import aiohttp

    async with aiohttp.ClientSession() as s:
        async with s.ws_connect(url.replace("http", "ws") + "/v1/realtime?model=x", max_msg_size=0) as ws:
            await ws.send_str(json.dumps({"type": "session.update",
                                          "session": {"type": "realtime", "audio": {"input": {"turn_detection": None}}}}))
            await ws.send_str(json.dumps({"type": "input_audio_buffer.append", "audio": audio}))
            await ws.send_str(json.dumps({"type": "input_audio_buffer.commit" if commit else "input_audio_buffer.clear"}))
            async for msg in ws:
                kind = json.loads(msg.data)["type"]
                if kind in ("input_audio_buffer.committed", "input_audio_buffer.cleared", "error"):
                    return kind
    return "closed"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=6)
    ap.add_argument("--commit", action="store_true", help="commit each append (a decode), else clear it")
    ap.add_argument("--agent", default="voice")
    args = ap.parse_args()
    port = free_port(socket.SOCK_STREAM)
    demo = subprocess.Popen([sys.executable, "-m", "voxgate", "demo", "--agent", args.agent, "--port", str(port),
                             "--media-port", str(free_port()), "--relay-port", str(free_port()), "--no-tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/healthz", timeout=180)
        audio = base64.b64encode(os.urandom(11 * 1024 * 1024)).decode()  # 14.7 MiB of base64
        before = rss_mb(demo.pid)
        peak, done = [before], threading.Event()

        def watch():
            while not done.is_set():
                peak.append(rss_mb(demo.pid))
                time.sleep(0.05)

        watcher = threading.Thread(target=watch)
        watcher.start()
        t0 = time.monotonic()
        try:
            async def all_of_them():
                return await asyncio.gather(*(one(url, audio, args.commit) for _ in range(args.clients)))

            outcomes = asyncio.run(asyncio.wait_for(all_of_them(), 600))
        finally:
            done.set()
            watcher.join()
        print(f"{args.clients} clients, {'commit' if args.commit else 'clear'}, agent {args.agent}: {outcomes} in "
              f"{time.monotonic() - t0:.1f} s; RSS {before:.0f} MB -> peak {max(peak):.0f} MB "
              f"(+{max(peak) - before:.0f}), after {rss_mb(demo.pid):.0f} MB")
    finally:
        demo.terminate()
        demo.wait(30)


if __name__ == "__main__":
    main()
