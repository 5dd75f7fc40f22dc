"""A fleet's signaling: any transceiver takes any request, and passes it to the transceiver it belongs on.

Why proxy and not redirect: a browser follows a 307 on a cross-origin POST only after a fresh CORS preflight to
the new origin, and the official SDKs read the answer and ``Location`` from the response they got; a proxy keeps
one URL for the client whatever transceiver holds its call. The cost is one HTTP hop inside the cluster
(``bench/fleet.py`` measures it).

- A new call (``POST /v1/realtime/calls``) goes to the first of ``steering.placement.place``'s order that accepts
  it: answered here when this transceiver is that one, proxied otherwise, with ``X-Voxgate-Placed`` so the
  target answers for itself. A target that is gone, draining or full is skipped for the next.
- A call's own URLs (``…/calls/{id}``, ``…/hangup``) are proxied to the transceiver its id names, and so is its
  sideband WebSocket (``/v1/realtime?call_id=…``), frame by frame.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import logging

import aiohttp
from aiohttp import web

from ..steering.placement import owner_of, place
from .errors import error
from .websocket import MAX_MESSAGE

log = logging.getLogger("voxgate.transceiver")

PLACED = "X-Voxgate-Placed"  # on a proxied offer: the id of the transceiver that placed it
CLIENT_REGION = "X-Voxgate-Client-Region"  # on a proxied offer: the client's region, as the placer located it
HOLDER = "X-Voxgate-Transceiver"  # on an answer: the id of the transceiver holding the call
REGION = "X-Voxgate-Region"  # on an answer: the client's region (whose relay the answer lists first)
CLIENT_ADDRESS = "X-Voxgate-Client-Address"  # on a proxied request: the client's address, signed (``client_address``)
_FORWARD = ("Content-Type", "Authorization", "OpenAI-Beta", "X-OpenAI-Agents-SDK")
_KEEP = ("Content-Type", "Location", HOLDER, REGION)


async def _proxy(t, request, base_url: str, body: bytes, extra: dict | None = None) -> web.Response:
    headers = {k: request.headers[k] for k in _FORWARD if k in request.headers}
    headers[CLIENT_ADDRESS] = _signed_address(t, request)
    headers.update(extra or {})
    async with t.peer_client().request(request.method, base_url + request.path_qs, data=body, headers=headers) as resp:
        payload = await resp.read()
        return web.Response(status=resp.status, body=payload,
                            headers={k: resp.headers[k] for k in _KEEP if k in resp.headers})


def _address_mac(t, address: str) -> str:
    key = t.cfg.keyring.keys[t.cfg.keyring.active]
    return hmac.new(key, b"client-address:" + address.encode(), hashlib.sha256).hexdigest()[:32]


def _signed_address(t, request) -> str:
    address = client_address(t, request)
    return f"{address};{_address_mac(t, address)}"


def client_address(t, request) -> str:
    """The address a request came from, for the per-address limits: the peer's, or on a request another
    transceiver of the fleet proxied here, the client's as that transceiver saw it. That header is signed with the
    cluster secret, so a client cannot name an address of its choosing (a forged one is ignored)."""
    named = request.headers.get(CLIENT_ADDRESS)
    if named:
        address, _, mac = named.rpartition(";")
        try:
            if address and hmac.compare_digest(mac, _address_mac(t, address)):
                return address
        except (TypeError, ValueError):
            pass
    peer = request.remote or "?"
    if t.cfg.trusted_proxies and _within(peer, t.cfg.trusted_proxies):
        # behind a load balancer or ingress (--trusted-proxy): the last X-Forwarded-For hop it did not add itself
        hops = [a.strip() for a in request.headers.get("X-Forwarded-For", "").split(",") if a.strip()]
        for hop in reversed(hops):
            if not _within(hop, t.cfg.trusted_proxies):
                return hop
    return peer


def _within(address: str, networks) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)


def client_region(t, request) -> str | None:
    """The client's region: with a region map, as the placer located it (a proxied offer) or located here."""
    if t.regions is None:
        return None
    if PLACED in request.headers:
        named = request.headers.get(CLIENT_REGION)
        return named if named in t.regions.relays else None
    return t.regions.locate(request.remote, request.headers).region


async def place_call(t, request, region: str | None) -> web.Response | None:
    """The response of the transceiver this call was placed on, or None to answer here (this transceiver is the
    least loaded of the first region that has a ready one, or the registry cannot be read, or nobody else could take
    it). ``region``: the client's; its nearest regions are tried after it (none without a region map)."""
    members = await t.registry.members()
    if members is None:
        return None
    regions = t.regions.order(region) if t.regions is not None and region else [t.cfg.region]
    order = [m for r in regions for m in place(members, r, prefer=t.id)]
    extra = {PLACED: t.id, **({CLIENT_REGION: region} if region else {})}
    body = None
    for m in order:
        if m.id == t.id:
            return None
        if body is None:
            body = await request.read()
        try:
            resp = await _proxy(t, request, m.url, body, extra)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            log.warning("placing a call on %s (%s) failed: %r; trying the next", m.id, m.url, exc)
            continue
        if resp.status == 503:  # it began draining or filled up since its last heartbeat
            continue
        return resp
    return None


async def to_owner(t, request) -> web.Response | None:
    """For a call held by another transceiver of the fleet: its response, proxied. None when the call is ours, or
    there is no fleet (then the caller answers, 404 if the call is unknown)."""
    owner = owner_of(request.match_info["call_id"])
    if t.registry is None or owner is None or owner == t.id:
        return None
    m = await t.registry.member(owner)
    if m is None:
        return error(404, "no such call (its transceiver is gone)", code="call_not_found", param="call_id")
    try:
        return await _proxy(t, request, m.url, await request.read())
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        return error(502, f"the transceiver holding this call did not answer: {exc!r}", "server_error",
                     "holder_unreachable")


async def ws_to_owner(t, request, call_id: str, token: str | None) -> web.StreamResponse | None:
    """The sideband of a call held by another transceiver: a WebSocket to it, relayed both ways frame by frame.
    None when the call is ours or there is no fleet."""
    owner = owner_of(call_id)
    if t.registry is None or owner is None or owner == t.id:
        return None
    m = await t.registry.member(owner)
    if m is None:
        return error(404, "no such call (its transceiver is gone)", code="call_not_found", param="call_id")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    headers[CLIENT_ADDRESS] = _signed_address(t, request)
    # a session of its own: the shared client's total timeout would cut a long-lived socket
    http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, connect=2))
    try:
        upstream = await http.ws_connect(m.url + request.path_qs, headers=headers, max_msg_size=MAX_MESSAGE,
                                         heartbeat=30)
    except aiohttp.WSServerHandshakeError as exc:
        await http.close()
        return error(exc.status, f"the transceiver holding this call refused: {exc.message}", code="sideband_refused",
                     param="call_id")
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        await http.close()
        return error(502, f"the transceiver holding this call did not answer: {exc!r}", "server_error",
                     "holder_unreachable")
    ws = web.WebSocketResponse(protocols=("realtime",), max_msg_size=MAX_MESSAGE, heartbeat=30)
    await ws.prepare(request)

    async def pump(src, dst):
        async for msg in src:
            if msg.type == aiohttp.WSMsgType.TEXT:
                await dst.send_str(msg.data)
            elif msg.type == aiohttp.WSMsgType.BINARY:
                await dst.send_bytes(msg.data)

    tasks = [asyncio.ensure_future(pump(ws, upstream)), asyncio.ensure_future(pump(upstream, ws))]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        code = upstream.close_code or 1000
        await upstream.close()
        await ws.close(code=code)
        await http.close()
    return ws
