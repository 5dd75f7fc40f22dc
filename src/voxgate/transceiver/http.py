"""Signaling over HTTP (aiohttp), shaped like the OpenAI Realtime WebRTC API: the app, its middlewares (the
connection guard's deadline, CORS, refusals in the API's shape) and the server; the handlers live by concern in
``calls_api`` (calls, phone commands, client secrets, WebSocket sessions and sidebands), ``models_api`` (the model
APIs) and ``health`` (health, readiness, metrics), sharing ``callers`` (who asks).

POST /v1/realtime/calls            offer (application/sdp, or multipart sdp + session) -> 201 answer + Location
POST /v1/realtime/calls/{id}/hangup
POST /v1/realtime/calls/{id}/accept  a ringing phone call (``--sip-listen``): answer it with a session config
POST /v1/realtime/calls/{id}/reject  {"status_code": 486}; /refer {"target_uri": "tel:…"}: as OpenAI's SIP calls
POST /v1/realtime/client_secrets   -> {"value": "ek_...", "expires_at", "session"}
GET  /v1/realtime/calls/{id}       what the call is doing (route, timings, packets)
GET  /v1/realtime?model=…          a WebSocket session (``websocket``)
GET  /v1/realtime?call_id=rtc_…    the sideband of a live WebRTC call, over a WebSocket
GET  /healthz, /readyz, /livez, /metrics
POST /v1/live/sessions, GET /v1/live/sessions (upgraded): GPT-Live over WebRTC and WebSocket (``live_api``)

In a fleet (``--redis-url``) any transceiver takes any of these: a new call is placed on the least-loaded ready
transceiver of the region and its offer proxied there (``placing``), and a call's own URLs are proxied to the
transceiver named in its id.
GET  /                              a minimal browser client (static/call.html)
GET  /demo                          the demo page: talk to the agent (static/demo.html)
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiohttp import web

from . import calls_api, health, live_api, models_api
from .callers import caller_of
from .errors import CORS, BadRequest, error
from .guard import ConnectionGuard


@web.middleware
async def cors(request, handler):
    if request.method == "OPTIONS":
        return web.Response(status=204, headers=CORS)
    resp = await handler(request)
    for k, v in CORS.items():
        resp.headers.setdefault(k, v)
    return resp


@web.middleware
async def bad_request(request, handler):
    """Input we refuse (``errors.BadRequest``, raised wherever a body or a field is read) answered as its 4xx."""
    try:
        return await handler(request)
    except BadRequest as exc:
        return exc.response()
    except web.HTTPException as exc:  # aiohttp's own (no route, wrong method, too large): in the API's shape too
        if exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}.get(exc.status, "invalid_request")
        return error(exc.status, f"{exc.reason}: {request.method} {request.path}", code=code)


def make_app(t, guard: ConnectionGuard | None = None) -> web.Application:
    @web.middleware
    async def deadline(request, handler):
        """The connection's header deadline is off while its request is served, and on again after."""
        conn = guard.of(request.transport) if guard is not None else None
        if conn is not None:
            conn.started()
        try:
            return await handler(request)
        finally:
            if conn is not None:
                conn.answered()

    app = web.Application(middlewares=[deadline, cors, bad_request], client_max_size=256 * 1024)

    static = Path(__file__).with_name("static")

    async def call_page(request):
        return web.FileResponse(static / "call.html")

    async def demo_page(request):
        return web.FileResponse(static / "demo.html")

    app.router.add_get("/", call_page)
    app.router.add_get("/demo", demo_page)
    calls = calls_api.add_routes(app, t)
    live_api.add_routes(app, t, calls)
    models_api.add_routes(app, t, lambda request: caller_of(t, request))
    health.add_routes(app, t)
    return app


class HttpServer:
    """The signaling server: aiohttp's runner behind a ``guard.ConnectionGuard`` on one listening socket."""

    def __init__(self, runner: web.AppRunner, server: asyncio.AbstractServer, guard: ConnectionGuard):
        self.runner, self.server, self.guard = runner, server, guard

    @property
    def address(self) -> tuple[str, int]:
        return self.server.sockets[0].getsockname()[:2]

    async def cleanup(self):
        self.server.close()
        await self.runner.cleanup()  # closes the connections the server still holds, then the app
        await self.server.wait_closed()


async def start_http(t, host: str, port: int) -> HttpServer:
    limits = t.cfg.limits
    guard = ConnectionGuard(None, limits, lambda name: t.metrics.limited.labels(name).inc())
    runner = web.AppRunner(make_app(t, guard), access_log=None, keepalive_timeout=limits.keepalive_timeout)
    await runner.setup()
    guard.factory = runner.server
    # asyncio's default backlog (100) makes a burst of connects wait a second for SYN retries, long enough for the
    # header deadline to pass; the kernel caps this at net.core.somaxconn
    server = await asyncio.get_running_loop().create_server(guard, host, port, reuse_address=True, backlog=4096)
    return HttpServer(runner, server, guard)
