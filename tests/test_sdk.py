"""The official OpenAI Agents SDK (`@openai/agents-realtime`, from npm) against voxgate, with only the URL changed.

Node over the WebSocket transport here; the npm packages are pinned in tests/sdk/package.json (CI installs them with
`npm ci`)."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from helpers import TransceiverProcess
from voxgate.client.ws import read_wav_24k

SDK = Path(__file__).with_name("sdk")
KEY = "sk-test"


@pytest.fixture(scope="module")
def sdk():
    if not shutil.which("node"):
        pytest.fail("Node.js is not installed (apt-get install nodejs npm)")
    if not (SDK / "node_modules" / "@openai" / "agents-realtime").exists():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=SDK, check=True, capture_output=True, timeout=300)
    return SDK


@pytest.fixture(scope="module")
def voice_tx(tmp_path_factory):
    import importlib.util

    from voxgate.wire.token import new_secret_line

    secret = tmp_path_factory.mktemp("sdk") / "secret"
    secret.write_text(new_secret_line(3) + "\n")
    asr = "moonshine" if importlib.util.find_spec("moonshine_cpp") else "pocketsphinx"
    t = TransceiverProcess(secret, agent="voice", extra=("--responder", "scripted", "--asr", asr, "--api-key", KEY))
    yield t
    t.stop()


def pcm_file(path, text, voice) -> str:
    """Speech in an espeak-ng voice (not the agent's), as PCM16 mono 24 kHz."""
    wav = str(path) + ".wav"
    subprocess.run(["espeak-ng", "-v", voice, "-s", "150", "-w", wav, text], check=True, capture_output=True)
    Path(path).write_bytes(read_wav_24k(wav))
    return str(path)


def test_node_sdk_websocket_conversation_with_a_tool_and_a_barge_in(sdk, voice_tx, tmp_path):
    q = pcm_file(tmp_path / "q.pcm", "What is the weather like in Paris today?", "en-us+f3")
    b = pcm_file(tmp_path / "b.pcm", "Wait, stop. Tell me about London instead.", "en+m4")
    url = voice_tx.url.replace("http://", "ws://") + "/v1/realtime?model=voxgate"
    run = subprocess.run(["node", "ws_conversation.mjs", url, KEY, q, b], cwd=sdk, capture_output=True, text=True,
                         timeout=90)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert not out["errors"], out["errors"]
    assert "weather" in out["user_transcripts"][0].lower(), out
    assert out["tool_calls"] == ["Paris"], out  # the SDK ran the tool with the arguments the agent gave
    assert out["answer_started"] and out["answer_audio_bytes"] > 24000 * 2 * 0.3, out
    assert any("clear skies" in t for t in out["assistant_transcripts"]), out  # spoken from the tool's result
    # the barge-in: the SDK stopped the answer, truncated it to what it had played, and the server agreed
    assert out["interrupted"] >= 1 and out["truncated"], out
    assert 0 < out["truncated"][0] < 5000, out
    assert len(out["user_transcripts"]) >= 2, out
    kinds = [(i["type"], i.get("role") or i.get("name")) for i in out["history"]]
    assert ("function_call", "get_weather") in kinds and ("message", "user") in kinds, kinds


def test_node_sdk_talks_to_voxgate_demo_over_websocket(sdk, demo, tmp_path):
    """`voxgate demo` as it ships (its default recognizer and language model), the Node SDK's WebSocket transport
    with only the URL changed: a transcript, a spoken reply, and a barge-in the SDK truncates."""
    url, _ = demo
    q = pcm_file(tmp_path / "q.pcm", "Hello. Can you tell me something about the weather?", "en-us+f3")
    b = pcm_file(tmp_path / "b.pcm", "Stop please. Thank you very much.", "en+m4")
    ws = url.split("?")[0].rstrip("/").replace("http://", "ws://").rsplit("/demo", 1)[0] + "/v1/realtime?model=demo"
    run = subprocess.run(["node", "ws_conversation.mjs", ws, "unused-key", q, b, "plain"], cwd=sdk,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert not out["errors"], out["errors"]
    assert out["user_transcripts"] and out["user_transcripts"][0].strip(), out
    assert out["answer_started"] and out["audio_bytes"] > 24000 * 2 * 0.3, out
    assert out["interrupted"] >= 1 and out["truncated"], out
