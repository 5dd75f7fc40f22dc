"""The relay's decisions, sans-IO: what to do with a packet the fast path could not forward.

The fast path (C or Python, see ``forwarder``) forwards DTLS/RTP of known flows
and every transceiver->client packet. Everything else lands here: STUN (which may
create or move a flow), packets from unknown addresses (which may belong to a
flow another relay or an earlier incarnation learned, so we ask Redis), and junk.
No sockets, no clock: callers pass ``now`` and apply the returned decision.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from dataclasses import dataclass, field

from ..wire import stun
from ..wire.demux import PacketClass, classify
from ..wire.token import DEFAULT_MAX_AGE, Keyring, TokenError, verify

Address = tuple  # (ip: str, port: int)


@dataclass(frozen=True)
class Forward:
    """Send the packet to ``transceiver``; if ``learn``, first install the flow client -> transceiver."""

    transceiver: Address
    learn: bool = False
    ufrag: bytes | None = field(default=None, compare=False)  # the token a learned flow came from (FlowBounds)


@dataclass(frozen=True)
class Hold:
    """Unknown address, not STUN: the packet is held; if ``lookup``, ask the flow store about this client
    (otherwise a lookup for it is already in flight)."""

    lookup: bool


@dataclass(frozen=True)
class Drop:
    reason: str




def normalize(addr) -> Address:
    """(ip, port) with IPv4-mapped IPv6 turned back into IPv4, whatever the socket family gave us."""
    ip = addr[0]
    if ip.startswith("::ffff:") and "." in ip:
        ip = ip[7:]
    return ip, addr[1]


class TokenBucket:
    def __init__(self, rate: float, burst: float):
        self.rate, self.burst = rate, burst
        self.tokens, self.t = burst, None

    def take(self, now: float) -> bool:
        if self.t is not None:
            self.tokens = min(self.burst, self.tokens + (now - self.t) * self.rate)
        self.t = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class FlowBounds:
    """How many flows a token may teach the relay before any of them proves itself, sans-IO.

    A flow learned from a STUN check is *unverified* until its transceiver marks it VERIFIED (the client finished
    DTLS: it receives what we send, and holds the call's keys). A captured token replayed from many source
    addresses would otherwise fill the flow table with flows that never verify (each replayed check is forwarded
    once; its transceiver answers FORGET, but a flood outruns that). So unverified flows are bounded per token,
    per source IP and in all (a share of the table); the oldest unverified one is evicted to make room, and a
    verified flow (a live call) is never evicted. ``verified(client)`` asks the forwarder: True, False, or None
    when the flow is gone."""

    def __init__(self, verified, per_token: int = 8, per_address: int = 64, total: int = 32768):
        self.verified = verified
        self.per_token, self.per_address, self.total = per_token, per_address, total
        self._all: OrderedDict[Address, tuple[bytes, str]] = OrderedDict()  # client -> (ufrag, ip), oldest first
        self._by_token: dict[bytes, OrderedDict] = {}
        self._by_ip: dict[str, OrderedDict] = {}

    def __len__(self):
        return len(self._all)

    def learned(self, client: Address, ufrag: bytes) -> list[tuple[Address, str]]:
        """``client``'s flow was learned from ``ufrag``: the ``(client, why)`` flows to evict to keep the bounds."""
        self._untrack(client)
        ip = client[0]
        self._all[client] = (ufrag, ip)
        self._by_token.setdefault(ufrag, OrderedDict())[client] = None
        self._by_ip.setdefault(ip, OrderedDict())[client] = None
        evict: list = []
        for group, limit, why in ((self._by_token.get(ufrag), self.per_token, "per_token"),
                                  (self._by_ip.get(ip), self.per_address, "per_address"),
                                  (self._all, self.total, "unverified_share")):
            while group and len(group) > limit:
                victim = next(iter(group))
                self._untrack(victim)
                if self.verified(victim) is False:
                    evict.append((victim, why))
        return evict

    def prune(self) -> None:
        """Forget the flows that verified or went (idle, forgotten, evicted) since they were learned."""
        for client in [c for c in self._all if self.verified(c) is not False]:
            self._untrack(client)

    def _untrack(self, client: Address) -> None:
        entry = self._all.pop(client, None)
        if entry is None:
            return
        ufrag, ip = entry
        for table, name in ((self._by_token, ufrag), (self._by_ip, ip)):
            group = table.get(name)
            if group is not None:
                group.pop(client, None)
                if not group:
                    del table[name]


class RelayCore:
    """Slow-path policy: verify tokens, enforce the allow-list, refuse replays, hold packets for lookups."""

    def __init__(
        self,
        keyring: Keyring,
        allow: list[str] | None = None,
        *,
        max_age: float = DEFAULT_MAX_AGE,
        lookups: bool = False,
        lookup_rate: float = 500.0,
        replay_window: float = 30.0,
        max_pending_clients: int = 1024,
        max_pending_per_client: int = 8,
        pending_timeout: float = 2.0,
    ):
        self.keyring = keyring
        self.allow = [ipaddress.ip_network(c, strict=False) for c in (allow or [])]
        self.max_age = max_age
        self.lookups = lookups
        self.bucket = TokenBucket(lookup_rate, lookup_rate)
        self.replay_window = replay_window
        self._txids: OrderedDict[bytes, tuple[Address, float]] = OrderedDict()
        self.max_txids = 65536
        self.pending: OrderedDict[Address, tuple[float, list[bytes]]] = OrderedDict()
        self.max_pending_clients = max_pending_clients
        self.max_pending_per_client = max_pending_per_client
        self.pending_timeout = pending_timeout
        self._verified: OrderedDict[bytes, Address] = OrderedDict()  # ufrag -> transceiver, small LRU
        self._revoked: OrderedDict[bytes, float] = OrderedDict()  # ufrag -> until when (its calls have ended)
        self.max_revoked = 65536

    # ------------------------------------------------------------- policy
    def allowed(self, transceiver: Address) -> bool:
        if not self.allow:
            return True
        ip = ipaddress.ip_address(transceiver[0])
        return any(ip in net for net in self.allow)

    def route_token(self, ufrag: bytes, now: float) -> Address:
        """Verified, allow-listed transceiver for a server ufrag; raises TokenError otherwise."""
        info = verify(self.keyring, ufrag, now, self.max_age)
        if not self.allowed(info.transceiver):
            raise TokenError("not_allowed", f"{info.transceiver[0]} is outside --allow")
        return info.transceiver

    def _replayed(self, txid: bytes, client: Address, now: float) -> bool:
        """Same STUN transaction from a second address within the window = a captured request replayed."""
        seen = self._txids.get(txid)
        if seen is not None and seen[0] != client and now - seen[1] < self.replay_window:
            return True
        self._txids[txid] = (client, now)
        self._txids.move_to_end(txid)
        while len(self._txids) > self.max_txids:
            self._txids.popitem(last=False)
        return False

    # ------------------------------------------------------------- packets from clients
    def on_client_packet(self, data: bytes, client: Address, flow: Address | None, now: float):
        """Decide for a slow-path packet. ``flow`` is the transceiver this client is bound to, if any."""
        cls = classify(data)
        if cls is PacketClass.STUN:
            return self._on_stun(data, client, flow, now)
        if cls is PacketClass.EMPTY:
            return Drop("empty")
        if cls in (PacketClass.OTHER, PacketClass.ENCAP):
            return Drop("unclassified")
        if flow is not None:  # fast path declined it (e.g. a race with a flow change): forward
            return Forward(flow)
        if not self.lookups:
            return Drop("unknown_flow")
        return self._hold(data, client, now)

    def _on_stun(self, data: bytes, client: Address, flow: Address | None, now: float):
        try:
            username = stun.read_username(data)
        except stun.StunError as exc:
            if flow is not None and exc.reason in ("not_binding_request", "no_username") and stun.is_stun(data):
                return Forward(flow)  # indications/responses inside a live flow
            return Drop("stun_" + exc.reason)
        try:
            server_ufrag, _ = stun.split_username(username)
        except stun.StunError as exc:
            return Drop("stun_" + exc.reason)
        if server_ufrag in self._revoked and flow is None:  # first: a flood of them costs one lookup each
            return Drop("token_revoked")
        if self._replayed(stun.transaction_id(data), client, now):
            return Drop("replayed")
        cached = self._verified.get(server_ufrag)
        if cached is not None and flow == cached:
            return Forward(flow)
        try:
            transceiver = self.route_token(server_ufrag, now)
        except TokenError as exc:
            return Drop("token_" + exc.reason)
        self._verified[server_ufrag] = transceiver
        if len(self._verified) > 4096:
            self._verified.popitem(last=False)
        return Forward(transceiver, learn=flow != transceiver, ufrag=server_ufrag)

    def revoke(self, ufrag: bytes, transceiver: Address, now: float) -> bool:
        """A transceiver says the call of ``ufrag`` has ended (a FORGET naming it): no new flow is learned from it
        until it would have expired anyway. Only the transceiver the token routes to can revoke it."""
        try:
            if self.route_token(ufrag, now) != normalize(transceiver):
                return False
        except TokenError:
            return False  # expired or not ours to verify: it routes nothing new anyway
        self._revoked[ufrag] = now + self.max_age
        self._revoked.move_to_end(ufrag)
        self._verified.pop(ufrag, None)
        while len(self._revoked) > self.max_revoked:
            self._revoked.popitem(last=False)
        while self._revoked:
            oldest, until = next(iter(self._revoked.items()))
            if until > now:
                break
            del self._revoked[oldest]
        return True

    # ------------------------------------------------------------- flow-store lookups
    def _hold(self, data: bytes, client: Address, now: float):
        entry = self.pending.get(client)
        if entry is not None:
            if len(entry[1]) >= self.max_pending_per_client:
                return Drop("pending_full")
            entry[1].append(bytes(data))
            return Hold(lookup=False)
        if not self.bucket.take(now):
            return Drop("lookup_rate_limited")
        if len(self.pending) >= self.max_pending_clients:
            return Drop("pending_full")
        self.pending[client] = (now, [bytes(data)])
        return Hold(lookup=True)

    def on_lookup_result(self, client: Address, transceiver: Address | None, now: float):
        """The flow store answered. Returns ``(decision, held_packets)``."""
        entry = self.pending.pop(client, None)
        packets = entry[1] if entry else []
        if transceiver is None:
            return Drop("unknown_flow"), packets
        if not self.allowed(transceiver):
            return Drop("token_not_allowed"), packets
        return Forward(transceiver, learn=True), packets

    def expire_pending(self, now: float) -> int:
        """Drop held packets whose lookup never came back; returns how many packets were dropped."""
        dropped = 0
        while self.pending:
            client, (t, packets) = next(iter(self.pending.items()))
            if now - t < self.pending_timeout:
                break
            self.pending.popitem(last=False)
            dropped += len(packets)
        return dropped
