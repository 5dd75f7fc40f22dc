"""The C fast path and the Python wire layer write each format once; here the twins are checked equal."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voxgate.wire import encap
from voxgate.wire.demux import FAST, PacketClass, class_table

fastpath = pytest.importorskip("voxgate.relay._fastpath", reason="the C fast path did not build")

ADDRESSES = [("203.0.113.9", 61000), ("0.0.0.0", 0), ("255.255.255.255", 65535), ("2001:db8::9", 1),
             ("::1", 3478), ("fe80::1:2:3:4", 40000), ("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", 9)]


def test_packet_class_tables_agree():
    assert fastpath.packet_classes() == class_table()
    assert fastpath.fast_classes() == FAST
    assert {PacketClass(c) for c in class_table()} == {PacketClass.STUN, PacketClass.DTLS, PacketClass.RTP,
                                                       PacketClass.ENCAP, PacketClass.OTHER}


@pytest.mark.parametrize("client", ADDRESSES)
@pytest.mark.parametrize("verified", [False, True])
def test_headers_agree(client, verified):
    h = fastpath.encap_header(client, verified)
    assert h == encap.header(client, verified)
    assert fastpath.encap_parse(h + b"x") == (client, verified, len(h))
    assert encap.read_header(h + b"x")[::2] == (len(h), client)


@settings(max_examples=3000, deadline=None)
@given(st.one_of(st.binary(max_size=40), st.binary(max_size=30).map(lambda b: b"\xf1" + b),
                 st.tuples(st.sampled_from([0, 1, 2, 3, 4, 0x80]), st.binary(min_size=2, max_size=30))
                 .map(lambda t: bytes([0xF1, t[0]]) + t[1])))
def test_parsers_agree_on_any_bytes(data):
    c = fastpath.encap_parse(data)
    py = encap.read_header(data)
    if py is None:
        assert c is None
        with pytest.raises(encap.EncapError):
            encap.decapsulate(data)
        return
    hlen, flags, client = py
    assert c == (client, bool(flags & encap.FLAG_VERIFIED), hlen)
