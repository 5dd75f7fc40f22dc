"""GPT-Live (OpenAI's Live API) on voxgate, driven by the official ``openai`` SDK (``client.live``) against a real
`voxgate transceiver` with the voice agent: a WebSocket session (silent until ``session.start``, speech in a voice the
agent does not use, the transcripts both ways with their timeline, the voice's audio in the session's format,
context appended and spoken, mute, ``session.closed`` last), the strict session object, and a WebRTC session made
with ``client.live.create`` from an aiortc peer (``session.started`` first on ``oai-events``, audio both ways)."""

import asyncio
import base64
import fractions

import openai
import pytest

from helpers import TransceiverProcess, run_async, speech_wav
from voxgate.client.ws import read_wav_24k

KEY = "sk-live"


def _asr():
    import importlib.util

    return "moonshine" if importlib.util.find_spec("moonshine_cpp") else "pocketsphinx"


@pytest.fixture(scope="module")
def tx(tmp_path_factory):
    from voxgate.wire.token import new_secret_line

    secret = tmp_path_factory.mktemp("live") / "secret"
    secret.write_text(new_secret_line(3) + "\n")
    t = TransceiverProcess(secret, agent="voice", extra=("--responder", "scripted", "--asr", _asr(), "--api-key", KEY,
                                                         "--drain-timeout", "1"))
    yield t
    t.stop()


@pytest.fixture(scope="module")
def question(tmp_path_factory):
    return read_wav_24k(speech_wav(tmp_path_factory.mktemp("q") / "q.wav", "What is the weather like in Paris today?"))


def _client(tx):
    return openai.AsyncOpenAI(base_url=tx.url + "/v1", api_key=KEY, max_retries=0)


async def _until(conn, got: list, done, timeout: float):
    """Read events into ``got`` until ``done(got)`` or ``timeout`` s."""
    async def read():
        while not done(got):
            got.append(await conn.recv())
    await asyncio.wait_for(read(), timeout)


def _peer(wav: str):
    """An aiortc peer speaking ``wav``: (pc, player, the data channel's events, the loud frames' times heard)."""
    from aiortc import RTCPeerConnection
    from aiortc.contrib.media import MediaPlayer

    pc = RTCPeerConnection()
    player = MediaPlayer(wav)
    pc.addTrack(player.audio)
    channel = pc.createDataChannel("oai-events")
    events, loud = [], []
    channel.on("message", lambda m: events.append(__import__("json").loads(m)))

    @pc.on("track")
    def on_track(track):
        async def read():
            while True:
                frame = await track.recv()
                pcm = bytes(frame.planes[0])[: frame.samples * 2 * len(frame.layout.channels)]
                if max(abs(int.from_bytes(pcm[i:i + 2], "little", signed=True)) for i in range(0, len(pcm), 64)) > 1500:
                    loud.append(frame.pts * fractions.Fraction(1, frame.sample_rate))
        asyncio.ensure_future(read())
    return pc, player, events, loud


async def _ask(conn, pcm: bytes):
    """The question in 100 ms appends, then 2 s of silence (the turn ends)."""
    for i in range(0, len(pcm), 4800):
        await conn.send({"type": "session.input_audio.append", "audio": base64.b64encode(pcm[i:i + 4800]).decode()})
    for _ in range(20):
        await conn.send({"type": "session.input_audio.append", "audio": base64.b64encode(bytes(4800)).decode()})


def _of(got, kind):
    return [e for e in got if e.type == kind]


def test_the_sdk_holds_a_live_websocket_session(tx, question):
    async def go():
        async with _client(tx).live.connect() as conn:
            await conn.send({"type": "session.instructions.append", "event_id": "early", "content": "x",
                             "delegation_id": None})
            got = []
            await _until(conn, got, lambda g: g, 5)
            assert got[0].type == "error" and got[0].error.code == "session_not_started", got[0]  # nothing before start
            await conn.send({"type": "session.start", "event_id": "c1", "session": {
                "model": "gpt-live-1", "instructions": "Be brief.", "audio": {"output": {"voice": "cedar"}}}})
            await _until(conn, got, lambda g: _of(g, "session.started"), 10)
            started = _of(got, "session.started")[0]
            assert started.client_event_id == "c1" and started.session.id.startswith("live_")
            assert started.session.audio.format.type == "audio/pcm" and started.session.audio.format.rate == 24000
            assert started.session.delegation.type == "client" and started.session.status == "active"
            await _ask(conn, question)  # 100 ms per append, then 2 s of silence
            audio = bytearray()

            def spoke(g):
                for e in g[len(spoke.seen):]:
                    if e.type == "session.output_audio.delta":
                        audio.extend(base64.b64decode(e.delta))
                spoke.seen = list(g)
                return _of(g, "session.output_transcript.delta") and len(audio) > 24000 * 2 * 0.5
            spoke.seen = []
            await _until(conn, got, spoke, 30)
            heard = "".join(e.delta for e in _of(got, "session.input_transcript.delta")).lower()
            assert "weather" in heard, heard
            for e in _of(got, "session.input_transcript.delta") + _of(got, "session.output_transcript.delta"):
                assert e.event_id and isinstance(e.start_ms, int) and 0 <= e.start_ms <= e.end_ms, e
            said = "".join(e.delta for e in _of(got, "session.output_transcript.delta"))
            assert said.strip(), said
            # nothing of the Realtime vocabulary leaks into a Live session
            assert not [e.type for e in got if e.type.startswith(("response.", "conversation.", "input_audio_buffer"))]

            # context the voice speaks now, acknowledged on the session's timeline
            n = len(_of(got, "session.output_transcript.delta"))
            await conn.send({"type": "session.commentary.append", "event_id": "c2", "delegation_id": None,
                             "content": "Your table for two is booked for eight tonight."})
            await _until(conn, got, lambda g: _of(g, "session.commentary.appended")
                         and len(_of(g, "session.output_transcript.delta")) > n, 30)
            ack = _of(got, "session.commentary.appended")[0]
            assert ack.client_event_id == "c2" and 0 <= ack.start_ms <= ack.end_ms
            await conn.send({"type": "session.input_audio.mute", "event_id": "m1"})
            await conn.send({"type": "session.input_audio.unmute", "event_id": "m2"})
            await _until(conn, got, lambda g: _of(g, "session.input_audio.unmuted"), 10)
            assert _of(got, "session.input_audio.muted")[0].client_event_id == "m1"
            await conn.send({"type": "session.close", "event_id": "bye"})
            await _until(conn, got, lambda g: _of(g, "session.closed"), 10)
            closed = _of(got, "session.closed")[0]
            assert closed.reason == "close_requested" and closed.usage.seconds > 0 and closed.client_event_id == "bye"
            rest = []
            try:  # the server closes the socket after it: nothing follows session.closed
                await _until(conn, rest, lambda g: False, 5)
            except Exception:
                pass
            assert not rest, rest

    run_async(go())


def test_a_live_session_is_checked_strictly(tx):
    async def go():
        async with _client(tx).live.connect() as conn:
            got = []
            await conn.send({"type": "session.start", "event_id": "s1",
                             "session": {"model": "gpt-live-1", "temperature": 0.2}})
            await _until(conn, got, lambda g: g, 5)
            err = got[0].error
            assert got[0].type == "error" and err.code == "unknown_parameter" and err.param == "session.temperature"
            assert err.client_event_id == "s1"
            for bad, param in (({"audio": {"format": {"type": "audio/pcm", "rate": 44100}}}, "session.audio.format.rate"),
                               ({"audio": {"output": {"voice": "nobody"}}}, "session.audio.output.voice"),
                               ({"delegation": {"type": "responses", "responses": {
                                   "model": "m", "tools": [{"type": "web_search"}]}}},
                                "session.delegation.responses.tools[0].type"),
                               ({"delegation": {"type": "decisions", "decisions": {"model": "m", "questions": [
                                   {"type": "choice", "instructions": "?", "choices": [{"value": "a"}]}]}}},
                                "session.delegation.decisions.questions")):
                await conn.send({"type": "session.start", "session": {"model": "gpt-live-1", **bad}})
                await _until(conn, got, lambda g, n=len(got): len(g) > n, 5)
                assert got[-1].type == "error" and got[-1].error.param == param, got[-1]
            await conn.send({"type": "session.start", "event_id": "ok", "session": {
                "model": "gpt-live-1", "audio": {"format": {"type": "audio/pcmu", "rate": 8000}}}})
            await _until(conn, got, lambda g: _of(g, "session.started"), 5)
            for event, code in (({"type": "session.start", "session": {"model": "gpt-live-1"}}, "session_already_started"),
                                ({"type": "response.create"}, "invalid_request_error"),
                                ({"type": "session.update", "session": {"audio": {}}}, "unknown_parameter"),
                                ({"type": "session.thinking.append", "content": "hm"}, "missing_required_parameter"),
                                ({"type": "no.such.event"}, "unknown_event")):
                await conn.send(event)
                await _until(conn, got, lambda g, n=len(got): len(g) > n, 5)
                assert got[-1].type == "error" and got[-1].error.code == code, (event, got[-1])
            await conn.send({"type": "session.thinking.append", "event_id": "t", "content": "The user is Ada.",
                             "delegation_id": None})
            await _until(conn, got, lambda g: _of(g, "session.thinking.appended"), 5)
            await conn.send({"type": "session.close"})
            await _until(conn, got, lambda g: _of(g, "session.closed"), 5)

    run_async(go())


def test_the_sdk_makes_a_live_webrtc_session(tx, tmp_path):
    """``client.live.create`` with an aiortc peer's offer: 201 with the session id and the answer; the data channel's
    first event is ``session.started``; the question goes in on the track, the voice comes back on it."""
    from aiortc import RTCSessionDescription

    wav = speech_wav(tmp_path / "q.wav", "What is the weather like in Paris today?")

    async def go():
        pc, player, events, loud = _peer(wav)

        await pc.setLocalDescription(await pc.createOffer())
        created = await _client(tx).live.create(
            session={"model": "gpt-live-1", "instructions": "Be brief.", "audio": {"output": {"voice": "marin"}}},
            transport={"type": "webrtc", "sdp": pc.localDescription.sdp})
        assert created.session.id.startswith("live_") and created.transport.sdp.startswith("v=0")
        await pc.setRemoteDescription(RTCSessionDescription(created.transport.sdp, "answer"))
        client = _client(tx)
        side_events = []
        async with client.live.sideband.connect(session_id=created.session.id) as side:  # the app's server
            reader = asyncio.ensure_future(_until(side, side_events, lambda g: False, 60))
            for _ in range(300):
                if any(e["type"] == "session.output_transcript.delta" for e in events) and len(loud) > 10:
                    break
                await asyncio.sleep(0.1)
            await side.send({"type": "session.instructions.append", "event_id": "sb1", "content": "Be warm.",
                             "delegation_id": None})
            for _ in range(50):
                if _of(side_events, "session.instructions.appended"):
                    break
                await asyncio.sleep(0.1)
            reader.cancel()
        # the sideband: a replay from the start, every event, the call's audio both ways with its timeline
        assert side_events[0].type == "session.started" and side_events[0].session.id == created.session.id
        assert _of(side_events, "session.input_transcript.delta") and _of(side_events, "session.output_transcript.delta")
        assert _of(side_events, "session.input_audio.append"), "the caller's audio reflected"
        out = _of(side_events, "session.output_audio.delta")
        assert out and all(0 <= e.start_ms <= e.end_ms for e in out)
        assert _of(side_events, "session.instructions.appended")[0].client_event_id == "sb1"
        assert events and events[0]["type"] == "session.started", events[:3]
        assert events[0]["session"]["id"] == created.session.id and "format" not in events[0]["session"]["audio"]
        heard = "".join(e["delta"] for e in events if e["type"] == "session.input_transcript.delta").lower()
        assert "weather" in heard, heard
        assert any(e["type"] == "session.output_transcript.delta" for e in events), [e["type"] for e in events]
        assert len(loud) > 10  # the voice came back on the track
        assert not [e for e in events if e["type"].startswith(("response.", "conversation."))]
        status, _, _ = tx.post(f"/v1/live/sessions/{created.session.id}/hangup", b"",
                               {"Authorization": f"Bearer {KEY}"})
        assert status == 200
        await pc.close()
        player.audio.stop()

    run_async(go())


def test_the_live_face_on_the_engine_alone():
    """Sans-IO: the same engine as a Realtime call, with the Live face: silent until session.start, Live's events
    and none of Realtime's, a WebRTC session's data-channel permissions."""
    from voxgate.agent.core import engine as en
    from voxgate.agent.core.conversation import Emit
    from voxgate.agent.core.live_face import LiveFace

    def wire(face, actions):
        return [w for a in actions if type(a) is Emit for w in [face.wire(a.event, "e", 1.0)] if w is not None]

    face = LiveFace("websocket", session_id="live_x", unix_now=1_800_000_000)
    eng = en.Engine(instructions="", model="m", asr="a", voice="joe", vad="v", responder="r", face=face)
    assert wire(face, eng.start(None, en.Hearing(), 0.0)) == []  # a WebSocket waits for session.start
    out = wire(face, eng.client_event({"type": "session.start", "event_id": "a",
                                       "session": {"model": "gpt-live-1", "input": [
                                           {"role": "user", "content": [{"type": "input_text", "text": "Hi"}]}]}}, 0.1))
    assert [w["type"] for w in out] == ["session.started"], out  # the history's items are not Live's events
    assert out[0]["session"]["expires_at"] == 1_800_003_600 and out[0]["client_event_id"] == "a"
    assert eng.conv.items[0]["content"][0]["text"] == "Hi"
    assert abs(eng.next_deadline() - 15.1) < 1e-6  # session.usage.updated, cumulative, every 15 s
    [usage] = wire(face, eng.timer(15.2))
    assert usage["type"] == "session.usage.updated" and usage["usage"]["seconds"] > 15

    face = LiveFace("webrtc", session_id="live_y")
    eng = en.Engine(instructions="", model="m", asr="a", voice="joe", vad="v", responder="r", face=face)
    session = {"model": "gpt-live-1", "client": {"data_channel": {
        "allowed_client_events": ["session.close"], "allowed_server_events": [{"type": "session.closed"}]}}}
    assert wire(face, eng.start(session, en.Hearing(), 0.0)) == []  # session.started is not allowed on the channel
    [info] = wire(face, eng.client_event({"type": "session.input_audio.mute", "event_id": "m"}, 0.2))
    assert info["type"] == "info" and info["code"] == "data_channel_permissions" and info["client_event_id"] == "m"
    assert not eng.muted
    closed = wire(face, eng.client_event({"type": "session.close"}, 0.3))
    assert [w["type"] for w in closed] == ["session.closed"] and closed[0]["reason"] == "close_requested"


def test_delegation_on_the_engine_alone():
    """Sans-IO: a question is delegated (small talk is not); the three kinds of delegation, a function tool answered
    by the app, the acknowledgement's delay and its cancellation, a trigger, and their errors."""
    from voxgate.agent.core import delegation as dl
    from voxgate.agent.core import engine as en
    from voxgate.agent.core.conversation import Emit, StartResponse
    from voxgate.agent.core.live_face import LiveFace
    from voxgate.agent.core.reply import Called, Ended, Failed, Said

    def run(kind_cfg, triggers=None):
        face = LiveFace("websocket", session_id="live_d")
        eng = en.Engine(instructions="", model="m", asr="a", voice="joe", vad="v", responder="r", face=face)
        session = {"model": "gpt-live-1", "delegation": kind_cfg}
        if triggers:
            session["triggers"] = triggers
        eng.start(None, en.Hearing(), 0.0)
        eng.client_event({"type": "session.start", "session": session}, 0.0)
        return face, eng

    def wire(face, actions):
        return [w for a in actions if type(a) is Emit for w in [face.wire(a.event, f"e{id(a)}", 1.0)] if w]

    def turn(face, eng, text, now):  # the caller's turn, final, as the engine commits it
        eng.conv.commit_user_item(eng.conv.new_id("item"), text)
        return face.takes_turn(eng.conv, text, True, now)

    def said(eng, actions):
        return [eng.conv.responses[a.rid].config.say if type(a) is StartResponse else a.config.say
                for a in actions if type(a) in (StartResponse, en.StartRunner)]

    # small talk stays with the voice; a question goes to the backend
    face, eng = run({"type": "client"})
    assert face.takes_turn(eng.conv, "Thank you so much!", True, 1.0) is None
    acts = turn(face, eng, "What's my balance?", 1.0)
    [created] = [w for w in wire(face, acts) if w["type"] == "session.delegation.created"]
    assert created["delegation"]["target"] == "client" and "response_id" not in created["delegation"]
    assert said(eng, acts) == [dl.ACKS[0]]  # client: acknowledged at once
    did = created["delegation"]["id"]
    out = wire(face, eng.client_event({"type": "session.commentary.append", "event_id": "c", "delegation_id": did,
                                       "content": "Your balance is 42 dollars."}, 2.0))
    assert [w["type"] for w in out] == ["session.commentary.appended"]
    bad = wire(face, eng.client_event({"type": "session.thinking.append", "delegation_id": "item_nope",
                                       "content": "x"}, 2.1))
    assert bad[0]["type"] == "error" and bad[0]["error"]["param"] == "delegation_id"
    assert wire(face, eng.client_event({"type": "response.create", "event_id": "r"}, 2.2))[0]["error"][
        "message"] == "response.create requires Responses delegation."

    # an app that adds nothing to a client delegation: the voice answers it itself after CLIENT_WAIT_S
    face, eng = run({"type": "client"})
    turn(face, eng, "What's the weather like?", 1.0)
    assert abs(eng.next_deadline() - (1.0 + dl.CLIENT_WAIT_S)) < 1e-6
    assert said(eng, eng.timer(1.0 + dl.CLIENT_WAIT_S)) == [None]  # a reply of its own model, not given words

    # responses: the backend's stream as response.event, a function call the app answers, then its answer spoken
    tools = [{"type": "function", "name": "get_balance", "parameters": {"type": "object", "properties": {}}}]
    face, eng = run({"type": "responses", "responses": {"model": "my-backend", "tools": tools}})
    acts = turn(face, eng, "What's my balance?", 1.0)
    [start] = [a for a in acts if type(a) is dl.StartBackend]
    assert start.tools[0]["name"] == "get_balance"
    assert start.messages[-1] == {"role": "user", "content": "What's my balance?"}
    created = [w for w in wire(face, acts) if w["type"] == "session.delegation.created"][0]["delegation"]
    assert created["target"] == "responses" and created["response_id"] == start.key
    events = wire(face, eng.backend(start.key, Called("get_balance", "call_1", "{}"), 1.2))
    events += wire(face, eng.backend(start.key, Ended(), 1.3))
    kinds = [w["event"]["type"] for w in events]
    assert "response.output_item.done" in kinds and kinds[-1] == "response.completed", kinds
    assert all(w["delegation_id"] == created["id"] for w in events)
    early = wire(face, eng.client_event({"type": "response.create", "event_id": "r0"}, 1.4))
    assert early[0]["type"] == "error" and "call_1" in early[0]["error"]["message"]
    assert wire(face, eng.client_event({"type": "response.item.create", "item": {
        "type": "function_call_output", "call_id": "call_1", "output": "42 dollars"}}, 1.5)) == []
    acts = eng.client_event({"type": "response.create", "event_id": "r1"}, 1.6)
    [again] = [a for a in acts if type(a) is dl.StartBackend]
    assert [m["role"] for m in again.messages[-2:]] == ["assistant", "tool"]
    wire(face, acts)
    for piece in ("You have", " 42 dollars."):
        eng.backend(again.key, Said(piece), 1.7)
    acts = eng.backend(again.key, Ended(), 1.8)
    assert said(eng, acts) == ["You have 42 dollars."]
    # a failing backend: an error event and a spoken apology, never a silent line
    acts = turn(face, eng, "And my last payment?", 2.0)
    key = [a for a in acts if type(a) is dl.StartBackend][0].key
    acts = eng.backend(key, Failed("HTTP 500"), 2.1)
    assert [w["type"] for w in wire(face, acts)][-1] == "error" and said(eng, acts) == [dl.FAILED_SAY]

    # decisions: the acknowledgement waits 400 ms; the answers come as decision.event
    q = [{"type": "predicate", "name": "angry", "instructions": "Is the caller angry?"},
         {"type": "choice", "instructions": "Topic?", "choices": [{"value": "billing"}, {"value": "other"}]}]
    face, eng = run({"type": "decisions", "decisions": {"model": "dm", "questions": q}})
    acts = turn(face, eng, "My bill is wrong again.", 1.0)
    assert said(eng, acts) == [] and abs(eng.next_deadline() - 1.4) < 1e-6
    key = [a for a in acts if type(a) is dl.StartBackend][0].key
    eng.backend(key, Said("1: yes\n2: billing"), 1.2)
    [decision] = wire(face, eng.backend(key, Ended(), 1.3))
    answers = decision["event"]["decision"]["answers"]
    assert decision["type"] == "decision.event" and decision["delegation_id"] == key
    assert answers[0] == {"type": "predicate", "probability": 1.0, "name": "angry"} and answers[1]["choice"] == "billing"
    assert said(eng, eng.timer(1.45)) == [dl.ACKS[0]]
    dup = wire(face, eng.client_event({"type": "decision.create", "event_id": "d1"}, 2.0))
    assert dup == [] and wire(face, eng.client_event({"type": "decision.create", "event_id": "d1"}, 2.1))[0][
        "error"]["param"] == "event_id"

    # a trigger on the caller's words fires on the delta's event id
    trig = [{"type": "decisions", "event_type": "session.input_transcript.delta",
             "decisions": {"questions": [q[0]]}}]
    face, eng = run({"type": "client"}, trig)
    from voxgate.agent.core import events as ev
    face.wire(ev.TranscriptionCompleted("item_1", 0, "I am so annoyed", {}), "evt_src", 3.0)
    acts = eng.timer(3.0)
    [start] = [a for a in acts if type(a) is dl.StartBackend]
    eng.backend(start.key, Said("No."), 3.1)
    [decision] = wire(face, eng.backend(start.key, Ended(), 3.2))
    assert decision["source_event_id"] == "evt_src" and decision["trigger_id"] and decision["delegation_id"] is None
    assert decision["event"]["decision"]["answers"][0]["probability"] == 0.0

    # a fixture: the input muted and context refused while it plays, unmuted (and played) once it has
    face, eng = run({"type": "client"})
    acts = eng.client_event({"type": "session.output_audio.fixture.play", "event_id": "f",
                             "audio": base64.b64encode(bytes(4800)).decode()}, 4.0)
    assert eng.muted and [w["type"] for w in wire(face, acts)][-1] == "session.output_audio.fixture.playing"
    [start] = [a for a in acts if type(a) is en.StartRunner]
    assert start.config.fixture == bytes(4800) and not start.config.in_conversation
    refused = wire(face, eng.client_event({"type": "session.commentary.append", "event_id": "c", "content": "x",
                                           "delegation_id": None}, 4.1))
    assert refused[0]["type"] == "error" and "fixture" in refused[0]["error"]["message"]
    eng.report(start.rid, Said(""), 4.2)
    done = wire(face, eng.report(start.rid, Ended(), 4.3))
    assert "session.output_audio.fixture.played" in [w["type"] for w in done] and not eng.muted

    # hosted tools are refused by name; a trigger per event type at most
    from voxgate.agent.core.live_face import check_session
    from voxgate.agent.core.schema import Invalid
    with pytest.raises(Invalid, match="hosted tools"):
        check_session({"model": "m", "delegation": {"type": "responses", "responses": {
            "model": "b", "tools": [{"type": "web_search"}]}}}, transport="websocket")
    with pytest.raises(Invalid, match="at most one"):
        check_session({"model": "m", "triggers": trig * 2}, transport="websocket")


def test_a_question_delegated_to_a_responses_backend_with_a_function_tool(tx, question):
    """The official SDK, a spoken question, Responses delegation with a function tool: the voice acknowledges at
    once, the backend's call comes as response.event, the app's output and response.create resume it, and the voice
    speaks its answer. The backend here is the transceiver's responder (the default of --delegate)."""
    tools = [{"type": "function", "name": "get_weather", "description": "The weather in a city",
              "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}}]

    async def go():
        async with _client(tx).live.connect() as conn:
            await conn.send({"type": "session.start", "session": {"model": "gpt-live-1", "delegation": {
                "type": "responses", "responses": {"model": "backend-1", "tools": tools}}}})
            got: list = []
            await _until(conn, got, lambda g: _of(g, "session.started"), 10)
            await _ask(conn, question)

            def called(g):
                return [e for e in _of(g, "response.event") if e.event.get("type") == "response.output_item.done"
                        and e.event["item"]["type"] == "function_call"]
            await _until(conn, got, lambda g: called(g) and _of(g, "session.output_transcript.delta"), 30)
            [created] = _of(got, "session.delegation.created")
            assert created.delegation.target == "responses" and created.delegation.response_id
            call = called(got)[0]
            assert call.delegation_id == created.delegation.id
            assert call.event["item"]["name"] == "get_weather" and "Paris" in call.event["item"]["arguments"]
            ack = "".join(e.delta for e in _of(got, "session.output_transcript.delta"))
            assert ack.strip(), ack  # the voice said something while the backend worked
            await conn.send({"type": "response.item.create", "item": {
                "type": "function_call_output", "call_id": call.event["item"]["call_id"],
                "output": "sunny and 21 degrees"}})
            await conn.send({"type": "response.create"})
            await _until(conn, got, lambda g: "21" in "".join(e.delta for e in _of(g, "session.output_transcript.delta")),
                         30)
            stream = [e.event["type"] for e in _of(got, "response.event")]
            assert stream.count("response.completed") == 2 and "response.output_text.delta" in stream, stream
            said = "".join(e.delta for e in _of(got, "session.output_transcript.delta"))
            assert "sunny" in said, said
            bad = []
            await conn.send({"type": "response.create", "event_id": "again"})  # nothing waits for tool outputs now
            await _until(conn, bad, lambda g: _of(g, "error"), 10)
            assert _of(bad, "error")[0].error.client_event_id == "again"

    run_async(go())


def test_a_stored_session_is_recorded_and_downloaded_with_the_sdk(tx, question, tmp_path):
    """store: true: the call is recorded as it goes (the caller left, the agent right, 24 kHz); the SDK's
    download_recording gets it; the caller's channel, transcribed, says what the caller said; another key gets 404."""
    import io
    import wave

    import numpy as np

    from test_sip_calls import transcribe

    async def go():
        client = _client(tx)
        async with client.live.connect() as conn:
            await conn.send({"type": "session.start", "session": {"model": "gpt-live-1", "store": True}})
            got: list = []
            await _until(conn, got, lambda g: _of(g, "session.started"), 10)
            sid = _of(got, "session.started")[0].session.id
            await _ask(conn, question)
            await _until(conn, got, lambda g: _of(g, "session.output_audio.delta"), 30)  # the acknowledgement
            await asyncio.sleep(1)
            await conn.send({"type": "session.close"})
            await _until(conn, got, lambda g: _of(g, "session.closed"), 10)
        data = b""
        for _ in range(50):  # the sidecar is written as the session's agent ends, just after the socket closes
            resp = await client.live.sessions.download_recording(sid)
            data = await resp.aread() if hasattr(resp, "aread") else resp.read()
            if data:
                break
            await asyncio.sleep(0.1)
        other = openai.AsyncOpenAI(base_url=tx.url + "/v1", api_key="sk-not-the-owner", max_retries=0)
        with pytest.raises(openai.APIStatusError):
            await other.live.sessions.download_recording(sid)
        return data

    data = run_async(go())
    with wave.open(io.BytesIO(data)) as w:
        assert (w.getnchannels(), w.getframerate(), w.getsampwidth()) == (2, 24000, 2)
        frames = np.frombuffer(w.readframes(w.getnframes()), np.int16).reshape(-1, 2)
    assert len(frames) >= len(question) // 2  # the caller's whole audio is in it
    left, right = frames[:, 0], frames[:, 1]
    assert np.abs(right.astype(np.int32)).max() > 1000  # the agent spoke
    path = tmp_path / "left.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(24000)
        w.writeframes(left.tobytes())
    heard = transcribe(path).lower()
    assert "weather" in heard and "paris" in heard, heard


@pytest.mark.parametrize("transport", ["websocket", "webrtc"])
def test_voxgate_call_speaks_gpt_live(tx, tmp_path, transport):
    """`voxgate call --api live`: a spoken question over a Live WebSocket or WebRTC session, and the voice back."""
    import json
    import subprocess
    import sys
    import wave

    wav = speech_wav(tmp_path / "q.wav", "Hello there, can you hear me?")
    out = tmp_path / "out.wav"
    run = subprocess.run([sys.executable, "-m", "voxgate", "call", "--api", "live", "--transport", transport,
                          "--url", tx.url, "--api-key", KEY, "--input", wav, "--output", str(out),
                          "--duration", "9"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    types = [e.get("type") for e in result["events"]]
    assert types[0] == "session.started", types[:5]
    assert "session.output_transcript.delta" in types, types
    with wave.open(str(out)) as w:
        assert w.getnframes() / w.getframerate() > 0.5  # the voice's answer came back as audio


def test_a_stored_session_forked_over_websocket_and_webrtc(tx, question, tmp_path):
    """A stored session's forks with the SDK: ``client.live.forks.connect`` (session.start with no model) and
    ``client.live.sessions.fork`` (WebRTC): each starts from the stored session's voice and conversation; the WebRTC
    fork hears a question and answers on its track. Another key cannot fork it."""
    from aiortc import RTCSessionDescription

    wav = speech_wav(tmp_path / "q.wav", "Please tell me the time in Tokyo.")

    async def go():
        client = _client(tx)
        async with client.live.connect() as conn:
            await conn.send({"type": "session.start", "session": {
                "model": "gpt-live-1", "store": True, "audio": {"output": {"voice": "cedar"}},
                "input": [{"role": "user", "content": [{"type": "input_text", "text": "My name is Ada."}]}]}})
            got: list = []
            await _until(conn, got, lambda g: _of(g, "session.started"), 10)
            sid = _of(got, "session.started")[0].session.id
            await _ask(conn, question)
            await _until(conn, got, lambda g: _of(g, "session.output_transcript.delta"), 30)
            await conn.send({"type": "session.close"})
            await _until(conn, got, lambda g: _of(g, "session.closed"), 10)
        await asyncio.sleep(0.5)

        async with client.live.forks.connect(session_id=sid) as fork:  # over a WebSocket
            await fork.send({"type": "session.start", "event_id": "f1", "session": {"audio": {"format": {
                "type": "audio/pcm", "rate": 16000}}}})
            fgot: list = []
            await _until(fork, fgot, lambda g: _of(g, "session.started") or _of(g, "error"), 10)
            started = _of(fgot, "session.started")[0].session
            assert started.id != sid and started.model == "gpt-live-1" and started.audio.output.voice == "cedar"
            assert started.audio.format.rate == 16000
            texts = [m.content[0].text for m in started.input]
            assert texts[0] == "My name is Ada." and any("weather" in t.lower() for t in texts), texts
            await fork.send({"type": "session.close"})
            await _until(fork, fgot, lambda g: _of(g, "session.closed"), 10)

        pc, player, events, loud = _peer(wav)  # over WebRTC: audio both ways

        await pc.setLocalDescription(await pc.createOffer())
        secret = (await client.realtime.client_secrets.create()).value  # a browser's key: not the session's maker
        with pytest.raises(openai.NotFoundError):
            await openai.AsyncOpenAI(base_url=tx.url + "/v1", api_key=secret, max_retries=0).live.sessions.fork(
                sid, transport={"type": "webrtc", "sdp": pc.localDescription.sdp})
        forked = await client.live.sessions.fork(sid, transport={"type": "webrtc", "sdp": pc.localDescription.sdp})
        assert forked.session.id.startswith("live_") and forked.session.id != sid
        await pc.setRemoteDescription(RTCSessionDescription(forked.transport.sdp, "answer"))
        for _ in range(300):
            if any(e["type"] == "session.input_transcript.delta" for e in events) and len(loud) > 10:
                break
            await asyncio.sleep(0.1)
        assert events[0]["type"] == "session.started", events[:2]
        assert events[0]["session"]["input"][0]["content"][0]["text"] == "My name is Ada."
        heard = "".join(e["delta"] for e in events if e["type"] == "session.input_transcript.delta").lower()
        assert "tokyo" in heard, heard
        assert len(loud) > 10  # the fork's voice came back on the track
        await pc.close()
        player.audio.stop()

    run_async(go())


def test_a_fixture_plays_as_given_with_the_input_muted(tx):
    """session.output_audio.fixture.play: checked whole (base64 PCM16 24 kHz, at most 30 s), acknowledged
    ``playing``, played as it is (the same samples come back), then ``played`` (over a WebSocket, once it is all
    sent: the client plays it; context is refused meanwhile, in the sans-IO test)."""
    import math
    import struct

    tone = b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / 24000))) for i in range(24000))

    async def go():
        async with _client(tx).live.connect() as conn:
            await conn.send({"type": "session.start", "session": {"model": "gpt-live-1"}})
            got: list = []
            await _until(conn, got, lambda g: _of(g, "session.started"), 10)
            await conn.send({"type": "session.output_audio.fixture.play", "event_id": "bad", "audio": "###"})
            await conn.send({"type": "session.output_audio.fixture.play", "event_id": "long",
                             "audio": base64.b64encode(bytes(24000 * 2 * 31)).decode()})
            await conn.send({"type": "session.output_audio.fixture.play", "event_id": "f1",
                             "audio": base64.b64encode(tone).decode()})
            await _until(conn, got, lambda g: _of(g, "session.output_audio.fixture.played"), 20)
            errors = {e.error.client_event_id: e.error for e in _of(got, "error")}
            assert errors["bad"].param == "audio" and errors["long"].param == "audio"
            assert _of(got, "session.output_audio.fixture.playing")[0].client_event_id == "f1"
            assert _of(got, "session.output_audio.fixture.played")[0].client_event_id == "f1"
            audio = b"".join(base64.b64decode(e.delta) for e in _of(got, "session.output_audio.delta"))
            assert abs(len(audio) - len(tone)) <= 4800, (len(audio), len(tone))  # all of it, as it was
            assert not _of(got, "session.output_transcript.delta")  # a fixture has no words
            await conn.send({"type": "session.thinking.append", "event_id": "t2", "content": "y",
                             "delegation_id": None})
            await _until(conn, got, lambda g: _of(g, "session.thinking.appended"), 10)

    run_async(go())
