"""The transceiver's one UDP socket: an asyncio shell around ``IceLiteMux``."""

from __future__ import annotations

import asyncio
import socket
import time
from collections import Counter
from typing import Mapping

from .ice import Connected, Deliver, Dropped, IceLiteMux, Send


class MediaEndpoint(asyncio.DatagramProtocol):
    """``calls``: the owner's calls by id (a mapping it keeps; the endpoint only reads it), each with
    ``deliver(data, via)`` and ``on_route(route)``; the mux names a packet's call by the id its ICE session carries."""

    def __init__(self, calls: Mapping):
        self.mux = IceLiteMux()
        self.calls = calls
        self.transport: asyncio.DatagramTransport | None = None
        self.drops: Counter = Counter()
        self.packets_in = self.packets_out = 0

    @classmethod
    async def open(cls, host: str, port: int, calls: Mapping) -> "MediaEndpoint":
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
        for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            try:
                sock.setsockopt(socket.SOL_SOCKET, opt, 4 << 20)
            except OSError:
                pass
        sock.bind((host, port))
        ep = cls(calls)
        await loop.create_datagram_endpoint(lambda: ep, sock=sock)
        return ep

    @property
    def address(self) -> tuple[str, int]:
        return self.transport.get_extra_info("sockname")[:2]

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data: bytes, addr):
        self.packets_in += 1
        if not data:
            self.drops["empty"] += 1
            return
        try:
            actions = self.mux.datagram(data, addr, time.monotonic())
        except Exception:  # never let one datagram take the endpoint down
            self.drops["internal_error"] += 1
            return
        for a in actions:
            t = type(a)
            if t is Deliver:
                call = self.calls.get(a.session.call_id)
                if call is not None:
                    call.deliver(a.data, a.via)
            elif t is Send:
                self.sendto(a.data, a.addr)
            elif t is Connected:
                call = self.calls.get(a.session.call_id)
                if call is not None:
                    call.on_route(a.route)
            elif t is Dropped:
                self.drops[a.reason] += 1

    def sendto(self, data: bytes, addr):
        if self.transport is not None:
            self.transport.sendto(data, addr)
            self.packets_out += 1

    def error_received(self, exc):
        self.drops["icmp_" + type(exc).__name__] += 1

    def close(self):
        if self.transport is not None:
            self.transport.close()
