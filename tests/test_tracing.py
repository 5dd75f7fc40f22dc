"""OpenTelemetry traces, as a collector receives them: a transceiver with ``--otlp-endpoint`` exports to a receiver
in another process (``voxgate.lab.otlp``, decoding with ``opentelemetry-proto``). A spoken turn over a WebSocket
session whose upgrade carried the app's ``traceparent`` leaves a call span in the app's trace, a turn span under it
whose stage events match ``response.done``'s timing, and a GenAI chat span; without an endpoint nothing is sent."""

from __future__ import annotations

import asyncio
import base64
import secrets
import time

import pytest

from helpers import TransceiverProcess
from test_models_api import question_pcm

pytest.importorskip("opentelemetry.proto")


def _turn(tx, pcm: bytes, headers: dict) -> dict:
    import aiohttp

    from test_websocket import Client

    async def go():
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(tx.url.replace("http", "ws") + "/v1/realtime?model=x", headers=headers)
            c = Client(ws)
            await c.wait(lambda c: c.of("session.created"))
            for i in range(0, len(pcm), 9600):
                await c.send({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm[i:i + 9600]).decode()})
            for _ in range(10):  # 2 s of silence: the turn ends
                await c.send({"type": "input_audio_buffer.append", "audio": base64.b64encode(bytes(9600)).decode()})
            await c.wait(lambda c: c.of("response.done"), timeout=60)
            await ws.close()
            return c.of("response.done")[0]["response"]

    return asyncio.run(go())


def test_a_turn_is_traced_in_the_apps_trace(tmp_path):
    from voxgate.lab.otlp import read, receiver
    from voxgate.wire.token import new_secret_line

    secret = tmp_path / "secret"
    secret.write_text(new_secret_line(3) + "\n")
    spans_file = str(tmp_path / "spans.jsonl")
    proc, url = receiver(spans_file)
    tx = TransceiverProcess(secret, agent="voice", extra=("--responder", "scripted", "--otlp-endpoint", url,
                                                          "--drain-timeout", "1"))
    off = TransceiverProcess(secret, agent="voice", extra=("--responder", "scripted", "--drain-timeout", "1"))
    try:
        trace_id, parent = secrets.token_hex(16), secrets.token_hex(8)
        pcm = question_pcm(tmp_path)
        done = _turn(tx, pcm, {"traceparent": f"00-{trace_id}-{parent}-01"})
        _turn(off, pcm, {"traceparent": f"00-{secrets.token_hex(16)}-{parent}-01"})
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            spans = read(spans_file)
            if any(s["name"] == "voxgate.call" for s in spans):
                break
            time.sleep(0.2)
    finally:
        tx.stop()
        off.stop()
        time.sleep(0.5)
        proc.kill()
        proc.wait(5)
    spans = read(spans_file)
    by_name = {}
    for s in spans:
        by_name.setdefault(s["name"], []).append(s)
    [call] = by_name["voxgate.call"]  # one call: the one without an endpoint sent nothing
    assert call["trace_id"] == trace_id and call["parent_span_id"] == parent, call
    assert call["attributes"]["voxgate.transport"] == "websocket" and call["attributes"]["voxgate.api"] == "realtime"
    assert call["service"] == "voxgate-transceiver" and call["attributes"]["voxgate.transceiver.id"]
    [turn] = by_name["voxgate.turn"]
    assert turn["trace_id"] == trace_id and turn["parent_span_id"] == call["span_id"]
    events = {e["name"]: e["ns"] for e in turn["events"]}
    timing = done["voxgate"]["timing"]
    for stage in ("final_transcript", "first_token", "first_audio_written"):  # the stages, on response.done's clock
        ms = (events[stage] - events["turn_end"]) / 1e6
        assert abs(ms - timing[f"turn_end_to_{stage}"]) < 2, (stage, ms, timing)
    [chat] = [s for s in spans if s["attributes"].get("gen_ai.operation.name") == "chat"]
    assert chat["parent_span_id"] == turn["span_id"] and chat["attributes"]["gen_ai.response.id"] == done["id"]
    assert chat["attributes"]["gen_ai.usage.output_tokens"] > 0
    assert chat["attributes"]["voxgate.response.status"] == "completed"


def test_a_chromium_call_to_the_demo_is_traced_and_recorded(tmp_path):
    """`voxgate demo --otlp-endpoint … --record DIR`, a question from Chromium's microphone: a turn span at the
    receiver whose stages match response.done's, and a two-channel recording whose caller channel, transcribed, says
    the question."""
    import wave

    import numpy as np

    sync_api = pytest.importorskip("playwright.sync_api")
    from helpers import piper_wav, running_demo
    from test_sip_calls import transcribe
    from voxgate.lab.chromium import launch
    from voxgate.lab.otlp import read, receiver

    spans_file = str(tmp_path / "spans.jsonl")
    proc, url = receiver(spans_file)
    rec = tmp_path / "rec"
    wav, _ = piper_wav(tmp_path / "question.wav", [1.0, "What is the weather like today?", 6.0])
    try:
        with running_demo("--otlp-endpoint", url, "--record", str(rec)) as (page_url, _):
            with sync_api.sync_playwright() as p:
                browser = launch(p, f"{wav}%noloop")
                try:
                    page = browser.new_page()
                    page.goto(page_url + "?raw")
                    page.click("#talk")
                    page.wait_for_function("window.demo.turns.length > 0", timeout=60000)
                    done = page.evaluate("window.demo.turns[0]")
                    page.click("#talk")
                    page.wait_for_function("window.demo.state === 'ended'", timeout=5000)
                finally:
                    browser.close()
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and not (
                    {"voxgate.turn", "voxgate.call"} <= {s["name"] for s in read(spans_file)}
                    and list(rec.glob("*.json"))):  # the call's span ends with the call (the page hung up)
                time.sleep(0.2)
    finally:
        proc.kill()
        proc.wait(5)
    spans = read(spans_file)
    turns = [s for s in spans if s["name"] == "voxgate.turn"]
    assert turns, [s["name"] for s in spans]
    calls = [s for s in spans if s["name"] == "voxgate.call"]
    assert calls, [(s["name"], s["parent_span_id"], s["span_id"]) for s in spans]
    call = calls[0]
    assert call["attributes"]["voxgate.transport"] == "webrtc" and turns[0]["parent_span_id"] == call["span_id"]
    events = {e["name"]: e["ns"] for e in turns[0]["events"]}
    assert {"final_transcript", "first_token", "first_audio_sent"} <= set(events), events
    # the page's row is response.done's timing (turn_end_to_first_audio_sent): the span's stages are the same numbers
    ms = (events["first_audio_sent"] - events["turn_end"]) / 1e6
    assert abs(ms - done["audio"]) < 2, (ms, done)
    [side] = rec.glob("*.json")
    with wave.open(str(side.with_suffix(".wav"))) as w:
        assert w.getnchannels() == 2 and w.getframerate() == 24000
        frames = np.frombuffer(w.readframes(w.getnframes()), np.int16).reshape(-1, 2)
    assert np.abs(frames[:, 1].astype(np.int32)).max() > 1000  # the agent's answer is on the right
    left = tmp_path / "left.wav"
    with wave.open(str(left), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(24000)
        w.writeframes(frames[:, 0].tobytes())
    heard = transcribe(left).lower()
    assert "weather" in heard, heard
