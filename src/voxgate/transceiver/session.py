"""One call: aiortc's DTLS/SRTP/SCTP transports on the shared socket, the agent on the other side.

The seam to aiortc lives in ``aiortc_glue``: an ICE transport backed by this
session's inbox (fed by the endpoint's demultiplexer) and the endpoint's one
socket, and taps that report each packet that authenticated, so replies follow
the relay that last delivered one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import secrets
import time
import weakref
from dataclasses import dataclass
from typing import Callable

from aiortc.rtcdtlstransport import RTCDtlsParameters
from aiortc.rtcrtpparameters import RTCRtpCodecParameters, RTCRtpReceiveParameters
from aiortc.rtcsctptransport import RTCSctpCapabilities, RTCSctpTransport

from ..agent.core.events import transport_error as error_event
from ..call.io import put_newest
from ..call.paced import FRAME_MS, PacedCall
from . import aiortc_glue
from .ice import IceSession
from .errors import BadRequest, json_object
from .media import OpusIn, OpusOut
from .sdp import Offer

log = logging.getLogger("voxgate.transceiver")

LIVE_OBJECTS: "weakref.WeakSet[Session]" = weakref.WeakSet()  # for leak checks: empty once every call is gone


@dataclass(frozen=True)
class Host:
    """What a call needs of the transceiver that holds it, and all it may reach: the DTLS certificate, the Opus
    complexity, the shared socket (``send``; ``authenticated``: a packet of this call authenticated, via this
    route, now: ``IceLiteMux.authenticated``), and where to say that the call connected or closed."""

    certificate: object
    opus_complexity: int
    send: Callable[[bytes, tuple], None]
    authenticated: Callable
    connected: Callable[["Session"], None]
    closed: Callable[["Session"], None]


class Session(PacedCall):
    """A WebRTC call: ICE-lite on the shared socket, DTLS, SRTP and the data channel (aiortc's, through
    ``aiortc_glue``), Opus both ways, as the agent's paced ``CallIO``."""

    def __init__(self, host: Host, offer: Offer, ufrag: str, pwd: str, agent, session_config: dict | None = None,
                 call_id: str | None = None, api: str = "realtime"):
        call_id = call_id or "rtc_" + secrets.token_hex(12)
        self.ssrc = random.getrandbits(32) or 1
        out = OpusOut(agent.sample_rate, offer.opus_pt, self.ssrc, complexity=host.opus_complexity)
        super().__init__(call_id, agent, out, session_config, api=api)  # the offer's session, for the agent
        self.host = host
        self.offer = offer
        self.ice = IceSession(ufrag=ufrag, pwd=pwd, call_id=self.call_id)
        self.ice_transport = aiortc_glue.IceTransport(self.send)
        self.dtls = aiortc_glue.dtls_transport(self.ice_transport, host.certificate)
        self.inp = OpusIn(self.sample_rate)
        self.sctp: RTCSctpTransport | None = None
        self.channel = None
        self.tasks: set[asyncio.Task] = set()
        self.owner: str | None = None  # the key that made the call
        self.ticket = None  # access.Ticket: its place under the caller's limits
        LIVE_OBJECTS.add(self)
        self._pending_events: list[dict] = []
        self.route_changes = 0

    # ------------------------------------------------------------- lifecycle
    def start(self):
        self._spawn(self._run(), "run")

    def _spawn(self, coro, name):
        task = asyncio.ensure_future(coro)
        task.set_name(f"{self.call_id}:{name}")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def _run(self):
        try:
            await self.dtls.start(RTCDtlsParameters(fingerprints=self.offer.fingerprints, role="auto"))
        except ConnectionError:
            return
        if self.dtls.state != "connected":
            await self.close("dtls_failed")
            return
        self.times["dtls_connected"] = time.monotonic()
        self.state = "connected"
        self.ice.verified = True  # the client finished DTLS with us: it receives what we send
        self.host.connected(self)
        aiortc_glue.receive_rtp(self.dtls, self, _receive_parameters(self.offer))
        if self.offer.sctp_port is not None:
            self.sctp = RTCSctpTransport(self.dtls)
            self.sctp.on("datachannel", self._on_datachannel)
        aiortc_glue.tap_authenticated(self.dtls, self._authenticated)
        if self.sctp is not None:
            await self.sctp.start(RTCSctpCapabilities(maxMessageSize=262144), self.offer.sctp_port)
        self._spawn(self.run_agent(), "agent")

    async def agent_failed(self):
        await self.close("agent_error")

    async def close(self, reason: str = "hangup"):
        if not self.end_streams(reason):
            return
        if self.sctp is not None:
            try:
                await asyncio.wait_for(self.sctp.stop(), 1.0)
            except Exception:  # closing: a transport that fails to say goodbye changes nothing
                pass
        try:
            await asyncio.wait_for(self.dtls.stop(), 1.0)
        except Exception:
            pass
        self.ice_transport.close()
        current = asyncio.current_task()
        for task in list(self.tasks):
            if task is not current:
                task.cancel()
        self.host.closed(self)

    # ------------------------------------------------------------- socket side
    def deliver(self, data: bytes, via: tuple):
        self.ice_transport.deliver(data, via)

    def _authenticated(self):
        """The packet aiortc is handling authenticated (SRTP, or a DTLS record): replies follow the path it came
        by, which moves them to a relay that took over the client (restarted, replaced, sibling)."""
        moved = self.host.authenticated(self.ice, self.ice_transport.current, time.monotonic())
        if moved is not None:
            self.on_route(moved.route)

    def send(self, data: bytes):
        out = self.ice.outgoing(data)
        if out is not None:
            self.host.send(out.data, out.addr)

    def on_route(self, route):
        if "ice_connected" not in self.times:
            self.times["ice_connected"] = time.monotonic()
        else:
            self.route_changes += 1
            log.info("%s now reaches its client via %s", self.call_id, _route_text(route))

    # ------------------------------------------------------------- media side (aiortc_glue's receiver calls these)
    def on_rtp(self, packet) -> None:
        now = time.monotonic()
        self.heard(self.inp.receive(packet, now), now)

    def on_rtcp(self, packet) -> None:
        self.inp.rtcp += 1

    def on_end(self) -> None:
        """The SRTP stream ended (the DTLS transport closed): the agent's audio ends with it."""
        put_newest(self._audio_q, None)

    def can_send(self) -> bool:
        return self.state == "connected" and aiortc_glue.tx_srtp(self.dtls) is not None

    def send_rtp(self, packet: bytes) -> None:
        self.send(aiortc_glue.tx_srtp(self.dtls).protect(packet))

    def send_rtcp(self, packet: bytes) -> None:
        self.send(aiortc_glue.tx_srtp(self.dtls).protect_rtcp(packet))

    # ------------------------------------------------------------- data channel
    def _on_datachannel(self, channel):
        self.channel = channel

        @channel.on("message")
        def on_message(message):
            try:
                event = json_object(message, "the data channel message")
            except BadRequest as exc:
                self.send_event(error_event("invalid_json", str(exc)))
                return
            if not self.take_event(event):
                self.send_event(error_event("too_many_events", "event queue full", type_="rate_limit_error"))

        pending, self._pending_events = self._pending_events, []
        for event in pending:  # what the agent said before the channel was there (session.created)
            channel.send(json.dumps(event))

    # ------------------------------------------------------------- CallIO (the rest is PacedCall's)
    def end_call(self, reason: str) -> None:
        """The client closed the session (GPT-Live's ``session.close``): its last events go out, then the call ends."""
        self._spawn(self._end_soon(reason), "end")

    async def _end_soon(self, reason: str):
        await asyncio.sleep(0.2)  # the data channel sends what was queued before it (session.closed)
        await self.close(reason)

    def send_event(self, event: dict) -> bool:
        ch = self.channel
        if ch is None:  # the client has not opened its channel yet: keep a few events for it
            if len(self._pending_events) < 64:
                self._pending_events.append(event)
                return True
            return False
        if ch.readyState != "open":
            return False
        ch.send(json.dumps(event))
        return True

    # ------------------------------------------------------------- reporting
    def describe(self) -> dict:
        return {
            "id": self.call_id, "state": self.state, "route": _route_text(self.ice.route),
            "transport": self.ice.transport,
            "timings_ms": self.timings_ms(), "audio_in_packets": self.inp.packets, "audio_out_packets": self.out.packets,
            "lost": self.inp.lost, "late": self.inp.late, "rtcp_in": self.inp.rtcp,
            "audio_frames_dropped_for_agent": self.dropped_audio_frames, "frame_ms": FRAME_MS,
            "route_changes": self.route_changes, "max_audio_in_gap_ms": round(self.inp.max_gap * 1000, 1),
        }


def _route_text(route):
    if route is None:
        return None
    via = f" via {route.relay[0]}:{route.relay[1]}" if route.relay else ""
    return f"{route.client[0]}:{route.client[1]}{via}"


def _receive_parameters(offer: Offer) -> RTCRtpReceiveParameters:
    codec = RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2, payloadType=offer.opus_pt)
    return RTCRtpReceiveParameters(codecs=[codec], muxId=offer.audio_mid)
