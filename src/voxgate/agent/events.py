"""Realtime server events, the parts written once (sans-IO): the error shape and the event-id scheme.

Every ``error`` event any part of voxgate sends (a core's refusal, a shell's failure, a transport's bad frame) is
``error_event``'s; every server event's ``event_id`` comes from an ``EventIds`` stream (one per session, so ids sort
in the order the session sent them), or from ``one_off_id`` where an event belongs to no session yet.
"""

from __future__ import annotations

import secrets


def error_body(code: str, message: str, param: str | None = None, type_: str = "invalid_request_error") -> dict:
    """The API's error object, as it stands in an ``error`` event and in a failed transcription."""
    return {"type": type_, "code": code, "message": message, "param": param}


def error_event(code: str, message: str, param: str | None = None, event_id: str | None = None,
                type_: str = "invalid_request_error") -> dict:
    """The API's error event; ``event_id`` names the client event it answers (the error's own id is added when
    it is sent)."""
    return {"type": "error", "error": {**error_body(code, message, param, type_), "event_id": event_id}}


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
