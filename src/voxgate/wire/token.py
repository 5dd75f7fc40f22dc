"""Routing tokens: the server ICE ufrag doubles as an authenticated route to a transceiver.

The transceiver mints the token into its SDP answer; the browser echoes it back
in the USERNAME of every STUN Binding request (``<token>:<client ufrag>``), so
the relay can route a session's *first* packet with no lookup: decode, check
the MAC, read the transceiver's internal address.

Layout (big-endian), then standard base64 without padding; base64's alphabet
(ALPHA / DIGIT / "+" / "/") is exactly the ICE ufrag character set::

    0      1 byte   version (3 bits) | family (1 bit: 0 = IPv4, 1 = IPv6) | key id (4 bits)
    1      4 bytes  issued-at, unix seconds
    5      4|16     transceiver IP
    .      2 bytes  transceiver port
    .      5 bytes  random session part
    .      8 bytes  HMAC-SHA256(key[key id], all of the above), truncated

24 bytes = 32 characters for IPv4, 36 bytes = 48 characters for IPv6: both
multiples of 3, so no padding is ever needed. The 64-bit tag makes a blind
forgery a 2^-64 guess per packet; the key id lets operators add a new secret,
mint with it, and drop the old one only once no live session uses it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import os
import secrets
import struct
from dataclasses import dataclass

VERSION = 1
MAC_LEN = 8
RANDOM_LEN = 5
DEFAULT_MAX_AGE = 24 * 3600
CLOCK_SKEW = 300  # a token minted up to 5 minutes "in the future" is accepted (cluster clock skew)
_V4_LEN = 1 + 4 + 4 + 2 + RANDOM_LEN + MAC_LEN
_V6_LEN = 1 + 4 + 16 + 2 + RANDOM_LEN + MAC_LEN


class TokenError(ValueError):
    """A ufrag that must not be routed; ``reason`` is a short metric label."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True)
class Keyring:
    """Cluster secrets by key id (0..15). ``active`` mints; every key verifies."""

    keys: dict
    active: int

    def __post_init__(self):
        if not self.keys:
            raise ValueError("keyring is empty")
        for kid, key in self.keys.items():
            if not 0 <= kid <= 15:
                raise ValueError(f"key id {kid} out of range 0..15")
            if len(key) < 16:
                raise ValueError(f"key {kid} is shorter than 16 bytes")
        if self.active not in self.keys:
            raise ValueError(f"active key id {self.active} is not in the keyring")

    @classmethod
    def parse(cls, text: str) -> "Keyring":
        """One key per line, ``SECRET`` or ``KID:SECRET``; the first line is the active key; ``#`` comments."""
        keys: dict[int, bytes] = {}
        active = None
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            kid_text, sep, secret = line.partition(":")
            if sep and kid_text.isdigit():
                kid = int(kid_text)
            else:
                kid, secret = 0, line
            if kid in keys:
                raise ValueError(f"key id {kid} appears twice")
            keys[kid] = secret.encode()
            if active is None:
                active = kid
        if active is None:
            raise ValueError("no key found")
        return cls(keys, active)

    @classmethod
    def load(cls, path: str | None = None, env: str = "VOXGATE_SECRET") -> "Keyring":
        """From ``path`` if given, else from the environment variable ``env``."""
        if path:
            with open(path, encoding="utf-8") as fh:
                return cls.parse(fh.read())
        text = os.environ.get(env)
        if not text:
            raise ValueError(f"no secret: pass --secret-file or set {env}")
        return cls.parse(text.replace(",", "\n"))


@dataclass(frozen=True)
class TokenInfo:
    version: int
    key_id: int
    issued_at: int
    transceiver: tuple[str, int]
    session: str  # hex of the random part

    def as_dict(self) -> dict:
        return {
            "version": self.version,
            "key_id": self.key_id,
            "issued_at": self.issued_at,
            "transceiver": f"{_fmt_host(self.transceiver[0])}:{self.transceiver[1]}",
            "session": self.session,
        }


def new_secret_line(key_id: int = 1) -> str:
    """A fresh cluster-secret line, ``KID:SECRET`` (24 random bytes, base64), as secret files hold them."""
    return f"{key_id}:" + base64.b64encode(os.urandom(24)).decode()


def _fmt_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _mac(key: bytes, body: bytes) -> bytes:
    return hmac.new(key, body, hashlib.sha256).digest()[:MAC_LEN]


def mint(keyring: Keyring, transceiver: tuple[str, int], now: float, *, rand: bytes | None = None) -> str:
    """A fresh server ufrag routing to ``transceiver`` (ip, port)."""
    ip = ipaddress.ip_address(transceiver[0])
    port = int(transceiver[1])
    if not 0 < port < 65536:
        raise ValueError(f"port {port} out of range")
    family = 0 if ip.version == 4 else 1
    rand = secrets.token_bytes(RANDOM_LEN) if rand is None else rand
    if len(rand) != RANDOM_LEN:
        raise ValueError("random part must be 5 bytes")
    head = bytes([(VERSION << 5) | (family << 4) | keyring.active])
    body = head + struct.pack("!I", int(now) & 0xFFFFFFFF) + ip.packed + struct.pack("!H", port) + rand
    return base64.b64encode(body + _mac(keyring.keys[keyring.active], body)).decode("ascii")


def verify(keyring: Keyring, ufrag: bytes | str, now: float, max_age: float = DEFAULT_MAX_AGE) -> TokenInfo:
    """Decode and authenticate a server ufrag; raise ``TokenError`` unless it may be routed."""
    if isinstance(ufrag, str):
        ufrag = ufrag.encode("ascii", "replace")
    if len(ufrag) not in (_V4_LEN * 4 // 3, _V6_LEN * 4 // 3):
        raise TokenError("bad_token", f"length {len(ufrag)}")
    try:
        raw = base64.b64decode(ufrag, validate=True)
    except (binascii.Error, ValueError):
        raise TokenError("bad_token", "not base64") from None
    head = raw[0]
    version, family, kid = head >> 5, (head >> 4) & 1, head & 0x0F
    if version != VERSION:
        raise TokenError("bad_token", f"version {version}")
    if len(raw) != (_V6_LEN if family else _V4_LEN):
        raise TokenError("bad_token", "length does not match family")
    key = keyring.keys.get(kid)
    if key is None:
        raise TokenError("unknown_key", f"key id {kid}")
    body, tag = raw[:-MAC_LEN], raw[-MAC_LEN:]
    if not hmac.compare_digest(_mac(key, body), tag):
        raise TokenError("bad_mac")
    issued = struct.unpack_from("!I", raw, 1)[0]
    if issued > now + CLOCK_SKEW:
        raise TokenError("expired", "issued in the future")
    if now - issued > max_age:
        raise TokenError("expired", f"issued {int(now - issued)} s ago, max age {int(max_age)} s")
    iplen = 16 if family else 4
    ip = ipaddress.ip_address(raw[5 : 5 + iplen])
    port = struct.unpack_from("!H", raw, 5 + iplen)[0]
    rand = raw[7 + iplen : 7 + iplen + RANDOM_LEN]
    return TokenInfo(version, kid, issued, (str(ip), port), rand.hex())
