"""The relay's slow-path decisions, sans-IO."""

import os

from helpers import DTLS, RTP, binding_request
from voxgate.relay.core import Drop, Forward, Hold, RelayCore
from voxgate.wire import stun
from voxgate.wire.token import mint

NOW = 1_800_000_000.0
T = ("10.0.0.5", 7000)
C = ("198.51.100.1", 40000)


def test_stun_with_valid_token_learns_then_forwards(keyring):
    core = RelayCore(keyring)
    req = binding_request(mint(keyring, T, NOW))
    assert core.on_client_packet(req, C, None, NOW) == Forward(T, learn=True)
    assert core.on_client_packet(binding_request(mint(keyring, T, NOW)), C, T, NOW) == Forward(T, learn=False)


def test_token_moving_a_client_to_another_transceiver_relearns(keyring):
    core = RelayCore(keyring)
    other = ("10.0.0.6", 7000)
    assert core.on_client_packet(binding_request(mint(keyring, other, NOW)), C, T, NOW) == Forward(other, learn=True)


def test_replayed_transaction_from_another_address_is_dropped(keyring):
    core = RelayCore(keyring)
    txid = os.urandom(12)
    req = binding_request(mint(keyring, T, NOW), txid=txid)
    assert isinstance(core.on_client_packet(req, C, None, NOW), Forward)
    assert core.on_client_packet(req, C, T, NOW + 0.1) == Forward(T)  # a retransmission from the same address
    assert core.on_client_packet(req, ("203.0.113.66", 1), None, NOW + 1) == Drop("replayed")
    assert isinstance(core.on_client_packet(req, ("203.0.113.66", 1), None, NOW + 60), Forward)  # window passed


def test_allow_list(keyring):
    core = RelayCore(keyring, allow=["10.0.0.0/30"])
    assert core.on_client_packet(binding_request(mint(keyring, T, NOW)), C, None, NOW) == Drop("token_not_allowed")
    assert isinstance(core.on_client_packet(binding_request(mint(keyring, ("10.0.0.2", 1), NOW)), C, None, NOW), Forward)


def test_bad_stun_and_junk_are_dropped_by_reason(keyring):
    core = RelayCore(keyring)
    no_user = stun.build(stun.BINDING_REQUEST, os.urandom(12), [])
    assert core.on_client_packet(no_user, C, None, NOW) == Drop("stun_no_username")
    assert core.on_client_packet(no_user[:-2], C, None, NOW) == Drop("stun_truncated")
    assert core.on_client_packet(b"", C, None, NOW) == Drop("empty")
    assert core.on_client_packet(b"\xf1junk", C, None, NOW) == Drop("unclassified")
    assert core.on_client_packet(DTLS, C, None, NOW) == Drop("unknown_flow")
    # an indication inside a live flow is forwarded
    ind = stun.build(stun.BINDING_INDICATION, os.urandom(12), [])
    assert core.on_client_packet(ind, C, T, NOW) == Forward(T)


def test_unknown_flow_lookup_holds_packets_with_limits(keyring):
    core = RelayCore(keyring, lookups=True, lookup_rate=2, max_pending_per_client=3)
    assert core.on_client_packet(DTLS, C, None, NOW) == Hold(lookup=True)
    assert core.on_client_packet(RTP, C, None, NOW) == Hold(lookup=False)
    assert core.on_client_packet(RTP, C, None, NOW) == Hold(lookup=False)
    assert core.on_client_packet(RTP, C, None, NOW) == Drop("pending_full")
    decision, held = core.on_lookup_result(C, T, NOW)
    assert decision == Forward(T, learn=True) and held == [DTLS, RTP, RTP]
    # the rate limit: 2 lookups per second
    assert core.on_client_packet(DTLS, ("1.1.1.1", 1), None, NOW) == Hold(lookup=True)
    assert core.on_client_packet(DTLS, ("1.1.1.2", 1), None, NOW) == Drop("lookup_rate_limited")
    assert core.on_client_packet(DTLS, ("1.1.1.2", 1), None, NOW + 1) == Hold(lookup=True)
    # unanswered lookups time out and their packets are counted
    assert core.expire_pending(NOW + 10) == 2
    assert core.on_lookup_result(("1.1.1.1", 1), None, NOW + 10) == (Drop("unknown_flow"), [])
