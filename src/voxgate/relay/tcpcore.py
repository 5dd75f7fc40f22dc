"""ICE-TCP on the relay (RFC 6544, passive), sans-IO: one client TCP connection becomes one routed flow.

A client whose network drops UDP connects to the relay's TCP port and speaks RFC 4571 frames (STUN, DTLS, SRTP,
each behind a 2-byte length). The connection is routed exactly like a UDP flow's first packet: by the server
ufrag in the USERNAME of a STUN Binding request, an authenticated routing token (``RelayCore`` verifies it:
forged, expired, replayed or outside ``--allow`` and the connection is closed, never forwarded). From then on
every frame goes to that transceiver in the relay encapsulation, the TCP peer's address standing for the client,
and the transceiver's replies come back framed. Nothing is stored outside the connection: a TCP flow lives and
dies with its socket (a relay that restarts loses it; the client reconnects, to this relay or a sibling, and is
routed again by its next Binding request).

Bounds, so that garbage and slow clients cost little and are closed, not queued:
- a connection must send a valid Binding request within ``first_frame_timeout`` of opening (slowloris);
- before it is routed, DTLS and SRTP frames are held, the newest ``max_held`` of them: a client that reconnects
  after a relay restart (Chromium re-opens a dropped ICE-TCP connection at once) goes on sending media and sends
  its next Binding request only at its next check, up to 2.5 s later; the held frames are forwarded once it is
  routed. Anything else before routing closes the connection;
- a frame longer than ``max_frame`` closes it (``wire.rfc4571``);
- at most ``per_source`` open connections per source IP, ``max_connections`` in all.

``TcpRouter`` keeps the per-source counts; ``TcpFlow`` is one connection. Both take bytes and time (wall-clock
seconds, as ``RelayCore`` checks a token's age with them) and return actions; ``relay/tcp.py`` is the asyncio
shell.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from ..wire.demux import PacketClass, classify
from ..wire.rfc4571 import MAX_FRAME, Deframer, FramingError
from .core import Address, Drop, Forward, RelayCore


@dataclass(frozen=True)
class ToTransceiver:
    """Send ``data`` (one frame's payload) to ``transceiver``, encapsulated with this connection's client address."""

    transceiver: Address
    data: bytes


@dataclass(frozen=True)
class Close:
    reason: str


@dataclass(frozen=True)
class Dropped:
    """A frame not forwarded (counted): junk inside a routed connection."""

    reason: str


class TcpFlow:
    """One client connection: unrouted until a valid Binding request names its transceiver."""

    def __init__(self, core: RelayCore, client: Address, now: float, *, first_frame_timeout: float = 5.0,
                 max_held: int = 8, max_frame: int = MAX_FRAME):
        self.core = core
        self.client = client
        self.opened = now
        self.deadline = now + first_frame_timeout
        self.transceiver: Address | None = None
        self.deframer = Deframer(max_frame)
        self.held: list[bytes] = []
        self.max_held = max_held
        self.closed: str | None = None
        self.frames_in = 0

    def data(self, chunk: bytes, now: float) -> list:
        if self.closed:
            return []
        try:
            frames = self.deframer.feed(chunk)
        except FramingError as exc:
            return self._close(exc.reason)
        out: list = []
        for f in frames:
            self.frames_in += 1
            out += self._frame(f, now)
            if self.closed:
                break
        return out

    def _frame(self, f: bytes, now: float) -> list:
        cls = classify(f)
        if self.transceiver is None:
            if cls is not PacketClass.STUN:
                if cls not in (PacketClass.DTLS, PacketClass.RTP):
                    return self._close("unrouted_" + cls.name.lower())
                self.held.append(f)  # the newest max_held are kept: older audio would be too late anyway
                if len(self.held) > self.max_held:
                    del self.held[0]
                    return [Dropped("held_overflow")]
                return []
            decision = self.core.on_client_packet(f, self.client, None, now)
            if isinstance(decision, Drop):
                return self._close(decision.reason)
            if not isinstance(decision, Forward):  # a Hold: TCP flows are never looked up
                return self._close("unrouted")
            self.transceiver = decision.transceiver
            out = [ToTransceiver(self.transceiver, f)]
            out += [ToTransceiver(self.transceiver, h) for h in self.held]
            self.held.clear()
            return out
        if cls in (PacketClass.DTLS, PacketClass.RTP):
            return [ToTransceiver(self.transceiver, f)]
        if cls is PacketClass.STUN:
            # a check naming another transceiver (a token for a different session) is not this flow's
            decision = self.core.on_client_packet(f, self.client, self.transceiver, now)
            if isinstance(decision, Forward) and decision.transceiver == self.transceiver:
                return [ToTransceiver(self.transceiver, f)]
            return [Dropped(decision.reason if isinstance(decision, Drop) else "stun_other_transceiver")]
        return [Dropped("unclassified")]

    def tick(self, now: float) -> list:
        """Called when the first-frame deadline passes."""
        if self.transceiver is None and not self.closed and now >= self.deadline:
            return self._close("first_frame_timeout")
        return []

    def _close(self, reason: str) -> list:
        self.closed = reason
        self.held.clear()
        return [Close(reason)]


class TcpRouter:
    """Admission: a connection per source IP and in all, within bounds."""

    def __init__(self, core: RelayCore, *, per_source: int = 16, max_connections: int = 4096, **flow_options):
        self.core = core
        self.per_source = per_source
        self.max_connections = max_connections
        self.flow_options = flow_options
        self.by_source: Counter = Counter()
        self.open = 0

    def accept(self, client: Address, now: float) -> TcpFlow | Close:
        if self.open >= self.max_connections:
            return Close("too_many_connections")
        if self.by_source[client[0]] >= self.per_source:
            return Close("too_many_from_source")
        self.by_source[client[0]] += 1
        self.open += 1
        return TcpFlow(self.core, client, now, **self.flow_options)

    def closed(self, flow: TcpFlow):
        self.open -= 1
        ip = flow.client[0]
        self.by_source[ip] -= 1
        if self.by_source[ip] <= 0:
            del self.by_source[ip]
