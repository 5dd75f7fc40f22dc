"""Who may call: a trunk CIDR allowlist, a token bucket per source address and one for all, optional digest auth
(RFC 7616 / 8760, ``qop=auth``).

Pure logic on addresses, headers and time, used by the SIP core before a call exists. A digest nonce is stateless
until it authenticates (a flood of INVITEs leaves nothing behind); from then on it is remembered with the highest
nonce count seen and the dialog it placed, so a sniffed ``Authorization`` header cannot be replayed into a call.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import ipaddress
import secrets

from collections import OrderedDict

from sipmessage import URI, AuthChallenge, AuthCredentials, AuthParameters, Request

NONCE_TTL = 300.0  # seconds a digest challenge stays good


@dataclasses.dataclass
class Policy:
    allow: list[str] = dataclasses.field(default_factory=list)  # CIDRs; empty: anyone
    rate: float = 5.0  # new calls per second per source address, sustained
    burst: int = 20  # ... and at once
    global_rate: float = 20.0  # new calls per second from all sources together, sustained
    global_burst: int = 40  # ... and at once: a spread of sources cannot pass this
    max_calls: int = 100  # calls at once on this server
    max_ringing: int = 20  # calls waiting for the app's accept at once (each holds a webhook POST and a slot)
    user: str | None = None  # digest auth: both set, or neither
    password: str | None = None
    realm: str = "voxgate"

    def __post_init__(self):
        self._nets = [ipaddress.ip_network(c, strict=False) for c in self.allow]
        self._buckets: dict[str, tuple[float, float]] = {}  # source host -> (tokens, when)
        self._global = (float(self.global_burst), 0.0)  # every source's new calls: (tokens, when)
        self._key = secrets.token_bytes(16)
        self._used: OrderedDict[str, _Nonce] = OrderedDict()  # nonces that authenticated: their count and dialog

    def allowed(self, host: str) -> bool:
        if not self._nets:
            return True
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(ip in net for net in self._nets)

    def take(self, host: str, now: float) -> bool:
        """One new call from ``host`` at ``now``: False when it is over its rate, or all sources together are over
        theirs (answered 503 + Retry-After)."""
        tokens, when = self._buckets.get(host, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - when) * self.rate)
        g_tokens, g_when = self._global
        g_tokens = min(float(self.global_burst), g_tokens + (now - g_when) * self.global_rate)
        if tokens < 1 or g_tokens < 1:
            self._buckets[host] = (tokens, now)
            self._global = (g_tokens, now)
            return False
        self._buckets[host] = (tokens - 1, now)
        self._global = (g_tokens - 1, now)
        if len(self._buckets) > 10000:  # forget full buckets: they are what a new source starts with anyway
            self._buckets = {h: b for h, b in self._buckets.items() if b[0] < self.burst - 1}
        return True

    # ------------------------------------------------------------- digest
    @property
    def auth(self) -> bool:
        return bool(self.user and self.password)

    def nonce(self, now: float) -> str:
        """A nonce we can recognise without remembering it (a timestamp and its HMAC under a per-process key): a
        flood of INVITEs leaves nothing behind. What a nonce was used for is remembered once it authenticates."""
        stamp = f"{now:.3f}"
        return stamp + "." + hmac.new(self._key, stamp.encode(), hashlib.sha256).hexdigest()[:24]

    def _issued_at(self, nonce: str) -> float | None:
        stamp, _, mac = nonce.rpartition(".")
        good = hmac.new(self._key, stamp.encode(), hashlib.sha256).hexdigest()[:24]
        try:
            return float(stamp) if hmac.compare_digest(mac, good) else None
        except (TypeError, ValueError):
            return None

    def challenge(self, now: float, stale: bool = False) -> list[str]:
        """``WWW-Authenticate`` values over one nonce, ``qop=auth``: MD5 first, then SHA-256 (RFC 8760). MD5 leads
        because many SIP stacks read only the first challenge and know only MD5 (SIPp refuses a SHA-256 one
        outright); a client that knows both may answer either, and both are checked the same way."""
        nonce = self.nonce(now)
        return [str(AuthChallenge(scheme="Digest", parameters=AuthParameters(
            realm=self.realm, nonce=nonce, algorithm=alg, qop="auth", **({"stale": "true"} if stale else {}))))
            for alg in ("MD5", "SHA-256")]

    def authorized(self, req: Request, now: float) -> bool:
        """The request carries a digest response (RFC 7616 / 8760, ``qop=auth``) for our user, over a nonce we issued
        in the last ``NONCE_TTL`` seconds, for this very Request-URI and method, with a nonce count above every one
        seen with that nonce, and (an INVITE) in the dialog the nonce was first used for. A sniffed
        ``Authorization`` header therefore places no second call: not with a new Call-ID (another dialog), not
        with the same count (a replay), and not after the nonce's time."""
        if not self.auth:
            return True
        try:
            creds: AuthCredentials | None = req.authorization or req.proxy_authorization
        except ValueError:
            return False
        if creds is None or creds.scheme.lower() != "digest":
            return False
        p = dict(creds.parameters)
        issued = self._issued_at(p.get("nonce", ""))
        if (p.get("username") != self.user or p.get("realm") != self.realm or issued is None
                or not 0 <= now - issued <= NONCE_TTL):
            return False
        state = self._used.get(p["nonce"]) or _Nonce(issued=issued)
        if p.get("qop") != "auth" or not _same_uri(p.get("uri", ""), req.uri):
            return False
        try:
            nc = int(p.get("nc", ""), 16)
        except ValueError:
            return False
        if nc <= state.nc:
            return False  # a count already used: a replay
        hash_ = _HASHES.get((p.get("algorithm") or "MD5").upper())
        if hash_ is None:
            return False
        ha1 = hash_(f"{self.user}:{self.realm}:{self.password}")
        ha2 = hash_(f"{req.method}:{p['uri']}")
        expect = hash_(f"{ha1}:{p['nonce']}:{p['nc']}:{p.get('cnonce', '')}:auth:{ha2}")
        if not hmac.compare_digest(expect, p.get("response", "")):
            return False
        if req.method == "INVITE" and "tag" not in req.to_address.parameters:  # a new dialog
            if state.dialog is not None and state.dialog != req.call_id:
                return False  # the nonce placed another call already
            state.dialog = req.call_id
        if p["nonce"] not in self._used:
            for old in [n for n, u in self._used.items() if now - u.issued > NONCE_TTL]:
                del self._used[old]
            if len(self._used) >= MAX_NONCES:
                return False  # so many live nonces in use that one more could not be tracked: a fresh challenge
        state.nc = nc
        self._used[p["nonce"]] = state
        return True


MAX_NONCES = 10000  # nonces in use at once (each one authenticated a request of our user)


@dataclasses.dataclass
class _Nonce:
    issued: float
    nc: int = 0  # the highest nonce count used with it
    dialog: str | None = None  # the Call-ID of the call it placed


_HASHES = {"MD5": lambda s: hashlib.md5(s.encode()).hexdigest(),
           "SHA-256": lambda s: hashlib.sha256(s.encode()).hexdigest()}


def _same_uri(text: str, uri) -> bool:
    """The digest's ``uri`` names the Request-URI (as sent, or the same once parsed)."""
    if text == str(uri):
        return True
    try:
        return URI.parse(text) == uri
    except (ValueError, TypeError):
        return False
