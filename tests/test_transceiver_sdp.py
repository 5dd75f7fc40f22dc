"""Offer parsing and answer writing, against offers from a real aiortc peer and a Chromium-shaped offer."""

import asyncio

import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.rtcdtlstransport import RTCCertificate

from voxgate.transceiver.sdp import OfferError, build_answer, new_ice_pwd, parse_offer

CHROME_OFFER = """v=0\r
o=- 4611731400430051336 2 IN IP4 127.0.0.1\r
s=-\r
t=0 0\r
a=group:BUNDLE 0 1\r
a=extmap-allow-mixed\r
a=msid-semantic: WMS 5f5b\r
m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126\r
c=IN IP4 0.0.0.0\r
a=rtcp:9 IN IP4 0.0.0.0\r
a=ice-ufrag:Xk2d\r
a=ice-pwd:f9cbmo8vxYQd5VOnlJIU8f0Z\r
a=ice-options:trickle\r
a=fingerprint:sha-256 6B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08\r
a=setup:actpass\r
a=mid:0\r
a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r
a=sendrecv\r
a=msid:5f5b 4c1e\r
a=rtcp-mux\r
a=rtpmap:111 opus/48000/2\r
a=rtcp-fb:111 transport-cc\r
a=fmtp:111 minptime=10;useinbandfec=1\r
a=rtpmap:63 red/48000/2\r
a=rtpmap:9 G722/8000\r
a=rtpmap:0 PCMU/8000\r
a=rtpmap:8 PCMA/8000\r
a=rtpmap:13 CN/8000\r
a=rtpmap:110 telephone-event/48000\r
a=rtpmap:126 telephone-event/8000\r
a=ssrc:3923611133 cname:abc\r
m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r
c=IN IP4 0.0.0.0\r
a=ice-ufrag:Xk2d\r
a=ice-pwd:f9cbmo8vxYQd5VOnlJIU8f0Z\r
a=ice-options:trickle\r
a=fingerprint:sha-256 6B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08\r
a=setup:actpass\r
a=mid:1\r
a=sctp-port:5000\r
a=max-message-size:262144\r
"""


def answer_for(offer_text, candidates=(("127.0.0.1", 3478), ("::1", 3478))):
    offer = parse_offer(offer_text)
    fp = next(f for f in RTCCertificate.generateCertificate().getFingerprints() if f.algorithm == "sha-256")
    return offer, build_answer(offer, ufrag="A" * 32, pwd=new_ice_pwd(), fingerprint=fp,
                               candidates=list(candidates), ssrc=1234, session_id=1)


def test_tcp_candidates_are_passive_and_rank_below_every_udp_one():
    _, answer = answer_for(CHROME_OFFER, [("198.51.100.1", 3478, False), ("203.0.113.1", 3478, True),
                                          ("198.51.100.1", 443, False, "tcp"), ("203.0.113.1", 443, True, "tcp")])
    cands = [line.split() for line in answer.splitlines() if line.startswith("a=candidate:")]
    cands = cands[:len(cands) // 2]  # the same four in each m-section (BUNDLE)
    assert [(c[2], c[4], c[5]) for c in cands] == [("udp", "198.51.100.1", "3478"), ("udp", "203.0.113.1", "3478"),
                                                 ("tcp", "198.51.100.1", "443"), ("tcp", "203.0.113.1", "443")]
    assert all(c[-2:] == ["tcptype", "passive"] for c in cands[2:])
    prios = [int(c[3]) for c in cands]
    assert prios == sorted(prios, reverse=True) and min(prios[:2]) > max(prios[2:])  # UDP wins where it works


def test_chrome_offer():
    offer, answer = answer_for(CHROME_OFFER)
    assert offer.opus_pt == 111 and offer.mids == [("audio", "0"), ("application", "1")] and offer.sctp_port == 5000
    for line in ("a=ice-lite", "a=group:BUNDLE 0 1", "a=setup:passive", "a=rtcp-mux", "a=rtpmap:111 opus/48000/2",
                 "a=candidate:1 1 udp", "127.0.0.1 3478 typ host", "::1 3478 typ host", "a=end-of-candidates",
                 "a=ice-ufrag:" + "A" * 32, "m=application 3478 UDP/DTLS/SCTP webrtc-datachannel", "a=sctp-port:5000"):
        assert line in answer, line


def test_aiortc_accepts_our_answer():
    async def run():
        pc = RTCPeerConnection()
        pc.addTransceiver("audio")
        pc.createDataChannel("oai-events")
        await pc.setLocalDescription(await pc.createOffer())
        offer, answer = answer_for(pc.localDescription.sdp)
        await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        assert pc.signalingState == "stable"
        await pc.close()
        return offer

    offer = asyncio.run(run())
    assert offer.opus_pt == 96


@pytest.mark.parametrize("mutate,message", [
    (lambda s: "hello", "no v=0"),
    (lambda s: s.split("m=audio")[0] + "m=application" + s.split("m=application")[1], "no audio"),
    (lambda s: s.replace("a=rtpmap:111 opus/48000/2\r\n", ""), "payload type with no a=rtpmap"),
    (lambda s: "\r\n".join(l for l in s.replace("SAVPF 111 ", "SAVPF ").split("\r\n") if ":111 " not in l), "opus"),
    (lambda s: s.replace("a=fingerprint", "a=x-fingerprint"), "fingerprint"),
    (lambda s: s.replace("a=ice-pwd:f9cbmo8vxYQd5VOnlJIU8f0Z\r\n", ""), "ice-pwd"),
    (lambda s: s.replace("a=rtcp-mux\r\n", ""), "rtcp-mux"),
    (lambda s: s.replace("a=setup:actpass", "a=setup:passive"), "passive"),
])
def test_bad_offers_say_why(mutate, message):
    with pytest.raises(OfferError, match=message):
        parse_offer(mutate(CHROME_OFFER))
