"""The Realtime API over a WebSocket (GET /v1/realtime), against a real `voxgate transceiver` with the voice agent:
speech in voices the agent does not use (espeak-ng), function calling, out-of-band text responses, push-to-talk,
G.711, bad input, back-pressure, and the sideband of a WebRTC call, alone and across a fleet."""

import asyncio
import base64
import json
import time

import aiohttp
import pytest

from helpers import CallProcess, TransceiverProcess, run_async, speech_wav, wait_for
from voxgate.client.ws import read_wav_24k

KEY = "sk-test"
WEATHER = {"type": "function", "name": "get_weather", "description": "The weather in a city.",
           "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}


def _asr():
    import importlib.util

    return "moonshine" if importlib.util.find_spec("moonshine_cpp") else "pocketsphinx"


@pytest.fixture(scope="module")
def tx(tmp_path_factory):
    from voxgate.wire.token import new_secret_line

    secret = tmp_path_factory.mktemp("ws") / "secret"
    secret.write_text(new_secret_line(3) + "\n")
    t = TransceiverProcess(secret, agent="voice", extra=("--responder", "scripted", "--asr", _asr(), "--api-key", KEY, "--drain-timeout", "1"))
    yield t
    t.stop()


@pytest.fixture(scope="module")
def weather_pcm(tmp_path_factory):
    d = tmp_path_factory.mktemp("speech")
    return read_wav_24k(speech_wav(d / "q.wav", "What is the weather like in Paris today?"))


class Client:
    """A raw Realtime WebSocket client: sends events, records every server event with its arrival time."""

    def __init__(self, ws):
        self.ws, self.events, self.times = ws, [], []
        self.audio = bytearray()
        self._reader = asyncio.ensure_future(self._read())
        self._changed = asyncio.Event()

    async def _read(self):
        async for msg in self.ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                event = json.loads(msg.data)
                if event["type"] == "response.output_audio.delta":
                    self.audio += base64.b64decode(event["delta"])
                self.events.append(event)
                self.times.append(time.monotonic())
                self._changed.set()

    def of(self, etype):
        return [e for e in self.events if e["type"] == etype]

    async def wait(self, pred, timeout=20.0):
        deadline = time.monotonic() + timeout
        while not pred(self):
            left = deadline - time.monotonic()
            if left <= 0 or (self._reader.done() and not pred(self)):
                raise AssertionError(f"timed out; got {[e['type'] for e in self.events][-30:]}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except asyncio.TimeoutError:
                pass

    async def send(self, event):
        await self.ws.send_json(event)

    async def speak(self, pcm: bytes, silence_s=1.2, realtime=True):
        """PCM16 24 kHz as a microphone would send it (40 ms appends), then silence (server VAD ends the turn)."""
        step = 24000 * 2 * 40 // 1000
        pcm = pcm + b"\0" * int(24000 * 2 * silence_s)
        for i in range(0, len(pcm), step):
            await self.send({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm[i:i + step]).decode()})
            if realtime:
                await asyncio.sleep(0.04)


def ws_url(tx, query="model=voxgate"):
    return tx.url.replace("http://", "ws://") + "/v1/realtime?" + query


async def connect(http, tx, key=KEY, **kw):
    ws = await http.ws_connect(ws_url(tx, kw.pop("query", "model=voxgate")),
                               headers={"Authorization": f"Bearer {key}"}, **kw)
    c = Client(ws)
    await c.wait(lambda c: c.of("session.created"))
    return c


run = run_async


def test_spoken_tool_call_over_websocket(tx, weather_pcm):
    """Speech -> transcript -> a function call (no audio) -> the client's result -> a spoken answer from it; the
    event sequence has the API's shape, with no WebRTC-only output_audio_buffer events."""

    async def go():
        async with aiohttp.ClientSession() as http:
            c = await connect(http, tx)
            await c.send({"type": "session.update", "session": {"tools": [WEATHER], "tool_choice": "auto"}})
            await c.wait(lambda c: c.of("session.updated"))
            assert c.of("session.updated")[0]["session"]["tools"] == [WEATHER]
            await c.speak(weather_pcm)
            await c.wait(lambda c: c.of("response.done"))
            done = c.of("response.done")[0]["response"]
            assert done["status"] == "completed"
            [call] = done["output"]
            assert call["type"] == "function_call" and call["name"] == "get_weather" and call["status"] == "completed"
            assert json.loads(call["arguments"])["location"] == "Paris"
            assert not c.audio and not c.of("response.output_audio_transcript.delta")  # a tool-only response is silent
            types = [e["type"] for e in c.events]
            i = types.index("response.created")
            assert types[i:i + 3] == ["response.created", "response.output_item.added", "conversation.item.added"]
            j = types.index("response.function_call_arguments.done")
            assert types[j:j + 4] == ["response.function_call_arguments.done", "response.output_item.done",
                                      "conversation.item.done", "response.done"]
            deltas = "".join(e["delta"] for e in c.of("response.function_call_arguments.delta"))
            assert deltas == call["arguments"]
            # the client runs the tool and asks for the answer
            await c.send({"type": "conversation.item.create", "item": {
                "type": "function_call_output", "call_id": call["call_id"],
                "output": json.dumps({"temperature": "21 degrees", "conditions": "sunny"})}})
            await c.send({"type": "response.create"})
            await c.wait(lambda c: len(c.of("response.done")) == 2)
            answer = c.of("response.done")[1]["response"]
            assert answer["status"] == "completed"
            text = answer["output"][0]["content"][0]["transcript"]
            assert "21 degrees" in text and "sunny" in text
            assert len(c.audio) > 24000 * 2 * 1.0  # at least a second of speech came down
            assert not [e for e in c.events if e["type"].startswith("output_audio_buffer.")]
            assert not c.of("error"), c.of("error")
            await c.ws.close()

    run(go())


def test_out_of_band_text_response_leaves_the_conversation_alone(tx):
    async def go():
        async with aiohttp.ClientSession() as http:
            c = await connect(http, tx)
            await c.send({"type": "conversation.item.create", "item": {
                "type": "message", "role": "user", "content": [{"type": "input_text", "text": "hello there"}]}})
            await c.wait(lambda c: c.of("conversation.item.done"))
            await c.send({"type": "response.create", "response": {
                "conversation": "none", "output_modalities": ["text"], "metadata": {"purpose": "classify"},
                "instructions": "Classify the user's mood.",
                "input": [{"type": "item_reference", "id": c.of("conversation.item.done")[0]["item"]["id"]},
                          {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "what mood?"}]}]}})
            await c.wait(lambda c: c.of("response.done"))
            r = c.of("response.done")[0]["response"]
            assert r["metadata"] == {"purpose": "classify"} and r["conversation_id"] is None
            assert r["output_modalities"] == ["text"]
            text = "".join(e["delta"] for e in c.of("response.output_text.delta"))
            assert text and text == c.of("response.output_text.done")[0]["text"]
            assert not c.audio and not c.of("response.output_audio_transcript.delta")
            # nothing of it entered the conversation: a retrieve of its item fails, the user item is the only one
            items = [e["item"]["id"] for e in c.of("conversation.item.done")]
            assert len(items) == 1
            await c.send({"type": "conversation.item.retrieve", "item_id": r["output"][0]["id"], "event_id": "e1"})
            await c.wait(lambda c: c.of("error"))
            assert c.of("error")[0]["error"]["code"] == "item_not_found"
            await c.ws.close()

    run(go())


def test_push_to_talk_and_g711(tx, weather_pcm):
    """turn_detection null, µ-law in and out: commit right after the last append commits all of it, and
    response.create answers; the audio comes back as G.711 (8 kHz, a byte a sample)."""
    from voxgate.audio import G711, Resampler

    ulaw = G711("audio/pcmu").encode(Resampler(24000, 8000)(weather_pcm))

    async def go():
        async with aiohttp.ClientSession() as http:
            c = await connect(http, tx)
            await c.send({"type": "session.update", "session": {"audio": {
                "input": {"format": {"type": "audio/pcmu"}, "turn_detection": None},
                "output": {"format": {"type": "audio/pcmu"}}}}})
            await c.wait(lambda c: c.of("session.updated"))
            audio = c.of("session.updated")[0]["session"]["audio"]
            assert audio["input"]["format"] == audio["output"]["format"] == {"type": "audio/pcmu"}
            for i in range(0, len(ulaw), 8000):  # as fast as the socket takes it: order still holds
                await c.send({"type": "input_audio_buffer.append", "audio": base64.b64encode(ulaw[i:i + 8000]).decode()})
            await c.send({"type": "input_audio_buffer.commit"})
            await c.send({"type": "response.create"})
            await c.wait(lambda c: c.of("response.done"))
            transcript = c.of("conversation.item.input_audio_transcription.completed")[0]["transcript"]
            assert "weather" in transcript.lower(), transcript
            assert not c.of("input_audio_buffer.speech_started")  # no VAD
            seconds = len(c.audio) / 8000
            assert seconds > 1.0, seconds
            await c.ws.close()

    run(go())


def test_bad_input_gets_clear_errors_and_affects_nothing_else(tx):
    async def go():
        async with aiohttp.ClientSession() as http:
            bystander = await connect(http, tx)
            # a bad key: refused before the upgrade
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(ws_url(tx), headers={"Authorization": "Bearer sk-wrong"})
            assert refused.value.status == 401
            # the browser form of the key (a subprotocol) is accepted
            ws = await http.ws_connect(ws_url(tx), protocols=("realtime", f"openai-insecure-api-key.{KEY}"))
            assert ws.protocol == "realtime"
            await ws.close()
            c = await connect(http, tx)
            await c.ws.send_str("{not json")
            await c.ws.send_bytes(b"\x00\x01")
            await c.send({"type": "no.such.event", "event_id": "evt_1"})
            await c.send({"type": "input_audio_buffer.append", "audio": "***"})
            await c.send({"type": "session.update", "event_id": "evt_2",
                          "session": {"instructions": "Be terse.", "audio": {"input": {"turn_detection": {
                              "type": "server_vad", "silence_duration_ms": "long"}}}}})
            await c.wait(lambda c: len(c.of("error")) == 5)
            codes = [e["error"]["code"] for e in c.of("error")]
            # (the socket answers what it checks itself, like a bad append, at once; the agent answers its events
            # in order)
            assert sorted(codes) == ["invalid_json", "invalid_message", "invalid_type", "invalid_value",
                                     "unknown_event"], codes
            bad = next(e["error"] for e in c.of("error") if e["error"]["code"] == "invalid_type")
            assert bad["param"] == "session.audio.input.turn_detection.silence_duration_ms" and bad["event_id"] == "evt_2"
            # the invalid update changed nothing: instructions are as before
            await c.send({"type": "session.update", "session": {}})
            await c.wait(lambda c: c.of("session.updated"))
            assert c.of("session.updated")[0]["session"]["instructions"] == \
                c.of("session.created")[0]["session"]["instructions"]
            # an append over the API's 15 MiB is refused, and the session goes on
            await c.send({"type": "input_audio_buffer.append", "audio": "A" * (16 << 20), "event_id": "evt_big"})
            await c.wait(lambda c: len(c.of("error")) == 6)
            assert c.of("error")[5]["error"]["code"] == "audio_too_large"
            await c.send({"type": "session.update", "session": {}})
            await c.wait(lambda c: len(c.of("session.updated")) == 2)
            # one over 20 MiB ends that socket (aiohttp closes as soon as the frame header says how big it is)
            try:
                await c.ws.send_str(json.dumps({"type": "input_audio_buffer.append", "audio": "A" * (33 << 20)}))
            except ConnectionError:
                pass
            await c.wait(lambda c: c.ws.closed, timeout=10)
            # the other session never noticed
            await bystander.send({"type": "session.update", "session": {"instructions": "Still here."}})
            await bystander.wait(lambda c: c.of("session.updated"))
            assert not bystander.of("error")
            await bystander.ws.close()
        assert wait_for(lambda: tx.health()["websocket_sessions"] == 0, 10)

    run(go())


def test_outbox_is_bounded_for_a_client_that_stops_reading():
    """Server events for a client that does not read pile up to the limit; then the socket is closed with 1008
    and nothing more is queued (memory stays bounded)."""
    from voxgate.transceiver.websocket import Outbox

    class StuckSocket:
        closed_with = None

        async def send_str(self, text):
            await asyncio.Event().wait()  # the client's TCP window is full: never returns

        async def close(self, code, message=b""):
            self.closed_with = code

    async def go():
        ws = StuckSocket()
        box = Outbox(ws, limit=100_000)
        accepted = sum(box.put("x" * 1000) for _ in range(500))
        await asyncio.sleep(0.01)
        assert 99 <= accepted <= 101 and box.overflowed and ws.closed_with == 1008
        assert box.bytes <= 100_000 and not box.put("more")
        await box.close()

    run(go())


def test_sideband_runs_a_tool_for_a_webrtc_call(tx, tmp_path):
    """A WebRTC call (aiortc in its own process, speaking with espeak) and a sideband on its call id: the sideband
    declares the tool, sees the call's function call, answers it, and the caller hears the answer."""
    wav = speech_wav(tmp_path / "q.wav", "What is the weather like in Paris today?")

    async def go():
        call = CallProcess(tx.url, wav, tmp_path / "out.wav", "--api-key", KEY, "--duration", "14")
        try:
            deadline = time.monotonic() + 15
            call_id = None
            while call_id is None and time.monotonic() < deadline:  # the call's id, from the transceiver's metrics
                await asyncio.sleep(0.05)
                call_id = next(iter(_live_calls(tx)), None)
            assert call_id, "the call did not start"
            async with aiohttp.ClientSession() as http:
                # another key may not listen in
                with pytest.raises(aiohttp.WSServerHandshakeError):
                    await http.ws_connect(ws_url(tx, f"call_id={call_id}"), headers={"Authorization": "Bearer nope"})
                side = Client(await http.ws_connect(ws_url(tx, f"call_id={call_id}"),
                                                    headers={"Authorization": f"Bearer {KEY}"}))
                await side.send({"type": "session.update", "session": {"tools": [WEATHER]}})
                await side.wait(lambda c: c.of("session.updated"))
                await side.wait(lambda c: c.of("response.function_call_arguments.done"), timeout=25)
                fc = side.of("response.function_call_arguments.done")[0]
                await side.send({"type": "conversation.item.create", "item": {
                    "type": "function_call_output", "call_id": fc["call_id"],
                    "output": json.dumps({"forecast": "light rain"})}})
                await side.send({"type": "response.create"})
                await side.wait(lambda c: c.of("output_audio_buffer.started"), timeout=15)
                await side.wait(lambda c: len(c.of("response.done")) >= 2, timeout=15)
                spoken = side.of("response.done")[-1]["response"]["output"][0]["content"][0]["transcript"]
                assert "light rain" in spoken
                await side.ws.close()
            result = call.result()
        finally:
            if call.proc.poll() is None:
                call.proc.kill()
        # the caller's own data channel saw the same conversation, and it heard the answer
        types = [e["type"] for e in result["events"]]
        assert "response.function_call_arguments.done" in types and "output_audio_buffer.started" in types
        assert result["packets_received"] > 100

    run(go())


def _live_calls(tx) -> list[str]:
    return json.loads(tx.get("/healthz?calls")[1])["calls"]


def test_sideband_reaches_the_call_through_any_transceiver_of_the_fleet(redis_server, secret_file, tmp_path):
    """Two transceivers in a fleet: the sideband opened on the one that does not hold the call is relayed to the
    one that does; it hears the call's events and its out-of-band response runs there."""
    wav = speech_wav(tmp_path / "hi.wav", "Hello there, can you hear me?")
    extra = ("--responder", "scripted", "--asr", "pocketsphinx", "--api-key", KEY)
    a = TransceiverProcess(secret_file, agent="voice", extra=extra, redis_url=redis_server.url, id="txa")
    b = TransceiverProcess(secret_file, agent="voice", extra=extra, redis_url=redis_server.url, id="txb")
    try:
        assert wait_for(lambda: _members(redis_server) == 2, 10)
        call = CallProcess(a.url, wav, tmp_path / "out.wav", "--api-key", KEY, "--duration", "8")
        holder, call_id = None, None
        deadline = time.monotonic() + 15
        while call_id is None and time.monotonic() < deadline:
            for t in (a, b):
                ids = _live_calls(t)
                if ids:
                    holder, call_id = t, ids[0]
            time.sleep(0.05)
        assert call_id, "the call did not start"
        other = b if holder is a else a

        async def go():
            async with aiohttp.ClientSession() as http:
                side = Client(await http.ws_connect(ws_url(other, f"call_id={call_id}"),
                                                    headers={"Authorization": f"Bearer {KEY}"}))
                await side.wait(lambda c: c.of("conversation.item.done"), timeout=20)  # the call's events reach it
                await side.send({"type": "response.create", "response": {
                    "conversation": "none", "output_modalities": ["text"], "metadata": {"topic": "greeting"},
                    "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}]}})
                await side.wait(lambda c: any(e["response"]["metadata"] == {"topic": "greeting"}
                                              for e in c.of("response.done")), timeout=15)
                await side.ws.close()

        run(go())
        result = call.result()
        oob = [e for e in result["events"] if e["type"] == "response.done"
               and e["response"].get("metadata") == {"topic": "greeting"}]
        assert oob and oob[0]["response"]["conversation_id"] is None  # the caller saw it too, out of band
    finally:
        a.stop()
        b.stop()


def _members(redis_server) -> int:
    from helpers import fleet

    return len(fleet(redis_server.url))


def test_sideband_answers_a_tool_call_for_a_call_placed_by_chromium(playwright, tx, tmp_path):
    """Headless Chromium places the call (its microphone: an espeak question, then silence); a server-side sideband
    declares the tool, runs it when the agent calls it, and the browser hears the answer."""
    import wave

    from helpers import launch_chromium

    q = speech_wav(tmp_path / "q.wav", "What is the weather like in Paris today?")
    with wave.open(q, "rb") as w:
        params, frames = w.getparams(), w.readframes(w.getnframes())
    mic = str(tmp_path / "mic.wav")
    with wave.open(mic, "wb") as w:  # Chromium loops its fake microphone: one question, then a long silence
        w.setparams(params)
        w.writeframes(b"\0" * params.framerate * 2 + frames + b"\0" * params.framerate * 2 * 40)
    browser = launch_chromium(playwright, mic)
    try:
        page = browser.new_page()
        page.goto(tx.url + "/")
        page.evaluate(f"start({{apiKey: {KEY!r}}})")
        page.wait_for_function("window.voxgate.callId !== null", timeout=15000)
        call_id = page.evaluate("window.voxgate.callId")

        async def sideband():
            async with aiohttp.ClientSession() as http:
                side = Client(await http.ws_connect(ws_url(tx, f"call_id={call_id}"),
                                                    headers={"Authorization": f"Bearer {KEY}"}))
                await side.send({"type": "session.update", "session": {"tools": [WEATHER]}})
                await side.wait(lambda c: c.of("response.function_call_arguments.done"), timeout=30)
                fc = side.of("response.function_call_arguments.done")[0]
                assert json.loads(fc["arguments"])["location"]  # the city as heard (through Opus it may differ)
                await side.send({"type": "conversation.item.create", "item": {
                    "type": "function_call_output", "call_id": fc["call_id"],
                    "output": json.dumps({"forecast": "warm and sunny"})}})
                await side.send({"type": "response.create"})
                await side.wait(lambda c: len(c.of("response.done")) >= 2 and c.of("output_audio_buffer.stopped"),
                                timeout=20)
                await side.ws.close()
                return side

        side = run(sideband())
        assert side.of("response.output_audio_transcript.done"), json.dumps([e["type"] for e in side.events])
        spoken = side.of("response.output_audio_transcript.done")[-1]["transcript"]
        assert "warm and sunny" in spoken
        heard = page.evaluate("inboundAudio().then(s => ({packets: s.packetsReceived, energy: s.totalAudioEnergy}))")
        assert heard["packets"] > 50 and heard["energy"] > 0, heard  # the only speech it got was the answer
        browser_events = page.evaluate("window.voxgate.events.map(e => e.type)")
        assert "response.function_call_arguments.done" in browser_events and "output_audio_buffer.stopped" in \
            browser_events  # one conversation: the browser saw the tool call and the answer too
        page.evaluate("hangup()")
    finally:
        browser.close()


def test_hanging_up_while_the_reply_is_queued_leaves_nothing_behind(tx, tmp_path):
    """A WebRTC call hung up while the agent's spoken reply is still queued (and one more over the WebSocket, closed
    mid-reply): no task, no call object, no agent session is left once they are gone."""
    assert wait_for(lambda: tx.health()["sessions"] == 0 and tx.health()["websocket_sessions"] == 0, 10)
    before = tx.health()
    wav = speech_wav(tmp_path / "hi.wav", "Hello there. Tell me a long story please.")
    # the reply starts ~0.5 s after the words end and speaks for seconds: hang up 1.5 s into it
    result = CallProcess(tx.url, wav, tmp_path / "out.wav", "--api-key", KEY, "--duration", "4.5").result()
    types = [e["type"] for e in result["events"]]
    assert "output_audio_buffer.started" in types and "output_audio_buffer.stopped" not in types, types

    async def ws_mid_reply():
        async with aiohttp.ClientSession() as http:
            c = await connect(http, tx)
            await c.send({"type": "conversation.item.create", "item": {
                "type": "message", "role": "user", "content": [{"type": "input_text", "text": "hello"}]}})
            await c.send({"type": "response.create"})
            await c.wait(lambda c: c.of("response.created"))
            await c.ws.close()

    run(ws_mid_reply())
    assert wait_for(lambda: tx.health()["sessions"] == 0 and tx.health()["websocket_sessions"] == 0, 10)
    assert wait_for(lambda: tx.health()["tasks"] <= before["tasks"], 10), (before, tx.health())
    gc = json.loads(tx.get("/healthz?gc")[1])
    assert gc["session_objects"] == 0 and gc["agent_sessions"] == 0, gc


def test_a_client_secrets_session_applies_to_what_is_made_with_it(tx):
    """POST /v1/realtime/client_secrets with a session: a WebSocket (or call) made with that key starts with it;
    an invalid session is refused when minted, naming the field."""
    status, _, body = tx.post("/v1/realtime/client_secrets", json.dumps({"session": {
        "type": "realtime", "instructions": "Speak like a pirate.", "tools": [WEATHER]}}).encode(),
        {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    assert status == 200, body
    secret = json.loads(body)["value"]
    status, _, body = tx.post("/v1/realtime/client_secrets", json.dumps({"session": {"tool_choice": 3}}).encode(),
                              {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    assert status == 400 and json.loads(body)["error"]["param"] == "session.tool_choice"

    async def go():
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(ws_url(tx), protocols=("realtime", f"openai-insecure-api-key.{secret}"))
            c = Client(ws)
            await c.wait(lambda c: c.of("session.created"))
            session = c.of("session.created")[0]["session"]
            assert session["instructions"] == "Speak like a pirate." and session["tools"] == [WEATHER]
            await ws.close()

    run(go())
