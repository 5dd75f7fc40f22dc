"""The `voxgate` command: demo, doctor, relay, transceiver, call, token tools."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time


def parse_hostport(text: str, default_host: str = "0.0.0.0") -> tuple[str, int]:
    """HOST:PORT, [V6]:PORT or :PORT."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.lstrip(":")
    else:
        host, sep, port = text.rpartition(":")
        if not sep:
            raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    try:
        port_num = int(port)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad port in {text!r}") from None
    if not 0 <= port_num < 65536:
        raise argparse.ArgumentTypeError(f"port out of range in {text!r}")
    return host or default_host, port_num


def _keyring(args):
    from .wire.token import Keyring

    try:
        return Keyring.load(args.secret_file)
    except (OSError, ValueError) as exc:
        sys.exit(f"voxgate: cannot load the cluster secret: {exc}")


def cmd_relay(args) -> int:
    import ipaddress

    from .relay.supervisor import run_relay
    from .relay.worker import RelayConfig

    for cidr in args.allow:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError as exc:
            sys.exit(f"voxgate: bad --allow {cidr!r}: {exc}")
    cfg = RelayConfig(
        listen=args.listen,
        keyring=_keyring(args),
        workers=args.workers or len(os.sched_getaffinity(0)),
        redis_url=args.redis_url,
        allow=args.allow,
        metrics=args.metrics,
        idle_timeout=args.idle_timeout,
        token_max_age=args.token_max_age,
        internal_host=args.internal_host,
        tcp_listen=args.tcp_listen,
        capacity=args.capacity,
        flows_per_token=args.flows_per_token,
        flows_per_address=args.flows_per_address,
        unverified_share=args.unverified_share,
        xdp=args.xdp,
        xdp_interfaces=args.xdp_iface or [],
    )
    if not 0 < args.unverified_share <= 1:
        sys.exit("voxgate: --unverified-share is a fraction in (0, 1]")
    return run_relay(cfg)


def cmd_token_mint(args) -> int:
    from .wire.token import mint

    print(mint(_keyring(args), args.transceiver, time.time()))
    return 0


def cmd_token_inspect(args) -> int:
    import base64
    import binascii

    from .wire.token import TokenError, verify

    ufrag = args.ufrag.split(":", 1)[0]  # accept a whole USERNAME too
    out: dict = {"ufrag": ufrag}
    try:
        info = verify(_keyring(args), ufrag, time.time(), args.max_age)
        out.update(info.as_dict(), verified=True)
        out["age_s"] = int(time.time() - info.issued_at)
        code = 0
    except TokenError as exc:
        out.update(verified=False, reason=exc.reason, detail=str(exc))
        try:  # show what it claims even if it does not verify, for tracing
            raw = base64.b64decode(ufrag, validate=True)
            out["claims"] = {"version": raw[0] >> 5, "key_id": raw[0] & 15, "bytes": len(raw)}
        except (binascii.Error, ValueError, IndexError):
            pass
        code = 1
    print(json.dumps(out))
    return code


def add_sip_args(p, demo: bool) -> None:
    """The phone options of ``voxgate transceiver`` and ``voxgate demo`` (sip/server.py)."""
    if demo:
        p.add_argument("--sip", nargs="?", const="", metavar="HOST:PORT",
                       help="also take phone calls: SIP on UDP and TCP (default port 5080), answered by the agent")
    else:
        p.add_argument("--sip-listen", type=parse_hostport, metavar="HOST:PORT",
                       help="take phone calls: SIP on UDP and TCP at HOST:PORT (trunks send INVITEs here)")
    p.add_argument("--sip-tls", type=parse_hostport, metavar="HOST:PORT", help="SIP over TLS too (with --sip-tls-cert/key)")
    p.add_argument("--sip-tls-cert", help="PEM certificate chain for --sip-tls")
    p.add_argument("--sip-tls-key", help="PEM private key for --sip-tls")
    p.add_argument("--sip-rtp-ports", metavar="LO-HI", help="UDP ports for calls' RTP/RTCP pairs (default: any free)")
    p.add_argument("--sip-rtp-host", help="the address our SDP offers for RTP (default: the SIP host)")
    p.add_argument("--sip-webhook-url", help="POST realtime.call.incoming here for each call; the app accepts it "
                                             "(default: calls are answered at once)")
    p.add_argument("--sip-webhook-secret", default=os.environ.get("VOXGATE_SIP_WEBHOOK_SECRET"),
                   help="whsec_... signing key of the webhook (or $VOXGATE_SIP_WEBHOOK_SECRET)")
    p.add_argument("--sip-allow", action="append", default=[], metavar="CIDR",
                   help="trunk addresses that may call (repeatable; default: any)")
    p.add_argument("--sip-auth", default=os.environ.get("VOXGATE_SIP_AUTH"), metavar="USER:PASSWORD",
                   help="require digest auth on INVITEs (or $VOXGATE_SIP_AUTH)")
    p.add_argument("--sip-rate", type=float, default=5.0, help="new calls per second per source address (default 5)")
    p.add_argument("--sip-global-rate", type=float, default=20.0,
                   help="new calls per second from all sources together (default 20; the burst is twice it)")
    p.add_argument("--sip-max-calls", type=int, default=100, help="phone calls at once (default 100)")
    p.add_argument("--sip-max-ringing", type=int, default=20,
                   help="calls waiting for the app's accept at once (default 20); more get 503")
    p.add_argument("--sip-ring-timeout", type=float, default=30.0,
                   help="seconds a call waits for the app's accept or reject before 480 (default 30)")
    p.add_argument("--sip-media-timeout", type=float, default=60.0,
                   help="seconds an answered call may go without the caller's RTP (hold excepted) before a BYE "
                        "(default 60; 0: never)")


LIMIT_HELP = {
    "calls_per_key": "live calls and WebSocket sessions one client secret (ek_) may hold; 0: no limit",
    "calls_per_address": "... one source address may hold (server keys are not counted); 0: no limit",
    "ws_idle_timeout": "seconds a WebSocket session may pass with nothing sent either way; 0: never closed",
    "header_timeout": "seconds a connection has to send a request's headers (slowloris)",
    "body_timeout": "seconds a request has to send its body",
    "keepalive_timeout": "seconds an idle keep-alive HTTP connection is kept",
    "connections_per_address": "open HTTP connections per source address",
    "max_connections": "open HTTP connections in all",
    "input_audio_total_mb": "MiB of appended WebSocket audio decoded at once across sessions (appends wait past it)",
    "diagnostics_interval": "seconds between two collections for /healthz?gc (others get the last result)",
}


def add_limit_args(p) -> None:
    """One flag per ``transceiver.access.Limits`` field, with its default (the README's limits table)."""
    import dataclasses

    from .transceiver.access import Limits

    for f in dataclasses.fields(Limits):
        p.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=f.default,
                       metavar="N", help=f"{LIMIT_HELP[f.name]} (default {f.default:g})")


def trusted_proxies(args) -> list:
    import ipaddress

    try:
        return [ipaddress.ip_network(c, strict=False) for c in args.trusted_proxy]
    except ValueError as exc:
        sys.exit(f"voxgate: --trusted-proxy: {exc}")


def limits_from(args):
    import dataclasses

    from .transceiver.access import Limits

    return Limits(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Limits)})


def phone_line(cfg):
    """The transceiver's phone server for a ``SipConfig`` (None: no phones): here, where the process is put
    together, is the one place that knows both the transceiver and the SIP server (``call.phone``)."""
    if cfg is None:
        return None
    from .sip.server import SipServer

    return lambda host: SipServer(host, cfg)


def sip_config(args, listen: tuple[str, int] | None):
    """The SipConfig the options ask for, or None without a SIP address."""
    if listen is None:
        return None
    from .sip.policy import Policy
    from .sip.server import SipConfig

    if args.sip_webhook_url and not args.sip_webhook_secret:
        sys.exit("voxgate: --sip-webhook-url needs --sip-webhook-secret (whsec_...)")
    if args.sip_tls and not (args.sip_tls_cert and args.sip_tls_key):
        sys.exit("voxgate: --sip-tls needs --sip-tls-cert and --sip-tls-key")
    user, _, password = (args.sip_auth or "").partition(":")
    ports = None
    if args.sip_rtp_ports:
        lo, _, hi = args.sip_rtp_ports.partition("-")
        try:
            ports = (int(lo), int(hi))
        except ValueError:
            sys.exit("voxgate: --sip-rtp-ports is LO-HI, e.g. 40000-40999")
    try:
        policy = Policy(allow=args.sip_allow, rate=args.sip_rate, burst=max(1, int(args.sip_rate * 4)),
                        global_rate=args.sip_global_rate, global_burst=max(1, int(args.sip_global_rate * 2)),
                        max_calls=args.sip_max_calls, max_ringing=args.sip_max_ringing,
                        user=user or None, password=password or None)
    except ValueError as exc:
        sys.exit(f"voxgate: --sip-allow: {exc}")
    return SipConfig(udp=listen, tcp=listen, tls=args.sip_tls, tls_cert=args.sip_tls_cert, tls_key=args.sip_tls_key,
                     rtp_host=args.sip_rtp_host, rtp_ports=ports, webhook_url=args.sip_webhook_url,
                     webhook_secret=args.sip_webhook_secret, policy=policy, ring_timeout=args.sip_ring_timeout,
                     media_timeout=args.sip_media_timeout)


def cmd_transceiver(args) -> int:
    import asyncio

    from .transceiver.server import TransceiverConfig, serve

    relays = [parse_hostport(item.strip()) for item in (args.relay or "").split(",") if item.strip()]
    tcp_relays = [parse_hostport(item.strip()) for item in (args.relay_tcp or "").split(",") if item.strip()]
    api_keys = list(args.api_key or [])
    if os.environ.get("VOXGATE_API_KEY"):
        api_keys.append(os.environ["VOXGATE_API_KEY"])
    if not args.no_auth and not api_keys:
        sys.exit("voxgate: give --api-key (or VOXGATE_API_KEY), or --no-auth for local use")
    from .transceiver import turn

    try:
        turn_cfg = turn.load(args.turn_url or [], args.turn_secret_file, os.environ.get("VOXGATE_TURN_SECRET"))
    except (OSError, ValueError) as exc:
        sys.exit(f"voxgate transceiver: {exc}")
    cfg = TransceiverConfig(
        turn=turn_cfg,
        http=args.http, media=args.media, keyring=_keyring(args), relays=relays, tcp_relays=tcp_relays, agent=args.agent,
        advertise=args.advertise, public=args.public, api_keys=api_keys, auth=not args.no_auth,
        drain_timeout=args.drain_timeout, setup_timeout=args.setup_timeout, opus_complexity=args.opus_complexity,
        responder=args.responder, asr=args.asr, tts=args.tts, redis_url=args.redis_url, region=args.region, id=args.id,
        asr_fallback=args.asr_fallback, tts_fallback=args.tts_fallback, delegate=args.delegate,
        record_dir=args.record, record_retention=args.record_retention, record_upload=args.record_upload,
        s3_endpoint_url=args.s3_endpoint_url,
        signaling_url=args.signaling_url, max_sessions=args.capacity, region_map=args.region_map,
        phone=phone_line(sip_config(args, args.sip_listen)), limits=limits_from(args),
        trusted_proxies=trusted_proxies(args),
    )

    def ready(t):
        print(json.dumps({"event": "transceiver_ready", "id": t.id, "region": cfg.region, "http": "http://%s:%d" % args.http,
                          "media": "%s:%d" % t.media_address, "token_target": "%s:%d" % t.token_target,
                          "candidates": ["%s:%d" % c for c in t.candidates], "agent": args.agent,
                          "sip": t.phone.describe() if t.phone else None}), flush=True)

    try:
        return asyncio.run(serve(cfg, ready))
    except ValueError as exc:  # a bad --id, --region-map or --region: say it in one line
        sys.exit(f"voxgate transceiver: {exc}")


def cmd_fleet(args) -> int:
    """Print the fleet as JSON: one object per live transceiver."""
    import asyncio

    import redis.asyncio as aioredis
    from redis.exceptions import RedisError

    from .steering.registry import read_members

    async def read():
        r = aioredis.from_url(args.redis_url, socket_timeout=5, socket_connect_timeout=5)
        try:
            return await read_members(r)
        finally:
            await r.aclose()

    try:
        members = asyncio.run(read())
    except (RedisError, OSError) as exc:
        sys.exit(f"voxgate: cannot read the fleet from {args.redis_url}: {exc}")
    print(json.dumps([m.as_dict() for m in members], indent=None if args.compact else 2))
    return 0


def cmd_lab_geo(args) -> int:
    from .lab.geo import main as geo_main

    return geo_main(args)


def cmd_lab_firewall(args) -> int:
    from .lab.firewall import main as firewall_main

    return firewall_main(args)


def cmd_demo(args) -> int:
    from .demo import run

    return run(args)


def cmd_doctor(args) -> int:
    from .doctor import run

    return run(args)


def cmd_load(args) -> int:
    from .client.load import main as load_main

    return load_main(args)


def cmd_call(args) -> int:
    from .client.call import main as call_main

    return call_main(args)


RESPONDER_HELP = ("the voice agent's responder: auto (SmolLM2 if installed), scripted, smollm2, openai:URL#MODEL (a "
                  "server's /chat/completions) or openai-responses:URL#MODEL (its /responses); the key from "
                  "$VOXGATE_RESPONDER_API_KEY, else $OPENAI_API_KEY (never a flag: flags show in the process list)")


def add_otlp_arg(p) -> None:
    p.add_argument("--otlp-endpoint", metavar="URL", help="send OpenTelemetry traces (a span per call, per turn, per "
                   "response) by OTLP/HTTP to URL (e.g. http://127.0.0.1:4318); or set OTEL_EXPORTER_OTLP_ENDPOINT "
                   "and the other OTEL_* variables. Off by default. Needs pip install 'voxgate[otel]'")


def add_record_args(p) -> None:
    p.add_argument("--record", metavar="DIR", help="record every call in DIR: one WAV per call (the caller left, the "
                   "agent right, written as the call goes) and a JSON sidecar (what was said, each response's "
                   "timing); served at GET /v1/realtime/calls/ID/recording (and /v1/live/sessions/ID/content)")
    p.add_argument("--record-retention", type=float, default=86400.0, metavar="SECONDS",
                   help="delete recordings older than this (default 86400: a day), here and in the store")
    p.add_argument("--record-upload", metavar="s3://BUCKET/PREFIX",
                   help="upload each recording and its sidecar when the call ends (pip install 'voxgate[s3]'; keys "
                        "the standard AWS way); a recording stays on disk until uploaded, retried while the store "
                        "is down")
    p.add_argument("--s3-endpoint-url", metavar="URL", help="an S3-compatible store (MinIO, Ceph, …) instead of AWS")


DELEGATE_HELP = ("GPT-Live's delegated backend, which answers the requests the voice hands on (responses and "
                 "decisions delegation): a responder spec as --responder takes (openai:URL#MODEL, "
                 "openai-responses:URL#MODEL, smollm2, scripted); default: the responder itself")
LLM_HELP = ("the voice agent's language model: a gguf file of your own (1-8B instruct models fit), run on the same "
            "prebuilt llama.cpp runtime with the file's own chat template (instead of --responder)")
ASR_HELP = ("the voice agent's recognizer: pocketsphinx (streams partial transcripts), moonshine (Moonshine base-en: "
            "far fewer word errors on unseen voices, see bench/asr.py), auto (moonshine if installed), whisper-base "
            "(multilingual Whisper base: pip install -c constraints.txt 'voxgate[whisper]'), or "
            "openai:URL#MODEL (a server's /audio/transcriptions per utterance), or realtime:ws(s)://HOST/v1/realtime#MODEL "
            "(its Realtime transcription session, audio streamed as heard); keys from $VOXGATE_ASR_API_KEY or "
            "$OPENAI_API_KEY")


def _choice(*names, realtime: bool = False):
    """An argparse type: one of ``names``, or ``openai:URL#MODEL`` (a model server; ``realtime:WS-URL#MODEL`` too
    with ``realtime``)."""
    prefixes = ("openai:http://", "openai:https://") + (("realtime:ws://", "realtime:wss://") if realtime else ())

    def check(value: str) -> str:
        if value in names or value.startswith(prefixes):
            return value
        raise argparse.ArgumentTypeError(f"{value!r}: one of {', '.join(names)}, or openai:http(s)://HOST/v1#MODEL"
                                         + (", or realtime:ws(s)://HOST/v1/realtime#MODEL" if realtime else ""))
    return check


ASR_CHOICE = _choice("pocketsphinx", "moonshine", "whisper", "whisper-base", "auto", realtime=True)
TTS_CHOICE = _choice("piper", "piper-espeak")
TTS_HELP = ("the voice agent's synthesizer: piper (the Piper voice, phonemized by an MIT/Apache front end: the default, "
            "no GPL code), piper-espeak (the same voice phonemized by espeak-ng through piper-tts, GPL-3.0: "
            "pip install piper-tts), or openai:URL#MODEL (a server's /audio/speech as 24 kHz PCM, key from "
            "$VOXGATE_TTS_API_KEY or $OPENAI_API_KEY)")


def add_fallback_args(p) -> None:
    p.add_argument("--asr-fallback", choices=("moonshine",),
                   help="with --asr openai:… or realtime:…: the embedded recognizer decodes a turn whenever the "
                        "server fails")
    p.add_argument("--tts-fallback", choices=("piper",),
                   help="with --tts openai:…: the embedded voice speaks whenever the server fails")


def build_parser() -> argparse.ArgumentParser:
    from .wire.token import DEFAULT_MAX_AGE

    p = argparse.ArgumentParser(prog="voxgate", description="Real-time voice over WebRTC: relay, transceiver, agent.")
    p.add_argument("--log-level", default=os.environ.get("VOXGATE_LOG_LEVEL", "INFO"))
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("relay", help="run the stateless UDP relay")
    r.add_argument("--listen", type=parse_hostport, default=("0.0.0.0", 3478), help="public HOST:PORT (default 0.0.0.0:3478)")
    r.add_argument("--workers", type=int, default=0, help="worker processes (default: one per available CPU)")
    r.add_argument("--secret-file", help="cluster secret(s), one per line, KID:SECRET; else $VOXGATE_SECRET")
    r.add_argument("--redis-url", help="mirror flows to Redis, e.g. redis://127.0.0.1:6379/0")
    r.add_argument("--metrics", type=parse_hostport, help="serve /metrics and /healthz on HOST:PORT")
    r.add_argument("--allow", action="append", default=[], metavar="CIDR", help="transceiver networks tokens may route to (repeatable; default: any)")
    r.add_argument("--idle-timeout", type=float, default=30.0, help="seconds before an idle flow is forgotten")
    r.add_argument("--token-max-age", type=float, default=DEFAULT_MAX_AGE, help="seconds a ufrag may create new flows")
    r.add_argument("--internal-host", help="local address toward transceivers (default: any)")
    r.add_argument("--capacity", type=int, default=65536, help="flows per worker (default 65536)")
    r.add_argument("--flows-per-token", type=int, default=8,
                   help="unverified flows one token may have taught a worker at once (default 8)")
    r.add_argument("--flows-per-address", type=int, default=64,
                   help="unverified flows from one source IP per worker (default 64)")
    r.add_argument("--unverified-share", type=float, default=0.5,
                   help="share of --capacity unverified flows may take; the rest is kept for live calls (default 0.5)")
    r.add_argument("--tcp-listen", type=parse_hostport, metavar="HOST:PORT",
                   help="also take ICE-TCP (RFC 6544 passive, RFC 4571 framing) here, for clients whose network "
                        "drops UDP (443 in production); routed by the same tokens")
    r.add_argument("--xdp", choices=("auto", "native", "generic", "off"), default="off",
                   help="forward verified flows in the kernel with XDP (relay/xdp): auto uses it where it loads "
                        "(root or CAP_BPF+CAP_NET_ADMIN, libbpf1; the interfaces must forward) and says so; native or "
                        "generic insist; off (default) leaves the C path alone")
    r.add_argument("--xdp-iface", action="append", metavar="IF",
                   help="an interface to attach to (repeatable; default: every interface that is up, lo excepted)")
    r.set_defaults(func=cmd_relay)

    d = sub.add_parser("demo", help="relay + transceiver + embedded agent on localhost, and a page to talk to it")
    d.add_argument("--agent", default="voice", help="voice (the embedded stack), echo (no models), or "
                   "upstream:ws(s)://HOST/v1/realtime (a Realtime model server per call; key from "
                   "$VOXGATE_UPSTREAM_API_KEY or $OPENAI_API_KEY)")
    d.add_argument("--responder", default="auto", help=RESPONDER_HELP)
    d.add_argument("--llm", metavar="PATH.gguf", help=LLM_HELP)
    d.add_argument("--delegate", metavar="SPEC", help=DELEGATE_HELP)
    add_record_args(d)
    add_otlp_arg(d)
    # the demo is where people judge whether it understands them: Moonshine when installed (3 x fewer word errors
    # on voices it never heard, at ~0.5 s more per turn; bench/asr.py)
    d.add_argument("--asr", default="auto", type=ASR_CHOICE,
                   help=ASR_HELP + " (default here: auto)")
    d.add_argument("--tts", default="piper", type=TTS_CHOICE, help=TTS_HELP)
    add_fallback_args(d)
    d.add_argument("--port", type=int, default=8080, help="HTTP port of the page and signaling")
    d.add_argument("--media-port", type=int, default=40000, help="the transceiver's UDP port")
    d.add_argument("--relay-port", type=int, default=3478, help="the relay's public UDP port")
    d.add_argument("--relay-tcp-port", type=int, help="the relay's ICE-TCP port (default: the same number as UDP)")
    d.add_argument("--no-tcp", action="store_true", help="UDP only: no ICE-TCP candidate in the answers")
    d.add_argument("--host", default="127.0.0.1", help="the address everything binds to (default 127.0.0.1)")
    d.add_argument("--turn-url", action="append", metavar="URL",
                   help="a TURN server the page should use (its secret in $VOXGATE_TURN_SECRET)")
    d.add_argument("--open", action="store_true", help="open the page in the browser")
    add_sip_args(d, demo=True)
    add_limit_args(d)
    d.set_defaults(func=cmd_demo)

    dr = sub.add_parser("doctor", help="check this install: versions, CPU, each embedded model once, the relay and a "
                                       "loopback call; says what fixes what failed")
    dr.add_argument("--responder", default="auto", help=RESPONDER_HELP)
    dr.add_argument("--asr", default="auto", type=ASR_CHOICE, help=ASR_HELP)
    dr.add_argument("--tts", default="piper", type=TTS_CHOICE, help=TTS_HELP)
    dr.add_argument("--no-call", action="store_true", help="skip the relay and the loopback call")
    dr.add_argument("--no-models", action="store_true",
                    help="skip the embedded models (a relay, or the core install with models elsewhere)")
    dr.add_argument("--json", help="also write the report to this file")
    dr.set_defaults(func=cmd_doctor)

    x = sub.add_parser("transceiver", help="run the WebRTC transceiver (signaling + media)")
    x.add_argument("--http", type=parse_hostport, default=("127.0.0.1", 8080), help="signaling HOST:PORT")
    x.add_argument("--media", type=parse_hostport, default=("127.0.0.1", 40000), help="media UDP HOST:PORT (one socket)")
    x.add_argument("--relay", help="public relay address(es) HOST:PORT[,...] for the answer's candidates; absent = direct")
    x.add_argument("--relay-tcp", help="relays' ICE-TCP address(es) HOST:PORT[,...] (their --tcp-listen): passive TCP "
                                       "candidates after the UDP ones, for clients whose network drops UDP")
    x.add_argument("--turn-url", action="append", metavar="URL",
                   help="a TURN server for TLS-only networks, e.g. turns:turn.example:443?transport=tcp (repeatable); "
                        "per-call credentials at GET /v1/voxgate/ice_servers and in client secrets")
    x.add_argument("--turn-secret-file", help="the TURN server's shared secret (coturn static-auth-secret); else "
                                              "$VOXGATE_TURN_SECRET")
    x.add_argument("--advertise", type=parse_hostport, help="media address relays reach us on (default: --media)")
    x.add_argument("--public", type=parse_hostport, help="direct mode: the candidate clients send to (default: --media)")
    x.add_argument("--secret-file", help="cluster secret(s), as for the relay; else $VOXGATE_SECRET")
    x.add_argument("--agent", default="echo", help="echo, voice (the embedded voice agent), upstream:ws(s)://HOST/"
                   "v1/realtime (a Realtime model server per call; key from $VOXGATE_UPSTREAM_API_KEY or "
                   "$OPENAI_API_KEY), or module:Class")
    x.add_argument("--responder", default="auto", help=RESPONDER_HELP)
    x.add_argument("--llm", metavar="PATH.gguf", help=LLM_HELP)
    x.add_argument("--delegate", metavar="SPEC", help=DELEGATE_HELP)
    add_record_args(x)
    add_otlp_arg(x)
    # auto: Moonshine when installed. The SDKs ask for semantic_vad, whose verdict reads the words: PocketSphinx's
    # on unseen voices would make it wait for sentences nobody is finishing
    x.add_argument("--asr", default="auto", type=ASR_CHOICE,
                   help=ASR_HELP + " (default: auto)")
    x.add_argument("--tts", default="piper", type=TTS_CHOICE, help=TTS_HELP)
    add_fallback_args(x)
    x.add_argument("--api-key", action="append", help="accepted Bearer key (repeatable; or $VOXGATE_API_KEY)")
    x.add_argument("--no-auth", action="store_true", help="accept calls without a key (local use)")
    x.add_argument("--drain-timeout", type=float, default=30.0, help="seconds live calls may run after SIGTERM")
    x.add_argument("--opus-complexity", type=int, default=3, choices=range(11), metavar="0-10",
                   help="libopus encoder complexity: CPU per session against quality (default 3)")
    x.add_argument("--setup-timeout", type=float, default=20.0, help="seconds a call may take to connect before it is reaped")
    x.add_argument("--redis-url", help="join the fleet: register in Redis, place calls on the least-loaded transceiver")
    x.add_argument("--region", default=os.environ.get("VOXGATE_REGION", "default"), help="this transceiver's region")
    x.add_argument("--capacity", type=int, default=1000, help="live calls at most; a full transceiver takes no new calls")
    x.add_argument("--id", default=os.environ.get("VOXGATE_ID"), help="fleet id, 1-16 of [a-z0-9] (default: random)")
    x.add_argument("--signaling-url", default=os.environ.get("VOXGATE_SIGNALING_URL"),
                   help="how other transceivers reach this one's HTTP, e.g. http://10.1.2.3:8080 (default: --http)")
    x.add_argument("--region-map", default=os.environ.get("VOXGATE_REGION_MAP"),
                   help="regions, their relays and how clients are placed: a JSON/YAML file, or 'redis' (docs/architecture.md)")
    x.set_defaults(func=cmd_transceiver)

    add_sip_args(x, demo=False)
    add_limit_args(x)
    x.add_argument("--trusted-proxy", action="append", default=[], metavar="CIDR",
                   help="a load balancer or ingress in front: the client address of the per-address limits is then "
                        "the last X-Forwarded-For hop outside these networks (repeatable)")

    f = sub.add_parser("fleet", help="print the transceiver fleet registered in Redis, as JSON")
    f.add_argument("--redis-url", required=True)
    f.add_argument("--compact", action="store_true", help="one line")
    f.set_defaults(func=cmd_fleet)

    ld = sub.add_parser("load", help="many real calls at a deployment (voxgate's or OpenAI-compatible), a spoken "
                                     "question on a loop in each: setup and turn percentiles, loss and jitter both "
                                     "ways, errors by kind, the server's /metrics before and after")
    ld.add_argument("--url", required=True, help="the signaling base URL, e.g. http://127.0.0.1:8080")
    ld.add_argument("--calls", type=int, default=10, help="calls in all (at most 1000)")
    ld.add_argument("--ramp", type=float, default=5.0, help="seconds over which the calls start, evenly")
    ld.add_argument("--seconds", type=float, default=30.0, help="seconds each call lasts (at most 3600)")
    ld.add_argument("--transport", choices=("webrtc", "websocket", "sip"), default="webrtc")
    ld.add_argument("--sip", metavar="HOST:PORT", help="with --transport sip: where to send the INVITEs")
    ld.add_argument("--wav", help="the question (a 16-bit WAV; default: the embedded voice asks one)")
    ld.add_argument("--listen", type=float, default=4.0, help="seconds each call listens after the question")
    ld.add_argument("--api-key", default=os.environ.get("VOXGATE_API_KEY") or os.environ.get("OPENAI_API_KEY"))
    ld.add_argument("--json", action="store_true", help="the report as one JSON object")
    ld.set_defaults(func=cmd_load)

    c = sub.add_parser("call", help="place a WebRTC call (or a WebSocket session) from a WAV file and record the reply")
    c.add_argument("--url", required=True, help="transceiver base URL, e.g. http://127.0.0.1:8080")
    c.add_argument("--input", required=True, help="WAV to send as the microphone")
    c.add_argument("--output", required=True, help="WAV to write what comes back to")
    c.add_argument("--api-key", default=os.environ.get("VOXGATE_API_KEY"))
    c.add_argument("--event", action="append", help="JSON event to send on oai-events once it opens (repeatable)")
    c.add_argument("--session", help="session JSON: send the offer as multipart with a session part")
    c.add_argument("--duration", type=float, help="seconds to stay in the call (default: the WAV's length + 1)")
    c.add_argument("--header", action="append", default=[], metavar="NAME:VALUE", help="extra HTTP header on the offer")
    c.add_argument("--ping", type=int, default=0, metavar="N",
                   help="send N pings on the data channel (echo agent) and report their round trip (rtt_ms)")
    c.add_argument("--api", choices=("realtime", "live"), default="realtime",
                   help="the API to speak: OpenAI's Realtime (default) or GPT-Live (/v1/live/sessions; --session is "
                        "then the Live session object, default {\"model\": \"gpt-live-1\"})")
    c.add_argument("--transport", choices=("webrtc", "websocket"), default="webrtc",
                   help="webrtc (a call, Opus over the relay) or websocket (GET /v1/realtime, PCM in JSON events)")
    c.add_argument("--primary-only", action="store_true",
                   help="drop the answer's backup candidates (another region's relay) before connecting")
    c.set_defaults(func=cmd_call)

    lab = sub.add_parser("lab", help="measure steering in a world of network namespaces on this machine (root)")
    lsub = lab.add_subparsers(dest="lab_command", required=True)
    g = lsub.add_parser("geo", help="two regions, clients near and far, a relay killed mid-call")
    g.add_argument("--near-ms", type=float, default=5.0, help="client <-> its region's relay, one way")
    g.add_argument("--far-ms", type=float, default=70.0, help="client <-> the other region, one way")
    g.add_argument("--backbone-ms", type=float, default=30.0, help="region <-> region, one way")
    g.add_argument("--jitter-ms", type=float, default=0.0, help="uniform jitter on the delayed links")
    g.add_argument("--loss", type=float, default=0.0, help="packet loss on the delayed links, 0..1")
    g.add_argument("--rounds", type=int, default=2, help="steered / forced-far call pairs")
    g.add_argument("--no-failover", action="store_true", help="skip the Chromium failover")
    g.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    g.set_defaults(func=cmd_lab_geo)
    fw = lsub.add_parser("firewall", help="a client whose network drops UDP calls the demo over ICE-TCP (Chromium)")
    fw.add_argument("--json", action="store_true", help="print one JSON object instead of the lines")
    fw.add_argument("--no-restart", action="store_true", help="skip killing the relay's TCP front mid-call")
    fw.add_argument("--no-tls", action="store_true", help="skip the TLS-only network (coturn on 443)")
    fw.set_defaults(func=cmd_lab_firewall)

    t = sub.add_parser("token", help="mint or inspect routing tokens (server ufrags)")
    tsub = t.add_subparsers(dest="token_command", required=True)
    m = tsub.add_parser("mint", help="print a fresh server ufrag routing to a transceiver")
    m.add_argument("--secret-file")
    m.add_argument("--transceiver", type=parse_hostport, required=True, help="transceiver media HOST:PORT")
    m.set_defaults(func=cmd_token_mint)
    i = tsub.add_parser("inspect", help="show what a ufrag carries and whether it verifies")
    i.add_argument("--secret-file")
    i.add_argument("--max-age", type=float, default=DEFAULT_MAX_AGE)
    i.add_argument("ufrag")
    i.set_defaults(func=cmd_token_inspect)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    for noisy in ("aioice", "aiortc"):  # per-check and per-state INFO lines; voxgate's own log says what matters
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    if getattr(args, "llm", None):  # a gguf of the user's own, on the same llama.cpp runtime
        if not os.path.isfile(args.llm):
            sys.exit(f"voxgate: --llm {args.llm}: no such file")
        args.responder = "gguf:" + os.path.abspath(args.llm)
    if hasattr(args, "otlp_endpoint"):  # the commands that make calls: traces if configured, the standard way too
        from . import tracing

        if tracing.configure(args.otlp_endpoint, service=f"voxgate-{args.command}"):
            import atexit

            atexit.register(tracing.shutdown)
            logging.getLogger("voxgate").warning("tracing: OTLP to %s", args.otlp_endpoint or
                                                 os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
