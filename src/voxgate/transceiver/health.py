"""What an operator and Kubernetes ask a transceiver: ``/healthz`` (up, draining; with a server key what it holds,
``?calls``, ``?gc`` for leak checks), ``/readyz`` (takes new calls: the call registry's ``admit``), ``/livez``, and
``/metrics`` (Prometheus).
"""

from __future__ import annotations

import asyncio
import gc
import os
import time

from aiohttp import web

from .callers import is_server as _server_key
from .session import LIVE_OBJECTS


class Diagnostics:
    """``/healthz?gc`` for a server key: a full collection, then the call objects still alive (leak checks).

    A collection holds the interpreter for as long as it takes, so it never runs more than once per ``interval``
    seconds: requests in between get the last result (``cached_s`` says how old).
    The transceiver freezes what it loaded at start-up (``gc.freeze``: the models' objects), so a collection walks
    only what calls made since, a few milliseconds (docs/security.md has the figures)."""

    def __init__(self, interval: float):
        from ..agent.shell.realtime import LIVE_SESSIONS  # imported now, before start-up's objects are frozen

        self.live_sessions = LIVE_SESSIONS
        self.interval = interval
        self._last: tuple[float, dict] | None = None

    async def collected(self) -> dict:
        now = time.monotonic()
        if self._last is not None and now - self._last[0] < self.interval:
            return {**self._last[1], "cached_s": round(now - self._last[0], 3)}
        t0 = time.perf_counter()
        gc.collect()
        result = {"session_objects": len(LIVE_OBJECTS), "agent_sessions": len(self.live_sessions),
                  "gc_ms": round((time.perf_counter() - t0) * 1000, 1)}
        self._last = (time.monotonic(), result)
        return {**result, "cached_s": 0.0}


class Health:
    def __init__(self, t):
        self.t = t
        self.diagnostics = Diagnostics(t.cfg.limits.diagnostics_interval)

    async def healthz(self, request):
        """Health for anyone (is it up, is it draining); with a server key, what it holds (sessions, tasks,
        descriptors), ``?calls`` the live calls' ids and ``?gc`` the call objects left after a collection."""
        t = self.t
        body = {"status": "draining" if t.draining else "ok", "id": t.id, "region": t.cfg.region,
                "ready": t.ready, "registry": None if t.registry is None else t.registry.up}
        if _server_key(t, request):
            body.update({
                "sessions": t.calls.count("webrtc"), "websocket_sessions": t.calls.count("websocket"),
                "phone_calls": t.calls.count("sip"), "capacity": t.cfg.max_sessions,
                "media": "%s:%d" % t.media_address, "candidates": ["%s:%d" % c for c in t.candidates],
                # for leak checks: these return to their idle values once every call has ended
                "tasks": len(asyncio.all_tasks()), "fds": len(os.listdir("/proc/self/fd"))})
            if "calls" in request.query:  # ?calls: the ids of the live calls (operators, tests placing a sideband)
                body["calls"] = sorted([*t.calls.of("webrtc"), *t.calls.of("sip")])
            if "gc" in request.query:  # ?gc: collect, then count the call objects still in memory
                body.update(await self.diagnostics.collected())
        return web.json_response(body, status=503 if t.draining else 200)

    async def readyz(self, request):
        """Readiness for a Service: takes new calls (not draining, not full)."""
        t = self.t
        return web.json_response({"ready": t.ready}, status=200 if t.ready else 503)

    async def livez(self, request):
        """Liveness: the process serves (draining included: live calls must not be killed)."""
        return web.json_response({"live": True})

    async def metrics(self, request):
        t = self.t
        sip = t.phone.counters() if t.phone is not None else None
        return web.Response(body=t.metrics.render(t.endpoint, list(t.sessions.values()), sip), content_type="text/plain",
                            charset="utf-8")


def add_routes(app: web.Application, t) -> None:
    api = Health(t)
    app.router.add_get("/healthz", api.healthz)
    app.router.add_get("/readyz", api.readyz)
    app.router.add_get("/livez", api.livez)
    app.router.add_get("/metrics", api.metrics)
