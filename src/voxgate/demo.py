"""`voxgate demo`: a relay, a transceiver and the embedded agent on localhost, and a page to talk to it.

The relay runs as its own process (as in production); the transceiver and the
agent run here, loading the models with progress shown. Everything binds to
127.0.0.1, and a fresh cluster secret is made for this run only.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import webbrowser


def _say(line: str = ""):
    print(line, flush=True)


def start_relay(port: int, secret: str) -> subprocess.Popen:
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "voxgate", "--log-level", "WARNING", "relay", "--listen", f"127.0.0.1:{port}",
         "--workers", "1", "--internal-host", "127.0.0.1"],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "VOXGATE_SECRET": secret})
    line = proc.stdout.readline()
    if not line:
        raise SystemExit(f"voxgate demo: the relay did not start (is UDP port {port} free? try --relay-port)")
    ready = json.loads(line)
    _say(f"  relay      udp 127.0.0.1:{port}, {len(ready['workers'])} worker, {ready['fast_path']} fast path"
         f"{'':6s} ready in {(time.monotonic() - t0) * 1000:5.0f} ms")
    return proc


def run(args) -> int:
    from .transceiver.server import TransceiverConfig, serve
    from .wire.token import Keyring, new_secret_line

    secret = new_secret_line(0)
    _say("voxgate demo: starting on 127.0.0.1")
    relay = start_relay(args.relay_port, secret)
    try:
        if args.agent == "voice":
            from .agent import load_agent
            from .agent.stages import MissingModel

            _say("  loading the embedded voice stack:")
            t0 = time.monotonic()
            try:
                load_agent("voice", responder=args.responder, asr=args.asr, progress=_say)
            except MissingModel as exc:
                _say(f"voxgate demo: {exc}")
                _say("  (or run `voxgate demo --agent echo` for a check without models)")
                return 2
            _say(f"  models ready in {(time.monotonic() - t0) * 1000:.0f} ms")
        cfg = TransceiverConfig(
            http=("127.0.0.1", args.port), media=("127.0.0.1", args.media_port), keyring=Keyring.parse(secret),
            relays=[("127.0.0.1", args.relay_port)], agent=args.agent, auth=False, responder=args.responder, asr=args.asr,
            drain_timeout=1.0)
        url = f"http://127.0.0.1:{args.port}/demo"

        def ready(t):
            _say(f"  transceiver http://127.0.0.1:{args.port}, media udp {t.media_address[0]}:{t.media_address[1]} "
                 f"behind the relay, agent {args.agent}")
            _say("")
            _say(f"Open {url} and click Talk. Ctrl-C stops.")
            _say(json.dumps({"event": "demo_ready", "url": url}))
            if args.open:
                webbrowser.open(url)

        try:
            return asyncio.run(serve(cfg, ready))
        except OSError as exc:
            _say(f"voxgate demo: cannot listen ({exc}); pick other ports with --port / --media-port")
            return 2
    finally:
        relay.send_signal(signal.SIGTERM)
        try:
            relay.wait(5)
        except subprocess.TimeoutExpired:
            relay.kill()
