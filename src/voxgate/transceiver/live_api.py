"""GPT-Live's endpoints (OpenAI's Live API), on the same calls, agent and models as the Realtime ones.

POST /v1/live/sessions               ``{session, transport: {type: "webrtc", sdp}}`` -> 201
                                     ``{session: {id}, transport: {type: "webrtc", sdp}}``: the answer through the
                                     relay exactly as for a Realtime call; ``session.started`` first on ``oai-events``
GET  /v1/live/sessions               upgraded: a Live WebSocket session, silent until ``session.start``
GET  /v1/live/sessions/{id}/attach   upgraded: the sideband of a WebRTC (or SIP) Live session: a short replay, then
                                     every event, the call's audio both ways (PCM16 24 kHz with its timeline), and
                                     the app's client events into the session, past the data channel's permissions
POST /v1/live/sessions/{id}/hangup   end it
POST /v1/live/sessions/{id}/fork     a stored session (``store: true``) forked onto a new WebRTC connection: its model,
                                     voice, instructions, delegation and conversation so far; 201 as for a create
GET  /v1/live/sessions/{id}/fork     upgraded: the same on a WebSocket (``session.start`` with the overrides only)
GET  /v1/live/sessions/{id}/content  the recording of a ``store: true`` session: ``audio/wav``, the caller left, the
                                     agent right (also ``/v1/realtime/calls/{id}/recording``)
POST /v1/live/sessions/{id}/accept   a ringing phone call (``live.transport.incoming``) answered as a Live session;
     …/reject, …/refer               as for Realtime

The session object is checked strictly (``agent/core/live_face.check_session``: an unknown field is a 400 naming
it); the call is admitted by the same rule as any other (``calls_api.CallsApi.admit``); its id (``live_<transceiver>_…``)
names the transceiver that holds it, so a fleet routes it like a Realtime call.
"""

from __future__ import annotations

from aiohttp import web

from ..agent.core import live_face
from . import placing, websocket
from .callers import caller_of, json_body
from ..call.phone import CallError
from .calls_api import CallsApi
from .errors import error
from .sdp import OfferError


class LiveApi:
    def __init__(self, t, calls: CallsApi):
        self.t, self.calls = t, calls

    async def create(self, request):
        """A Live WebRTC session from the browser's offer."""
        t = self.t
        answered, caller, region = await self.calls.placed(request)
        if answered is not None:
            return answered
        body = await json_body(t, request)
        transport = body.get("transport")
        if not isinstance(transport, dict) or transport.get("type") != "webrtc":
            return error(400, "transport must be {\"type\": \"webrtc\", \"sdp\": …}", code="invalid_value",
                         param="transport")
        sdp = transport.get("sdp")
        if not isinstance(sdp, str) or not sdp.strip():
            return error(400, "transport.sdp must be the browser's SDP offer", code="invalid_value",
                         param="transport.sdp")
        unknown = [k for k in body if k not in ("session", "transport")]
        if unknown:
            return error(400, f"Unknown parameter: '{unknown[0]}'.", code="unknown_parameter", param=unknown[0])
        session = body.get("session")  # (a client secret's session is Realtime's: a Live session brings its own)
        try:
            live_face.check_session(session, transport="webrtc", any_voice=t.any_voice)
        except live_face.Invalid as exc:
            return error(400, str(exc), "invalid_request_error", exc.code, exc.param)
        return await self._webrtc(request, caller, region, sdp, session)

    async def _webrtc(self, request, caller, region, sdp: str, session: dict):
        """A checked Live session on a browser's offer: admitted, made, answered (201)."""
        t = self.t
        refused, ticket = self.calls.admit(caller)
        if refused is not None:
            return refused
        try:
            call, answer = t.create_call(sdp, session, region, owner=caller.key, ticket=ticket, api="live")
        except OfferError as exc:
            ticket.release()
            return error(400, str(exc), "invalid_request_error", "invalid_offer", exc.param)
        except BaseException:
            ticket.release()
            raise
        t.traced(call, request, region)
        if t.registry is not None:
            await t.registry.publish()
        return web.json_response({"session": {"id": call.call_id}, "transport": {"type": "webrtc", "sdp": answer}},
                                 status=201, headers={placing.HOLDER: t.id, placing.REGION: region or t.cfg.region})

    async def _stored(self, request):
        """The caller and a stored session (``store: true``: its sidecar, on the transceiver that held it), or the
        answer: refused, proxied to its holder, or 404."""
        from ..call.recording import owner_hash

        t = self.t
        caller = await caller_of(t, request)
        if isinstance(caller, web.Response):
            return caller, None
        call_id = request.match_info["call_id"]
        if request.method == "POST":
            if (elsewhere := await placing.to_owner(t, request)) is not None:
                return elsewhere, None
        elif (elsewhere := await placing.ws_to_owner(t, request, call_id, caller.key)) is not None:
            return elsewhere, None
        rec = t.calls.recordings
        meta = rec.meta_of(call_id) if rec is not None else None
        if meta is None or meta.get("api") != "live" or not meta.get("session") or not (
                caller.server or (caller.key is not None and meta.get("owner_sha256") == owner_hash(caller.key))):
            return error(404, "no stored Live session by this id (a session is stored with store: true; a fork is "
                              "for the key that made it, or a server key)", code="session_not_found",
                         param="session_id"), None
        return caller, meta

    async def fork(self, request):
        """A stored session forked onto a new WebRTC connection: ``{transport: {type: "webrtc", sdp}, session?}``."""
        t = self.t
        caller, meta = await self._stored(request)
        if meta is None:
            return caller
        body = await json_body(t, request)
        transport = body.get("transport")
        if not isinstance(transport, dict) or transport.get("type") != "webrtc" or not isinstance(
                transport.get("sdp"), str):
            return error(400, "transport must be {\"type\": \"webrtc\", \"sdp\": …}", code="invalid_value",
                         param="transport")
        try:
            session = live_face.fork_session(meta["session"], meta.get("conversation") or [], body.get("session"),
                                             "webrtc")
            live_face.check_session(session, transport="webrtc", any_voice=t.any_voice)
        except live_face.Invalid as exc:
            return error(400, str(exc), "invalid_request_error", exc.code, exc.param)
        return await self._webrtc(request, caller, None, transport["sdp"], session)

    async def fork_ws(self, request):
        """A stored session forked onto a new WebSocket: its ``session.start`` carries the overrides only."""
        t = self.t
        caller, meta = await self._stored(request)
        if meta is None:
            return caller
        refused, ticket = self.calls.admit(caller)
        if refused is not None:
            return refused
        try:
            return await websocket.serve_session(t, request, None, t.cfg.limits, api="live", owner=caller.key,
                                                 fork_of={"session": meta["session"],
                                                          "conversation": meta.get("conversation") or []})
        finally:
            ticket.release()

    async def websocket(self, request):
        """A Live WebSocket session: the client sends ``session.start`` first."""
        t = self.t
        caller = await caller_of(t, request)
        if isinstance(caller, web.Response):
            return caller
        refused, ticket = self.calls.admit(caller)
        if refused is not None:
            return refused
        try:
            return await websocket.serve_session(t, request, None, t.cfg.limits, api="live", owner=caller.key)
        finally:
            ticket.release()


    async def attach(self, request):
        """The sideband of a live session: the key that made it, or a server key."""
        t = self.t
        caller = await caller_of(t, request)
        if isinstance(caller, web.Response):
            return caller
        call_id = request.match_info["call_id"]
        if (elsewhere := await placing.ws_to_owner(t, request, call_id, caller.key)) is not None:
            return elsewhere
        session = t.call(call_id)
        if session is None or session.api != "live" or not caller.owns(session.owner):
            return error(404, "no such Live session (a sideband is for the key that made it, or a server key)",
                         code="session_not_found", param="session_id")
        if not await self.calls.agent_running(session):
            return error(409, "the session ended or never connected", code="session_not_connected",
                         param="session_id")
        return await websocket.serve_sideband(session, request, api="live")


    async def accept(self, request):
        """A ringing phone call answered as a Live session: ``{session: {type: "live", model, …}}`` (a server key;
        the webhook's ``live.transport.incoming`` named it)."""
        t = self.t
        if (answered := await self.calls.phone_app(request, param="session_id")) is not None:
            return answered
        body = await json_body(t, request)
        session = body.get("session")
        try:
            live_face.check_session(session, transport="sip", any_voice=t.any_voice)
        except live_face.Invalid as exc:
            return error(400, str(exc), "invalid_request_error", exc.code, exc.param)
        try:
            await t.phone.accept(request.match_info["call_id"], session, api="live")
        except CallError as exc:
            return error(exc.status, str(exc), code=exc.code, param="session_id")
        return web.Response(status=200)


def add_routes(app: web.Application, t, calls: CallsApi) -> None:
    api = LiveApi(t, calls)
    app.router.add_post("/v1/live/sessions", api.create)
    app.router.add_get("/v1/live/sessions", api.websocket)
    app.router.add_get("/v1/live/sessions/{call_id}/attach", api.attach)
    app.router.add_post("/v1/live/sessions/{call_id}/hangup", calls.hangup)
    app.router.add_get("/v1/live/sessions/{call_id}/content", calls.recording)  # store: true sessions
    app.router.add_post("/v1/live/sessions/{call_id}/fork", api.fork)
    app.router.add_get("/v1/live/sessions/{call_id}/fork", api.fork_ws)
    app.router.add_post("/v1/live/sessions/{call_id}/accept", api.accept)
    app.router.add_post("/v1/live/sessions/{call_id}/{verb:reject|refer}", calls.sip_command)  # the same bodies
