"""`voxgate load`: many real calls at a deployment, a spoken question on a loop in each, and a report.

    voxgate load --url http://HOST:8080 --calls 50 --ramp 10 --seconds 30 [--transport webrtc|websocket|sip]
                 [--wav question.wav] [--sip HOST:PORT] [--json]

Each call is real on the wire and light on this machine, so one process drives hundreds:

- ``webrtc``: its own UDP socket, ICE checks with MESSAGE-INTEGRITY, a DTLS-SRTP handshake (aiortc's transport
  through ``transceiver.aiortc_glue``), SRTP Opus at 50 packets/s encoded once from the WAV and replayed; what
  comes back is counted, its sequence gaps are loss, its interarrival jitter is RFC 3550's, and the server's view of
  our stream comes from its RTCP receiver reports. A packet is heard as sound by its size (Opus spends a few bytes
  on silence and tens on speech): no decoding.
- ``websocket``: the Realtime API's WebSocket, PCM16 at 24 kHz appended at a microphone's pace.
- ``sip``: an INVITE to ``--sip HOST:PORT`` (answered at once, as ``voxgate demo --sip`` does), G.711 μ-law RTP.

Every call speaks the question, listens ``--listen`` seconds, and again, until ``--seconds`` end; its turn is the
time from the end of the question's speech to the first sound back. Before it starts it says what it will send and
where; while it runs, one progress line; at the end: setup and turn percentiles, packet loss and jitter both ways,
errors by kind, and the server's ``/metrics`` counters that moved. Bounded: at most ``MAX_CALLS`` calls and
``MAX_SECONDS`` seconds, and every call stops at its deadline.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
import re
import secrets
import statistics
import sys
import time
import wave

import aiohttp

MAX_CALLS, MAX_SECONDS, MAX_RAMP = 1000, 3600, 600
VOICED_BYTES = 20  # an Opus packet this large carries sound (silence is a few bytes)
COUNTERS = re.compile(r"^(voxgate_[a-z_]+_total)(\{[^}]*\})? ([0-9.e+]+)$", re.M)


# ---------------------------------------------------------------- what one call measures
class CallStats:
    def __init__(self):
        self.setup_ms: float | None = None
        self.turns: list[float] = []
        self.sent = self.received = self.lost = 0
        self.jitter_ms = 0.0  # RFC 3550's estimate, ours of their stream
        self.remote_lost: float | None = None  # their receiver reports: the fraction of ours they lost
        self.remote_jitter_ms: float | None = None
        self.error: str | None = None
        self._seq = None
        self._transit = None

    def arrived(self, seq: int, rtp_ts: int, rate: int, now: float) -> None:
        """A packet of theirs: loss by sequence gaps, jitter by RFC 3550 (A.8)."""
        self.received += 1
        if self._seq is not None:
            gap = (seq - self._seq) & 0xFFFF
            if 1 < gap < 3000:
                self.lost += gap - 1
        self._seq = seq
        transit = now * rate - rtp_ts
        if self._transit is not None:
            d = abs(transit - self._transit)
            self.jitter_ms += (d / rate * 1000 - self.jitter_ms) / 16
        self._transit = transit


class Schedule:
    """The question, then ``listen`` s of silence, again and again: 20 ms frames, and when each question's speech
    ends (its turn is timed from there)."""

    def __init__(self, pcm16k: bytes, listen: float):
        import numpy as np

        a = np.abs(np.frombuffer(pcm16k, np.int16).astype(np.int32))
        peak = int(a.max()) if len(a) else 0
        frames = a[:len(a) // 320 * 320].reshape(-1, 320).max(axis=1) if len(a) >= 320 else a
        loud = np.nonzero(frames >= 0.25 * peak)[0]  # its speech ends with its last frame a quarter as loud as its
        self.speech_end = (loud[-1] + 1) * 0.02 if len(loud) else 0.0  # peak (a tail of breath is not speech)
        self.sound = max(300, int(0.1 * peak))  # what counts as sound coming back
        self.frames = [pcm16k[i:i + 640].ljust(640, b"\0") for i in range(0, len(pcm16k), 640)]
        self.frames += [bytes(640)] * int(listen / 0.02)
        self.period = len(self.frames) * 0.02


def read_wav_16k(path: str) -> bytes:
    from ..audio import Resampler

    with wave.open(path) as w:
        if w.getsampwidth() != 2:
            raise SystemExit(f"voxgate load: {path}: 16-bit PCM WAV, please")
        pcm = w.readframes(w.getnframes())
        if w.getnchannels() == 2:
            import numpy as np

            pcm = np.frombuffer(pcm, np.int16).reshape(-1, 2).mean(axis=1).astype(np.int16).tobytes()
        return Resampler(w.getframerate(), 16000)(pcm)


def default_wav() -> str:
    """A question spoken by the embedded voice (no file given)."""
    import tempfile

    from ..agent.models.piper import PiperTts

    path = os.path.join(tempfile.gettempdir(), "voxgate-load-question.wav")
    if not os.path.exists(path):
        tts = PiperTts(phonemizer="lexicon")
        pcm = b"".join(tts.synthesize("What is the capital of France?"))
        tmp = path + f".{os.getpid()}"
        with wave.open(tmp, "wb") as w:
            w.setnchannels(1), w.setsampwidth(2), w.setframerate(tts.rate_of())
            w.writeframes(bytes(int(0.3 * tts.rate_of()) * 2) + pcm)
        os.replace(tmp, path)
    return path


# ---------------------------------------------------------------- turns, the same for every transport
class Turns:
    def __init__(self, sched: Schedule, start: float, stats: CallStats):
        self.sched, self.start, self.stats = sched, start, stats
        self.timed_round = -1

    def sound(self, now: float) -> None:
        """Sound came back at ``now``: the first after a question's end is its turn."""
        k = int((now - self.start) // self.sched.period)
        end = self.start + k * self.sched.period + self.sched.speech_end
        if k > self.timed_round and now >= end:
            self.timed_round = k
            self.stats.turns.append((now - end) * 1000)


async def _paced(sched: Schedule, deadline: float, send) -> float:
    """Send the schedule's frames every 20 ms until the deadline (``send(frame, index)``); returns the start."""
    loop = asyncio.get_running_loop()
    start, i = loop.time(), 0
    t0 = time.monotonic()
    while time.monotonic() < deadline:
        await send(sched.frames[i % len(sched.frames)], i)
        i += 1
        await asyncio.sleep(max(0.0, start + i * 0.02 - loop.time()))
    return t0


# ---------------------------------------------------------------- WebRTC
async def webrtc_call(url: str, key: str | None, sched: Schedule, seconds: float, stats: CallStats, packets):
    from aiortc.rtcdtlstransport import RTCDtlsParameters
    from aiortc.rtcrtpparameters import RTCRtpCodecParameters, RTCRtpReceiveParameters
    from aiortc.rtp import RtpPacket
    from aiortc.sdp import SessionDescription

    from ..transceiver import aiortc_glue
    from ..wire import stun

    cert = _cert()
    fp = next(f for f in cert.getFingerprints() if f.algorithm == "sha-256")
    loop = asyncio.get_running_loop()
    ice_ok = asyncio.Event()
    state: dict = {}

    class Sock(asyncio.DatagramProtocol):
        def connection_made(self, transport):
            state["udp"] = transport

        def datagram_received(self, data, addr):
            if data and data[0] < 4:
                ice_stun(data, addr, state["udp"].sendto, state["pwd"], ice_ok.set)
            else:
                state["ice"].deliver(data, None)

    class Heard:
        def on_rtp(self, packet):
            now = time.monotonic()
            stats.arrived(packet.sequence_number, packet.timestamp, 48000, now)
            if len(packet.payload) > VOICED_BYTES and "turns" in state:
                state["turns"].sound(now)

        def on_rtcp(self, packet):
            for r in getattr(packet, "reports", []) or []:  # their receiver report on our stream
                stats.remote_lost = r.fraction_lost / 256
                stats.remote_jitter_ms = r.jitter / 48

        def on_end(self):
            pass

    state["ufrag"], state["pwd"] = secrets.token_hex(4), secrets.token_hex(16)
    state["ice"] = aiortc_glue.IceTransport(lambda data: state["udp"].sendto(data, state["remote"]), "controlling")
    host = _host(url)
    await loop.create_datagram_endpoint(Sock, local_addr=(_local_for(host), 0))
    lhost, lport = state["udp"].get_extra_info("sockname")[:2]
    offer = "\r\n".join([
        "v=0", f"o=- {random.getrandbits(40)} 2 IN IP4 {lhost}", "s=-", "t=0 0", "a=group:BUNDLE 0",
        "m=audio 9 UDP/TLS/RTP/SAVPF 111", "c=IN IP4 0.0.0.0", f"a=ice-ufrag:{state['ufrag']}",
        f"a=ice-pwd:{state['pwd']}", f"a=candidate:1 1 udp 2130706431 {lhost} {lport} typ host",
        "a=end-of-candidates", f"a=fingerprint:sha-256 {fp.value}", "a=setup:actpass", "a=mid:0", "a=sendrecv",
        "a=rtcp-mux", "a=rtpmap:111 opus/48000/2", "a=fmtp:111 minptime=10;useinbandfec=1",
        f"a=ssrc:{random.getrandbits(31) + 1} cname:voxgate-load", ""])
    t0 = time.monotonic()
    headers = {"Content-Type": "application/sdp", **({"Authorization": f"Bearer {key}"} if key else {})}
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(url.rstrip("/") + "/v1/realtime/calls", data=offer, headers=headers) as resp:
                if resp.status != 201:
                    raise LoadError(f"http_{resp.status}")
                answer = SessionDescription.parse(await resp.text())
                call_id = resp.headers.get("Location", "").rsplit("/", 1)[-1]
            m = answer.media[0]
            cand = next(c for c in m.ice_candidates if c.protocol.lower() == "udp" and ":" not in c.ip)
            state["remote"] = (cand.ip, cand.port)
            pt = next(c.payloadType for c in m.rtp.codecs if c.mimeType.lower() == "audio/opus")
            user = f"{m.ice.usernameFragment}:{state['ufrag']}"
            tie = random.getrandbits(63)
            while not ice_ok.is_set():
                if time.monotonic() - t0 > 10:
                    raise LoadError("ice_timeout")
                state["udp"].sendto(stun.build(stun.BINDING_REQUEST, os.urandom(12), [
                    stun.attr_username(user), stun.attr_priority(0x6E0001FF), stun.attr_ice_controlling(tie),
                    stun.attr_use_candidate()], integrity_key=m.ice.password.encode()), state["remote"])
                try:
                    await asyncio.wait_for(ice_ok.wait(), 0.1)
                except asyncio.TimeoutError:
                    pass
            dtls = aiortc_glue.dtls_transport(state["ice"], cert, "client" if m.dtls.role == "server" else "server")
            await asyncio.wait_for(dtls.start(RTCDtlsParameters(fingerprints=m.dtls.fingerprints)), 10)
            if dtls.state != "connected":
                raise LoadError("dtls_failed")
            stats.setup_ms = (time.monotonic() - t0) * 1000
            codec = RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2, payloadType=pt)
            aiortc_glue.receive_rtp(dtls, Heard(), RTCRtpReceiveParameters(codecs=[codec]))
            ssrc, seq, ts = random.getrandbits(31) + 1, random.getrandbits(16), random.getrandbits(31)
            n = len(packets)

            async def send(_frame, i):
                nonlocal seq, ts
                pkt = RtpPacket(payload_type=pt, marker=int(i % n == 0), sequence_number=seq, timestamp=ts,
                                ssrc=ssrc, payload=packets[i % n])
                seq, ts = (seq + 1) & 0xFFFF, (ts + 960) & 0xFFFFFFFF
                stats.sent += 1
                await aiortc_glue.send_rtp(dtls, pkt.serialize())

            state["turns"] = Turns(sched, time.monotonic(), stats)
            await _paced(sched, t0 + seconds, send)
            await dtls.stop()
            async with http.post(f"{url.rstrip('/')}/v1/realtime/calls/{call_id}/hangup",
                                 headers={k: v for k, v in headers.items() if k == "Authorization"}):
                pass
    finally:
        if "udp" in state:
            state["udp"].close()


def ice_stun(data: bytes, addr, sendto, pwd: str, succeeded) -> None:
    """A light ICE client's STUN: a success answers our check (``succeeded()``); a full ICE agent's check of us is
    answered (``sendto``), signed with our ``pwd``. Shared with bench/loadclient.py."""
    from ..wire import stun

    try:
        msg = stun.parse(data)
    except stun.StunError:
        return
    if msg.msg_type == stun.BINDING_SUCCESS:
        succeeded()
    elif msg.msg_type == stun.BINDING_REQUEST:
        sendto(stun.build(stun.BINDING_SUCCESS, msg.transaction_id,
                          [stun.attr_xor_mapped_address(addr[:2], msg.transaction_id)],
                          integrity_key=pwd.encode()), addr)


_CERT: list = []


def _cert():
    if not _CERT:
        from aiortc.rtcdtlstransport import RTCCertificate

        _CERT.append(RTCCertificate.generateCertificate())
    return _CERT[0]


def opus_packets(sched: Schedule) -> list[bytes]:
    """The schedule as 20 ms Opus packets at 48 kHz, encoded once (every call replays them)."""
    import av
    import numpy as np

    from ..audio import Resampler

    enc = av.CodecContext.create("libopus", "w")
    enc.bit_rate, enc.format, enc.layout, enc.sample_rate = 32000, "s16", "mono", 48000
    up = Resampler(16000, 48000)
    out = []
    for i, f in enumerate(sched.frames):
        frame = av.AudioFrame.from_ndarray(np.frombuffer(up(f), np.int16).reshape(1, -1), format="s16",
                                           layout="mono")
        frame.sample_rate, frame.pts = 48000, i * 960
        out += [bytes(p) for p in enc.encode(frame)]
    while len(out) < len(sched.frames):
        out.append(out[-1] if out else b"\xf8\xff\xfe")
    return out[:len(sched.frames)]


# ---------------------------------------------------------------- WebSocket
async def websocket_call(url: str, key: str | None, sched: Schedule, seconds: float, stats: CallStats):
    from ..audio import Resampler
    import numpy as np

    up = Resampler(16000, 24000)
    ws_url = url.rstrip("/").replace("http://", "ws://").replace("https://", "wss://") + "/v1/realtime?model=load"
    t0 = time.monotonic()
    async with aiohttp.ClientSession() as http:
        try:
            ws = await http.ws_connect(ws_url, headers={"Authorization": f"Bearer {key}"} if key else {},
                                       max_msg_size=0)
        except aiohttp.WSServerHandshakeError as exc:
            raise LoadError(f"http_{exc.status}") from None
        stats.setup_ms = (time.monotonic() - t0) * 1000  # upgraded (an agent that speaks the API says session.created)
        turns = Turns(sched, time.monotonic(), stats)

        async def read():
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                e = json.loads(msg.data)
                if e.get("type") == "response.output_audio.delta":
                    stats.received += 1
                    a = np.frombuffer(base64.b64decode(e["delta"]), np.int16)
                    if len(a) and np.abs(a).max() > sched.sound:
                        turns.sound(time.monotonic())
                elif e.get("type") == "error" and stats.error is None:
                    stats.error = e.get("error", {}).get("code", "error")

        reader = asyncio.ensure_future(read())

        async def send(frame, _i):
            stats.sent += 1
            await ws.send_str(json.dumps({"type": "input_audio_buffer.append",
                                          "audio": base64.b64encode(up(frame)).decode()}))

        try:
            await _paced(sched, t0 + seconds, send)
        finally:
            await ws.close()
            reader.cancel()


# ---------------------------------------------------------------- SIP
async def sip_call(target: tuple[str, int], sched: Schedule, seconds: float, stats: CallStats):
    from ..sip import message
    from ..sip import sdp as sip_sdp
    from ..sip.media import PhoneIn, PhoneOut
    from ..sip.sdp import Codec
    from ..audio import Resampler
    import numpy as np

    class Sock(asyncio.DatagramProtocol):
        def __init__(self):
            self.queue: asyncio.Queue = asyncio.Queue()

        def datagram_received(self, data, addr):
            self.queue.put_nowait((time.monotonic(), data, addr))

    loop = asyncio.get_running_loop()
    host, port = target
    local = _local_for(host)
    sig_t, sig = await loop.create_datagram_endpoint(Sock, local_addr=(local, 0))
    rtp_t, rtp = await loop.create_datagram_endpoint(Sock, local_addr=(local, 0))
    try:
        lport, rport = sig_t.get_extra_info("sockname")[1], rtp_t.get_extra_info("sockname")[1]
        offer = (f"v=0\r\no=load 1 1 IN IP4 {local}\r\ns=-\r\nc=IN IP4 {local}\r\nt=0 0\r\n"
                 f"m=audio {rport} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\na=sendrecv\r\n").encode()
        call_id, tag = f"load-{secrets.token_hex(8)}", message.tag()
        frm, to = f"<sip:load@{local}:{lport}>;tag={tag}", f"<sip:agent@{host}:{port}>"
        via = f"SIP/2.0/UDP {local}:{lport};branch={message.branch()};rport"
        t0 = time.monotonic()
        invite = message.request("INVITE", f"sip:agent@{host}:{port}", via=via, from_=frm, to=to, call_id=call_id,
                                 cseq=1, body=offer, content_type="application/sdp",
                                 headers={"Contact": f"<sip:load@{local}:{lport}>"})
        sig_t.sendto(invite, target)
        ok = None
        while ok is None:
            try:
                _, data, _ = await asyncio.wait_for(sig.queue.get(), 10)
            except asyncio.TimeoutError:
                raise LoadError("sip_timeout") from None
            msg = message.parse(data)
            if getattr(msg, "code", 0) >= 200:
                ok = msg
        if ok.code != 200:
            raise LoadError(f"sip_{ok.code}")
        stats.setup_ms = (time.monotonic() - t0) * 1000
        remote = sip_sdp.parse(ok.body)
        to_tagged = ok.headers["To"]
        sig_t.sendto(message.request("ACK", f"sip:agent@{host}:{port}", via=via.replace("branch=", "branch=a"),
                                     from_=frm, to=to_tagged, call_id=call_id, cseq=1), target)
        out = PhoneOut(8000, Codec(0, "PCMU", 8000), random.getrandbits(31))
        down = Resampler(16000, 8000)
        decoder = PhoneIn(8000, remote.codecs[0], None)
        turns = Turns(sched, time.monotonic(), stats)

        async def send(frame, _i):
            out.write(down(frame))
            while (data := out.next_packet(time.monotonic())) is not None:
                stats.sent += 1
                rtp_t.sendto(data, (remote.host, remote.port))
            while not rtp.queue.empty():
                when, data, addr = rtp.queue.get_nowait()
                if len(data) >= 12:
                    stats.arrived(int.from_bytes(data[2:4], "big"), int.from_bytes(data[4:8], "big"), 8000, when)
                frames, _ = decoder.receive(data, addr, when)
                if frames and np.abs(np.frombuffer(b"".join(frames), np.int16)).max() > sched.sound:
                    turns.sound(when)

        await _paced(sched, t0 + seconds, send)
        sig_t.sendto(message.request("BYE", f"sip:agent@{host}:{port}", via=via.replace("branch=", "branch=b"),
                                     from_=frm, to=to_tagged, call_id=call_id, cseq=2), target)
        await asyncio.sleep(0.1)
    finally:
        sig_t.close()
        rtp_t.close()


# ---------------------------------------------------------------- the run
class LoadError(Exception):
    """A call failed in a way the report counts by kind (``http_429``, ``ice_timeout``, ``sip_486``, …)."""


def _host(url: str) -> str:
    from urllib.parse import urlparse

    return urlparse(url).hostname or "127.0.0.1"


def _local_for(host: str) -> str:
    """The local address that reaches ``host`` (loopback for loopback)."""
    import socket

    if host.startswith("127.") or host == "localhost":
        return "127.0.0.1"
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect((socket.gethostbyname(host), 9))
        return s.getsockname()[0]
    finally:
        s.close()


async def metrics(url: str, key: str | None) -> dict:
    """The server's counters (``voxgate_*_total``), or {} if it does not show them."""
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(url.rstrip("/") + "/metrics", timeout=aiohttp.ClientTimeout(total=5),
                                headers={"Authorization": f"Bearer {key}"} if key else {}) as r:
                text = await r.text() if r.status == 200 else ""
    except (aiohttp.ClientError, asyncio.TimeoutError):
        return {}
    return {name + (labels or ""): float(v) for name, labels, v in COUNTERS.findall(text)}


def _pct(xs: list[float], p: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(p / 100 * len(xs)))], 1)


async def run(url: str, calls: int, ramp: float, seconds: float, transport: str, wav: str, listen: float,
              key: str | None = None, sip: tuple[str, int] | None = None, progress=None) -> dict:
    sched = Schedule(read_wav_16k(wav), listen)
    packets = opus_packets(sched) if transport == "webrtc" else None
    before = await metrics(url, key)
    stats = [CallStats() for _ in range(calls)]
    t_start = time.monotonic()

    async def one(i: int):
        await asyncio.sleep(ramp * i / max(1, calls))
        s = stats[i]
        try:
            if transport == "webrtc":
                await webrtc_call(url, key, sched, seconds, s, packets)
            elif transport == "websocket":
                await websocket_call(url, key, sched, seconds, s)
            else:
                await sip_call(sip, sched, seconds, s)
        except LoadError as exc:
            s.error = str(exc)
        except (OSError, aiohttp.ClientError, asyncio.TimeoutError) as exc:
            s.error = type(exc).__name__

    tasks = [asyncio.ensure_future(one(i)) for i in range(calls)]
    deadline = t_start + ramp + seconds + 30  # every call ends by then, whatever the server does
    while not all(t.done() for t in tasks):
        if progress is not None:
            up = sum(1 for s in stats if s.setup_ms is not None and s.error is None)
            progress(f"  {time.monotonic() - t_start:5.0f} s  calls up {up}/{calls}  "
                     f"turns {sum(len(s.turns) for s in stats)}  errors {sum(1 for s in stats if s.error)}")
        await asyncio.wait(tasks, timeout=1.0)
        if time.monotonic() > deadline:
            for t in tasks:
                t.cancel()
            for s in stats:
                s.error = s.error or "deadline"
    after = await metrics(url, key)
    setups = [s.setup_ms for s in stats if s.setup_ms is not None]
    turns = [t for s in stats for t in s.turns]
    errors: dict[str, int] = {}
    for s in stats:
        if s.error:
            errors[s.error] = errors.get(s.error, 0) + 1
    sent, received, lost = (sum(getattr(s, k) for s in stats) for k in ("sent", "received", "lost"))
    remote = [s.remote_lost for s in stats if s.remote_lost is not None]
    moved = {k: after[k] - before.get(k, 0.0) for k in sorted(after) if after[k] != before.get(k, 0.0)}
    return {"url": url, "transport": transport, "calls": calls, "ramp_s": ramp, "seconds": seconds,
            "connected": len(setups), "setup_ms": {"p50": _pct(setups, 50), "p99": _pct(setups, 99)},
            "turn_ms": {"p50": _pct(turns, 50), "p90": _pct(turns, 90), "p99": _pct(turns, 99), "n": len(turns)},
            "packets": {"sent": sent, "received": received,
                        "lost_to_us": round(lost / max(1, received + lost), 4),
                        "jitter_ms_to_us": round(statistics.mean([s.jitter_ms for s in stats if s.received]), 2)
                        if transport != "websocket" and any(s.received for s in stats) else None,
                        "lost_to_them": round(statistics.mean(remote), 4) if remote else None,
                        "jitter_ms_to_them": round(statistics.mean([s.remote_jitter_ms for s in stats
                                                                    if s.remote_jitter_ms is not None]), 2)
                        if remote else None},
            "errors": errors, "server_metrics_moved": moved}


def report(r: dict) -> str:
    p = r["packets"]
    lines = [f"voxgate load: {r['connected']}/{r['calls']} {r['transport']} calls up",
             f"  setup      p50 {r['setup_ms']['p50']} ms   p99 {r['setup_ms']['p99']} ms",
             f"  turn       p50 {r['turn_ms']['p50']} ms   p90 {r['turn_ms']['p90']} ms   p99 {r['turn_ms']['p99']} ms"
             f"   ({r['turn_ms']['n']} turns)",
             f"  to us      {p['received']} packets, lost {p['lost_to_us'] * 100:.2f} %, jitter {p['jitter_ms_to_us']} ms",
             f"  to them    {p['sent']} packets" + (f", lost {p['lost_to_them'] * 100:.2f} %, jitter "
                                                   f"{p['jitter_ms_to_them']} ms (their RTCP)"
                                                   if p["lost_to_them"] is not None else
                                                   " (no RTCP receiver reports: see the server's packet counters)"),
             f"  errors     {r['errors'] or 'none'}"]
    if r["server_metrics_moved"]:
        lines.append("  server     /metrics counters that moved:")
        lines += [f"    {k} +{v:g}" for k, v in r["server_metrics_moved"].items()]
    else:
        lines.append("  server     /metrics: not shown to this client (or nothing moved)")
    return "\n".join(lines)


def main(args) -> int:
    if not 1 <= args.calls <= MAX_CALLS or not 1 <= args.seconds <= MAX_SECONDS or not 0 <= args.ramp <= MAX_RAMP:
        raise SystemExit(f"voxgate load: --calls 1-{MAX_CALLS}, --seconds 1-{MAX_SECONDS}, --ramp 0-{MAX_RAMP}")
    sip = None
    if args.transport == "sip":
        if not args.sip:
            raise SystemExit("voxgate load: --transport sip needs --sip HOST:PORT")
        host, _, port = args.sip.rpartition(":")
        sip = (host or "127.0.0.1", int(port))
    wav = args.wav or default_wav()
    sched = Schedule(read_wav_16k(wav), args.listen)
    where = f"sip:agent@{args.sip}" if sip else args.url
    print(f"voxgate load: {args.calls} {args.transport} calls to {where}, started over {args.ramp:g} s, each "
          f"{args.seconds:g} s: {os.path.basename(wav)} ({sched.speech_end:.1f} s of speech) then {args.listen:g} s "
          f"listening, on a loop; /metrics read before and after", file=sys.stderr, flush=True)
    tty = sys.stderr.isatty()
    shown = [0.0]

    def progress(line):  # one line, rewritten on a terminal; every 5 s into a log
        if not tty and time.monotonic() - shown[0] < 5:
            return
        shown[0] = time.monotonic()
        print(("\r" + line) if tty else line, end="" if tty else "\n", file=sys.stderr, flush=True)

    r = asyncio.run(run(args.url, args.calls, args.ramp, args.seconds, args.transport, wav, args.listen,
                        args.api_key, sip, progress))
    if tty:
        print(file=sys.stderr)
    print(json.dumps(r) if args.json else report(r), flush=True)
    return 0 if r["connected"] else 1
