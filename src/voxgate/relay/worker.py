"""One relay worker process: its own SO_REUSEPORT socket on the public port, pinned to one CPU.

This is the I/O shell around ``RelayCore`` (decisions) and a forwarder (fast
path). The kernel spreads clients over workers by 4-tuple hash; each worker has
a private internal socket toward transceivers, so replies come back to the
worker that holds the flow.
"""

from __future__ import annotations

import ctypes
import logging
import os
import select
import signal
import socket
import time
from collections import Counter
from dataclasses import dataclass, field

from ..wire.token import DEFAULT_MAX_AGE, Keyring
from .core import Drop, FlowBounds, Forward, Hold, RelayCore
from .forwarder import make_forwarder

log = logging.getLogger("voxgate.relay")

SOCKET_BUFFER = 4 << 20


@dataclass
class RelayConfig:
    listen: tuple[str, int]
    keyring: Keyring
    workers: int = 1
    redis_url: str | None = None
    allow: list[str] = field(default_factory=list)
    metrics: tuple[str, int] | None = None
    idle_timeout: float = 30.0  # ICE consent fails after 30 s of silence, so no live flow idles longer
    token_max_age: float = DEFAULT_MAX_AGE
    refresh_interval: float = 10.0
    capacity: int = 65536
    batch: int = 64
    internal_host: str | None = None  # address to send to transceivers from; default: any
    tcp_listen: tuple[str, int] | None = None  # ICE-TCP (RFC 6544, passive) on this address too: relay/tcp.py
    flows_per_token: int = 8  # unverified flows one token may have learned at once (core.FlowBounds)
    flows_per_address: int = 64  # ... one source IP
    unverified_share: float = 0.5  # ... all tokens, as a share of --capacity: the rest is kept for live calls
    xdp: str = "off"  # the kernel path (relay/xdp): auto, native, generic or off
    xdp_interfaces: list[str] = field(default_factory=list)  # where it attaches (default: every interface up)


def _family(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def open_public(listen: tuple[str, int]) -> socket.socket:
    s = socket.socket(_family(listen[0]), socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        try:
            s.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)
        except OSError:
            pass
    if s.family == socket.AF_INET6 and listen[0] in ("::", ""):
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind(listen)
    s.setblocking(False)
    return s


def open_internal(host: str | None, family: int) -> socket.socket:
    s = socket.socket(family, socket.SOCK_DGRAM)
    for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        try:
            s.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)
        except OSError:
            pass
    if family == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind((host or ("::" if family == socket.AF_INET6 else "0.0.0.0"), 0))
    s.setblocking(False)
    return s


def pin_to_cpu(index: int) -> int | None:
    cpus = sorted(os.sched_getaffinity(0))
    if not cpus:
        return None
    cpu = cpus[index % len(cpus)]
    os.sched_setaffinity(0, {cpu})
    return cpu


def die_with_parent():
    """PR_SET_PDEATHSIG: a worker must not outlive a supervisor killed with SIGKILL. SIGKILL, not SIGTERM: a worker
    winding down would keep its share of the port bound (the kernel still hashes clients to it) while it stops,
    and those clients' packets would be lost instead of reaching a sibling relay at once. It has nothing to save:
    its flows are in Redis."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


class Worker:
    def __init__(self, cfg: RelayConfig, index: int = 0, store=None):
        self.cfg, self.index = cfg, index
        self.pub = open_public(cfg.listen)
        # the internal family follows where transceivers are; a dual-stack socket reaches both
        try:
            self.internal = open_internal(cfg.internal_host, socket.AF_INET6)
        except OSError:  # kernel without IPv6
            self.internal = open_internal(cfg.internal_host, socket.AF_INET)
        self.fwd = make_forwarder(self.pub.fileno(), self.internal.fileno(), capacity=cfg.capacity, batch=cfg.batch)
        self.store = store
        self.core = RelayCore(cfg.keyring, cfg.allow, max_age=cfg.token_max_age, lookups=store is not None)
        self.bounds = FlowBounds(self._verified, cfg.flows_per_token, cfg.flows_per_address,
                                 max(1, int(cfg.capacity * cfg.unverified_share)))
        self.removed: Counter = Counter()  # flows removed before idling, by why (evicted, revoked)
        self.drops: Counter = Counter()
        self.learned: Counter = Counter()
        self.expired = 0
        self.running = True
        self.kernel = None  # xdp.KernelPath: this worker's flows in the kernel, with --xdp

    def _verified(self, client):
        flow = self.fwd.get(client)
        return None if flow is None else flow[1]

    @property
    def fast(self) -> bool:
        return type(self.fwd).__module__.endswith("_fastpath")

    def learn(self, client, transceiver, verified: bool, now: float, source: str):
        try:
            added = self.fwd.add(client, transceiver, verified, now)
        except ValueError:  # e.g. an IPv6 transceiver on a host without IPv6
            self.drops["unroutable"] += 1
            return False
        if not added:
            self.drops["table_full"] += 1
            return False
        self.learned[source] += 1
        if self.store is not None and source == "token":
            self.store.publish(client, transceiver, verified)
        return True

    def handle_slow(self, packets, now: float, wall: float):
        for data, client in packets:
            try:
                self._slow_one(data, client, now, wall)
            except Exception:  # a bug on one packet must not stop the worker
                self.drops["internal_error"] += 1
                log.exception("slow path failed on a packet from %s", client)

    def _slow_one(self, data, client, now: float, wall: float):
        current = self.fwd.get(client)
        d = self.core.on_client_packet(data, client, current[0] if current else None, wall)
        if type(d) is Forward:
            if d.learn:
                if not self.learn(client, d.transceiver, False, now, "token"):
                    return
                for victim, why in self.bounds.learned(client, d.ufrag):
                    if self.fwd.remove(victim):
                        self.removed["evicted_" + why] += 1
            else:
                self.fwd.touch(client, now)
            self.fwd.send_to_transceiver(client, d.transceiver, data)
        elif type(d) is Hold:
            if d.lookup:
                self.store.lookup(client)
        else:
            self.drops[d.reason] += 1

    def handle_lookups(self, now: float, wall: float):
        for client, transceiver, verified, reason in self.store.drain():
            d, packets = self.core.on_lookup_result(client, transceiver, wall)
            if type(d) is Drop:
                self.drops[reason or d.reason] += len(packets)
                continue
            if not self.learn(client, transceiver, verified, now, "store"):
                continue
            for data in packets:
                self.fwd.send_to_transceiver(client, transceiver, data)

    def housekeeping(self, now: float, wall: float):
        if self.kernel is not None:  # verified flows into the kernel; what it forwarded keeps them alive here
            for client in self.kernel.sync(self.fwd.active_since(0.0)):
                self.fwd.touch(client, now)
        self.expired += len(self.fwd.expire(now, self.cfg.idle_timeout))
        self.bounds.prune()
        held = self.core.expire_pending(wall)
        if held:
            self.drops["lookup_timeout"] += held

    def run(self, metrics=None, ready=None):
        ep = select.epoll()
        pub_fd, int_fd = self.pub.fileno(), self.internal.fileno()
        ep.register(pub_fd, select.EPOLLIN)
        ep.register(int_fd, select.EPOLLIN)
        store_fd = self.store.wake_fd if self.store else -1
        if self.store:
            ep.register(store_fd, select.EPOLLIN)
        if ready:
            ready(self)
        fwd, mono, wall_clock = self.fwd, time.monotonic, time.time
        next_tick = mono() + 1.0
        next_refresh = mono() + self.cfg.refresh_interval
        while self.running:
            events = ep.poll(0.25)
            now = mono()
            for fd, _ in events:
                if fd == pub_fd:
                    slow = fwd.pump_public(now)
                    if slow:
                        self.handle_slow(slow, now, wall_clock())
                elif fd == int_fd:
                    fwd.pump_internal(now)
                    for ufrag, transceiver in fwd.take_revoked():
                        if self.core.revoke(ufrag, transceiver, wall_clock()):
                            self.removed["token_revoked"] += 1
                elif fd == store_fd:
                    self.handle_lookups(now, wall_clock())
            if now >= next_tick:
                next_tick = now + 1.0
                self.housekeeping(now, wall_clock())
                if metrics:
                    metrics.flush(self.stats(), self.drops, self.learned, self.expired, len(fwd), self.store,
                                  self.removed)
                if self.store and now >= next_refresh:
                    next_refresh = now + self.cfg.refresh_interval
                    self.store.refresh(fwd.active_since(now - self.cfg.refresh_interval))
        ep.close()

    def stats(self) -> dict:
        """The forwarder's counters, with what the kernel forwarded for this worker's flows added."""
        out = self.fwd.stats()
        if self.kernel is not None:
            for k, v in self.kernel.counts.items():
                out[k] = out.get(k, 0) + v
            out["kernel_to_transceiver"] = self.kernel.counts["to_transceiver_packets"]
            out["kernel_to_client"] = self.kernel.counts["to_client_packets"]
        return out

    def close(self):
        """The public socket first: from then on the kernel sends this worker's clients to the other sockets on the
        port (siblings, or the replacement) rather than queueing them here while the rest winds down."""
        self.pub.close()
        self.fwd.close()
        self.internal.close()
        if self.store:
            self.store.close()


def worker_main(cfg: RelayConfig, index: int, conn, program=None):
    """Entry point of a worker process (forked by the supervisor)."""
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    cpu = pin_to_cpu(index)
    store = None
    if cfg.redis_url:
        from .flowstore import FlowStore

        store = FlowStore(cfg.redis_url, ttl=max(4 * cfg.refresh_interval, 2 * cfg.idle_timeout))
    from .metrics import WorkerMetrics

    worker = Worker(cfg, index, store)
    if program is not None:  # the supervisor's XDP program, inherited across the fork
        from .xdp import KernelPath

        worker.kernel = KernelPath(program, worker.internal.getsockname()[1])

    def stop(*_):
        worker.running = False

    signal.signal(signal.SIGTERM, stop)

    def ready(w):
        conn.send({"index": index, "pid": os.getpid(), "cpu": cpu, "fast_path": w.fast, "kernel": w.kernel is not None,
                   "internal": w.internal.getsockname()[:2]})

    try:
        worker.run(WorkerMetrics(), ready)
    finally:
        worker.close()
