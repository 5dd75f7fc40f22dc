"""`voxgate call`: place one WebRTC call like an OpenAI Realtime client would, from a WAV file (``--transport
websocket``: a WebSocket session instead, ``client/ws.py``).

POSTs an offer to ``{url}/v1/realtime/calls``, sends the WAV as the microphone,
records what comes back to a WAV, opens the ``oai-events`` data channel (sends
the events given with ``--event`` and collects what arrives), hangs up, and
prints one JSON line: setup-time components, packet counts, events.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import statistics
import time
import urllib.parse
import wave

import aiohttp
import av
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaPlayer
from aiortc.mediastreams import MediaStreamError


def _restrict_host_candidates(host: str):
    """Loopback servers: offer only 127.0.0.1 / ::1 (aioice skips loopback, and traffic must stay on this host)."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = ipaddress.ip_address("127.0.0.1") if host == "localhost" else None
    if ip is None or not ip.is_loopback:
        return
    import aioice.ice

    addr = "::1" if ip.version == 6 else "127.0.0.1"
    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: [addr]


class Gaps:
    """The longest pause between two received audio frames (after the first), and when it happened: what a
    relay failover or a drain costs the listener."""

    def __init__(self):
        self.last: float | None = None
        self.max = 0.0
        self.at: float | None = None

    def frame(self, now: float):
        if self.last is not None and now - self.last > self.max:
            self.max, self.at = now - self.last, self.last
        self.last = now


async def _record(track, path: str, on_first_frame, gaps: Gaps):
    resampler = av.AudioResampler(format="s16", layout="mono", rate=48000)
    with wave.open(path, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(48000)
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            gaps.frame(time.monotonic())
            if on_first_frame is not None:
                on_first_frame()
                on_first_frame = None
            for f in resampler.resample(frame):
                out.writeframes(bytes(f.planes[0])[: f.samples * 2])


def _primary_candidates(sdp: str) -> str:
    """The answer without its backup candidates (those of a lower type preference, e.g. another region's relay):
    aiortc nominates the first pair that answers, not the best, so a backup that is closer would win."""
    lines = sdp.splitlines()
    prefs = [int(line.split()[3]) >> 24 for line in lines if line.startswith("a=candidate:")]
    top = max(prefs, default=0)
    keep = [line for line in lines if not line.startswith("a=candidate:") or int(line.split()[3]) >> 24 == top]
    return "\r\n".join(keep) + "\r\n"


def _wav_seconds(path: str) -> float:
    with wave.open(path, "rb") as w:
        return w.getnframes() / w.getframerate()


def tone_wav(path: str, seconds: float = 2.0, hz: float = 440.0, rate: int = 48000) -> str:
    """A steady sine tone as a mono 16-bit WAV: a microphone whose echo never pauses, so any gap in it is the
    network's (the doctor's loopback call, the firewall lab's restarts)."""
    import array
    import math

    samples = array.array("h", (int(6000 * math.sin(2 * math.pi * hz * i / rate)) for i in range(int(seconds * rate))))
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(rate)
        w.writeframes(samples.tobytes())
    return str(path)


def _padded(path: str, seconds: float) -> str:
    """A copy of the WAV with silence after it, to ``seconds`` long (a temporary file)."""
    import tempfile

    with wave.open(path, "rb") as w:
        params, frames = w.getparams(), w.readframes(w.getnframes())
    need = int(seconds * params.framerate) * params.sampwidth * params.nchannels
    fd, out = tempfile.mkstemp(suffix=".wav", prefix="voxgate-call-")
    with open(fd, "wb") as f, wave.open(f, "wb") as w:
        w.setparams(params)
        w.writeframes(frames + b"\0" * max(0, need - len(frames)))
    return out


async def place_call(url: str, input_wav: str, output_wav: str, *, api_key: str | None = None,
                     events: list | None = None, duration: float | None = None, session: dict | None = None,
                     headers: dict | None = None, pings: int = 0, primary_only: bool = False,
                     api: str = "realtime") -> dict:
    _restrict_host_candidates(urllib.parse.urlparse(url).hostname or "")
    pc = RTCPeerConnection()
    marks: dict = {}
    received: list = []
    padded = None
    if duration is not None and duration > _wav_seconds(input_wav):
        padded = input_wav = _padded(input_wav, duration)  # a microphone goes on after the words: silence, not nothing
    player = MediaPlayer(input_wav)
    pc.addTrack(player.audio)
    channel = pc.createDataChannel("oai-events")
    opened = asyncio.Event()
    channel.on("open", opened.set)
    ping_sent: dict = {}
    rtts: list = []

    def on_message(message):
        event = json.loads(message)
        inner = event.get("event") if isinstance(event, dict) else None
        if isinstance(inner, dict) and inner.get("type") == "voxgate.ping" and inner.get("n") in ping_sent:
            rtts.append((time.monotonic() - ping_sent.pop(inner["n"])) * 1000)  # the echo agent sent it back
            return
        received.append(event)

    channel.on("message", on_message)
    rec_task = None
    gaps = Gaps()
    t0 = time.monotonic()

    def mark(name):
        marks.setdefault(name, round((time.monotonic() - t0) * 1000, 1))

    @pc.on("track")
    def on_track(track):
        nonlocal rec_task
        rec_task = asyncio.ensure_future(_record(track, output_wav, lambda: mark("first_audio_ms"), gaps))

    @pc.on("iceconnectionstatechange")
    def on_ice():
        if pc.iceConnectionState == "completed":
            mark("ice_connected_ms")

    @pc.on("connectionstatechange")
    def on_conn():
        if pc.connectionState == "connected":
            mark("dtls_connected_ms")

    await pc.setLocalDescription(await pc.createOffer())  # aiortc gathers all candidates here: no trickle
    offer_ready = time.monotonic()
    headers = {**({"Authorization": f"Bearer {api_key}"} if api_key else {}), **(headers or {})}
    base = url.rstrip("/")
    async with aiohttp.ClientSession() as http:
        t0 = time.monotonic()  # setup is timed from the POST, as a browser would see it
        gather_ms = round((t0 - offer_ready) * 1000, 1)
        if api == "live":  # GPT-Live: JSON {session, transport}, answered {session: {id}, transport: {sdp}}
            resp = await http.post(f"{base}/v1/live/sessions", headers=headers, json={
                "session": session or {"model": "gpt-live-1"},
                "transport": {"type": "webrtc", "sdp": pc.localDescription.sdp}})
        elif session is not None:
            form = aiohttp.FormData()
            form.add_field("sdp", pc.localDescription.sdp, content_type="application/sdp")
            form.add_field("session", json.dumps(session), content_type="application/json")
            resp = await http.post(f"{base}/v1/realtime/calls", data=form, headers=headers)
        else:
            resp = await http.post(f"{base}/v1/realtime/calls", data=pc.localDescription.sdp,
                                   headers={**headers, "Content-Type": "application/sdp"})
        if resp.status != 201:
            raise RuntimeError(f"call refused: {resp.status} {await resp.text()}")
        if api == "live":
            body = await resp.json()
            answer, call_id = body["transport"]["sdp"], body["session"]["id"]
        else:
            answer = await resp.text()
            call_id = resp.headers["Location"].rsplit("/", 1)[-1]
        if primary_only:
            answer = _primary_candidates(answer)
        holder = resp.headers.get("X-Voxgate-Transceiver")
        region = resp.headers.get("X-Voxgate-Region")
        mark("answer_ms")
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        stay = asyncio.ensure_future(asyncio.sleep(duration if duration is not None else _wav_seconds(input_wav) + 1.0))
        try:
            await asyncio.wait_for(opened.wait(), 10)
            mark("datachannel_open_ms")
            for e in events or []:
                channel.send(json.dumps(e))
            for n in range(pings):  # the media path's round trip: same 5-tuple, relay and transceiver as the audio
                if stay.done():
                    break
                ping_sent[n] = time.monotonic()
                channel.send(json.dumps({"type": "voxgate.ping", "n": n}))
                await asyncio.sleep(0.2)
        except asyncio.TimeoutError:
            pass
        await stay
        stats = await pc.getStats()
        async with http.get(f"{base}/v1/realtime/calls/{call_id}", headers=headers) as info:
            server = await info.json() if info.status == 200 else {"status": info.status}
        calls = "live/sessions" if api == "live" else "realtime/calls"
        hang = await http.post(f"{base}/v1/{calls}/{call_id}/hangup", headers=headers)
        hangup_status = hang.status
    sent = recv = lost = 0
    for s in stats.values():
        if s.type == "outbound-rtp":
            sent += s.packetsSent
        elif s.type == "inbound-rtp":
            recv += s.packetsReceived
            lost += s.packetsLost
    await pc.close()
    player.audio.stop()
    if padded is not None:
        import os

        os.unlink(padded)
    if rec_task:
        try:
            await asyncio.wait_for(rec_task, 2)
        except asyncio.TimeoutError:
            rec_task.cancel()
    return {"call_id": call_id, "holder": holder, "setup": marks, "gather_ms": gather_ms, "packets_sent": sent,
            "packets_received": recv, "packets_lost": lost, "events": received, "hangup_status": hangup_status,
            # the longest silence each way: heard here, and the server's own count of what it heard from us
            "max_gap_in_ms": round(gaps.max * 1000, 1),
            "max_gap_in_at_ms": None if gaps.at is None else round((gaps.at - t0) * 1000, 1),
            "max_gap_out_ms": server.get("max_audio_in_gap_ms"), "server": server,
            "region": region, "rtt_ms": round(statistics.median(rtts), 1) if rtts else None,
            "rtts_ms": [round(r, 1) for r in rtts]}


def main(args) -> int:
    events = [json.loads(e) for e in (args.event or [])]
    session = json.loads(args.session) if args.session else None
    headers = {}
    for item in args.header or []:
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            raise SystemExit(f"voxgate call: --header {item!r}: expected NAME:VALUE")
        headers[name.strip()] = value.strip()
    if getattr(args, "transport", "webrtc") == "websocket":
        from .ws import ws_session

        result = asyncio.run(ws_session(args.url, args.input, args.output, api_key=args.api_key, events=events,
                                        duration=args.duration, session=session, pings=args.ping, api=args.api))
    else:
        result = asyncio.run(place_call(args.url, args.input, args.output, api_key=args.api_key, events=events,
                                        duration=args.duration, session=session, headers=headers, pings=args.ping,
                                        primary_only=args.primary_only, api=args.api))
    print(json.dumps(result), flush=True)
    return 0
