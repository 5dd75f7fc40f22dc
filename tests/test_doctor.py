"""`voxgate doctor` on this install passes; with a model package gone it fails with the command that fixes it, and
`voxgate demo` says so at start instead of dying in a call."""

import os
import subprocess
import sys

import pytest

pytest.importorskip("sanotts")


def run_doctor(tmp_path, *args, hide=(), timeout=240):
    """The doctor in a child process. ``hide``: packages made unimportable there, as if they were not installed
    (a directory first on PYTHONPATH holds a package of that name that raises ModuleNotFoundError)."""
    shadow = tmp_path / "shadow"
    for name in hide:
        (shadow / name).mkdir(parents=True, exist_ok=True)
        (shadow / name / "__init__.py").write_text(
            f"raise ModuleNotFoundError(\"No module named '{name}'\", name={name!r})\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(shadow), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "voxgate", "doctor", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_doctor_passes_on_this_install(tmp_path):
    r = run_doctor(tmp_path, "--json", str(tmp_path / "report.json"))
    assert r.returncode == 0, r.stdout + r.stderr
    for name in ("models", "tts", "vad", "asr", "llm", "relay", "call"):
        assert any(line.split()[:2] == ["OK", name] for line in r.stdout.splitlines()), (name, r.stdout)
    assert "xllamacpp" in r.stdout and "cpu" in r.stdout
    # the relay's kernel path: whether it would load here (a warning, not a failure, where it would not)
    assert any(line.split()[:2] in (["OK", "xdp"], ["WARN", "xdp"]) for line in r.stdout.splitlines()), r.stdout
    import json

    report = json.loads((tmp_path / "report.json").read_text())
    assert report["cpu"]["llm_problem"] is None
    call = next(c for c in report["checks"] if c["name"] == "call")
    assert call["data"]["received"] > 25 and call["data"]["sent"] > 25  # audio both ways


def test_doctor_fails_clearly_without_the_llm_runtime(tmp_path):
    r = run_doctor(tmp_path, "--no-call", hide=["xllamacpp"])
    assert r.returncode == 1, r.stdout + r.stderr
    assert "FAIL  models" in r.stdout and "llama.cpp runtime" in r.stdout, r.stdout
    assert "fix: pip install" in r.stdout and "Traceback" not in r.stdout + r.stderr


def test_doctor_fails_clearly_without_the_synthesizer(tmp_path):
    r = run_doctor(tmp_path, "--no-call", hide=["sanotts"])
    assert r.returncode == 1, r.stdout + r.stderr
    assert "FAIL  models" in r.stdout and "sanotts" in r.stdout, r.stdout
    assert "Traceback" not in r.stdout + r.stderr


def test_demo_says_what_is_missing_at_start(tmp_path):
    from helpers import free_port

    shadow = tmp_path / "shadow" / "sanotts"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'sanotts'\", name='sanotts')\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "shadow")}
    r = subprocess.run([sys.executable, "-m", "voxgate", "demo", "--port", str(free_port()), "--media-port",
                        str(free_port()), "--relay-port", str(free_port())], capture_output=True, text=True,
                       timeout=180, env=env)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "sanotts" in r.stdout and "voxgate doctor" in r.stdout and "demo_ready" not in r.stdout, r.stdout
