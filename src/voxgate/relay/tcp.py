"""The relay's ICE-TCP front (`voxgate relay --tcp-listen HOST:PORT`): the asyncio shell around ``relay/tcpcore.py``.

One process beside the UDP workers, started and restarted by the supervisor. It accepts client TCP connections
(SO_REUSEPORT, so sibling relays on one host may share the port), feeds their bytes to a ``TcpFlow``, and sends
routed frames to the transceiver from its own internal UDP socket in the relay encapsulation, the client's TCP
address standing for the client; the transceiver answers to that socket, like a UDP worker's, and the reply is
framed onto the connection. Media is real-time: a connection whose send buffer is full drops the newest reply
(counted) rather than queueing audio that would arrive too late; a client that stops reading for long is closed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time
from collections import Counter

from ..wire.encap import FLAG_FORGET, EncapError, decapsulate, encapsulate
from ..wire.rfc4571 import frame
from .core import RelayCore, normalize
from .tcpcore import Close, Dropped, TcpFlow, TcpRouter, ToTransceiver

log = logging.getLogger("voxgate.relay.tcp")

WRITE_LIMIT = 256 << 10  # bytes queued toward one client before replies are dropped (~4 s of Opus audio)
STALL_LIMIT = 4 << 20  # ... and before the connection is closed


class _Internal(asyncio.DatagramProtocol):
    def __init__(self, front: "TcpFront"):
        self.front = front

    def datagram_received(self, data, addr):
        self.front.from_transceiver(data, addr)

    def error_received(self, exc):
        self.front.counts["drop_internal_" + type(exc).__name__] += 1


class _Conn(asyncio.Protocol):
    def __init__(self, front: "TcpFront"):
        self.front = front
        self.transport = None
        self.flow: TcpFlow | None = None
        self.timer = None

    def connection_made(self, transport):
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = normalize(transport.get_extra_info("peername")[:2])
        loop = asyncio.get_running_loop()
        flow = self.front.router.accept(peer, time.time())  # wall time: tokens carry their issue time
        if isinstance(flow, Close):
            self.front.counts["refused_" + flow.reason] += 1
            transport.abort()
            return
        self.flow = flow
        self.front.counts["accepted"] += 1
        self.timer = loop.call_later(flow.deadline - flow.opened, self._deadline)

    def _deadline(self):
        if self.flow is not None:
            self.apply(self.flow.tick(max(time.time(), self.flow.deadline)))

    def data_received(self, data):
        if self.flow is not None:
            self.apply(self.flow.data(data, time.time()))

    def apply(self, actions):
        front = self.front
        for a in actions:
            if type(a) is ToTransceiver:
                if self.flow.client not in front.conns:
                    front.conns[self.flow.client] = self
                    front.counts["routed"] += 1
                    if self.timer:
                        self.timer.cancel()
                front.to_transceiver(self.flow.client, a)
            elif type(a) is Dropped:
                front.counts["drop_" + a.reason] += 1
            elif type(a) is Close:
                front.counts["closed_" + a.reason] += 1
                self.transport.abort()
                return

    def write(self, payload: bytes):
        queued = self.transport.get_write_buffer_size()
        if queued > STALL_LIMIT:
            self.front.counts["closed_stalled"] += 1
            self.transport.abort()
        elif queued > WRITE_LIMIT:
            self.front.counts["drop_write_buffer_full"] += 1
        else:
            self.transport.write(frame(payload))
            self.front.counts["to_client_frames"] += 1

    def connection_lost(self, exc):
        if self.timer:
            self.timer.cancel()
        if self.flow is not None:
            self.front.router.closed(self.flow)
            if self.front.conns.get(self.flow.client) is self:
                del self.front.conns[self.flow.client]
            self.flow = None


class TcpFront:
    def __init__(self, core: RelayCore, listen: tuple[str, int], internal_host: str | None = None, **router_options):
        self.core = core
        self.listen = listen
        self.internal_host = internal_host
        self.router = TcpRouter(core, **router_options)
        self.conns: dict = {}  # client (ip, port) -> _Conn, once routed
        self.counts: Counter = Counter()
        self.server = None
        self.internal = None

    async def start(self, listener: socket.socket | None = None):
        loop = asyncio.get_running_loop()
        listener = listener or open_listener(self.listen)
        family = listener.family
        self.server = await loop.create_server(lambda: _Conn(self), sock=listener, backlog=1024)
        ihost = self.internal_host or ("::" if family == socket.AF_INET6 else "0.0.0.0")
        self.internal, _ = await loop.create_datagram_endpoint(lambda: _Internal(self), local_addr=(ihost, 0))

    @property
    def address(self) -> tuple[str, int]:
        return self.server.sockets[0].getsockname()[:2]

    def to_transceiver(self, client, action: ToTransceiver):
        self.internal.sendto(encapsulate(client, action.data, tcp=True), action.transceiver)
        self.counts["to_transceiver_frames"] += 1

    def from_transceiver(self, data: bytes, addr):
        try:
            client, _verified, payload = decapsulate(data)
        except EncapError as exc:
            self.counts["drop_encap_" + exc.reason] += 1
            return
        conn = self.conns.get(normalize(client))
        if conn is None or conn.flow is None or conn.flow.transceiver is None:
            self.counts["drop_no_connection"] += 1
            return
        if normalize(addr[:2]) != conn.flow.transceiver and addr[:2] != conn.flow.transceiver:
            self.counts["drop_wrong_transceiver"] += 1  # only the flow's own transceiver writes to it
            return
        if data[1] & FLAG_FORGET:  # a control message, never written to the client: its check failed there
            self.counts["forget"] += 1
            if payload:
                self.router.core.revoke(payload, conn.flow.transceiver, time.time())
            return
        conn.write(payload)

    def stats(self) -> dict:
        return {"open": self.router.open, "routed": len(self.conns), **self.counts}

    async def close(self):
        if self.server:
            self.server.close()
        for conn in list(self.conns.values()):
            conn.transport.abort()
        if self.internal:
            self.internal.close()


def open_listener(listen: tuple[str, int]) -> socket.socket:
    """The ICE-TCP listening socket (SO_REUSEPORT: sibling relays on one host may share the port)."""
    s = socket.socket(socket.AF_INET6 if ":" in listen[0] else socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(listen)
    s.listen(1024)
    s.setblocking(False)
    return s


def tcp_main(cfg, conn, listener: socket.socket | None = None):
    """Entry point of the TCP front's process (forked by the supervisor, which keeps ``listener`` open)."""
    from .metrics import TcpMetrics
    from .worker import die_with_parent

    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    async def run():
        core = RelayCore(cfg.keyring, cfg.allow, max_age=cfg.token_max_age)
        front = TcpFront(core, cfg.tcp_listen, cfg.internal_host)
        await front.start(listener)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        conn.send({"tcp": "%s:%d" % front.address, "pid": os.getpid(),
                   "internal": front.internal.get_extra_info("sockname")[:2]})
        metrics = TcpMetrics()
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), 1.0)
            except asyncio.TimeoutError:
                pass
            metrics.flush(front.stats())  # once a second, as the UDP workers do
        await front.close()

    asyncio.run(run())
