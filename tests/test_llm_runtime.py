"""The embedded LLM's runtime (agent/models/llama.py): the xllamacpp names it relies on, the CPU check that turns
an illegal instruction into a message, streaming with cancellation, grammar-constrained output, the crash probe."""

import json
import subprocess
import sys

import pytest

from voxgate.agent.models import llama
from voxgate.agent.models import MissingModel


def test_cpu_check_names_what_is_missing():
    assert llama.cpu_problem("x86_64", {"avx2", "fma", "f16c", "bmi2", "sse4_2"}) is None
    why = llama.cpu_problem("x86_64", {"sse4_2", "avx"})
    assert "AVX2" in why and "FMA" in why, why
    assert llama.cpu_problem("aarch64", set()) is None
    assert "riscv64" in llama.cpu_problem("riscv64", set())


def test_an_unsupported_cpu_is_a_message_not_a_crash(monkeypatch):
    monkeypatch.setattr(llama, "cpu_problem", lambda: "this x86-64 CPU lacks AVX2")
    with pytest.raises(MissingModel) as info:
        llama.LlamaModel("/nonexistent.gguf")
    assert "cannot run here" in str(info.value) and "--responder" in str(info.value)
    with pytest.raises(MissingModel):
        llama.shared("/nonexistent.gguf")


xllamacpp = pytest.importorskip("xllamacpp")


def test_the_tested_version_and_the_names_we_use():
    """An upgrade that moves these fails here first (they are used in agent/models/llama.py only)."""
    from importlib.metadata import version

    assert version("xllamacpp") == llama.TESTED_VERSION
    p = xllamacpp.CommonParams()
    for name in ("n_ctx", "n_parallel", "no_extra_bufts", "verbosity", "api_keys", "cpuparams", "cpuparams_batch"):
        assert hasattr(p, name), name
    assert hasattr(p.model, "path") and hasattr(p.cpuparams, "n_threads")
    assert callable(xllamacpp.Server.handle_chat_completions) and callable(xllamacpp.json_schema_to_grammar)


@pytest.fixture(scope="module")
def model():
    from voxgate.agent.shell.embedded import smollm2_path

    return llama.shared(smollm2_path(), threads=2)


def test_streams_and_stops_when_asked(model):
    pieces = []
    finish = model.stream([{"role": "user", "content": "Count from one to twenty."}], max_tokens=40,
                          on_piece=lambda p: pieces.append(p) or len(pieces) >= 3)
    assert finish == "cancelled" and len(pieces) == 3
    # the server is not left busy with the cancelled request: the next one answers
    assert model.complete([{"role": "user", "content": "Say hello."}], max_tokens=8).strip()


def test_grammar_constrains_the_output(model):
    schema = {"type": "object", "required": ["city"], "properties": {"city": {"enum": ["Paris", "Rome"]}}}
    out = model.complete([{"role": "user", "content": "Which city is the capital of Italy? Answer in JSON."}],
                         max_tokens=24, temperature=0, grammar=llama.json_schema_grammar(schema))
    assert json.loads(out)["city"] in ("Paris", "Rome")


def test_the_probe_passes_here_and_reports_a_crash(tmp_path, monkeypatch):
    from voxgate.agent.shell.embedded import smollm2_path

    assert llama.probe(smollm2_path()) is None
    # a runtime that dies by a signal in the child is a sentence, not a dead parent
    crash = tmp_path / "crash.py"
    crash.write_text("import os, signal; os.kill(os.getpid(), signal.SIGSEGV)\n")
    real = subprocess.run

    def fake_run(argv, **kw):
        return real([sys.executable, str(crash)], **kw)

    monkeypatch.setattr(subprocess, "run", fake_run)
    why = llama.probe(smollm2_path())
    assert "crashed" in why and "SIGSEGV" in why, why


def test_the_server_port_is_not_open_to_anyone(model):
    """xllamacpp's server also listens on loopback; without our random key it answers nobody."""
    import urllib.error
    import urllib.request

    addr = model.server.listening_address
    if not addr:
        pytest.skip("this xllamacpp build does not listen")
    url = (addr if addr.startswith("http") else "http://" + addr).rstrip("/") + "/v1/chat/completions"
    req = urllib.request.Request(url, data=json.dumps({"messages": [{"role": "user", "content": "hi"}]}).encode(),
                                 headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=10)
    assert info.value.code == 401
