"""Baseline for bench/transceiver.py: plain aiortc terminating the same calls, one RTCPeerConnection (and one
UDP port) per call, echoing the caller's audio track back, behind the same POST /v1/realtime/calls.

    python bench/aiortc_server.py PORT
"""

import asyncio
import json
import sys

import aioice.ice
from aiohttp import web
from aiortc import RTCPeerConnection, RTCSessionDescription

aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]  # stay on loopback
pcs = set()


CORS = {"Access-Control-Allow-Origin": "*", "Access-Control-Allow-Headers": "content-type, authorization",
        "Access-Control-Expose-Headers": "Location", "Access-Control-Allow-Methods": "POST, OPTIONS"}


async def preflight(request):
    return web.Response(status=204, headers=CORS)


async def create_call(request):
    pc = RTCPeerConnection()
    pcs.add(pc)

    @pc.on("track")
    def on_track(track):
        pc.addTrack(track)  # echo

    @pc.on("connectionstatechange")
    async def on_state():
        if pc.connectionState in ("failed", "closed"):
            pcs.discard(pc)
            await pc.close()

    await pc.setRemoteDescription(RTCSessionDescription(await request.text(), "offer"))
    await pc.setLocalDescription(await pc.createAnswer())
    return web.Response(status=201, text=pc.localDescription.sdp, content_type="application/sdp",
                        headers={"Location": f"/v1/realtime/calls/{id(pc)}", **CORS})


async def main(port):
    app = web.Application()
    app.router.add_post("/v1/realtime/calls", create_call)
    app.router.add_route("OPTIONS", "/v1/realtime/calls", preflight)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print(json.dumps({"event": "ready"}), flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
