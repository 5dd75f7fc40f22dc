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

Delegation: ``client`` (the default) is accepted and its ``delegation_id``s are checked, but the embedded voice does
not yet delegate on its own; ``responses`` and ``decisions`` are refused with a clear error, as are fixtures and
decisions (``not_supported``), rather than accepted and ignored. ``idle_timeout_s`` and ``wake_policy`` are checked
and not yet acted on (the voice listens from the start).
"""

from __future__ import annotations

import secrets

from . import events as ev
from . import live_events as lv
from .schema import Invalid, as_object, only_known
from .conversation import ConfigureAudio, Emit, MuteInput, EndSession, normalized
from .voices import OPENAI_VOICES, resolve_voice

LIVE_VOICES = ("alloy", "ash", "ballad", "beacon", "bossa", "cedar", "cinder", "coral", "delta", "echo", "gleam",
               "marin", "meridian", "quartz", "ripple", "sage", "shida", "shimmer", "stone", "tempo", "verse",
               "vesper", "willow")
FORMATS = {"audio/pcm": (16000, 24000), "audio/pcmu": (8000,), "audio/pcma": (8000,)}
SESSION_LIFETIME = 3600  # seconds a session may last (``expires_at``)
USAGE_EVERY = 15.0  # seconds between session.usage.updated events (cumulative)
MAX_APPEND = 4000  # characters of one instructions / thinking / commentary append (~500 tokens)
MAX_INPUT = 128  # messages of history a session may start with
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
        d = as_object(s["delegation"], "session.delegation")
        kind = d.get("type")
        if kind in ("responses", "decisions"):
            raise Invalid("session.delegation.type", f"{kind} delegation is not supported by this server yet; "
                                                     "use client delegation (the default)", "not_supported")
        if kind != "client":
            raise Invalid("session.delegation.type", "'session.delegation.type' must be client, responses or "
                                                     "decisions")
        only_known(d, "session.delegation", ("type", "acknowledgement_delay_ms"))
        _ack_delay(d)
    if "input" in s:
        check_input(s["input"])
    if s.get("triggers"):
        raise Invalid("session.triggers", "triggers (Decisions) are not supported by this server", "not_supported")
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
                 unix_now: float = 0.0):
        self.transport, self.any_voice = transport, any_voice
        self.unix_start = int(unix_now)  # the session's start in Unix seconds (``expires_at`` counts from it)
        self.session_id = session_id or "live_" + secrets.token_hex(12)
        self.started = False
        self.config: dict = {}
        self.expires_at = 0
        self.t0: float | None = None  # the session's timeline starts here (monotonic seconds)
        self.turn_start = 0  # the caller's current turn on the timeline (ms)
        self.closed = False
        self.next_usage: float | None = None  # when the next session.usage.updated is due

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
        return out + [Emit(lv.SessionStarted(self.resolved(), eid))]

    # ------------------------------------------------------------- time
    def next_deadline(self) -> float | None:
        return self.next_usage if self.started and not self.closed else None

    def timer(self, now: float) -> list:
        """``session.usage.updated`` every ``USAGE_EVERY`` s: the session's seconds so far."""
        if self.next_usage is None or now < self.next_usage or self.closed:
            return []
        self.next_usage = now + USAGE_EVERY
        return [Emit(lv.UsageUpdated({"seconds": round(self.ms(now) / 1000, 3)}))]

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
            return self._start(conv, event.get("session"), eid, now)
        if not self.started:
            return [Emit(lv.live_error("session_not_started", "send session.start first", "type", eid))]
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
        if s.get("triggers"):
            return [Emit(lv.live_error("not_supported", "triggers (Decisions) are not supported by this server",
                                       "session.triggers", eid))]
        d = s.get("delegation")
        if d is not None:
            current = (self.config.get("delegation") or {"type": "client"})["type"]
            if not isinstance(d, dict) or d.get("type") != current:
                return [Emit(lv.live_error("invalid_value", f"the delegation type is fixed: {current}",
                                           "session.delegation.type", eid))]
            try:
                only_known(d, "session.delegation", ("type", "acknowledgement_delay_ms"))
                _ack_delay(d)
            except Invalid as exc:
                return [Emit(lv.live_error(exc.code, str(exc), exc.param, eid))]
            self.config["delegation"] = {**(self.config.get("delegation") or {"type": "client"}), **d}
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
        if "delegation_id" not in event:
            return None, [Emit(lv.live_error("missing_required_parameter", "'delegation_id' is required (null when "
                                             "the context belongs to no delegation)", "delegation_id", eid))]
        if event["delegation_id"] is not None:
            return None, [Emit(lv.live_error("invalid_value", "no such delegation", "delegation_id", eid))]
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
        say = {"role": "system", "content": "Tell the user this now, briefly and in your own words: " + content}
        return out + conv.respond({"turn_end": now}, [say])

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
        out = self._wire(event, event_id, now)
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
        elif t is ev.AudioTranscriptDelta or t is ev.TextDelta:
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
