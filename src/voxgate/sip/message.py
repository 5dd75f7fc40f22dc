"""SIP messages: parsed by ``sipmessage`` (BSD-2), checked for what RFC 3261 §8.1.1 makes mandatory, and built.

Also the framing of a stream transport (TCP/TLS, RFC 3261 §18.3): messages end at ``Content-Length``; a stream
that says nothing parseable within ``MAX_MESSAGE`` bytes is garbage and is closed.
"""

from __future__ import annotations

import secrets

import sipmessage
from sipmessage import Address, CSeq, Request, Response

MAX_MESSAGE = 16 * 1024  # bytes: a SIP message with an SDP body is a few hundred; a trunk's INVITE ~2 KB
MANDATORY = ("Via", "From", "To", "Call-ID", "CSeq")
SERVER = "voxgate"
REASONS = {100: "Trying", 180: "Ringing", 200: "OK", 202: "Accepted", 400: "Bad Request", 401: "Unauthorized",
           403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout",
           415: "Unsupported Media Type", 420: "Bad Extension", 480: "Temporarily Unavailable",
           481: "Call/Transaction Does Not Exist", 483: "Too Many Hops", 486: "Busy Here",
           487: "Request Terminated", 488: "Not Acceptable Here", 491: "Request Pending", 500: "Server Internal Error",
           501: "Not Implemented", 503: "Service Unavailable", 600: "Busy Everywhere", 603: "Decline",
           604: "Does Not Exist Anywhere", 606: "Not Acceptable"}


class SipError(ValueError):
    """A message that cannot be used. ``partial`` is the request when it parsed far enough to be answered 400."""

    def __init__(self, message: str, partial: Request | None = None):
        super().__init__(message)
        self.partial = partial


def parse(data: bytes) -> Request | Response:
    try:
        msg = sipmessage.Message.parse(data)
    except (ValueError, UnicodeDecodeError, KeyError, IndexError) as exc:
        raise SipError(f"not a SIP message: {exc}") from None
    missing = [h for h in MANDATORY if msg.headers.get(h) is None]
    if missing:
        raise SipError(f"missing {', '.join(missing)}")
    try:
        cseq, vias = msg.cseq, msg.via
        msg.from_address, msg.to_address  # noqa: B018 - parse them now, not halfway through handling
    except (ValueError, KeyError) as exc:
        raise SipError(f"a header does not parse: {exc}") from None
    if not vias:
        raise SipError("no Via")
    if isinstance(msg, Response):
        return msg
    # from here on the request can be answered: a 400 names what is wrong
    if cseq.method != msg.method:
        raise SipError(f"CSeq method {cseq.method} is not the request's {msg.method}", msg)
    length = msg.headers.get("Content-Length")
    if length is not None:
        if not length.strip().isdigit():
            raise SipError("Content-Length is not a number", msg)
        n = int(length)
        if n > len(msg.body):
            raise SipError(f"the body is {len(msg.body)} bytes, Content-Length says {n}", msg)
        msg.body = msg.body[:n]
    mf = msg.headers.get("Max-Forwards")
    if mf is not None and not mf.strip().isdigit():
        raise SipError("Max-Forwards is not a number", msg)
    return msg


def tag() -> str:
    return secrets.token_hex(6)


def branch() -> str:
    return "z9hG4bK" + secrets.token_hex(8)


def response(req: Request, code: int, *, to_tag: str | None = None, headers: dict | None = None,
             body: bytes = b"", content_type: str | None = None, received: str | None = None) -> bytes:
    """The response to ``req`` (RFC 3261 §8.2.6): its Vias (``received``/``rport`` filled in on the top one),
    From, Call-ID and CSeq; its To with ``to_tag`` added when it has none."""
    resp = Response(code, REASONS.get(code, "Unknown"), body)
    vias = [str(v) for v in req.via]
    if received and ";rport" in vias[0] and "rport=" not in vias[0]:  # RFC 3581: say where it came from
        host, port = received.rsplit(":", 1)
        vias[0] = vias[0].replace(";rport", f";rport={port};received={host}", 1)
    resp.headers.setlist("Via", vias)
    resp.headers.add("From", req.headers["From"])
    to = req.headers["To"]
    if to_tag and code > 100 and "tag" not in req.to_address.parameters:
        to = str(Address(uri=req.to_address.uri, name=req.to_address.name,
                         parameters=req.to_address.parameters.replace(tag=to_tag)))
    resp.headers.add("To", to)
    resp.headers.add("Call-ID", req.headers["Call-ID"])
    resp.headers.add("CSeq", req.headers["CSeq"])
    return _finish(resp, headers, ("Server", SERVER), content_type)


def request(method: str, uri: str, *, via: str, from_: str, to: str, call_id: str, cseq: int,
            headers: dict | list | None = None, body: bytes = b"", content_type: str | None = None) -> bytes:
    req = Request(method, sipmessage.URI.parse(uri), body)
    req.headers.add("Via", via)
    req.headers.add("Max-Forwards", "70")
    req.headers.add("From", from_)
    req.headers.add("To", to)
    req.headers.add("Call-ID", call_id)
    req.headers.add("CSeq", str(CSeq(cseq, method)))
    return _finish(req, headers, ("User-Agent", SERVER), content_type)


def _finish(msg: Request | Response, headers: dict | list | None, agent: tuple[str, str],
            content_type: str | None) -> bytes:
    """The caller's headers, who we are, and the body's type and length: the end of every message we write."""
    for k, v in (headers.items() if isinstance(headers, dict) else headers or []):
        msg.headers.add(k, v)
    msg.headers.add(*agent)
    if content_type and msg.body:
        msg.headers.add("Content-Type", content_type)
    msg.headers.add("Content-Length", str(len(msg.body)))
    return bytes(msg)


class StreamFramer:
    """Bytes of a TCP/TLS connection in, whole SIP messages out (keep-alive CRLFs skipped, RFC 5626 §3.5.1)."""

    def __init__(self, limit: int = MAX_MESSAGE):
        self.buf = bytearray()
        self.limit = limit

    def push(self, data: bytes) -> list[bytes]:
        """The messages ``data`` completes; raises SipError when the stream is not SIP (the caller closes it)."""
        self.buf += data
        out = []
        while True:
            while self.buf[:2] == b"\r\n":
                del self.buf[:2]
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > self.limit:
                    raise SipError(f"no end of headers in {len(self.buf)} bytes")
                return out
            head = bytes(self.buf[:end]).decode("utf-8", "replace")
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() in ("content-length", "l"):
                    try:
                        length = int(value.strip())
                    except ValueError:
                        raise SipError("Content-Length is not a number") from None
            total = end + 4 + length
            if length < 0 or total > self.limit:
                raise SipError(f"a message of {total} bytes is over the {self.limit}-byte limit")
            if len(self.buf) < total:
                return out
            out.append(bytes(self.buf[:total]))
            del self.buf[:total]
