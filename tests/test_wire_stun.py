import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voxgate.wire import stun
from voxgate.wire.demux import PacketClass, classify

aioice_stun = pytest.importorskip("aioice.stun")


@pytest.mark.parametrize("addr", [("192.0.2.7", 50123), ("2001:db8::1", 3478)])
def test_roundtrip_all_ice_attributes(addr):
    txid = os.urandom(12)
    data = stun.build(
        stun.BINDING_REQUEST, txid,
        [stun.attr_username("SERVER:client"), stun.attr_priority(1853824767), stun.attr_ice_controlling(2**63 + 5),
         stun.attr_use_candidate(), stun.attr_xor_mapped_address(addr, txid), stun.attr_mapped_address(addr)],
        integrity_key=b"pwd",
    )
    assert stun.is_stun(data) and classify(data) is PacketClass.STUN
    msg = stun.parse(data)
    assert msg.transaction_id == txid
    assert msg.username == "SERVER:client"
    assert msg.priority == 1853824767
    assert msg.ice_controlling == 2**63 + 5 and msg.ice_controlled is None
    assert msg.use_candidate
    assert msg.xor_mapped_address == addr and msg.mapped_address == addr
    assert msg.check_integrity(b"pwd") and not msg.check_integrity(b"other")
    assert stun.read_username(data) == b"SERVER:client"


def test_error_response():
    txid = os.urandom(12)
    msg = stun.parse(stun.build(stun.BINDING_ERROR, txid, [stun.attr_error_code(487, "Role Conflict"),
                                                           stun.attr_ice_controlled(7)]))
    assert msg.error_code == (487, "Role Conflict") and msg.ice_controlled == 7


def test_interoperates_with_aioice_both_ways():
    txid = os.urandom(12)
    ours = stun.build(stun.BINDING_SUCCESS, txid, [stun.attr_xor_mapped_address(("198.51.100.2", 4444), txid)],
                      integrity_key=b"secret")
    theirs = aioice_stun.parse_message(ours)
    theirs.check_message_integrity(b"secret")  # raises on mismatch
    assert theirs.attributes["XOR-MAPPED-ADDRESS"] == ("198.51.100.2", 4444)

    req = aioice_stun.Message(aioice_stun.Method.BINDING, aioice_stun.Class.REQUEST, transaction_id=txid)
    req.attributes["USERNAME"] = "abc:def"
    req.attributes["PRIORITY"] = 99
    req.attributes["ICE-CONTROLLING"] = 42
    req.attributes["USE-CANDIDATE"] = None
    req.add_message_integrity(b"k")
    req.add_fingerprint()
    raw = bytes(req)
    msg = stun.parse(raw)
    assert msg.username == "abc:def" and msg.priority == 99 and msg.ice_controlling == 42 and msg.use_candidate
    assert msg.check_integrity(b"k")
    assert stun.read_username(raw) == b"abc:def"


def test_corrupt_fingerprint_and_truncation_are_named():
    data = bytearray(stun.build(stun.BINDING_REQUEST, os.urandom(12), [stun.attr_username("a:b")]))
    data[-1] ^= 1
    with pytest.raises(stun.StunError) as e:
        stun.parse(bytes(data))
    assert e.value.reason == "bad_fingerprint"
    with pytest.raises(stun.StunError) as e:
        stun.parse(bytes(data[:-4]))
    assert e.value.reason == "truncated"
    with pytest.raises(stun.StunError) as e:
        stun.read_username(stun.build(stun.BINDING_REQUEST, os.urandom(12), []))
    assert e.value.reason == "no_username"


def test_split_username():
    assert stun.split_username(b"srv:cli") == (b"srv", b"cli")
    for bad in (b"srv", b":cli", b"srv:"):
        with pytest.raises(stun.StunError):
            stun.split_username(bad)


valid_header = st.builds(
    lambda t, body, txid: stun.HEADER.pack(t, len(body), stun.MAGIC_COOKIE, txid) + body,
    st.integers(0, 0x3FFF), st.binary(max_size=200), st.binary(min_size=12, max_size=12),
)


@settings(max_examples=1500, deadline=None)
@given(st.one_of(st.binary(max_size=300), valid_header))
def test_fuzzed_parsers_raise_only_stun_error(data):
    for fn in (stun.parse, stun.read_username):
        try:
            fn(data)
        except stun.StunError:
            pass
    stun.is_stun(data)
    classify(data)


@settings(max_examples=500, deadline=None)
@given(st.binary(min_size=1, max_size=64), st.binary(min_size=1, max_size=32))
def test_fuzzed_attributes_roundtrip(user, key):
    txid = os.urandom(12)
    data = stun.build(stun.BINDING_REQUEST, txid, [(stun.USERNAME, user)], integrity_key=key)
    msg = stun.parse(data)
    assert msg.get(stun.USERNAME) == user and msg.check_integrity(key)
