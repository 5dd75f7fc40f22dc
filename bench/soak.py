"""A soak that proves nothing leaks: calls coming and going for M minutes, and what the processes hold at the start
and the end.

A fleet of one on loopback: redis-server, a relay (``--redis-url``), a transceiver (``--redis-url``, the relay in
front, ``--agent voice --responder scripted``, phone calls on ``--sip-listen`` with a 5 s media timeout). Each
cycle (about ``CYCLE_S``):

- real calls through ``voxgate.client.load``: WebRTC through the relay, Realtime WebSockets, SIP, each asking a
  spoken question and hearing the answer, and hanging up;
- calls killed mid-call: a WebRTC call that stops without a hangup (consent expires), a WebSocket dropped without a
  close, a phone call whose RTP stops without a BYE (the media timeout ends it);
- garbage: random datagrams at the relay and the media socket, a bad SDP, a WebSocket's unparseable events, a
  malformed SIP request.

Measured after a warm-up cycle and again at the end, once the calls are gone (``SETTLE_S``): the transceiver's
and the relay's RSS and open descriptors (/proc), the transceiver's asyncio tasks and live sessions (/metrics), and
the keys in Redis. Bounded by its minutes; every call by its seconds.

    python bench/soak.py [--minutes 20] [--warmup 40]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import common  # noqa: F401  (the source tree on the path)

from voxgate.lab.peers import metric_value  # noqa: E402

CYCLE_S = 12.0
WARMUP = 3  # cycles before the start sample: the recognizer pool (up to 8) and the allocators' arenas fill
SETTLE_S = 40.0  # past the consent timeout (30 s): a WebRTC call killed mid-call is reaped by then
# what may differ between two samples taken alike (after SETTLE_S of quiet): Redis holds the flows of the last
# minute (their TTL), a cycle's worth give or take
BOUNDS = {"transceiver_rss_mb": 40.0, "relay_rss_mb": 10.0, "transceiver_fds": 8, "relay_fds": 4, "asyncio_tasks": 8,
          "sessions": 0, "redis_keys": 16}


def _proc(pid: int) -> tuple[float, int]:
    with open(f"/proc/{pid}/status") as fh:
        rss = next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:")) / 1024
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def sample(tx, relay, redis_port: int) -> dict:
    with urllib.request.urlopen(tx.url + "/metrics", timeout=5) as r:
        text = r.read().decode()
    t_rss, t_fds = _proc(tx.proc.pid)
    r_rss = r_fds = 0.0
    for w in [relay.proc.pid] + [w["pid"] for w in relay.ready.get("workers", [])]:
        rss, fds = _proc(w)
        r_rss, r_fds = r_rss + rss, r_fds + fds
    with socket.create_connection(("127.0.0.1", redis_port), 2) as s:
        s.sendall(b"DBSIZE\r\n")
        keys = int(s.recv(64).strip()[1:])
    return {"transceiver_rss_mb": round(t_rss, 1), "transceiver_fds": t_fds, "relay_rss_mb": round(r_rss, 1),
            "relay_fds": int(r_fds), "asyncio_tasks": int(metric_value(text, "voxgate_transceiver_asyncio_tasks")),
            "sessions": int(metric_value(text, "voxgate_transceiver_sessions")), "redis_keys": keys}


async def garbage(tx, relay_port: int, media_port: int, sip_port: int) -> None:
    import aiohttp

    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for _ in range(50):
        s.sendto(os.urandom(random.randint(1, 300)), ("127.0.0.1", relay_port))
        s.sendto(os.urandom(random.randint(1, 300)), ("127.0.0.1", media_port))
    s.sendto(b"INVITE sip:x SIP/2.0\r\nVia: nonsense\r\n\r\n", ("127.0.0.1", sip_port))
    s.close()
    async with aiohttp.ClientSession() as http:
        async with http.post(tx.url + "/v1/realtime/calls", data="v=0\r\nnot sdp",
                             headers={"Content-Type": "application/sdp"}) as r:
            assert r.status == 400, r.status
        ws = await http.ws_connect(tx.url.replace("http", "ws") + "/v1/realtime?model=x")
        await ws.send_str("{not json")
        await ws.send_str(json.dumps({"type": "no.such.event"}))
        await ws.send_str(json.dumps({"type": "session.update", "session": {"voice": 7}}))
        await asyncio.sleep(0.2)
        await ws.close()


async def killed(tx, sip_port: int, wav: str) -> None:
    """Calls that end without goodbye: each transport's task cancelled mid-call."""
    from voxgate.client import load

    sched = load.Schedule(load.read_wav_16k(wav), 2.0)
    packets = load.opus_packets(sched)
    calls = [load.webrtc_call(tx.url, None, sched, 30, load.CallStats(), packets),
             load.websocket_call(tx.url, None, sched, 30, load.CallStats()),
             load.sip_call(("127.0.0.1", sip_port), sched, 30, load.CallStats())]
    tasks = [asyncio.ensure_future(c) for c in calls]
    await asyncio.sleep(4)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def cycle(tx, relay_port, media_port, sip_port, wav) -> dict:
    from voxgate.client import load

    results = await asyncio.gather(
        load.run(tx.url, 2, 1, 8, "webrtc", wav, 2.0),
        load.run(tx.url, 2, 1, 8, "websocket", wav, 2.0),
        load.run(tx.url, 2, 1, 8, "sip", wav, 2.0, sip=("127.0.0.1", sip_port)),
        killed(tx, sip_port, wav), garbage(tx, relay_port, media_port, sip_port))
    return {r["transport"]: (r["connected"], r["turn_ms"]["n"], r["errors"]) for r in results[:3]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=20.0)
    ap.add_argument("--warmup", type=int, default=40, help="cycles before the start sample (40: about ten minutes, "
                                                           "what the transceiver's RSS took to flatten here)")
    ap.add_argument("--json", help="also write the result here")
    args = ap.parse_args()
    result = soak(args.minutes, lambda line: print(line, flush=True), args.warmup)
    if args.json:
        Path(args.json).write_text(json.dumps(result))
    return 0 if result["within_bounds"] else 1


def soak(minutes: float, say=print, warmup: int = WARMUP) -> dict:
    from voxgate.lab.peers import RedisServer, RelayProcess, TransceiverProcess, speech_wav
    from voxgate.lab.ports import free_port
    from voxgate.wire.token import new_secret_line

    tmp = Path(tempfile.mkdtemp(prefix="voxgate-soak-"))
    secret = tmp / "secret"
    secret.write_text(new_secret_line(3) + "\n")
    wav = speech_wav(tmp / "q.wav", "What is the capital of France?")
    redis = RedisServer(tmp / "redis")
    relay_port, sip_port = free_port(), free_port()
    relay = RelayProcess(relay_port, secret, redis_url=redis.url)
    tx = TransceiverProcess(secret, relay_port=relay_port, agent="voice", redis_url=redis.url, extra=(
        "--responder", "scripted", "--drain-timeout", "1", "--sip-listen", f"127.0.0.1:{sip_port}",
        "--sip-media-timeout", "5", "--sip-rate", "50", "--sip-global-rate", "100"))
    try:
        cycles, turns, errors = 0, 0, {}
        end = None  # the soak's minutes count from the sample after the warm-up
        start = None
        while True:
            summary = asyncio.run(cycle(tx, relay_port, tx.media_port, sip_port, wav))
            cycles += 1
            for transport, (up, n, errs) in summary.items():
                turns += n
                for k, v in errs.items():
                    errors[f"{transport}:{k}"] = errors.get(f"{transport}:{k}", 0) + v
            if start is None and cycles >= warmup:  # the models loaded, the recognizer pool filled
                time.sleep(SETTLE_S)
                start = sample(tx, relay, redis.port)
                say(f"start  {start}")
                end = time.monotonic() + minutes * 60
            elif start is not None and cycles % 10 == 0:
                say(f"  cycle {cycles}: {summary}  {sample(tx, relay, redis.port)}")
            if end is not None and time.monotonic() > end:
                break
        time.sleep(SETTLE_S)
        final = sample(tx, relay, redis.port)
        say(f"end    {final}")
        growth = {k: round(final[k] - start[k], 1) for k in start}
        within = all(growth[k] <= BOUNDS[k] for k in BOUNDS)
        say(f"growth {growth}  (bounds {BOUNDS}): {'within' if within else 'OUT OF'} bounds; {cycles} cycles, "
            f"{turns} turns answered, errors {errors or 'none'}")
        return {"minutes": minutes, "cycles": cycles, "turns": turns, "errors": errors, "start": start,
                "end": final, "growth": growth, "bounds": BOUNDS, "within_bounds": within}
    finally:
        tx.stop()
        relay.stop()
        redis.stop()


if __name__ == "__main__":
    sys.exit(main())
