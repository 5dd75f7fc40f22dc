"""`voxgate transceiver`: the media socket, the sessions, the shared 20 ms clock, the reaper, draining."""

from __future__ import annotations

import asyncio
import gc
import logging
import secrets
import signal
import time
from dataclasses import dataclass, field
from typing import Callable

from aiortc.rtcdtlstransport import RTCCertificate

from ..agent import load_agent
from ..call.phone import PhoneHost, PhoneLine
from ..call.recording import Recordings
from ..call.registry import Calls
from ..steering.placement import DRAINING, ID_RE, READY, Member, call_id
from ..wire.token import Keyring, mint
from .access import Admission, Limits
from .client_secrets import ClientSecrets
from .endpoint import MediaEndpoint
from .ice import CONSENT_TIMEOUT
from .media import DEFAULT_COMPLEXITY
from .metrics import TransceiverMetrics
from .sdp import build_answer, new_ice_pwd, parse_offer
from .session import Host, Session
from .turn import TurnConfig

log = logging.getLogger("voxgate.transceiver")

STEP = 0.005  # the send clock's step: audio waits at most this long past its media time


@dataclass
class TransceiverConfig:
    http: tuple[str, int]
    media: tuple[str, int]
    keyring: Keyring
    relays: list = field(default_factory=list)  # public relay addresses; empty = direct mode
    tcp_relays: list = field(default_factory=list)  # relays' ICE-TCP addresses (--relay-tcp), after the UDP ones
    turn: TurnConfig | None = None  # TURN/TLS credentials per call (--turn-url), for TLS-only networks
    # a phone server (--sip-listen): made with what it may reach of us; voxgate.cli wires sip.server.SipServer here
    phone: Callable[[PhoneHost], PhoneLine] | None = None
    agent: str = "echo"
    advertise: tuple[str, int] | None = None  # media address relays should send to (goes into the token)
    public: tuple[str, int] | None = None  # direct mode: the address clients should send to
    api_keys: list = field(default_factory=list)
    auth: bool = True
    setup_timeout: float = 20.0
    consent_timeout: float = CONSENT_TIMEOUT
    drain_timeout: float = 30.0
    max_sessions: int = 1000  # --capacity: more live calls than this get 503 (and placement looks elsewhere)
    opus_complexity: int = DEFAULT_COMPLEXITY
    responder: str = "auto"  # for --agent voice
    asr: str = "auto"  # for --agent voice: pocketsphinx | moonshine | whisper | auto (moonshine if installed)
    tts: str = "piper"  # for --agent voice: piper (no GPL) | piper-espeak (piper-tts, GPL-3.0) | openai:URL#MODEL
    asr_fallback: str | None = None  # with --asr openai:…: the embedded recognizer that decodes when the server fails
    tts_fallback: str | None = None  # with --tts openai:…: the embedded voice that speaks when the server fails
    delegate: str | None = None  # GPT-Live's delegated backend (a responder spec); None: the responder
    record_dir: str | None = None  # --record DIR: every call recorded there (two channels, and a JSON sidecar)
    record_retention: float = 86400.0  # seconds a recording is kept
    record_upload: str | None = None  # s3://BUCKET/PREFIX: each recording uploaded when its call ends
    s3_endpoint_url: str | None = None  # an S3-compatible store's URL (default: AWS, or $AWS_ENDPOINT_URL_S3)
    # the fleet (voxgate.steering): with a Redis URL the transceiver registers itself and places calls
    redis_url: str | None = None
    region: str = "default"
    id: str | None = None  # [a-z0-9]{1,16}; default: random
    signaling_url: str | None = None  # how other transceivers reach our HTTP (default: from --http)
    region_map: str | None = None  # JSON/YAML file, or "redis" (the map in Redis): regions, their relays, steering
    limits: Limits = field(default_factory=Limits)  # what one client may hold (access.py; flags in the README)
    trusted_proxies: list = field(default_factory=list)  # ipaddress networks whose X-Forwarded-For is believed


class Transceiver:
    def __init__(self, cfg: TransceiverConfig):
        self.cfg = cfg
        self.metrics = TransceiverMetrics()
        self.certificate = RTCCertificate.generateCertificate()
        self.fingerprint = next(f for f in self.certificate.getFingerprints() if f.algorithm == "sha-256")
        self.endpoint: MediaEndpoint | None = None
        options = {"responder": cfg.responder, "asr": cfg.asr, "tts": cfg.tts, "asr_fallback": cfg.asr_fallback,
                   "tts_fallback": cfg.tts_fallback, "delegate": cfg.delegate, "progress": lambda line: log.warning("%s", line.strip())}
        self.agent_factory = lambda: load_agent(cfg.agent, **options)
        self._first_agent = self.agent_factory()  # load models and fail at start-up, not on the first call
        self.calls = Calls(cfg.max_sessions, self._load_changed)  # every live call, of every transport
        self.calls.recordings = Recordings(cfg.record_dir, cfg.record_dir is not None, cfg.record_retention)
        self.sessions: dict[str, Session] = self.calls.of("webrtc")  # (the media socket finds WebRTC calls here)
        self.client_secrets = ClientSecrets()  # the ek_ keys calls may be made with
        self.admission = Admission(cfg.limits)  # live calls per client secret and per source address
        self.audio_budget = None  # websocket.AudioBudget: appended audio in flight across sessions (made in start)
        self.phone: PhoneLine | None = None  # the phone server, with --sip-listen
        self._tasks: list[asyncio.Task] = []
        self.uploader = None  # call.recording.Uploader, with --record-upload
        self._next_prune = 0.0
        self.id = cfg.id or secrets.token_hex(4)
        if not ID_RE.match(self.id):
            raise ValueError(f"transceiver id {self.id!r}: use 1-16 lowercase letters and digits")
        self.registry = None  # steering.registry.Registry in a fleet
        self.regions = None  # steering.regions.RegionMap with --region-map
        self._http_client = None  # aiohttp client for proxying to other transceivers (placing.py), made on first use

    def member(self) -> Member:
        """How this transceiver describes itself to the fleet."""
        host, port = self.cfg.http
        url = self.cfg.signaling_url or "http://%s:%d" % (host if host not in ("0.0.0.0", "::", "") else "127.0.0.1",
                                                           port)
        return Member(id=self.id, region=self.cfg.region, media="%s:%d" % self.token_target, url=url.rstrip("/"),
                      sessions=self.load, capacity=self.cfg.max_sessions,
                      state=DRAINING if self.calls.draining else READY, updated=round(time.time(), 3),
                      tcp_sessions=sum(1 for s in self.sessions.values() if s.ice.transport == "tcp"))

    def peer_client(self):
        """The HTTP client that proxies a call's requests to the transceiver that owns it (``placing.py``)."""
        import aiohttp

        if self._http_client is None or self._http_client.closed:
            self._http_client = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10, connect=2))
        return self._http_client

    @property
    def load(self) -> int:
        """Live calls of every transport (each runs an agent)."""
        return self.calls.load

    @property
    def draining(self) -> bool:
        return self.calls.draining

    @property
    def stack(self):
        """The agent's model stack (``agent.shell.stack.Stack``) with ``--agent voice``, else None: what the model
        APIs (``models_api``) serve."""
        return getattr(self._first_agent, "stack", None)

    @property
    def any_voice(self) -> bool:
        """The agent's voice is a model server's (a remote voice, an upstream model): a session may name any voice."""
        return bool(getattr(self._first_agent, "any_voice", False))

    @property
    def ready(self) -> bool:
        """Takes new calls here: not draining, not full (``Calls.admit``)."""
        return self.calls.ready

    # ------------------------------------------------------------- start/stop
    async def start(self):
        from .websocket import AudioBudget

        self.audio_budget = AudioBudget(int(self.cfg.limits.input_audio_total_mb * 1024 * 1024),
                                        lambda name: self.metrics.limited.labels(name).inc())
        self.endpoint = await MediaEndpoint.open(*self.cfg.media, calls=self.sessions)
        self._tasks = [asyncio.ensure_future(self._reap())]
        if self.cfg.record_upload:
            from ..call.recording import Uploader

            self.uploader = Uploader(self.calls.recordings, self.cfg.record_upload, self.cfg.s3_endpoint_url)
            self._tasks.append(asyncio.ensure_future(self.uploader.run()))
        self._start_clock()
        if self.cfg.phone is not None:
            refusals = {"draining": 503, "capacity": 486, None: None}
            host = PhoneHost(id=self.id, refusal=lambda: refusals[self.calls.admit()], new_agent=self.agent_factory,
                             calls=self.calls, ended=lambda reason: self.metrics.calls.labels("sip_" + reason).inc())
            self.phone = self.cfg.phone(host)
            await self.phone.start()
        if self.cfg.redis_url:
            from ..steering.registry import Registry

            self.registry = Registry(self.cfg.redis_url, self.member)
            await self.registry.start()
        if self.cfg.region_map:
            from ..steering.regions import RegionMap

            if self.cfg.region_map == "redis":
                if self.registry is None:
                    raise ValueError("--region-map redis needs --redis-url")
                self.regions = RegionMap.parse(await self.registry.region_map())
            else:
                self.regions = RegionMap.load(self.cfg.region_map)
            if self.cfg.region not in self.regions.relays:
                raise ValueError(f"--region {self.cfg.region!r} is not in the region map")

    @property
    def media_address(self) -> tuple[str, int]:
        host, port = self.endpoint.address
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1" if host == "0.0.0.0" else "::1"
        return host, port

    @property
    def token_target(self) -> tuple[str, int]:
        return self.cfg.advertise or self.media_address

    @property
    def candidates(self) -> list[tuple[str, int]]:
        if self.cfg.relays:
            return list(self.cfg.relays)
        return [self.cfg.public or self.media_address]

    async def stop(self):
        for s in list(self.sessions.values()):
            await s.close("shutdown")
        for call in list(self.calls.of("websocket").values()):  # 1001 going away: the client reconnects elsewhere
            call.end()
            await call.ws.close(code=1001, message=b"transceiver shutting down")
        if self.phone is not None:  # BYE to every phone call, then the listeners close
            await self.phone.stop()
        self._clock.cancel()
        if self.uploader is not None:  # what the last calls recorded goes up now, if the store answers soon
            try:
                await asyncio.wait_for(self.uploader.queue.join(), 10)
            except asyncio.TimeoutError:
                log.warning("recordings not uploaded yet stay on disk: uploaded at the next start")
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.registry is not None:
            await self.registry.leave()
        if self._http_client is not None:
            await self._http_client.close()
        if self.endpoint:
            self.endpoint.close()

    async def drain(self):
        """SIGTERM: take no new calls (the fleet sees ``draining`` at once and places elsewhere), let live ones run
        until they end or the deadline, close what is left, and leave the registry."""
        self.calls.draining = True
        if self.registry is not None:
            await self.registry.publish()
        log.warning("draining: %d live calls, deadline in %.0f s", self.load, self.cfg.drain_timeout)
        try:
            await asyncio.wait_for(self.calls.idle.wait(), self.cfg.drain_timeout)
        except asyncio.TimeoutError:
            log.warning("drain deadline: closing %d calls", self.load)
        await self.stop()

    # ------------------------------------------------------------- calls
    def candidates_for(self, client_region: str | None) -> list[tuple]:
        """The answer's candidates: with a region map, the relays of the client's region first and a relay of a second
        region as a backup; else ``--relay`` (or the media socket itself in direct mode)."""
        tcp = [(h, p, False, "tcp") for h, p in self.cfg.tcp_relays]
        if self.regions is None:
            return self.candidates + tcp
        return self.regions.candidates(client_region or self.cfg.region, self.cfg.region) + tcp

    def traced(self, call, request, region: str | None = None) -> None:
        """What a call's trace starts from: the signaling request's W3C trace context (an app's trace continues into
        the call) and where the call is (``tracing.CallTrace``; nothing is made when tracing is off)."""
        ctx = {k: request.headers[k] for k in ("traceparent", "tracestate") if k in request.headers}
        call.traceparent = ctx or None
        call.trace_attributes = {"voxgate.transceiver.id": self.id, "voxgate.region": region or self.cfg.region,
                                 "voxgate.relays": ",".join(f"{h}:{p}" for h, p in self.cfg.relays) or "direct"}

    def create_call(self, offer_sdp: str, session_config: dict | None = None,
                    client_region: str | None = None, owner: str | None = None,
                    ticket=None, api: str = "realtime") -> tuple[Session, str]:
        offer = parse_offer(offer_sdp)
        ufrag = mint(self.cfg.keyring, self.token_target, time.time())
        pwd = new_ice_pwd()
        agent = self.agent_factory()
        session = Session(self.host, offer, ufrag, pwd, agent, session_config, api=api,
                          call_id=call_id(self.id, secrets.token_hex(10), "live" if api == "live" else "rtc"))
        session.owner = owner  # the key that made the call: its URLs and sideband are open to it (and server keys)
        session.ticket = ticket  # its place under the caller's limits (access.Admission), given back when it ends
        answer = build_answer(offer, ufrag=ufrag, pwd=pwd, fingerprint=self.fingerprint,
                              candidates=self.candidates_for(client_region),
                              ssrc=session.ssrc, session_id=int(time.time() * 1000))
        self.calls.add(session, "webrtc")
        self.endpoint.mux.add(session.ice)
        session.start()
        return session, answer

    def add_ws_call(self, call):
        self.calls.add(call, "websocket")

    def remove_ws_call(self, call):
        if self.calls.remove(call):
            self.metrics.calls.labels("websocket_closed").inc()

    def call(self, call_id: str):
        """A live WebRTC or phone call by id (what the calls endpoints and the sideband serve)."""
        return self.calls.get(call_id, "webrtc", "sip")

    def _load_changed(self, load: int):
        self.metrics.sessions.set(load)
        if self.registry is not None:
            self.registry.changed()

    async def hangup(self, call_id: str) -> bool:
        if self.phone is not None and self.phone.hangup(call_id):
            return True
        session = self.sessions.get(call_id)
        if session is None:
            return False
        await session.close("hangup")
        return True

    # what calls report (through their Host)
    @property
    def host(self) -> Host:
        """What a call may reach of this transceiver (``session.Host``): no more than that."""
        ep = self.endpoint
        return Host(certificate=self.certificate, opus_complexity=self.cfg.opus_complexity, send=ep.sendto,
                    authenticated=ep.mux.authenticated, connected=self.on_connected, closed=self.on_closed)

    def on_connected(self, session: Session):
        self.calls.clock(session)

    def on_closed(self, session: Session):
        if session.ticket is not None:
            session.ticket.release()
        self.calls.remove(session)
        self.endpoint.mux.remove(session.ice)
        self.metrics.calls.labels(session.close_reason).inc()
        self.metrics.observe_setup(session.timings_ms())

    # ------------------------------------------------------------- clocks
    def _start_clock(self):
        """One clock for every call's outgoing audio: every 5 ms it sends what is due (each call's audio is paced
        by its own media time, see ``call.paced.PacedOut``), on absolute deadlines (no drift). A plain timer callback, not a
        task: at 200 steps a second the asyncio task machinery would cost more than the work."""
        loop = asyncio.get_running_loop()
        self._clock_start = loop.time()
        self._clock_step = 0
        self._clock = loop.call_at(self._clock_start + STEP, self._step)

    def _step(self):
        loop = asyncio.get_running_loop()
        step = self._clock_step + 1
        late = loop.time() - (self._clock_start + step * STEP)
        if late > 0.2:  # we fell far behind (CPU starved): skip ahead rather than run every missed step
            step += int(late / STEP)
        self._clock_step = step
        now = time.monotonic()
        for s in self.calls.clocked:
            if s.due(now):
                try:
                    s.tick(now)
                except Exception:  # one call's failure must not stop everyone's audio
                    log.exception("sending audio for %s", s.call_id)
        self._clock = loop.call_at(self._clock_start + (step + 1) * STEP, self._step)

    async def _reap(self):
        while True:
            await asyncio.sleep(1.0)
            await self._reap_once(time.monotonic())

    async def _reap_once(self, now: float):
        """One pass (its own frame: a loop variable left in the long-lived loop would keep a call alive)."""
        for s in list(self.sessions.values()):
            if s.state == "new" and now - s.times["created"] > self.cfg.setup_timeout:
                await s.close("setup_timeout")
        for ice in self.endpoint.mux.expired(now, self.cfg.consent_timeout):
            session = self.sessions.get(ice.call_id)
            if session is not None:
                await session.close("consent_expired")
        if self.phone is not None:
            self.phone.reap(now)  # phone calls whose caller's RTP stopped
        self.client_secrets.expire(time.time())
        if now >= self._next_prune:  # no recording outlives --record-retention, calls or not
            self._next_prune = now + 60
            if self.calls.recordings._directory is not None:
                self.calls.recordings.prune()


def _raise_descriptor_limit():
    """Every connection, call and socket is a descriptor: take the hard limit the system allows, not the 1024 a
    shell often gives (the limits of ``access.Limits`` then bind before descriptors run out)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass


async def serve(cfg: TransceiverConfig, ready=None) -> int:
    from .http import start_http

    _raise_descriptor_limit()
    t = Transceiver(cfg)
    await t.start()
    runner = await start_http(t, *cfg.http)
    gc.collect()
    gc.freeze()  # what start-up loaded (the models) is never garbage: collections walk only what calls make
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if ready:
        ready(t)
    await stop.wait()
    await t.drain()
    await runner.cleanup()
    return 0
