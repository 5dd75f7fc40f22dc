"""The transceiver fleet as data, and where a new call goes: sans-IO (no Redis, no clock of its own).

A transceiver describes itself with a ``Member`` (what ``voxgate fleet`` prints, and what the registry keeps in
Redis); ``place`` picks the transceiver for a new call from the members it is given.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

READY, DRAINING = "ready", "draining"
STATES = (READY, DRAINING)
ID_RE = re.compile(r"^[a-z0-9]{1,16}$")  # goes into call ids (rtc_<id>_<random>), so kept short and plain


class MemberError(ValueError):
    pass


@dataclass(frozen=True)
class Member:
    id: str
    region: str
    media: str  # internal media endpoint HOST:PORT (what its routing tokens name)
    url: str  # signaling base URL, reachable from the other transceivers
    sessions: int
    capacity: int
    state: str  # ready | draining
    updated: float  # unix time of the last heartbeat
    tcp_sessions: int = 0  # of ``sessions``, those whose client reaches a relay over ICE-TCP (a network that drops UDP)

    @property
    def ready(self) -> bool:
        """Takes new calls: not draining and not full."""
        return self.state == READY and self.sessions < self.capacity

    @property
    def load(self) -> float:
        return self.sessions / self.capacity if self.capacity > 0 else float("inf")

    def to_fields(self) -> dict[str, str]:
        """As a Redis hash."""
        return {k: str(v) for k, v in asdict(self).items()}

    @classmethod
    def from_fields(cls, fields: dict) -> "Member":
        """From a Redis hash (bytes or str); ``MemberError`` if something is missing or malformed."""
        f = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
             for k, v in fields.items()}
        try:
            m = cls(id=f["id"], region=f["region"], media=f["media"], url=f["url"], sessions=int(f["sessions"]),
                    capacity=int(f["capacity"]), state=f["state"], updated=float(f["updated"]),
                    tcp_sessions=int(f.get("tcp_sessions", 0)))
        except (KeyError, ValueError) as exc:
            raise MemberError(f"bad registry record: {exc!r}") from None
        if m.state not in STATES or not ID_RE.match(m.id):
            raise MemberError(f"bad registry record for {m.id!r}")
        return m

    def as_dict(self) -> dict:
        return {**asdict(self), "ready": self.ready}


def place(members: list[Member], region: str, prefer: str | None = None) -> list[Member]:
    """The ready transceivers of ``region`` in the order to try them: least loaded first (sessions over
    capacity, then fewest sessions); on a tie ``prefer`` (the transceiver placing the call: no proxy hop), then by
    id so that concurrent placers agree. Empty when the region has none ready."""
    ready = [m for m in members if m.region == region and m.ready]
    return sorted(ready, key=lambda m: (m.load, m.sessions, m.id != prefer, m.id))


def call_id(member_id: str, random_hex: str, prefix: str = "rtc") -> str:
    """A call id that names the transceiver holding the call, so any transceiver can route its URLs (``rtc_``: a
    Realtime call; ``live_``: a GPT-Live session)."""
    return f"{prefix}_{member_id}_{random_hex}"


def owner_of(call: str) -> str | None:
    """The transceiver id in a call id from ``call_id``, or None for any other shape."""
    parts = call.split("_")
    if len(parts) == 3 and parts[0] in ("rtc", "live") and ID_RE.match(parts[1]):
        return parts[1]
    return None
