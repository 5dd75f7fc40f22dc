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
import json
import os
import secrets
import time
from pathlib import Path

from aiohttp import web

from ..agent.core import schema
from . import placing, turn, websocket
from .errors import CORS, error
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


_bearer = websocket.token_of  # Authorization: Bearer, or a browser WebSocket's key subprotocol


def _is_api_key(t, token: str | None) -> bool:
    return token is not None and any(hmac.compare_digest(token, k) for k in t.cfg.api_keys)


async def _refused(t, request) -> web.Response | None:
    """The 401 for a call request without a configured API key or a live client secret; None if it may pass.
    In a fleet a client secret minted by another transceiver is found in the registry (and remembered)."""
    if not t.cfg.auth:
        return None
    token = _bearer(request)
    if _is_api_key(t, token):
        return None
    if token is not None and token.startswith("ek_"):
        if not t.client_secrets.known(token) and t.registry is not None:
            shared = await t.registry.get_secret(token)
            if shared is not None:
                t.client_secrets.add(token, shared["expires_at"], shared.get("session"))
        if t.client_secrets.valid(token, time.time()):
            return None
    return error(401, "missing or invalid Authorization: Bearer key", code="invalid_api_key")


def _session_for(t, token: str | None, given: dict | None) -> dict | None:
    """The session a call starts with: the one its client secret was minted with, and over it the one given with
    the offer (a multipart ``session`` part)."""
    minted = t.client_secrets.session(token)
    if not minted:
        return given
    if not given:
        return minted
    return {**minted, **given}


async def _read_offer(request) -> tuple[str, dict | None]:
    ctype = request.content_type
    if ctype.startswith("multipart/"):
        sdp, session = None, None
        reader = await request.multipart()
        async for part in reader:
            if part.name == "sdp":
                sdp = await part.text()
            elif part.name == "session":
                try:
                    session = json.loads(await part.text())
                except ValueError:
                    raise OfferError("the 'session' part is not JSON", param="session") from None
        if sdp is None:
            raise OfferError("multipart body has no 'sdp' part")
        return sdp, session
    if ctype not in ("application/sdp", "text/plain", "application/octet-stream", ""):
        raise OfferError(f"unsupported Content-Type {ctype!r}: send application/sdp or multipart/form-data",
                         param="Content-Type")
    return await request.text(), None


def make_app(t) -> web.Application:
    app = web.Application(middlewares=[cors], client_max_size=256 * 1024)

    async def create_call(request):
        if (refused := await _refused(t, request)) is not None:
            return refused
        region = placing.client_region(t, request)
        if t.registry is not None and placing.PLACED not in request.headers:
            placed = await placing.place_call(t, request, region)
            if placed is not None:
                return placed
        if t.draining:
            return error(503, "this transceiver is draining; retry on another", "server_error", "draining")
        if t.load >= t.cfg.max_sessions:
            return error(503, "at capacity", "server_error", "capacity")
        try:
            sdp, session_config = await _read_offer(request)
            if session_config is not None:
                schema.check_session(session_config)
            token = _bearer(request)
            session, answer = t.create_call(sdp, _session_for(t, token, session_config), region, owner=token)
        except OfferError as exc:
            return error(400, str(exc), "invalid_request_error", "invalid_offer", exc.param)
        except schema.Invalid as exc:
            return error(400, str(exc), "invalid_request_error", exc.code, exc.param)
        if t.registry is not None:
            await t.registry.publish()  # the next placement, wherever it runs, sees this call
        return web.Response(status=201, text=answer, content_type="application/sdp",
                            headers={"Location": f"/v1/realtime/calls/{session.call_id}",
                                     placing.HOLDER: t.id, placing.REGION: region or t.cfg.region})

    async def hangup(request):
        if (refused := await _refused(t, request)) is not None:
            return refused
        if (elsewhere := await placing.to_owner(t, request)) is not None:
            return elsewhere
        if not await t.hangup(request.match_info["call_id"]):
            return error(404, "no such call", code="call_not_found", param="call_id")
        return web.json_response({}, status=200)

    async def sip_command(request):
        """accept / reject / refer on a phone call, with the bodies OpenAI's ``realtime.calls`` methods send."""
        if (refused := await _refused(t, request)) is not None:
            return refused
        if (elsewhere := await placing.to_owner(t, request)) is not None:
            return elsewhere  # the phone transceiver holding the call answers (call ids name it)
        if t.sip is None:
            return error(404, "no such call: this transceiver takes no phone calls (--sip-listen)",
                         code="call_not_found", param="call_id")
        from ..sip.server import CallError

        call_id, verb = request.match_info["call_id"], request.match_info["verb"]
        try:
            body = await request.json() if request.can_read_body else {}
        except ValueError:
            return error(400, "the body is not JSON")
        if not isinstance(body, dict):
            return error(400, "the body is not a JSON object")
        try:
            if verb == "accept":
                if body.get("type") != "realtime":
                    return error(400, "accept takes a realtime session config: 'type' must be 'realtime'",
                                 code="invalid_value", param="type")
                session = {k: v for k, v in body.items() if k != "type"}
                schema.check_session(session)
                await t.sip.accept(call_id, session)
            elif verb == "reject":
                code = body.get("status_code", 603)
                if not isinstance(code, int) or not 300 <= code <= 699:
                    return error(400, "status_code is a SIP final status, 300-699", code="invalid_value",
                                 param="status_code")
                t.sip.reject(call_id, code)
            else:
                target = body.get("target_uri")
                if not isinstance(target, str) or not target:
                    return error(400, "refer needs target_uri (tel: or sip:)", code="invalid_value",
                                 param="target_uri")
                t.sip.refer(call_id, target)
        except schema.Invalid as exc:
            return error(400, str(exc), "invalid_request_error", exc.code, exc.param)
        except CallError as exc:
            return error(exc.status, str(exc), code=exc.code, param="call_id")
        return web.json_response({}, status=200)

    async def get_call(request):
        if (refused := await _refused(t, request)) is not None:
            return refused
        if (elsewhere := await placing.to_owner(t, request)) is not None:
            return elsewhere
        session = t.call(request.match_info["call_id"])
        if session is None:
            return error(404, "no such call", code="call_not_found", param="call_id")
        return web.json_response(session.describe())

    async def client_secrets(request):
        if t.cfg.auth and not _is_api_key(t, _bearer(request)):
            return error(401, "client secrets are minted with an API key", code="invalid_api_key")
        try:
            body = await request.json() if request.can_read_body else {}
        except ValueError:
            return error(400, "body is not JSON")
        body = body or {}
        if not isinstance(body, dict):
            return error(400, "body must be a JSON object")
        seconds = (body.get("expires_after") or {}).get("seconds", 600)
        if not isinstance(seconds, int) or not 10 <= seconds <= 7200:
            return error(400, "expires_after.seconds must be an integer in 10..7200", param="expires_after.seconds")
        value = "ek_" + secrets.token_urlsafe(24)
        expires_at = int(time.time()) + seconds
        session = body.get("session") or {"type": "realtime"}
        try:
            schema.check_session(session)
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
        if (refused := await _refused(t, request)) is not None:
            return refused
        servers = [turn.ice_server(t.cfg.turn, time.time())] if t.cfg.turn is not None else []
        return web.json_response({"ice_servers": servers, "ttl": t.cfg.turn.ttl if t.cfg.turn else None},
                                 headers={"Cache-Control": "no-store"})

    async def realtime_ws(request):
        """A WebSocket session, or (``call_id``) the sideband of a live call, wherever it lives in the fleet."""
        if (refused := await _refused(t, request)) is not None:
            return refused
        token = _bearer(request)
        call_id = request.query.get("call_id")
        if call_id is not None:
            if (elsewhere := await placing.ws_to_owner(t, request, call_id, token)) is not None:
                return elsewhere
            session = t.call(call_id)
            if session is None:
                return error(404, "no such call", code="call_not_found", param="call_id")
            if t.cfg.auth and not _is_api_key(t, token) and token != session.owner:
                return error(403, "a call's sideband is for the key that made the call, or a server key",
                             code="forbidden", param="call_id")
            agent = session.agent
            if not hasattr(agent, "started"):
                return error(409, "this call's agent takes no Realtime events", code="no_sideband", param="call_id")
            if agent.session is None:  # the call is still connecting: a server opens its sideband right after the offer
                waits = [asyncio.ensure_future(agent.started.wait()), asyncio.ensure_future(session.ended.wait())]
                await asyncio.wait(waits, timeout=t.cfg.setup_timeout, return_when=asyncio.FIRST_COMPLETED)
                for w in waits:
                    w.cancel()
                if agent.session is None:
                    return error(409, "the call ended or never connected", code="call_not_connected",
                                 param="call_id")
            return await websocket.serve_sideband(session, request)
        if t.draining:
            return error(503, "this transceiver is draining; retry on another", "server_error", "draining")
        if t.load >= t.cfg.max_sessions:
            return error(503, "at capacity", "server_error", "capacity")
        return await websocket.serve_session(t, request, _session_for(t, token, None))

    async def healthz(request):
        body = {"status": "draining" if t.draining else "ok", "id": t.id, "region": t.cfg.region,
                "ready": t.ready, "registry": None if t.registry is None else t.registry.up,
                "sessions": len(t.sessions), "websocket_sessions": len(t.ws_calls), "capacity": t.cfg.max_sessions,
                "media": "%s:%d" % t.media_address, "candidates": ["%s:%d" % c for c in t.candidates],
                # for leak checks: these return to their idle values once every call has ended
                "tasks": len(asyncio.all_tasks()), "fds": len(os.listdir("/proc/self/fd"))}
        if "calls" in request.query:  # ?calls: the ids of the live calls (operators, and tests placing a sideband)
            body["calls"] = sorted(t.sessions)
        if "gc" in request.query:  # ?gc: collect first, then count the call objects still in memory
            gc.collect()
            body["session_objects"] = len(LIVE_OBJECTS)
            from ..agent.shell.realtime import LIVE_SESSIONS

            body["agent_sessions"] = len(LIVE_SESSIONS)
        return web.json_response(body, status=503 if t.draining else 200)

    async def readyz(request):
        """Readiness for a Service: takes new calls (not draining, not full)."""
        return web.json_response({"ready": t.ready, "sessions": len(t.sessions)}, status=200 if t.ready else 503)

    async def livez(request):
        """Liveness: the process serves (draining included: live calls must not be killed)."""
        return web.json_response({"live": True})

    async def metrics(request):
        return web.Response(body=t.metrics.render(t.endpoint, list(t.sessions.values())), content_type="text/plain",
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
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/livez", livez)
    app.router.add_get("/metrics", metrics)
    return app


async def start_http(t, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(make_app(t), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    return runner
