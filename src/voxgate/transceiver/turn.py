"""TURN credentials minted per call, for networks that let out only TLS to 443 (docs/architecture.md).

voxgate does not run a TURN server: a well-kept one (coturn) sits beside the relays with ``use-auth-secret`` and a
``static-auth-secret`` it shares with the transceivers. A transceiver hands each caller short-lived credentials in
the form that server checks (the "TURN REST API" of draft-uberti-behave-turn-rest, coturn's ``use-auth-secret``):
``username = "<expiry unix time>:<label>"``, ``credential = base64(HMAC-SHA1(secret, username))``. The TURN server
relays the browser's packets as UDP to the relay's public port, where the session is routed by its ufrag like any
other client: the relay stays stateless and unchanged. Sans-IO: secret, time and label in, an RTCIceServer out.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass


@dataclass(frozen=True)
class TurnConfig:
    urls: tuple[str, ...]  # e.g. ("turns:turn.example:443?transport=tcp",)
    secret: bytes
    ttl: int = 3600


def ice_server(cfg: TurnConfig, now: float, label: str | None = None) -> dict:
    """One ``RTCIceServer`` (``{"urls", "username", "credential"}``) valid for ``cfg.ttl`` seconds from ``now``."""
    label = label or secrets.token_hex(8)
    if ":" in label:
        raise ValueError("a TURN username label cannot contain ':'")
    username = f"{int(now) + cfg.ttl}:{label}"
    digest = hmac.new(cfg.secret, username.encode(), hashlib.sha1).digest()
    return {"urls": list(cfg.urls), "username": username, "credential": base64.b64encode(digest).decode()}


def load(urls: list[str], secret_file: str | None, secret: str | None = None, ttl: int = 3600) -> TurnConfig | None:
    """From ``--turn-url`` (repeatable) and ``--turn-secret-file`` (or the secret itself); None without URLs."""
    if not urls:
        return None
    if secret is None:
        if not secret_file:
            raise ValueError("--turn-url needs --turn-secret-file (coturn's static-auth-secret)")
        with open(secret_file, encoding="utf-8") as fh:
            secret = fh.read().strip()
    if len(secret) < 16:
        raise ValueError("the TURN secret must be at least 16 characters")
    for url in urls:
        if not url.startswith(("turn:", "turns:")):
            raise ValueError(f"--turn-url {url!r}: expected turn:HOST[:PORT] or turns:HOST[:PORT]")
    return TurnConfig(tuple(urls), secret.encode(), ttl)
