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


def test_a_revoked_token_teaches_no_new_flow_but_keeps_its_live_ones(keyring):
    """Its transceiver says the call ended (FORGET naming the ufrag): new addresses are refused, and only the
    transceiver the token routes to may revoke it."""
    from voxgate.relay.core import FlowBounds  # noqa: F401 - same module

    core = RelayCore(keyring)
    ufrag = mint(keyring, T, NOW)
    assert not core.revoke(ufrag.encode(), ("10.0.0.99", 7000), NOW)  # another transceiver cannot
    assert isinstance(core.on_client_packet(binding_request(ufrag), C, None, NOW), Forward)
    assert core.revoke(ufrag.encode(), T, NOW)
    assert core.on_client_packet(binding_request(ufrag), ("203.0.113.9", 1), None, NOW + 1) == Drop("token_revoked")
    assert core.on_client_packet(binding_request(ufrag), C, T, NOW + 1) == Forward(T)  # its flow still forwards
    assert not core.revoke(b"garbage", T, NOW)


def test_flow_bounds_evict_the_oldest_unverified_flow_never_a_verified_one():
    from voxgate.relay.core import FlowBounds

    verified = {}
    bounds = FlowBounds(lambda c: verified.get(c), per_token=3, per_address=4, total=6)

    def learn(client, ufrag):
        verified[client] = False
        out = bounds.learned(client, ufrag)
        for victim, _ in out:
            del verified[victim]
        return out

    clients = [("198.51.100.%d" % i, 1000 + i) for i in range(10)]
    assert [learn(c, b"A") for c in clients[:3]] == [[], [], []]
    verified[clients[0]] = True  # the call's own flow finished DTLS
    assert learn(clients[3], b"A") == []  # the oldest was verified: untracked, nothing evicted
    assert learn(clients[4], b"A") == [(clients[1], "per_token")]
    assert clients[0] in verified  # never evicted
    # one source IP, many ports
    same_ip = [("203.0.113.7", 2000 + i) for i in range(6)]
    evicted = [v for c in same_ip for v in learn(c, b"T%d" % c[1])]
    assert [e[1] for e in evicted].count("per_address") == 2
    assert len(bounds) <= 6 and all(v is False for v in (verified[c] for c in verified if c != clients[0]))
    bounds.prune()  # flows that verified or went are forgotten
    assert len(bounds) == sum(1 for v in verified.values() if v is False)
