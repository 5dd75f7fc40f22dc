"""Who may call: a trunk CIDR allowlist, a token bucket per source address, optional digest auth (RFC 8760/2617).

Pure logic on addresses, headers and time, used by the SIP core before a call exists. The digest nonce is
stateless (a timestamp and its HMAC under a per-process key), so a flood of INVITEs leaves nothing behind.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import ipaddress
import secrets

from sipmessage import AuthChallenge, AuthCredentials, AuthParameters, Request

NONCE_TTL = 300.0  # seconds a digest challenge stays good


@dataclasses.dataclass
class Policy:
    allow: list[str] = dataclasses.field(default_factory=list)  # CIDRs; empty: anyone
    rate: float = 5.0  # new calls per second per source address, sustained
    burst: int = 20  # ... and at once
    max_calls: int = 100  # calls at once on this server
    user: str | None = None  # digest auth: both set, or neither
    password: str | None = None
    realm: str = "voxgate"

    def __post_init__(self):
        self._nets = [ipaddress.ip_network(c, strict=False) for c in self.allow]
        self._buckets: dict[str, tuple[float, float]] = {}  # source host -> (tokens, when)
        self._key = secrets.token_bytes(16)

    def allowed(self, host: str) -> bool:
        if not self._nets:
            return True
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(ip in net for net in self._nets)

    def take(self, host: str, now: float) -> bool:
        """One new call from ``host`` at ``now``: False when it is over its rate (answered 503 + Retry-After)."""
        tokens, when = self._buckets.get(host, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - when) * self.rate)
        if tokens < 1:
            self._buckets[host] = (tokens, now)
            return False
        self._buckets[host] = (tokens - 1, now)
        if len(self._buckets) > 10000:  # forget full buckets: they are what a new source starts with anyway
            self._buckets = {h: b for h, b in self._buckets.items() if b[0] < self.burst - 1}
        return True

    # ------------------------------------------------------------- digest
    @property
    def auth(self) -> bool:
        return bool(self.user and self.password)

    def nonce(self, now: float) -> str:
        stamp = f"{now:.0f}"
        return stamp + "." + hmac.new(self._key, stamp.encode(), hashlib.sha256).hexdigest()[:24]

    def challenge(self, now: float) -> str:
        return str(AuthChallenge(scheme="Digest", parameters=AuthParameters(
            realm=self.realm, nonce=self.nonce(now), algorithm="MD5", qop="auth")))

    def _nonce_ok(self, nonce: str, now: float) -> bool:
        stamp, _, mac = nonce.partition(".")
        good = hmac.new(self._key, stamp.encode(), hashlib.sha256).hexdigest()[:24]
        try:
            return hmac.compare_digest(mac, good) and 0 <= now - float(stamp) <= NONCE_TTL
        except ValueError:
            return False

    def authorized(self, req: Request, now: float) -> bool:
        """The request carries a digest response for our user, over a nonce of ours still fresh."""
        if not self.auth:
            return True
        try:
            creds: AuthCredentials | None = req.authorization or req.proxy_authorization
        except ValueError:
            return False
        if creds is None or creds.scheme.lower() != "digest":
            return False
        p = dict(creds.parameters)
        if p.get("username") != self.user or p.get("realm") != self.realm or not self._nonce_ok(p.get("nonce", ""), now):
            return False
        md5 = lambda s: hashlib.md5(s.encode()).hexdigest()  # noqa: E731 - RFC 2617's H()
        ha1 = md5(f"{self.user}:{self.realm}:{self.password}")
        ha2 = md5(f"{req.method}:{p.get('uri', '')}")
        if p.get("qop"):
            expect = md5(f"{ha1}:{p['nonce']}:{p.get('nc', '')}:{p.get('cnonce', '')}:{p['qop']}:{ha2}")
        else:
            expect = md5(f"{ha1}:{p['nonce']}:{ha2}")
        return hmac.compare_digest(expect, p.get("response", ""))
