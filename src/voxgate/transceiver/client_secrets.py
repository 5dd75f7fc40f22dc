"""The client secrets (``ek_…``) a transceiver accepts, sans-IO: minted here, or found in the fleet's registry.

A client secret is a short-lived key a server mints with its API key (``POST /v1/realtime/client_secrets``) and
hands to a browser; a call made with it starts with the session it was minted with. ``ClientSecrets`` keeps each
one's expiry and session; the HTTP shell (``http.py``) asks it, and the transceiver's reaper expires them.
"""

from __future__ import annotations


class ClientSecrets:
    def __init__(self):
        self._expires: dict[str, float] = {}  # value -> expiry (seconds since the epoch)
        self._sessions: dict[str, dict | None] = {}  # value -> the session it was minted with

    def __len__(self) -> int:
        return len(self._expires)

    def add(self, value: str, expires_at: float, session: dict | None) -> None:
        """One minted here, or by another transceiver of the fleet (then read from the registry)."""
        self._expires[value] = expires_at
        self._sessions[value] = session

    def known(self, value: str) -> bool:
        return value in self._expires

    def valid(self, value: str, now: float) -> bool:
        return self._expires.get(value, 0) > now

    def session(self, value: str | None) -> dict | None:
        return self._sessions.get(value) if value else None

    def expire(self, now: float) -> int:
        """Forget the secrets whose time has passed; how many."""
        gone = [v for v, exp in self._expires.items() if exp < now]
        for v in gone:
            del self._expires[v]
            self._sessions.pop(v, None)
        return len(gone)
