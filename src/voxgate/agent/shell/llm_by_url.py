"""Language models by URL: any server that speaks OpenAI's chat completions (``--responder openai:URL#MODEL``: OpenAI,
vLLM, llama.cpp's server, Ollama, another voxgate) or its Responses API (``--responder openai-responses:URL#MODEL``),
streamed as server-sent events.

Both keep one ``aiohttp`` session per responder and event loop, so the connection (and its TLS) is reused from turn
to turn; a server that does not answer its first event within ``first_event_timeout`` (default 10 s, a model
loading or a dead host) fails the response with the reason, as does one that refuses the key or answers something
that is not the API. The key is ``api_key``, else ``$VOXGATE_RESPONDER_API_KEY``, else ``$OPENAI_API_KEY`` — never a
flag, which would show in the process list.

``language`` (a session's ``audio.input.transcription.language``, when the voice speaks it) is told to the model
after the app's instructions: a reply in the caller's language.

Why not the ``openai`` SDK: this is the hot path of every turn, on the agent's event loop, and needs nothing but a
POST and an SSE reader; the SDK is the test suite's client of voxgate's own APIs instead.
"""

from __future__ import annotations

import asyncio
import json
import os

from ..core.languages import with_language
from .responders import Responder, ToolCall
from ..core.chat import chat_tools


class ModelServerError(RuntimeError):
    """The language model's server failed: unreachable, too slow, refused the key, or answered outside the API."""


class _ByUrl(Responder):
    path = ""

    def __init__(self, base_url: str, model: str, api_key: str | None = None, first_event_timeout: float = 10.0):
        self.base_url = base_url.rstrip("/")
        self.url = self.base_url + self.path
        self.model = model
        self.api_key = api_key or os.environ.get("VOXGATE_RESPONDER_API_KEY") or os.environ.get("OPENAI_API_KEY")
        self.first_event_timeout = first_event_timeout
        self._http = None  # (loop, aiohttp.ClientSession): kept alive across turns

    def _session(self):
        import aiohttp

        loop = asyncio.get_running_loop()
        if self._http is None or self._http[0] is not loop or self._http[1].closed:
            connector = aiohttp.TCPConnector(limit=64, keepalive_timeout=60)
            self._http = (loop, aiohttp.ClientSession(connector=connector))
        return self._http[1]

    async def close(self):
        if self._http is not None:
            await self._http[1].close()
            self._http = None

    async def _events(self, body: dict):
        """POST ``body``; yield each SSE ``data:`` payload, parsed (``[DONE]`` ends it)."""
        import aiohttp

        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        try:
            async with asyncio.timeout(self.first_event_timeout):
                resp = await self._session().post(self.url, json=body, headers=headers)
        except TimeoutError:
            raise ModelServerError(f"{self.url} did not answer in {self.first_event_timeout:g} s") from None
        except aiohttp.ClientError as exc:
            raise ModelServerError(f"{self.url}: {exc}") from None
        async with resp:
            if resp.status != 200:
                raise ModelServerError(f"{self.url} answered {resp.status}: {(await resp.text())[:200]}")
            lines = resp.content.__aiter__()
            first = True
            while True:
                try:
                    if first:  # the first event has a deadline (a model loading, a host that hangs)
                        async with asyncio.timeout(self.first_event_timeout):
                            raw = await anext(lines, None)
                    else:
                        raw = await anext(lines, None)
                except TimeoutError:
                    raise ModelServerError(f"{self.url} sent nothing in {self.first_event_timeout:g} s") from None
                except aiohttp.ClientError as exc:
                    raise ModelServerError(f"{self.url}: {exc}") from None
                if raw is None:
                    return
                line = raw.decode("utf-8", "replace").strip()
                if not line.startswith("data:"):
                    continue
                first = False
                data = line[5:].strip()
                if data == "[DONE]":
                    return
                try:
                    event = json.loads(data)
                except ValueError:
                    raise ModelServerError(f"{self.url} sent an event that is not JSON: {data[:120]!r}") from None
                if not isinstance(event, dict):
                    raise ModelServerError(f"{self.url} sent an event that is not an object: {data[:120]!r}")
                yield event


class OpenAIChatResponder(_ByUrl):
    """``POST {base_url}/chat/completions`` with ``stream=true``. Tools are sent in the chat-completions shape and
    the streamed ``tool_calls`` pieces reassembled."""

    name = "openai-chat"
    path = "/chat/completions"

    async def stream(self, messages, instructions, *, tools=None, tool_choice="auto", max_tokens=None, language=None):
        body = {"model": self.model, "stream": True,
                "messages": [{"role": "system", "content": with_language(instructions, language)}] + messages[-16:],
                **chat_tools(tools or [], tool_choice)}
        if max_tokens:
            body["max_tokens"] = max_tokens
        calls: dict[int, dict] = {}  # index -> {"id", "name", "arguments"}: tool calls arrive in pieces
        async for event in self._events(body):
            if event.get("error"):
                raise ModelServerError(f"{self.url}: {json.dumps(event['error'])[:200]}")
            choices = event.get("choices") or [{}]
            delta = (choices[0] or {}).get("delta") or {}
            if delta.get("content"):
                yield delta["content"]
            for piece in delta.get("tool_calls") or []:
                call = calls.setdefault(piece.get("index", 0), {"id": None, "name": "", "arguments": ""})
                call["id"] = piece.get("id") or call["id"]
                fn = piece.get("function") or {}
                call["name"] += fn.get("name") or ""
                call["arguments"] += fn.get("arguments") or ""
        for _, call in sorted(calls.items()):
            yield ToolCall(call["name"], call["arguments"] or "{}", **({"call_id": call["id"]} if call["id"] else {}))


def responses_input(messages: list[dict]) -> list[dict]:
    """Chat-completions messages as Responses API input items: messages, ``function_call`` and
    ``function_call_output`` items."""
    out = []
    for m in messages:
        for call in m.get("tool_calls") or []:
            out.append({"type": "function_call", "call_id": call["id"], "name": call["function"]["name"],
                        "arguments": call["function"].get("arguments") or "{}"})
        if m["role"] == "tool":
            out.append({"type": "function_call_output", "call_id": m.get("tool_call_id"),
                        "output": m.get("content") or ""})
        elif m.get("content"):
            out.append({"role": m["role"], "content": m["content"]})
    return out


class OpenAIResponsesResponder(_ByUrl):
    """``POST {base_url}/responses`` with ``stream=true`` (stateless: the conversation is sent each turn,
    ``store: false``): ``response.output_text.delta`` is the reply, a ``function_call`` output item a tool call;
    ``error`` or ``response.failed`` fail the response with the server's reason."""

    name = "openai-responses"
    path = "/responses"

    async def stream(self, messages, instructions, *, tools=None, tool_choice="auto", max_tokens=None, language=None):
        body = {"model": self.model, "stream": True, "store": False,
                "instructions": with_language(instructions, language), "input": responses_input(messages[-16:])}
        if tools:
            body["tools"] = [{"type": "function", **{k: t[k] for k in ("name", "description", "parameters")
                                                       if k in t}} for t in tools]
            if isinstance(tool_choice, dict):
                body["tool_choice"] = {"type": "function", "name": tool_choice.get("name")}
            elif tool_choice in ("auto", "none", "required"):
                body["tool_choice"] = tool_choice
        if max_tokens:
            body["max_output_tokens"] = max(16, max_tokens)  # the API's floor
        async for event in self._events(body):
            kind = event.get("type")
            if kind == "response.output_text.delta" and event.get("delta"):
                yield event["delta"]
            elif kind == "response.output_item.done" and (event.get("item") or {}).get("type") == "function_call":
                item = event["item"]
                yield ToolCall(item.get("name") or "", item.get("arguments") or "{}",
                               **({"call_id": item["call_id"]} if item.get("call_id") else {}))
            elif kind in ("error", "response.failed"):
                detail = event.get("error") or (event.get("response") or {}).get("error") or event
                raise ModelServerError(f"{self.url}: {json.dumps(detail)[:200]}")
            elif kind in ("response.completed", "response.incomplete"):
                return
