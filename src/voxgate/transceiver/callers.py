"""Who is asking, and for which call: the credential of a signaling request (``caller_of``: an API key, a live client
secret, or anyone when auth is off), whether it may see diagnostics (``is_server``), the one answer for a call that is
not the caller's (``not_yours``), the session a call starts with (``session_for``), and a request's body read under
the body deadline (``body_of``, ``json_body``). The handler modules (``calls_api``, ``health``, ``models_api``) share
them.
"""

from __future__ import annotations

import hmac
import time

from aiohttp import web

from . import placing, websocket
from .access import Caller
from .errors import error, json_object, read_body

bearer = websocket.token_of  # Authorization: Bearer, or a browser WebSocket's key subprotocol


def is_api_key(t, token: str | None) -> bool:
    return token is not None and any(hmac.compare_digest(token, k) for k in t.cfg.api_keys)


async def caller_of(t, request) -> Caller | web.Response:
    """The request's credential (``access.Caller``), or the 401 for one without a configured API key or a live
    client secret. In a fleet a client secret minted by another transceiver is found in the registry (and
    remembered)."""
    address = placing.client_address(t, request)
    if not t.cfg.auth:
        return Caller("open", bearer(request), address)
    token = bearer(request)
    if is_api_key(t, token):
        return Caller("server", token, address)
    if token is not None and token.startswith("ek_"):
        if not t.client_secrets.known(token) and t.registry is not None:
            shared = await t.registry.get_secret(token)
            if shared is not None:
                t.client_secrets.add(token, shared["expires_at"], shared.get("session"))
        if t.client_secrets.valid(token, time.time()):
            return Caller("client", token, address)
    return error(401, "missing or invalid Authorization: Bearer key", code="invalid_api_key")


def is_server(t, request) -> bool:
    """Whether the request may see diagnostics: a server key, or auth is off."""
    return not t.cfg.auth or is_api_key(t, bearer(request))


def not_yours() -> web.Response:
    """What a client secret gets for a call it did not make: the same 404 as for no call at all, so call ids
    cannot be probed."""
    return error(404, "no such call", code="call_not_found", param="call_id")


def session_for(t, token: str | None, given: dict | None) -> dict | None:
    """The session a call starts with: the one its client secret was minted with, and over it the one given with
    the offer (a multipart ``session`` part)."""
    minted = t.client_secrets.session(token)
    if not minted:
        return given
    if not given:
        return minted
    return {**minted, **given}


async def body_of(t, request) -> bytes:
    return await read_body(request, t.cfg.limits.body_timeout)


async def json_body(t, request) -> dict:
    data = await body_of(t, request)
    return json_object(data) if data.strip() else {}
