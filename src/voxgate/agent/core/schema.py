"""Realtime client input checked against the GA API's shapes before anything is applied (sans-IO).

``check_session(obj)`` validates a ``session.update``'s ``session`` (or a client secret's, or a multipart offer's) and
returns the list of fields voxgate accepts but does not act on; ``check_response(obj)`` does the same for
``response.create``'s ``response``; ``check_item(obj)`` for ``conversation.item.create``'s ``item``. A wrong type or
value raises ``Invalid`` naming the field as the API does (``session.audio.input.turn_detection.threshold``), so the
caller answers ``invalid_request_error`` and changes nothing.

Written here rather than with a JSON-schema library because the API's own schema is not published in a form that
ships in a package, and the rules needed (which fields are acted on, which are only accepted) are voxgate's.
"""

from __future__ import annotations

import re

from .voices import resolve_voice

TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
FORMATS = ("audio/pcm", "audio/pcmu", "audio/pcma")


class Invalid(ValueError):
    def __init__(self, param: str, message: str, code: str = "invalid_value"):
        super().__init__(message)
        self.param, self.code = param, code


def as_object(value, param) -> dict:
    if not isinstance(value, dict):
        raise Invalid(param, f"'{param}' must be an object", "invalid_type")
    return value


def only_known(obj: dict, param: str, keys) -> None:
    for key in obj:
        if key not in keys:
            raise Invalid(f"{param}.{key}", f"Unknown parameter: '{param}.{key}'.", "unknown_parameter")


def _str(obj, key, param, choices=None, nullable=False):
    if key not in obj:
        return
    v = obj[key]
    if v is None and nullable:
        return
    if not isinstance(v, str):
        raise Invalid(f"{param}.{key}", f"'{param}.{key}' must be a string", "invalid_type")
    if choices is not None and v not in choices:
        raise Invalid(f"{param}.{key}", f"'{param}.{key}' must be one of {', '.join(choices)}; got {v!r}")


def _num(obj, key, param, lo=None, hi=None, integer=False, nullable=False):
    if key not in obj:
        return
    v = obj[key]
    if v is None and nullable:
        return
    ok = isinstance(v, int) if integer else isinstance(v, (int, float))
    if not ok or isinstance(v, bool):
        kind = "an integer" if integer else "a number"
        raise Invalid(f"{param}.{key}", f"'{param}.{key}' must be {kind}", "invalid_type")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise Invalid(f"{param}.{key}", f"'{param}.{key}' must be in {lo}..{hi}; got {v}")


def _bool(obj, key, param):
    if key in obj and not isinstance(obj[key], bool):
        raise Invalid(f"{param}.{key}", f"'{param}.{key}' must be a boolean", "invalid_type")


def _format(value, param):
    f = as_object(value, param)
    only_known(f, param, ("type", "rate"))
    _str(f, "type", param, FORMATS)
    if f.get("type", "audio/pcm") == "audio/pcm" and f.get("rate", 24000) != 24000:
        raise Invalid(f"{param}.rate", f"'{param}.rate' must be 24000 for audio/pcm")


def check_turn_detection(td, param: str) -> list[str]:
    if td is None:
        return []
    td = as_object(td, param)
    _str(td, "type", param, ("server_vad", "semantic_vad"))
    ignored = []
    if td.get("type") == "semantic_vad":
        only_known(td, param, ("type", "eagerness", "create_response", "interrupt_response"))
        _str(td, "eagerness", param, ("low", "medium", "high", "auto"))
    else:
        only_known(td, param, ("type", "threshold", "prefix_padding_ms", "silence_duration_ms", "create_response",
                           "interrupt_response", "idle_timeout_ms"))
        _num(td, "threshold", param, 0.0, 1.0)
        _num(td, "prefix_padding_ms", param, 0, 10_000, integer=True)
        _num(td, "silence_duration_ms", param, 0, 10_000, integer=True)
        _num(td, "idle_timeout_ms", param, 1, 3_600_000, integer=True, nullable=True)
    _bool(td, "create_response", param)
    _bool(td, "interrupt_response", param)
    return ignored


def check_tools(tools, param: str) -> list[str]:
    if not isinstance(tools, list):
        raise Invalid(param, f"'{param}' must be an array", "invalid_type")
    ignored = []
    for i, tool in enumerate(tools):
        p = f"{param}[{i}]"
        tool = as_object(tool, p)
        _str(tool, "type", p, ("function", "mcp"))
        if tool.get("type") == "mcp":
            ignored.append(f"{p} (mcp tools are not run by voxgate)")
            continue
        if not isinstance(tool.get("name"), str) or not TOOL_NAME.match(tool["name"]):
            raise Invalid(f"{p}.name", f"'{p}.name' must match {TOOL_NAME.pattern}")
        only_known(tool, p, ("type", "name", "description", "parameters"))
        _str(tool, "description", p)
        if "parameters" in tool:
            as_object(tool["parameters"], f"{p}.parameters")
    return ignored


def check_tool_choice(choice, param: str, tools: list | None) -> None:
    if isinstance(choice, str):
        if choice not in ("auto", "none", "required"):
            raise Invalid(param, f"'{param}' must be auto, none, required or a function; got {choice!r}")
        return
    choice = as_object(choice, param)
    _str(choice, "type", param, ("function", "mcp"))
    if choice.get("type") == "function":
        if not isinstance(choice.get("name"), str):
            raise Invalid(f"{param}.name", f"'{param}.name' must name a function", "invalid_type")
        if tools is not None and choice["name"] not in [t.get("name") for t in tools]:
            raise Invalid(f"{param}.name", f"'{param}.name' names no declared tool: {choice['name']!r}")


def _modalities(value, param):
    if not isinstance(value, list) or not value or any(m not in ("audio", "text") for m in value):
        raise Invalid(param, f"'{param}' must be [\"audio\"] or [\"text\"]")
    if len(value) != 1:
        raise Invalid(param, f"'{param}' takes one modality: [\"audio\"] (with its transcript) or [\"text\"]")


def _max_tokens(obj, key, param):
    if key in obj and obj[key] != "inf":
        _num(obj, key, param, 1, 4096, integer=True)


def check_session(session, param: str = "session", tools_now: list | None = None, any_voice: bool = False) -> list[str]:
    """Validate a session object; returns what is accepted but not acted on. ``any_voice``: the voice is a model
    server's, which knows its own voices (any name is passed on)."""
    s = as_object(session, param)
    only_known(s, param, ("type", "object", "id", "model", "instructions", "output_modalities", "tools", "tool_choice",
                      "max_output_tokens", "audio", "tracing", "truncation", "include", "prompt", "expires_at",
                      "voxgate", "turn_detection"))
    _str(s, "type", param, ("realtime", "transcription"))
    _str(s, "model", param)
    _str(s, "instructions", param)
    ignored = []
    if "output_modalities" in s:
        _modalities(s["output_modalities"], f"{param}.output_modalities")
    tools = None
    if "tools" in s:
        ignored += check_tools(s["tools"], f"{param}.tools")
        tools = s["tools"]
    if "tool_choice" in s:
        check_tool_choice(s["tool_choice"], f"{param}.tool_choice", tools if tools is not None else tools_now)
    _max_tokens(s, "max_output_tokens", param)
    if "tracing" in s and s["tracing"] not in (None, "auto") and not isinstance(s["tracing"], dict):
        raise Invalid(f"{param}.tracing", f"'{param}.tracing' must be null, \"auto\" or an object")
    if "truncation" in s and s["truncation"] not in ("auto", "disabled") and not isinstance(s["truncation"], dict):
        raise Invalid(f"{param}.truncation", f"'{param}.truncation' must be auto, disabled or an object")
    for key in ("tracing", "truncation", "include", "prompt"):
        if s.get(key) not in (None, "auto", []):
            ignored.append(key)
    if "turn_detection" in s:  # the beta place of turn_detection
        ignored += check_turn_detection(s["turn_detection"], f"{param}.turn_detection")
    if "audio" in s:
        audio = as_object(s["audio"], f"{param}.audio")
        only_known(audio, f"{param}.audio", ("input", "output"))
        if "input" in audio:
            p = f"{param}.audio.input"
            inp = as_object(audio["input"], p)
            only_known(inp, p, ("format", "noise_reduction", "transcription", "turn_detection"))
            if "format" in inp:
                _format(inp["format"], f"{p}.format")
            if inp.get("noise_reduction") is not None:
                nr = as_object(inp["noise_reduction"], f"{p}.noise_reduction")
                _str(nr, "type", f"{p}.noise_reduction", ("near_field", "far_field"))
            if inp.get("transcription") is not None:
                tr = as_object(inp["transcription"], f"{p}.transcription")
                only_known(tr, f"{p}.transcription", ("model", "language", "prompt"))
                for key in ("model", "language", "prompt"):
                    _str(tr, key, f"{p}.transcription")
                lang = tr.get("language")
                if lang and not re.fullmatch(r"[a-z]{2,3}", lang):
                    raise Invalid(f"{p}.transcription.language", f"{lang!r} is not an ISO-639-1 language code "
                                  "(such as en, fr, de)")
                if len(tr.get("prompt") or "") > 1000:
                    raise Invalid(f"{p}.transcription.prompt", "a prompt of more than 1000 characters")
            if "turn_detection" in inp:
                ignored += check_turn_detection(inp["turn_detection"], f"{p}.turn_detection")
        if "output" in audio:
            p = f"{param}.audio.output"
            check_audio_output(audio["output"], p, any_voice)
    if "voxgate" in s:
        vx = as_object(s["voxgate"], f"{param}.voxgate")
        only_known(vx, f"{param}.voxgate", ("partial_inference", "resume_false_interruption", "min_interruption_ms"))
        _bool(vx, "partial_inference", f"{param}.voxgate")
        _bool(vx, "resume_false_interruption", f"{param}.voxgate")
        _num(vx, "min_interruption_ms", f"{param}.voxgate", 100, 5000, integer=True)
    return ignored


def check_audio_output(value, p: str, any_voice: bool = False) -> None:
    """``audio.output``: a format, one of our voices (or an OpenAI name mapped to one; with ``any_voice``, any
    name: a model server's voice), a speed in 0.25..1.5."""
    out = as_object(value, p)
    only_known(out, p, ("format", "voice", "speed"))
    if "format" in out:
        _format(out["format"], f"{p}.format")
    _str(out, "voice", p)
    _num(out, "speed", p, 0.25, 1.5)
    if "voice" in out and not any_voice:
        try:
            resolve_voice(out["voice"])
        except ValueError as exc:
            raise Invalid(f"{p}.voice", str(exc)) from None


def check_response(response, tools_now: list | None, any_voice: bool = False) -> None:
    """Validate ``response.create``'s ``response``."""
    param = "response"
    r = as_object(response, param)
    only_known(r, param, ("conversation", "input", "instructions", "metadata", "output_modalities", "tools",
                      "tool_choice", "max_output_tokens", "audio", "prompt"))
    _str(r, "conversation", param, ("auto", "none"))
    _str(r, "instructions", param)
    if "output_modalities" in r:
        _modalities(r["output_modalities"], f"{param}.output_modalities")
    tools = None
    if "tools" in r:
        check_tools(r["tools"], f"{param}.tools")
        tools = r["tools"]
    if "tool_choice" in r:
        check_tool_choice(r["tool_choice"], f"{param}.tool_choice", tools if tools is not None else tools_now)
    _max_tokens(r, "max_output_tokens", param)
    if r.get("audio") is not None:
        a = as_object(r["audio"], f"{param}.audio")
        only_known(a, f"{param}.audio", ("output",))
        if "output" in a:
            check_audio_output(a["output"], f"{param}.audio.output", any_voice)
    if r.get("metadata") is not None:
        md = as_object(r["metadata"], f"{param}.metadata")
        if len(md) > 16 or any(not isinstance(v, str) or len(v) > 512 or len(k) > 64 for k, v in md.items()):
            raise Invalid(f"{param}.metadata", "'response.metadata' takes up to 16 string values "
                                               "(keys up to 64 characters, values up to 512)")
    if "input" in r:
        if not isinstance(r["input"], list):
            raise Invalid(f"{param}.input", "'response.input' must be an array of items", "invalid_type")
        for i, item in enumerate(r["input"]):
            if isinstance(item, dict) and item.get("type") == "item_reference":
                if not isinstance(item.get("id"), str):
                    raise Invalid(f"{param}.input[{i}].id", "an item_reference needs the item's 'id'")
                continue
            check_item(item, f"{param}.input[{i}]")


def check_item(item, param: str = "item") -> None:
    """Validate a conversation item: a message with text or audio transcript, a function call, or its output."""
    it = as_object(item, param)
    _str(it, "type", param, ("message", "function_call", "function_call_output"))
    _str(it, "id", param)
    kind = it.get("type", "message")
    if kind == "message":
        only_known(it, param, ("type", "id", "object", "role", "content", "status"))
        _str(it, "role", param, ("user", "assistant", "system"))
        if "role" not in it:
            raise Invalid(f"{param}.role", f"'{param}.role' is required", "missing_required_parameter")
        content = it.get("content")
        if not isinstance(content, list) or not content:
            raise Invalid(f"{param}.content", f"'{param}.content' must be a non-empty array")
        allowed = {"user": ("input_text", "input_audio", "input_image"), "system": ("input_text",),
                   "assistant": ("output_text", "output_audio", "text", "audio")}[it["role"]]
        for i, part in enumerate(content):
            p = f"{param}.content[{i}]"
            part = as_object(part, p)
            _str(part, "type", p, allowed)
            for key in ("text", "transcript"):
                _str(part, key, p)
    elif kind == "function_call":
        only_known(it, param, ("type", "id", "object", "name", "call_id", "arguments", "status"))
        for key in ("name", "call_id", "arguments"):
            if not isinstance(it.get(key), str):
                raise Invalid(f"{param}.{key}", f"'{param}.{key}' is required (a string)", "missing_required_parameter")
    else:
        only_known(it, param, ("type", "id", "object", "call_id", "output", "status"))
        for key in ("call_id", "output"):
            if not isinstance(it.get(key), str):
                raise Invalid(f"{param}.{key}", f"'{param}.{key}' is required (a string)", "missing_required_parameter")
