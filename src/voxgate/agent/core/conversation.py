"""The conversation and its responses' lifecycle, sans-IO (in the style of ``turns.py`` and h11).

``Conversation`` holds what one session is: its settings, its items, and where each response stands (speculating,
live, playing, out of band). It is told what a face parsed from a client's events (``realtime_face``: a session
update, an item, a response asked for or cancelled) and what the engine saw (a user turn committed, a response's
item done, a response finished, playback drained, a barge-in), and returns typed decisions that the engine
(``engine.Engine``) applies: events to emit, responses to start, commit or cancel, the input or output buffer to
clear. It owns no audio, no clock and no tasks, so its rules are tested alone (``tests/test_agent_conversation.py``).

Response states::

    speculating ──commit──▶ live ──done, audio queued──▶ playing ──drained──▶ (idle)
         │                   │  └──done, nothing queued──────────────────────▶ (idle)
         └──discard/cancel   └──superseded / cancelled / barge-in
    out of band: runs beside the others; never live, never in the conversation
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import events as ev, schema
from .events import error_body, error_event, new_id
from .languages import LANGUAGE_NAMES, Languages
from .reply import Reply
from .turns import TurnConfig
from .voices import DEFAULT_VOICE, resolve_voice


@dataclass
class ResponseConfig:
    """What one response is asked for: the session's settings, overridden by ``response.create``'s ``response``."""

    instructions: str
    tools: list = field(default_factory=list)
    tool_choice: object = "auto"
    modalities: tuple = ("audio",)
    conversation: str = "auto"  # "none": out of band
    metadata: dict | None = None
    max_output_tokens: int | None = None  # None: "inf"
    voice: str = DEFAULT_VOICE  # as asked (ours or an OpenAI name: agent/core/voices.py)
    speed: float = 1.0
    output_format: dict = field(default_factory=lambda: {"type": "audio/pcm", "rate": 24000})  # the session's
    language: str | None = None  # the caller's language (ISO-639-1) when the reply is to be in it; None: as asked
    say: str | None = None  # words to speak as they are, with no model (GPT-Live's acknowledgements, commentary)
    fixture: bytes | None = None  # audio to play as it is (PCM16 24 kHz mono: GPT-Live's output_audio.fixture.play)

    @property
    def audio(self) -> bool:
        return "audio" in self.modalities

    @property
    def in_conversation(self) -> bool:
        return self.conversation != "none"


# ---------------------------------------------------------------- actions
@dataclass(frozen=True)
class Emit:
    """Send a server event (``events.ServerEvent``) to the client and its sidebands."""

    event: ev.ServerEvent


@dataclass(frozen=True)
class StartResponse:
    rid: str
    config: ResponseConfig
    messages: list
    speculative: bool = False
    marks: dict = field(default_factory=dict)


@dataclass(frozen=True)
class CommitResponse:
    rid: str
    turn_end: float
    marks: dict = field(default_factory=dict)


@dataclass(frozen=True)
class CancelResponse:
    rid: str
    reason: str


@dataclass(frozen=True)
class EndInput:
    """input_audio_buffer.commit: end the user's turn now (and respond if ``create_response``)."""

    create_response: bool


@dataclass(frozen=True)
class ClearInput:
    """input_audio_buffer.clear: drop what was heard of the current buffer."""


@dataclass(frozen=True)
class ClearOutput:
    """Drop the audio queued for the caller (the executor says how much it dropped: ``Engine.output_cleared``)."""

    why: str = "client"


@dataclass(frozen=True)
class SetResponding:
    """Tell the turn taker whether the agent is responding (speech then is a barge-in)."""

    on: bool


@dataclass(frozen=True)
class ConfigureAudio:
    input_format: dict | None
    output_format: dict | None


@dataclass(frozen=True)
class MuteInput:
    """Hear silence instead of the caller (on), or the caller again (off): a Live client's mute."""

    on: bool


@dataclass(frozen=True)
class EndSession:
    """The client ended the session (``reason``): the call ends once what was said has gone out."""

    reason: str


@dataclass(frozen=True)
class Record:
    """Record the call from now on (a GPT-Live session with ``store: true``), if this server keeps recordings."""


@dataclass(frozen=True)
class ConfigureDenoise:
    """``audio.input.noise_reduction``: the suppressor the input goes through (None: off)."""

    kind: str | None


@dataclass(frozen=True)
class ConfigureRecognizer:
    """``audio.input.transcription``'s hints for the call's recognizer (one that takes them: ``hints``)."""

    language: str | None
    prompt: str | None




class Conversation:
    def __init__(self, *, instructions: str, model: str, asr: str, voice: str, vad: str, responder: str,
                 turn_cfg: TurnConfig | None = None, ids=new_id, languages: Languages | None = None):
        self.new_id = ids  # makes the ids of sessions, items and responses (a test's are predictable)
        self.turn_cfg = turn_cfg or TurnConfig()
        self.instructions = instructions
        self.tools: list[dict] = []
        self.tool_choice = "auto"
        self.modalities = ("audio",)
        self.max_output_tokens: int | None = None
        self.session_type = "realtime"  # "transcription": recognize turns, never respond
        self.formats = {"input": {"type": "audio/pcm", "rate": 24000}, "output": {"type": "audio/pcm", "rate": 24000}}
        self.noise_reduction: str | None = None  # near_field, far_field (agent/models/noise.py), or off
        self.voice, self.speed = voice, 1.0  # audio.output: a name from agent/core/voices.py, as asked
        self.languages = languages or Languages()
        self.transcription: dict = {}  # audio.input.transcription's language and prompt, as asked
        self.names = {"model": model, "asr": asr, "vad": vad, "responder": responder}
        self.session_id = self.new_id("sess")
        self.conversation_id = self.new_id("conv")
        self.items: list[dict] = []
        self.audio_ms: dict[str, int] = {}  # assistant item -> milliseconds of audio it spoke
        self.responses: dict[str, Reply] = {}  # in progress (core/reply.py: the one record of each)
        self.live: str | None = None
        self.playing: str | None = None
        self.spec: str | None = None
        self.input_open = False  # an input buffer holds audio (push-to-talk) or a turn is in progress

    # ------------------------------------------------------------- session
    def session_object(self, ignored: list[str] | None = None) -> dict:
        out = {
            "type": self.session_type, "object": "realtime.session", "id": self.session_id,
            "model": self.names["model"], "instructions": self.instructions,
            "output_modalities": list(self.modalities), "tools": self.tools, "tool_choice": self.tool_choice,
            "max_output_tokens": self.max_output_tokens or "inf",
            "audio": {
                "input": {"format": self.formats["input"],
                          "noise_reduction": {"type": self.noise_reduction} if self.noise_reduction else None,
                          "transcription": {"model": self.names["asr"], **self.transcription},
                          "turn_detection": self.turn_cfg.as_dict()},
                "output": {"format": self.formats["output"], "voice": self.voice, "speed": self.speed},
            },
            "voxgate": {"partial_inference": self.turn_cfg.partial_inference, "pause_ms": self.turn_cfg.pause_ms,
                        "voice": self._voice_heard(),  # what an OpenAI name sounds as
                        "resume_false_interruption": self.turn_cfg.resume_false_interruption,
                        "min_interruption_ms": self.turn_cfg.min_interruption_ms,
                        "vad": self.names["vad"], "responder": self.names["responder"]},
        }
        if ignored:
            out["voxgate"]["ignored"] = ignored
        return out

    @property
    def reply_language(self) -> str | None:
        """The session's language, when the voice speaks it (else the replies stay in the voice's)."""
        lang, speaks = self.transcription.get("language"), self.languages.voice
        return lang if speaks is None or lang in speaks else None

    def _voice_heard(self) -> str:
        try:
            return resolve_voice(self.voice).name
        except ValueError:  # a remote voice's own name
            return self.voice

    def start(self, initial: dict | None) -> list:
        """The session begins: ``initial`` is a client secret's or an offer's session, if any."""
        out, ignored = [], []
        if isinstance(initial, dict):
            try:
                ignored = schema.check_session(initial, any_voice=self.languages.any_voice)
                ignored += self.apply_session(initial, out)
            except schema.Invalid as exc:  # a secret minted before a change is told here
                out.append(error(exc.code, str(exc), exc.param))
        return out + [Emit(ev.SessionCreated(self.session_object(ignored)))]

    def response_config(self, **override) -> ResponseConfig:
        base = dict(instructions=self.instructions, tools=self.tools, tool_choice=self.tool_choice,
                    modalities=self.modalities, max_output_tokens=self.max_output_tokens, voice=self.voice,
                    speed=self.speed, output_format=dict(self.formats["output"]), language=self.reply_language)
        base.update(override)
        return ResponseConfig(**base)

    def apply_session(self, session: dict, out: list) -> list[str]:
        """Apply a session object ``schema.check_session`` accepted; return what else was not acted on."""
        ignored = []
        if "type" in session:
            self.session_type = session["type"]
        if "instructions" in session:
            self.instructions = session["instructions"]
        if "tools" in session:
            self.tools = [t for t in session["tools"] if t.get("type", "function") == "function"]
        if "tool_choice" in session:
            self.tool_choice = session["tool_choice"]
        if "output_modalities" in session:
            self.modalities = tuple(session["output_modalities"])
        if "max_output_tokens" in session:
            v = session["max_output_tokens"]
            self.max_output_tokens = None if v == "inf" else v
        audio = session.get("audio") or {}
        inp, outp = audio.get("input") or {}, audio.get("output") or {}
        if "voice" in outp:
            self.voice = outp["voice"]
        if "speed" in outp:
            self.speed = float(outp["speed"])
        if "noise_reduction" in inp:
            self.noise_reduction = (inp["noise_reduction"] or {}).get("type")
            out.append(ConfigureDenoise(self.noise_reduction))
        if inp.get("transcription") is not None:
            ignored += self._transcription(inp["transcription"], out)
        if "turn_detection" in inp or "turn_detection" in session:
            ignored += self.turn_cfg.update(inp.get("turn_detection", session.get("turn_detection")))
        if "format" in inp or "format" in outp:
            for key, fmt in (("input", inp.get("format")), ("output", outp.get("format"))):
                if fmt:
                    self.formats[key] = {"type": fmt.get("type", "audio/pcm"),
                                         **({"rate": 24000} if fmt.get("type", "audio/pcm") == "audio/pcm" else {})}
            out.append(ConfigureAudio(inp.get("format"), outp.get("format")))
        vx = session.get("voxgate") or {}
        for key in ("partial_inference", "resume_false_interruption", "min_interruption_ms"):
            if key in vx:
                setattr(self.turn_cfg, key, vx[key])
        if session.get("model"):
            ignored.append(f"model (served by {self.names['model']})")
        return ignored

    def _transcription(self, tr: dict, out: list) -> list[str]:
        """``audio.input.transcription``: its language and prompt go to the recognizer, and the language to the
        replies when the voice speaks it; what a stage cannot do is said, not pretended."""
        notes = []
        for key in ("language", "prompt"):
            if key in tr:
                if tr[key]:
                    self.transcription[key] = tr[key]
                else:
                    self.transcription.pop(key, None)
        if tr.get("model") and tr["model"] != self.names["asr"]:
            notes.append(f"audio.input.transcription.model={tr['model']} (heard by {self.names['asr']})")
        lang = self.transcription.get("language")
        hears, speaks = self.languages.asr, self.languages.voice
        if lang and hears is not None and lang not in hears:
            notes.append(f"audio.input.transcription.language={lang}: {self.names['asr']} hears {_names(hears)} only "
                         "(--asr whisper-base, or a recognizer by URL, hears it)")
        if lang and self.reply_language is None:
            notes.append(f"audio.input.transcription.language={lang}: the voice speaks {_names(speaks)} only, so "
                         f"replies are in {_names(speaks)}, not {_names((lang,))}")
        out.append(ConfigureRecognizer(lang, self.transcription.get("prompt")))
        return notes

    # ------------------------------------------------------------- items
    def last_item_id(self) -> str | None:
        return self.items[-1]["id"] if self.items else None

    def find(self, item_id) -> dict | None:
        return next((i for i in self.items if i["id"] == item_id), None)

    def messages(self, items: list[dict] | None = None) -> list[dict]:
        return chat_messages(self.items if items is None else items)

    def add_item(self, item: dict, after: str | None = None) -> list:
        """Add a finished item (at the end, or after the item ``after`` names; "root": first) and announce it."""
        if after is None or (self.items and after == self.items[-1]["id"]):
            at = len(self.items)
        else:
            at = 0 if after == "root" else next(i for i, x in enumerate(self.items) if x["id"] == after) + 1
        prev = self.items[at - 1]["id"] if at else None
        self.items.insert(at, item)
        return [Emit(ev.ItemAdded(prev, item)), Emit(ev.ItemDone(prev, item))]

    def commit_user_item(self, item_id: str, transcript: str, asr_error: str | None = None) -> list:
        """The user's turn is committed: the buffer, the item, and its transcription (or its failure)."""
        out = [Emit(ev.InputCommitted(item_id, self.last_item_id()))]
        out += self.add_item({"id": item_id, "object": "realtime.item", "type": "message", "role": "user",
                               "status": "completed", "content": [{"type": "input_audio", "transcript": transcript}]})
        if asr_error is not None:
            error = error_body("transcription_failed", f"the recognizer failed: {asr_error}", type_="server_error")
            out.append(Emit(ev.TranscriptionFailed(item_id, 0, error)))
        else:
            out.append(Emit(ev.TranscriptionCompleted(item_id, 0, transcript, {"type": "duration", "seconds": 0})))
        return out

    def truncate(self, item_id: str, audio_end_ms: int, audio_ms: float | None) -> list:
        """An assistant item cut to what was heard of it: its transcript to the words said in the first
        ``audio_end_ms`` of its ``audio_ms`` (in proportion to the audio; all of them when that is unknown). A
        client's ``conversation.item.truncate`` and a barge-in on a paced transport both end here."""
        item = self.find(item_id)
        if item is not None:
            words = (item["content"][0].get("transcript") or "").split()
            keep = len(words) if not audio_ms else max(0, round(len(words) * min(1.0, audio_end_ms / audio_ms)))
            item["content"][0]["transcript"] = " ".join(words[:keep])
        return [Emit(ev.ItemTruncated(item_id, 0, audio_end_ms))]

    # ------------------------------------------------------------- responses
    @property
    def responds(self) -> bool:
        return self.session_type == "realtime"

    def respond(self, marks: dict, extra: list | None = None, config: ResponseConfig | None = None,
                items: list[dict] | None = None) -> list:
        """A response to the conversation (or to ``items``), with ``extra`` messages after it. In the conversation
        it goes live, superseding the live one; out of band it runs beside it."""
        config = config or self.response_config()
        rid = self.new_id("resp")
        out = []
        if config.in_conversation:
            out += self._go_live(rid)
            self.responses[rid] = Reply(rid, config, "live", new_id=self.new_id)
        else:
            self.responses[rid] = Reply(rid, config, "oob", new_id=self.new_id)
        return out + [StartResponse(rid, config, self.messages(items) + (extra or []), marks=marks)]

    def speculate(self, transcript: str, marks: dict | None = None) -> list:
        """Partial inference: a held response from the transcript so far (if none is held already)."""
        if not transcript or self.spec is not None or not self.responds:
            return []
        rid = self.new_id("resp")
        config = self.response_config()
        self.spec = rid
        self.responses[rid] = Reply(rid, config, "speculating", transcript, new_id=self.new_id)
        return [StartResponse(rid, config, self.messages() + [{"role": "user", "content": transcript}],
                              speculative=True, marks=marks or {})]

    def discard_speculation(self) -> list:
        if self.spec is None:
            return []
        rid, self.spec = self.spec, None
        self.responses.pop(rid, None)
        return [CancelResponse(rid, "discarded")]

    def end_of_turn(self, transcript: str, create_response: bool, marks: dict, fits, failed=()) -> list:
        """The user's turn is committed: commit the speculation if it was made from this transcript (``fits``),
        else respond anew; or nothing, when no response is wanted."""
        if not create_response or not transcript or not self.responds:
            return self.discard_speculation()
        spec = self.responses.get(self.spec) if self.spec else None
        if spec is not None and fits(spec.transcript, transcript) and spec.rid not in failed:
            self.spec = None
            out = self._go_live(spec.rid)
            spec.state = "live"
            return out + [CommitResponse(spec.rid, marks.get("turn_end", 0.0), marks)]
        return self.discard_speculation() + self.respond(marks)

    def _go_live(self, rid: str) -> list:
        out = []
        if self.live is not None:
            out.append(CancelResponse(self.live, "superseded"))
        self.live = rid
        return out + [SetResponding(True)]

    def item_added(self, config: ResponseConfig, item: dict) -> list:
        """A response's output item began (in the conversation: announced after the item before it)."""
        if not config.in_conversation:
            return []
        return [Emit(ev.ItemAdded(self.last_item_id(), item))]

    def item_done(self, config: ResponseConfig, item: dict, audio_ms: float = 0.0) -> list:
        if not config.in_conversation:
            return []
        prev = self.last_item_id()
        self.items.append(item)
        if item.get("type") == "message" and item.get("role") == "assistant":
            self.audio_ms[item["id"]] = round(audio_ms)  # what truncate checks audio_end_ms against
        return [Emit(ev.ItemDone(prev, item))]

    def response_done(self, rid: str, status: str, plays: bool) -> list:
        """A response finished (its closing events are out). A completed one whose audio is being played out
        (``plays``) stays armed for barge-in until its playback drains."""
        state = self.responses.pop(rid, None)
        if state is None or self.live != rid:
            return []
        self.live = None
        if status == "completed" and plays:
            self.playing = rid
            return []
        return [SetResponding(False)]

    def drained(self, rid: str) -> list:
        """Playback of a completed response's audio ended (or the call's queue is empty)."""
        out = []
        if self.playing == rid:
            self.playing = None
            out.append(SetResponding(False))
        if self.live is None:
            out.append(Emit(ev.OutputStopped(rid)))
        return out

    def barge_in(self) -> tuple[str | None, list]:
        """The user talks over the agent: which response was speaking, and what to do (cancel it if still live).
        The shell clears the output and, on a paced transport, truncates to what was heard."""
        rid = self.live or self.playing
        if rid is None:
            return None, []
        self.playing = None
        out: list = [SetResponding(False)]
        if rid == self.live:
            out.append(CancelResponse(rid, "turn_detected"))
        return rid, out

    def cancel_targets(self, rid: str | None) -> list[str]:
        live_and_oob = [r for r in [self.live, *(k for k, v in self.responses.items() if v.state == "oob")] if r]
        if rid is None:
            return live_and_oob[:1]
        return [r for r in live_and_oob if r == rid]

    # ------------------------------------------------------------- client events


def error(code, message, param=None, event_id=None, type_="invalid_request_error") -> Emit:
    """An ``error`` event to send (``event_id``: the client event it answers)."""
    return Emit(error_event(code, message, param, event_id, type_))


def normalized(item: dict, ids=new_id) -> dict:
    """A client's item as the conversation holds it: an id, object and status, and the fields of its type."""
    out = {"id": item.get("id") or ids("item"), "object": "realtime.item", "type": item.get("type", "message"),
           "status": "completed"}
    if out["type"] == "message":
        out["role"] = item["role"]
        out["content"] = [dict(c) for c in item["content"]]
    elif out["type"] == "function_call":
        out.update(name=item["name"], call_id=item["call_id"], arguments=item["arguments"])
    else:
        out.update(call_id=item["call_id"], output=item["output"])
    return out


def chat_messages(items: list[dict]) -> list[dict]:
    """Realtime items as chat-completions messages: a message's text (or its transcript, as heard after a
    truncation), consecutive function calls as one assistant message with ``tool_calls``, their outputs as ``tool``
    messages, the assistant's consecutive messages as one."""
    out: list[dict] = []
    for item in items:
        kind = item.get("type", "message")
        if kind == "function_call":
            call = {"id": item["call_id"], "type": "function",
                    "function": {"name": item["name"], "arguments": item["arguments"]}}
            if out and out[-1]["role"] == "assistant" and out[-1].get("tool_calls") is not None \
                    and not out[-1].get("content"):
                out[-1]["tool_calls"].append(call)
            else:
                out.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            out.append({"role": "tool", "tool_call_id": item["call_id"], "content": item["output"]})
        else:
            text = " ".join(c.get("text") or c.get("transcript") or "" for c in item.get("content") or []
                            if isinstance(c, dict)).strip()
            if text and item["role"] == "assistant" and out and out[-1]["role"] == "assistant" \
                    and out[-1].get("content") and not out[-1].get("tool_calls"):
                out[-1]["content"] += " " + text  # one turn of the assistant's ("One moment." then its answer):
                # chat templates refuse two assistant messages in a row
            elif text:
                out.append({"role": item["role"], "content": text})
    return out


def _names(codes) -> str:
    """Languages by name ("English and French"), from their codes."""
    return " and ".join(LANGUAGE_NAMES.get(c, c) for c in codes)
