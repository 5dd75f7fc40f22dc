"""The calls endpoints, shaped like OpenAI's Realtime API: a WebRTC call from an offer (``POST /v1/realtime/calls``),
its hangup and its state, a phone call's accept / reject / refer, client secrets, TURN credentials, and the
WebSocket session or a live call's sideband (``GET /v1/realtime``). Each new call passes ``admit``: the call
registry's capacity and draining rule (``call.registry.Calls.admit``), then the caller's share (``access.Admission``).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time

from aiohttp import web

from ..agent.core import schema
from ..call.phone import CallError
from . import placing, turn, websocket
from .callers import bearer as _bearer, caller_of as _caller, is_api_key as _is_api_key, json_body as _json_body
from .callers import body_of, not_yours as _not_yours, session_for as _session_for
from .errors import BadRequest, error, form_parts, json_object
from .sdp import OfferError


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
        parts = form_parts(await body_of(t, request), request.headers["Content-Type"])
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
    return _text(await body_of(t, request), "the SDP"), None


class CallsApi:
    def __init__(self, t):
        self.t = t

    def admit(self, caller):
        """``(refusal, None)`` or ``(None, ticket)``: the capacity and draining rule (``Calls.admit``), then the
        caller's share."""
        t = self.t
        limits = t.cfg.limits
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

    async def placed(self, request):
        """``(answer, caller, region)``: who asks and from which region; ``answer`` is set when the request is answered
        already (no credential: 401; placed on another transceiver of the fleet: its response)."""
        t = self.t
        caller = await _caller(t, request)
        if isinstance(caller, web.Response):
            return caller, None, None
        region = placing.client_region(t, request)
        if t.registry is not None and placing.PLACED not in request.headers:
            placed = await placing.place_call(t, request, region)
            if placed is not None:
                return placed, caller, region
        return None, caller, region

    async def create_call(self, request):
        t = self.t
        answered, caller, region = await self.placed(request)
        if answered is not None:
            return answered
        refused, ticket = self.admit(caller)
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
        t.traced(session, request, region)
        if t.registry is not None:
            await t.registry.publish()  # the next placement, wherever it runs, sees this call
        return web.Response(status=201, text=answer, content_type="application/sdp",
                            headers={"Location": f"/v1/realtime/calls/{session.call_id}",
                                     placing.HOLDER: t.id, placing.REGION: region or t.cfg.region})

    async def _here(self, request):
        """The caller of a request about one call, or the answer already: refused, or the holder's (a fleet)."""
        caller = await _caller(self.t, request)
        if isinstance(caller, web.Response):
            return caller
        if (elsewhere := await placing.to_owner(self.t, request)) is not None:
            return elsewhere
        return caller

    async def hangup(self, request):
        t = self.t
        caller = await self._here(request)
        if isinstance(caller, web.StreamResponse):
            return caller
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

    async def recording(self, request):
        """A call's recording (``audio/wav``, two channels: the caller left, the agent right), for the key that made
        the call or a server key; written as the call goes, so a call still live gives what it has so far."""
        from ..call.recording import owner_hash

        t = self.t
        caller = await self._here(request)
        if isinstance(caller, web.StreamResponse):
            return caller
        call_id = request.match_info["call_id"]
        rec = t.calls.recordings
        path = rec.path_of(call_id) if rec is not None else None
        live = t.calls.get(call_id)
        owner = getattr(live, "owner", None) if live is not None else None
        meta = rec.meta_of(call_id) if rec is not None and live is None else None
        allowed = caller.server or (live is not None and caller.owns(owner)) or (
            meta is not None and caller.key is not None and meta.get("owner_sha256") == owner_hash(caller.key))
        if path is None or not os.path.exists(path) or not allowed:
            return error(404, "no recording of this call (a call records with --record, or a GPT-Live session with "
                              "store: true; a recording is for the key that made the call, or a server key)",
                         code="recording_not_found", param="call_id")
        return web.FileResponse(path, headers={"Content-Type": "audio/wav"})

    async def agent_running(self, session) -> bool:
        """Wait until the call's agent runs (a server opens its sideband right after the offer, while the call may
        still be connecting): False if the call ended or never connected within the setup timeout."""
        waits = [asyncio.ensure_future(session.agent.wait_running(self.t.cfg.setup_timeout)),
                 asyncio.ensure_future(session.ended.wait())]
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for w in waits:
            w.cancel()
        return not session.ended.is_set() and waits[0].done() and not waits[0].cancelled() and waits[0].result()

    async def phone_app(self, request, param: str = "call_id") -> web.Response | None:
        """An app's command on a phone call: a server key, on the transceiver that holds the call, which takes phone
        calls; None when the command is for here, else the answer (refused, or the owner's response)."""
        t = self.t
        caller = await _caller(t, request)
        if isinstance(caller, web.Response):
            return caller
        if not caller.server:  # a phone call was made by no client secret: only the app's backend answers it
            return error(403, "phone calls are accepted, rejected and referred with a server key", code="forbidden",
                         param=param)
        if (elsewhere := await placing.to_owner(t, request)) is not None:
            return elsewhere  # the phone transceiver holding the call answers (call ids name it)
        if t.phone is None:
            return error(404, "no such call: this transceiver takes no phone calls (--sip-listen)",
                         code="call_not_found", param=param)
        return None

    async def sip_command(self, request):
        """accept / reject / refer on a phone call, with the bodies OpenAI's ``realtime.calls`` methods send."""
        t = self.t
        if (answered := await self.phone_app(request)) is not None:
            return answered

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

    async def get_call(self, request):
        t = self.t
        caller = await _caller(t, request)
        if isinstance(caller, web.Response):
            return caller
        if (elsewhere := await placing.to_owner(t, request)) is not None:
            return elsewhere
        session = t.call(request.match_info["call_id"])
        if session is None or not caller.owns(session.owner):
            return _not_yours()
        return web.json_response(session.describe())

    async def client_secrets(self, request):
        t = self.t
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

    async def ice_servers(self, request):
        """``GET /v1/voxgate/ice_servers``: TURN credentials for one call (an API key or a client secret), so an app
        whose users sit behind a TLS-only firewall can give them to its ``RTCPeerConnection``; ``[]`` without
        ``--turn-url``."""
        t = self.t
        caller = await _caller(t, request)
        if isinstance(caller, web.Response):
            return caller
        servers = [turn.ice_server(t.cfg.turn, time.time())] if t.cfg.turn is not None else []
        return web.json_response({"ice_servers": servers, "ttl": t.cfg.turn.ttl if t.cfg.turn else None},
                                 headers={"Cache-Control": "no-store"})

    async def realtime_ws(self, request):
        """A WebSocket session, or (``call_id``) the sideband of a live call, wherever it lives in the fleet."""
        t = self.t
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
            if not session.agent.takes_events:
                return error(409, "this call's agent takes no Realtime events", code="no_sideband", param="call_id")
            if not await self.agent_running(session):
                return error(409, "the call ended or never connected", code="call_not_connected", param="call_id")
            return await websocket.serve_sideband(session, request)
        refused, ticket = self.admit(caller)
        if refused is not None:
            return refused
        try:
            return await websocket.serve_session(t, request, _session_for(t, caller.key, None), t.cfg.limits,
                                                 owner=caller.key)
        finally:
            ticket.release()


def add_routes(app: web.Application, t) -> CallsApi:
    api = CallsApi(t)
    app.router.add_get("/v1/realtime", api.realtime_ws)
    app.router.add_post("/v1/realtime/calls", api.create_call)
    app.router.add_post("/v1/realtime/calls/{call_id}/hangup", api.hangup)
    app.router.add_get("/v1/realtime/calls/{call_id}", api.get_call)
    app.router.add_get("/v1/realtime/calls/{call_id}/recording", api.recording)
    app.router.add_post("/v1/realtime/calls/{call_id}/{verb:accept|reject|refer}", api.sip_command)
    app.router.add_post("/v1/realtime/client_secrets", api.client_secrets)
    app.router.add_get("/v1/voxgate/ice_servers", api.ice_servers)
    return api
