"""Voice agents: what runs behind the transceiver's audio interface.

``shell/base.py`` defines the interface (``Agent``, ``CallIO``); ``shell/echo.py`` is the trivial agent for tests
and benchmarks, ``shell/realtime.py`` the voice agent, ``shell/upstream.py`` the bridge to a Realtime model server.
``load_agent`` maps ``--agent NAME`` to one.
"""

from .shell.base import Agent, CallIO


_STACKS: dict = {}


def load_agent(name: str, **options) -> Agent:
    """``echo``; ``upstream:ws(s)://HOST/v1/realtime`` (a Realtime model server per call); ``voice`` (the stack of
    ``shell/stack.py``: ``responder=auto|scripted|smollm2|openai:URL#MODEL|openai-responses:URL#MODEL|gguf:PATH``,
    ``asr=auto|moonshine|pocketsphinx|whisper|whisper-base|openai:URL#MODEL|realtime:WS-URL#MODEL`` (default
    auto: Moonshine where installed, as the CLI), ``tts=piper|piper-espeak|openai:URL#MODEL``); or ``module:Class``.
    A voice stack is loaded once per process and shared by its calls."""
    if name == "echo":
        from .shell.echo import EchoAgent

        return EchoAgent()
    if name == "voice":
        from .shell.realtime import VoiceAgent
        from .shell.stack import Stack

        key = (options.get("responder", "auto"), options.get("asr", "auto"), options.get("tts", "piper"),
               options.get("asr_fallback"), options.get("tts_fallback"), options.get("delegate"))
        if key not in _STACKS:
            _STACKS[key] = Stack.embedded(key[0], progress=options.get("progress", print), asr=key[1], tts=key[2],
                                          asr_fallback=key[3], tts_fallback=key[4], delegate=key[5])
        return VoiceAgent(_STACKS[key])
    if name.startswith("upstream:"):  # a Realtime model server behind the edge (shell/upstream.py)
        from .shell.upstream import UpstreamAgent

        return UpstreamAgent(name[len("upstream:"):])
    if ":" in name:  # module:attribute, for agents that live outside voxgate
        import importlib

        module, _, attr = name.partition(":")
        return getattr(importlib.import_module(module), attr)()
    raise ValueError(f"unknown agent {name!r} (known: echo, voice, or module:Class)")


__all__ = ["Agent", "CallIO", "load_agent"]
