"""`voxgate relay` as a real process, with a real redis-server, on loopback."""

import time

import pytest

from helpers import DTLS, ICE_PWD, RTP, Client, EchoTransceiver, RelayProcess, binding_request, free_port, metric_value, wait_for
from voxgate.wire import stun
from voxgate.wire.token import Keyring, mint


@pytest.fixture(params=["c", "python"])
def fast_path(request):
    return request.param


def _env(fast_path):
    return {"VOXGATE_PURE_PYTHON": "1"} if fast_path == "python" else {}


@pytest.fixture
def transceiver():
    t = EchoTransceiver()
    yield t
    t.close()


def test_routes_first_packet_by_ufrag_and_reports_true_client_address(secret_file, keyring, transceiver, fast_path):
    relay = RelayProcess(free_port(), secret_file, metrics_port=free_port(), env=_env(fast_path))
    try:
        assert relay.ready["fast_path"] == fast_path
        client = Client(relay.addr)
        ufrag = mint(keyring, transceiver.addr, time.time())
        reply = client.exchange(binding_request(ufrag))
        assert reply is not None, "no STUN response through the relay"
        msg = stun.parse(reply)
        assert msg.msg_type == stun.BINDING_SUCCESS
        assert msg.check_integrity(ICE_PWD)
        assert msg.xor_mapped_address == client.addr  # the transceiver saw the real client address
        # the flow is learned: DTLS and RTP now take the fast path both ways
        assert client.exchange(DTLS) == DTLS
        for _ in range(20):
            assert client.exchange(RTP) == RTP
        text = wait_for(lambda: (t := relay.metrics()) and metric_value(t, "voxgate_relay_packets_total", direction="to_client") >= 22 and t)
        assert metric_value(text, "voxgate_relay_packets_total", direction="from_client") == 22
        assert metric_value(text, "voxgate_relay_flows") == 1
        assert metric_value(text, "voxgate_relay_flows_learned_total", source="token") == 1
        status, health = relay.health()
        assert status == 200 and health["status"] == "ok"
    finally:
        assert relay.stop() == 0  # SIGTERM is a clean exit


def test_forged_tampered_and_wrong_key_tokens_forward_nothing(tmp_path, secret_file, keyring, transceiver, fast_path):
    relay = RelayProcess(free_port(), secret_file, metrics_port=free_port(), env=_env(fast_path))
    try:
        client = Client(relay.addr)
        good = mint(keyring, transceiver.addr, time.time())
        other = Keyring({3: b"another-cluster-secret-0123456789"}, 3)  # same key id, different secret
        unknown_kid = Keyring({5: b"another-cluster-secret-0123456789"}, 5)
        tampered = good[:10] + ("A" if good[10] != "A" else "B") + good[11:]
        forged = [
            mint(other, transceiver.addr, time.time()),
            mint(unknown_kid, transceiver.addr, time.time()),
            tampered,
            "notatoken",
            "A" * len(good),
            mint(keyring, transceiver.addr, time.time() - 3 * 86400),  # expired
        ]
        for ufrag in forged:
            assert client.exchange(binding_request(ufrag), timeout=0.2) is None
        # non-STUN from an address with no flow, and junk
        for data in (DTLS, RTP, b"", b"\xff" * 50, b"\x00\x01" + b"\x00" * 30):
            client.send(data)
        time.sleep(0.3)
        assert transceiver.received == []
        text = wait_for(lambda: (t := relay.metrics()) and metric_value(t, "voxgate_relay_drops_total") >= 11 and t)
        assert metric_value(text, "voxgate_relay_drops_total", reason="token_bad_mac") == 2
        assert metric_value(text, "voxgate_relay_drops_total", reason="token_unknown_key") == 1
        assert metric_value(text, "voxgate_relay_drops_total", reason="token_expired") == 1
        assert metric_value(text, "voxgate_relay_drops_total", reason="token_bad_token") >= 1
        assert metric_value(text, "voxgate_relay_packets_total", direction="to_transceiver") == 0
        # the worker is still fine: a good token still routes
        assert client.exchange(binding_request(good)) is not None
    finally:
        relay.stop()


def test_allow_list_blocks_tokens_to_other_networks(secret_file, keyring, transceiver):
    relay = RelayProcess(free_port(), secret_file, allow=["10.0.0.0/8"])
    try:
        client = Client(relay.addr)
        assert client.exchange(binding_request(mint(keyring, transceiver.addr, time.time())), timeout=0.3) is None
        assert transceiver.received == []
    finally:
        relay.stop()


def test_no_amplification_before_transceiver_verifies(secret_file, keyring):
    big = EchoTransceiver(reply_size=1000)  # would answer every packet with 1000 bytes
    relay = RelayProcess(free_port(), secret_file, metrics_port=free_port())
    try:
        client = Client(relay.addr)
        request = binding_request(mint(keyring, big.addr, time.time()))
        reply = client.exchange(request)
        assert reply is not None
        small = b"\x80" + b"x" * 99  # RTP-class: the echo peer does not mark the flow verified
        got = [client.exchange(small, timeout=0.2) for _ in range(5)]
        received = len(reply) + sum(len(g) for g in got if g)
        assert received <= 3 * (len(request) + 5 * len(small))  # never more than 3x what the client sent
        text = wait_for(lambda: (t := relay.metrics()) and metric_value(t, "voxgate_relay_drops_total", reason="amplification") > 0 and t)
        assert metric_value(text, "voxgate_relay_drops_total", reason="amplification") > 0
    finally:
        relay.stop()
        big.close()


def test_restarted_relay_keeps_forwarding_flow_from_redis(secret_file, keyring, transceiver, redis_server, fast_path):
    port = free_port()
    relay = RelayProcess(port, secret_file, redis_url=redis_server.url, env=_env(fast_path))
    client = Client(("127.0.0.1", port))
    try:
        assert client.exchange(binding_request(mint(keyring, transceiver.addr, time.time()))) is not None
        assert client.exchange(DTLS) == DTLS
        time.sleep(0.3)  # let the flow store write the flow
    finally:
        relay.kill()
    before = len(transceiver.received)
    relay = RelayProcess(port, secret_file, redis_url=redis_server.url, metrics_port=free_port(), env=_env(fast_path))
    try:
        # no STUN this time: DTLS and RTP of the live flow must find their way from Redis alone
        assert client.exchange(DTLS, timeout=2.0) == DTLS
        for _ in range(10):
            assert client.exchange(RTP) == RTP
        assert len(transceiver.received) == before + 11
        text = wait_for(lambda: (t := relay.metrics()) and metric_value(t, "voxgate_relay_flows_learned_total", source="store") >= 1 and t)
        assert metric_value(text, "voxgate_relay_flows_learned_total", source="store") == 1
        assert metric_value(text, "voxgate_relay_redis_up") == 1
    finally:
        relay.stop()


def test_redis_down_known_flows_keep_flowing(secret_file, keyring, transceiver, redis_server, tmp_path):
    relay = RelayProcess(free_port(), secret_file, redis_url=redis_server.url, metrics_port=free_port())
    try:
        client = Client(relay.addr)
        assert client.exchange(binding_request(mint(keyring, transceiver.addr, time.time()))) is not None
        redis_server.stop()
        for _ in range(10):
            assert client.exchange(RTP) == RTP
        # a new session still routes on its token alone
        other = Client(relay.addr)
        assert other.exchange(binding_request(mint(keyring, transceiver.addr, time.time()))) is not None
        text = wait_for(lambda: (t := relay.metrics()) and metric_value(t, "voxgate_relay_redis_up") == 0 and "redis_up" in t and t, timeout=8)
        assert metric_value(text, "voxgate_relay_redis_up") == 0
        assert relay.health()[0] == 200
        # Redis comes back on the same address: the relay reconnects by itself
        from helpers import RedisServer

        back = RedisServer(tmp_path / "again", port=redis_server.port)
        try:
            text = wait_for(lambda: (t := relay.metrics()) and metric_value(t, "voxgate_relay_redis_up") == 1 and t,
                            timeout=15)
            assert metric_value(text, "voxgate_relay_redis_up") == 1
        finally:
            back.stop()
    finally:
        relay.stop()
    assert "unreachable" in relay.stderr_text or "failed" in relay.stderr_text


def test_two_workers_share_one_port(secret_file, keyring, transceiver, redis_server):
    relay = RelayProcess(free_port(), secret_file, workers=2, redis_url=redis_server.url, metrics_port=free_port())
    try:
        workers = relay.ready["workers"]
        assert len(workers) == 2 and len({w["pid"] for w in workers}) == 2
        clients = [Client(relay.addr) for _ in range(16)]
        for c in clients:
            assert c.exchange(binding_request(mint(keyring, transceiver.addr, time.time()))) is not None
            assert c.exchange(DTLS) == DTLS
            assert c.exchange(RTP) == RTP
        # the kernel spread the 16 clients over both workers; each learned only its own
        status, health = relay.health()
        assert status == 200 and all(w["alive"] for w in health["workers"])
        text = wait_for(lambda: (t := relay.metrics()) and metric_value(t, "voxgate_relay_flows") == 16 and t)
        assert metric_value(text, "voxgate_relay_flows") == 16
        per_worker = {line.split('pid="')[1].split('"')[0]: float(line.rpartition(" ")[2])
                      for line in text.splitlines() if line.startswith("voxgate_relay_worker_flows{")}
        assert set(per_worker) == {str(w["pid"]) for w in workers}
        assert all(n > 0 for n in per_worker.values()), per_worker
        for c in clients:
            c.close()
    finally:
        relay.stop()


def test_ipv6_client_and_transceiver(secret_file, keyring, fast_path):
    import socket

    t = EchoTransceiver(host="::1")
    port = free_port()
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "voxgate", "relay", "--listen", f"[::1]:{port}", "--workers", "1",
                             "--secret-file", str(secret_file)], stdout=subprocess.PIPE, text=True,
                            env={**__import__("os").environ, **_env(fast_path)})
    try:
        assert "relay_ready" in proc.stdout.readline()
        c = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        c.bind(("::1", 0))
        c.settimeout(1)
        c.sendto(binding_request(mint(keyring, t.addr, time.time())), ("::1", port))
        reply = stun.parse(c.recvfrom(2048)[0])
        assert reply.xor_mapped_address == c.getsockname()[:2]  # the 20-byte IPv6 header carried it
        c.sendto(RTP, ("::1", port))
        assert c.recvfrom(2048)[0] == RTP
        c.close()
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stdout.close()
        t.close()


def test_a_killed_worker_is_replaced_and_its_flows_come_back_from_redis(secret_file, keyring, transceiver,
                                                                         redis_server):
    import os
    import signal as sig

    relay = RelayProcess(free_port(), secret_file, workers=2, redis_url=redis_server.url, metrics_port=free_port())
    try:
        clients = [Client(relay.addr) for _ in range(8)]
        for c in clients:
            assert c.exchange(binding_request(mint(keyring, transceiver.addr, time.time()))) is not None
        time.sleep(0.3)  # the flow store writes the flows
        victim = relay.ready["workers"][0]["pid"]
        os.kill(victim, sig.SIGKILL)
        # the supervisor notices, starts a new worker on the same port, and /healthz shows it
        status, health = wait_for(lambda: (h := relay.health()) and h[1]["restarts"] == 1 and h[0] == 200 and h,
                                  timeout=10)
        assert victim not in [w["pid"] for w in health["workers"]]
        # every client keeps its session without a new STUN check: flows of the dead worker come from Redis
        for c in clients:
            assert c.exchange(RTP, timeout=2.0) == RTP
            c.close()
    finally:
        relay.stop()
