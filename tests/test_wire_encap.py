import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voxgate.wire import encap
from voxgate.wire.demux import PacketClass, classify


@pytest.mark.parametrize("client,hlen", [(("203.0.113.9", 61000), 8), (("2001:db8::9", 1), 20),
                                         (("::ffff:203.0.113.9", 5), 8)])
@pytest.mark.parametrize("verified", [False, True])
def test_roundtrip(client, hlen, verified):
    data = encap.encapsulate(client, b"payload", verified)
    assert len(data) == hlen + 7 and classify(data) is PacketClass.ENCAP
    got, v, payload = encap.decapsulate(data)
    assert got[1] == client[1] and got[0] == client[0].removeprefix("::ffff:") and v == verified
    assert payload == b"payload"


def test_malformed_is_named():
    for data, reason in [(b"\xf1\x00", "truncated"), (b"\x00" * 8, "bad_magic"), (b"\xf1\x80" + b"\x00" * 6, "bad_flags"),
                         (b"\xf1\x01" + b"\x00" * 10, "truncated")]:
        with pytest.raises(encap.EncapError) as e:
            encap.decapsulate(data)
        assert e.value.reason == reason


@settings(max_examples=2000, deadline=None)
@given(st.one_of(st.binary(max_size=64), st.binary(max_size=40).map(lambda b: b"\xf1" + b)))
def test_fuzzed_decapsulate_raises_only_encap_error(data):
    try:
        client, _, payload = encap.decapsulate(data)
    except encap.EncapError:
        return
    assert len(payload) <= len(data) - 8
