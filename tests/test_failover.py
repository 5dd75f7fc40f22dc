"""A relay that dies mid-call loses no call: real calls (`voxgate call`, aiortc in its own process) through real
relay and transceiver processes, audio checked in both directions."""

import os
import signal
import time

import pytest

from helpers import (CallProcess, RelayProcess, TransceiverProcess, assert_audio_both_ways, free_port, long_speech_wav,
                     metric_value, wait_for)


@pytest.fixture(params=["c", "python"])
def fast_path(request):
    return {"VOXGATE_PURE_PYTHON": "1"} if request.param == "python" else {}


def _connected(tx, n=1):
    return wait_for(lambda: tx.health()["sessions"] >= n and tx.get("/metrics")[0] == 200, timeout=20)


def test_a_restarted_relay_carries_the_call_both_ways(secret_file, redis_server, tmp_path, fast_path):
    """The defect this guards: the new relay learned the flow from Redis and forwarded the client's packets, but
    the transceiver kept replying to the dead relay's socket, so the caller heard nothing from then on."""
    wav = long_speech_wav(tmp_path / "talk.wav", 9.0)
    port = free_port()
    relay = RelayProcess(port, secret_file, redis_url=redis_server.url, env=fast_path)
    tx = TransceiverProcess(secret_file, relay_port=port)
    try:
        call = CallProcess(tx.url, wav, tmp_path / "heard.wav")
        assert _connected(tx)
        time.sleep(2.0)
        killed = time.monotonic()
        relay.kill(wait_workers=False)  # SIGKILL: the supervisor and its workers are gone at once
        time.sleep(0.5)
        relay = RelayProcess(port, secret_file, redis_url=redis_server.url, metrics_port=free_port(), env=fast_path)
        outage_ms = (time.monotonic() - killed) * 1000  # no relay on the port: nothing can flow, either way
        result = call.result()
        # both directions come back with the new relay: the gap is the outage, plus at most half a second
        assert_audio_both_ways(result, max_gap_ms=outage_ms + 500)
        assert result["server"]["route_changes"] >= 1, result["server"]  # replies moved to the new relay
        text = relay.metrics()
        assert metric_value(text, "voxgate_relay_flows_learned_total", source="store") >= 1
        assert metric_value(text, "voxgate_relay_packets_total", direction="to_client") > 100  # the reply path
    finally:
        relay.stop()
        tx.stop()


def test_a_replaced_worker_carries_the_call_both_ways(secret_file, redis_server, tmp_path):
    wav = long_speech_wav(tmp_path / "talk.wav", 9.0)
    relay = RelayProcess(free_port(), secret_file, workers=2, redis_url=redis_server.url, metrics_port=free_port())
    tx = TransceiverProcess(secret_file, relay_port=relay.port)
    try:
        call = CallProcess(tx.url, wav, tmp_path / "heard.wav")
        assert _connected(tx)
        time.sleep(1.5)
        # the worker that carries the call: the one with a flow
        per_worker = wait_for(lambda: {int(line.split('pid="')[1].split('"')[0]): float(line.rpartition(" ")[2])
                                       for line in relay.metrics().splitlines()
                                       if line.startswith("voxgate_relay_worker_flows{")
                                       and float(line.rpartition(" ")[2]) > 0})
        victim = next(iter(per_worker))
        os.kill(victim, signal.SIGKILL)
        result = call.result()
        assert_audio_both_ways(result)
        assert result["server"]["route_changes"] >= 1, result["server"]
        assert relay.health()[1]["restarts"] == 1
    finally:
        relay.stop()
        tx.stop()
