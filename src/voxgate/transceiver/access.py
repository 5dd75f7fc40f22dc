"""Who is asking, what they may touch, and how much of the transceiver they may hold, sans-IO.

The HTTP shell (``http.py``) asks this module three things about every request, and decides nothing itself:

- ``Caller``: what the request's credential is. A **server key** (``--api-key``) acts on every call of the
  transceiver, and so does anyone when auth is off (``--no-auth``: local use, the demo). A **client secret**
  (``ek_…``, minted by a server key for one browser) acts on the calls it made itself and nothing else: it cannot
  read, hang up or attach to another caller's call, and it cannot answer, refuse or transfer a phone call (those
  need a server key: a phone call was made by no client secret).
- ``Admission``: how many live calls and WebSocket sessions one client secret, and one source address, may hold
  at once. Server keys are a backend placing calls for many users, so they are limited only by ``--capacity``.
  A refusal names the limit, is a 429 with ``Retry-After``, and is counted in ``/metrics``.
- ``Limits``: every bound a client can push against, each a flag with its default (the README lists them).

Why our own: aiohttp has no notion of per-credential ownership or per-client quotas (they are the application's);
the counting is a few dicts, and keeping it free of I/O lets the property tests drive it without a server.
"""

from __future__ import annotations

import dataclasses
from collections import Counter


@dataclasses.dataclass
class Limits:
    """The bounds a client can push against (``voxgate transceiver --help`` names each flag)."""

    calls_per_key: int = 4  # live calls + WebSocket sessions per client secret (ek_); 0: no limit
    calls_per_address: int = 100  # ... per source address, for everything not made with a server key; 0: no limit
    ws_idle_timeout: float = 120.0  # a WebSocket session with no client message for this long is closed
    header_timeout: float = 10.0  # a connection must send a request's headers within this (slowloris)
    body_timeout: float = 10.0  # ... and its body within this
    keepalive_timeout: float = 15.0  # an idle keep-alive connection is closed after this
    connections_per_address: int = 256  # open HTTP connections per source address
    max_connections: int = 8192  # open HTTP connections in all (each is a descriptor)
    input_audio_total_mb: float = 256.0  # appended audio in flight, across all sessions, before appends wait
    diagnostics_interval: float = 2.0  # /healthz?gc runs at most once per this many seconds


class Caller:
    """The credential of one request: ``kind`` is ``server`` (an API key), ``client`` (a client secret) or
    ``open`` (auth is off: every request acts as a server would)."""

    __slots__ = ("kind", "key", "address")

    def __init__(self, kind: str, key: str | None, address: str | None):
        self.kind, self.key, self.address = kind, key, address or "?"

    @property
    def server(self) -> bool:
        return self.kind in ("server", "open")

    def owns(self, owner: str | None) -> bool:
        """Whether this caller may act on a call made with ``owner`` (the credential that made it, None for a
        phone call or a call made with auth off)."""
        return self.server or (self.key is not None and owner is not None and owner == self.key)


class Ticket:
    """One admitted call or session; ``release`` (idempotent) gives its place back."""

    __slots__ = ("_admission", "key", "address")

    def __init__(self, admission: "Admission", key: str | None, address: str | None):
        self._admission, self.key, self.address = admission, key, address

    def release(self) -> None:
        if self._admission is not None:
            self._admission._release(self)
            self._admission = None


class Admission:
    """Live calls per client secret and per source address."""

    def __init__(self, limits: Limits):
        self.limits = limits
        self.by_key: Counter = Counter()
        self.by_address: Counter = Counter()

    def take(self, caller: Caller) -> Ticket | str:
        """A ticket, or the name of the limit that refuses the call (``calls_per_key``, ``calls_per_address``)."""
        if caller.server and caller.kind == "server":
            return Ticket(self, None, None)  # a backend: bounded by --capacity alone
        key = caller.key if caller.kind == "client" else None
        lim = self.limits
        if key is not None and lim.calls_per_key and self.by_key[key] >= lim.calls_per_key:
            return "calls_per_key"
        address = caller.address
        if lim.calls_per_address and self.by_address[address] >= lim.calls_per_address:
            return "calls_per_address"
        if key is not None:
            self.by_key[key] += 1
        self.by_address[address] += 1
        return Ticket(self, key, address)

    def _release(self, ticket: Ticket) -> None:
        for table, name in ((self.by_key, ticket.key), (self.by_address, ticket.address)):
            if name is None:
                continue
            table[name] -= 1
            if table[name] <= 0:
                del table[name]
