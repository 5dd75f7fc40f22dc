"""The one table of a transceiver's live calls, whatever carries them, and the one rule for taking a new one.

``Calls`` holds every live call by id with its transport (``webrtc``, ``websocket``, ``sip``), the calls whose
audio goes out on the shared clock, and the capacity and draining state: ``admit()`` says whether a new call may
start here (the signaling endpoints and the phone server ask it alike), and ``idle`` is set whenever no call is
live (draining waits on it). Its load is what the fleet's placement reads.
"""

from __future__ import annotations

import asyncio
from typing import Callable

KINDS = ("webrtc", "websocket", "sip")


class Calls:
    def __init__(self, capacity: int, changed: Callable[[int], None] = lambda load: None):
        self.capacity = capacity  # --capacity: more live calls than this are refused (placement looks elsewhere)
        self.draining = False
        self.changed = changed  # told the load whenever a call comes or goes
        self._tables: dict[str, dict[str, object]] = {k: {} for k in KINDS}
        self._kind: dict[str, str] = {}
        self.clocked: list = []  # the calls whose audio goes out on the shared clock (``PacedCall.due``/``tick``)
        self.idle = asyncio.Event()
        self.idle.set()
        self.recordings = None  # recording.Recordings: every call added is told where its recording would go

    # ------------------------------------------------------------- the rule
    def admit(self) -> str | None:
        """None: a new call may start now; else why not: ``draining`` or ``capacity``."""
        if self.draining:
            return "draining"
        if self.load >= self.capacity:
            return "capacity"
        return None

    @property
    def ready(self) -> bool:
        return self.admit() is None

    @property
    def load(self) -> int:
        return len(self._kind)

    # ------------------------------------------------------------- the table
    def add(self, call, kind: str) -> None:
        call.recordings = self.recordings
        self._tables[kind][call.call_id] = call
        self._kind[call.call_id] = kind
        self._changed()

    def remove(self, call) -> bool:
        """The call ended: out of the table and off the clock. False if it was not in it."""
        self.unclock(call)
        kind = self._kind.pop(call.call_id, None)
        if kind is None:
            return False
        self._tables[kind].pop(call.call_id, None)
        self._changed()
        return True

    def get(self, call_id: str, *kinds: str):
        """A live call by id (of one of ``kinds``, if given)."""
        kind = self._kind.get(call_id)
        if kind is None or (kinds and kind not in kinds):
            return None
        return self._tables[kind][call_id]

    def of(self, kind: str) -> dict:
        """The live calls of one transport, by id (a live view: the media socket finds WebRTC calls in it)."""
        return self._tables[kind]

    def count(self, kind: str) -> int:
        return len(self._tables[kind])

    def clock(self, call) -> None:
        """The call's audio goes out on the shared clock from now on (a WebRTC call once connected, a phone call)."""
        if call not in self.clocked:
            self.clocked.append(call)

    def unclock(self, call) -> None:
        if call in self.clocked:
            self.clocked.remove(call)

    def _changed(self) -> None:
        if self._kind:
            self.idle.clear()
        else:
            self.idle.set()
        self.changed(self.load)
