"""The attacks of docs/security.md, as tests: real relay and transceiver processes on loopback, bounded loops.

Who may touch what (a client secret only its own calls; phone controls and diagnostics a server key), what no
client can exhaust (calls, connections, slow requests, idle sessions, appended audio, the relay's flow table,
SIP call slots), and that bad input is a 4xx with a reason, never a 500 (a fuzz over every signaling endpoint).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import (CallProcess, RelayProcess, TransceiverProcess, aiortc_offer, assert_audio_both_ways,
                     binding_request, free_port, long_speech_wav, metric_value, wait_for)

KEY = "sk-security-test"
SIPP = Path(__file__).parent / "sipp"
_OFFER: list[bytes] = []


def offer() -> bytes:
    """A real aiortc offer (made once)."""
    if not _OFFER:
        _OFFER.append(aiortc_offer().encode())
    return _OFFER[0]


def req(tx, method: str, path: str, body: bytes | None = None, key: str | None = None,
        headers: dict | None = None) -> tuple[int, dict, bytes]:
    h = dict(headers or {})
    if key:
        h["Authorization"] = f"Bearer {key}"
    r = urllib.request.Request(tx.url + path, data=body, headers=h, method=method)
    try:
        with urllib.request.urlopen(r, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def client_secret(tx) -> str:
    status, _, body = req(tx, "POST", "/v1/realtime/client_secrets", b"{}", KEY, {"Content-Type": "application/json"})
    assert status == 200, body
    return json.loads(body)["value"]


def new_call(tx, key) -> tuple[int, str | None]:
    status, headers, body = req(tx, "POST", "/v1/realtime/calls", offer(), key, {"Content-Type": "application/sdp"})
    return status, headers.get("Location", "").rsplit("/", 1)[-1] or None


async def ws_status(url: str, key: str) -> int:
    import aiohttp

    async with aiohttp.ClientSession() as s:
        try:
            async with s.ws_connect(url, headers={"Authorization": f"Bearer {key}"}):
                return 101
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status


@pytest.fixture
def tx(secret_file):
    t = TransceiverProcess(secret_file, extra=["--api-key", KEY, "--setup-timeout", "60", "--calls-per-key", "3",
                                              "--drain-timeout", "1"])
    yield t
    t.stop()


# ------------------------------------------------------------------ who may touch what
def test_a_client_secret_acts_only_on_its_own_calls(tx):
    a, b = client_secret(tx), client_secret(tx)
    status, call = new_call(tx, a)
    assert status == 201 and call
    ws = tx.url.replace("http://", "ws://") + f"/v1/realtime?call_id={call}"
    # read: the owner and a server key; another client secret gets the 404 of a call that does not exist
    for key, want in ((a, 200), (KEY, 200), (b, 404), ("ek_forged", 401), (None, 401)):
        assert req(tx, "GET", f"/v1/realtime/calls/{call}", key=key)[0] == want, key
    # hang up and attach: not with another's secret
    assert req(tx, "POST", f"/v1/realtime/calls/{call}/hangup", b"", b)[0] == 404
    assert asyncio.run(ws_status(ws, b)) == 404
    assert req(tx, "GET", f"/v1/realtime/calls/{call}", key=a)[0] == 200  # still up
    # phone-call controls need a server key, whoever asks and whatever the call
    for verb, body in (("accept", {"type": "realtime"}), ("reject", {"status_code": 486}),
                       ("refer", {"target_uri": "tel:+19005550100"})):
        for key in (a, b):
            status, _, text = req(tx, "POST", f"/v1/realtime/calls/{call}/{verb}", json.dumps(body).encode(), key,
                                  {"Content-Type": "application/json"})
            assert status == 403 and b"server key" in text, (verb, key, status)
    # the owner hangs up its own; then nobody finds it
    assert req(tx, "POST", f"/v1/realtime/calls/{call}/hangup", b"", a)[0] == 200
    assert req(tx, "GET", f"/v1/realtime/calls/{call}", key=KEY)[0] == 404
    # a server key acts on a client's call
    status, call2 = new_call(tx, b)
    assert req(tx, "POST", f"/v1/realtime/calls/{call2}/hangup", b"", KEY)[0] == 200


def test_health_says_nothing_about_calls_without_a_server_key(tx):
    a = client_secret(tx)
    status, call = new_call(tx, a)
    assert status == 201
    for key in (None, a):
        for path in ("/healthz", "/healthz?calls", "/healthz?gc", "/healthz?calls&gc", "/readyz"):
            status, _, body = req(tx, "GET", path, key=key)
            got = json.loads(body)
            assert status == 200 and not {"calls", "sessions", "session_objects", "tasks", "fds"} & set(got), (path, got)
            assert call not in body.decode()
    full = json.loads(req(tx, "GET", "/healthz?calls&gc", key=KEY)[2])
    assert call in full["calls"] and full["sessions"] == 1 and "session_objects" in full


def test_unauthenticated_requests_cannot_slow_a_live_call(secret_file, tmp_path):
    """Four clients hammering /healthz?gc (anyone) and one with the key: the call's audio keeps flowing both ways
    (the defect: 120-155 ms collections on the event loop cost a call 37 % of its audio)."""
    wav = long_speech_wav(tmp_path / "talk.wav", 6.0)
    tx = TransceiverProcess(secret_file, agent="echo")  # --no-auth: every request may ask ?gc, rate-limited
    try:
        call = CallProcess(tx.url, wav, tmp_path / "heard.wav")
        assert wait_for(lambda: tx.health()["sessions"] == 1, timeout=20)
        stop = time.monotonic() + 4.0
        times: list[float] = []

        def hammer():
            while time.monotonic() < stop:
                t0 = time.perf_counter()
                tx.get("/healthz?gc")
                times.append(time.perf_counter() - t0)

        threads = [threading.Thread(target=hammer) for _ in range(5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        result = call.result()
        assert len(times) > 50  # they were served all along
        assert_audio_both_ways(result, max_gap_ms=200, min_ratio=0.9)
        got = json.loads(tx.get("/healthz?gc")[1])
        assert got["gc_ms"] < 60 and got["cached_s"] >= 0, got  # gc.freeze(): a collection walks calls' objects only
    finally:
        tx.stop()


# ------------------------------------------------------------------ what no client can exhaust
def test_one_client_secret_cannot_take_every_call_slot(tx):
    a, b = client_secret(tx), client_secret(tx)
    codes = [new_call(tx, a)[0] for _ in range(5)]
    assert codes == [201, 201, 201, 429, 429], codes
    status, call = new_call(tx, b)  # another browser still gets in
    assert status == 201
    assert req(tx, "POST", f"/v1/realtime/calls/{call}/hangup", b"", b)[0] == 200
    metrics = req(tx, "GET", "/metrics", key=KEY)[2].decode()
    assert metric_value(metrics, "voxgate_transceiver_limited_total", limit="calls_per_key") == 2


def test_a_thousand_offers_and_idle_websockets_from_one_client_leave_a_good_call_normal(secret_file, tmp_path):
    """One client secret's 1 100 offers and 1 000 idle WebSocket sessions from one address: the client gets its
    share (429 past it), and a good call from elsewhere connects as fast as before, audio both ways."""
    import aiohttp

    wav = long_speech_wav(tmp_path / "talk.wav", 3.0)
    tx = TransceiverProcess(secret_file, extra=["--api-key", KEY, "--drain-timeout", "1", "--setup-timeout", "60"])
    try:
        before = CallProcess(tx.url, wav, tmp_path / "before.wav", "--api-key", KEY).result()
        ek = client_secret(tx)
        many = [client_secret(tx) for _ in range(250)]  # 1 000 sessions at 4 each: the address's bound bites first

        async def flood():
            conn = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0), limit=200)
            async with aiohttp.ClientSession(connector=conn) as s:
                async def one_offer():
                    async with s.post(tx.url + "/v1/realtime/calls", data=offer(),
                                      headers={"Authorization": f"Bearer {ek}", "Content-Type": "application/sdp"}) as r:
                        return r.status

                offers = await asyncio.gather(*(one_offer() for _ in range(1100)))
                sockets, refused = [], 0
                for i in range(1000):
                    try:
                        sockets.append(await s.ws_connect(tx.url.replace("http", "ws") + "/v1/realtime?model=x",
                                                          headers={"Authorization": f"Bearer {many[i % 250]}"}))
                    except aiohttp.WSServerHandshakeError as exc:
                        assert exc.status == 429
                        refused += 1
                held = len(sockets)
                # the good call, while all of that is held
                after = await asyncio.to_thread(
                    lambda: CallProcess(tx.url, wav, tmp_path / "after.wav", "--api-key", KEY).result())
                for ws in sockets:
                    await ws.close()
                return offers, held, refused, after

        offers, held, refused, after = asyncio.run(asyncio.wait_for(flood(), 180))
        assert offers.count(201) == 4 and offers.count(429) == 1096, sorted(set(offers))
        assert (held, refused) == (96, 904), (held, refused)  # 100 per address, 4 of them the offers' calls
        assert_audio_both_ways(after)
        assert after["setup"]["ice_connected_ms"] < before["setup"]["ice_connected_ms"] + 500, (before, after)
        metrics = req(tx, "GET", "/metrics", key=KEY)[2].decode()
        assert metric_value(metrics, "voxgate_transceiver_limited_total", limit="calls_per_key") == 1096
        assert metric_value(metrics, "voxgate_transceiver_limited_total", limit="calls_per_address") == 904
        print(f"1100 offers: 4 taken, 1096 refused; {held} WebSocket sessions held, {refused} refused; "
              f"good call ICE {before['setup']['ice_connected_ms']} -> {after['setup']['ice_connected_ms']} ms")
    finally:
        tx.stop()


def test_slow_and_piled_up_connections_are_cut_and_a_good_call_gets_through(secret_file, tmp_path):
    """500 requests that never finish their headers, from one address, more than it may hold: the transceiver
    answers a good offer from elsewhere at once, and closes the slow ones at the header deadline."""
    tx = TransceiverProcess(secret_file, extra=["--api-key", KEY, "--drain-timeout", "1", "--header-timeout", "2",
                                                "--connections-per-address", "400"])
    socks = []
    try:
        for _ in range(500):
            s = socket.create_connection(("127.0.0.1", tx.http_port), source_address=("127.0.0.2", 0))
            s.sendall(b"POST /v1/realtime/calls HTTP/1.1\r\nHost: x\r\n")  # and then nothing
            socks.append(s)
        good = CallProcess(tx.url, long_speech_wav(tmp_path / "talk.wav", 3.0), tmp_path / "heard.wav",
                           "--api-key", KEY).result()
        assert_audio_both_ways(good)
        assert good["setup"]["answer_ms"] < 500 and good["setup"]["ice_connected_ms"] < 1000, good["setup"]
        time.sleep(2.5)
        closed = 0
        for s in socks:
            s.settimeout(0.01)
            try:
                closed += s.recv(1) == b""
            except ConnectionResetError:
                closed += 1
            except socket.timeout:
                pass
        assert closed >= 450, closed  # cut at the deadline (the ones over 400 from this address at once)
        metrics = req(tx, "GET", "/metrics", key=KEY)[2].decode()
        assert metric_value(metrics, "voxgate_transceiver_limited_total", limit="header_timeout") >= 350
        assert metric_value(metrics, "voxgate_transceiver_limited_total", limit="connections_per_address") >= 90
    finally:
        for s in socks:
            s.close()
        tx.stop()


def test_idle_websocket_sessions_are_closed_with_a_reason(secret_file):
    tx = TransceiverProcess(secret_file, extra=["--ws-idle-timeout", "1.5"])

    async def run():
        import aiohttp

        async with aiohttp.ClientSession() as s:
            async with s.ws_connect(tx.url.replace("http", "ws") + "/v1/realtime?model=x") as ws:
                t0 = time.monotonic()
                events = []
                async for msg in ws:
                    events.append(json.loads(msg.data))
                return events, time.monotonic() - t0, ws.close_code

    try:
        events, took, code = asyncio.run(asyncio.wait_for(run(), 15))
        assert any(e.get("type") == "error" and e["error"]["code"] == "session_idle" for e in events), events
        assert 1.2 < took < 5 and code == 1000
        assert wait_for(lambda: tx.health()["websocket_sessions"] == 0)
    finally:
        tx.stop()


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        return int(re.search(r"VmRSS:\s+(\d+)", fh.read()).group(1)) / 1024


def test_echo_over_websocket_and_six_huge_appends_stay_within_a_bound(secret_file):
    """The echo agent answers WebSocket audio (it crashed on any append of 200 ms or more), and six appends of the
    API's 15 MiB at once grow the process by less than the bound docs/security.md states (they took 1.3 GB)."""
    tx = TransceiverProcess(secret_file)
    one_second = base64.b64encode(os.urandom(48000)).decode()
    huge = base64.b64encode(os.urandom(11 * 1024 * 1024)).decode()  # 14.7 MiB of base64

    async def session(audio: str, want_delta: bool):
        import aiohttp

        async with aiohttp.ClientSession() as s:
            async with s.ws_connect(tx.url.replace("http", "ws") + "/v1/realtime?model=x", max_msg_size=0) as ws:
                await ws.send_str(json.dumps({"type": "input_audio_buffer.append", "audio": audio}))
                got = 0
                async for msg in ws:
                    event = json.loads(msg.data)
                    assert event["type"] != "error", event
                    if event["type"] == "response.output_audio.delta":
                        got += 1
                        if not want_delta or got >= 10:
                            break
                return got

    async def six():
        return await asyncio.gather(*(session(huge, False) for _ in range(6)))

    try:
        assert asyncio.run(asyncio.wait_for(session(one_second, True), 20)) >= 10
        before = _rss_mb(tx.proc.pid)
        peak = [before]
        done = threading.Event()

        def watch():
            while not done.is_set():
                peak.append(_rss_mb(tx.proc.pid))
                time.sleep(0.05)

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            asyncio.run(asyncio.wait_for(six(), 120))
        finally:
            done.set()
            watcher.join()
        grew = max(peak) - before
        print(f"six 14.7 MiB appends: RSS {before:.0f} MB -> peak {max(peak):.0f} MB (+{grew:.0f} MB)")
        assert grew < 400, f"six 14.7 MiB appends grew the transceiver by {grew:.0f} MB"
    finally:
        tx.stop()


@pytest.mark.parametrize("fast_path", ["c", "python"])
def test_a_replayed_relay_token_floods_nothing(secret_file, tmp_path, fast_path):
    """A hung-up call's token replayed in 70 000 STUN checks from 70 000 source addresses: its transceiver
    answers FORGET, the relay revokes the token, the flow table keeps room, and a new call connects as fast as
    before with audio both ways (the defect: the table filled in 2.3 s and a new call got nothing for 30 s)."""
    wav = long_speech_wav(tmp_path / "talk.wav", 4.0)
    relay = RelayProcess(free_port(), secret_file, metrics_port=free_port(), extra=["--capacity", "4096"],
                         env={"VOXGATE_PURE_PYTHON": "1"} if fast_path == "python" else None)
    tx = TransceiverProcess(secret_file, relay_port=relay.port)
    try:
        before = CallProcess(tx.url, wav, tmp_path / "before.wav").result()
        assert_audio_both_ways(before)
        status, headers, answer = req(tx, "POST", "/v1/realtime/calls", offer(), headers={"Content-Type": "application/sdp"})
        token = re.search(rb"a=ice-ufrag:(\S+)", answer).group(1).decode()
        call = headers["Location"].rsplit("/", 1)[-1]
        assert req(tx, "POST", f"/v1/realtime/calls/{call}/hangup", b"")[0] == 200
        live = CallProcess(tx.url, wav, tmp_path / "live.wav")  # a call that is up during the flood
        assert wait_for(lambda: tx.health()["sessions"] == 1, timeout=20)
        t0, sent = time.monotonic(), 0
        while sent < 70000 and time.monotonic() - t0 < 60:
            src = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            n = sent + 1
            src.bind((f"127.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255 or 1}", 0))
            src.sendto(binding_request(token, txid=os.urandom(12)), relay.addr)
            src.close()
            sent += 1
        assert sent == 70000
        flood_s = time.monotonic() - t0

        def slow_path():
            return metric_value(relay.metrics(), "voxgate_relay_slow_path_total")

        # the generator outruns one worker's slow path: let it work off what the socket's buffer still holds
        last, drained_at = -1.0, time.monotonic()
        while time.monotonic() - drained_at < 20 and (now := slow_path()) != last:
            last = now
            time.sleep(1.2)  # the workers add their counters to /metrics once a second
        drain_s = time.monotonic() - t0 - flood_s
        after = CallProcess(tx.url, wav, tmp_path / "after.wav").result()
        assert_audio_both_ways(after)
        during = live.result()
        # the call that was up during the flood kept its flow (never evicted, never forgotten: it is verified); its
        # audio shares these two cores with the flood's generator, so it is held to a looser bound
        assert_audio_both_ways(during, max_gap_ms=2000, min_ratio=0.5)
        slower = after["setup"]["ice_connected_ms"] - before["setup"]["ice_connected_ms"]
        assert slower < 500, (before["setup"], after["setup"])
        metrics = relay.metrics()
        revoked = metric_value(metrics, "voxgate_relay_drops_total", reason="token_revoked")
        assert revoked > 60000, metrics
        assert metric_value(metrics, "voxgate_relay_flows") <= 16
        print(f"flood: {sent} checks in {flood_s:.1f} s, worked off {drain_s:.1f} s later; {revoked:.0f} refused as revoked; new call ICE "
              f"{before['setup']['ice_connected_ms']} -> {after['setup']['ice_connected_ms']} ms; the call during it: "
              f"{during['packets_received']}/{during['packets_sent']} packets, gaps {during['max_gap_in_ms']} / "
              f"{during['max_gap_out_ms']} ms; relay flows {metric_value(metrics, 'voxgate_relay_flows'):.0f}, "
              f"removed {metric_value(metrics, 'voxgate_relay_flows_removed_total'):.0f}")
    finally:
        relay.stop()
        tx.stop()


def test_a_conversation_over_the_models_context_fails_with_a_reason():
    """llama.cpp refuses a prompt over its context; the reply must fail with that reason (it came back
    ``completed`` and empty), so the client gets an error event, never silence."""
    pytest.importorskip("xllamacpp")
    from voxgate.agent.models.llama import GenerationError
    from voxgate.agent.shell.embedded import LlamaResponder

    responder = LlamaResponder()

    async def reply():
        return [piece async for piece in responder.stream([{"role": "user", "content": "word " * 250000}], "Be brief.")]

    with pytest.raises(GenerationError, match="larger than the model's context"):
        asyncio.run(reply())
    assert asyncio.run(asyncio.wait_for(_short(responder), 60))  # the model still answers the next one


async def _short(responder):
    return "".join([p async for p in responder.stream([{"role": "user", "content": "Say hello."}], "Be brief.")])


# ------------------------------------------------------------------ bad input: a 4xx with a reason
def test_the_inputs_that_cost_a_500_get_a_4xx_with_a_reason(tx):
    deep = b"[" * 100000 + b"]" * 100000
    sdp = offer().decode()
    cases = [
        ("POST", "/v1/realtime/calls", b"v=0\r\n\xff\xfe\xfa not utf-8", {"Content-Type": "application/sdp"}),
        ("POST", "/v1/realtime/calls", b"--B\r\nContent-Disposition: form-data; name=\"session\"\r\n\r\n" + deep +
         b"\r\n--B--\r\n", {"Content-Type": "multipart/form-data; boundary=B"}),
        ("POST", "/v1/realtime/client_secrets", b'{"expires_after": "soon"}', {"Content-Type": "application/json"}),
        ("POST", "/v1/realtime/client_secrets", b'{"expires_after": 5}', {"Content-Type": "application/json"}),
        ("POST", "/v1/realtime/client_secrets", deep, {"Content-Type": "application/json"}),
        ("POST", "/v1/realtime/calls", b"--B\r\nContent-Disposition: form-data; name=\"sdp\"\r\n\r\nv=0",
         {"Content-Type": "multipart/form-data; boundary=B"}),  # truncated
        ("POST", "/v1/realtime/calls", b"anything", {"Content-Type": "multipart/form-data"}),  # no boundary
        ("POST", "/v1/realtime/calls", sdp.replace("opus/48000", "opus/48000").replace(" 96", " 99999999999999999999")
         .replace("a=rtpmap:96", "a=rtpmap:99999999999999999999").encode(), {"Content-Type": "application/sdp"}),
        ("POST", "/v1/realtime/calls", re.sub(r"a=ice-ufrag:\S+", "a=ice-ufrag:" + "A" * 100000, sdp).encode(),
         {"Content-Type": "application/sdp"}),
        ("POST", "/v1/realtime/calls/rtc_x/accept", b'{"type": "realtime", "instructions": ' + deep + b"}",
         {"Content-Type": "application/json"}),
    ]
    for method, path, body, headers in cases:
        status, _, text = req(tx, method, path, body, KEY, headers)
        assert 400 <= status < 500, (path, body[:80], status, text[:200])
        reason = json.loads(text)["error"]["message"]
        assert reason and "trouble" not in reason, (path, reason)


_PATHS = ["/v1/realtime/calls", "/v1/realtime/client_secrets", "/v1/realtime/calls/rtc_abc/hangup",
          "/v1/realtime/calls/rtc_abc/accept", "/v1/realtime/calls/rtc_abc/reject", "/v1/realtime/calls/rtc_abc/refer",
          "/v1/realtime/calls/rtc_abc", "/v1/voxgate/ice_servers", "/healthz", "/readyz", "/v1/realtime"]
_TYPES = ["application/sdp", "application/json", "multipart/form-data; boundary=X", "multipart/form-data",
          "text/plain", "application/octet-stream", "", "multipart/mixed; boundary=\"", "application/json; charset=x"]
def _nested(inner):
    return st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                     _nested, max_leaves=20)
_bodies = st.one_of(
    st.binary(max_size=2000),
    _json.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(st.sampled_from(["type", "session", "expires_after", "status_code", "target_uri", "instructions",
                                     "audio", "voice", "tools"]), _json, max_size=4).map(lambda v: json.dumps(v).encode()),
    st.builds(lambda a, b: ("--X\r\nContent-Disposition: form-data; name=\"%s\"\r\n\r\n%s\r\n--X--\r\n" % (a, b))
              .encode("utf-8", "surrogatepass"), st.sampled_from(["sdp", "session", "", "x"]), st.text(max_size=200)),
    st.sampled_from([offer(), offer().replace(b"opus", b"opux"), offer()[:200], offer().replace(b"\r\n", b"\n")]),
)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(path=st.sampled_from(_PATHS), method=st.sampled_from(["GET", "POST"]), ctype=st.sampled_from(_TYPES),
       body=_bodies, key=st.sampled_from([KEY, None, "ek_nope"]))
def test_fuzz_every_signaling_endpoint_never_a_5xx(fuzz_tx, path, method, ctype, body, key):
    status, _, text = req(fuzz_tx, method, path, body if method == "POST" else None, key,
                          {"Content-Type": ctype} if ctype else {})
    assert status < 500, (method, path, ctype, body[:120], status, text[:300])
    if status >= 400 and path != "/v1/realtime":
        assert json.loads(text)["error"]["message"], text  # every refusal says why


@pytest.fixture(scope="module")
def fuzz_tx(tmp_path_factory):
    from voxgate.wire.token import new_secret_line

    secret = tmp_path_factory.mktemp("fuzz") / "secret"
    secret.write_text(new_secret_line(1) + "\n")
    t = TransceiverProcess(secret, extra=["--api-key", KEY, "--setup-timeout", "2", "--calls-per-key", "0",
                                          "--calls-per-address", "0"])
    yield t
    t.stop()


# ------------------------------------------------------------------ SIP: digest that cannot be replayed, slots kept
def _invite(port: int, call_id: str, branch: str, src_port: int, auth: str = "", uri: str | None = None) -> bytes:
    uri = uri or f"sip:agent@127.0.0.1:{port}"
    body = (f"v=0\r\no=x 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {src_port + 2} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n").encode()
    return (f"INVITE {uri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{src_port};branch={branch};rport\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:caller@127.0.0.1>;tag={branch[-6:]}\r\nTo: <sip:agent@127.0.0.1>\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:caller@127.0.0.1:{src_port}>\r\n{auth}"
            f"Content-Type: application/sdp\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


def _final(sock) -> tuple[int, str]:
    while True:
        data = sock.recv(65536).decode()
        code = int(data.split(" ", 2)[1])
        if code >= 200:
            return code, data


def test_a_sniffed_digest_places_no_second_call(secret_file):
    port = free_port()
    tx = TransceiverProcess(secret_file, extra=["--api-key", KEY, "--drain-timeout", "1", "--sip-listen", f"127.0.0.1:{port}",
                                                "--sip-auth", "trunk:s3cret"])
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)
    me = sock.getsockname()[1]
    try:
        sock.sendto(_invite(port, "c1", "z9hG4bKa1", me), ("127.0.0.1", port))
        code, text = _final(sock)
        assert code == 401
        nonce = re.search(r'nonce="([^"]+)", algorithm=MD5', text).group(1)
        uri = f"sip:agent@127.0.0.1:{port}"
        md5 = lambda s: hashlib.md5(s.encode()).hexdigest()  # noqa: E731
        ha1, ha2 = md5("trunk:voxgate:s3cret"), md5(f"INVITE:{uri}")
        resp = md5(f"{ha1}:{nonce}:00000001:c0ffee:auth:{ha2}")
        header = (f'Authorization: Digest username="trunk", realm="voxgate", nonce="{nonce}", uri="{uri}", '
                  f'response="{resp}", qop=auth, nc=00000001, cnonce="c0ffee", algorithm=MD5\r\n')
        sock.sendto(_invite(port, "c1", "z9hG4bKa2", me, header), ("127.0.0.1", port))
        assert _final(sock)[0] == 200  # answered at once (no webhook)
        # the same header, sniffed: a new Call-ID, a new branch, another port, another Request-URI
        thief = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        thief.bind(("127.0.0.2", 0))
        thief.settimeout(5)
        for i, uri2 in enumerate((None, f"sip:premium@127.0.0.1:{port}")):
            thief.sendto(_invite(port, f"stolen{i}", f"z9hG4bKs{i}", thief.getsockname()[1], header, uri2),
                         ("127.0.0.1", port))
            assert _final(thief)[0] == 401
        thief.close()
        health = json.loads(tx.get("/healthz?calls")[1])
        assert len(health["calls"]) == 1, health  # the one real call
        # a phone call is a server key's: a client secret can neither see nor end it
        phone_call, ek = health["calls"][0], client_secret(tx)
        assert req(tx, "GET", f"/v1/realtime/calls/{phone_call}", key=ek)[0] == 404
        assert req(tx, "POST", f"/v1/realtime/calls/{phone_call}/hangup", b"", ek)[0] == 403
        assert req(tx, "GET", f"/v1/realtime/calls/{phone_call}", key=KEY)[0] == 200
        assert req(tx, "POST", f"/v1/realtime/calls/{phone_call}/hangup", b"", KEY)[0] == 200
    finally:
        sock.close()
        tx.stop()


def test_sipp_authenticates_and_a_spread_flood_takes_no_slot(secret_file):
    """300 unauthenticated INVITEs from 50 addresses are answered 401 and hold nothing; SIPp with the password
    then gets its call (RFC 7616 digest, MD5 with qop=auth)."""
    import shutil
    import subprocess

    if not shutil.which("sipp"):
        pytest.fail("SIPp is not installed (apt-get install sip-tester)")
    port = free_port()
    tx = TransceiverProcess(secret_file, extra=["--api-key", KEY, "--drain-timeout", "1", "--sip-listen", f"127.0.0.1:{port}",
                                                "--sip-auth", "trunk:s3cret"])
    try:
        socks = []
        for i in range(50):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((f"127.0.{1 + i // 200}.{1 + i % 200}", 0))
            socks.append(s)
        for n in range(300):
            s = socks[n % 50]
            s.sendto(_invite(port, f"flood{n}", f"z9hG4bKf{n}", s.getsockname()[1]), ("127.0.0.1", port))
            if n % 10 == 9:
                time.sleep(0.005)  # paced to what the socket's buffer takes: every one is answered
        time.sleep(0.5)
        for s in socks:
            s.close()
        proc = subprocess.Popen(["sipp", f"127.0.0.1:{port}", "-sf", str(SIPP / "auth.xml"), "-s", "agent",
                                 "-i", "127.0.0.1", "-mi", "127.0.0.1", "-p", str(free_port()), "-m", "1",
                                 "-nostdin", "-timeout", "20s", "-timeout_error", "-max_recv_loops", "100"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/tmp")
        calls = wait_for(lambda: json.loads(tx.get("/healthz?calls")[1])["calls"], timeout=15)
        assert len(calls) == 1, calls
        assert req(tx, "POST", f"/v1/realtime/calls/{calls[0]}/hangup", b"", KEY)[0] == 200
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, (out[-1500:], err[-1500:])
        metrics = req(tx, "GET", "/metrics", key=KEY)[2].decode()
        assert metric_value(metrics, "voxgate_transceiver_sip_refused_total", reason="unauthorized") >= 301
    finally:
        tx.stop()


def test_sip_tcp_connections_are_bounded_and_must_speak_soon(secret_file):
    """40 TCP connections from one address to the SIP port, sending a byte now and then but never a message: 32 are
    held, the rest closed at once; the held ones are closed 10 s after they opened."""
    port = free_port(socket.SOCK_STREAM)
    tx = TransceiverProcess(secret_file, extra=["--api-key", KEY, "--drain-timeout", "1",
                                                "--sip-listen", f"127.0.0.1:{port}"])
    socks = []
    try:
        for _ in range(40):
            s = socket.create_connection(("127.0.0.1", port))
            s.settimeout(0.2)
            socks.append(s)

        def closed(s):
            try:
                s.sendall(b"I")
                return s.recv(1) == b""
            except socket.timeout:
                return False
            except OSError:
                return True

        time.sleep(0.5)
        assert sum(closed(s) for s in socks) == 8
        t0 = time.monotonic()
        while time.monotonic() - t0 < 12 and not all(closed(s) for s in socks):
            time.sleep(1.0)  # a byte a second: never a whole message
        assert all(closed(s) for s in socks)
        metrics = req(tx, "GET", "/metrics", key=KEY)[2].decode()
        assert metric_value(metrics, "voxgate_transceiver_sip_refused_total", reason="connection_limit") == 8
        assert metric_value(metrics, "voxgate_transceiver_sip_refused_total", reason="connection_timeout") == 32
    finally:
        for s in socks:
            s.close()
        tx.stop()


def test_sip_new_calls_are_bounded_for_all_sources_together():
    """Without auth, a spread of sources is held to the global rate: at most its burst of calls at once."""
    from voxgate.sip import core
    from voxgate.sip.core import Peer, SipCore
    from voxgate.sip.policy import Policy

    sip = SipCore(Policy(global_rate=20, global_burst=40, max_ringing=20))
    created = 0
    for n in range(300):
        peer = Peer("udp", f"198.51.100.{n % 50}", 5060)
        acts = sip.receive(_invite(5080, f"f{n}", f"z9hG4bKg{n}", 5060), peer, 1.0)
        created += any(isinstance(a, core.Incoming) for a in acts)
    assert created == 20  # the ringing bound bit first; the rest 503 with Retry-After
    assert sip.counters["ringing_full"] + sip.counters["rate_limited"] == 280
