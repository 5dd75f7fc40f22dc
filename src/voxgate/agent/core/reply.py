"""One response as the engine owns it, sans-IO: its state, its output items and the ``response.*`` events they make.

A ``Reply`` is made by the conversation when it asks for a response (``Conversation.respond`` / ``speculate``) and
is the one record of that response: where it stands (``state``: speculating, live, out of band; ``status``: in
progress, completed, incomplete, cancelled, failed), what it has said (``text``, ``output``), how much audio it has
written, and when each stage happened (``marks``). The runner that makes the response (``shell/runner.Runner``: the
responder, the voice) only reports what it made (``Said``, ``Called``, ``Spoke``, ``Marked``, ``Ended``,
``Failed``); the engine (``engine.Engine``) turns each report into this reply's outputs and the events the client
sees, and holds them while the reply is speculative.

Outputs are ``(kind, payload)`` pairs the engine delivers in order: ``event`` (a server event), ``item_added`` and
``item_done`` (the conversation announces the item after the one before it, when it is delivered), ``audio``,
``flush`` and ``done`` (the closing events, made when delivered: a held reply's status is known by then).
"""

from __future__ import annotations

from dataclasses import dataclass

from . import events as ev

ARGUMENT_PIECE = 24  # function-call arguments go out in pieces of this many characters, as a model streams them


# ---------------------------------------------------------------- what a runner reports
@dataclass(frozen=True)
class Said:
    """A piece of the responder's text."""

    text: str


@dataclass(frozen=True)
class Called:
    """A function call the responder made, whole."""

    name: str
    call_id: str
    arguments: str


@dataclass(frozen=True)
class Spoke:
    """PCM at the call's output rate, synthesized from what was said."""

    pcm: bytes


@dataclass(frozen=True)
class Marked:
    """A stage of the work happened now: ``first_token``, ``first_chunk``, ``first_tts_audio``."""

    stage: str


@dataclass(frozen=True)
class Ended:
    """The responder's stream ended: ``completed``, or ``incomplete`` (``max_output_tokens``)."""

    status: str = "completed"
    reason: str | None = None


@dataclass(frozen=True)
class Failed:
    """The responder or the voice failed: the response ends ``failed``, the call goes on."""

    message: str


class Reply:
    STAGES = ("pause", "peeked", "started", "turn_end", "final_transcript", "first_token", "first_chunk",
              "first_tts_audio", "committed", "first_audio_written", "first_audio_sent")

    def __init__(self, rid: str, config, state: str, transcript: str = "", *, new_id):
        self.rid, self.config = rid, config
        self.state = state  # speculating | live | oob
        self.transcript = transcript  # a speculation's: the words it was made from
        self.speculative = state == "speculating"  # it was made before the turn ended
        self.new_id = new_id
        self.status, self.reason = "in_progress", None
        self.text = ""
        self.output: list[dict] = []  # the output items, in output_index order
        self.message: dict | None = None  # the message item, once text has come
        self.held: list[tuple[str, object]] = []  # a speculation's outputs, delivered when it is committed
        self.marks: dict[str, float] = {}
        self.written_ms = 0.0  # audio written to the call
        self.tokens = 0
        self.barged = False  # the user talked over it (its audio was cleared, not played out)
        self.watching_sent = False  # its first packet is awaited (response.done waits for it, briefly)
        self.done_due: float | None = None  # response.done goes out by then, sent or not
        self.done_sent = False

    @property
    def holds(self) -> bool:
        return self.state == "speculating"

    @property
    def item_id(self) -> str | None:
        """The message item's id (what barge-in truncates), or None for a response that has said nothing."""
        return self.message["id"] if self.message else None

    def ids(self, item: dict) -> dict:
        return {"response_id": self.rid, "item_id": item["id"], "output_index": self.output.index(item),
                "content_index": 0}

    # ------------------------------------------------------------- outputs
    def said(self, delta: str) -> list:
        out = []
        if self.message is None:  # the first words open the message item
            self.message = {"id": self.new_id("item")}
            self.output.append(self.message)
            item = self._message_item("in_progress")
            out += [("event", ev.OutputItemAdded(self.rid, self.output.index(self.message), item)),
                    ("item_added", item)]
            part = {"type": "audio", "transcript": ""} if self.config.audio else {"type": "text", "text": ""}
            out.append(("event", ev.ContentPartAdded(**self.ids(self.message), part=part)))
        self.text += delta
        self.tokens += 1
        kind = ev.AudioTranscriptDelta if self.config.audio else ev.TextDelta
        return out + [("event", kind(**self.ids(self.message), delta=delta))]

    def called(self, call: Called) -> list:
        """A function call item, whole: added, its arguments in pieces, done (then the client runs the tool)."""
        item = {"id": self.new_id("item"), "object": "realtime.item", "type": "function_call",
                "status": "in_progress", "name": call.name, "call_id": call.call_id, "arguments": ""}
        self.output.append(item)
        index = len(self.output) - 1
        ids = {"response_id": self.rid, "item_id": item["id"], "output_index": index, "call_id": call.call_id}
        out = [("event", ev.OutputItemAdded(self.rid, index, dict(item))), ("item_added", dict(item))]
        args = call.arguments
        for i in range(0, len(args), ARGUMENT_PIECE):
            out.append(("event", ev.ArgumentsDelta(**ids, delta=args[i:i + ARGUMENT_PIECE])))
        out.append(("event", ev.ArgumentsDone(**ids, name=call.name, arguments=args)))
        item.update(status="completed", arguments=args)
        return out + [("event", ev.OutputItemDone(self.rid, index, dict(item))), ("item_done", dict(item))]

    def closing(self) -> list:
        """The closing events of the message (if any), then ``done``'s end: made when they are delivered."""
        out = []
        if self.message is not None:
            ids = self.ids(self.message)
            if self.config.audio:
                out += [("event", ev.AudioDone(**ids)),
                        ("event", ev.AudioTranscriptDone(**ids, transcript=self.text))]
                part = {"type": "audio", "transcript": self.text}
            else:
                out.append(("event", ev.TextDone(**ids, text=self.text)))
                part = {"type": "text", "text": self.text}
            out.append(("event", ev.ContentPartDone(**ids, part=part)))
            item = self._message_item(self.item_status)
            out += [("event", ev.OutputItemDone(self.rid, ids["output_index"], item)), ("item_done", item)]
        return out

    @property
    def item_status(self) -> str:
        """The status of the response's message item once it has ended."""
        return "completed" if self.status == "completed" else "incomplete"

    def _message_item(self, status: str) -> dict:
        content = ([{"type": "output_audio", "transcript": self.text}] if self.config.audio
                   else [{"type": "output_text", "text": self.text}])
        return {"id": self.message["id"], "object": "realtime.item", "type": "message", "role": "assistant",
                "status": status, "content": content}

    # ------------------------------------------------------------- what it is
    def timing_ms(self) -> dict:
        """Each stage's time (ms) from the end of the turn (``speech_stopped``, ``turn_end_to_*``) and from the end of
        the user's speech (``speech_end_to_*``). A speculation's stages before the turn ended (``pause``: the
        partial-inference point, ``peeked``: its decode done, ``started``) come out negative from the turn's end."""
        m = self.marks
        t0 = m.get("turn_end") or m.get("committed") or m["started"]
        out = {"speculative": self.speculative, "committed": "committed" in m}
        for stage in self.STAGES:
            if stage in m and stage != "turn_end":
                out[f"turn_end_to_{stage}"] = round((m[stage] - t0) * 1000, 1)
        if "speech_end" in m:
            for stage in self.STAGES:
                if stage in m:
                    out[f"speech_end_to_{stage}"] = round((m[stage] - m["speech_end"]) * 1000, 1)
        return out

    def output_items(self) -> list[dict]:
        """The output items as they stand now (a message's text so far)."""
        out = []
        for item in self.output:
            if item is self.message:
                out.append(self._message_item("in_progress" if self.status == "in_progress" else self.item_status))
            else:
                out.append(dict(item))
        return out

    def describe(self, conversation_id: str | None) -> dict:
        c = self.config
        r = {"id": self.rid, "object": "realtime.response", "status": self.status,
             "status_details": None, "output": [] if self.status == "in_progress" else self.output_items(),
             "conversation_id": conversation_id if c.in_conversation else None,
             "output_modalities": list(c.modalities), "max_output_tokens": c.max_output_tokens or "inf",
             "metadata": c.metadata,
             "usage": {"total_tokens": 0, "input_tokens": 0, "output_tokens": self.tokens}}
        if c.audio:
            r["audio"] = {"output": {"format": c.output_format, "voice": c.voice, "speed": c.speed}}
        if self.status != "in_progress":
            r["status_details"] = {"type": self.status, "reason": self.reason}
            r["voxgate"] = {"timing": self.timing_ms()}  # ours, beside the API's fields (clients ignore it)
        return r
