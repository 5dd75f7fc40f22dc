"""Signaling over HTTP (aiohttp), shaped like the OpenAI Realtime WebRTC API.

POST /v1/realtime/calls            offer (application/sdp, or multipart sdp + session) -> 201 answer + Location
POST /v1/realtime/calls/{id}/hangup
POST /v1/realtime/calls/{id}/accept  a ringing phone call (``--sip-listen``): answer it with a session config
POST /v1/realtime/calls/{id}/reject  {"status_code": 486}; /refer {"target_uri": "tel:…"}: as OpenAI's SIP calls
POST /v1/realtime/client_secrets   -> {"value": "ek_...", "expires_at", "session"}
GET  /v1/realtime/calls/{id}       what the call is doing (route, timings, packets)
GET  /v1/realtime?model=…          a WebSocket session (``websocket``)
GET  /v1/realtime?call_id=rtc_…    the sideband of a live WebRTC call, over a WebSocket
GET  /healthz, /readyz, /livez, /metrics

In a fleet (``--redis-url``) any transceiver takes any of these: a new call is placed on the least-loaded ready
transceiver of the region and its offer proxied there (``placing``), and a call's own URLs are proxied to the
transceiver named in its id.
GET  /                              a minimal browser client (static/call.html)
GET  /demo                          the demo page: talk to the agent (static/demo.html)
"""

from __future__ import annotations

import asyncio
import gc
import hmac
import os
import secrets
import time
from pathlib import Path

from aiohttp import web

from ..agent.core import schema
from . import models_api, placing, turn, websocket
from ..call.phone import CallError
from .access import Caller
from .errors import CORS, BadRequest, error, form_parts, json_object, read_body
from .guard import ConnectionGuard
from .sdp import OfferError
from .session import LIVE_OBJECTS

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


_bearer = websocket.token_of  # Authorization: Bearer, or a browser WebSocket's key subprotocol


def _is_api_key(t, token: str | None) -> bool:
    return token is not None and any(hmac.compare_digest(token, k) for k in t.cfg.api_keys)


async def _caller(t, request) -> Caller | web.Response:
    """The request's credential (``access.Caller``), or the 401 for one without a configured API key or a live
    client secret. In a fleet a client secret minted by another transceiver is found in the registry (and
    remembered)."""
    address = placing.client_address(t, request)
    if not t.cfg.auth:
        return Caller("open", _bearer(request), address)
    token = _bearer(request)
    if _is_api_key(t, token):
        return Caller("server", token, address)
    if token is not None and token.startswith("ek_"):
        if not t.client_secrets.known(token) and t.registry is not None:
            shared = await t.registry.get_secret(token)
            if shared is not None:
                t.client_secrets.add(token, shared["expires_at"], shared.get("session"))
        if t.client_secrets.valid(token, time.time()):
            return Caller("client", token, address)
    return error(401, "missing or invalid Authorization: Bearer key", code="invalid_api_key")


def _server_key(t, request) -> bool:
    """Whether the request may see diagnostics: a server key, or auth is off."""
    return not t.cfg.auth or _is_api_key(t, _bearer(request))


def _not_yours() -> web.Response:
    """What a client secret gets for a call it did not make: the same 404 as for no call at all, so call ids
    cannot be probed."""
    return error(404, "no such call", code="call_not_found", param="call_id")


def _session_for(t, token: str | None, given: dict | None) -> dict | None:
    """The session a call starts with: the one its client secret was minted with, and over it the one given with
    the offer (a multipart ``session`` part)."""
    minted = t.client_secrets.session(token)
    if not minted:
        return given
    if not given:
        return minted
    return {**minted, **given}


async def _body(t, request) -> bytes:
    return await read_body(request, t.cfg.limits.body_timeout)


def _text(data: bytes, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise OfferError(f"{what} is not UTF-8") from None


async def _read_offer(t, request) -> tuple[str, dict | None]:
    ctype = request.content_type
    if ctype.startswith("multipart/"):
        if "boundary=" not in request.headers.get("Content-Type", ""):
            raise OfferError("multipart/form-data without a boundary", param="Content-Type")
        parts = form_parts(await _body(t, request), request.headers["Content-Type"])
        if parts is None:
            raise OfferError("the multipart body is malformed (truncated, or its boundary is missing)")
        sdp = parts.get("sdp")
        if sdp is None:
            raise OfferError("multipart body has no 'sdp' part")
        session = None
        if "session" in parts:
            try:
                session = json_object(parts["session"], "the 'session' part", "session")
            except BadRequest as exc:
                raise OfferError(str(exc), param="session") from None
        return _text(sdp, "the SDP"), session
    if ctype not in ("application/sdp", "text/plain", "application/octet-stream", ""):
        raise OfferError(f"unsupported Content-Type {ctype!r}: send application/sdp or multipart/form-data",
                         param="Content-Type")
    return _text(await _body(t, request), "the SDP"), None


async def _json_body(t, request) -> dict:
    data = await _body(t, request)
    return json_object(data) if data.strip() else {}


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
    limits = t.cfg.limits

    def admit(caller):
        """``(refusal, None)`` or ``(None, ticket)``: the capacity and draining rule (``Calls.admit``), then the
        caller's share."""
        why = t.calls.admit()
        if why is not None:
            text = "this transceiver is draining; retry on another" if why == "draining" else "at capacity"
            return error(503, text, "server_error", why), None
        ticket = t.admission.take(caller)
        if isinstance(ticket, str):
            t.metrics.limited.labels(ticket).inc()
            what = "client secret" if ticket == "calls_per_key" else "address"
            limit = limits.calls_per_key if ticket == "calls_per_key" else limits.calls_per_address
            return error(429, f"this {what} has {limit} live calls already (--{ticket.replace('_', '-')})",
                         code="rate_limit_exceeded", param=None), None
        return None, ticket

    async def create_call(request):
        caller = await _caller(t, request)
        if isinstance(caller, web.Response):
            return caller
        region = placing.client_region(t, request)
        if t.registry is not None and placing.PLACED not in request.headers:
            placed = await placing.place_call(t, request, region)
            if placed is not None:
                return placed
        refused, ticket = admit(caller)
        if refused is not None:
            return refused
        try:
            sdp, session_config = await _read_offer(t, request)
            if session_config is not None:
                schema.check_session(session_config, any_voice=t.any_voice)
            session, answer = t.create_call(sdp, _session_for(t, caller.key, session_config), region,
                                            owner=caller.key, ticket=ticket)
        except OfferError as exc:
            ticket.release()
            return error(400, str(exc), "invalid_request_error", "invalid_offer", exc.param)
        except schema.Invalid as exc:
            ticket.release()
            return error(400, str(exc), "invalid_request_error", exc.code, exc.param)
        except BaseException:
            ticket.release()
            raise
        if t.registry is not None:
            await t.registry.publish()  # the next placement, wherever it runs, sees this call
        return web.Response(status=201, text=answer, content_type="application/sdp",
                            headers={"Location": f"/v1/realtime/calls/{session.call_id}",
                                     placing.HOLDER: t.id, placing.REGION: region or t.cfg.region})

    async def hangup(request):
        caller = await _caller(t, request)
        if isinstance(caller, web.Response):
            return caller
        if (elsewhere := await placing.to_owner(t, request)) is not None:
            return elsewhere
        call_id = request.match_info["call_id"]
        phone = t.phone is not None and t.phone.ringing(call_id)
        call = t.call(call_id)
        if phone and not caller.server:
            return error(403, "a phone call is controlled with a server key", code="forbidden", param="call_id")
        if not phone and (call is None or not caller.owns(call.owner)):
            return _not_yours()
        if not await t.hangup(call_id):
            return _not_yours()
        return web.json_response({}, status=200)

    async def sip_command(request):
        """accept / reject / refer on a phone call, with the bodies OpenAI's ``realtime.calls`` methods send."""
        caller = await _caller(t, request)
        if isinstance(caller, web.Response):
            return caller
        if not caller.server:  # a phone call was made by no client secret: only the app's backend answers it
            return error(403, "phone calls are accepted, rejected and referred with a server key", code="forbidden",
                         param="call_id")
        if (elsewhere := await placing.to_owner(t, request)) is not None:
            return elsewhere  # the phone transceiver holding the call answers (call ids name it)
        if t.phone is None:
            return error(404, "no such call: this transceiver takes no phone calls (--sip-listen)",
                         code="call_not_found", param="call_id")

        call_id, verb = request.match_info["call_id"], request.match_info["verb"]
        body = await _json_body(t, request)
        try:
            if verb == "accept":
                if body.get("type") != "realtime":
                    return error(400, "accept takes a realtime session config: 'type' must be 'realtime'",
                                 code="invalid_value", param="type")
                session = {k: v for k, v in body.items() if k != "type"}
                schema.check_session(session, any_voice=t.any_voice)
                await t.phone.accept(call_id, session)
            elif verb == "reject":
                code = body.get("status_code", 603)
                if not isinstance(code, int) or isinstance(code, bool) or not 300 <= code <= 699:
                    return error(400, "status_code is a SIP final status, 300-699", code="invalid_value",
                                 param="status_code")
                t.phone.reject(call_id, code)
            else:
                target = body.get("target_uri")
                if not isinstance(target, str) or not target:
                    return error(400, "refer needs target_uri (tel: or sip:)", code="invalid_value",
                                 param="target_uri")
                t.phone.refer(call_id, target)
        except schema.Invalid as exc:
            return error(400, str(exc), "invalid_request_error", exc.code, exc.param)
        except CallError as exc:
            return error(exc.status, str(exc), code=exc.code, param="call_id")
        return web.json_response({}, status=200)

    async def get_call(request):
        caller = await _caller(t, request)
        if isinstance(caller, web.Response):
            return caller
        if (elsewhere := await placing.to_owner(t, request)) is not None:
            return elsewhere
        session = t.call(request.match_info["call_id"])
        if session is None or not caller.owns(session.owner):
            return _not_yours()
        return web.json_response(session.describe())

    async def client_secrets(request):
        if t.cfg.auth and not _is_api_key(t, _bearer(request)):
            return error(401, "client secrets are minted with an API key", code="invalid_api_key")
        body = await _json_body(t, request)
        expires = body.get("expires_after") or {}
        if not isinstance(expires, dict):
            return error(400, "expires_after must be an object: {\"anchor\": \"created_at\", \"seconds\": N}",
                         code="invalid_type", param="expires_after")
        seconds = expires.get("seconds", 600)
        if not isinstance(seconds, int) or isinstance(seconds, bool) or not 10 <= seconds <= 7200:
            return error(400, "expires_after.seconds must be an integer in 10..7200", param="expires_after.seconds")
        value = "ek_" + secrets.token_urlsafe(24)
        expires_at = int(time.time()) + seconds
        session = body.get("session") or {"type": "realtime"}
        try:
            schema.check_session(session, any_voice=t.any_voice)
        except schema.Invalid as exc:
            return error(400, str(exc), "invalid_request_error", exc.code, exc.param)
        t.client_secrets.add(value, expires_at, session)
        if t.registry is not None:  # any transceiver of the fleet accepts it
            await t.registry.put_secret(value, expires_at, session, seconds)
        out = {"value": value, "expires_at": expires_at, "session": session}
        if t.cfg.turn is not None:  # for a client behind a network that lets out only TLS: its RTCPeerConnection's
            out["ice_servers"] = [turn.ice_server(t.cfg.turn, time.time())]  # iceServers (voxgate's addition)
        return web.json_response(out)

    async def ice_servers(request):
        """``GET /v1/voxgate/ice_servers``: TURN credentials for one call (an API key or a client secret), so an app
        whose users sit behind a TLS-only firewall can give them to its ``RTCPeerConnection``; ``[]`` without
        ``--turn-url``."""
        caller = await _caller(t, request)
        if isinstance(caller, web.Response):
            return caller
        servers = [turn.ice_server(t.cfg.turn, time.time())] if t.cfg.turn is not None else []
        return web.json_response({"ice_servers": servers, "ttl": t.cfg.turn.ttl if t.cfg.turn else None},
                                 headers={"Cache-Control": "no-store"})

    async def realtime_ws(request):
        """A WebSocket session, or (``call_id``) the sideband of a live call, wherever it lives in the fleet."""
        caller = await _caller(t, request)
        if isinstance(caller, web.Response):
            return caller
        call_id = request.query.get("call_id")
        if call_id is not None:
            if (elsewhere := await placing.ws_to_owner(t, request, call_id, caller.key)) is not None:
                return elsewhere
            session = t.call(call_id)
            if session is None or not caller.owns(session.owner):
                return error(404, "no such call (a call's sideband is for the key that made it, or a server key)",
                             code="call_not_found", param="call_id")
            agent = session.agent
            if not agent.takes_events:
                return error(409, "this call's agent takes no Realtime events", code="no_sideband", param="call_id")
            # the call may still be connecting: a server opens its sideband right after the offer
            waits = [asyncio.ensure_future(agent.wait_running(t.cfg.setup_timeout)),
                     asyncio.ensure_future(session.ended.wait())]
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for w in waits:
                w.cancel()
            if session.ended.is_set() or not waits[0].done() or not waits[0].result():
                return error(409, "the call ended or never connected", code="call_not_connected", param="call_id")
            return await websocket.serve_sideband(session, request)
        refused, ticket = admit(caller)
        if refused is not None:
            return refused
        try:
            return await websocket.serve_session(t, request, _session_for(t, caller.key, None), limits)
        finally:
            ticket.release()

    diagnostics = Diagnostics(limits.diagnostics_interval)

    async def healthz(request):
        """Health for anyone (is it up, is it draining); with a server key, what it holds (sessions, tasks,
        descriptors), ``?calls`` the live calls' ids and ``?gc`` the call objects left after a collection."""
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
                body.update(await diagnostics.collected())
        return web.json_response(body, status=503 if t.draining else 200)

    async def readyz(request):
        """Readiness for a Service: takes new calls (not draining, not full)."""
        return web.json_response({"ready": t.ready}, status=200 if t.ready else 503)

    async def livez(request):
        """Liveness: the process serves (draining included: live calls must not be killed)."""
        return web.json_response({"live": True})

    async def metrics(request):
        sip = t.phone.counters() if t.phone is not None else None
        return web.Response(body=t.metrics.render(t.endpoint, list(t.sessions.values()), sip), content_type="text/plain",
                            charset="utf-8")

    static = Path(__file__).with_name("static")

    async def call_page(request):
        return web.FileResponse(static / "call.html")

    async def demo_page(request):
        return web.FileResponse(static / "demo.html")

    app.router.add_get("/", call_page)
    app.router.add_get("/demo", demo_page)
    app.router.add_get("/v1/realtime", realtime_ws)
    app.router.add_post("/v1/realtime/calls", create_call)
    app.router.add_post("/v1/realtime/calls/{call_id}/hangup", hangup)
    app.router.add_get("/v1/realtime/calls/{call_id}", get_call)
    app.router.add_post("/v1/realtime/calls/{call_id}/{verb:accept|reject|refer}", sip_command)
    app.router.add_post("/v1/realtime/client_secrets", client_secrets)
    app.router.add_get("/v1/voxgate/ice_servers", ice_servers)
    models_api.add_routes(app, t, lambda request: _caller(t, request))
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/livez", livez)
    app.router.add_get("/metrics", metrics)
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
