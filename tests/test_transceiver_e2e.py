"""Relay + transceiver as real processes, real WebRTC clients (aiortc via `voxgate call`) in their own processes."""

import json
import subprocess
import sys
import time

import pytest

from helpers import RelayProcess, TransceiverProcess, free_port, metric_value, run_call, speech_wav, wait_for, wav_rms, wav_seconds


@pytest.fixture
def stack(secret_file):
    relay = RelayProcess(free_port(), secret_file, workers=2, metrics_port=free_port())
    tx = TransceiverProcess(secret_file, relay_port=relay.port)
    yield relay, tx
    tx.stop()
    relay.stop()


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    return speech_wav(tmp_path_factory.mktemp("audio") / "speech.wav")


def test_aiortc_call_through_relay_echoes_speech_and_events(stack, speech, tmp_path):
    relay, tx = stack
    assert tx.ready["candidates"] == [f"127.0.0.1:{relay.port}"]
    out = tmp_path / "echo.wav"
    res = run_call(tx.url, speech, out, "--event", '{"type": "session.update", "session": {}}')
    setup = res["setup"]
    for stage in ("answer_ms", "ice_connected_ms", "dtls_connected_ms", "datachannel_open_ms", "first_audio_ms"):
        assert stage in setup, setup
    assert setup["dtls_connected_ms"] < 1000
    assert res["packets_sent"] > 50 and res["packets_received"] >= 0.9 * res["packets_sent"], res
    assert res["events"] == [{"type": "echo", "event": {"type": "session.update", "session": {}}}]
    assert res["hangup_status"] == 200
    # the echo carries the speech back: same loudness within a factor of 3, and as long
    assert wav_seconds(out) >= 0.8 * wav_seconds(speech)
    assert wav_rms(out) > wav_rms(speech) / 3
    # every packet went through the relay, both ways
    text = relay.metrics()
    assert metric_value(text, "voxgate_relay_packets_total", direction="to_client") >= res["packets_received"]
    assert metric_value(text, "voxgate_relay_drops_total") == 0
    assert wait_for(lambda: tx.health()["sessions"] == 0)


def test_twenty_concurrent_calls_share_one_socket(stack, speech, tmp_path):
    relay, tx = stack
    script = f"""
import asyncio, json, sys
from voxgate.client.call import place_call
async def main():
    res = await asyncio.gather(*[place_call({tx.url!r}, {speech!r}, {str(tmp_path)!r} + f"/out{{i}}.wav", duration=3.0)
                                 for i in range(20)])
    print(json.dumps(res))
asyncio.run(main())
"""
    before = tx.health()
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    live = wait_for(lambda: tx.health()["sessions"] == 20, timeout=20)
    assert live, tx.health()
    # all 20 calls, one UDP socket in the transceiver
    sockets = subprocess.run(["ss", "-uanp"], capture_output=True, text=True).stdout
    mine = [l for l in sockets.splitlines() if f"pid={tx.proc.pid}," in l]
    assert len(mine) == 1, mine
    out, err = proc.communicate(timeout=90)
    assert proc.returncode == 0, err[-2000:]
    results = json.loads(out)
    assert len(results) == 20
    for r in results:
        assert r["packets_received"] >= 0.8 * r["packets_sent"] > 0, r
    assert wait_for(lambda: tx.health()["sessions"] == 0, timeout=10)
    after = wait_for(lambda: (h := tx.health())["tasks"] <= before["tasks"] and h, timeout=10)
    assert after, (before, tx.health())  # no leaked tasks
    assert tx.health()["fds"] <= before["fds"]  # no leaked sockets or files
    # no leaked memory held by calls: once collected, not one of the 20 call objects is left
    assert json.loads(tx.get("/healthz?gc")[1])["session_objects"] == 0


def test_bad_requests_get_clear_errors(secret_file):
    tx = TransceiverProcess(secret_file, extra=["--api-key", "sk-test"])
    try:
        status, _, body = tx.post("/v1/realtime/calls", b"v=0\r\n", {"Content-Type": "application/sdp"})
        assert status == 401 and json.loads(body)["error"]["code"] == "invalid_api_key"
        auth = {"Authorization": "Bearer sk-test"}
        status, _, body = tx.post("/v1/realtime/calls", b"hello", {**auth, "Content-Type": "application/sdp"})
        err = json.loads(body)["error"]
        assert status == 400 and "v=0" in err["message"] and err["param"] == "sdp"
        status, _, body = tx.post("/v1/realtime/calls", b"{}", {**auth, "Content-Type": "application/json"})
        assert status == 400 and "Content-Type" in json.loads(body)["error"]["message"]
        status, _, body = tx.post("/v1/realtime/calls/rtc_nope/hangup", b"", auth)
        assert status == 404
        # client secrets: minted with the API key, then usable (only) for calls
        status, _, body = tx.post("/v1/realtime/client_secrets", b'{"expires_after": {"seconds": 60}}', auth)
        secret = json.loads(body)
        assert status == 200 and secret["value"].startswith("ek_") and secret["expires_at"] > time.time()
        ek = {"Authorization": f"Bearer {secret['value']}"}
        status, _, _ = tx.post("/v1/realtime/client_secrets", b"{}", ek)
        assert status == 401
        status, _, body = tx.post("/v1/realtime/calls", b"hello", {**ek, "Content-Type": "application/sdp"})
        assert status == 400  # authorized, and then the SDP is rejected
        # CORS preflight, as the Agents SDK sends from another origin
        req = __import__("urllib.request").request.Request(tx.url + "/v1/realtime/calls", method="OPTIONS")
        with __import__("urllib.request").request.urlopen(req) as r:
            assert r.status == 204 and "Location" in r.headers["Access-Control-Expose-Headers"]
    finally:
        tx.stop()


def test_unconnected_calls_are_reaped_and_sigterm_drains(secret_file, speech, tmp_path):
    from aiortc import RTCPeerConnection
    import asyncio

    async def offer():
        pc = RTCPeerConnection()
        pc.addTransceiver("audio")
        await pc.setLocalDescription(await pc.createOffer())
        sdp = pc.localDescription.sdp
        await pc.close()
        return sdp

    sdp = asyncio.run(offer()).encode()
    tx = TransceiverProcess(secret_file, extra=["--setup-timeout", "1", "--drain-timeout", "4"])
    try:
        status, headers, _ = tx.post("/v1/realtime/calls", sdp, {"Content-Type": "application/sdp"})
        assert status == 201 and headers["Location"].startswith("/v1/realtime/calls/rtc_")
        assert tx.health()["sessions"] == 1
        assert wait_for(lambda: tx.health()["sessions"] == 0, timeout=5)  # never connected: reaped
        assert "setup_timeout" in tx.get("/metrics")[1].decode()
        # a live call, then SIGTERM: new calls get 503, the live one keeps its audio until the deadline
        call = subprocess.Popen([sys.executable, "-m", "voxgate", "call", "--url", tx.url, "--input", speech,
                                 "--output", str(tmp_path / "o.wav"), "--duration", "3"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert wait_for(lambda: tx.health()["sessions"] == 1, timeout=10)
        time.sleep(0.5)
        tx.proc.send_signal(__import__("signal").SIGTERM)
        assert wait_for(lambda: tx.post("/v1/realtime/calls", sdp, {"Content-Type": "application/sdp"})[0] == 503)
        out, err = call.communicate(timeout=30)
        res = json.loads(out.strip().splitlines()[-1])
        assert res["packets_received"] > 100, res  # kept flowing through the drain
        assert tx.proc.wait(10) == 0
    finally:
        tx.stop()


def test_multipart_offer_with_session_in_direct_mode(secret_file, speech, tmp_path):
    """The server-side form of the Realtime flow: multipart sdp + session; no relay (direct mode)."""
    tx = TransceiverProcess(secret_file)
    try:
        assert tx.ready["candidates"] == [tx.ready["media"]]
        res = run_call(tx.url, speech, tmp_path / "o.wav", "--duration", "2",
                       "--session", '{"type": "realtime", "instructions": "be brief"}')
        assert res["packets_received"] > 50 and res["hangup_status"] == 200
    finally:
        tx.stop()
