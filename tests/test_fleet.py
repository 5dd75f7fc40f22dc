"""The fleet on one machine: one Redis, two relays on one public port, three transceivers; real calls."""

import json
import signal
import time

import pytest

from helpers import (CallProcess, RelayProcess, TransceiverProcess, assert_audio_both_ways, fleet, free_port,
                     launch_chromium, long_speech_wav, wait_for)
from voxgate.steering.placement import DRAINING, READY, Member, MemberError, call_id, owner_of, place


def member(id, sessions=0, capacity=10, state=READY, region="eu"):
    return Member(id=id, region=region, media="10.0.0.1:40000", url=f"http://{id}", sessions=sessions,
                  capacity=capacity, state=state, updated=1.0)


def test_placement_prefers_the_least_loaded_ready_transceiver_of_the_region():
    ms = [member("a", 3), member("b", 1), member("c", 1, capacity=2), member("d", 0, state=DRAINING),
          member("e", 5, capacity=5), member("f", 0, region="us")]
    assert [m.id for m in place(ms, "eu")] == ["b", "a", "c"]  # d draining, e full, f elsewhere; c is half full
    assert [m.id for m in place([member("a"), member("b")], "eu", prefer="b")][0] == "b"  # a tie: no proxy hop
    assert place(ms, "ap") == []


def test_member_records_round_trip_and_refuse_junk():
    m = member("a1", 2)
    assert Member.from_fields({k.encode(): v.encode() for k, v in m.to_fields().items()}) == m
    for bad in ({}, {**m.to_fields(), "sessions": "x"}, {**m.to_fields(), "state": "gone"},
                {**m.to_fields(), "id": "Bad-Id"}):
        with pytest.raises(MemberError):
            Member.from_fields(bad)
    assert owner_of(call_id("a1", "ff00")) == "a1"
    assert owner_of("rtc_0123456789abcdef0123") is None and owner_of("rtc_a_b_c") is None


def _by_id(redis_url):
    return {m["id"]: m for m in fleet(redis_url)}


def test_fleet_spreads_calls_survives_a_relay_kill_and_drains(playwright, secret_file, redis_server, tmp_path):
    wav = long_speech_wav(tmp_path / "talk.wav", 24.0)  # calls outlast a slow start (3x slower than here)
    port = free_port()
    relays = [RelayProcess(port, secret_file, redis_url=redis_server.url, metrics_port=free_port()) for _ in range(2)]
    txs = [TransceiverProcess(secret_file, relay_port=port, redis_url=redis_server.url, id=f"tx{i}")
           for i in range(3)]
    entry = txs[0]  # every call is sent to this one's URL
    browser = None
    calls = []
    try:
        assert wait_for(lambda: len(fleet(redis_server.url)) == 3, timeout=10)
        for i in range(5):
            calls.append(CallProcess(entry.url, wav, tmp_path / f"heard{i}.wav"))
            assert wait_for(lambda: sum(m["sessions"] for m in fleet(redis_server.url)) >= min(i + 1, 3), timeout=30)
        browser = launch_chromium(playwright, wav)
        page = browser.new_page()
        page.goto(entry.url + "/")
        page.evaluate("start({})")
        page.wait_for_function("window.voxgate.state === 'connected'", timeout=15000)
        chromium_call = page.evaluate("window.voxgate.callId")

        # six calls over three transceivers, all sent to one URL: spread evenly (2/2/2 when every call is still live;
        # on a slow machine the first may have ended by now)
        members = _by_id(redis_server.url)
        live = sorted(m["sessions"] for m in members.values())
        assert live[0] >= 1 and live[-1] - live[0] <= 1 and sum(live) >= 4, members
        assert all(m["state"] == "ready" and m["region"] == "default" for m in members.values())
        # the browser's call lives wherever it was placed, and its URL works through the entry transceiver
        status, body = entry.get(f"/v1/realtime/calls/{chromium_call}")
        assert status == 200 and json.loads(body)["id"] == chromium_call

        # mid-call: one relay SIGKILLed, one transceiver drained
        time.sleep(2.0)
        relays[0].kill(wait_workers=False)
        draining = txs[2]
        draining.proc.send_signal(signal.SIGTERM)
        assert wait_for(lambda: _by_id(redis_server.url)["tx2"]["state"] == DRAINING, timeout=5)
        assert draining.get("/readyz")[0] == 503 and draining.get("/livez")[0] == 200
        # new calls avoid the draining transceiver, even when sent to it
        late = CallProcess(draining.url, wav, tmp_path / "late.wav", "--duration", "3")
        browser_samples = []
        deadline = time.monotonic() + 9
        while time.monotonic() < deadline:  # the browser's received packets over time, for its audio gap
            s = page.evaluate("inboundAudio().then(s => s && s.packetsReceived)")
            browser_samples.append((time.monotonic(), s or 0))
            time.sleep(0.1)
        late_result = late.result()
        assert late_result["holder"] in ("tx0", "tx1"), late_result["holder"]
        results = [c.result() for c in calls]
        for r in results:
            assert_audio_both_ways(r)  # every call kept its audio both ways through the relay kill and the drain
        assert {r["holder"] for r in results} == {"tx0", "tx1", "tx2"}
        # the browser kept hearing: its packet count never stalled for a second
        stalls, last_change = [], browser_samples[0]
        for t, n in browser_samples[1:]:
            if n != last_change[1]:
                stalls.append(t - last_change[0])
                last_change = (t, n)
        stalls.append(browser_samples[-1][0] - last_change[0])
        assert browser_samples[-1][1] > browser_samples[0][1] + 200, browser_samples[-1]
        assert max(stalls) < 1.2, max(stalls)  # 100 ms sampling on top of the 1 s target
        status, body = entry.get(f"/v1/realtime/calls/{chromium_call}")
        server_view = json.loads(body)
        assert server_view["max_audio_in_gap_ms"] < 1000, server_view  # what the browser sent kept arriving
        page.evaluate("hangup()")
        # the drained transceiver leaves once its calls are gone
        assert draining.proc.wait(30) == 0
        assert set(_by_id(redis_server.url)) == {"tx0", "tx1"}
    finally:
        if browser is not None:
            browser.close()
        for c in calls:
            if c.proc.poll() is None:
                c.proc.kill()
        for t in txs:
            t.stop()
        for r in relays[1:]:
            r.stop()
