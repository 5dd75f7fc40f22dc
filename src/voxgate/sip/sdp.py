"""The SDP of a phone call: one audio stream of plain RTP (RFC 3264 offer/answer, RFC 4566), parsed by aiortc.

A trunk offers a list of payload types; the answer keeps the first one we code (in the offer's order: the caller's
preference), plus ``telephone-event`` (RFC 4733) when offered, and mirrors the direction (hold: ``sendonly`` or
``inactive`` offered, or the old ``c=0.0.0.0``).
"""

from __future__ import annotations

import dataclasses

from aiortc.sdp import SessionDescription

# static payload types (RFC 3551) a trunk may offer without an rtpmap line
STATIC = {0: ("PCMU", 8000), 8: ("PCMA", 8000), 9: ("G722", 8000), 13: ("CN", 8000)}
CODECS = ("PCMU", "PCMA", "G722")  # what we code (libavcodec, sip/media.py)
ANSWER_DIRECTION = {"sendrecv": "sendrecv", "sendonly": "recvonly", "recvonly": "sendonly", "inactive": "inactive"}


class SdpError(ValueError):
    """An offer we cannot answer: the SIP layer answers 488 Not Acceptable Here with this reason."""


@dataclasses.dataclass
class Codec:
    pt: int
    name: str  # PCMU, PCMA, G722
    clock: int  # the RTP clock rate (8000 for G.722 too, RFC 3551's historical quirk)


@dataclasses.dataclass
class AudioOffer:
    host: str
    port: int
    codecs: list[Codec]  # the ones we can code, in the offer's order
    offered: list[str]  # every payload the offer named, for the error message
    dtmf_pt: int | None
    direction: str  # the offer's: sendrecv, sendonly, recvonly, inactive
    rtcp_mux: bool

    @property
    def on_hold(self) -> bool:
        """The caller put us on hold: it sends nothing it wants answered, or asks us to send nothing."""
        return self.direction in ("sendonly", "inactive") or self.host in ("0.0.0.0", "::")


def parse(body: bytes) -> AudioOffer:
    try:
        desc = SessionDescription.parse(body.decode())
    except Exception as exc:  # aiortc raises whatever its line parsing meets
        raise SdpError(f"the SDP does not parse: {exc}") from None
    audio = next((m for m in desc.media if m.kind == "audio" and m.port), None)
    if audio is None:
        raise SdpError("the SDP has no audio stream")
    if "SAVP" in (audio.profile or "") or "DTLS" in (audio.profile or ""):
        raise SdpError(f"{audio.profile} is not offered here: plain RTP/AVP only (SRTP over SIP is not supported)")
    host = audio.host or desc.host
    if not host:
        raise SdpError("the SDP has no connection address (c=)")
    named = {c.payloadType: (c.mimeType.split("/", 1)[1], c.clockRate) for c in audio.rtp.codecs}
    codecs, offered, dtmf = [], [], None
    for pt in audio.fmt:
        pt = int(pt)
        name, clock = named.get(pt) or STATIC.get(pt, (f"pt {pt}", 0))
        offered.append(name)
        if name.lower() == "telephone-event" and clock == 8000 and dtmf is None:
            dtmf = pt
        elif name.upper() in CODECS and clock == 8000:
            codecs.append(Codec(pt, name.upper(), clock))
    return AudioOffer(host=host, port=audio.port, codecs=codecs, offered=offered, dtmf_pt=dtmf,
                      direction=audio.direction or "sendrecv", rtcp_mux=bool(audio.rtcp_mux))


def choose(offer: AudioOffer) -> Codec:
    if not offer.codecs:
        raise SdpError(f"no codec in common: offered {', '.join(offer.offered) or 'none'}; we take "
                       f"{', '.join(CODECS)}")
    return offer.codecs[0]


def answer(offer: AudioOffer, codec: Codec, host: str, port: int, session_id: int, version: int) -> bytes:
    """The answer to ``offer``, receiving on ``host:port`` (RTCP on ``port + 1``, or muxed when offered)."""
    family = "IP6" if ":" in host else "IP4"
    pts = [codec.pt] + ([offer.dtmf_pt] if offer.dtmf_pt is not None else [])
    lines = ["v=0", f"o=voxgate {session_id} {version} IN {family} {host}", "s=voxgate",
             f"c=IN {family} {host}", "t=0 0", f"m=audio {port} RTP/AVP {' '.join(map(str, pts))}",
             f"a=rtpmap:{codec.pt} {codec.name}/{codec.clock}"]
    if offer.dtmf_pt is not None:
        lines += [f"a=rtpmap:{offer.dtmf_pt} telephone-event/8000", f"a=fmtp:{offer.dtmf_pt} 0-15"]
    lines += ["a=ptime:20", "a=" + ANSWER_DIRECTION.get(offer.direction, "sendrecv")]
    if offer.rtcp_mux:
        lines.append("a=rtcp-mux")
    return ("\r\n".join(lines) + "\r\n").encode()
