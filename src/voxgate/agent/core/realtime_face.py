"""The Realtime API's vocabulary on the conversation engine: one face of it (GPT-Live's would be a second module of
this shape, not a second engine).

A face maps the wire to the engine and back: ``client_event(conv, event, now)`` reads a client's event (its type, its
fields, validated with ``schema``) and turns it into the conversation's decisions (``conversation``'s typed actions,
which the engine applies); ``wire(event, event_id)`` serialises what the engine says (``events``' typed server
events, the Realtime shape) as this API sends it. The engine holds its face; the executor sends with the same one.
"""

from __future__ import annotations

from . import events as ev, schema
from .conversation import ClearInput, ClearOutput, CancelResponse, Emit, EndInput, error as _error, normalized

CLIENT_EVENTS = {
    "session.update", "input_audio_buffer.commit", "input_audio_buffer.clear", "input_audio_buffer.append",
    "conversation.item.create", "conversation.item.retrieve", "conversation.item.delete",
    "conversation.item.truncate", "response.create", "response.cancel", "output_audio_buffer.clear",
}


class RealtimeFace:
    name = "realtime"
    replays = False  # a Realtime sideband gets the events from when it attaches

    def start(self, conv, initial: dict | None, now: float = 0.0) -> list:
        """The session begins (``initial``: a client secret's or an offer's session): ``session.created``."""
        return conv.start(initial)

    def wire(self, event: ev.ServerEvent, event_id: str, now: float = 0.0, sideband: bool = False) -> dict:
        """A server event as the Realtime API sends it (``event_id`` first, then ``type``, then its fields)."""
        return event.as_dict(event_id)

    def next_deadline(self) -> float | None:
        return None

    def timer(self, conv, now: float) -> list:
        return []

    def delegates(self, transcript: str) -> bool:
        """A Realtime session's voice answers every turn itself (GPT-Live's may hand one to a backend)."""
        return False

    def takes_turn(self, conv, transcript: str, create_response: bool, now: float):
        return None

    def backend(self, conv, key: str, what, now: float) -> list:
        return []

    def dtmf_sent(self, key: str, client_event_id, ok: bool) -> list:
        return []

    def response_over(self, conv, rid: str, status: str) -> list:
        return []

    def closing(self, now: float, reason: str):
        """Nothing more is said when a Realtime call ends."""
        return None

    def client_event(self, conv, event: dict, now: float, trusted: bool = False) -> list:
        """A client event (parsed JSON) as the conversation's decisions: each type by its handler, anything else an
        ``error`` naming it."""
        etype, eid = event.get("type"), event.get("event_id")
        if not isinstance(etype, str):
            return [_error("missing_type", "event has no 'type'", "type", eid)]
        if etype not in CLIENT_EVENTS:
            return [_error("unknown_event", f"unknown event type {etype!r}", "type", eid)]
        handler = getattr(self, "_on_" + etype.replace(".", "_"))
        return handler(conv, event, eid, now)

    def _on_session_update(self, conv, event, eid, now):
        session = event.get("session")
        try:
            ignored = schema.check_session(session, tools_now=conv.tools, any_voice=conv.languages.any_voice)
        except schema.Invalid as exc:
            return [_error(exc.code, str(exc), exc.param, eid)]
        out: list = []
        ignored += conv.apply_session(session, out)
        return out + [Emit(ev.SessionUpdated(conv.session_object(ignored)))]

    def _on_input_audio_buffer_commit(self, conv, event, eid, now):
        if not conv.input_open:
            return [_error("input_audio_buffer_commit_empty", "the input audio buffer is empty", None, eid)]
        # with turn detection off the client asks for the response itself (response.create), as the API defines
        return [EndInput(conv.turn_cfg.enabled and conv.turn_cfg.create_response)]

    def _on_input_audio_buffer_clear(self, conv, event, eid, now):
        return [ClearInput()] + conv.discard_speculation() + [Emit(ev.InputCleared())]

    def _on_input_audio_buffer_append(self, conv, event, eid, now):  # a WebSocket call takes these itself, as audio
        return [_error("not_supported", "over WebRTC the input audio is the microphone track; append is not "
                                             "used", None, eid)]

    def _on_conversation_item_create(self, conv, event, eid, now):
        item = event.get("item")
        try:
            schema.check_item(item)
        except schema.Invalid as exc:
            return [_error(exc.code, str(exc), exc.param, eid)]
        item = normalized(item, conv.new_id)
        if conv.find(item["id"]) is not None:
            return [_error("duplicate_item_id", f"item {item['id']!r} already exists", "item.id", eid)]
        prev = event.get("previous_item_id")
        if prev is not None and prev != "root" and conv.find(prev) is None:
            return [_error("item_not_found", "no such previous item", "previous_item_id", eid)]
        return conv.add_item(item, after=prev)

    def _on_conversation_item_retrieve(self, conv, event, eid, now):
        item = conv.find(event.get("item_id"))
        if item is None:
            return [_error("item_not_found", "no such item", "item_id", eid)]
        return [Emit(ev.ItemRetrieved(item))]

    def _on_conversation_item_delete(self, conv, event, eid, now):
        if conv.find(event.get("item_id")) is None:
            return [_error("item_not_found", "no such item", "item_id", eid)]
        conv.items = [i for i in conv.items if i["id"] != event.get("item_id")]
        return [Emit(ev.ItemDeleted(event.get("item_id")))]

    def _on_conversation_item_truncate(self, conv, event, eid, now):
        """As the API defines it: an assistant audio item, ``audio_end_ms`` within the audio it has, the transcript
        cut to the words heard by then (in proportion to the audio)."""
        item = conv.find(event.get("item_id"))
        if item is None:
            return [_error("item_not_found", "no such item", "item_id", eid)]
        if item.get("type") != "message" or item.get("role") != "assistant":
            return [_error("invalid_value", "only assistant messages can be truncated", "item_id", eid)]
        if event.get("content_index", 0) != 0:
            return [_error("invalid_value", "content_index must be 0", "content_index", eid)]
        end = event.get("audio_end_ms")
        if not isinstance(end, int) or isinstance(end, bool) or end < 0:
            return [_error("invalid_value", "audio_end_ms must be a non-negative integer", "audio_end_ms", eid)]
        total = conv.audio_ms.get(item["id"])
        if total is not None and end > total + 20:
            return [_error("invalid_value", f"audio_end_ms {end} is past the item's audio ({total} ms)",
                                "audio_end_ms", eid)]
        return conv.truncate(item["id"], end, total)

    def _on_response_create(self, conv, event, eid, now):
        spec = event.get("response") or {}
        try:
            schema.check_response(spec, conv.tools, conv.languages.any_voice)
        except schema.Invalid as exc:
            return [_error(exc.code, str(exc), exc.param, eid)]
        if not conv.responds:
            return [_error("invalid_value", "a transcription session makes no responses", "type", eid)]
        override = {k: spec[k] for k in ("instructions", "tools", "tool_choice", "conversation", "metadata")
                    if k in spec}
        if "output_modalities" in spec:
            override["modalities"] = tuple(spec["output_modalities"])
        if "max_output_tokens" in spec:
            override["max_output_tokens"] = None if spec["max_output_tokens"] == "inf" else spec["max_output_tokens"]
        output = (spec.get("audio") or {}).get("output") or {}
        override.update({k: output[k] for k in ("voice", "speed") if k in output})
        items = None
        if "input" in spec:  # its own context instead of the conversation's
            items = []
            for ref in spec["input"]:
                if ref.get("type") == "item_reference":
                    found = conv.find(ref["id"])
                    if found is None:
                        return [_error("item_not_found", f"no such item {ref['id']!r}", "response.input", eid)]
                    items.append(found)
                else:
                    items.append(normalized(ref, conv.new_id))
        return conv.respond({"turn_end": now}, config=conv.response_config(**override), items=items)

    def _on_response_cancel(self, conv, event, eid, now):
        rid = event.get("response_id")
        targets = conv.cancel_targets(rid)
        if not targets:
            return [_error("response_cancel_not_active",
                                "no active response" + (f" with id {rid!r}" if rid else ""), "response_id", eid)]
        return [CancelResponse(r, "client_cancelled") for r in targets]

    def _on_output_audio_buffer_clear(self, conv, event, eid, now):
        return [ClearOutput(), Emit(ev.OutputCleared(conv.live))]
