"""The signaling port's connections, bounded: per source address, in all, and in how long a request may take.

aiohttp closes a connection that sends nothing (its keep-alive timer), but not one that sends a request's headers a
byte at a time, nor does it bound connections per client; a few hundred such connections held a transceiver's
descriptors and made ``/healthz`` time out. This guard sits between the listening socket and aiohttp's protocol,
using only aiohttp's public surface (``AppRunner.server`` is the protocol factory):

- a connection over ``connections_per_address`` from one address, or over ``max_connections`` in all, is closed
  at once (counted as ``voxgate_transceiver_limited{limit=…}``);
- a connection must deliver a request's headers within ``header_timeout`` of opening, or of its previous response
  (keep-alive), or it is closed; the body has its own deadline where handlers read it (``callers.body_of``).

``GuardedProtocol`` forwards every callback to aiohttp's handler and decides nothing about HTTP itself.
"""

from __future__ import annotations

import asyncio
from collections import Counter


class ConnectionGuard:
    """The protocol factory for ``loop.create_server``: one ``GuardedProtocol`` per connection."""

    def __init__(self, factory, limits, limited):
        self.factory = factory  # aiohttp's web.Server: calling it makes a RequestHandler
        self.limits = limits
        self.limited = limited  # limited(name): count a limit that bit
        self.by_address: Counter = Counter()
        self.open = 0
        self.by_transport: dict = {}  # transport -> GuardedProtocol, for the middleware (``started``/``answered``)

    def __call__(self) -> "GuardedProtocol":
        return GuardedProtocol(self)

    def of(self, transport) -> "GuardedProtocol | None":
        return self.by_transport.get(transport)


class GuardedProtocol(asyncio.Protocol):
    def __init__(self, guard: ConnectionGuard):
        self.guard = guard
        self.inner = None
        self.transport = None
        self.address = None
        self._deadline: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------- asyncio's callbacks
    def connection_made(self, transport):
        g, lim = self.guard, self.guard.limits
        peer = transport.get_extra_info("peername")
        address = peer[0] if peer else "?"
        if lim.max_connections and g.open >= lim.max_connections:
            g.limited("max_connections")
            transport.abort()
            return
        if lim.connections_per_address and g.by_address[address] >= lim.connections_per_address:
            g.limited("connections_per_address")
            transport.abort()
            return
        self.transport, self.address = transport, address
        g.open += 1
        g.by_address[address] += 1
        g.by_transport[transport] = self
        self.inner = g.factory()
        self.inner.connection_made(transport)
        self._arm()

    def connection_lost(self, exc):
        if self.inner is None:
            return
        g = self.guard
        self._disarm()
        g.open -= 1
        g.by_address[self.address] -= 1
        if g.by_address[self.address] <= 0:
            del g.by_address[self.address]
        g.by_transport.pop(self.transport, None)
        inner, self.inner = self.inner, None
        inner.connection_lost(exc)

    def data_received(self, data):
        if self.inner is not None:
            self.inner.data_received(data)

    def eof_received(self):
        return self.inner.eof_received() if self.inner is not None else None

    def pause_writing(self):
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self):
        if self.inner is not None:
            self.inner.resume_writing()

    # ------------------------------------------------------------- the request deadline
    def started(self):
        """A request's headers arrived (its handler runs): no deadline while it is served."""
        self._disarm()

    def answered(self):
        """Its response went out: the next request on this connection must come in time too."""
        if self.inner is not None:
            self._arm()

    def _arm(self):
        self._disarm()
        timeout = self.guard.limits.header_timeout
        if timeout:
            self._deadline = asyncio.get_running_loop().call_later(timeout, self._expired)

    def _disarm(self):
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self):
        self._deadline = None
        if self.transport is not None and not self.transport.is_closing():
            self.guard.limited("header_timeout")
            self.transport.abort()
