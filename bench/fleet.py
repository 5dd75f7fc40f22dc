"""The fleet on one machine: what placement costs, how calls spread, what a relay kill costs a live call.

One redis-server, two `voxgate relay` processes on one public port, and transceivers with `--redis-url`:
an entry transceiver started with `--capacity 0` (it answers no call itself, so every offer it gets is placed
elsewhere and proxied) and two that take calls. Calls are real (aiortc, in-process, `voxgate.client.call`).

- setup: a placed call (offer POSTed to the entry, proxied) against a direct one (POSTed to the transceiver
  itself, with the placement header so it answers at once), interleaved: answer and DTLS-connected times;
- spread: calls POSTed to the entry one after another: how many each transceiver holds (max/min);
- failover: a call that talks for the whole time; the relay carrying it is SIGKILLed mid-call; the longest audio gap
  each way (heard by the client; heard by the transceiver), and whether the call survived.

    python bench/fleet.py [--rounds 10] [--spread 12] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

from common import free_port  # first: it puts src/ on the path

from voxgate.lab.peers import CallProcess, RedisServer, RelayProcess, TransceiverProcess, long_speech_wav, metric_value, wait_for
from voxgate.client.call import place_call
from voxgate.transceiver.placing import PLACED
from voxgate.wire.token import new_secret_line


def _median(xs):
    return round(statistics.median(xs), 1) if xs else None


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=10, help="placed/direct call pairs")
    ap.add_argument("--spread", type=int, default=12, help="calls sent to the entry for the spread")
    ap.add_argument("--json", help="write the results here too")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="voxgate-fleet-"))
    secret = tmp / "secret"
    secret.write_text(new_secret_line(1) + "\n")
    short = long_speech_wav(tmp / "short.wav", 1.0)
    talk = long_speech_wav(tmp / "talk.wav", 10.0)
    redis = RedisServer(tmp / "redis")
    port = free_port()
    relays = [RelayProcess(port, secret, redis_url=redis.url, metrics_port=free_port()) for _ in range(2)]
    entry = TransceiverProcess(secret, relay_port=port, redis_url=redis.url, id="entry", extra=("--capacity", "0"))
    txs = [TransceiverProcess(secret, relay_port=port, redis_url=redis.url, id=f"tx{i}") for i in range(2)]
    out: dict = {}
    try:
        # ------------------------------------------------------------ placed vs direct setup
        placed, direct = {"answer": [], "dtls": []}, {"answer": [], "dtls": []}
        for _ in range(args.rounds):
            for kind, url, headers in (("placed", entry.url, None), ("direct", txs[0].url, {PLACED: "bench"})):
                r = asyncio.run(place_call(url, short, str(tmp / "o.wav"), duration=0.3, headers=headers))
                into = placed if kind == "placed" else direct
                into["answer"].append(r["setup"]["answer_ms"])
                into["dtls"].append(r["setup"]["dtls_connected_ms"])
        out["setup_ms"] = {k: {"answer_p50": _median(v["answer"]), "dtls_connected_p50": _median(v["dtls"])}
                           for k, v in (("placed", placed), ("direct", direct))}
        out["setup_ms"]["placed_minus_direct_p50"] = {
            "answer": round(out["setup_ms"]["placed"]["answer_p50"] - out["setup_ms"]["direct"]["answer_p50"], 1),
            "dtls_connected": round(out["setup_ms"]["placed"]["dtls_connected_p50"]
                                    - out["setup_ms"]["direct"]["dtls_connected_p50"], 1)}
        wait_for(lambda: all(t.health()["sessions"] == 0 for t in txs), timeout=10)

        # ------------------------------------------------------------ spread
        calls = []
        for i in range(args.spread):  # one after another, each placed before the next is sent
            calls.append(CallProcess(entry.url, talk, tmp / f"s{i}.wav", "--duration", "15"))
            wait_for(lambda: sum(t.health()["sessions"] for t in txs) >= i + 1, timeout=20)
        per = dict.fromkeys((t.ready["id"] for t in txs), 0)
        for c in calls:
            per[c.result()["holder"]] += 1
        out["spread"] = {"calls": args.spread, "per_transceiver": per, "max": max(per.values()),
                         "min": min(per.values())}
        wait_for(lambda: all(t.health()["sessions"] == 0 for t in txs), timeout=10)

        # ------------------------------------------------------------ failover
        call = CallProcess(entry.url, talk, tmp / "heard.wav")
        wait_for(lambda: sum(t.health()["sessions"] for t in txs) == 1, timeout=20)
        time.sleep(3.0)
        def to_client():
            return [metric_value(r.metrics(), "voxgate_relay_packets_total", direction="to_client") for r in relays]

        before = to_client()
        time.sleep(1.5)  # the relay whose reply count grows is the one carrying this call
        grew = [after - b for after, b in zip(to_client(), before)]
        carrying = relays[grew.index(max(grew))]
        carrying.kill(wait_workers=False)
        relays.remove(carrying)
        r = call.result()
        out["failover"] = {"gap_in_ms": r["max_gap_in_ms"], "gap_out_ms": r["max_gap_out_ms"],
                           "survived": r["packets_received"] > 0.8 * r["packets_sent"] and r["hangup_status"] == 200,
                           "packets_sent": r["packets_sent"], "packets_received": r["packets_received"],
                           "route_changes": r["server"].get("route_changes")}
    finally:
        for t in [entry, *txs]:
            t.stop()
        for rp in relays:
            rp.stop()
        redis.stop()
    print(json.dumps(out, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
