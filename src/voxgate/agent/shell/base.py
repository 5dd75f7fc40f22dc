"""The contract between a call and an agent: the agent runs on a ``CallIO`` (``voxgate.call.io``: audio and JSON
events both ways, whatever the transport) and declares what else may reach it while it runs.

Declared inputs, instead of a transport reaching into an agent's objects: ``dtmf`` (a key the caller pressed on a
phone), and for an agent that speaks the Realtime protocol (``takes_events``), a sideband: ``attach``/``detach`` a
sink of its server events and ``submit`` client events, once ``wait_running`` says it runs.
"""

from __future__ import annotations

import abc

from ...call.io import CallIO


class Agent(abc.ABC):
    sample_rate: int = 24000  # the PCM rate the agent wants, both ways
    takes_events: bool = False  # it speaks the Realtime protocol: a sideband may attach to it

    @abc.abstractmethod
    async def run(self, call: CallIO) -> None:
        """Serve one call until its audio and events end."""

    def dtmf(self, digit: str, at: int) -> None:
        """The caller pressed a key (a phone's RFC 4733 event or SIP INFO; ``at``: Unix seconds)."""

    async def wait_running(self, timeout: float) -> bool:
        """Wait until the agent runs on its call (at most ``timeout`` s): True if it does."""
        return False

    def attach(self, sink) -> None:
        """A sideband: ``sink(event)`` takes each server event from now on (``takes_events`` agents)."""
        raise NotImplementedError

    def detach(self, sink) -> None:
        raise NotImplementedError

    def submit(self, event: dict) -> None:
        """A client event from a sideband, handled in order with the call's own."""
        raise NotImplementedError
