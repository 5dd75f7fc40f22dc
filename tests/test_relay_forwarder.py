"""The fast path, both implementations, on loopback sockets in-process."""

import socket
import time

import pytest

from helpers import DTLS, RTP
from voxgate.relay.forwarder import COUNTERS, PyForwarder
from voxgate.wire import encap

IMPLS = [PyForwarder]
try:
    from voxgate.relay._fastpath import Forwarder as CForwarder

    IMPLS.append(CForwarder)
except ImportError:  # pragma: no cover - the build always tries to compile it
    pass


def udp(family=socket.AF_INET, host="127.0.0.1"):
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.bind((host, 0))
    s.settimeout(0.5)
    return s


@pytest.fixture(params=IMPLS, ids=lambda c: c.__module__.rsplit(".", 1)[-1])
def rig(request):
    pub, internal, client, trans = udp(), udp(socket.AF_INET6, "::"), udp(), udp()
    pub.setblocking(False)
    internal.setblocking(False)
    fwd = request.param(pub.fileno(), internal.fileno(), capacity=4, batch=8)
    yield fwd, pub, internal, client, trans
    fwd.close()
    for s in (pub, internal, client, trans):
        s.close()


def test_c_extension_was_built():
    assert len(IMPLS) == 2, "voxgate.relay._fastpath did not compile"


def _pump(fwd, now=1.0):
    time.sleep(0.02)
    return fwd.pump_public(now)


def test_known_flow_forwards_both_ways(rig):
    fwd, pub, internal, client, trans = rig
    c, t = client.getsockname(), trans.getsockname()
    assert fwd.add(c, t, False, 1.0)
    assert fwd.get(c) == (t, False, 1.0) and len(fwd) == 1
    client.sendto(DTLS, pub.getsockname())
    assert _pump(fwd, 2.0) == []
    data, src = trans.recvfrom(4096)
    assert encap.decapsulate(data) == (c, False, DTLS)
    # reply, verified: goes to the client from the public socket
    trans.sendto(encap.encapsulate(c, RTP * 3, True), src)
    time.sleep(0.02)
    assert fwd.pump_internal(2.0) == 1
    got, frm = client.recvfrom(4096)
    assert got == RTP * 3 and frm == pub.getsockname()
    assert fwd.get(c)[1] is True and fwd.get(c)[2] == 2.0
    st = fwd.stats()
    assert set(st) == set(COUNTERS)
    assert st["to_transceiver_packets"] == 1 and st["to_client_packets"] == 1
    assert st["to_transceiver_bytes"] == len(DTLS) + 8


def test_slow_path_gets_stun_unknown_and_junk(rig):
    fwd, pub, internal, client, trans = rig
    c = client.getsockname()
    for data in (b"\x00\x01\x00\x00" + b"\x21\x12\xa4\x42" + b"x" * 12, RTP, b"\xff\xff"):
        client.sendto(data, pub.getsockname())
    slow = _pump(fwd)
    assert [s[1] for s in slow] == [c] * 3 and slow[1][0] == RTP
    fwd.add(c, trans.getsockname())
    client.sendto(b"\x05junk", pub.getsockname())  # known flow, but not DTLS/RTP
    assert _pump(fwd) == [(b"\x05junk", c)]
    assert fwd.stats()["slow_path"] == 4


def test_transceiver_side_is_checked(rig):
    fwd, pub, internal, client, trans = rig
    c = client.getsockname()
    intruder = udp()
    fwd.add(c, trans.getsockname(), verified=True)
    isrc = internal.getsockname()
    dest = ("127.0.0.1", isrc[1])
    intruder.sendto(encap.encapsulate(c, b"\x80evil"), dest)  # not the flow's transceiver
    trans.sendto(encap.encapsulate(("127.0.0.1", 9), b"\x80x"), dest)  # no such flow
    trans.sendto(b"\x80not-encapsulated", dest)
    trans.sendto(b"\xf1\x01\x00", dest)  # truncated
    time.sleep(0.02)
    assert fwd.pump_internal(1.0) == 0
    st = fwd.stats()
    assert (st["drop_wrong_transceiver"], st["drop_no_flow"], st["drop_bad_encap"]) == (1, 1, 2)
    intruder.close()


def test_unverified_flow_cannot_amplify(rig):
    fwd, pub, internal, client, trans = rig
    c = client.getsockname()
    fwd.add(c, trans.getsockname())
    client.sendto(RTP, pub.getsockname())  # 102 bytes in: 306 bytes of credit
    _pump(fwd)
    _, src = trans.recvfrom(4096)
    for _ in range(4):  # 3 x 100 fit, the 4th would exceed 3x what the client sent
        trans.sendto(encap.encapsulate(c, b"\x80" * 100), src)
    time.sleep(0.02)
    assert fwd.pump_internal(1.0) == 3
    assert fwd.stats()["drop_amplification"] == 1
    trans.sendto(encap.encapsulate(c, b"\x80" * 1000, True), src)  # verified: the cap is lifted
    time.sleep(0.02)
    assert fwd.pump_internal(1.0) == 1


def test_oversized_datagram_is_dropped(rig):
    fwd, pub, internal, client, trans = rig
    fwd.add(client.getsockname(), trans.getsockname())
    client.sendto(b"\x80" * 3000, pub.getsockname())
    assert _pump(fwd) == []
    assert fwd.stats()["drop_oversized"] == 1


def test_expire_capacity_and_active(rig):
    fwd, *_ = rig
    t = ("10.0.0.1", 1)
    for i in range(4):
        assert fwd.add(("192.0.2.1", 1000 + i), t, False, float(i))
    assert not fwd.add(("192.0.2.1", 2000), t)  # capacity 4
    assert fwd.stats()["drop_table_full"] == 1
    assert sorted(c for c, _, _ in fwd.active_since(2.0)) == [("192.0.2.1", 1002), ("192.0.2.1", 1003)]
    assert sorted(fwd.expire(10.0, 8.5)) == [("192.0.2.1", 1000), ("192.0.2.1", 1001)]
    assert len(fwd) == 2 and fwd.remove(("192.0.2.1", 1002)) and not fwd.remove(("192.0.2.1", 1002))
    with pytest.raises(ValueError):  # an IPv6 client cannot be reached from an IPv4 public socket
        fwd.add(("2001:db8::1", 5), t)
    assert fwd.add(("192.0.2.50", 5), ("fd00::1", 9)) and fwd.get(("192.0.2.50", 5))[0] == ("fd00::1", 9)
    assert fwd.remove(("192.0.2.50", 5))
    for i in range(1000):  # churn: tombstones must not exhaust the table
        assert fwd.add(("192.0.2.9", i), t, False, 0.0)
        assert fwd.remove(("192.0.2.9", i))
    fwd.expire(100.0, 1.0)
    assert len(fwd) == 0


def test_forget_drops_an_unverified_flow_never_a_verified_one_and_is_never_sent_on(rig):
    """The transceiver's FORGET (its check failed there): the flow goes unless verified, and only its own
    transceiver can make it go; a ufrag in it is queued with its sender, for the slow path to revoke if the token
    routes to that sender (even when the flow is gone already); nothing reaches the client."""
    fwd, pub, internal, client, trans = rig
    c, t = client.getsockname(), trans.getsockname()
    other = udp()
    o = other.getsockname()
    fwd.add(c, t)
    fwd.add(o, t, verified=True)
    dest = ("127.0.0.1", internal.getsockname()[1])
    intruder = udp()
    intruder.sendto(encap.forget(c, "tokenA"), dest)  # not the flow's transceiver: the flow stays
    time.sleep(0.02)
    fwd.pump_internal(1.0)
    assert fwd.get(c) is not None
    assert fwd.take_revoked() == [(b"tokenA", intruder.getsockname())]  # RelayCore.revoke refuses it
    trans.sendto(encap.forget(c, "tokenA"), dest)
    trans.sendto(encap.forget(o), dest)
    time.sleep(0.02)
    assert fwd.pump_internal(1.0) == 0
    assert fwd.get(c) is None, "an unverified flow its transceiver disowned stays"
    assert fwd.get(o) is not None, "a verified flow (a live call) was dropped"
    assert fwd.take_revoked() == [(b"tokenA", t)] and fwd.take_revoked() == []
    assert fwd.stats()["forgotten"] == 1 and fwd.stats()["to_client_packets"] == 0
    client.settimeout(0.05)
    with pytest.raises(socket.timeout):
        client.recvfrom(4096)
    for s in (other, intruder):
        s.close()
