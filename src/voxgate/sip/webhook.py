"""The ``realtime.call.incoming`` webhook, signed as OpenAI signs it (the Standard Webhooks scheme).

``webhook-signature: v1,<base64 HMAC-SHA256 over "{webhook-id}.{webhook-timestamp}.{body}">`` with the key
base64-decoded from after ``whsec_``; the ``openai`` SDK's ``client.webhooks.unwrap`` verifies it. Delivery is
any 2xx; failures are retried with back-off, under the same ``webhook-id`` so the app can de-duplicate.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import secrets
import time

import aiohttp

log = logging.getLogger("voxgate.sip")
RETRIES = (0.5, 1.0, 2.0)  # seconds before each retry


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def _key(secret: str) -> bytes:
    return base64.b64decode(secret[len("whsec_"):] if secret.startswith("whsec_") else secret)


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(_key(secret), f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def verify(secret: str, headers, body: bytes, now: float | None = None, tolerance: int = 300) -> bool:
    """Our own check of a delivery (the SDK's ``unwrap`` is the one apps use): any of the space-separated
    ``v1,`` signatures matches, and the timestamp is within ``tolerance`` seconds."""
    try:
        ts = int(headers["webhook-timestamp"])
        msg_id = headers["webhook-id"]
        given = headers["webhook-signature"].split()
    except (KeyError, ValueError):
        return False
    if abs((now or time.time()) - ts) > tolerance:
        return False
    want = sign(secret, msg_id, ts, body)
    return any(hmac.compare_digest(sig, want) for sig in given)


def incoming_event(call_id: str, sip_headers: list[dict], now: float | None = None) -> dict:
    return {"object": "event", "id": "evt_" + secrets.token_hex(12), "type": "realtime.call.incoming",
            "created_at": int(now or time.time()), "data": {"call_id": call_id, "sip_headers": sip_headers}}


def live_incoming_event(session_id: str, sip_headers: list[dict], now: float | None = None) -> dict:
    """GPT-Live's announcement of the same call (``live.transport.incoming``): an app written for Live accepts it at
    ``/v1/live/sessions/{session_id}/accept``; the first accept of either kind owns the call."""
    return {"object": "event", "id": "evt_" + secrets.token_hex(12), "type": "live.transport.incoming",
            "created_at": int(now or time.time()),
            "data": {"type": "sip", "session_id": session_id, "sip_headers": sip_headers}}


async def deliver(http: aiohttp.ClientSession, url: str, secret: str, event: dict) -> bool:
    """POST ``event`` to ``url``; True once a 2xx came back."""
    body = json.dumps(event, separators=(",", ":")).encode()
    for attempt, pause in enumerate((0.0,) + RETRIES):
        if pause:
            await asyncio.sleep(pause)
        ts = int(time.time())
        headers = {"content-type": "application/json", "webhook-id": event["id"], "webhook-timestamp": str(ts),
                   "webhook-signature": sign(secret, event["id"], ts, body), "user-agent": "voxgate-webhooks"}
        try:
            async with http.post(url, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=5)) as resp:
                if 200 <= resp.status < 300:
                    return True
                log.warning("webhook %s answered %d (attempt %d)", url, resp.status, attempt + 1)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            log.warning("webhook %s failed: %s (attempt %d)", url, exc, attempt + 1)
    return False
