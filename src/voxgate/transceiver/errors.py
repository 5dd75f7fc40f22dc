"""Error responses of the signaling API, in the OpenAI shape: ``{"error": {"message", "type", "code", "param"}}``."""

from __future__ import annotations

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
