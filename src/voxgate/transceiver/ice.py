"""ICE-lite responder and datagram demultiplexer for many sessions on one socket, sans-IO.

Why not aioice: aioice runs a full ICE agent with its own sockets per session
(the port-range problem users hit in containers). An ICE-lite server only
answers checks, so one socket serves every session: STUN is routed by the
server ufrag in USERNAME (the routing token the relay also reads), everything
else by the client address the session's checks came from.

Datagrams arrive either encapsulated by a relay (first byte 0xF1, carrying the
true client address) or plain (direct mode). Replies go back the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..wire import encap, stun
from ..wire.demux import PacketClass, classify

CONSENT_TIMEOUT = 30.0  # RFC 7675: consent expires 30 s after the last check
STALE_ROUTE = 6.0  # browsers send consent checks every ~5 s on the selected pair
MAX_TRANSACTIONS = 64  # check transaction ids remembered per session, to spot a replay from another path
QUIET = 0.5  # a check through another relay takes the return path only after the current one was quiet this long


@dataclass(frozen=True)
class Route:
    """How to reach a client: ``relay`` is None in direct mode."""

    client: tuple
    relay: tuple | None = None


@dataclass
class IceSession:
    ufrag: str
    pwd: str
    call_id: str = ""  # the call it belongs to (the socket's shell finds the call by it)
    route: Route | None = None  # the selected (nominated) route
    routes: dict = field(default_factory=dict)  # every route that passed a check -> time of its last check
    tcp_routes: set = field(default_factory=set)  # the routes whose checks came over a relay's ICE-TCP front

    @property
    def transport(self) -> str | None:
        """How the client reaches us on the selected route: "udp", or "tcp" through a relay's ICE-TCP front."""
        if self.route is None:
            return None
        return "tcp" if self.route in self.tcp_routes else "udp"
    nominated: bool = False
    last_check: float | None = None
    verified: bool = False  # the client proved it receives us (DTLS finished): tell the relay
    transactions: dict = field(default_factory=dict, repr=False)  # recent check transaction id -> the route it came by
    route_seen: float = 0.0  # when something authenticated last came by the selected route
    _header: tuple = field(default=(None, b""), repr=False)  # ((route, verified), encapsulation header)

    @property
    def connected(self) -> bool:
        return self.route is not None

    def outgoing(self, data: bytes, route: "Route | None" = None) -> "Send | None":
        """``data`` addressed to the client over ``route`` (default: the selected one), encapsulated when it
        goes through a relay. The header is built once per route and verified state: media takes this path
        for every packet."""
        route = route or self.route
        if route is None:
            return None
        if route.relay is None:
            return Send(data, route.client)
        key = (route, self.verified)
        if key != self._header[0]:
            self._header = (key, encap.header(route.client, self.verified))
        return Send(self._header[1] + data, route.relay)


@dataclass(frozen=True)
class Send:
    data: bytes
    addr: tuple


@dataclass(frozen=True)
class Deliver:
    session: IceSession
    data: bytes
    via: tuple  # (client, relay) it came by: the session confirms it once it authenticates


@dataclass(frozen=True)
class Connected:
    """A session's selected route was set or moved (first nomination, NAT rebinding, ICE restart)."""

    session: IceSession
    route: Route


@dataclass(frozen=True)
class Dropped:
    reason: str


class IceLiteMux:
    def __init__(self):
        self.by_ufrag: dict[str, IceSession] = {}
        self.by_client: dict[tuple, IceSession] = {}

    # ------------------------------------------------------------- sessions
    def add(self, session: IceSession):
        self.by_ufrag[session.ufrag] = session

    def remove(self, session: IceSession):
        self.by_ufrag.pop(session.ufrag, None)
        for r in session.routes:
            if self.by_client.get(r.client) is session:
                del self.by_client[r.client]

    def expired(self, now: float, timeout: float = CONSENT_TIMEOUT) -> list[IceSession]:
        """Connected sessions whose client stopped sending consent checks."""
        return [s for s in self.by_ufrag.values() if s.last_check is not None and now - s.last_check > timeout]

    # ------------------------------------------------------------- datagrams
    def datagram(self, data: bytes, src: tuple, now: float) -> list:
        """One datagram from the socket -> actions."""
        relay = None
        tcp = False
        cls = classify(data)
        if cls is PacketClass.ENCAP:
            try:
                client, _, inner = encap.decapsulate(data)
            except encap.EncapError as exc:
                return [Dropped("encap_" + exc.reason)]
            tcp = encap.over_tcp(data)
            data, relay = inner, src[:2]
            cls = classify(data)
        else:
            client = src[:2]
        if cls is PacketClass.STUN:
            return self._stun(data, Route(client, relay), now, tcp)
        if cls in (PacketClass.DTLS, PacketClass.RTP):
            session = self.by_client.get(client)
            if session is None:
                return [Dropped("unknown_client")]
            return [Deliver(session, data, (client, relay))]
        return [Dropped("unclassified")]

    def authenticated(self, session: IceSession, via: tuple, now: float) -> "Connected | None":
        """``session``'s DTLS or SRTP layer authenticated a packet that came ``via`` (client, relay), as given in
        its ``Deliver``: replies follow it. A restarted relay, a replaced worker or a sibling relay that now
        carries the client takes over the return path with the first packet it forwards; a packet that does not
        authenticate (forged, replayed: SRTP rejects replays) never gets here, so it moves nothing."""
        route = session.route
        if route is not None and route.client == via[0] and route.relay == via[1]:
            session.route_seen = now
            return None
        route = Route(*via)
        session.routes[route] = now
        session.route, session.route_seen = route, now
        return Connected(session, route)

    def _stun(self, data: bytes, route: Route, now: float, tcp: bool = False) -> list:
        try:
            msg = stun.parse(data)
        except stun.StunError as exc:
            return [Dropped("stun_" + exc.reason)]
        if msg.msg_type != stun.BINDING_REQUEST:
            return [Dropped("stun_not_request")]  # a lite agent sends no checks, so expects no responses
        name = msg.username
        if not name or ":" not in name:
            return [self._error(msg, route, 400, "Bad Request"), Dropped("stun_no_username")]
        ufrag = name.split(":", 1)[0]
        session = self.by_ufrag.get(ufrag)
        if session is None:  # no live call has this ufrag (it ended): the relay drops the flow, and the token
            return [self._error(msg, route, 401, "Unauthorized"), *self._forget(route, ufrag),
                    Dropped("stun_unknown_ufrag")]
        if not msg.check_integrity(session.pwd.encode()):  # not the client: the relay drops the flow it learned
            forget = self._forget(route) if route.client not in self.by_client else []
            return [self._error(msg, route, 401, "Unauthorized"), *forget, Dropped("stun_bad_integrity")]
        actions: list = []
        if session.transactions.setdefault(msg.transaction_id, route) != route:
            # the same transaction from another path: a client's retransmission after its relay changed, or a
            # replay (integrity alone cannot tell them apart). Answered, but it moves nothing and refreshes no
            # consent; a real client's next packet authenticates on the new path anyway (``authenticated``)
            actions.append(Dropped("stun_repeated_elsewhere"))
        else:
            if len(session.transactions) > MAX_TRANSACTIONS:
                del session.transactions[next(iter(session.transactions))]
            actions += self._checked(session, msg, route, now)
            if tcp:
                session.tcp_routes.add(route)
        reply = stun.build(
            stun.BINDING_SUCCESS, msg.transaction_id,
            [stun.attr_xor_mapped_address(route.client, msg.transaction_id)],
            integrity_key=session.pwd.encode(),
        )
        actions.insert(0, session.outgoing(reply, route))
        return actions

    def _checked(self, session: IceSession, msg, route: Route, now: float) -> list:
        """A valid check, first seen on ``route``: consent, the route table, and which route is selected."""
        session.last_check = now
        session.routes[route] = now
        self.by_client[route.client] = session
        current = session.route
        stale = current is not None and now - session.routes.get(current, now) > STALE_ROUTE
        if msg.use_candidate:
            session.nominated = True
        if route == current:
            session.route_seen = now
            return []
        # the same client through another relay (restarted, replaced, a sibling) while nothing came by the current
        # one for a moment; not a backup pair's periodic check while media still flows on the selected one
        relay_moved = (current is not None and current.client == route.client and current.relay != route.relay
                       and now - session.route_seen > QUIET)
        if msg.use_candidate or current is None or not session.nominated or stale or relay_moved:
            # a nomination, the first valid pair, the selected pair went quiet while checks arrive from elsewhere
            # (NAT rebinding), or the client moved relays: follow the client
            session.route, session.route_seen = route, now
            return [Connected(session, route)]
        return []

    @staticmethod
    def _forget(route: Route, ufrag: str = "") -> list:
        """Tell the relay that learned this flow to drop it (it is not a client of ours: its check failed), and with
        ``ufrag`` to learn no new flow from that token (its call has ended). Nothing when the client came direct."""
        if route.relay is None:
            return []
        return [Send(encap.forget(route.client, ufrag), route.relay)]

    @staticmethod
    def _error(msg, route: Route, code: int, reason: str) -> Send:
        """An error response, sent back the way the request came; no session, so never marked VERIFIED."""
        reply = stun.build(stun.BINDING_ERROR, msg.transaction_id, [stun.attr_error_code(code, reason)])
        if route.relay is None:
            return Send(reply, route.client)
        return Send(encap.encapsulate(route.client, reply), route.relay)
