"""Prometheus metrics for relay workers (prometheus-client in multiprocess mode).

Workers never touch a metric per packet: the forwarder and the slow path keep
plain integer counters, and ``WorkerMetrics.flush`` adds the deltas once a
second. The supervisor serves the sum of all workers on ``/metrics``.
"""

from __future__ import annotations

import os
import shutil
import tempfile


def enable_multiprocess() -> tuple[str, bool]:
    """Point prometheus-client at a directory (a fresh one unless the operator set one); must run before
    prometheus-client is imported anywhere. Returns the path and whether we created it."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path:
        return path, False
    path = tempfile.mkdtemp(prefix="voxgate-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    return path, True


def cleanup(path: str):
    shutil.rmtree(path, ignore_errors=True)


_DIRECTIONS = {
    "client_packets": ("packets", "from_client"),
    "client_bytes": ("bytes", "from_client"),
    "to_transceiver_packets": ("packets", "to_transceiver"),
    "to_transceiver_bytes": ("bytes", "to_transceiver"),
    "transceiver_packets": ("packets", "from_transceiver"),
    "transceiver_bytes": ("bytes", "from_transceiver"),
    "to_client_packets": ("packets", "to_client"),
    "to_client_bytes": ("bytes", "to_client"),
}


class WorkerMetrics:
    def __init__(self):
        from prometheus_client import Counter, Gauge

        self.packets = Counter("voxgate_relay_packets", "Datagrams by direction", ["direction"])
        self.bytes = Counter("voxgate_relay_bytes", "Bytes by direction", ["direction"])
        self.drops = Counter("voxgate_relay_drops", "Datagrams dropped, by reason", ["reason"])
        self.slow = Counter("voxgate_relay_slow_path", "Datagrams handled by the Python slow path")
        self.kernel = Counter("voxgate_relay_kernel_packets", "Datagrams the kernel path (XDP) forwarded, by where "
                              "to (they are in voxgate_relay_packets_total too)", ["direction"])
        self.learned = Counter("voxgate_relay_flows_learned", "Flows installed, by source", ["source"])
        self.expired = Counter("voxgate_relay_flows_expired", "Flows removed after idling")
        self.removed = Counter("voxgate_relay_flows_removed", "Flows removed before idling, and tokens revoked, by "
                               "reason (forgotten by their transceiver, evicted by a bound, token_revoked)", ["reason"])
        self.flows = Gauge("voxgate_relay_flows", "Live flows", multiprocess_mode="livesum")
        self.worker_flows = Gauge("voxgate_relay_worker_flows", "Live flows per worker", multiprocess_mode="liveall")
        self.redis_up = Gauge("voxgate_relay_redis_up", "1 if every worker reaches Redis", multiprocess_mode="livemin")
        self.redis_errors = Counter("voxgate_relay_redis_errors", "Redis errors seen by the flow store")
        self._last: dict[str, int] = {}

    def _delta(self, key: str, value: int) -> int:
        d = value - self._last.get(key, 0)
        self._last[key] = value
        return d

    def flush(self, fwd_stats: dict, drops: dict, learned: dict, expired: int, flows: int, store,
              removed: dict | None = None):
        for name, value in fwd_stats.items():
            d = self._delta("f:" + name, value)
            if not d:
                continue
            if name in _DIRECTIONS:
                kind, direction = _DIRECTIONS[name]
                (self.packets if kind == "packets" else self.bytes).labels(direction).inc(d)
            elif name == "slow_path":
                self.slow.inc(d)
            elif name.startswith("kernel_"):
                self.kernel.labels(name[7:]).inc(d)
            elif name == "forgotten":
                self.removed.labels("forgotten").inc(d)
            elif name.startswith("drop_"):
                self.drops.labels(name[5:]).inc(d)
        for reason, value in drops.items():
            d = self._delta("d:" + reason, value)
            if d:
                self.drops.labels(reason).inc(d)
        for reason, value in (removed or {}).items():
            d = self._delta("r:" + reason, value)
            if d:
                self.removed.labels(reason).inc(d)
        for source, value in learned.items():
            d = self._delta("l:" + source, value)
            if d:
                self.learned.labels(source).inc(d)
        d = self._delta("expired", expired)
        if d:
            self.expired.inc(d)
        self.flows.set(flows)
        self.worker_flows.set(flows)
        if store is not None:
            self.redis_up.set(1 if store.up else 0)
            d = self._delta("redis_errors", store.errors)
            if d:
                self.redis_errors.inc(d)


class TcpMetrics:
    """The ICE-TCP front's counters (``relay/tcp.py``): connections by outcome, frames by direction, drops."""

    def __init__(self):
        from prometheus_client import Counter, Gauge

        self.connections = Counter("voxgate_relay_tcp_connections", "TCP connections by outcome", ["outcome"])
        self.frames = Counter("voxgate_relay_tcp_frames", "RFC 4571 frames by direction", ["direction"])
        self.drops = Counter("voxgate_relay_tcp_drops", "TCP frames dropped, by reason", ["reason"])
        self.open = Gauge("voxgate_relay_tcp_open", "Open client TCP connections", multiprocess_mode="livesum")
        self.routed = Gauge("voxgate_relay_tcp_routed", "TCP connections routed to a transceiver",
                            multiprocess_mode="livesum")
        self._last: dict[str, int] = {}

    def flush(self, stats: dict):
        for name, value in stats.items():
            if name in ("open", "routed"):
                (self.open if name == "open" else self.routed).set(value)
                continue
            d = value - self._last.get(name, 0)
            self._last[name] = value
            if not d:
                continue
            if name.endswith("_frames"):
                self.frames.labels(name[:-7]).inc(d)
            elif name.startswith("drop_"):
                self.drops.labels(name[5:]).inc(d)
            else:  # accepted, routed, refused_*, closed_*
                self.connections.labels(name).inc(d)


def render() -> bytes:
    """Text exposition of every live worker's metrics."""
    from prometheus_client import CollectorRegistry, generate_latest, multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return generate_latest(registry)


def mark_dead(pid: int):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid)
