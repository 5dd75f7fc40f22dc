"""The client secrets (``ek_…``) a transceiver accepts, sans-IO: minted here, or found in the fleet's registry.

A client secret is a short-lived key a server mints with its API key (``POST /v1/realtime/client_secrets``) and
hands to a browser; a call made with it starts with the session it was minted with. ``ClientSecrets`` keeps each
one's expiry and session; the HTTP shell (``http.py``) asks it, and the transceiver's reaper expires them.
"""

from __future__ import annotations


class ClientSecrets:
    def __init__(self):
        self._minted: dict[str, tuple[float, dict | None]] = {}  # value -> (expiry, epoch seconds; its session)

    def add(self, value: str, expires_at: float, session: dict | None) -> None:
        """One minted here, or by another transceiver of the fleet (then read from the registry)."""
        self._minted[value] = (expires_at, session)

    def known(self, value: str) -> bool:
        return value in self._minted

    def valid(self, value: str, now: float) -> bool:
        return self._minted.get(value, (0, None))[0] > now

    def session(self, value: str | None) -> dict | None:
        return self._minted.get(value, (0, None))[1] if value else None

    def expire(self, now: float) -> None:
        """Forget the secrets whose time has passed."""
        for value in [v for v, (expires_at, _) in self._minted.items() if expires_at < now]:
            del self._minted[value]
