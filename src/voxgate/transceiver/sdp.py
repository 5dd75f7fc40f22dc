"""Read a WebRTC offer, write the ICE-lite answer (parsing with aiortc.sdp, writing by hand).

The answer is fixed in shape: ICE-lite, every candidate included (no trickle),
DTLS passive (the browser starts the handshake as soon as its check succeeds),
Opus 48000/2 with rtcp-mux, and a BUNDLE of the audio and the data channel,
mirroring the offer's mids and order. Anything we cannot answer raises
``OfferError`` with a reason that the HTTP layer returns as a 400.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from aiortc.rtcdtlstransport import RTCDtlsFingerprint
from aiortc.sdp import SessionDescription


class OfferError(ValueError):
    def __init__(self, message: str, param: str = "sdp"):
        super().__init__(message)
        self.param = param


@dataclass
class Offer:
    mids: list  # (kind, mid) in offer order: kind is "audio", "application" or "rejected:<kind>"
    audio_mid: str
    opus_pt: int
    opus_fmtp: str
    client_ssrc: int | None
    remote_ufrag: str
    remote_pwd: str
    fingerprints: list  # RTCDtlsFingerprint
    setup: str
    sctp_port: int | None
    app_mid: str | None
    audio_direction: str


MAX_OFFER = 64 * 1024  # characters: a browser's offer is 2-6 KB
_ICE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/")


def _check_ice_field(name: str, value: str, lo: int, hi: int) -> None:
    if not lo <= len(value) <= hi or not set(value) <= _ICE_CHARS:
        raise OfferError(f"a={name} must be {lo}-{hi} ice-chars (RFC 8839), got {len(value)} characters")


def parse_offer(text: str) -> Offer:
    if not text or "v=0" not in text:
        raise OfferError("the body is not an SDP offer (no v=0 line)")
    try:
        desc = SessionDescription.parse(text)
    except (KeyError, StopIteration):
        raise OfferError("unparseable SDP: an a=fmtp or a=rtcp-fb line names a payload type with no a=rtpmap") from None
    except Exception as exc:  # aiortc raises several types on bad input
        raise OfferError(f"unparseable SDP ({type(exc).__name__}: {exc})") from None
    mids, audio, app, audio_mid, app_mid = [], None, None, None, None
    for i, m in enumerate(desc.media):
        mid = m.rtp.muxId or str(i)
        if m.kind == "audio" and audio is None:
            audio, audio_mid = m, mid
            mids.append(("audio", mid))
        elif m.kind == "application" and app is None and (m.sctp_port is not None or "webrtc-datachannel" in m.fmt):
            app, app_mid = m, mid
            mids.append(("application", mid))
        else:
            mids.append((f"rejected:{m.kind}", mid, m.profile, m.fmt))
    if audio is None:
        raise OfferError("the offer has no audio m-line")
    opus = next((c for c in audio.rtp.codecs if c.mimeType.lower() == "audio/opus" and c.clockRate == 48000), None)
    if opus is None:
        raise OfferError("the offer's audio does not include opus/48000/2")
    if audio.ice is None or not audio.ice.usernameFragment or not audio.ice.password:
        raise OfferError("the offer has no a=ice-ufrag / a=ice-pwd")
    if audio.dtls is None or not audio.dtls.fingerprints:
        raise OfferError("the offer has no a=fingerprint (DTLS-SRTP is required)")
    if not audio.rtcp_mux:
        raise OfferError("the offer does not allow a=rtcp-mux")
    if not 0 <= opus.payloadType <= 127 or (64 <= opus.payloadType <= 95):
        raise OfferError(f"opus payload type {opus.payloadType} is not a dynamic RTP payload type (96-127)")
    # RFC 8839: ice-ufrag 4-256 ice-chars, ice-pwd 22-256; their bytes ride in every STUN check's USERNAME
    _check_ice_field("ice-ufrag", audio.ice.usernameFragment, 4, 256)
    _check_ice_field("ice-pwd", audio.ice.password, 22, 256)
    if len(text) > MAX_OFFER:
        raise OfferError(f"the offer is longer than {MAX_OFFER} characters")
    role = getattr(audio.dtls, "role", "auto")
    setup = {"auto": "actpass", "client": "active", "server": "passive"}.get(role, "actpass")
    if setup == "passive":
        raise OfferError("the offer's a=setup:passive is not supported (offer actpass or active)")
    fmtp = ";".join(f"{k}={v}" if v is not None else k for k, v in (opus.parameters or {}).items())
    ssrc = audio.ssrc[0].ssrc if audio.ssrc else None
    return Offer(
        mids=mids, audio_mid=audio_mid, opus_pt=opus.payloadType,
        opus_fmtp=fmtp, client_ssrc=ssrc, remote_ufrag=audio.ice.usernameFragment, remote_pwd=audio.ice.password,
        fingerprints=list(audio.dtls.fingerprints), setup=setup,
        sctp_port=(app.sctp_port or 5000) if app is not None else None,
        app_mid=app_mid,
        audio_direction=audio.direction or "sendrecv",
    )


def new_ice_pwd() -> str:
    return secrets.token_urlsafe(24).replace("-", "+").replace("_", "/")  # ice-char only, 32 chars


_ANSWER_DIRECTION = {"sendrecv": "sendrecv", "sendonly": "recvonly", "recvonly": "sendonly", "inactive": "inactive"}


def build_answer(offer: Offer, *, ufrag: str, pwd: str, fingerprint: RTCDtlsFingerprint,
                 candidates: list[tuple], ssrc: int, session_id: int) -> str:
    """``candidates``: (host, port), (host, port, backup) or (host, port, backup, "tcp"); earlier ones rank higher,
    a backup (a relay of another region, for failover without a new offer) ranks below every other UDP candidate by
    its type preference, and a TCP one (a relay's ICE-TCP port, RFC 6544 passive) below every UDP one: UDP wins
    wherever it gets through."""
    cand_lines = []
    for i, (host, port, *rest) in enumerate(candidates):
        backup = bool(rest and rest[0])
        tcp = len(rest) > 1 and rest[1] == "tcp"
        kind = (80 if backup else 90) if tcp else (100 if backup else 126)
        prio = (kind << 24) | ((65535 - i) << 8) | 255
        if tcp:
            cand_lines.append(f"a=candidate:{i + 1} 1 tcp {prio} {host} {port} typ host tcptype passive")
        else:
            cand_lines.append(f"a=candidate:{i + 1} 1 udp {prio} {host} {port} typ host")
    cand_lines.append("a=end-of-candidates")
    first_host, first_port = candidates[0][:2]
    ip_kind = "IP6" if ":" in first_host else "IP4"
    bundle = " ".join(m[1] for m in offer.mids if not m[0].startswith("rejected:"))
    lines = [
        "v=0",
        f"o=- {session_id} 1 IN IP4 0.0.0.0",
        "s=voxgate",
        "t=0 0",
        f"a=group:BUNDLE {bundle}",
        "a=ice-lite",
        "a=msid-semantic:WMS *",
    ]
    common = [
        f"c=IN {ip_kind} {first_host}",
        *cand_lines,
        f"a=ice-ufrag:{ufrag}",
        f"a=ice-pwd:{pwd}",
        "a=ice-options:ice2",
        f"a=fingerprint:{fingerprint.algorithm} {fingerprint.value}",
        "a=setup:passive",
    ]
    for kind, mid, *rest in offer.mids:
        if kind == "audio":
            lines += [f"m=audio {first_port} UDP/TLS/RTP/SAVPF {offer.opus_pt}", *common, f"a=mid:{mid}",
                      f"a={_ANSWER_DIRECTION.get(offer.audio_direction, 'sendrecv')}", "a=rtcp-mux",
                      f"a=rtpmap:{offer.opus_pt} opus/48000/2",
                      f"a=fmtp:{offer.opus_pt} minptime=10;useinbandfec=1",
                      "a=msid:voxgate agent-audio",
                      f"a=ssrc:{ssrc} cname:voxgate", f"a=ssrc:{ssrc} msid:voxgate agent-audio"]
        elif kind == "application":
            lines += [f"m=application {first_port} UDP/DTLS/SCTP webrtc-datachannel", *common, f"a=mid:{mid}",
                      "a=sctp-port:5000", "a=max-message-size:262144"]
        else:  # rejected media: port 0, same kind and profile, no attributes beyond mid
            profile, fmt = rest
            lines += [f"m={kind.split(':', 1)[1]} 0 {profile} {' '.join(str(f) for f in fmt)}",
                      f"c=IN {ip_kind} 0.0.0.0", f"a=mid:{mid}", "a=inactive"]
    return "\r\n".join(lines) + "\r\n"
