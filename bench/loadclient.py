"""A light WebRTC load client for bench/transceiver.py: many calls from one process, little CPU each.

Each call is real on the wire: its own UDP socket, ICE checks with MESSAGE-INTEGRITY (voxgate.wire.stun; it
also answers a full ICE agent's checks), a DTLS-SRTP handshake (aiortc's RTCDtlsTransport through voxgate.transceiver.aiortc_glue), and
SRTP Opus at 50 packets/s. What makes it light: the Opus packets are encoded once from the WAV and replayed,
and received packets are counted, not decoded. Prints one JSON line.

    python bench/loadclient.py URL WAV SESSIONS SECONDS
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import secrets
import sys
import time

import aiohttp
import av
from aiortc.rtcdtlstransport import RTCCertificate, RTCDtlsParameters
from aiortc.rtcrtpparameters import RTCRtpCodecParameters, RTCRtpReceiveParameters
from aiortc.rtp import RtpPacket
from aiortc.sdp import SessionDescription

import common  # noqa: F401  (first: it puts src/ on the path)

from voxgate.client.load import ice_stun
from voxgate.transceiver import aiortc_glue
from voxgate.wire import stun

CERT = RTCCertificate.generateCertificate()
FP = next(f for f in CERT.getFingerprints() if f.algorithm == "sha-256")


def opus_packets(wav: str) -> list[bytes]:
    """The WAV as 20 ms Opus packets, encoded once."""
    enc = av.CodecContext.create("libopus", "w")
    enc.bit_rate, enc.format, enc.layout, enc.sample_rate = 32000, "s16", "mono", 48000
    res = av.AudioResampler(format="s16", layout="mono", rate=48000, frame_size=960)
    out = []
    with av.open(wav) as f:
        for frame in f.decode(audio=0):
            frame.pts = None
            for r in res.resample(frame):
                out += [bytes(p) for p in enc.encode(r)]
    return out


class Counter:
    def __init__(self):
        self.packets = 0

    def on_rtp(self, packet):
        self.packets += 1

    def on_rtcp(self, packet):
        pass

    def on_end(self):
        pass


class Call(asyncio.DatagramProtocol):
    def __init__(self, index: int):
        self.index = index
        self.ufrag = secrets.token_hex(4)
        self.pwd = secrets.token_hex(16)
        self.ice = aiortc_glue.IceTransport(lambda data: self.transport.sendto(data, self.remote), "controlling")
        self.remote = None
        self.ice_ok = asyncio.Event()
        self.counter = Counter()
        self.times = {}

    # --- socket
    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        if data and data[0] < 4:  # our check answered, or a full ICE agent's check of us
            ice_stun(data, addr, self.transport.sendto, self.pwd, self.ice_ok.set)
        else:
            self.ice.deliver(data, None)

    def offer(self) -> str:
        host, port = self.transport.get_extra_info("sockname")[:2]
        return "\r\n".join([
            "v=0", f"o=- {random.getrandbits(40)} 2 IN IP4 127.0.0.1", "s=-", "t=0 0", "a=group:BUNDLE 0",
            "m=audio 9 UDP/TLS/RTP/SAVPF 111", "c=IN IP4 0.0.0.0", f"a=ice-ufrag:{self.ufrag}", f"a=ice-pwd:{self.pwd}",
            f"a=candidate:1 1 udp 2130706431 {host} {port} typ host", "a=end-of-candidates",
            f"a=fingerprint:sha-256 {FP.value}", "a=setup:actpass", "a=mid:0", "a=sendrecv", "a=rtcp-mux",
            "a=rtpmap:111 opus/48000/2", "a=fmtp:111 minptime=10;useinbandfec=1",
            f"a=ssrc:{random.getrandbits(31) + 1} cname:bench", "",
        ])

    async def connect(self, http, url: str):
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self, local_addr=("127.0.0.1", 0))
        t0 = time.monotonic()
        async with http.post(url + "/v1/realtime/calls", data=self.offer(),
                             headers={"Content-Type": "application/sdp"}) as resp:
            assert resp.status in (200, 201), await resp.text()
            answer = SessionDescription.parse(await resp.text())
        self.times["answer"] = time.monotonic() - t0
        m = answer.media[0]
        cand = next(c for c in m.ice_candidates if c.protocol.lower() == "udp" and ":" not in c.ip)
        self.remote = (cand.ip, cand.port)
        self.pt = next(c.payloadType for c in m.rtp.codecs if c.mimeType.lower() == "audio/opus")
        user = f"{m.ice.usernameFragment}:{self.ufrag}"
        while not self.ice_ok.is_set():
            req = stun.build(stun.BINDING_REQUEST, os.urandom(12),
                             [stun.attr_username(user), stun.attr_priority(0x6E0001FF),
                              stun.attr_ice_controlling(random.getrandbits(63)), stun.attr_use_candidate()],
                             integrity_key=m.ice.password.encode())
            self.transport.sendto(req, self.remote)
            try:
                await asyncio.wait_for(self.ice_ok.wait(), 0.05)
            except asyncio.TimeoutError:
                pass
        self.times["ice"] = time.monotonic() - t0
        self.dtls = aiortc_glue.dtls_transport(self.ice, CERT, "client" if m.dtls.role == "server" else "server")
        await self.dtls.start(RTCDtlsParameters(fingerprints=m.dtls.fingerprints))
        assert self.dtls.state == "connected", self.dtls.state
        self.times["dtls"] = time.monotonic() - t0
        codec = RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2, payloadType=self.pt)
        aiortc_glue.receive_rtp(self.dtls, self.counter, RTCRtpReceiveParameters(codecs=[codec]))
        self.ssrc, self.seq, self.ts = random.getrandbits(31) + 1, random.getrandbits(16), random.getrandbits(31)

    async def send(self, payload: bytes, marker: bool):
        pkt = RtpPacket(payload_type=self.pt, marker=int(marker), sequence_number=self.seq, timestamp=self.ts,
                        ssrc=self.ssrc, payload=payload)
        self.seq = (self.seq + 1) & 0xFFFF
        self.ts = (self.ts + 960) & 0xFFFFFFFF
        await aiortc_glue.send_rtp(self.dtls, pkt.serialize())


async def main(url, wav, sessions, seconds):
    packets = opus_packets(wav)
    calls = [Call(i) for i in range(sessions)]
    async with aiohttp.ClientSession() as http:
        # connect in waves of 5, as calls would arrive, not all in one instant
        for i in range(0, sessions, 5):
            await asyncio.gather(*[c.connect(http, url) for c in calls[i:i + 5]])
        ready = time.monotonic()
        print(json.dumps({"event": "connected", "sessions": sessions}), flush=True)
        loop = asyncio.get_running_loop()
        start, tick = loop.time(), 0
        window = None
        while True:
            tick += 1
            delay = start + tick * 0.02 - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            payload = packets[tick % len(packets)]
            for c in calls:
                await c.send(payload, tick % len(packets) == 0)
            elapsed = time.monotonic() - ready
            if window is None and elapsed >= 2.0:  # warm-up over: the measured window starts
                window = (time.monotonic(), sum(c.counter.packets for c in calls), tick)
                print(json.dumps({"event": "window_start"}), flush=True)
            if window and time.monotonic() - window[0] >= seconds:
                break
        received = sum(c.counter.packets for c in calls) - window[1]
        sent = (tick - window[2]) * sessions
        for c in calls:
            await c.dtls.stop()
            c.transport.close()
    setup = sorted(c.times["dtls"] * 1000 for c in calls)
    print(json.dumps({"event": "done", "sessions": sessions, "sent": sent, "received": received,
                      "echo_ratio": received / max(sent, 1), "window_s": time.monotonic() - window[0],
                      "setup_ms_p50": setup[len(setup) // 2], "setup_ms_max": setup[-1],
                      "ice_ms_p50": sorted(c.times["ice"] * 1000 for c in calls)[sessions // 2]}), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])))
