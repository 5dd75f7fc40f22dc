"""Error responses of the signaling API, in the OpenAI shape: ``{"error": {"message", "type", "code", "param"}}``."""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
import json

import aiohttp
import aiohttp.http_exceptions
from aiohttp import web

CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
    "Access-Control-Allow-Headers": "authorization, content-type, x-openai-agents-sdk, openai-beta",
    "Access-Control-Expose-Headers": "Location, X-Voxgate-Transceiver, X-Voxgate-Region",
}


def error(status: int, message: str, type_: str = "invalid_request_error", code: str | None = None,
          param: str | None = None) -> web.Response:
    body = {"error": {"message": message, "type": type_, "code": code, "param": param}}
    return web.json_response(body, status=status, headers=CORS)


class BadRequest(Exception):
    """Input a client sent that we refuse: becomes its 4xx (400 unless said) with the reason, never a 500."""

    def __init__(self, message: str, code: str = "invalid_request", param: str | None = None, status: int = 400):
        super().__init__(message)
        self.code, self.param, self.status = code, param, status

    def response(self) -> web.Response:
        return error(self.status, str(self), code=self.code, param=self.param)


async def read_body(request: web.Request, timeout: float, limit: int | None = None) -> bytes:
    """The request's body, whole, within ``timeout`` seconds (a client that sends it slowly holds nothing long) and
    at most ``limit`` bytes (default: the app's ``client_max_size``); ``BadRequest`` (408, 413, 400) otherwise.
    Read through aiohttp's ``read()``, so a body another step already read (a fleet's proxy) is read once."""
    if limit is not None:
        request = request.clone(client_max_size=limit)
    try:
        return await asyncio.wait_for(request.read(), timeout)
    except asyncio.TimeoutError:
        raise BadRequest("the body did not arrive in time", "request_timeout", status=408) from None
    except web.HTTPRequestEntityTooLarge:
        raise BadRequest("the body is too large" + (f" (at most {limit} bytes)" if limit else ""), "body_too_large",
                         status=413) from None
    except (aiohttp.ClientPayloadError, aiohttp.http_exceptions.HttpProcessingError, ConnectionError) as exc:
        raise BadRequest(f"the body could not be read: {exc}", "invalid_body") from None


def json_object(text, what: str = "the body", param: str | None = None) -> dict:
    """``text`` (str or UTF-8 bytes) as a JSON object, or ``BadRequest`` saying why not: not UTF-8, not JSON, nested
    deeper than the parser goes, or not an object. The one parser of client JSON (HTTP bodies, WebSocket and
    data-channel events)."""
    try:
        value = json.loads(text)
    except UnicodeDecodeError:
        raise BadRequest(f"{what} is not UTF-8", "invalid_json", param) from None
    except RecursionError:
        raise BadRequest(f"{what} is nested too deeply", "invalid_json", param) from None
    except ValueError as exc:
        raise BadRequest(f"{what} is not JSON: {exc}", "invalid_json", param) from None
    if not isinstance(value, dict):
        raise BadRequest(f"{what} is not a JSON object", "invalid_json", param)
    return value


def form_parts(body: bytes, content_type: str) -> dict[str, bytes] | None:
    """The named parts of a multipart/form-data body (the standard library's MIME parser), or None if it is
    malformed: no closing boundary (truncated), no boundary at all, or a part without a name."""
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1", "replace") + b"\r\n\r\n" + body)
    if not msg.is_multipart() or msg.defects:
        return None
    parts = {}
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not name or part.defects:
            return None
        parts[name] = part.get_payload(decode=True) or b""
    return parts
