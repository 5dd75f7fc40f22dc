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
    assert mux.datagram(b"\x16\xfe\xfd" + b"x" * 20, ("198.51.100.7", 5000), 1.1) == [
        Deliver(s, b"\x16\xfe\xfd" + b"x" * 20, (("198.51.100.7", 5000), None))]


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


def test_replies_follow_the_relay_that_last_delivered_an_authenticated_packet():
    """A restarted relay, a replaced worker or a sibling carries the same client from a new internal address:
    the first packet of the session that authenticates through it moves the return path there."""
    mux, s = setup()
    client, old, new = ("203.0.113.5", 6000), ("10.0.0.2", 40000), ("10.0.0.3", 41000)
    mux.datagram(encap.encapsulate(client, check(use=True)), old, 1.0)
    assert s.route == Route(client, old)
    srtp = encap.encapsulate(client, b"\x80" + b"s" * 40)
    (deliver,) = mux.datagram(srtp, new, 2.0)
    assert deliver == Deliver(s, b"\x80" + b"s" * 40, (client, new))
    assert s.route == Route(client, old)  # delivered, but nothing moves until the session says it authenticated
    assert mux.authenticated(s, deliver.via, 2.0) == Connected(s, Route(client, new))
    assert s.route == Route(client, new) and s.outgoing(b"x").addr == new
    assert mux.authenticated(s, deliver.via, 2.1) is None  # the common case, per packet: nothing to do


def test_a_check_through_another_relay_moves_the_route_but_a_replayed_one_does_not():
    mux, s = setup()
    client, old, new, evil = ("203.0.113.5", 6000), ("10.0.0.2", 40000), ("10.0.0.3", 41000), ("10.9.9.9", 666)
    mux.datagram(encap.encapsulate(client, check(use=True)), old, 1.0)
    # a backup pair's check (another region's relay) while media still flows on the selected one: no move
    mux.authenticated(s, (client, old), 1.8)
    mux.datagram(encap.encapsulate(client, check()), evil, 2.0)
    assert s.route == Route(client, old)
    consent = check()  # a consent check without USE-CANDIDATE, as browsers send every few seconds
    acts = mux.datagram(encap.encapsulate(client, consent), new, 2.5)
    assert Connected(s, Route(client, new)) in acts and s.route == Route(client, new)
    # the same transaction again from another sender: answered where it came from, but it moves nothing
    acts = mux.datagram(encap.encapsulate(client, consent), evil, 3.5)
    assert acts[0].addr == evil and Dropped("stun_repeated_elsewhere") in acts
    assert s.route == Route(client, new) and s.last_check == 2.5
    # a client's own retransmission on the same path is answered as before
    acts = mux.datagram(encap.encapsulate(client, consent), new, 3.6)
    assert acts[0].addr == new and not any(isinstance(a, Dropped) for a in acts)


def test_a_check_over_a_relays_tcp_front_marks_the_route_tcp():
    mux, s = setup()
    relay, client = ("10.0.0.2", 40000), ("198.51.100.7", 5000)
    mux.datagram(encap.encapsulate(client, check(use=True), tcp=True), relay, 1.0)
    assert s.transport == "tcp"
    mux.datagram(encap.encapsulate(("198.51.100.7", 5001), check(use=True)), relay, 2.0)  # the same client, UDP
    assert s.transport == "udp"
