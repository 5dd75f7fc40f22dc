"""Prometheus metrics of a transceiver process (its own registry, served on /metrics)."""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

SETUP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class TransceiverMetrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.sessions = Gauge("voxgate_transceiver_sessions", "Live sessions", registry=r)
        self.by_transport = Gauge("voxgate_transceiver_sessions_by_transport",
                                  "Live WebRTC sessions by how the client reaches the relay (udp, tcp)", ["transport"],
                                  registry=r)
        self.calls = Counter("voxgate_transceiver_calls", "Calls by outcome", ["outcome"], registry=r)
        self.setup = Histogram("voxgate_transceiver_setup_seconds", "From the offer POST to each setup stage",
                               ["stage"], buckets=SETUP_BUCKETS, registry=r)
        # the socket path keeps plain ints; they are added here as deltas when /metrics is read
        self.packets = Counter("voxgate_transceiver_packets", "Datagrams on the media socket", ["direction"], registry=r)
        self.drops = Counter("voxgate_transceiver_drops", "Datagrams dropped by the media socket, by reason",
                             ["reason"], registry=r)
        self.limited = Counter("voxgate_transceiver_limited", "Requests, connections, sessions and audio refused or "
                               "cut by a limit (access.Limits), by limit", ["limit"], registry=r)
        self.sip_requests = Counter("voxgate_transceiver_sip_refused", "SIP requests refused or dropped, by why "
                                    "(malformed, forbidden, rate_limited, unauthorized, busy, ringing_full, …)",
                                    ["reason"], registry=r)
        self.tasks = Gauge("voxgate_transceiver_asyncio_tasks", "asyncio tasks alive in the process (a leak shows "
                           "as growth with no calls)", registry=r)
        self._seen: dict = {}

    def observe_setup(self, timings_ms: dict):
        for stage in ("ice_connected", "dtls_connected", "first_audio_in", "first_audio_out"):
            if stage in timings_ms:
                self.setup.labels(stage).observe(timings_ms[stage] / 1000)

    def _add(self, counter, label: str, value: int):
        delta = value - self._seen.get((counter, label), 0)
        if delta > 0:
            counter.labels(label).inc(delta)
            self._seen[(counter, label)] = value

    def render(self, endpoint, sessions=(), sip_counters: dict | None = None) -> bytes:
        counts = {"udp": 0, "tcp": 0}
        for s in sessions:
            if s.ice.transport in counts:
                counts[s.ice.transport] += 1
        for transport, n in counts.items():
            self.by_transport.labels(transport).set(n)
        self._add(self.packets, "in", endpoint.packets_in)
        self._add(self.packets, "out", endpoint.packets_out)
        for reason, n in list(endpoint.drops.items()):
            self._add(self.drops, reason, n)
        for outcome, n in (sip_counters or {}).items():  # SipCore's: malformed, forbidden, rate_limited, …
            self._add(self.sip_requests, outcome, n)
        try:
            import asyncio

            self.tasks.set(len(asyncio.all_tasks()))
        except RuntimeError:  # not in the event loop (a test's direct call)
            pass
        # plus the process-wide registry, where the agent's turn timings live
        return generate_latest(self.registry) + generate_latest(REGISTRY)
