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
            for i in range(0, len(question), 4800):  # 100 ms per append, then 2 s of silence
                await conn.send({"type": "session.input_audio.append",
                                 "audio": base64.b64encode(question[i:i + 4800]).decode()})
            for _ in range(20):
                await conn.send({"type": "session.input_audio.append", "audio": base64.b64encode(bytes(4800)).decode()})
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
                               ({"delegation": {"type": "responses", "responses": {"model": "m"}}},
                                "session.delegation.type")):
                await conn.send({"type": "session.start", "session": {"model": "gpt-live-1", **bad}})
                await _until(conn, got, lambda g, n=len(got): len(g) > n, 5)
                assert got[-1].type == "error" and got[-1].error.param == param, got[-1]
            await conn.send({"type": "session.start", "event_id": "ok", "session": {
                "model": "gpt-live-1", "audio": {"format": {"type": "audio/pcmu", "rate": 8000}}}})
            await _until(conn, got, lambda g: _of(g, "session.started"), 5)
            for event, code in (({"type": "session.start", "session": {"model": "gpt-live-1"}}, "session_already_started"),
                                ({"type": "response.create"}, "not_supported"),
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
    from aiortc import RTCPeerConnection, RTCSessionDescription
    from aiortc.contrib.media import MediaPlayer

    wav = speech_wav(tmp_path / "q.wav", "What is the weather like in Paris today?")

    async def go():
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
