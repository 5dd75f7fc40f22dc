"""The Realtime server events, typed and serialised in one place (sans-IO).

Every event voxgate sends a Realtime client is one of the frozen dataclasses below; a core returns them inside its
actions (``conversation.Emit``), the engine makes a response's from what its runner reports (``reply.Reply``), and the shell turns each
into JSON once, with ``ServerEvent.as_dict(event_id)``, when it sends it. The field names are the API's (see
``../shared`` for the protocol reference); ``type`` is a class constant.

Also here, written once: the error shape (``error_body``, ``Error``) and the event-id scheme (``EventIds``: one
numbered stream per session, so ids sort in the order the session sent them; ``one_off_id`` where an event belongs
to no session yet).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, fields
from typing import ClassVar


@dataclass(frozen=True)
class ServerEvent:
    type: ClassVar[str] = ""

    def as_dict(self, event_id: str | None = None) -> dict:
        """The event as the wire carries it: ``event_id`` first, then ``type``, then the fields in order."""
        out: dict = {"event_id": event_id} if event_id is not None else {}
        out["type"] = self.type
        for f in fields(self):
            out[f.name] = getattr(self, f.name)
        return out


def error_body(code: str, message: str, param: str | None = None, type_: str = "invalid_request_error") -> dict:
    """The API's error object, as it stands in an ``error`` event and in a failed transcription."""
    return {"type": type_, "code": code, "message": message, "param": param}


@dataclass(frozen=True)
class Error(ServerEvent):
    type: ClassVar[str] = "error"
    error: dict


def error_event(code: str, message: str, param: str | None = None, event_id: str | None = None,
                type_: str = "invalid_request_error") -> Error:
    """The API's error event; ``event_id`` names the client event it answers (the error's own id is added when
    it is sent)."""
    return Error({**error_body(code, message, param, type_), "event_id": event_id})


def transport_error(code: str, message: str, param: str | None = None, event_id: str | None = None,
                    type_: str = "invalid_request_error") -> dict:
    """An error a transport sends itself (a frame that is no event), serialised with an id of its own: it is
    outside the session's stream of events."""
    return error_event(code, message, param, event_id, type_).as_dict(one_off_id())


# ---------------------------------------------------------------- the session
@dataclass(frozen=True)
class SessionCreated(ServerEvent):
    type: ClassVar[str] = "session.created"
    session: dict


@dataclass(frozen=True)
class SessionUpdated(ServerEvent):
    type: ClassVar[str] = "session.updated"
    session: dict


# ---------------------------------------------------------------- the input buffer
@dataclass(frozen=True)
class SpeechStarted(ServerEvent):
    type: ClassVar[str] = "input_audio_buffer.speech_started"
    item_id: str
    audio_start_ms: int


@dataclass(frozen=True)
class SpeechStopped(ServerEvent):
    type: ClassVar[str] = "input_audio_buffer.speech_stopped"
    item_id: str
    audio_end_ms: int


@dataclass(frozen=True)
class TimeoutTriggered(ServerEvent):
    type: ClassVar[str] = "input_audio_buffer.timeout_triggered"
    item_id: str
    audio_start_ms: int
    audio_end_ms: int


@dataclass(frozen=True)
class InputCommitted(ServerEvent):
    type: ClassVar[str] = "input_audio_buffer.committed"
    item_id: str
    previous_item_id: str | None


@dataclass(frozen=True)
class InputCleared(ServerEvent):
    type: ClassVar[str] = "input_audio_buffer.cleared"


@dataclass(frozen=True)
class DtmfReceived(ServerEvent):
    """A key pressed on a phone (SIP calls only)."""

    type: ClassVar[str] = "input_audio_buffer.dtmf_event_received"
    event: str
    received_at: int


# ---------------------------------------------------------------- items
@dataclass(frozen=True)
class ItemAdded(ServerEvent):
    type: ClassVar[str] = "conversation.item.added"
    previous_item_id: str | None
    item: dict


@dataclass(frozen=True)
class ItemDone(ServerEvent):
    type: ClassVar[str] = "conversation.item.done"
    previous_item_id: str | None
    item: dict


@dataclass(frozen=True)
class ItemRetrieved(ServerEvent):
    type: ClassVar[str] = "conversation.item.retrieved"
    item: dict


@dataclass(frozen=True)
class ItemDeleted(ServerEvent):
    type: ClassVar[str] = "conversation.item.deleted"
    item_id: str


@dataclass(frozen=True)
class ItemTruncated(ServerEvent):
    type: ClassVar[str] = "conversation.item.truncated"
    item_id: str
    content_index: int
    audio_end_ms: int


@dataclass(frozen=True)
class TranscriptionDelta(ServerEvent):
    type: ClassVar[str] = "conversation.item.input_audio_transcription.delta"
    item_id: str
    content_index: int
    delta: str


@dataclass(frozen=True)
class TranscriptionCompleted(ServerEvent):
    type: ClassVar[str] = "conversation.item.input_audio_transcription.completed"
    item_id: str
    content_index: int
    transcript: str
    usage: dict


@dataclass(frozen=True)
class TranscriptionFailed(ServerEvent):
    type: ClassVar[str] = "conversation.item.input_audio_transcription.failed"
    item_id: str
    content_index: int
    error: dict


# ---------------------------------------------------------------- responses
@dataclass(frozen=True)
class _InContent(ServerEvent):
    """An event about one content part of a response's output item (the fields every such event starts with)."""

    response_id: str
    item_id: str
    output_index: int
    content_index: int


@dataclass(frozen=True)
class _InOutput(ServerEvent):
    """An event about a whole output item of a response."""

    response_id: str
    output_index: int
    item: dict


@dataclass(frozen=True)
class _InCall(ServerEvent):
    """An event about a function call's arguments."""

    response_id: str
    item_id: str
    output_index: int
    call_id: str


@dataclass(frozen=True)
class ResponseCreated(ServerEvent):
    type: ClassVar[str] = "response.created"
    response: dict


@dataclass(frozen=True)
class ResponseDone(ServerEvent):
    type: ClassVar[str] = "response.done"
    response: dict


@dataclass(frozen=True)
class OutputItemAdded(_InOutput):
    type: ClassVar[str] = "response.output_item.added"


@dataclass(frozen=True)
class OutputItemDone(_InOutput):
    type: ClassVar[str] = "response.output_item.done"


@dataclass(frozen=True)
class ContentPartAdded(_InContent):
    type: ClassVar[str] = "response.content_part.added"
    part: dict


@dataclass(frozen=True)
class ContentPartDone(_InContent):
    type: ClassVar[str] = "response.content_part.done"
    part: dict


@dataclass(frozen=True)
class AudioTranscriptDelta(_InContent):
    type: ClassVar[str] = "response.output_audio_transcript.delta"
    delta: str


@dataclass(frozen=True)
class AudioTranscriptDone(_InContent):
    type: ClassVar[str] = "response.output_audio_transcript.done"
    transcript: str


@dataclass(frozen=True)
class TextDelta(_InContent):
    type: ClassVar[str] = "response.output_text.delta"
    delta: str


@dataclass(frozen=True)
class TextDone(_InContent):
    type: ClassVar[str] = "response.output_text.done"
    text: str


@dataclass(frozen=True)
class AudioDelta(_InContent):
    """Audio for a WebSocket client (base64 in ``delta``); over WebRTC and SIP the audio is the media track."""

    type: ClassVar[str] = "response.output_audio.delta"
    delta: str


@dataclass(frozen=True)
class AudioDone(_InContent):
    type: ClassVar[str] = "response.output_audio.done"


@dataclass(frozen=True)
class ArgumentsDelta(_InCall):
    type: ClassVar[str] = "response.function_call_arguments.delta"
    delta: str


@dataclass(frozen=True)
class ArgumentsDone(_InCall):
    type: ClassVar[str] = "response.function_call_arguments.done"
    name: str
    arguments: str


# ---------------------------------------------------------------- the output buffer (paced transports)
@dataclass(frozen=True)
class OutputStarted(ServerEvent):
    type: ClassVar[str] = "output_audio_buffer.started"
    response_id: str


@dataclass(frozen=True)
class OutputStopped(ServerEvent):
    type: ClassVar[str] = "output_audio_buffer.stopped"
    response_id: str


@dataclass(frozen=True)
class OutputCleared(ServerEvent):
    type: ClassVar[str] = "output_audio_buffer.cleared"
    response_id: str | None


# ---------------------------------------------------------------- ids
class EventIds:
    """``event_<stream><n>``: one numbered stream of ids per session (``stream``: a few characters that name it)."""

    def __init__(self, stream: str | None = None):
        self.stream = stream or secrets.token_hex(6)
        self.n = 0

    def next(self) -> str:
        self.n += 1
        return f"event_{self.stream}{self.n:06d}"


def one_off_id() -> str:
    """An id for an event sent outside any session's stream (a WebSocket refused before its session began)."""
    return "event_" + secrets.token_hex(8)


def new_id(prefix: str) -> str:
    """An object's id (``item_…``, ``resp_…``, ``sess_…``, ``conv_…``)."""
    return f"{prefix}_{secrets.token_hex(8)}"
