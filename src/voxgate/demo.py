"""`voxgate demo`: a relay, a transceiver and the embedded agent on localhost, and a page to talk to it.

The relay runs as its own process (as in production), taking UDP and ICE-TCP on one port number; the transceiver
and the agent run here, loading the models with progress shown. Everything binds to 127.0.0.1 (``--host`` moves
it, as ``voxgate lab firewall`` does inside its namespaces), and a fresh cluster secret is made for this run only.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
import webbrowser


def _say(line: str = ""):
    print(line, flush=True)


def start_relay(host: str, port: int, tcp_port: int | None, secret: str) -> subprocess.Popen:
    from . import doctor

    t0 = time.monotonic()
    try:
        proc, ready = doctor.start_relay(port, secret, host=host, tcp_port=tcp_port)
    except RuntimeError:
        raise SystemExit(f"voxgate demo: the relay did not start (is UDP port {port} free? try --relay-port)")
    fast = "c fast path" if ready["fast_path"] == "c" else "pure-Python forwarder: the C fast path did not build"
    tcp = f", tcp {ready['tcp']}" if ready.get("tcp") else ""
    _say(f"  relay      udp {host}:{port}{tcp}, {len(ready['workers'])} worker, {fast}"
         f"{'':6s} ready in {(time.monotonic() - t0) * 1000:5.0f} ms")
    return proc


def run(args) -> int:
    from .transceiver.server import TransceiverConfig, serve
    from .wire.token import Keyring, new_secret_line

    secret = os.environ.get("VOXGATE_SECRET") or new_secret_line(0)  # a lab's sibling relay shares it
    host = args.host
    tcp_port = None if args.no_tcp else (args.relay_tcp_port or args.relay_port)
    _say(f"voxgate demo: starting on {host}")
    relay = start_relay(host, args.relay_port, tcp_port, secret)
    try:
        if args.agent == "voice":
            from .agent import load_agent
            from .agent.models import MissingModel

            _say("  loading the embedded voice stack:")
            t0 = time.monotonic()
            try:
                agent = load_agent("voice", responder=args.responder, asr=args.asr, tts=args.tts, progress=_say,
                                   asr_fallback=args.asr_fallback, tts_fallback=args.tts_fallback,
                                   delegate=args.delegate)
            except MissingModel as exc:
                _say(f"voxgate demo: {exc}")
                _say("  (`voxgate doctor` checks the whole install; `voxgate demo --agent echo` needs no models)")
                return 2
            _say(f"  models ready in {(time.monotonic() - t0) * 1000:.0f} ms; each runs once:")
            from .doctor import check_stack

            checks = check_stack(agent.stack)
            for check in checks:
                _say(check.line())
            if any(c.status == "fail" for c in checks):
                _say("voxgate demo: a model failed its check (above); `voxgate doctor` says more")
                return 2
        from .transceiver import turn

        turn_cfg = turn.load(args.turn_url or [], None, os.environ.get("VOXGATE_TURN_SECRET"))
        from .cli import limits_from, parse_hostport, phone_line, sip_config

        sip = None
        if args.sip is not None:
            text = args.sip or "5080"
            sip = sip_config(args, parse_hostport(text, host) if ":" in text else (host, int(text)))
        cfg = TransceiverConfig(
            turn=turn_cfg,
            http=(host, args.port), media=(host, args.media_port), keyring=Keyring.parse(secret),
            relays=[(host, args.relay_port)], tcp_relays=[(host, tcp_port)] if tcp_port else [], agent=args.agent, auth=False, responder=args.responder, asr=args.asr, tts=args.tts,
            asr_fallback=args.asr_fallback, tts_fallback=args.tts_fallback, delegate=args.delegate, record_dir=args.record,
            record_retention=args.record_retention, record_upload=args.record_upload,
            s3_endpoint_url=args.s3_endpoint_url, drain_timeout=1.0, phone=phone_line(sip), limits=limits_from(args))
        url = f"http://{host}:{args.port}/demo"

        def ready(t):
            _say(f"  transceiver http://{host}:{args.port}, media udp {t.media_address[0]}:{t.media_address[1]} "
                 f"behind the relay, agent {args.agent}")
            if sip is not None:  # (its listeners are bound by now: the ports are known)
                how = "the webhook's app answers" if sip.webhook_url else "answered at once"
                _say(f"  sip        udp+tcp {sip.udp[0]}:{sip.udp[1]}, {how}: dial sip:agent@{sip.udp[0]}:{sip.udp[1]}")
            loopback = host in ("127.0.0.1", "::1", "localhost")
            _say(f"  auth       none: anyone who reaches {host}:{args.port} may call, hang up and read every call"
                 + ("" if loopback else " (not loopback: run `voxgate transceiver --api-key` to serve others)"))
            if sip is not None and not (sip.policy.auth or sip.policy.allow):
                _say("  sip auth   none: any phone that reaches the SIP port may call (--sip-auth, --sip-allow)")
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
