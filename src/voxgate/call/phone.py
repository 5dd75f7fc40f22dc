"""What a transceiver and a phone server offer each other, declared here so that neither imports the other.

The transceiver gives a phone server a ``PhoneHost`` (its id, whether a call may be taken now, a new agent, the
shared clock, the call table, a counter of how calls ended); the phone server (``sip.server.SipServer``) is a
``PhoneLine`` to the transceiver: started and stopped with it, reaped on its timer, and told the app's decisions
on a ringing call (``accept``, ``reject``, ``refer``: ``CallError`` says why one cannot be done). The process that
wires them (``voxgate.cli``) is the only code that knows both.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Protocol


class CallError(Exception):
    """An app's command on a phone call that cannot be done: the HTTP status, an error code and why."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code = status, code


@dataclasses.dataclass
class PhoneHost:
    """What a phone server may reach of the transceiver that takes its calls: its id (in call ids), whether it
    takes a call now (``refusal``: None, or the SIP status to refuse with), a new agent, the call table
    (``call.registry.Calls``: a call answered is added, clocked, removed), and a count of how calls ended."""

    id: str
    refusal: Callable[[], int | None]
    new_agent: Callable[[], object]
    calls: object
    ended: Callable[[str], None]


class PhoneLine(Protocol):
    """A phone server as the transceiver drives it."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def reap(self, now: float) -> None: ...

    def ringing(self, call_id: str) -> bool: ...

    async def accept(self, call_id: str, session: dict, api: str = "realtime") -> None: ...

    def reject(self, call_id: str, status: int) -> None: ...

    def refer(self, call_id: str, target: str) -> None: ...

    def hangup(self, call_id: str) -> bool: ...

    def counters(self) -> dict: ...

    def describe(self) -> dict: ...
