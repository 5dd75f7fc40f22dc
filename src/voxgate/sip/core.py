"""The SIP user agent server, sans-IO: datagrams or stream messages, commands and time in; typed actions out.

RFC 3261's server side for calls into an agent, as h11 and aioquic do for their protocols: the shell
(``sip/server.py``) owns the sockets and the clock and carries out ``Send``; the application (the webhook flow or
the demo's auto-accept) reacts to ``Incoming``, ``Confirmed``, ``Updated``, ``Dtmf``, ``ReferStatus`` and ``Ended``
and drives a call with ``ring``, ``accept``, ``reject``, ``refer`` and ``hangup``.

What it does:
- INVITE → 100 at once; the allowlist (403), the per-source rate (503 + Retry-After), capacity (486), digest
  auth (401) and the SDP (488 with a Warning) checked before a call exists; a retransmitted INVITE gets the last
  response again, never a second call.
- A 2xx is retransmitted (T1 doubling to T2) until its ACK, and the call hung up with a BYE after 64·T1 without one
  (§13.3.1.4); a non-2xx final is retransmitted on UDP until its ACK (Timer G/H, §17.2.1).
- CANCEL before the final response → 200 to the CANCEL, 487 to the INVITE; BYE → 200; OPTIONS → 200 (Allow,
  Accept); a request in a dialog we do not know → 481; re-INVITE answered from the call's media (hold: sendonly
  or inactive offered → recvonly or inactive answered); INFO with ``application/dtmf-relay`` → ``Dtmf``.
- Our own requests in the dialog (BYE, REFER) are retransmitted on UDP (Timer E/F) until answered; NOTIFYs of a
  REFER (RFC 3515, ``message/sipfrag``) become ``ReferStatus``.
- Anything malformed is answered 400 with the reason when it can be answered, else dropped; it is counted either
  way and never ends a call.
"""

from __future__ import annotations

import dataclasses
import secrets
from typing import Union

from sipmessage import Address, Request, Response

from . import message, sdp
from .message import SipError
from .policy import Policy

T1, T2 = 0.5, 4.0
TIMEOUT = 64 * T1
ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, NOTIFY, REFER"
SUPPORTED: set[str] = set()  # option tags we implement (none of 100rel, timer...: a Require of them gets 420)


@dataclasses.dataclass(frozen=True)
class Peer:
    """Where a message came from, and so where its answer goes: ``conn`` names a TCP/TLS connection."""

    transport: str  # udp, tcp, tls
    host: str
    port: int
    conn: int | None = None

    @property
    def text(self) -> str:
        return f"{self.host}:{self.port}"


@dataclasses.dataclass
class Call:
    id: str  # rtc_…, the id the Realtime API's calls endpoints take
    sip_call_id: str
    peer: Peer
    invite: Request
    offer: sdp.AudioOffer
    codec: sdp.Codec
    local_tag: str
    remote_tag: str
    remote_target: str  # the Contact URI: where our requests in the dialog are addressed
    sip_headers: list[dict]
    created: float
    state: str = "incoming"  # incoming, ringing, accepted (200 sent), confirmed (ACKed), ending, ended
    media: tuple[str, int] | None = None  # our RTP address, once accepted
    sdp_version: int = 1
    local_cseq: int = dataclasses.field(default_factory=lambda: secrets.randbelow(10000) + 1)
    remote_cseq: int = 0
    final: bytes | None = None  # the final response to the INVITE (or re-INVITE) awaiting its ACK
    final_code: int = 0
    final_cseq: int = 0
    final_due: float = 0.0
    final_interval: float = T1
    final_deadline: float = 0.0
    last_provisional: bytes | None = None
    ring_deadline: float | None = None  # an app that has not answered by then: 480 (``ring``'s timeout)

    @property
    def on_hold(self) -> bool:
        return self.offer.on_hold


@dataclasses.dataclass
class _Outgoing:
    """A request of ours in a dialog, retransmitted on UDP until a final response (Timer E/F)."""

    call: Call
    method: str
    cseq: int
    data: bytes
    due: float
    interval: float
    deadline: float


@dataclasses.dataclass
class Send:
    data: bytes
    peer: Peer


@dataclasses.dataclass
class Incoming:
    call: Call


@dataclasses.dataclass
class Confirmed:
    call: Call


@dataclasses.dataclass
class Updated:
    """A re-INVITE changed the call's media (hold, resume, a new address): ``call.offer`` is the new offer."""

    call: Call


@dataclasses.dataclass
class Dtmf:
    call: Call
    digit: str
    duration_ms: int


@dataclasses.dataclass
class ReferStatus:
    """The transfer's progress: the REFER's own answer (202…), then each NOTIFY's sipfrag status."""

    call: Call
    status: int
    final: bool


@dataclasses.dataclass
class Ended:
    call: Call
    reason: str  # remote_hangup, cancelled, rejected, hangup, no_ack, transferred, timeout


Action = Union[Send, Incoming, Confirmed, Updated, Dtmf, ReferStatus, Ended]


class NotRinging(ValueError):
    """The call is no longer waiting to be answered (answered, cancelled, ended)."""


class NotAnswered(ValueError):
    """The command needs an answered call."""


class BadRequestValue(ValueError):
    """A command's value is not one SIP allows (a status code, a URI)."""


class SipCore:
    def __init__(self, policy: Policy | None = None, contact: dict[str, tuple[str, int]] | None = None,
                 new_id=None):
        self.policy = policy or Policy()
        # call ids: the transceiver's fleet scheme (steering.placement.call_id), so any transceiver routes their URLs
        self.new_id = new_id or (lambda: "rtc_" + secrets.token_hex(12))
        self.contact = contact or {}  # transport -> the (host, port) we listen on, for Contact and Via
        self.calls: dict[str, Call] = {}  # by our id
        self._by_dialog: dict[tuple[str, str], Call] = {}  # (Call-ID, our tag) -> call
        self._by_invite: dict[tuple[str, str, int], Call] = {}  # (Call-ID, top Via branch, CSeq) -> the call
        self._outgoing: dict[tuple[str, int], _Outgoing] = {}  # (Call-ID, CSeq) -> our request
        self._answered: dict[tuple[str, str, str], tuple[bytes, float]] = {}  # non-INVITE retransmissions
        self.counters = {"malformed": 0, "answered_400": 0, "forbidden": 0, "rate_limited": 0, "unauthorized": 0,
                         "busy": 0, "not_acceptable": 0, "no_dialog": 0, "ringing_full": 0,
                         "connection_limit": 0, "connection_timeout": 0}

    def set_contact(self, contact: dict[str, tuple[str, int]]) -> None:
        """Where we listen, as our Contact and Via say it (known once the listeners are bound)."""
        self.contact = dict(contact)

    def count(self, what: str) -> None:
        """A refusal the shell made (a connection over its limit, one that sent nothing, a malformed stream)."""
        self.counters[what] += 1

    # ------------------------------------------------------------- input
    def receive(self, data: bytes, peer: Peer, now: float) -> list[Action]:
        """One datagram (UDP) or one framed message (TCP/TLS)."""
        if not data.strip():  # a keep-alive
            return []
        try:
            msg = message.parse(data)
        except SipError as exc:
            self.counters["malformed"] += 1
            if exc.partial is None:
                return []
            self.counters["answered_400"] += 1
            return [Send(message.response(exc.partial, 400, headers={"Warning": _warning(str(exc))}), peer)]
        if isinstance(msg, Response):
            return self._on_response(msg, now)
        return self._on_request(msg, peer, now)

    def _reply(self, req: Request, code: int, peer: Peer, **kw) -> Send:
        return Send(message.response(req, code, received=peer.text, **kw), peer)

    def _on_request(self, req: Request, peer: Peer, now: float) -> list[Action]:
        method = req.method
        if method == "ACK":
            return self._on_ack(req, now)
        mf = req.headers.get("Max-Forwards")
        if mf is not None and int(mf) == 0 and method != "OPTIONS":
            return [self._reply(req, 483, peer)]
        cached = self._answered.get(self._txn(req))
        if cached is not None:  # a retransmission of a request we answered: the same answer again
            return [Send(cached[0], peer)]
        if method == "INVITE":
            return self._on_invite(req, peer, now)
        if method == "CANCEL":
            return self._on_cancel(req, peer, now)
        if method == "OPTIONS":
            return self._answer(req, peer, now, 200, headers={"Allow": ALLOW, "Accept": "application/sdp",
                                                              "Supported": ""})
        call = self._dialog(req)
        if call is None:
            if method in ("BYE", "INFO", "NOTIFY", "UPDATE", "REFER", "PRACK"):
                self.counters["no_dialog"] += 1
                return self._answer(req, peer, now, 481)
            return self._answer(req, peer, now, 405, headers={"Allow": ALLOW})
        call.remote_cseq = max(call.remote_cseq, req.cseq.sequence)
        if method == "BYE":
            out = self._answer(req, peer, now, 200)
            return out + self._end(call, "remote_hangup")
        if method == "INFO":
            out = self._answer(req, peer, now, 200)
            digit = _dtmf_relay(req)
            return out + ([Dtmf(call, *digit)] if digit else [])
        if method == "NOTIFY":
            out = self._answer(req, peer, now, 200)
            status = _sipfrag_status(req.body)
            if status is None:
                return out
            final = status >= 200 or "terminated" in (req.headers.get("Subscription-State") or "")
            out.append(ReferStatus(call, status, final))
            if final and 200 <= status < 300:  # the caller reached the transfer target: our leg is done
                out += self.hangup(call, now, reason="transferred")
            return out
        return self._answer(req, peer, now, 405, headers={"Allow": ALLOW})

    def _answer(self, req: Request, peer: Peer, now: float, code: int, **kw) -> list[Action]:
        """Answer a non-INVITE request, remembered for its retransmissions (Timer J: 64·T1)."""
        send = self._reply(req, code, peer, **kw)
        self._answered[self._txn(req)] = (send.data, now + TIMEOUT)
        return [send]

    @staticmethod
    def _txn(req: Request) -> tuple[str, str, str]:
        return (req.call_id, req.via[0].parameters.get("branch") or "", str(req.cseq))

    def _dialog(self, req: Request) -> Call | None:
        tag = req.to_address.parameters.get("tag")
        call = self._by_dialog.get((req.call_id, tag or ""))
        if call is None or call.state == "ended":
            return None
        return call

    # ------------------------------------------------------------- INVITE
    def _on_invite(self, req: Request, peer: Peer, now: float) -> list[Action]:
        key = (req.call_id, req.via[0].parameters.get("branch") or "", req.cseq.sequence)
        known = self._by_invite.get(key)
        if known is not None:  # retransmitted: the last thing we said about it
            again = known.final or known.last_provisional
            return [Send(again, peer)] if again else []
        if "tag" in req.to_address.parameters:
            return self._on_reinvite(req, peer, now)
        out: list[Action] = [self._reply(req, 100, peer)]
        if not self.policy.allowed(peer.host):
            self.counters["forbidden"] += 1
            return out + [self._final_stateless(req, peer, now, 403, "this address may not call here")]
        unsupported = [t for t in req.require if t not in SUPPORTED]
        if unsupported:
            return out + [self._final_stateless(req, peer, now, 420, None, {"Unsupported": ", ".join(unsupported)})]
        if not self.policy.authorized(req, now):
            self.counters["unauthorized"] += 1
            return out + [self._final_stateless(req, peer, now, 401, None,
                                                [("WWW-Authenticate", c) for c in self.policy.challenge(now)])]
        if not self.policy.take(peer.host, now):
            self.counters["rate_limited"] += 1
            return out + [self._final_stateless(req, peer, now, 503, "too many calls from this address",
                                                {"Retry-After": "5"})]
        if sum(1 for c in self.calls.values() if c.state != "ended") >= self.policy.max_calls:
            self.counters["busy"] += 1
            return out + [self._final_stateless(req, peer, now, 486, "at capacity")]
        if sum(1 for c in self.calls.values() if c.state in ("incoming", "ringing")) >= self.policy.max_ringing:
            self.counters["ringing_full"] += 1
            return out + [self._final_stateless(req, peer, now, 503, "too many calls waiting to be answered",
                                                {"Retry-After": "5"})]
        try:
            if not req.body:
                raise sdp.SdpError("an INVITE without an SDP offer is not supported: offer audio in the INVITE")
            offer = sdp.parse(req.body)
            codec = sdp.choose(offer)
        except sdp.SdpError as exc:
            self.counters["not_acceptable"] += 1
            return out + [self._final_stateless(req, peer, now, 488, str(exc))]
        try:
            contact = req.contact
            target = str(contact[0].uri) if contact else str(req.from_address.uri)
        except ValueError:
            target = str(req.from_address.uri)
        call = Call(id=self.new_id(), sip_call_id=req.call_id, peer=peer, invite=req, offer=offer,
                    codec=codec, local_tag=message.tag(), remote_tag=req.from_address.parameters.get("tag") or "",
                    remote_target=target, created=now, remote_cseq=req.cseq.sequence,
                    sip_headers=[{"name": k, "value": v} for k in req.headers.keys()
                                 for v in req.headers.getlist(k)])
        self.calls[call.id] = call
        self._by_dialog[(call.sip_call_id, call.local_tag)] = call
        self._by_invite[key] = call
        call.last_provisional = out[0].data
        return out + [Incoming(call)]

    def _final_stateless(self, req: Request, peer: Peer, now: float, code: int, why: str | None,
                         headers: dict | list | None = None) -> Send:
        """A refusal before any call exists. Retransmissions of the INVITE get it again (kept 64·T1); its ACK needs
        nothing (it matches no dialog and is dropped)."""
        headers = list(headers.items() if isinstance(headers, dict) else headers or [])
        if why:
            headers.append(("Warning", _warning(why)))
        send = self._reply(req, code, peer, to_tag=message.tag(), headers=headers)
        self._answered[self._txn(req)] = (send.data, now + TIMEOUT)
        return send

    def _on_reinvite(self, req: Request, peer: Peer, now: float) -> list[Action]:
        call = self._dialog(req)
        if call is None:
            self.counters["no_dialog"] += 1
            return self._answer(req, peer, now, 481)
        if call.final is not None:  # an INVITE transaction of ours is still open (RFC 3261 §14.2)
            return [self._reply(req, 491, peer)]
        call.remote_cseq = max(call.remote_cseq, req.cseq.sequence)
        try:
            offer = sdp.parse(req.body) if req.body else call.offer
            codec = sdp.choose(offer)
        except sdp.SdpError as exc:
            return [self._reply(req, 488, peer, headers={"Warning": _warning(str(exc))})]
        call.offer, call.codec = offer, codec
        self._by_invite[(req.call_id, req.via[0].parameters.get("branch") or "", req.cseq.sequence)] = call
        out = self._send_final(call, req, 200, now, self._sdp(call))
        return out + [Updated(call)]

    def _sdp(self, call: Call) -> bytes:
        call.sdp_version += 1
        host, port = call.media
        return sdp.answer(call.offer, call.codec, host, port, int(call.created) or 1, call.sdp_version)

    def _contact(self, call: Call) -> str:
        host, port = self.contact.get(call.peer.transport, ("127.0.0.1", 5060))
        tp = "" if call.peer.transport == "udp" else f";transport={call.peer.transport}"
        return f"<sip:voxgate@{_host(host)}:{port}{tp}>"

    def _send_final(self, call: Call, req: Request, code: int, now: float, body: bytes = b"",
                    headers: dict | None = None) -> list[Action]:
        hdrs = dict(headers or {})
        if 200 <= code < 300:
            hdrs.update({"Contact": self._contact(call), "Allow": ALLOW})
        data = message.response(req, code, to_tag=call.local_tag, headers=hdrs, body=body,
                                content_type="application/sdp" if body else None, received=call.peer.text)
        call.final, call.final_code, call.final_cseq = data, code, req.cseq.sequence
        call.final_interval = T1
        call.final_due = now + T1
        call.final_deadline = now + TIMEOUT
        return [Send(data, call.peer)]

    def _on_ack(self, req: Request, now: float) -> list[Action]:
        call = self._dialog(req)
        if call is None or call.final is None or req.cseq.sequence != call.final_cseq:
            return []  # an ACK for a stateless refusal, or one already seen
        code, call.final = call.final_code, None
        if 200 <= code < 300:
            if call.state == "accepted":
                call.state = "confirmed"
                return [Confirmed(call)]
            return []
        return self._forget(call)

    # ------------------------------------------------------------- CANCEL
    def _on_cancel(self, req: Request, peer: Peer, now: float) -> list[Action]:
        key = (req.call_id, req.via[0].parameters.get("branch") or "", req.cseq.sequence)
        call = self._by_invite.get(key)
        if call is None:
            self.counters["no_dialog"] += 1
            return self._answer(req, peer, now, 481)
        out = self._answer(req, peer, now, 200)
        if call.state in ("incoming", "ringing"):
            out += self._send_final(call, call.invite, 487, now)
            call.state = "ending"
            out.append(Ended(call, "cancelled"))
        return out

    # ------------------------------------------------------------- commands
    def ring(self, call: Call, now: float, timeout: float | None = None) -> list[Action]:
        """180 Ringing: the app decides (``accept``, ``reject``); with no decision in ``timeout`` s, 480."""
        if call.state != "incoming":
            return []
        call.state = "ringing"
        if timeout:
            call.ring_deadline = now + timeout
        data = message.response(call.invite, 180, to_tag=call.local_tag, headers={"Contact": self._contact(call)},
                                received=call.peer.text)
        call.last_provisional = data
        return [Send(data, call.peer)]

    def accept(self, call: Call, media: tuple[str, int], now: float) -> list[Action]:
        """Answer 200 with our SDP (RTP on ``media``); ``Confirmed`` follows with the ACK."""
        if call.state not in ("incoming", "ringing"):
            raise NotRinging(f"the call is {call.state}: it can no longer be accepted")
        call.media = media
        call.state, call.ring_deadline = "accepted", None
        return self._send_final(call, call.invite, 200, now, self._sdp(call))

    def reject(self, call: Call, code: int, now: float, reason: str = "rejected") -> list[Action]:
        if call.state not in ("incoming", "ringing"):
            raise NotRinging(f"the call is {call.state}: only a call not yet answered can be rejected")
        if not 300 <= code <= 699:
            raise BadRequestValue("a rejection's status code is 300-699")
        out = self._send_final(call, call.invite, code, now)
        call.state, call.ring_deadline = "ending", None
        return out + [Ended(call, reason)]

    def hangup(self, call: Call, now: float, reason: str = "hangup", headers: dict | None = None) -> list[Action]:
        """End the call from our side: a BYE once answered (with ``headers``, e.g. an RFC 3326 ``Reason``), a 603
        before."""
        if call.state in ("incoming", "ringing"):
            return self.reject(call, 603, now, reason)
        if call.state in ("ending", "ended"):
            return []
        call.state = "ending"
        call.final = None  # a BYE ends the 2xx's retransmission too
        return self._request(call, "BYE", now, headers) + [Ended(call, reason)]

    def refer(self, call: Call, target: str, now: float) -> list[Action]:
        """Ask the caller to call ``target`` (``sip:``/``tel:`` URI) instead (RFC 3515)."""
        if call.state not in ("accepted", "confirmed"):
            raise NotAnswered(f"the call is {call.state}: only an answered call can be transferred")
        if not target.startswith(("sip:", "sips:", "tel:")):
            raise BadRequestValue("target_uri must be a sip:, sips: or tel: URI")
        me = self._contact(call)[1:-1]
        return self._request(call, "REFER", now, {"Refer-To": f"<{target}>", "Referred-By": f"<{me}>",
                                                   "Contact": self._contact(call)})

    def _request(self, call: Call, method: str, now: float, headers: dict | None = None) -> list[Action]:
        call.local_cseq += 1
        host, port = self.contact.get(call.peer.transport, ("127.0.0.1", 5060))
        via = f"SIP/2.0/{call.peer.transport.upper()} {_host(host)}:{port};branch={message.branch()};rport"
        inv = call.invite
        to = Address(uri=inv.from_address.uri, name=inv.from_address.name, parameters=inv.from_address.parameters)
        from_ = Address(uri=inv.to_address.uri, name=inv.to_address.name,
                        parameters=inv.to_address.parameters.replace(tag=call.local_tag))
        hdrs = list((headers or {}).items())
        hdrs += [("Route", r) for r in inv.headers.getlist("Record-Route")]
        data = message.request(method, call.remote_target, via=via, from_=str(from_), to=str(to),
                               call_id=call.sip_call_id, cseq=call.local_cseq, headers=hdrs)
        self._outgoing[(call.sip_call_id, call.local_cseq)] = _Outgoing(call, method, call.local_cseq, data,
                                                                        now + T1, T1, now + TIMEOUT)
        return [Send(data, call.peer)]

    def _on_response(self, resp: Response, now: float) -> list[Action]:
        out = self._outgoing.get((resp.call_id, resp.cseq.sequence))
        if out is None or resp.cseq.method != out.method:
            return []
        if resp.code < 200:
            out.deadline = now + TIMEOUT  # the peer is working on it: Timer E goes to T2 (§17.1.2.2)
            out.interval = T2
            return []
        del self._outgoing[(resp.call_id, resp.cseq.sequence)]
        if out.method == "REFER":
            return [ReferStatus(out.call, resp.code, resp.code >= 300)]
        if out.method == "BYE":
            return self._forget(out.call)
        return []

    def _end(self, call: Call, reason: str) -> list[Action]:
        call.final = None
        call.state = "ending"
        return [Ended(call, reason)] + self._forget(call)

    def _forget(self, call: Call) -> list[Action]:
        call.state = "ended"
        self.calls.pop(call.id, None)
        for d in (self._by_dialog, self._by_invite):
            for k in [k for k, c in d.items() if c is call]:
                del d[k]
        return []

    # ------------------------------------------------------------- time
    def next_deadline(self) -> float | None:
        times = [c.final_due for c in self.calls.values() if c.final is not None]
        times += [c.ring_deadline for c in self.calls.values() if c.ring_deadline is not None]
        times += [o.due for o in self._outgoing.values()]
        times += [exp for _, exp in self._answered.values()]
        return min(times) if times else None

    def tick(self, now: float) -> list[Action]:
        out: list[Action] = []
        for call in list(self.calls.values()):
            if call.ring_deadline is not None and now >= call.ring_deadline:
                call.ring_deadline = None
                if call.state in ("incoming", "ringing"):  # the app never answered
                    out += self.reject(call, 480, now, reason="timeout")
            if call.final is None or now < call.final_due:
                continue
            if now >= call.final_deadline:  # no ACK came
                code, call.final = call.final_code, None
                if 200 <= code < 300 and call.state in ("accepted", "confirmed"):
                    out += self.hangup(call, now, reason="no_ack")
                elif call.state == "ending":
                    self._forget(call)
                continue
            reliable = call.peer.transport != "udp"
            if 200 <= call.final_code < 300 or not reliable:
                out.append(Send(call.final, call.peer))
            call.final_interval = min(call.final_interval * 2, T2)
            call.final_due = now + call.final_interval
        for key, o in list(self._outgoing.items()):
            if now < o.due:
                continue
            if now >= o.deadline:
                del self._outgoing[key]
                if o.method == "BYE":
                    self._forget(o.call)
                elif o.method == "REFER":
                    out.append(ReferStatus(o.call, 408, True))
                continue
            if o.call.peer.transport == "udp":
                out.append(Send(o.data, o.call.peer))
            o.interval = min(o.interval * 2, T2)
            o.due = now + o.interval
        for key, (_, exp) in list(self._answered.items()):
            if now >= exp:
                del self._answered[key]
        return out


def _warning(text: str) -> str:
    return '399 voxgate "%s"' % text.replace('"', "'")[:200]


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


DTMF_KEYS = "0123456789*#ABCD"


def _dtmf_relay(req: Request) -> tuple[str, int] | None:
    """``Signal=5`` / ``Duration=160`` of an ``application/dtmf-relay`` INFO (the SIP INFO way of sending keys)."""
    ctype = (req.headers.get("Content-Type") or "").lower()
    if "dtmf" not in ctype:
        return None
    fields = {}
    for line in req.body.decode("utf-8", "replace").splitlines():
        k, _, v = line.partition("=")
        fields[k.strip().lower()] = v.strip()
    digit = fields.get("signal", "").upper()
    if len(digit) != 1 or digit not in DTMF_KEYS:
        return None
    dur = fields.get("duration", "")
    return digit, int(dur) if dur.isdigit() else 0


def _sipfrag_status(body: bytes) -> int | None:
    """The status line of a ``message/sipfrag`` NOTIFY body: ``SIP/2.0 200 OK`` → 200."""
    first = body.split(b"\r\n", 1)[0].split(b"\n", 1)[0].split()
    if len(first) >= 2 and first[0] == b"SIP/2.0" and first[1].isdigit():
        return int(first[1])
    return None
