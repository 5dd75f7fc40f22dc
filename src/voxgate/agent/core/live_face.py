"""GPT-Live's vocabulary (OpenAI's Live API) on the conversation engine: the second face, beside ``realtime_face``.

The engine, the call layer and the models are the same as for a Realtime call; what differs is the wire. Live has
no turns, items or responses a client drives: the voice listens, decides when to speak and yields to barge-in on its
own (the engine's ``semantic_vad`` and barge-in, always on), and the client adds context while it talks:

- ``session.start`` (the primary WebSocket's first message; a WebRTC or SIP session starts with the config given
  with the offer) is validated strictly (``check_session``: an unknown field is an ``unknown_parameter`` error naming
  it) and answered with ``session.started`` and the resolved session; nothing is sent before it;
- ``session.update`` changes the delegation settings only (the type is fixed); ``session.input_audio.mute`` /
  ``unmute`` (the engine hears silence meanwhile); ``session.instructions.append`` (the voice's instructions grow),
  ``session.thinking.append`` (silent context) and ``session.commentary.append`` (context the voice speaks now),
  each acknowledged ``…appended`` with its place on the session's timeline; ``session.close`` ends the session with
  ``session.closed`` (last, with the usage);
- what the engine says is mapped when it is sent (``wire``): the caller's words as ``session.input_transcript.delta``
  (the turn's final transcript: a draft at a pause may be wrong, and a Live delta cannot be taken back),
  the voice's as ``session.output_transcript.delta`` (each with ``event_id`` and ``start_ms``/``end_ms``), errors in
  Live's shape; the rest of the Realtime vocabulary (items, responses, buffers) is not Live's and is not sent. The
  voice's audio is the transport's (``session.output_audio.delta`` on a WebSocket, the track on WebRTC).

A WebRTC session's ``client.data_channel`` permissions hold: a client event the app did not allow gets an ``info``
event (``data_channel_permissions``) and is dropped; a server event it did not allow is not sent on the channel.

Delegation (``delegation.py``): at the end of a turn the engine asks the face whether it ``takes_turn``; every turn
but small talk is delegated to the app (``client``), a Responses backend (``responses``: its stream as
``response.event``, function calls answered by the app's ``response.item.create`` + ``response.create``) or
decision questions (``decisions``: ``decision.event``), with a spoken acknowledgement after
``acknowledgement_delay_ms`` unless the answer came first. ``triggers`` ask their questions on each transcript delta
of their kind. A fixture plays given audio as it is (the input muted until it has played); hosted tools are
refused by name. ``store: true`` records the session (``Record``): ``GET …/content`` and forks (``fork_session``) read it.
``idle_timeout_s`` and ``wake_policy`` are checked and not yet acted on (the voice listens from the start).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from . import delegation as dl
from . import events as ev
from . import live_events as lv
from .schema import Invalid, as_object, only_known
from .conversation import (CancelResponse, ClearOutput, ConfigureAudio, Emit, EndSession, MuteInput, Record,
                           StartResponse, chat_messages, normalized)
from .reply import Called, Ended, Failed, Said
from .voices import OPENAI_VOICES, resolve_voice

LIVE_VOICES = ("alloy", "ash", "ballad", "beacon", "bossa", "cedar", "cinder", "coral", "delta", "echo", "gleam",
               "marin", "meridian", "quartz", "ripple", "sage", "shida", "shimmer", "stone", "tempo", "verse",
               "vesper", "willow")
FORMATS = {"audio/pcm": (16000, 24000), "audio/pcmu": (8000,), "audio/pcma": (8000,)}
SESSION_LIFETIME = 3600  # seconds a session may last (``expires_at``)
USAGE_EVERY = 15.0  # seconds between session.usage.updated events (cumulative)
MAX_APPEND = 4000  # characters of one instructions / thinking / commentary append (~500 tokens)
MAX_FIXTURE = 30 * 24000 * 2  # bytes of a fixture: 30 s of PCM16 at 24 kHz
MAX_INPUT = 128  # messages of history a session may start with (and decision items it may hold)
MAX_DELEGATIONS = 64  # delegations a session remembers (an app may answer one of them later)
CLIENT_EVENTS = ("session.start", "session.update", "session.input_audio.append", "session.input_audio.mute",
                 "session.input_audio.unmute", "session.output_audio.fixture.play", "session.instructions.append",
                 "session.thinking.append", "session.commentary.append", "decision.create", "decision.item.create",
                 "decision.item.delete", "response.item.create", "response.create", "transport.dtmf.send",
                 "session.close")


def check_session(s, *, transport: str, any_voice: bool = False) -> None:
    """A Live session configuration, checked as GPT-Live checks it (``transport``: websocket, webrtc or sip)."""
    s = as_object(s, "session")
    only_known(s, "session", ("model", "instructions", "audio", "delegation", "input", "store", "triggers", "client",
                          "safety_identifier", "type", "idle_timeout_s", "wake_policy"))
    v = s.get("idle_timeout_s")
    if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
        raise Invalid("session.idle_timeout_s", "'session.idle_timeout_s' is a whole number of seconds", "invalid_type")
    if "wake_policy" in s:
        w = as_object(s["wake_policy"], "session.wake_policy")
        only_known(w, "session.wake_policy", ("type", "vad_threshold"))
        if w.get("type") != "speech":
            raise Invalid("session.wake_policy.type", "'session.wake_policy.type' is speech")
        t = w.get("vad_threshold", 0.5)
        if not isinstance(t, (int, float)) or isinstance(t, bool) or not 0 <= t <= 1:
            raise Invalid("session.wake_policy.vad_threshold", "a number from 0 to 1")
    if transport == "sip":
        if s.get("type") != "live":
            raise Invalid("session.type", "a SIP accept takes {\"type\": \"live\", ...}")
    elif "type" in s:
        raise Invalid("session.type", "Unknown parameter: 'session.type'.", "unknown_parameter")
    if not isinstance(s.get("model"), str) or not s["model"]:
        raise Invalid("session.model", "'session.model' is required (e.g. gpt-live-1)", "missing_required_parameter")
    if s.get("instructions") is not None and not isinstance(s["instructions"], str):
        raise Invalid("session.instructions", "'session.instructions' must be a string or null", "invalid_type")
    for key in ("store",):
        if key in s and not isinstance(s[key], bool):
            raise Invalid(f"session.{key}", f"'session.{key}' must be a boolean", "invalid_type")
    if "safety_identifier" in s and not isinstance(s["safety_identifier"], str):
        raise Invalid("session.safety_identifier", "'session.safety_identifier' must be a string", "invalid_type")
    if "audio" in s:
        audio = as_object(s["audio"], "session.audio")
        only_known(audio, "session.audio", ("format", "output"))
        if "format" in audio:
            if transport != "websocket":
                raise Invalid("session.audio.format", "audio.format is for a WebSocket session: WebRTC and SIP "
                                                      "negotiate their media format")
            check_format(audio["format"])
        if "output" in audio:
            out = as_object(audio["output"], "session.audio.output")
            only_known(out, "session.audio.output", ("voice",))
            if "voice" in out:
                check_voice(out["voice"], any_voice)
    if s.get("delegation") is not None:
        check_delegation(s["delegation"])
    if "input" in s:
        check_input(s["input"])
    if s.get("triggers") is not None:
        check_triggers(s["triggers"])
    if "client" in s:
        if transport != "webrtc":
            raise Invalid("session.client", "'session.client' is for a WebRTC session's data channel")
        c = as_object(s["client"], "session.client")
        only_known(c, "session.client", ("data_channel",))
        dc = as_object(c.get("data_channel") or {}, "session.client.data_channel")
        only_known(dc, "session.client.data_channel", ("allowed_client_events", "allowed_server_events"))
        for key in ("allowed_client_events", "allowed_server_events"):
            v = dc.get(key)
            if v is not None and v != "all" and not (isinstance(v, list) and len(v) <= 256):
                raise Invalid(f"session.client.data_channel.{key}", f"'{key}' is \"all\" or a list (at most 256)")


def check_delegation(d, current: str | None = None) -> None:
    """``session.delegation`` (``current``: an update's, whose type is fixed and whose settings are sparse)."""
    d = as_object(d, "session.delegation")
    kind = d.get("type")
    if kind not in ("client", "responses", "decisions"):
        raise Invalid("session.delegation.type", "'session.delegation.type' must be client, responses or decisions")
    if current is not None and kind != current:
        raise Invalid("session.delegation.type", f"the delegation type is fixed: {current}", "invalid_value")
    only_known(d, "session.delegation", ("type", "acknowledgement_delay_ms", kind) if kind != "client"
               else ("type", "acknowledgement_delay_ms"))
    _ack_delay(d)
    if kind == "responses":
        if kind not in d and current is None:
            raise Invalid("session.delegation.responses", "a responses delegation needs its settings: "
                          "{\"type\": \"responses\", \"responses\": {\"model\": …}}", "missing_required_parameter")
        if kind in d:
            check_responses(d[kind], update=current is not None)
    elif kind == "decisions":
        if kind not in d and current is None:
            raise Invalid("session.delegation.decisions", "a decisions delegation needs its questions",
                          "missing_required_parameter")
        if kind in d:
            q = as_object(d[kind], "session.delegation.decisions")
            only_known(q, "session.delegation.decisions", ("model", "questions"))
            if current is None and not isinstance(q.get("model"), str):
                raise Invalid("session.delegation.decisions.model", "'session.delegation.decisions.model' is "
                              "required", "missing_required_parameter")
            if "questions" in q or current is None:
                why = dl.check_questions(q.get("questions"), "session.delegation.decisions.questions")
                if why:
                    raise Invalid("session.delegation.decisions.questions", why)


RESPONSES_KEYS = ("model", "instructions", "max_output_tokens", "parallel_tool_calls", "reasoning", "service_tier",
                  "text", "tool_choice", "tools")


def check_responses(r, update: bool = False) -> None:
    """A Responses backend's settings: function tools run by the app; a hosted tool (web search, file search, code
    interpreter, MCP, …) needs OpenAI's servers and is refused by name."""
    p = "session.delegation.responses"
    r = as_object(r, p)
    only_known(r, p, RESPONSES_KEYS)
    if not update and (not isinstance(r.get("model"), str) or not r["model"]):
        raise Invalid(f"{p}.model", f"'{p}.model' is required", "missing_required_parameter")
    if r.get("instructions") is not None and not isinstance(r["instructions"], str):
        raise Invalid(f"{p}.instructions", "a string or null", "invalid_type")
    m = r.get("max_output_tokens")
    if m is not None and (not isinstance(m, int) or isinstance(m, bool) or m < 16):
        raise Invalid(f"{p}.max_output_tokens", "an integer of at least 16")
    tools = r.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise Invalid(f"{p}.tools", "a list of tools", "invalid_type")
        for i, t in enumerate(tools):
            tp = f"{p}.tools[{i}]"
            t = as_object(t, tp)
            if t.get("type") in dl.HOSTED_TOOLS:
                raise Invalid(f"{tp}.type", f"hosted tools ({t['type']}) run on OpenAI's servers and are not "
                              "supported by this server: give a function tool and run it in your app", "not_supported")
            if t.get("type") != "function":
                raise Invalid(f"{tp}.type", "a tool's type is function")
            only_known(t, tp, ("type", "name", "description", "parameters", "strict"))
            if not isinstance(t.get("name"), str) or not t["name"]:
                raise Invalid(f"{tp}.name", "a function tool needs a name", "missing_required_parameter")
    tc = r.get("tool_choice")
    if tc is not None and tc not in ("auto", "none", "required"):
        if not isinstance(tc, dict) or tc.get("type") != "function" or not isinstance(tc.get("name"), str):
            raise Invalid(f"{p}.tool_choice", "auto, none, required or {\"type\": \"function\", \"name\": …} "
                          "(hosted and MCP tools are not supported by this server)", "not_supported")
        if tc["name"] not in [t.get("name") for t in tools or []]:
            raise Invalid(f"{p}.tool_choice", f"no tool named {tc['name']!r}")


def check_triggers(triggers) -> None:
    if not isinstance(triggers, list):
        raise Invalid("session.triggers", "'session.triggers' is a list", "invalid_type")
    seen = set()
    for i, t in enumerate(triggers):
        p = f"session.triggers[{i}]"
        t = as_object(t, p)
        only_known(t, p, ("type", "event_type", "decisions"))
        if t.get("type") != "decisions":
            raise Invalid(f"{p}.type", "a trigger's type is decisions")
        if t.get("event_type") not in TRIGGER_EVENTS:
            raise Invalid(f"{p}.event_type", "a trigger fires on " + " or ".join(TRIGGER_EVENTS))
        if t["event_type"] in seen:
            raise Invalid(f"{p}.event_type", "at most one trigger per event_type")
        seen.add(t["event_type"])
        q = as_object(t.get("decisions"), f"{p}.decisions")
        only_known(q, f"{p}.decisions", ("questions",))
        why = dl.check_questions(q.get("questions"), f"{p}.decisions.questions")
        if why:
            raise Invalid(f"{p}.decisions.questions", why)


TRIGGER_EVENTS = ("session.input_transcript.delta", "session.output_transcript.delta")
DTMF_KEYS = "0123456789*#ABCD"


@dataclass(frozen=True)
class SendDtmf:
    """Send a key to the caller (a phone call); the executor says how it went (``Engine.dtmf_sent``)."""

    key: str
    client_event_id: str | None = None


def fork_session(stored: dict, conversation: list, overrides, transport: str) -> dict:
    """A fork's session: the stored session's (its model, voice, instructions, delegation), its conversation so far
    as ``input``, and the overrides a fork may make (``audio.format`` on a WebSocket, ``client`` on WebRTC, the
    Responses backend's settings, ``store``)."""
    o = as_object({} if overrides is None else overrides, "session")
    only_known(o, "session", ("audio", "client", "delegation", "store"))
    base = {k: v for k, v in stored.items() if k not in ("id", "object", "expires_at", "status", "type")}
    audio = {k: v for k, v in (base.get("audio") or {}).items() if transport == "websocket" or k != "format"}
    if "audio" in o:
        a = as_object(o["audio"], "session.audio")
        only_known(a, "session.audio", ("format",))
        if transport != "websocket":
            raise Invalid("session.audio.format", "a WebRTC fork negotiates its audio format")
        check_format(a["format"])
        audio["format"] = a["format"]
    base["audio"] = audio
    if transport != "webrtc":
        base.pop("client", None)
    if "client" in o:
        if transport != "webrtc":
            raise Invalid("session.client", "client overrides are for WebRTC forks")
        base["client"] = {**(base.get("client") or {}), **as_object(o["client"], "session.client")}
    if "delegation" in o:
        current = (base.get("delegation") or {"type": "client"})["type"]
        if current != "responses":
            raise Invalid("session.delegation", "a fork may change only a Responses delegation's settings")
        check_delegation(o["delegation"], current)
        merged = dict(base["delegation"])
        for key, value in o["delegation"].items():
            merged[key] = {**(merged.get(key) or {}), **value} if isinstance(value, dict) else value
        base["delegation"] = merged
    if "store" in o:
        if not isinstance(o["store"], bool):
            raise Invalid("session.store", "'session.store' must be a boolean", "invalid_type")
        base["store"] = o["store"]
    history = list(base.get("input") or [])
    for m in conversation:
        role = {"user": "user", "assistant": "assistant"}.get(m.get("role"), "developer")
        kind = "output_text" if role == "assistant" else "input_text"
        if m.get("text"):
            history.append({"role": role, "content": [{"type": kind, "text": m["text"]}]})
    base["input"] = history[-MAX_INPUT:]
    return base


def _ack_delay(d: dict) -> None:
    v = d.get("acknowledgement_delay_ms")
    if v is not None and (not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= 10000):
        raise Invalid("session.delegation.acknowledgement_delay_ms", "an integer of milliseconds, 0-10000")


def check_format(fmt) -> None:
    f = as_object(fmt, "session.audio.format")
    only_known(f, "session.audio.format", ("type", "rate"))
    rates = FORMATS.get(f.get("type"))
    if rates is None:
        raise Invalid("session.audio.format.type", "the format is audio/pcm (16000 or 24000), audio/pcmu or "
                                                   "audio/pcma (8000)")
    if f.get("rate", rates[-1]) not in rates:
        raise Invalid("session.audio.format.rate", f"{f['type']} is at {' or '.join(map(str, rates))} Hz")


def check_voice(voice, any_voice: bool) -> None:
    if isinstance(voice, dict):
        only_known(voice, "session.audio.output.voice", ("id",))
        if not any_voice:
            raise Invalid("session.audio.output.voice", "custom voices need a voice by URL (--tts openai:…)")
        return
    if not isinstance(voice, str):
        raise Invalid("session.audio.output.voice", "a voice name or {\"id\": …}", "invalid_type")
    if voice not in LIVE_VOICES and not any_voice:
        try:
            resolve_voice(voice)
        except ValueError:
            raise Invalid("session.audio.output.voice", f"unknown voice {voice!r}; voices: "
                                                        f"{', '.join(LIVE_VOICES)}") from None


def check_input(items) -> None:
    if not isinstance(items, list) or len(items) > MAX_INPUT:
        raise Invalid("session.input", f"'session.input' is a list of at most {MAX_INPUT} messages")
    for i, m in enumerate(items):
        p = f"session.input[{i}]"
        m = as_object(m, p)
        only_known(m, p, ("type", "role", "content", "id", "status"))
        if m.get("role") not in ("developer", "user", "assistant"):
            raise Invalid(f"{p}.role", "a message's role is developer, user or assistant")
        content = m.get("content")
        if not isinstance(content, list) or len(content) != 1 or not isinstance(content[0], dict) \
                or not isinstance(content[0].get("text"), str):
            raise Invalid(f"{p}.content", "a message has one text part: [{\"type\": \"input_text\", \"text\": …}]")


class LiveFace:
    name = "live"
    replays = True  # a sideband first gets a short replay of what was sent, then the live stream

    def __init__(self, transport: str = "websocket", any_voice: bool = False, session_id: str | None = None,
                 unix_now: float = 0.0, fork_of: dict | None = None):
        self.transport, self.any_voice = transport, any_voice
        self.fork_of = fork_of  # a WebSocket fork's stored session: its session.start carries overrides only
        self.unix_start = int(unix_now)  # the session's start in Unix seconds (``expires_at`` counts from it)
        self.session_id = session_id or "live_" + secrets.token_hex(12)
        self.started = False
        self.config: dict = {}
        self.expires_at = 0
        self.t0: float | None = None  # the session's timeline starts here (monotonic seconds)
        self.turn_start = 0  # the caller's current turn on the timeline (ms)
        self.closed = False
        self.next_usage: float | None = None  # when the next session.usage.updated is due
        self.delegations: dict[str, dl.Delegation] = {}  # by id: what the voice handed on, and its state
        self.backends: dict[str, tuple] = {}  # the backend requests running: key -> ("delegation", id) or a trigger's
        self.acks = 0  # acknowledgements said (they vary)
        self.decision_items: list[dict] = []  # decision.item.create's inputs for later decisions
        self.fired: dict[str, str] = {}  # a trigger's event type -> the transcript delta it last fired on
        self.trigger_due: float | None = None  # when fired triggers are to be evaluated
        self.fixture: tuple[str, str | None] | None = None  # the fixture playing: (its response, the command's id)

    # ------------------------------------------------------------- the timeline
    def ms(self, now: float) -> int:
        if self.t0 is None:
            self.t0 = now
        return max(0, round((now - self.t0) * 1000))

    def resolved(self) -> dict:
        out = {"id": self.session_id, "object": "live.session", "expires_at": self.expires_at, "status": "active",
               **self.config}
        audio = dict(out.get("audio") or {})
        audio.setdefault("output", {"voice": "marin"})
        if self.transport == "websocket":
            audio.setdefault("format", {"type": "audio/pcm", "rate": 24000})
        out["audio"] = audio
        out.setdefault("delegation", {"type": "client"})
        out.setdefault("input", [])
        return out

    # ------------------------------------------------------------- starting
    def start(self, conv, initial: dict | None, now: float = 0.0) -> list:
        """WebRTC and SIP start with the offer's session; a WebSocket waits for ``session.start``."""
        self.ms(now)
        if initial is None:
            return []
        return self._start(conv, initial, None, now)

    def _start(self, conv, session: dict, eid, now: float) -> list:
        try:
            check_session(session, transport=self.transport, any_voice=self.any_voice)
        except Invalid as exc:
            return [Emit(lv.live_error(exc.code, str(exc), exc.param, eid))]
        self.started = True
        self.next_usage = now + USAGE_EVERY
        self.config = {k: v for k, v in session.items() if k != "type"}
        self.expires_at = self.unix_start + SESSION_LIFETIME
        realtime: dict = {"audio": {"input": {"turn_detection": {"type": "semantic_vad"}}, "output": {}}}
        if (session.get("instructions") or "").strip():
            realtime["instructions"] = session["instructions"]
        voice = ((session.get("audio") or {}).get("output") or {}).get("voice", "marin")
        realtime["audio"]["output"]["voice"] = voice["id"] if isinstance(voice, dict) else \
            voice if self.any_voice else OPENAI_VOICES.get(voice, voice)
        out: list = []
        conv.apply_session(realtime, out)
        fmt = (session.get("audio") or {}).get("format")
        if fmt:
            out = [a for a in out if type(a) is not ConfigureAudio] + [ConfigureAudio(fmt, fmt)]
        for m in session.get("input") or []:
            role = "system" if m["role"] == "developer" else m["role"]
            kind = "output_text" if role == "assistant" else "input_text"
            out += conv.add_item(normalized({"type": "message", "role": role,
                                             "content": [{"type": kind, "text": m["content"][0]["text"]}]},
                                            conv.new_id))
        if session.get("store"):  # kept for GET …/content and forks
            out.append(Record())
        return out + [Emit(lv.SessionStarted(self.resolved(), eid))]

    # ------------------------------------------------------------- time
    def next_deadline(self) -> float | None:
        if not self.started or self.closed:
            return None
        due = [self.next_usage] + [t for d in self.delegations.values() for t in (d.ack_due, d.answer_due)
                                   if t is not None]
        if self.trigger_due is not None:
            due.append(self.trigger_due)
        return min(t for t in due if t is not None)

    def timer(self, conv, now: float) -> list:
        """``session.usage.updated`` every ``USAGE_EVERY`` s (the session's seconds so far); acknowledgements due;
        triggers that fired."""
        if self.closed or not self.started:
            return []
        out: list = []
        if self.next_usage is not None and now >= self.next_usage:
            self.next_usage = now + USAGE_EVERY
            out.append(Emit(lv.UsageUpdated({"seconds": round(self.ms(now) / 1000, 3)})))
        for d in list(self.delegations.values()):
            if d.ack_due is not None and now >= d.ack_due:
                out += self._ack(conv, d, now)
            if d.answer_due is not None and now >= d.answer_due:  # the app added nothing: the voice answers
                d.answer_due = None
                out += conv.respond({"turn_end": now})
        if self.trigger_due is not None and now >= self.trigger_due:
            self.trigger_due = None
            out += self._evaluate_triggers(conv)
        return out

    # ------------------------------------------------------------- delegation
    @property
    def delegation(self) -> dict:
        return self.config.get("delegation") or {"type": "client"}

    def delegates(self, transcript: str) -> bool:
        """Will this turn go to the backend (so the voice prepares no answer of its own at the pause)?"""
        return self.started and not self.closed and not dl.voice_keeps(transcript)

    def takes_turn(self, conv, transcript: str, create_response: bool, now: float) -> list | None:
        """The caller's turn is final: the voice answers it itself (None) or delegates it: the delegation is
        announced, the backend asked, the acknowledgement said now or after ``acknowledgement_delay_ms``."""
        if not create_response or not transcript or not self.delegates(transcript):
            return None
        cfg = self.delegation
        kind = cfg["type"]
        d = dl.Delegation(conv.new_id("item"), kind, self.ms(now))
        self.delegations[d.id] = d
        for old in list(self.delegations)[:-MAX_DELEGATIONS]:  # the oldest, if nothing of theirs still runs
            if not any(v[1] == old for v in self.backends.values()):
                self.delegations.pop(old)
        body = {"id": d.id, "type": "delegation", "target": kind}
        out: list = []
        if kind == "responses":
            d.response_id = conv.new_id("resp")
            body["response_id"] = d.response_id
            out.append(Emit(lv.DelegationCreated(body, d.offset_ms)))
            out += self._ask_responses(conv, d)
        else:
            out.append(Emit(lv.DelegationCreated(body, d.offset_ms)))
            if kind == "client":
                d.answer_due = now + dl.CLIENT_WAIT_S
            if kind == "decisions":
                out += self._ask_decisions(conv, d.id, cfg["decisions"]["questions"])
        delay = cfg.get("acknowledgement_delay_ms")
        delay = dl.DEFAULT_ACK_DELAY_MS[kind] if delay is None else delay
        if delay <= 0:
            out += self._ack(conv, d, now)
        else:
            d.ack_due = now + delay / 1000
        return out

    def _ack(self, conv, d: dl.Delegation, now: float) -> list:
        d.ack_due = None
        self.acks += 1
        return self._say(conv, dl.ack_for(self.acks - 1), now)

    def _say(self, conv, text: str, now: float) -> list:
        """The voice says ``text`` as it is (the synthesizer only)."""
        return conv.respond({"turn_end": now}, config=conv.response_config(say=text))

    def _cancel_acks(self) -> None:
        """The app is on it (a thinking or commentary append): no acknowledgement, and the voice does not answer
        for it."""
        for d in self.delegations.values():
            d.ack_due = d.answer_due = None

    def _backend_messages(self, conv, extra: list | None = None) -> list[dict]:
        msgs = [m for m in conv.messages() if not (m["role"] == "assistant" and m.get("content") in dl.ACKS)]
        return msgs + chat_messages(extra or [])

    def _ask_responses(self, conv, d: dl.Delegation) -> list:
        r = self.delegation.get("responses") or {}
        d.stream = dl.ResponsesStream(d.response_id, r.get("model", "voxgate"), conv.new_id)
        self.backends[d.response_id] = ("delegation", d.id)
        tc = r.get("tool_choice") or "auto"
        if isinstance(tc, dict):
            tc = {"type": "function", "name": tc["name"]}
        instructions = (r.get("instructions") or "").strip()
        instructions = dl.BACKEND_INSTRUCTIONS + ("\n\n" + instructions if instructions else "")
        start = dl.StartBackend(d.response_id, self._backend_messages(conv, d.extra), instructions,
                                dl.function_tools(r.get("tools") or []), tc, r.get("max_output_tokens") or 120)
        return [Emit(lv.ResponseEvent(e, d.id)) for e in d.stream.created()] + [start]

    def _ask_decisions(self, conv, key: str, questions: list) -> list:
        transcript = dl.transcript_of(self._backend_messages(conv) + chat_messages(self.decision_items))
        prompt = dl.decision_prompt(questions, transcript)
        if key in self.delegations:
            self.delegations[key].prompt_chars = len(prompt)
        self.backends[key] = self.backends.get(key) or ("delegation", key)
        return [dl.StartBackend(key, [{"role": "user", "content": prompt}],
                                "You answer questions about a conversation exactly in the format asked.", [], "none",
                                24 * len(questions) + 16)]

    def _evaluate_triggers(self, conv) -> list:
        out: list = []
        for t in self.config.get("triggers") or []:
            etype = t["event_type"]
            source = self.fired.get(etype)
            if source is None or any(v[0] == "trigger" and v[2] == etype for v in self.backends.values()):
                continue  # not fired, or its last evaluation still runs (it is evaluated again when that ends)
            del self.fired[etype]
            tid = conv.new_id("trig")
            d = dl.Delegation(tid, "trigger", 0, trigger_id=tid, source=(source, etype))
            self.delegations[tid] = d
            self.backends[tid] = ("trigger", tid, etype)
            out += self._ask_decisions(conv, tid, t["decisions"]["questions"])
        return out

    def backend(self, conv, key: str, what, now: float) -> list:
        """What a backend request made: text, a tool call, its end or its failure."""
        owner = self.backends.get(key)
        d = self.delegations.get(owner[1]) if owner else None
        if d is None:
            return []
        t = type(what)
        if t is Said:
            d.parts += 1
            if d.target != "responses":
                d.text += what.text
                return []
            return [Emit(lv.ResponseEvent(e, d.id)) for e in d.stream.said(what.text)]
        if t is Called:
            if d.target != "responses":
                return []
            d.calls[what.call_id] = (what.name, what.arguments)
            d.extra.append({"type": "function_call", "name": what.name, "call_id": what.call_id,
                            "arguments": what.arguments})
            return [Emit(lv.ResponseEvent(e, d.id)) for e in d.stream.called(what.name, what.call_id, what.arguments)]
        if t not in (Ended, Failed):
            return []
        self.backends.pop(key, None)
        failed = what.message if t is Failed else None
        if d.target == "responses":
            out = [Emit(lv.ResponseEvent(e, d.id)) for e in d.stream.ended("failed" if failed else what.status,
                                                                         failed)]
            if failed:
                self.delegations.pop(d.id, None)
                d.ack_due = None
                return out + [Emit(lv.live_error("backend_failed", f"the delegated response failed: {failed}", None,
                                                 None, "server_error"))] + self._say(conv, dl.FAILED_SAY, now)
            if any(c not in d.outputs for c in d.calls):  # the app runs the tools, then response.create
                return out
            text = d.stream.text.strip()
            self.delegations.pop(d.id, None)
            d.ack_due = None
            return out + (self._say(conv, text, now) if text else [])
        # a decision: the delegation's questions or a trigger's
        if d.target == "trigger":
            self.delegations.pop(d.id, None)
            questions = next((x["decisions"]["questions"] for x in self.config.get("triggers") or []
                              if x["event_type"] == d.source[1]), [])
            again = [] if d.source[1] not in self.fired else self._evaluate_triggers(conv)
        else:
            questions = (self.delegation.get("decisions") or {}).get("questions") or []
            again = []
        if failed:
            return [Emit(lv.live_error("decision_failed", f"the decision failed: {failed}", None, None,
                                       "server_error"))] + again
        model = (self.delegation.get("decisions") or {}).get("model") or "voxgate"
        decision = {"answers": dl.read_answers(questions, d.text), "model": model,
                    "usage": dl.usage(d.prompt_chars, d.parts)}
        event = {"type": "decision.completed", "decision": decision}
        if d.target == "trigger":
            ids = dict(trigger_id=d.trigger_id, source_event_id=d.source[0], source_event_type=d.source[1])
        else:
            ids = dict(delegation_id=d.id)
            if d.id in self.delegations and d.ack_due is None:
                self.delegations.pop(d.id, None)  # its acknowledgement was said: nothing more waits on it
        return [Emit(lv.DecisionEvent(event, **ids))] + again

    # ------------------------------------------------------------- client events
    def client_event(self, conv, event: dict, now: float, trusted: bool = False) -> list:
        """A client's event: from the frontend (its data channel's permissions hold) or, ``trusted``, from the
        app's server (a sideband)."""
        etype, eid = event.get("type"), event.get("event_id")
        eid = eid if isinstance(eid, str) else None
        if not isinstance(etype, str):
            return [Emit(lv.live_error("missing_type", "event has no 'type'", "type", eid))]
        if etype not in CLIENT_EVENTS:
            return [Emit(lv.live_error("unknown_event", f"unknown event type {etype!r}; valid types: "
                                       + ", ".join(CLIENT_EVENTS), "type", eid))]
        if self.closed:
            return [Emit(lv.live_error("session_closed", "the session has closed", None, eid))]
        if etype == "session.start":
            if self.started:
                return [Emit(lv.live_error("session_already_started", "session.start comes once, first", "type",
                                           eid))]
            session = event.get("session")
            if self.fork_of is not None:
                try:
                    session = fork_session(self.fork_of["session"], self.fork_of["conversation"], session,
                                           self.transport)
                except Invalid as exc:
                    return [Emit(lv.live_error(exc.code, str(exc), exc.param, eid))]
            return self._start(conv, session, eid, now)
        if not self.started:
            return [Emit(lv.live_error("session_not_started", "send session.start first", "type", eid))]
        self._trusted = trusted
        allowed = None if trusted else self._allowed("allowed_client_events")
        if allowed is not None and etype not in allowed:  # the frontend may send only what the app allowed
            return [Emit(lv.Info("data_channel_permissions", f"{etype} is not among this session's "
                                 "client.data_channel.allowed_client_events: ignored", eid))]
        handler = getattr(self, "_on_" + etype.replace(".", "_"), None)
        if handler is None:
            return [Emit(lv.live_error("not_supported", f"{etype} is not supported by this server", "type", eid))]
        return handler(conv, event, eid, now)

    def _on_session_update(self, conv, event, eid, now):
        s = event.get("session")
        if not isinstance(s, dict):
            return [Emit(lv.live_error("invalid_type", "'session' must be an object", "session", eid))]
        for key in s:
            if key not in ("delegation", "triggers"):
                return [Emit(lv.live_error("unknown_parameter", f"session.update changes only delegation settings "
                                           f"and triggers: '{key}' is fixed at startup", f"session.{key}", eid))]
        current = self.delegation["type"]
        try:
            if s.get("delegation") is not None:
                check_delegation(s["delegation"], current)
            if s.get("triggers") is not None:
                check_triggers(s["triggers"])
        except Invalid as exc:
            return [Emit(lv.live_error(exc.code, str(exc), exc.param, eid))]
        d = s.get("delegation")
        if d is not None:  # sparse: what is given replaces, the rest stays
            merged = dict(self.delegation)
            for key, value in d.items():
                merged[key] = {**(merged.get(key) or {}), **value} if isinstance(value, dict) else value
            self.config["delegation"] = merged
        if "triggers" in s:
            if s["triggers"]:
                self.config["triggers"] = s["triggers"]
            else:
                self.config.pop("triggers", None)
                self.fired.clear()
        return [Emit(lv.SessionUpdated(self.resolved(), eid))]

    def _on_session_input_audio_append(self, conv, event, eid, now):  # a WebSocket takes these itself, as audio
        return [Emit(lv.live_error("not_supported", "over WebRTC the input audio is the microphone track", "type",
                                   eid))]

    def _on_session_input_audio_mute(self, conv, event, eid, now):
        return [MuteInput(True), Emit(lv.InputMuted(eid))]

    def _on_session_input_audio_unmute(self, conv, event, eid, now):
        return [MuteInput(False), Emit(lv.InputUnmuted(eid))]

    def _append(self, event, eid, now, kind) -> tuple[str | None, list]:
        content = event.get("content")
        if not isinstance(content, str) or not content.strip():
            return None, [Emit(lv.live_error("invalid_value", "'content' must be a non-empty string", "content",
                                             eid))]
        if len(content) > MAX_APPEND:
            return None, [Emit(lv.live_error("invalid_value", f"'content' is at most {MAX_APPEND} characters",
                                             "content", eid))]
        if self.fixture is not None:
            return None, [Emit(lv.live_error("invalid_request_error", "context cannot be appended while a fixture "
                                             "plays", "type", eid))]
        if "delegation_id" not in event:
            return None, [Emit(lv.live_error("missing_required_parameter", "'delegation_id' is required (null when "
                                             "the context belongs to no delegation)", "delegation_id", eid))]
        did = event["delegation_id"]
        if did is not None:
            d = self.delegations.get(did) if isinstance(did, str) else None
            if d is None or d.target == "trigger":
                return None, [Emit(lv.live_error("invalid_value", f"no such delegation: {did!r}", "delegation_id",
                                                 eid))]
            if d.target == "responses":
                return None, [Emit(lv.live_error("invalid_value", "a Responses delegation's answer is its backend's:"
                                                 " delegation_id must name a client or decisions delegation",
                                                 "delegation_id", eid))]
        if kind in ("thinking", "commentary"):  # the app is on it: no acknowledgement is said any more
            self._cancel_acks()
        t = self.ms(now)
        return content, [Emit(lv.Appended(kind, t, t, eid))]

    def _on_session_instructions_append(self, conv, event, eid, now):
        content, out = self._append(event, eid, now, "instructions")
        if content is not None:
            conv.instructions = (conv.instructions.rstrip() + "\n\n" + content).strip()
        return out

    def _on_session_thinking_append(self, conv, event, eid, now):
        content, out = self._append(event, eid, now, "thinking")
        if content is not None:  # silent: the voice knows it from now on
            conv.add_item(normalized({"type": "message", "role": "system",
                                      "content": [{"type": "input_text", "text": content}]}, conv.new_id))
        return out

    def _on_session_commentary_append(self, conv, event, eid, now):
        content, out = self._append(event, eid, now, "commentary")
        if content is None:
            return out
        return out + self._say(conv, content, now)

    def _on_response_item_create(self, conv, event, eid, now):
        """A tool's output for the Responses backend (``function_call_output``), or a message it should read."""
        if self.delegation["type"] != "responses":
            return [Emit(lv.live_error("invalid_request_error", "response.item.create requires Responses delegation.",
                                       "type", eid))]
        item = event.get("item")
        if not isinstance(item, dict) or item.get("type") not in ("function_call_output", "message"):
            return [Emit(lv.live_error("invalid_value", "'item' is a function_call_output {call_id, output} or a "
                                       "message", "item", eid))]
        if item["type"] == "message":
            text = dl.output_text(item.get("content"))
            if item.get("role") not in ("user", "developer", "system") or not text.strip():
                return [Emit(lv.live_error("invalid_value", "a message item has a role (user, developer) and text",
                                           "item", eid))]
            role = "system" if item["role"] != "user" else "user"
            return conv.add_item(normalized({"type": "message", "role": role,
                                             "content": [{"type": "input_text", "text": text}]}, conv.new_id))
        call_id = item.get("call_id")
        d = next((d for d in self.delegations.values() if call_id in d.calls), None)
        if d is None:
            return [Emit(lv.live_error("invalid_value", f"no function call waits with call_id {call_id!r}",
                                       "item.call_id", eid))]
        if "output" not in item:
            return [Emit(lv.live_error("missing_required_parameter", "'item.output' is required", "item.output",
                                       eid))]
        d.outputs[call_id] = dl.output_text(item["output"])
        d.extra.append({"type": "function_call_output", "call_id": call_id, "output": d.outputs[call_id]})
        return []

    def _on_response_create(self, conv, event, eid, now):
        """The tools' outputs are in: the backend goes on from them (a new response of the same delegation)."""
        if self.delegation["type"] != "responses":
            return [Emit(lv.live_error("invalid_request_error", "response.create requires Responses delegation.",
                                       "type", eid))]
        waiting = [d for d in self.delegations.values() if d.calls and d.response_id not in self.backends]
        ready = [d for d in waiting if all(c in d.outputs for c in d.calls)]
        if not ready:
            missing = [c for d in waiting for c in d.calls if c not in d.outputs]
            why = f"the outputs of {', '.join(missing)} are missing" if missing else "no delegated response waits " \
                                                                                   "for tool outputs"
            return [Emit(lv.live_error("invalid_request_error", f"response.create: {why}", None, eid))]
        d = ready[-1]
        d.calls, d.outputs = {}, {}
        d.response_id = conv.new_id("resp")
        return self._ask_responses(conv, d)

    def _on_decision_create(self, conv, event, eid, now):
        if not eid:
            return [Emit(lv.live_error("missing_required_parameter", "decision.create needs a session-unique "
                                       "event_id", "event_id", eid))]
        questions = (self.delegation.get("decisions") or {}).get("questions")
        if self.delegation["type"] != "decisions" or not questions:
            return [Emit(lv.live_error("invalid_request_error", "decision.create requires decisions delegation.",
                                       "type", eid))]
        if eid in self.delegations or any(v[1] == eid for v in self.backends.values()):
            return [Emit(lv.live_error("invalid_value", f"event_id {eid!r} was used already", "event_id", eid))]
        d = dl.Delegation(eid, "decisions", self.ms(now))
        self.delegations[eid] = d
        return self._ask_decisions(conv, eid, questions)

    def _on_decision_item_create(self, conv, event, eid, now):
        item = event.get("item")
        kinds = ("message", "function_call", "function_call_output")
        if not isinstance(item, dict) or item.get("type", "message") not in kinds:
            return [Emit(lv.live_error("invalid_value", "'item' is a message, a function_call or a "
                                       "function_call_output", "item", eid))]
        try:
            if item.get("type", "message") == "message":
                text = dl.output_text(item.get("content"))
                role = {"assistant": "assistant", "user": "user"}.get(item.get("role"), "system")
                kind = "output_text" if role == "assistant" else "input_text"
                held = normalized({"type": "message", "role": role, "content": [{"type": kind, "text": text}],
                                   "id": item.get("id")}, conv.new_id)
            else:
                held = normalized({**item, "output": dl.output_text(item.get("output"))}
                                  if item["type"] == "function_call_output" else item, conv.new_id)
        except (KeyError, TypeError):
            return [Emit(lv.live_error("invalid_value", "the item is missing a field of its type", "item", eid))]
        self.decision_items.append(held)
        del self.decision_items[:-MAX_INPUT]
        return [Emit(lv.DecisionItemCreated(held, eid))]

    def _on_decision_item_delete(self, conv, event, eid, now):
        iid = event.get("item_id")
        for i, item in enumerate(self.decision_items):
            if item["id"] == iid:
                del self.decision_items[i]
                return [Emit(lv.DecisionItemDeleted(iid, eid))]
        return [Emit(lv.live_error("invalid_value", f"no decision item {iid!r}", "item_id", eid))]

    def _on_session_output_audio_fixture_play(self, conv, event, eid, now):
        """Given audio played as it is: the voice stops, the input is muted (no event says so) until it has played."""
        import base64
        import binascii

        audio = event.get("audio")
        try:
            pcm = base64.b64decode(audio, validate=True) if isinstance(audio, str) else None
        except (binascii.Error, ValueError):
            pcm = None
        if not pcm or len(pcm) % 2:
            return [Emit(lv.live_error("invalid_value", "'audio' is base64 PCM16 at 24 kHz, mono", "audio", eid))]
        if len(pcm) > MAX_FIXTURE:
            return [Emit(lv.live_error("invalid_value", "a fixture is at most 30 s", "audio", eid))]
        out: list = []
        if self.fixture is not None:
            out.append(CancelResponse(self.fixture[0], "superseded"))
            self.fixture = None
        _, stop = conv.barge_in()
        out += [ClearOutput("fixture")] + stop + [MuteInput(True)]
        start = conv.respond({"turn_end": now}, config=conv.response_config(fixture=pcm, conversation="none"))
        rid = next(a.rid for a in start if type(a) is StartResponse)
        self.fixture = (rid, eid)
        self._cancel_acks()
        return out + start + [Emit(lv.FixturePlaying(eid))]

    def response_over(self, conv, rid: str, status: str) -> list:
        """A response's audio has played (or it ended without): a fixture's end unmutes the input, and says
        ``played`` if it played whole."""
        if self.fixture is None or self.fixture[0] != rid:
            return []
        _, eid = self.fixture
        self.fixture = None
        return [MuteInput(False)] + ([Emit(lv.FixturePlayed(eid))] if status == "completed" else [])

    def _on_transport_dtmf_send(self, conv, event, eid, now):
        """A key to the caller of a phone call: the app's server's command (a sideband), as GPT-Live has it."""
        if not getattr(self, "_trusted", False):
            return [Emit(lv.live_error("invalid_request_error", "transport.dtmf.send is a sideband command",
                                       "type", eid))]
        if self.transport != "sip":
            return [Emit(lv.live_error("not_supported", "transport.dtmf.send is for SIP calls", "type", eid))]
        key = event.get("event")
        if not isinstance(key, str) or len(key) != 1 or key.upper() not in DTMF_KEYS:
            return [Emit(lv.live_error("invalid_value", "'event' is one key: 0-9, A-D, * or #", "event", eid))]
        return [SendDtmf(key.upper(), eid)]

    def dtmf_sent(self, key: str, client_event_id: str | None, ok: bool) -> list:
        if ok:
            return [Emit(lv.DtmfSent(key, client_event_id))]
        return [Emit(lv.live_error("dtmf_failed", "the key could not be sent: the caller's phone takes no "
                                   "telephone-event (RFC 4733), or the call has ended", "event", client_event_id))]

    def _on_session_close(self, conv, event, eid, now):
        self.closed = True
        usage = {"seconds": round(self.ms(now) / 1000, 3)}
        return [Emit(lv.SessionClosed("close_requested", self.resolved(), usage, eid)), EndSession("close_requested")]

    def _allowed(self, key: str) -> set | None:
        """What a WebRTC session's ``client.data_channel`` allows (None: all)."""
        if self.transport != "webrtc":
            return None
        v = ((self.config.get("client") or {}).get("data_channel") or {}).get(key)
        if v is None or v == "all":
            return None
        return {x if isinstance(x, str) else (x or {}).get("type") for x in v}

    # ------------------------------------------------------------- what is sent
    def wire(self, event: ev.ServerEvent, event_id: str, now: float, sideband: bool = False) -> dict | None:
        """The engine's event as Live sends it, or None for one Live does not have (or the data channel may not
        carry: ``client.data_channel.allowed_server_events``; errors, ``info`` and ``session.closed`` always go; a
        ``sideband`` gets everything)."""
        if type(event) is ev.DtmfReceived:  # a phone's key: sidebands only, as GPT-Live
            return lv.DtmfReceived(event.event).as_dict(event_id) if sideband else None
        if type(event) is lv.DtmfSent and not sideband:
            return None
        out = self._wire(event, event_id, now)
        if out is not None and not sideband and out["type"] in TRIGGER_EVENTS and self.config.get("triggers"):
            if any(t["event_type"] == out["type"] for t in self.config["triggers"]):
                self.fired[out["type"]] = event_id  # evaluated at once, by the face's deadline (``timer``)
                self.trigger_due = now
        allowed = None if sideband else self._allowed("allowed_server_events")
        if out is not None and allowed is not None and out["type"] not in allowed | {"error", "info", "session.closed"}:
            return None
        return out

    def _wire(self, event: ev.ServerEvent, event_id: str, now: float) -> dict | None:
        if isinstance(event, lv.LiveEvent):
            return event.as_dict(event_id)
        t = type(event)
        if t is ev.SpeechStarted:
            self.turn_start = event.audio_start_ms
        elif t is ev.TranscriptionCompleted and event.transcript:
            # the caller's words once the turn's transcript is final: a pause's draft may be wrong ("What is what is"
            # for the first half of a question) and Live's deltas cannot be taken back, so drafts are not sent
            return lv.InputTranscriptDelta(event.transcript, self.turn_start,
                                           max(self.turn_start, self.ms(now))).as_dict(event_id)
        elif (t is ev.AudioTranscriptDelta or t is ev.TextDelta) and event.delta:
            t_ms = self.ms(now)
            return lv.OutputTranscriptDelta(event.delta, t_ms, t_ms).as_dict(event_id)
        elif t is ev.Error:
            body = {k: v for k, v in event.error.items() if k != "event_id"}
            if event.error.get("event_id"):
                body["client_event_id"] = event.error["event_id"]
            return lv.LiveError(body).as_dict(event_id)
        return None

    def closing(self, now: float, reason: str) -> lv.SessionClosed | None:
        """The call ended without ``session.close`` (the caller hung up, the connection dropped): the last event."""
        if self.closed or not self.started:
            return None
        self.closed = True
        return lv.SessionClosed(reason, self.resolved(), {"seconds": round(self.ms(now) / 1000, 3)})
