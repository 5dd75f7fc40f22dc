"""A speech-to-speech model behind the edge (`--agent upstream:ws://…/v1/realtime`): another voxgate process as the
model server, a WebSocket client and a real WebRTC call (aiortc) at the edge; a barge-in told upstream as a cancel
and a truncation to what was heard; an upstream that is down or dies mid-call ends the call with an error."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import socket

import pytest

from helpers import CallProcess, TransceiverProcess, free_port
from test_models_api import KEY, _ask_over_websocket, assert_heard_and_answered, box, question_pcm, spoken  # noqa: F401 (box: a fixture)

openai = pytest.importorskip("openai")


@pytest.fixture(scope="module")
def model_box(box):
    """The model server behind the edges: a voice transceiver (test_models_api's, this module's own instance)."""
    return box[0]


@pytest.fixture(scope="module")
def secret(model_box):
    return model_box.secret_file


def edge_of(secret, upstream_url: str, *extra) -> TransceiverProcess:
    return TransceiverProcess(secret, agent=f"upstream:{upstream_url}",
                              extra=["--api-key", "sk-edge", "--drain-timeout", "1", *extra],
                              env={**os.environ, "OPENAI_API_KEY": KEY})


def ws_url(tx) -> str:
    return tx.url.replace("http://", "ws://") + "/v1/realtime?model=gpt-realtime"


def test_a_websocket_client_talks_to_the_model_behind_the_edge(secret, model_box, tmp_path):
    edge = edge_of(secret, ws_url(model_box))
    try:
        c = _ask_over_websocket(edge, "sk-edge", question_pcm(tmp_path))
        assert_heard_and_answered(c)
        assert c.of("session.created")[0]["session"]["model"].startswith("voxgate-")  # the upstream's session
        assert c.of("response.done")[0]["response"]["status"] == "completed"
    finally:
        edge.stop()


def test_a_webrtc_call_through_the_edge_hears_the_models_answer(secret, model_box, tmp_path):
    """aiortc places a WebRTC call at the edge; the question goes up as appends, the answer comes down, is played
    on the call, recorded by the client and transcribed by the model box: it says Paris."""
    wav = spoken(tmp_path / "q.wav", "What is the capital of France?")
    edge = edge_of(secret, ws_url(model_box))
    try:
        result = CallProcess(edge.url, wav, tmp_path / "answer.wav", "--api-key", "sk-edge", "--duration", "9").result()
        assert result["packets_received"] > 50, result
        types = [e.get("type") for e in result["events"]]
        assert "response.done" in types and "output_audio_buffer.started" in types, types
        client = openai.OpenAI(base_url=model_box.url + "/v1", api_key=KEY, max_retries=0)
        with open(tmp_path / "answer.wav", "rb") as fh:
            heard = client.audio.transcriptions.create(model="whisper-1", file=fh).text.lower()
        assert "paris" in heard, heard  # over Opus the word is heard as it is (μ-law below: _says_paris)
    finally:
        edge.stop()


def test_an_upstream_that_is_down_or_dies_ends_the_call_with_an_error(secret, tmp_path):
    import aiohttp

    async def session(url):
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(url, headers={"Authorization": "Bearer sk-edge"})
            events = []
            pcm = base64.b64encode(b"\1\0" * 24000).decode()
            await ws.send_str(json.dumps({"type": "input_audio_buffer.append", "audio": pcm}))
            async for msg in ws:
                events.append(json.loads(msg.data))
                if events[-1].get("type") == "response.output_audio.delta" and not getattr(session, "killed", False):
                    session.killed = True
                    os.kill(echo.proc.pid, signal.SIGKILL)  # the model server dies mid-call
            return events, ws.close_code

    # nothing listens there
    dead = edge_of(secret, f"ws://127.0.0.1:{free_port(socket.SOCK_STREAM)}/v1/realtime")
    echo = TransceiverProcess(secret, extra=["--api-key", KEY, "--drain-timeout", "1"])  # an echo model server
    alive = edge_of(secret, ws_url(echo))
    try:
        events, code = asyncio.run(asyncio.wait_for(session(ws_url(dead)), 30))
        assert [e["error"]["code"] for e in events if e["type"] == "error"] == ["upstream_unavailable"], events
        events, code = asyncio.run(asyncio.wait_for(session(ws_url(alive)), 30))
        assert any(e["type"] == "response.output_audio.delta" for e in events)  # the echo came back, through it
        assert events[-1]["type"] == "error" and events[-1]["error"]["code"] == "upstream_closed", events[-3:]
    finally:
        for tx in (dead, alive):
            tx.stop()
        echo.proc.kill()


def test_a_barge_in_at_the_edge_cancels_and_truncates_upstream():
    """A fake upstream speaks 3 s, then hears the caller: the edge drops what is queued, and tells the upstream to
    cancel the response and keep only what the caller heard of the item."""
    from aiohttp import web

    from voxgate.agent.shell.base import CallIO
    from voxgate.agent.shell.upstream import UpstreamAgent

    got: list[dict] = []

    async def upstream(request):
        ws = web.WebSocketResponse(protocols=("realtime",))
        await ws.prepare(request)
        await ws.send_json({"type": "session.created", "session": {"id": "sess_1"}})
        await ws.send_json({"type": "response.created", "response": {"id": "resp_1"}})
        ids = {"response_id": "resp_1", "item_id": "item_1", "output_index": 0, "content_index": 0}
        for _ in range(30):  # 3 s of audio, 100 ms a delta
            await ws.send_json({"type": "response.output_audio.delta", **ids,
                                "delta": base64.b64encode(b"\0\1" * 2400).decode()})
        await ws.send_json({"type": "input_audio_buffer.speech_started", "audio_start_ms": 1000, "item_id": "u1"})
        async for msg in ws:
            got.append(json.loads(msg.data))
            if len(got) >= 2:
                break
        await ws.close()
        return ws

    class Call(CallIO):
        paced = True

        def __init__(self):
            super().__init__("rtc_test", 24000)
            self.sent_events, self.written_ms, self.cleared = [], 0.0, None
            self._end = asyncio.Event()

        async def audio(self):
            await self._end.wait()
            return
            yield

        async def events(self):
            await self._end.wait()
            return
            yield

        def write_audio(self, pcm, ids=None):
            self.written_ms += len(pcm) / 48

        def flush_audio(self):
            pass

        def clear_audio(self):
            self.cleared = 2000  # 1 s of the 3 was played when the caller spoke
            return 2000

        @property
        def queued_audio_ms(self):
            return 0

        def audio_sent(self):
            return asyncio.get_running_loop().create_future()

        def send_event(self, event):
            self.sent_events.append(event)
            return True

    async def go():
        app = web.Application()
        app.router.add_get("/v1/realtime", upstream)
        runner = web.AppRunner(app)
        await runner.setup()
        port = free_port(socket.SOCK_STREAM)
        await web.TCPSite(runner, "127.0.0.1", port).start()
        call = Call()
        agent = UpstreamAgent(f"ws://127.0.0.1:{port}/v1/realtime")
        try:
            await asyncio.wait_for(agent.run(call), 10)
        except Exception as exc:  # the fake upstream closes after the two events: upstream_closed
            assert "closed" in str(exc)
        await runner.cleanup()
        return call

    call = asyncio.run(go())
    assert call.cleared == 2000 and round(call.written_ms) == 3000
    assert got[0]["type"] == "response.cancel"
    assert got[1] == {"type": "conversation.item.truncate", "event_id": got[1]["event_id"], "item_id": "item_1",
                      "content_index": 0, "audio_end_ms": 1000}, got
    types = [e["type"] for e in call.sent_events]
    assert types.index("output_audio_buffer.started") < types.index("output_audio_buffer.cleared") \
        < types.index("input_audio_buffer.speech_started")
    assert "response.output_audio.delta" not in types  # the audio was played, not sent as events


def _says_paris(heard: str) -> bool:
    """The answer about France's capital, as a small recognizer hears it over μ-law: "Paris" may come out
    "pearses", "perris" or "peres", so a word that sounds like it, in a sentence about the capital or France."""
    import difflib
    import re

    words = re.findall(r"[a-z]+", heard.lower())
    near = any(difflib.SequenceMatcher(None, w, "paris").ratio() >= 0.55 for w in words)  # "peres" is 0.6
    return near and ("capital" in words or any(w.startswith("fran") for w in words))


def test_a_phone_call_through_the_edge_hears_the_models_answer(secret, model_box, tmp_path):
    """baresip dials the edge (SIP, answered at once); the question goes up, the answer comes down over μ-law."""
    import subprocess

    from test_sip_calls import baresip_call

    sip_port = free_port()
    edge = edge_of(secret, ws_url(model_box), "--sip-listen", f"127.0.0.1:{sip_port}")
    raw = tmp_path / "raw.wav"
    subprocess.run(["flite", "-voice", "slt", "-t", "What is the capital of France?", "-o", str(raw)], check=True)
    wav = tmp_path / "q8k.wav"
    subprocess.run(["sox", str(raw), "-r", "8000", "-c", "1", "-b", "16", str(wav), "pad", "0.5", "7"], check=True)
    try:
        reply = baresip_call(tmp_path, wav, sip_port)
        client = openai.OpenAI(base_url=model_box.url + "/v1", api_key=KEY, max_retries=0)
        with open(reply, "rb") as fh:
            heard = client.audio.transcriptions.create(model="whisper-1", file=fh).text.lower()
        assert _says_paris(heard), heard
    finally:
        edge.stop()


def test_chromium_through_the_edge_gets_the_models_answer(playwright, secret, model_box, tmp_path):
    """Debian's Chromium calls the edge with the question as its microphone; the answer the voxgate behind it
    makes comes back on the data channel (its transcript) and as audio on the track."""
    from helpers import chromium_asks

    edge = edge_of(secret, ws_url(model_box))
    try:
        said, energy = chromium_asks(playwright, edge.url, "sk-edge",
                                     spoken(tmp_path / "q.wav", "What is the capital of France?"))
        assert "paris" in said.lower() and energy > 0, (said, energy)
    finally:
        edge.stop()
