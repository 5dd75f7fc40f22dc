"""A phone call's RTP, sans-IO: the jitter buffer, DTMF as trunks send it, latching, codecs; the webhook signature
as the official SDK checks it."""

import json
import math
import struct

import numpy as np
import pytest
from aiortc.rtp import RtpPacket

from voxgate.sip import webhook
from voxgate.sip.media import DEPTH, PhoneIn, PhoneOut
from voxgate.sip.sdp import Codec
from voxgate.audio import AvCodec

PCMU = Codec(0, "PCMU", 8000)
G722 = Codec(9, "G722", 8000)
SRC = ("192.0.2.10", 30000)


def tone(rate, ms=20, hz=440, amp=8000, start=0):
    n = rate * ms // 1000
    return struct.pack(f"<{n}h", *(int(amp * math.sin(2 * math.pi * hz * (start + i) / rate)) for i in range(n)))


def rtp(seq, payload, pt=0, ts=None, marker=0, ssrc=7):
    return RtpPacket(payload_type=pt, sequence_number=seq & 0xFFFF, timestamp=(ts if ts is not None else seq * 160),
                     ssrc=ssrc, marker=marker, payload=payload).serialize()


def test_jitter_buffer_reorders_and_fills_a_lost_packet_with_silence():
    enc = AvCodec("pcm_mulaw", 8000)
    inp = PhoneIn(8000, PCMU, None)  # at the codec's rate: no resampler holding samples back
    loud = enc.encode(tone(8000))
    frames = []
    for seq in [100, 102, 101, 103]:  # one reordered
        frames += inp.receive(rtp(seq, loud), SRC, 0)[0]
    assert len(frames) == 4 and inp.lost == 0 and all(len(f) == 320 for f in frames)
    assert len(inp.receive(rtp(104, loud), SRC, 0)[0]) == 1
    # 105 is lost: 106.. wait behind it until more than DEPTH are held, then its 20 ms is given up as silence
    for seq in range(106, 106 + DEPTH):
        assert inp.receive(rtp(seq, loud), SRC, 0)[0] == []
    out = inp.receive(rtp(106 + DEPTH, loud), SRC, 0)[0]
    assert inp.lost == 1 and len(out) == 1 + DEPTH + 1 and out[0] == b"\0" * 320
    late = inp.receive(rtp(101, loud), SRC, 0)[0]
    assert late == [] and inp.late == 1


def test_dtmf_one_key_per_event_with_or_without_the_marker_bit():
    inp = PhoneIn(16000, PCMU, 101)
    keys = []
    for marker in (1, 0):  # a trunk that omits the marker bit still gives one key per event
        ts = 8000 if marker else 16000
        digit = 5 if marker else 11
        for i, end in enumerate([0, 0, 0, 1, 1, 1]):  # updates, then the end packet three times (RFC 4733 §2.5.1.4)
            payload = bytes([digit, (end << 7) | 10]) + struct.pack(">H", 160 * (i + 1))
            keys += inp.receive(rtp(200 + i + ts // 100, payload, pt=101, ts=ts, marker=marker if i == 0 else 0),
                                SRC, 0)[1]
    assert [k for k, _ in keys] == ["5", "#"]


def test_latching_follows_the_first_source_and_ignores_strangers():
    inp = PhoneIn(16000, PCMU, None)
    enc = AvCodec("pcm_mulaw", 8000)
    inp.receive(rtp(1, enc.encode(tone(8000))), ("10.0.0.5", 4000), 0.0)
    assert inp.source == ("10.0.0.5", 4000)
    assert inp.receive(rtp(2, enc.encode(tone(8000))), ("203.0.113.9", 9), 0.1) == ([], [])
    assert inp.foreign == 1 and inp.source == ("10.0.0.5", 4000)
    inp.receive(rtp(3, enc.encode(tone(8000))), ("203.0.113.9", 9), 5.0)  # the old source went quiet: relatch
    assert inp.source == ("203.0.113.9", 9)


@pytest.mark.parametrize("codec,name,rate", [(PCMU, "pcm_mulaw", 8000), (Codec(8, "PCMA", 8000), "pcm_alaw", 8000),
                                             (G722, "g722", 16000)])
def test_out_paces_at_160_per_frame_and_round_trips(codec, name, rate):
    out = PhoneOut(16000, codec, 99)
    out.write(tone(16000, ms=240))  # the resampler keeps a few ms back
    packets, now = [], 100.0
    while len(packets) < 10 and now < 101:
        data = out.next_packet(now)
        if data:
            packets.append(RtpPacket.parse(data))
        now += 0.005
    assert len(packets) == 10 and packets[0].marker == 1
    assert [(p.timestamp - packets[0].timestamp) for p in packets] == [160 * i for i in range(10)]
    assert all(len(p.payload) == 160 for p in packets)  # 64 kbit/s, all three
    dec = AvCodec(name, rate)
    pcm = np.frombuffer(b"".join(dec.decode(p.payload) for p in packets), np.int16)
    assert 3000 < np.sqrt((pcm.astype(float) ** 2).mean()) < 8000  # the tone, not noise or silence


def test_the_webhook_signature_is_what_the_openai_sdk_verifies():
    openai = pytest.importorskip("openai")
    secret = webhook.new_secret()
    event = webhook.incoming_event("rtc_abc", [{"name": "From", "value": "<sip:+15550001@trunk>;tag=1"}])
    body = json.dumps(event).encode()
    import time

    ts = int(time.time())
    headers = {"webhook-id": event["id"], "webhook-timestamp": str(ts),
               "webhook-signature": webhook.sign(secret, event["id"], ts, body)}
    client = openai.OpenAI(api_key="unused", webhook_secret=secret)
    got = client.webhooks.unwrap(body, headers)
    assert got.type == "realtime.call.incoming" and got.data.call_id == "rtc_abc"
    assert got.data.sip_headers[0].name == "From"
    assert webhook.verify(secret, headers, body)
    with pytest.raises(openai.InvalidWebhookSignatureError):
        client.webhooks.unwrap(body, headers, secret=webhook.new_secret())
    old = dict(headers, **{"webhook-timestamp": str(ts - 600)})
    old["webhook-signature"] = webhook.sign(secret, event["id"], ts - 600, body)
    assert not webhook.verify(secret, old, body)
    with pytest.raises(openai.InvalidWebhookSignatureError):
        client.webhooks.unwrap(body, old)


def test_a_phone_line_carries_a_packet_every_20_ms_speech_or_not():
    """Carriers and SBCs hang up on a call without media, and jitter buffers resynchronise at every gap: the agent's
    RTP on a phone call is continuous (silence between its words), one clock, the marker bit on each talk spurt."""
    out = PhoneOut(16000, PCMU, 99)
    packets, now = [], 100.0

    def run(seconds):
        nonlocal now
        end = now + seconds
        while now < end:
            data = out.next_packet(now)
            if data:
                packets.append(RtpPacket.parse(data))
            now += 0.005

    run(0.4)  # nothing to say yet
    out.write(tone(16000, ms=200))
    out.flush()
    run(0.5)  # the words, then silence again
    assert 45 <= len(packets) <= 47, len(packets)  # 0.9 s of 20 ms packets (one may go 20 ms early)
    assert [p.timestamp - packets[0].timestamp for p in packets] == [160 * i for i in range(len(packets))]
    assert [p.sequence_number - packets[0].sequence_number for p in packets] == list(range(len(packets)))
    loud = [i for i, p in enumerate(packets) if max(p.payload) - min(p.payload) > 40]
    assert loud and loud == list(range(loud[0], loud[-1] + 1)), loud  # the tone: one run of packets
    assert [i for i, p in enumerate(packets) if p.marker] == [0, loud[0]]  # the stream's start and the spurt's
    silence = AvCodec("pcm_mulaw", 8000).decode(packets[-1].payload)
    assert not any(silence), "silence between words decodes to zeros"
