"""ICE-TCP on the relay (relay/tcpcore.py sans-IO, relay/tcp.py with a real relay process): framing, routing by the
token in the first Binding request, forged tokens never forwarded, slow and garbage connections closed."""

import socket
import struct
import time

import pytest

from helpers import DTLS, ICE_PWD, RTP, Client, EchoTransceiver, RelayProcess, binding_request, free_port
from voxgate.relay.core import RelayCore
from voxgate.relay.tcpcore import Close, Dropped, TcpFlow, TcpRouter, ToTransceiver
from voxgate.wire import stun
from voxgate.wire.rfc4571 import Deframer, FramingError, frame
from voxgate.wire.token import Keyring, mint, new_secret_line

T = ("10.1.2.3", 40000)
C = ("198.51.100.9", 50123)


@pytest.fixture
def core():
    return RelayCore(Keyring.parse(new_secret_line(2)))


def test_deframer_splits_joins_and_refuses_garbage():
    d = Deframer(max_frame=100)
    stream = frame(b"a" * 10) + frame(b"b" * 20)
    assert d.feed(stream[:5]) == [] and d.pending == 5
    assert d.feed(stream[5:]) == [b"a" * 10, b"b" * 20] and d.pending == 0
    with pytest.raises(FramingError, match="frame_too_large"):
        Deframer(max_frame=100).feed(struct.pack("!H", 101))
    with pytest.raises(FramingError, match="empty_frame"):
        Deframer().feed(b"\0\0")


def test_a_valid_token_routes_and_held_media_follows(core):
    now = time.time()
    ufrag = mint(core.keyring, T, now)
    flow = TcpFlow(core, C, now)
    assert flow.data(frame(DTLS), now + 0.1) == []  # a reconnecting client's DTLS before its check: held
    acts = flow.data(frame(binding_request(ufrag)), now + 0.2)
    assert [type(a) for a in acts] == [ToTransceiver, ToTransceiver] and acts[0].transceiver == T
    assert acts[1].data == DTLS and flow.transceiver == T
    assert flow.data(frame(RTP), now + 0.3) == [ToTransceiver(T, RTP)]
    assert flow.data(frame(b"\xff" * 10), now + 0.4) == [Dropped("unclassified")]  # junk inside a routed flow
    assert flow.tick(now + 10.0) == []  # routed: no deadline


@pytest.mark.parametrize("first, reason", [
    (None, "token_"),  # a forged ufrag
    (b"\xff" * 30, "unrouted_other"),  # garbage
    (b"GET / HTTP/1.1\r\n", "frame_too_large"),  # another protocol on the port
])
def test_forged_and_garbage_first_frames_close_without_forwarding(core, first, reason):
    now = time.time()
    flow = TcpFlow(core, C, now)
    if first is None:
        forged = mint(Keyring.parse(new_secret_line(2)), T, time.time())  # another cluster's key
        data = frame(binding_request(forged))
    elif first.startswith(b"GET"):
        data = first
    else:
        data = frame(first)
    acts = flow.data(data, now + 0.1)
    assert len(acts) == 1 and isinstance(acts[0], Close) and acts[0].reason.startswith(reason), acts
    assert flow.data(frame(RTP), 0.2) == []  # closed: nothing more is looked at


def test_slow_clients_are_closed_at_the_deadline_and_held_frames_are_bounded(core):
    flow = TcpFlow(core, C, 0.0, first_frame_timeout=5.0, max_held=2)
    assert flow.data(frame(RTP)[:1], 1.0) == []  # one byte, then nothing (slowloris)
    assert flow.tick(4.9) == [] and flow.tick(5.0) == [Close("first_frame_timeout")]
    flow = TcpFlow(core, C, 0.0, max_held=2)
    assert flow.data(frame(RTP + b"1") + frame(RTP + b"2"), 0.1) == []
    assert flow.data(frame(RTP + b"3"), 0.2) == [Dropped("held_overflow")]  # the oldest goes
    assert flow.held == [RTP + b"2", RTP + b"3"]
    assert flow.data(frame(b"\xff" * 8), 0.3) == [Close("unrouted_other")]


def test_router_limits_per_source_and_in_all(core):
    r = TcpRouter(core, per_source=2, max_connections=3)
    a, b = r.accept(("192.0.2.1", 1), 0), r.accept(("192.0.2.1", 2), 0)
    assert r.accept(("192.0.2.1", 3), 0) == Close("too_many_from_source")
    c = r.accept(("192.0.2.2", 1), 0)
    assert r.accept(("192.0.2.3", 1), 0) == Close("too_many_connections")
    r.closed(a)
    assert isinstance(r.accept(("192.0.2.1", 4), 0), TcpFlow)
    for f in (b, c):
        r.closed(f)
    assert r.open == 1


# ------------------------------------------------------------------ a real relay process
class TcpClient:
    def __init__(self, addr, source="127.0.0.1"):
        self.sock = socket.create_connection(addr, timeout=2, source_address=(source, 0))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.addr = self.sock.getsockname()[:2]
        self.deframer = Deframer()
        self.frames: list[bytes] = []

    def send(self, payload: bytes):
        self.sock.sendall(frame(payload))

    def recv(self, timeout=2.0) -> bytes | None:
        deadline = time.monotonic() + timeout
        while not self.frames and time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                break
            if not data:
                return None
            self.frames += self.deframer.feed(data)
        return self.frames.pop(0) if self.frames else None

    def closed_by_peer(self, timeout=2.0) -> bool:
        self.sock.settimeout(timeout)
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False

    def close(self):
        self.sock.close()


@pytest.fixture
def transceiver():
    t = EchoTransceiver()
    yield t
    t.close()


@pytest.fixture
def tcp_relay(secret_file):
    port = free_port(socket.SOCK_STREAM)
    relay = RelayProcess(free_port(), secret_file, extra=["--tcp-listen", f"127.0.0.1:{port}"])
    relay.tcp = ("127.0.0.1", port)
    yield relay
    relay.stop()


def test_tcp_client_is_routed_by_its_token_and_hears_the_transceiver(tcp_relay, keyring, transceiver):
    assert tcp_relay.ready["tcp"] == "%s:%d" % tcp_relay.tcp
    c = TcpClient(tcp_relay.tcp)
    try:
        c.send(binding_request(mint(keyring, transceiver.addr, time.time())))
        reply = c.recv()
        assert reply is not None, "no STUN response over TCP"
        msg = stun.parse(reply)
        assert msg.msg_type == stun.BINDING_SUCCESS and msg.check_integrity(ICE_PWD)
        assert msg.xor_mapped_address == c.addr  # the transceiver saw the client's TCP address
        for payload in (DTLS, RTP):  # media both ways, framed
            c.send(payload)
            assert c.recv() == payload
    finally:
        c.close()


def test_forged_tokens_over_tcp_are_never_forwarded(tcp_relay, keyring, transceiver):
    other = Keyring.parse(new_secret_line(7))
    c = TcpClient(tcp_relay.tcp)
    try:
        c.send(binding_request(mint(other, transceiver.addr, time.time())))
        assert c.closed_by_peer()
    finally:
        c.close()
    time.sleep(0.2)
    assert transceiver.received == []


def test_a_thousand_garbage_and_slow_connections_leave_the_relay_serving(tcp_relay, keyring, transceiver):
    """1000 connections from 50 loopback sources (the per-source cap is 16): garbage, oversized lengths, one byte and
    silence, or nothing at all. Meanwhile and afterwards a real TCP flow and a UDP flow work."""
    good = TcpClient(tcp_relay.tcp)
    good.send(binding_request(mint(keyring, transceiver.addr, time.time())))
    assert good.recv() is not None
    conns = []
    kinds = [b"\xff" * 64, struct.pack("!H", 60000), b"\x00", b""]
    t0 = time.monotonic()
    try:
        for i in range(1000):
            if time.monotonic() - t0 > 60:
                break
            try:
                s = socket.create_connection(tcp_relay.tcp, timeout=2, source_address=(f"127.0.1.{i % 50 + 1}", 0))
            except OSError:
                continue  # refused or reset under the limits: that is the point
            try:
                s.sendall(kinds[i % len(kinds)])
            except OSError:
                pass
            conns.append(s)
        assert len(conns) >= 500
        # the routed connection and a new UDP flow still work while the slow ones hang around
        good.send(RTP)
        assert good.recv() == RTP
        udp = Client(tcp_relay.addr)
        reply = udp.exchange(binding_request(mint(keyring, transceiver.addr, time.time())), timeout=2)
        assert reply is not None and stun.parse(reply).msg_type == stun.BINDING_SUCCESS
        udp.close()
        # and a new TCP client from a fresh source is still admitted and routed
        fresh = TcpClient(tcp_relay.tcp, source="127.0.2.1")
        fresh.send(binding_request(mint(keyring, transceiver.addr, time.time())))
        assert fresh.recv() is not None
        fresh.close()
    finally:
        for s in conns:
            s.close()
        good.close()
    forwarded = {c for c, _ in transceiver.received}
    assert all(c[0] in ("127.0.0.1", "127.0.2.1") for c in forwarded), forwarded  # no garbage got through
