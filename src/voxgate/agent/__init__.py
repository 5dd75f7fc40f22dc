"""Voice agents: what runs behind the transceiver's audio interface.

``base`` defines the interface (``Agent``, ``CallIO``); ``echo`` is the trivial
agent for tests and benchmarks. ``load_agent`` maps ``--agent NAME`` to one.
"""

from .base import Agent, CallIO


def load_agent(name: str) -> Agent:
    if name == "echo":
        from .echo import EchoAgent

        return EchoAgent()
    if ":" in name:  # module:attribute, for agents that live outside voxgate
        import importlib

        module, _, attr = name.partition(":")
        return getattr(importlib.import_module(module), attr)()
    raise ValueError(f"unknown agent {name!r} (known: echo, or module:Class)")


__all__ = ["Agent", "CallIO", "load_agent"]
