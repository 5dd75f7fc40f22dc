"""The SIP shell beside a transceiver: UDP, TCP and TLS listeners for ``SipCore``, RTP sockets per call, the
webhook, and each answered call run by the transceiver's agent like a WebRTC call.

Media: each call gets its own RTP/RTCP socket pair on the transceiver host (``--sip-rtp-ports``, even ports, RTCP
on the next), not the relay: a trunk sends plain RTP to the address in our SDP, with no ICE ufrag to route by, so
the relay's ufrag routing has nothing to go on. The call is anchored to this transceiver as a WebRTC call is.

Timers: one ``loop.call_at`` at the core's next deadline (retransmissions, timeouts), moved whenever the core's
state changes; no polling. Every call's audio goes out on the transceiver's shared 20 ms clock.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import itertools
import logging
import random
import secrets
import socket
import ssl
import time
from typing import Callable

import aiohttp

from ..call.paced import PacedCall
from ..call.phone import CallError, PhoneHost
from ..steering.placement import call_id
from . import core, webhook
from .core import Call, Peer, SipCore
from .media import PhoneIn, PhoneOut
from .message import SipError, StreamFramer
from .policy import Policy

log = logging.getLogger("voxgate.sip")
MAX_STREAMS = 1024  # TCP and TLS connections at once
STREAMS_PER_SOURCE = 32  # ... from one address
FIRST_MESSAGE_TIMEOUT = 10.0  # seconds a new connection has to send a whole SIP message (and a TLS handshake)
STREAM_IDLE_TIMEOUT = 300.0  # seconds a connection with no call on it may send nothing (RFC 5626 keep-alives count)
RING_TIMEOUT = 30.0  # seconds an incoming call waits for the app's accept or reject before 480 (--sip-ring-timeout)
MEDIA_TIMEOUT = 60.0  # seconds an answered call may go without the caller's RTP (not on hold) before our BYE


@dataclasses.dataclass
class SipConfig:
    udp: tuple[str, int] | None = None
    tcp: tuple[str, int] | None = None
    tls: tuple[str, int] | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    rtp_host: str | None = None  # the address our SDP gives (default: the listening host)
    rtp_ports: tuple[int, int] | None = None  # an inclusive range; default: any free even pair
    webhook_url: str | None = None  # None: calls are answered at once (``auto_session``)
    webhook_secret: str | None = None
    auto_session: dict | None = None  # the session an auto-answered call runs with
    policy: Policy = dataclasses.field(default_factory=Policy)
    ring_timeout: float = RING_TIMEOUT
    media_timeout: float = MEDIA_TIMEOUT  # 0: never


@dataclasses.dataclass
class CallHost:
    """What an answered call may reach of its server: hang itself up (a BYE: its agent failed), the shared clock,
    and where to say it closed."""

    hangup: Callable[[str], bool]
    clock: Callable[[object], None]
    closed: Callable[["SipCall"], None]


class SipServer:
    """The phone server: SIP over UDP, TCP and TLS (``core.SipCore`` decides, this executes), the calls' RTP, the
    app's webhook; a ``call.phone.PhoneLine`` to the transceiver that hosts it."""

    def __init__(self, host: PhoneHost, cfg: SipConfig):
        self.host, self.cfg = host, cfg
        contact = {k: v for k, v in (("udp", cfg.udp), ("tcp", cfg.tcp), ("tls", cfg.tls)) if v}
        self.core = SipCore(cfg.policy, contact, new_id=lambda: call_id(host.id, secrets.token_hex(10)))
        self.calls: dict[str, SipCall] = {}  # answered calls, by id
        self.udp: asyncio.DatagramTransport | None = None
        self.servers: list[asyncio.AbstractServer] = []
        self.conns: dict[int, asyncio.StreamWriter] = {}
        self._streams_from: collections.Counter = collections.Counter()  # TCP/TLS connections per source address
        self._conn_ids = itertools.count(1)
        self._timer: asyncio.TimerHandle | None = None
        self.call_host = CallHost(hangup=self.hangup, clock=host.calls.clock, closed=self._closed)
        self.http: aiohttp.ClientSession | None = None
        self.tasks: set[asyncio.Task] = set()

    # ------------------------------------------------------------- start/stop
    async def start(self):
        loop = asyncio.get_running_loop()
        if self.cfg.udp:
            self.udp, _ = await loop.create_datagram_endpoint(lambda: _Udp(self), local_addr=self.cfg.udp)
            self.cfg.udp = self.udp.get_extra_info("sockname")[:2]
        if self.cfg.tcp:
            srv = await asyncio.start_server(lambda r, w: self._stream(r, w, "tcp"), *self.cfg.tcp)
            self.servers.append(srv)
            self.cfg.tcp = srv.sockets[0].getsockname()[:2]
        if self.cfg.tls:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(self.cfg.tls_cert, self.cfg.tls_key)
            srv = await asyncio.start_server(lambda r, w: self._stream(r, w, "tls"), *self.cfg.tls, ssl=ctx,
                                             ssl_handshake_timeout=FIRST_MESSAGE_TIMEOUT)
            self.servers.append(srv)
            self.cfg.tls = srv.sockets[0].getsockname()[:2]
        listen = (self.cfg.udp or self.cfg.tcp or self.cfg.tls)[0]
        policy = self.cfg.policy
        if not (policy.auth or policy.allow) and listen not in ("127.0.0.1", "::1", "localhost"):
            log.warning("SIP listens on %s with neither --sip-auth nor --sip-allow: any phone that reaches it may "
                        "call (bounded by --sip-rate, --sip-global-rate, --sip-max-ringing)", listen)
        self.bind_host = listen  # RTP binds where SIP does (a wildcard included)
        self.advertise = self.cfg.rtp_host or (listen if listen not in ("0.0.0.0", "::", "") else local_address())
        self.core.set_contact({k: (self.advertise, v[1]) for k, v in
                               (("udp", self.cfg.udp), ("tcp", self.cfg.tcp), ("tls", self.cfg.tls)) if v})
        self.http = aiohttp.ClientSession()

    async def stop(self):
        for call in list(self.calls.values()):
            self._execute(self.core.hangup(call.sip, time.monotonic(), reason="shutdown"))
        await asyncio.sleep(0.05)  # let the BYEs leave
        for call in list(self.calls.values()):
            await call.close("shutdown")
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self._timer:
            self._timer.cancel()
        if self.udp:
            self.udp.close()
        for srv in self.servers:
            srv.close()
        for w in list(self.conns.values()):
            w.close()
        if self.http:
            await self.http.close()

    def describe(self) -> dict:
        return {k: f"{v[0]}:{v[1]}" for k, v in self.core.contact.items()}

    def counters(self) -> dict:
        """What the SIP core refused and why (``voxgate_sip_*`` in /metrics)."""
        return dict(self.core.counters)

    def ringing(self, call_id: str) -> bool:
        """A call the core knows (ringing, or answered): the app's commands name it."""
        return call_id in self.core.calls

    # ------------------------------------------------------------- transports
    def feed(self, data: bytes, peer: Peer):
        try:
            actions = self.core.receive(data, peer, time.monotonic())
        except Exception:  # a bug on one message must not stop the server
            log.exception("SIP message from %s failed", peer.text)
            return
        self._execute(actions)

    async def _stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, transport: str):
        host, port = writer.get_extra_info("peername")[:2]
        if len(self.conns) >= MAX_STREAMS or self._streams_from[host] >= STREAMS_PER_SOURCE:
            self.core.count("connection_limit")  # a trunk needs a few; a flood of them holds descriptors
            writer.close()
            return
        conn = next(self._conn_ids)
        self.conns[conn] = writer
        self._streams_from[host] += 1
        peer = Peer(transport, host, port, conn)
        framer = StreamFramer()
        loop = asyncio.get_running_loop()
        first_by = loop.time() + FIRST_MESSAGE_TIMEOUT  # a whole SIP message soon (a byte at a time is not enough)
        spoke = False
        try:
            while True:
                wait = STREAM_IDLE_TIMEOUT if spoke else max(0.0, first_by - loop.time())
                try:
                    data = await asyncio.wait_for(reader.read(65536), wait)
                except asyncio.TimeoutError:
                    if any(c.peer.conn == conn for c in self.core.calls.values()):
                        continue  # a call's dialog runs on it: it stays while the call does
                    self.core.count("connection_timeout")
                    break
                if not data:
                    break
                for msg in framer.push(data):
                    spoke = True
                    self.feed(msg, peer)
        except SipError as exc:
            log.info("closing a %s connection from %s: %s", transport, peer.text, exc)
            self.core.count("malformed")
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            self.conns.pop(conn, None)
            self._streams_from[host] -= 1
            if self._streams_from[host] <= 0:
                del self._streams_from[host]
            writer.close()

    def _send(self, data: bytes, peer: Peer):
        if peer.transport == "udp":
            if self.udp is not None:
                self.udp.sendto(data, (peer.host, peer.port))
        else:
            w = self.conns.get(peer.conn)
            if w is not None and not w.is_closing():
                w.write(data)

    # ------------------------------------------------------------- actions
    def _execute(self, actions: list):
        for a in actions:
            try:
                self._do(a)
            except Exception:
                log.exception("SIP action %s failed", type(a).__name__)
        self._arm()

    def _arm(self):
        if self._timer:
            self._timer.cancel()
            self._timer = None
        due = self.core.next_deadline()
        if due is not None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_at(loop.time() + max(0.0, due - time.monotonic()), self._on_timer)

    def _on_timer(self):
        self._timer = None
        self._execute(self.core.tick(time.monotonic()))

    def _do(self, a):
        if isinstance(a, core.Send):
            self._send(a.data, a.peer)
        elif isinstance(a, core.Incoming):
            self._incoming(a.call)
        elif isinstance(a, core.Confirmed):
            call = self.calls.get(a.call.id)
            if call is not None:
                call.times["confirmed"] = time.monotonic()
        elif isinstance(a, core.Updated):
            call = self.calls.get(a.call.id)
            if call is not None:
                call.renegotiated()
        elif isinstance(a, core.Dtmf):
            call = self.calls.get(a.call.id)
            if call is not None:
                call.on_dtmf(a.digit, a.duration_ms)
        elif isinstance(a, core.ReferStatus):
            call = self.calls.get(a.call.id)
            if call is not None:
                call.transfer_status = a.status
            log.info("%s transfer: %d%s", a.call.id, a.status, " (final)" if a.final else "")
        elif isinstance(a, core.Ended):
            call = self.calls.get(a.call.id)
            if call is not None:
                self._spawn(call.close(a.reason))
            self.host.ended(a.reason)

    def _spawn(self, coro):
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    # ------------------------------------------------------------- the application's side
    def _incoming(self, call: Call):
        now = time.monotonic()
        refusal = self.host.refusal()
        if refusal is not None:
            self._execute(self.core.reject(call, refusal, now))
            return
        if not self.cfg.webhook_url:
            self._spawn(self._accept_soon(call))
            return
        self._execute(self.core.ring(call, now, self.cfg.ring_timeout))  # 480 when it runs out (the core's timer)
        self._spawn(self._notify(call))

    async def _accept_soon(self, call: Call):
        try:
            await self.accept(call.id, self.cfg.auto_session)
        except CallError as exc:
            log.warning("auto-answer of %s failed: %s", call.id, exc)

    async def _notify(self, call: Call):
        """The app hears of the call as OpenAI announces one: ``realtime.call.incoming``, then (an app on GPT-Live)
        ``live.transport.incoming``; whichever API accepts it first owns it."""
        secret = self.cfg.webhook_secret or ""
        ok = await webhook.deliver(self.http, self.cfg.webhook_url, secret,
                                   webhook.incoming_event(call.id, call.sip_headers))
        if call.state in ("incoming", "ringing"):
            ok = await webhook.deliver(self.http, self.cfg.webhook_url, secret,
                                       webhook.live_incoming_event(call.id, call.sip_headers)) or ok
        if not ok and call.state in ("incoming", "ringing"):
            log.warning("no app took %s (the webhook failed): 480", call.id)
            self._execute(self.core.reject(call, 480, time.monotonic(), reason="webhook_failed"))

    def _pending(self, call_id: str) -> Call:
        call = self.core.calls.get(call_id)
        if call is None:
            raise CallError(404, "call_not_found", "no such call")
        return call

    async def accept(self, call_id: str, session: dict | None, api: str = "realtime") -> None:
        call = self._pending(call_id)
        if call.state not in ("incoming", "ringing"):
            raise CallError(409, "call_not_ringing", f"the call is {call.state}")
        sip_call = SipCall(self.call_host, call, self.host.new_agent(), session, api)
        try:
            await sip_call.open(self.bind_host, self.advertise, self.cfg.rtp_ports)
        except OSError as exc:
            if call.state in ("incoming", "ringing"):
                self._execute(self.core.reject(call, 503, time.monotonic(), reason="no_media_port"))
            raise CallError(503, "no_media_port", f"no RTP port free: {exc}") from None
        try:  # the caller may have cancelled while the ports were being bound
            actions = self.core.accept(call, sip_call.media_address, time.monotonic())
        except core.NotRinging as exc:
            sip_call.release_ports()
            raise CallError(409, "call_not_ringing", str(exc)) from None
        self.calls[call.id] = sip_call
        self.host.calls.add(sip_call, "sip")
        self._execute(actions)
        sip_call.start()

    def reject(self, call_id: str, status: int = 603) -> None:
        call = self._pending(call_id)
        try:
            self._execute(self.core.reject(call, status, time.monotonic()))
        except core.NotRinging as exc:
            raise CallError(409, "invalid_state", str(exc)) from None
        except core.BadRequestValue as exc:
            raise CallError(400, "invalid_value", str(exc)) from None

    def refer(self, call_id: str, target: str) -> None:
        call = self._pending(call_id)
        try:
            self._execute(self.core.refer(call, target, time.monotonic()))
        except core.BadRequestValue as exc:
            raise CallError(400, "invalid_request", str(exc)) from None
        except core.NotAnswered as exc:
            raise CallError(409, "invalid_request", str(exc)) from None

    def hangup(self, call_id: str) -> bool:
        call = self.core.calls.get(call_id)
        if call is None:
            return False
        self._execute(self.core.hangup(call, time.monotonic()))
        return True

    def _closed(self, call: "SipCall") -> None:
        self.calls.pop(call.call_id, None)
        self.host.calls.remove(call)

    def reap(self, now: float) -> None:
        """End the answered calls whose caller sent no RTP for ``media_timeout`` seconds and is not holding them
        (a phone that vanished without a BYE holds a call, its ports and an agent): a BYE saying why."""
        timeout = self.cfg.media_timeout
        if not timeout:
            return
        for call in list(self.calls.values()):
            heard = call.inp.last_arrival or call.times["created"]
            if call.state == "connected" and not call.sip.on_hold and now - heard > timeout:
                log.warning("no RTP from %s for %.0f s: hanging up", call.call_id, now - heard)
                self._execute(self.core.hangup(call.sip, now, reason="media_timeout",
                                               headers={"Reason": 'SIP;cause=408;text="no RTP received"'}))


def local_address() -> str:
    """This host's address toward the outside (no packet is sent), for SDP and Contact when SIP listens on a
    wildcard and no --sip-rtp-host is given; 127.0.0.1 on a machine with no route."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: only the routing table is consulted
            return s.getsockname()[0]
        except OSError:
            return "127.0.0.1"


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, server: SipServer):
        self.server = server

    def datagram_received(self, data, addr):
        self.server.feed(data, Peer("udp", addr[0], addr[1]))

    def error_received(self, exc):  # an ICMP error for something we sent: nothing to do
        pass


class _Rtp(asyncio.DatagramProtocol):
    def __init__(self, call: "SipCall", rtcp: bool):
        self.call, self.rtcp = call, rtcp

    def datagram_received(self, data, addr):
        if self.rtcp or (len(data) > 1 and 192 <= data[1] <= 223):  # RTCP (its own port, or muxed, RFC 5761)
            self.call.inp.rtcp += 1
        else:
            self.call.on_rtp(data, addr[:2])

    def error_received(self, exc):
        pass


class SipCall(PacedCall):
    """An answered phone call as the agent's ``CallIO``: paced output, like a WebRTC call. ``host``: what it may
    reach of its server (``CallHost``)."""

    transport = "sip"

    def __init__(self, host: CallHost, sip: Call, agent, session_config: dict | None, api: str = "realtime"):
        self.ssrc = random.getrandbits(32) or 1
        super().__init__(sip.id, agent, PhoneOut(agent.sample_rate, sip.codec, self.ssrc, sip.offer.dtmf_pt),
                         session_config,
                         event_queue=1000, api=api)
        self.host, self.sip = host, sip
        self.owner = None
        self.state = "connected"
        self.inp = PhoneIn(self.sample_rate, sip.codec, sip.offer.dtmf_pt)
        self.rtp: asyncio.DatagramTransport | None = None
        self.rtcp: asyncio.DatagramTransport | None = None
        self.media_address: tuple[str, int] | None = None
        self.task: asyncio.Task | None = None
        self.dtmf: list[str] = []
        self.transfer_status: int | None = None  # the last REFER progress (202, then the NOTIFYs' sipfrag)

    async def open(self, host: str, advertise: str, ports: tuple[int, int] | None):
        loop = asyncio.get_running_loop()
        lo, hi = ports or (20000, 59998)
        candidates = list(range(lo + lo % 2, hi, 2))
        random.shuffle(candidates)
        last: OSError | None = None
        for port in candidates[:64]:
            try:
                self.rtp, _ = await loop.create_datagram_endpoint(lambda: _Rtp(self, False), local_addr=(host, port))
            except OSError as exc:
                last = exc
                continue
            try:
                self.rtcp, _ = await loop.create_datagram_endpoint(lambda: _Rtp(self, True),
                                                                   local_addr=(host, port + 1))
            except OSError as exc:
                self.rtp.close()
                last = exc
                continue
            self.media_address = (advertise, port)  # what our SDP gives
            return
        raise last or OSError("no port in the range")

    def start(self):
        self.host.clock(self)
        self.task = asyncio.ensure_future(self.run_agent())

    async def agent_failed(self):
        self.host.hangup(self.call_id)  # a BYE to the phone; the call closes with it

    async def close(self, reason: str):
        if not self.end_streams(reason):
            return
        if self.task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self.task), 5)
            except (asyncio.TimeoutError, Exception):
                self.task.cancel()
        self.release_ports()
        self.host.closed(self)

    def release_ports(self):
        for tr in (self.rtp, self.rtcp):
            if tr is not None:
                tr.close()

    # ------------------------------------------------------------- media
    def on_rtp(self, data: bytes, addr):
        now = time.monotonic()
        frames, keys = self.inp.receive(data, addr, now)
        self.heard(frames, now)
        for digit, ms in keys:
            self.on_dtmf(digit, ms)

    def send_dtmf(self, key: str) -> bool:
        """A key to the caller (a GPT-Live sideband's ``transport.dtmf.send``), as RFC 4733 events."""
        return self.state == "connected" and self.out.send_dtmf(key)

    def on_dtmf(self, digit: str, duration_ms: int):
        self.dtmf.append(digit)
        self.agent.dtmf(digit, int(time.time()))  # a Realtime agent says input_audio_buffer.dtmf_event_received

    def renegotiated(self):
        """A re-INVITE: a new codec or address (the RTP latch starts over), or hold (we send nothing)."""
        self.out = PhoneOut(self.sample_rate, self.sip.codec, self.ssrc) if self.sip.codec.pt != self.out.pt \
            else self.out
        if self.sip.codec.pt != self.inp.pt:
            self.inp = PhoneIn(self.sample_rate, self.sip.codec, self.sip.offer.dtmf_pt)
        self.inp.source = None

    @property
    def remote(self) -> tuple[str, int]:
        return self.inp.source or (self.sip.offer.host, self.sip.offer.port)

    def can_send(self) -> bool:
        return self.state == "connected" and self.rtp is not None

    def send_rtp(self, packet: bytes) -> None:
        if not self.sip.on_hold:  # held: paced and dropped, so the agent's clock goes on
            self.rtp.sendto(packet, self.remote)

    def send_rtcp(self, packet: bytes) -> None:
        host, port = self.remote
        if self.sip.offer.rtcp_mux:
            self.rtp.sendto(packet, (host, port))
        elif self.rtcp is not None and not self.sip.on_hold:
            self.rtcp.sendto(packet, (host, port + 1))

    # ------------------------------------------------------------- CallIO (the rest is PacedCall's)
    def send_event(self, event: dict) -> bool:
        return False  # a phone has no data channel: server events reach the app on the sideband

    def end_call(self, reason: str) -> None:
        self.host.hangup(self.call_id)  # a BYE to the phone

    def describe(self) -> dict:
        return {"id": self.call_id, "state": self.state, "transport": "sip/" + self.sip.peer.transport,
                "codec": self.sip.codec.name, "remote_rtp": "%s:%d" % self.remote, "on_hold": self.sip.on_hold,
                "timings_ms": self.timings_ms(),
                "audio_in_packets": self.inp.packets, "audio_out_packets": self.out.packets, "lost": self.inp.lost,
                "late": self.inp.late, "rtcp_in": self.inp.rtcp, "dtmf": "".join(self.dtmf),
                "audio_frames_dropped_for_agent": self.dropped_audio_frames,
                "transfer_status": self.transfer_status}
