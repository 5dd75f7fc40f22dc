"""The official OpenAI Agents SDK (`@openai/agents-realtime`, from npm) against voxgate, with only the URL changed.

In Node over its WebSocket transport, and in headless Chromium over WebRTC (its default; tests/sdk/browser.js,
bundled with esbuild, served from another origin as a real app would be). The npm packages are pinned in
tests/sdk/package.json (CI installs them with `npm ci`). The speech is espeak-ng's voices, not the agent's."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from helpers import TransceiverProcess, run_async
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
    t = TransceiverProcess(secret, agent="voice", extra=("--responder", "scripted", "--asr", asr, "--api-key", KEY, "--drain-timeout", "1"))
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


@pytest.fixture(scope="module")
def sdk_page(sdk):
    """tests/sdk bundled for the browser and served on a port of its own (another origin than the transceiver)."""
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    subprocess.run([str(sdk / "node_modules" / ".bin" / "esbuild"), "browser.js", "--bundle", "--format=esm",
                    "--platform=browser", "--outfile=dist/browser.js", "--log-level=warning"],
                   cwd=sdk, check=True, timeout=120)

    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(sdk), **kw)

        def log_message(self, *a):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/browser.html"
    server.shutdown()


def mic_wav(path, text, voice, lead_s=1.0, tail_s=20.0) -> tuple[str, float]:
    """A microphone for Chromium (played once): silence, the words in an espeak-ng voice, silence."""
    import wave

    raw = str(path) + ".raw.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-s", "150", "-w", raw, text], check=True, capture_output=True)
    with wave.open(raw, "rb") as w:
        params, frames = w.getparams(), w.readframes(w.getnframes())
    rate = params.framerate
    with wave.open(str(path), "wb") as w:
        w.setparams(params)
        w.writeframes(b"\0\0" * int(lead_s * rate) + frames + b"\0\0" * int(tail_s * rate))
    return f"{path}%noloop", len(frames) / 2 / rate


def browser_scenario(playwright, page_url, voice_tx, mic, scenario, **opts):
    from helpers import launch_chromium

    status, _, body = voice_tx.post("/v1/realtime/client_secrets", b"{}", {"Authorization": f"Bearer {KEY}",
                                                                          "Content-Type": "application/json"})
    assert status == 200, body
    key = json.loads(body)["value"]
    browser = launch_chromium(playwright, mic)
    try:
        page = browser.new_page()
        page.goto(page_url)
        page.wait_for_function(f"typeof window.{scenario} === 'function'", timeout=10000)
        return page.evaluate(f"{scenario}(Object.assign({{key: {key!r}, base: {voice_tx.url!r}}}, {json.dumps(opts)}))")
    finally:
        browser.close()


def test_browser_sdk_calls_a_tool_it_was_asked_for_by_voice(playwright, sdk_page, voice_tx, tmp_path):
    mic, _ = mic_wav(tmp_path / "q.wav", "What is the weather like in Paris today?", "en-us+f3")
    seen = browser_scenario(playwright, sdk_page, voice_tx, mic, "toolScenario")
    assert not seen["errors"], seen["errors"]
    # one call, with the city as the agent heard it (through Opus, the recognizer may mishear the name)
    assert len(seen["toolCalls"]) == 1 and seen["toolCalls"][0], seen
    assert any("dry and windy" in t for t in seen["agentTranscripts"]), seen["agentTranscripts"]
    assert seen["heard"]["packets"] > 50 and seen["heard"]["energy"] > 0, seen["heard"]
    tool_only, answer = seen["responses"][0], seen["responses"][-1]
    assert [o["type"] for o in tool_only["output"]] == ["function_call"] and tool_only["status"] == "completed"
    assert answer["output"][0]["type"] == "message" and answer["status"] == "completed"
    assert ("function_call", "get_weather") in [(i["type"], i.get("name")) for i in seen["history"]]


def test_browser_sdk_hands_off_to_another_agent(playwright, sdk_page, voice_tx, tmp_path):
    mic, _ = mic_wav(tmp_path / "h.wav", "Transfer me to the Spanish agent. Spanish, please.", "en-us+m3")
    seen = browser_scenario(playwright, sdk_page, voice_tx, mic, "handoffScenario")
    assert not seen["errors"], seen["errors"]
    assert seen["handoffs"] == [["Assistant", "Spanish Agent"]] and seen["agent"] == "Spanish Agent", seen
    calls = [o for r in seen["responses"] for o in r["output"] if o["type"] == "function_call"]
    assert calls and calls[0]["name"].lower() == "transfer_to_spanish_agent"
    assert seen["responses"][-1]["status"] == "completed" and seen["agentTranscripts"], seen


def test_browser_sdk_push_to_talk(playwright, sdk_page, voice_tx, tmp_path):
    said = "Hello, I would like to book a table for two."
    mic, seconds = mic_wav(tmp_path / "p.wav", said, "en-us+m2", lead_s=3.0)
    seen = browser_scenario(playwright, sdk_page, voice_tx, mic, "pushToTalkScenario", holdMs=int(seconds * 1000) + 3500)
    assert not seen["errors"], seen["errors"]
    assert "input_audio_buffer.speech_started" not in seen["events"]  # no VAD: the button made the turn
    from voxgate.lab.wer import word_errors

    # the whole buffer between the button's down and up was heard (a recognizer's word errors aside)
    assert seen["userTranscripts"], seen
    errors, words = word_errors(said, seen["userTranscripts"][0])
    assert errors <= 0.4 * words, seen["userTranscripts"]
    assert seen["responses"][0]["status"] == "completed" and seen["agentTranscripts"], seen
    assert seen["heard"]["energy"] > 0, seen["heard"]


def test_browser_sdk_out_of_band_text_response(playwright, sdk_page, voice_tx, tmp_path):
    mic, _ = mic_wav(tmp_path / "s.wav", "Hello.", "en-us+f2", tail_s=5.0)
    seen = browser_scenario(playwright, sdk_page, voice_tx, mic, "outOfBandScenario")
    assert not seen["errors"], seen["errors"]
    [r] = seen["responses"]
    assert r["metadata"] == {"job": "classify"} and r["conversation_id"] is None and r["output_modalities"] == ["text"]
    assert "response.output_text.done" in seen["events"] and "output_audio_buffer.started" not in seen["events"]
    assert "conversation.item.added" not in seen["events"]  # nothing entered the server's conversation


def test_node_sdk_tool_call_with_the_demos_own_language_model(sdk, demo, tmp_path):
    """`voxgate demo` as it ships (SmolLM2 deciding tool calls under a grammar, bench/tools.py): asked by voice about
    the weather, it calls the SDK's tool with the city and answers from the result."""
    url, startup = demo
    if "smollm2" not in startup:
        pytest.skip("the demo runs without its language model here (voxgate[llm] not installed)")
    q = pcm_file(tmp_path / "q.pcm", "What is the weather like in Paris today?", "en-us+f3")
    b = pcm_file(tmp_path / "b.pcm", "Thanks.", "en+m4")
    ws = url.split("?")[0].rstrip("/").rsplit("/demo", 1)[0].replace("http://", "ws://") + "/v1/realtime?model=demo"
    run = subprocess.run(["node", "ws_conversation.mjs", ws, "unused-key", q, b, "tool"], cwd=sdk,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert not out["errors"], out["errors"]
    assert out["tool_calls"] == ["Paris"], out
    assert out["answer_started"] and out["assistant_transcripts"], out
    answer = out["assistant_transcripts"][0].lower()
    assert "18" in answer or "clear" in answer, out  # spoken from the tool's result (18 degrees, clear skies)


def test_python_sdk_over_websocket_push_to_talk_and_text(voice_tx, tmp_path):
    """The official `openai` Python SDK's realtime client (base URL changed only): push-to-talk with espeak speech
    appended as PCM16 24 kHz, a spoken reply; then an out-of-band text response parsed by its own event models."""
    import asyncio
    import base64

    from openai import AsyncOpenAI

    pcm = Path(pcm_file(tmp_path / "q.pcm", "Hello, can you hear me?", "en-us+f3")).read_bytes()
    base = voice_tx.url + "/v1"

    async def go():
        client = AsyncOpenAI(api_key=KEY, base_url=base, websocket_base_url=base.replace("http://", "ws://"))
        async with client.realtime.connect(model="gpt-realtime") as conn:
            await conn.session.update(session={"type": "realtime", "audio": {"input": {"turn_detection": None}}})
            for i in range(0, len(pcm), 9600):
                await conn.input_audio_buffer.append(audio=base64.b64encode(pcm[i:i + 9600]).decode())
            await conn.input_audio_buffer.commit()
            await conn.response.create()
            seen, audio = {}, 0
            async for event in conn:
                if event.type == "response.output_audio.delta":
                    audio += len(base64.b64decode(event.delta))
                seen.setdefault(event.type, event)
                if event.type == "response.done" and "spoken" not in seen:
                    seen["spoken"] = event
                    await conn.response.create(response={"conversation": "none", "output_modalities": ["text"],
                                                         "metadata": {"job": "summary"}})
                elif event.type == "response.done":
                    seen["text"] = event
                    break
            return seen, audio

    seen, audio = run_async(asyncio.wait_for(go(), 60))
    assert seen["conversation.item.input_audio_transcription.completed"].transcript.strip()
    assert seen["spoken"].response.status == "completed" and audio > 24000 * 2 * 0.5
    text = seen["text"].response
    assert text.metadata == {"job": "summary"} and text.output[0].content[0].text
    assert "error" not in seen
