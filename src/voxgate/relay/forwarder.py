"""The relay's fast path: forward DTLS/RTP of known flows and transceiver replies, hand back the rest.

Two implementations with one interface:

* ``voxgate.relay._fastpath.Forwarder`` (C, built by the package's own build):
  recvmmsg/sendmmsg in batches into buffers allocated once, a flow table in an
  open-addressing hash, no Python objects per forwarded packet.
* ``PyForwarder`` below: the same semantics in pure Python, used when the
  extension is missing (``VOXGATE_PURE_PYTHON=1`` forces it) and tested alongside.

Semantics (both): ``pump_public`` reads up to ``batch`` datagrams from the
public socket; DTLS (20..63) and RTP/RTCP (128..191) from a known client go to
its transceiver behind an encapsulation header; everything else is returned as
``[(bytes, (ip, port))]`` for the slow path. ``pump_internal`` reads from the
internal socket, decapsulates, and sends to the client only if the client has a
live flow whose transceiver is the sender; until the transceiver marks the flow
VERIFIED, bytes to the client may not exceed ``AMPLIFICATION`` (3) times the bytes from it. A FORGET control
message from a flow's transceiver (``wire.encap``) removes the flow unless it is verified, and queues the ufrag it
names for ``take_revoked``; it is never sent to the client.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket

from ..wire import encap
from ..wire.demux import FAST as _FAST

COUNTERS = (
    "client_packets", "client_bytes", "to_transceiver_packets", "to_transceiver_bytes",
    "transceiver_packets", "transceiver_bytes", "to_client_packets", "to_client_bytes",
    "slow_path", "drop_oversized", "drop_bad_encap", "drop_no_flow", "drop_wrong_transceiver",
    "drop_amplification", "drop_send_error", "drop_table_full", "forgotten",
)

# before the transceiver marks a flow VERIFIED, a client may be sent at most this many times the bytes it sent:
# a DTLS server flight (~1 KB) answers a ~250-byte ClientHello; QUIC uses the same bound (RFC 9000 section 8)
AMPLIFICATION = 3

_AGAIN = (errno.EAGAIN, errno.EWOULDBLOCK)
_TRANSIENT = (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH)


def _key(addr) -> tuple:
    """Canonical (ip, port): IPv4-mapped IPv6 back to IPv4, so both socket families agree."""
    ip = ipaddress.ip_address(addr[0])
    if ip.version == 6 and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return str(ip), int(addr[1])


def _norm(addr) -> tuple:
    """Hot-path form of ``_key`` for addresses the kernel gave us (already in canonical text form)."""
    ip = addr[0]
    if ip[:7] == "::ffff:" and "." in ip:
        ip = ip[7:]
    return ip, addr[1]


def _sockaddr(addr, family: int):
    ip, port = _key(addr)
    if family == socket.AF_INET6 and ":" not in ip:
        return ("::ffff:" + ip, port)
    if family == socket.AF_INET and ":" in ip:
        raise ValueError(f"IPv6 address {ip} on an IPv4 socket")
    return (ip, port)


class _Flow:
    __slots__ = ("transceiver", "dest", "header", "verified", "credit", "last_seen", "client_dest")

    def __init__(self, client, transceiver, verified, now, pub_family, int_family):
        self.transceiver = _key(transceiver)
        self.dest = _sockaddr(transceiver, int_family)
        self.client_dest = _sockaddr(client, pub_family)
        self.header = encap.header(client)
        self.verified = verified
        self.credit = 0
        self.last_seen = now


class PyForwarder:
    def __init__(self, pub_fd: int, int_fd: int, capacity: int = 65536, batch: int = 64, bufsize: int = 2048):
        self.pub = socket.socket(fileno=os.dup(pub_fd))
        self.int = socket.socket(fileno=os.dup(int_fd))
        self.pub.setblocking(False)
        self.int.setblocking(False)
        self.capacity, self.batch, self.bufsize = capacity, batch, bufsize
        self.buf = bytearray(bufsize)
        self.view = memoryview(self.buf)
        self.flows: dict[tuple, _Flow] = {}
        self.c = dict.fromkeys(COUNTERS, 0)
        self.revoked: list = []

    def close(self):
        self.pub.close()
        self.int.close()

    # ------------------------------------------------------------- flow table
    def add(self, client, transceiver, verified: bool = False, now: float = 0.0) -> bool:
        key = _key(client)
        if key not in self.flows and len(self.flows) >= self.capacity:
            self.c["drop_table_full"] += 1
            return False
        self.flows[key] = _Flow(key, transceiver, verified, now, self.pub.family, self.int.family)
        return True

    def remove(self, client) -> bool:
        return self.flows.pop(_key(client), None) is not None

    def get(self, client):
        f = self.flows.get(_key(client))
        return None if f is None else (f.transceiver, f.verified, f.last_seen)

    def __len__(self):
        return len(self.flows)

    def expire(self, now: float, idle: float) -> list:
        dead = [k for k, f in self.flows.items() if now - f.last_seen > idle]
        for k in dead:
            del self.flows[k]
        return dead

    def active_since(self, t: float) -> list:
        return [(k, f.transceiver, f.verified) for k, f in self.flows.items() if f.last_seen >= t]

    def stats(self) -> dict:
        return dict(self.c)

    def take_revoked(self) -> list:
        """The (ufrag, transceiver) pairs FORGET messages revoked since the last call."""
        out, self.revoked = self.revoked, []
        return out

    # ------------------------------------------------------------- packets
    def _receive(self, sock, packets_key: str, bytes_key: str):
        """Up to ``batch`` datagrams into the one buffer, counted; yields ``(size, addr)`` for each that fits
        (consume each before asking for the next: they share the buffer)."""
        recv, c, bufsize = sock.recvfrom_into, self.c, self.bufsize
        for _ in range(self.batch):
            try:
                n, addr = recv(self.buf, bufsize)
            except OSError as exc:
                if exc.errno in _AGAIN:
                    return
                if exc.errno in _TRANSIENT:  # an ICMP error about an earlier send: not this socket's failure
                    continue
                raise
            c[packets_key] += 1
            c[bytes_key] += n
            if n >= bufsize:
                c["drop_oversized"] += 1
                continue
            yield n, addr

    def pump_public(self, now: float) -> list:
        c, flows, view, slow = self.c, self.flows, self.view, []
        send = self.int.sendmsg
        for n, addr in self._receive(self.pub, "client_packets", "client_bytes"):
            key = _norm(addr)
            flow = flows.get(key)
            if flow is None or n == 0 or not _FAST[self.buf[0]]:
                c["slow_path"] += 1
                slow.append((bytes(view[:n]), key))
                continue
            flow.last_seen = now
            flow.credit += n * AMPLIFICATION
            try:
                send([flow.header, view[:n]], [], 0, flow.dest)
            except OSError:
                c["drop_send_error"] += 1
                continue
            c["to_transceiver_packets"] += 1
            c["to_transceiver_bytes"] += n + len(flow.header)
        return slow

    def pump_internal(self, now: float) -> int:
        c, flows, view, read_header = self.c, self.flows, self.view, encap.read_header
        send = self.pub.sendto
        sent = 0
        for n, addr in self._receive(self.int, "transceiver_packets", "transceiver_bytes"):
            parsed = read_header(view, n)
            if parsed is None:
                c["drop_bad_encap"] += 1
                continue
            hlen, flags, client = parsed
            if flags & encap.FLAG_FORGET:  # a control message from a transceiver: never sent on
                sender = _norm(addr)
                if 0 < n - hlen <= 256:  # a ufrag to revoke: the slow path checks it routes to the sender
                    self.revoked.append((bytes(view[hlen:n]), sender[:2]))
                flow = flows.get(client)
                if flow is not None and not flow.verified and flow.transceiver == sender[:2]:
                    del flows[client]
                    c["forgotten"] += 1
                continue
            flow = flows.get(client)
            if flow is None:
                c["drop_no_flow"] += 1
                continue
            if flow.transceiver != _norm(addr):
                c["drop_wrong_transceiver"] += 1
                continue
            size = n - hlen
            if flags & encap.FLAG_VERIFIED:
                flow.verified = True
            if not flow.verified:
                if size > flow.credit:
                    c["drop_amplification"] += 1
                    continue
                flow.credit -= size
            try:
                send(view[hlen:n], flow.client_dest)
            except OSError:
                c["drop_send_error"] += 1
                continue
            c["to_client_packets"] += 1
            c["to_client_bytes"] += size
            sent += 1
        return sent

    def send_to_transceiver(self, client, transceiver, data: bytes) -> bool:
        """Slow-path forward (STUN, held packets), counted like the fast path."""
        flow = self.flows.get(_key(client))
        hdr = flow.header if flow else encap.header(client)
        if flow is not None:
            flow.credit += len(data) * AMPLIFICATION
        try:
            self.int.sendmsg([hdr, data], [], 0, _sockaddr(transceiver, self.int.family))
        except OSError:
            self.c["drop_send_error"] += 1
            return False
        self.c["to_transceiver_packets"] += 1
        self.c["to_transceiver_bytes"] += len(data) + len(hdr)
        return True

    def touch(self, client, now: float):
        f = self.flows.get(_key(client))
        if f is not None:
            f.last_seen = now


def make_forwarder(pub_fd: int, int_fd: int, **kw):
    """The C forwarder if it was built (and not disabled), else the pure-Python one."""
    if os.environ.get("VOXGATE_PURE_PYTHON") != "1":
        try:
            from ._fastpath import Forwarder
        except ImportError:
            pass
        else:
            return Forwarder(pub_fd, int_fd, **kw)
    return PyForwarder(pub_fd, int_fd, **kw)
