"""GPT-Live's endpoints (OpenAI's Live API), on the same calls, agent and models as the Realtime ones.

POST /v1/live/sessions               ``{session, transport: {type: "webrtc", sdp}}`` -> 201
                                     ``{session: {id}, transport: {type: "webrtc", sdp}}``: the answer through the
                                     relay exactly as for a Realtime call; ``session.started`` first on ``oai-events``
GET  /v1/live/sessions               upgraded: a Live WebSocket session, silent until ``session.start``
POST /v1/live/sessions/{id}/hangup   end it

The session object is checked strictly (``agent/core/live_face.check_session``: an unknown field is a 400 naming
it); the call is admitted by the same rule as any other (``calls_api.CallsApi.admit``); its id (``live_<transceiver>_…``)
names the transceiver that holds it, so a fleet routes it like a Realtime call.
"""

from __future__ import annotations

from aiohttp import web

from ..agent.core import live_face
from . import placing, websocket
from .callers import caller_of, json_body
from .calls_api import CallsApi
from .errors import error
from .sdp import OfferError


class LiveApi:
    def __init__(self, t, calls: CallsApi):
        self.t, self.calls = t, calls

    async def create(self, request):
        """A Live WebRTC session from the browser's offer."""
        t = self.t
        caller = await caller_of(t, request)
        if isinstance(caller, web.Response):
            return caller
        region = placing.client_region(t, request)
        if t.registry is not None and placing.PLACED not in request.headers:
            placed = await placing.place_call(t, request, region)
            if placed is not None:
                return placed
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
        if t.registry is not None:
            await t.registry.publish()
        return web.json_response({"session": {"id": call.call_id}, "transport": {"type": "webrtc", "sdp": answer}},
                                 status=201, headers={placing.HOLDER: t.id, placing.REGION: region or t.cfg.region})

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
            return await websocket.serve_session(t, request, None, t.cfg.limits, api="live")
        finally:
            ticket.release()


def add_routes(app: web.Application, t, calls: CallsApi) -> None:
    api = LiveApi(t, calls)
    app.router.add_post("/v1/live/sessions", api.create)
    app.router.add_get("/v1/live/sessions", api.websocket)
    app.router.add_post("/v1/live/sessions/{call_id}/hangup", calls.hangup)
