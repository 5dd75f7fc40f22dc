"""The decision cores take any bytes without raising: the relay's slow path and the transceiver's demultiplexer."""

import os

from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import binding_request
from voxgate.relay.core import Drop, Forward, Hold, RelayCore
from voxgate.transceiver.ice import Dropped, IceLiteMux, IceSession
from voxgate.wire import encap, stun
from voxgate.wire.token import Keyring, mint

KEYRING = Keyring({2: b"fuzz-cluster-secret-0123456789"}, 2)
NOW = 1_800_000_000.0

stun_like = st.builds(lambda t, body: stun.HEADER.pack(t, len(body), stun.MAGIC_COOKIE, os.urandom(12)) + body,
                      st.sampled_from([stun.BINDING_REQUEST, stun.BINDING_INDICATION, 0x0113]),
                      st.binary(max_size=120))
anything = st.one_of(st.binary(max_size=300), stun_like,
                      st.binary(max_size=60).map(lambda b: binding_request(mint(KEYRING, ("10.0.0.1", 9), NOW))[:20] + b))


@settings(max_examples=1500, deadline=None)
@given(anything, st.booleans())
def test_relay_core_never_raises(data, known):
    core = RelayCore(KEYRING, ["10.0.0.0/8"], lookups=True)
    d = core.on_client_packet(data, ("192.0.2.1", 4000), ("10.0.0.1", 9) if known else None, NOW)
    assert isinstance(d, (Forward, Hold, Drop))
    if isinstance(d, Forward) and not known:
        assert stun.is_stun(data)  # only a verified STUN request opens a route


@settings(max_examples=1500, deadline=None)
@given(st.one_of(anything, anything.map(lambda b: encap.encapsulate(("198.51.100.1", 5), b)),
                 st.binary(max_size=40).map(lambda b: b"\xf1" + b)))
def test_ice_mux_never_raises(data):
    mux = IceLiteMux()
    mux.add(IceSession("SRV", "pwd-0123456789abcdefghij"))
    if not data:
        return
    for action in mux.datagram(data, ("10.1.1.1", 3478), 1.0):
        assert not isinstance(action, Dropped) or action.reason
