"""`voxgate load` against `voxgate demo --agent echo --sip`: real WebRTC, WebSocket and SIP calls, each with a spoken
question on a loop, and a report whose numbers agree with the server's own counters (short and small here; the
50-call run is in docs/performance.md)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

from helpers import free_port, running_demo, speech_wav


@pytest.fixture(scope="module")
def echo_demo():
    sip = free_port(socket.SOCK_DGRAM)
    with running_demo("--agent", "echo", "--no-tcp", "--sip", f"127.0.0.1:{sip}") as (url, _):
        yield url.rsplit("/demo", 1)[0], sip


@pytest.mark.parametrize("transport", ["webrtc", "websocket", "sip"])
def test_voxgate_load_reports_real_calls(echo_demo, tmp_path, transport):
    url, sip = echo_demo
    wav = speech_wav(tmp_path / "q.wav", "What is the capital of France?")
    run = subprocess.run([sys.executable, "-m", "voxgate", "load", "--url", url, "--calls", "4", "--ramp", "1",
                          "--seconds", "7", "--listen", "2", "--transport", transport, "--sip", f"127.0.0.1:{sip}",
                          "--wav", wav, "--json"], capture_output=True, text=True, timeout=90)
    assert run.returncode == 0, run.stderr[-2000:]
    assert f"4 {transport} calls to" in run.stderr  # it says what it will do before it starts
    r = json.loads(run.stdout)
    assert r["connected"] == 4 and not r["errors"], r
    assert r["setup_ms"]["p50"] is not None and r["turn_ms"]["n"] >= 4, r  # each call heard its echo at least once
    p = r["packets"]
    assert p["sent"] > 4 * 5 / 0.02 * 0.8 and p["received"] > 0.8 * p["sent"], p
    if transport != "websocket":
        assert p["lost_to_us"] < 0.05 and p["jitter_ms_to_us"] is not None
    moved = r["server_metrics_moved"]
    if transport == "webrtc":  # the server counted what we sent (and STUN): the numbers agree
        assert moved['voxgate_transceiver_packets_total{direction="in"}'] >= p["sent"]
    assert any("calls_total" in k for k in moved), moved


def test_voxgate_load_is_bounded():
    run = subprocess.run([sys.executable, "-m", "voxgate", "load", "--url", "http://127.0.0.1:9", "--calls", "5000"],
                         capture_output=True, text=True, timeout=30)
    assert run.returncode != 0 and "--calls 1-1000" in run.stderr
