"""ICE-lite mux, sans-IO: checks, integrity, route following, consent."""

import os

from voxgate.transceiver.ice import Connected, Deliver, Dropped, IceLiteMux, IceSession, Route, Send
from voxgate.wire import encap, stun

PWD = "server-password-0123456789abcdef"


def check(ufrag="SRV", pwd=PWD, use=False, txid=None):
    attrs = [stun.attr_username(f"{ufrag}:cli"), stun.attr_priority(100), stun.attr_ice_controlling(1)]
    if use:
        attrs.append(stun.attr_use_candidate())
    return stun.build(stun.BINDING_REQUEST, txid or os.urandom(12), attrs, integrity_key=pwd.encode())


def setup():
    mux = IceLiteMux()
    s = IceSession("SRV", PWD)
    mux.add(s)
    return mux, s


def test_direct_check_answers_with_mapped_address_and_connects():
    mux, s = setup()
    acts = mux.datagram(check(use=True), ("198.51.100.7", 5000), 1.0)
    send = acts[0]
    assert isinstance(send, Send) and send.addr == ("198.51.100.7", 5000)
    resp = stun.parse(send.data)
    assert resp.msg_type == stun.BINDING_SUCCESS and resp.check_integrity(PWD.encode())
    assert resp.xor_mapped_address == ("198.51.100.7", 5000)
    assert Connected(s, Route(("198.51.100.7", 5000))) in acts
    assert mux.datagram(b"\x16\xfe\xfd" + b"x" * 20, ("198.51.100.7", 5000), 1.1) == [Deliver(s, b"\x16\xfe\xfd" + b"x" * 20)]


def test_relayed_check_uses_the_client_address_from_the_header():
    mux, s = setup()
    relay = ("10.0.0.2", 40000)
    acts = mux.datagram(encap.encapsulate(("203.0.113.5", 6000), check()), relay, 1.0)
    send = acts[0]
    assert send.addr == relay
    client, verified, payload = encap.decapsulate(send.data)
    assert client == ("203.0.113.5", 6000) and not verified
    assert stun.parse(payload).xor_mapped_address == ("203.0.113.5", 6000)
    s.verified = True  # after DTLS: replies tell the relay to lift its amplification cap
    client, verified, _ = encap.decapsulate(mux.datagram(encap.encapsulate(("203.0.113.5", 6000), check()), relay, 2.0)[0].data)
    assert verified


def test_bad_integrity_unknown_ufrag_and_junk():
    mux, s = setup()
    acts = mux.datagram(check(pwd="wrong"), ("198.51.100.7", 5000), 1.0)
    assert stun.parse(acts[0].data).error_code[0] == 401 and acts[1] == Dropped("stun_bad_integrity")
    assert s.route is None
    assert mux.datagram(check(ufrag="NOPE"), ("198.51.100.7", 5000), 1.0)[1] == Dropped("stun_unknown_ufrag")
    assert mux.datagram(b"\x80" * 20, ("192.0.2.1", 1), 1.0) == [Dropped("unknown_client")]
    assert mux.datagram(b"\xf1\x00", ("192.0.2.1", 1), 1.0) == [Dropped("encap_truncated")]
    assert mux.datagram(b"\x00\x01\x00\x00", ("192.0.2.1", 1), 1.0) == [Dropped("stun_truncated")]


def test_follows_nomination_and_nat_rebinding():
    mux, s = setup()
    a, b, c = ("192.0.2.1", 1000), ("192.0.2.2", 2000), ("192.0.2.3", 3000)
    mux.datagram(check(), a, 1.0)
    assert s.route == Route(a)
    mux.datagram(check(use=True), b, 1.1)  # the client nominates another pair
    assert s.route == Route(b) and s.nominated
    mux.datagram(check(), a, 1.2)  # checks on other pairs after nomination do not move the route
    assert s.route == Route(b)
    mux.datagram(check(), b, 5.0)
    mux.datagram(check(), c, 12.0)  # b went quiet for > 6 s and the client shows up from c: NAT rebinding
    assert s.route == Route(c)
    assert mux.by_client[c] is s


def test_consent_expiry_and_removal():
    mux, s = setup()
    mux.datagram(check(use=True), ("192.0.2.1", 1), 1.0)
    assert mux.expired(20.0) == [] and mux.expired(31.5) == [s]
    mux.remove(s)
    assert mux.by_ufrag == {} and mux.by_client == {}
