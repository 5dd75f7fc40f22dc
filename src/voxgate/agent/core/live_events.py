"""GPT-Live's server events (OpenAI's Live API), typed and serialised in one place, as ``events`` does for Realtime.

Field names are the API's (``../shared/gpt-live-protocol.md``; the ``openai`` SDK's ``types/live``). An event that
acknowledges a client command carries its ``client_event_id`` (left out when the command had no ``event_id``). The
Live face (``live_face``) makes these, and maps the engine's Realtime-typed events onto them when it sends.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import ClassVar

from .events import ServerEvent


@dataclass(frozen=True)
class LiveEvent(ServerEvent):
    def as_dict(self, event_id: str | None = None) -> dict:
        """As the wire carries it: ``event_id`` first (none on an audio delta), then ``type``, then the fields; an
        optional field that is None (``client_event_id``) is left out."""
        out: dict = {"event_id": event_id} if event_id is not None else {}
        out["type"] = self.type
        for f in fields(self):
            v = getattr(self, f.name)
            if v is not None or f.name not in OPTIONAL:
                out[f.name] = v
        return out


OPTIONAL = {"client_event_id", "context_window"}  # left out when None (a decision's ids are sent as null)


@dataclass(frozen=True)
class SessionStarted(LiveEvent):
    type: ClassVar[str] = "session.started"
    session: dict
    client_event_id: str | None = None


@dataclass(frozen=True)
class SessionUpdated(LiveEvent):
    type: ClassVar[str] = "session.updated"
    session: dict
    client_event_id: str | None = None


@dataclass(frozen=True)
class InputTranscriptDelta(LiveEvent):
    type: ClassVar[str] = "session.input_transcript.delta"
    delta: str
    start_ms: int
    end_ms: int


@dataclass(frozen=True)
class OutputTranscriptDelta(LiveEvent):
    type: ClassVar[str] = "session.output_transcript.delta"
    delta: str
    start_ms: int
    end_ms: int


@dataclass(frozen=True)
class Appended(LiveEvent):
    """``session.{instructions,thinking,commentary}.appended``: the context is in, at ``start_ms`` on the session's
    timeline (``kind`` names which; it is the type's middle word)."""

    type: ClassVar[str] = "session.appended"
    kind: str
    start_ms: int
    end_ms: int
    client_event_id: str | None = None

    def as_dict(self, event_id: str | None = None) -> dict:
        out = super().as_dict(event_id)
        out["type"] = f"session.{out.pop('kind')}.appended"
        return out


@dataclass(frozen=True)
class InputMuted(LiveEvent):
    type: ClassVar[str] = "session.input_audio.muted"
    client_event_id: str | None = None


@dataclass(frozen=True)
class InputUnmuted(LiveEvent):
    type: ClassVar[str] = "session.input_audio.unmuted"
    client_event_id: str | None = None


@dataclass(frozen=True)
class UsageUpdated(LiveEvent):
    type: ClassVar[str] = "session.usage.updated"
    usage: dict


@dataclass(frozen=True)
class SessionClosed(LiveEvent):
    """The last event of a session: why it ended, the session as it was, and the usage."""

    type: ClassVar[str] = "session.closed"
    reason: str
    session: dict
    usage: dict
    client_event_id: str | None = None


@dataclass(frozen=True)
class Info(LiveEvent):
    type: ClassVar[str] = "info"
    code: str
    message: str
    client_event_id: str | None = None


@dataclass(frozen=True)
class LiveError(LiveEvent):
    """``error``: ``{type, code, message, param, client_event_id}``."""

    type: ClassVar[str] = "error"
    error: dict


def live_error(code: str, message: str, param: str | None = None, client_event_id: str | None = None,
               type_: str = "invalid_request_error") -> LiveError:
    body = {"type": type_, "code": code, "message": message, "param": param}
    if client_event_id is not None:
        body["client_event_id"] = client_event_id
    return LiveError(body)


@dataclass(frozen=True)
class DelegationCreated(LiveEvent):
    """The voice handed the caller's request to a backend (``target``: client, responses or decisions). GPT-Live
    sends no task text: the app reads the transcript."""

    type: ClassVar[str] = "session.delegation.created"
    delegation: dict
    offset_ms: int


@dataclass(frozen=True)
class ResponseEvent(LiveEvent):
    """One event of the Responses backend's stream (``core/delegation.ResponsesStream``)."""

    type: ClassVar[str] = "response.event"
    event: dict
    delegation_id: str | None = None
    client_event_id: str | None = None


@dataclass(frozen=True)
class DecisionEvent(LiveEvent):
    """The answers to a delegation's or a trigger's questions."""

    type: ClassVar[str] = "decision.event"
    event: dict
    delegation_id: str | None = None
    trigger_id: str | None = None
    source_event_id: str | None = None
    source_event_type: str | None = None


@dataclass(frozen=True)
class DecisionItemCreated(LiveEvent):
    type: ClassVar[str] = "decision.item.created"
    item: dict
    client_event_id: str | None = None


@dataclass(frozen=True)
class DecisionItemDeleted(LiveEvent):
    type: ClassVar[str] = "decision.item.deleted"
    item_id: str
    client_event_id: str | None = None


@dataclass(frozen=True)
class FixturePlaying(LiveEvent):
    type: ClassVar[str] = "session.output_audio.fixture.playing"
    client_event_id: str | None = None


@dataclass(frozen=True)
class FixturePlayed(LiveEvent):
    type: ClassVar[str] = "session.output_audio.fixture.played"
    client_event_id: str | None = None


@dataclass(frozen=True)
class DtmfReceived(LiveEvent):
    """A key the caller pressed (a SIP call; sidebands only)."""

    type: ClassVar[str] = "transport.dtmf.received"
    event: str


@dataclass(frozen=True)
class DtmfSent(LiveEvent):
    type: ClassVar[str] = "transport.dtmf.sent"
    event: str
    client_event_id: str | None = None
