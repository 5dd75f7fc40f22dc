"""The embedded models by OpenAI's model APIs, driven by the official `openai` SDK against a voxgate transceiver
process: it transcribes a voice the agent never uses, speaks (streamed PCM, WAV, MP3) and what it says is heard back,
and answers chat completions, plain and streamed."""

from __future__ import annotations

import io
import shutil
import subprocess
import wave

import pytest

from helpers import TransceiverProcess

openai = pytest.importorskip("openai")
KEY = "sk-models"


@pytest.fixture(scope="module")
def box(tmp_path_factory):
    from voxgate.wire.token import new_secret_line

    secret = tmp_path_factory.mktemp("models") / "secret"
    secret.write_text(new_secret_line(2) + "\n")
    tx = TransceiverProcess(secret, agent="voice", extra=["--api-key", KEY, "--drain-timeout", "1"])
    yield tx, openai.OpenAI(base_url=tx.url + "/v1", api_key=KEY, max_retries=0, timeout=120)
    tx.stop()


def spoken(path, text: str) -> str:
    """``text`` in flite's voice (the agent speaks with Piper's): 16 kHz WAV."""
    if not shutil.which("flite"):
        pytest.fail("flite is not installed (apt-get install flite)")
    subprocess.run(["flite", "-voice", "slt", "-t", text, "-o", str(path)], check=True)
    return str(path)


def test_the_sdk_transcribes_a_voice_the_agent_never_uses(box, tmp_path):
    tx, client = box
    wav = spoken(tmp_path / "q.wav", "What is the capital of France?")
    with open(wav, "rb") as fh:
        result = client.audio.transcriptions.create(model="whisper-1", file=fh)
    words = result.text.lower()
    assert "capital" in words and "france" in words, result.text
    with open(wav, "rb") as fh:
        text = client.audio.transcriptions.create(model="gpt-4o-transcribe", file=fh, response_format="text")
    assert "france" in text.lower()
    with open(wav, "rb") as fh:  # streamed: deltas, then the whole text
        events = list(client.audio.transcriptions.create(model="gpt-4o-transcribe", file=fh, stream=True))
    assert events[-1].type == "transcript.text.done" and "france" in events[-1].text.lower()
    assert any(e.type == "transcript.text.delta" for e in events)


def test_the_sdk_synthesizes_speech_that_is_heard_back(box, tmp_path):
    tx, client = box
    said = "The quick brown fox jumps over the lazy dog."
    # streamed PCM, 24 kHz s16le, as the SDK reads it
    pcm = bytearray()
    with client.audio.speech.with_streaming_response.create(model="tts-1", voice="alloy", input=said,
                                                            response_format="pcm") as resp:
        assert resp.headers["X-Voxgate-Model"]
        for chunk in resp.iter_bytes():
            pcm += chunk
    seconds = len(pcm) / 2 / 24000
    assert 1.5 < seconds < 6, seconds
    out = tmp_path / "said.wav"
    with wave.open(str(out), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(24000)
        w.writeframes(bytes(pcm))
    with open(out, "rb") as fh:
        heard = client.audio.transcriptions.create(model="whisper-1", file=fh).text.lower()
    assert "fox" in heard and "dog" in heard, heard
    # the SDK's default format, MP3, decodes
    mp3 = client.audio.speech.create(model="gpt-4o-mini-tts", voice="ash", input="Hello there.", speed=1.25)
    import av

    with av.open(io.BytesIO(mp3.content)) as c:
        assert c.streams.audio and sum(f.samples for f in c.decode(audio=0)) > 24000 * 0.3
    with pytest.raises(openai.BadRequestError):
        client.audio.speech.create(model="tts-1", voice="nobody", input="Hi.")
    with pytest.raises(openai.BadRequestError):
        client.audio.speech.create(model="tts-1", voice="alloy", input="x" * 5000)


def test_the_sdk_gets_chat_completions_plain_and_streamed(box):
    tx, client = box
    answer = client.chat.completions.create(model="gpt-4o-mini",
                                            messages=[{"role": "user", "content": "What is the capital of France?"}])
    assert "paris" in answer.choices[0].message.content.lower(), answer
    assert answer.model.startswith("voxgate-")  # says which model served it
    pieces = [c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model="anything", stream=True, messages=[{"role": "user", "content": "What is the capital of France?"}])
        if c.choices]
    assert "paris" in "".join(pieces).lower() and len(pieces) > 2
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="x", messages=[])


def test_only_a_server_key_uses_the_models(box):
    tx, client = box
    import json
    import urllib.request

    req = urllib.request.Request(tx.url + "/v1/realtime/client_secrets", data=b"{}", method="POST",
                                 headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    ek = json.load(urllib.request.urlopen(req))["value"]
    browser = openai.OpenAI(base_url=tx.url + "/v1", api_key=ek, max_retries=0)
    with pytest.raises(openai.PermissionDeniedError):
        browser.chat.completions.create(model="x", messages=[{"role": "user", "content": "hi"}])
    stranger = openai.OpenAI(base_url=tx.url + "/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        stranger.audio.speech.create(model="tts-1", voice="alloy", input="Hi.")
    with pytest.raises(openai.BadRequestError):  # not audio
        client.audio.transcriptions.create(model="whisper-1", file=("x.wav", b"not audio at all", "audio/wav"))


def test_an_agent_whose_recognizer_and_voice_are_another_box(box, tmp_path):
    """`--asr openai:URL#MODEL --tts openai:URL#MODEL` pointed at the box above (another process), and `--llm` with a
    gguf file: a spoken question over a WebSocket session is transcribed there, answered here, spoken there."""
    import os

    from voxgate.agent.shell.embedded import smollm2_path

    remote, _ = box
    gguf = smollm2_path()
    edge = TransceiverProcess(remote.secret_file, agent="voice",
                              extra=["--api-key", "sk-edge", "--drain-timeout", "1", "--llm", gguf,
                                     "--asr", f"openai:{remote.url}/v1#whisper-1",
                                     "--tts", f"openai:{remote.url}/v1#tts-1"],
                              env={**os.environ, "OPENAI_API_KEY": KEY})
    try:
        c = _ask_over_websocket(edge, "sk-edge", question_pcm(tmp_path))
        assert_heard_and_answered(c)  # spoken by the other box's voice
        assert c.of("session.created")[0]["session"]["model"] == "voxgate-" + os.path.basename(gguf)[:-5]  # --llm
    finally:
        edge.stop()


def question_pcm(tmp_path) -> bytes:
    """The question, in flite's voice, as the Realtime API's PCM16 at 24 kHz."""
    from voxgate.audio import Resampler

    with wave.open(spoken(tmp_path / "q.wav", "What is the capital of France?")) as w:
        return Resampler(w.getframerate(), 24000)(w.readframes(w.getnframes()))


def assert_heard_and_answered(c) -> None:
    """The question was heard, answered "Paris", and the answer spoken (half a second of audio at least)."""
    heard = c.of("conversation.item.input_audio_transcription.completed")[0]["transcript"].lower()
    assert "capital" in heard and "france" in heard, heard
    said = " ".join(e["transcript"] for e in c.of("response.output_audio_transcript.done")).lower()
    assert "paris" in said, said
    assert len(c.audio) / 2 / 24000 > 0.5


def _ask_over_websocket(tx, key, pcm, session=None):
    """Push-to-talk over a WebSocket session: the question, committed, answered; then one more event. ``session``:
    more of the session.update that turns turn detection off."""
    import asyncio
    import base64

    import aiohttp

    from test_websocket import Client

    async def go():
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(tx.url.replace("http", "ws") + "/v1/realtime?model=x",
                                       headers={"Authorization": f"Bearer {key}"})
            c = Client(ws)
            await c.wait(lambda c: c.of("session.created"))
            update = {"audio": {"input": {"turn_detection": None}}}
            for k, v in (session or {}).items():
                update[k] = {**update.get(k, {}), **v} if isinstance(v, dict) else v
            if "input" in (session or {}).get("audio", {}):
                update["audio"]["input"] = {"turn_detection": None, **session["audio"]["input"]}
            await c.send({"type": "session.update", "session": update})
            for i in range(0, len(pcm), 9600):
                await c.send({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm[i:i + 9600]).decode()})
            await c.send({"type": "input_audio_buffer.commit"})
            await c.send({"type": "response.create"})
            await c.wait(lambda c: c.of("response.done"), timeout=60)
            await c.send({"type": "session.update", "session": {"instructions": "Be brief."}})  # still up
            await c.wait(lambda c: len(c.of("session.updated")) == 2)
            await ws.close()
            return c

    return asyncio.run(go())


@pytest.mark.parametrize("fallback", [True, False])
def test_a_model_server_that_is_down_loses_nothing(box, tmp_path, fallback):
    """Recognizer and voice by URL, and nothing listens there: with fallbacks the embedded models hear and speak
    the turn (counted); without, the client gets error events and the session goes on."""
    import os

    import socket

    from helpers import free_port, metric_value

    remote, _ = box
    dead = f"http://127.0.0.1:{free_port(socket.SOCK_STREAM)}/v1"
    extra = ["--api-key", "sk-edge", "--drain-timeout", "1", "--asr", f"openai:{dead}#whisper-1",
             "--tts", f"openai:{dead}#tts-1"]
    if fallback:
        extra += ["--asr-fallback", "moonshine", "--tts-fallback", "piper"]
    edge = TransceiverProcess(remote.secret_file, agent="voice",
                              extra=extra, env={**os.environ, "OPENAI_API_KEY": "sk-nobody"})
    try:
        c = _ask_over_websocket(edge, "sk-edge", question_pcm(tmp_path))
        metrics = edge.get("/metrics")[1].decode()
        if fallback:
            heard = c.of("conversation.item.input_audio_transcription.completed")[0]["transcript"].lower()
            assert "france" in heard, heard
            assert len(c.audio) / 2 / 24000 > 0.5 and not c.of("error"), [e for e in c.of("error")]
            assert metric_value(metrics, "voxgate_agent_model_fallbacks_total", stage="asr") >= 1
            assert metric_value(metrics, "voxgate_agent_model_fallbacks_total", stage="tts") >= 1
        else:  # each failure said, with the server it was; the session answered the next event
            failed = c.of("conversation.item.input_audio_transcription.failed")[0]["error"]
            assert failed["code"] == "transcription_failed" and "/audio/transcriptions" in failed["message"], failed
            spoke = [e["error"] for e in c.of("error") if e["error"]["code"] == "response_failed"]
            assert spoke and "/audio/speech" in spoke[0]["message"], c.of("error")
            assert c.of("response.done")[0]["response"]["status"] == "failed" and not c.audio
    finally:
        edge.stop()


def test_a_recognizer_by_realtime_websocket_hears_the_turn_and_a_dead_one_falls_back(box, tmp_path):
    """--asr realtime:ws://…/v1/realtime#MODEL: the edge streams the call's audio to another box's Realtime
    transcription session as it is heard, commits at the turn's end and takes the transcript; with that box
    unreachable and --asr-fallback, the embedded recognizer hears the turn from the audio kept (counted)."""
    import os
    import socket

    from helpers import free_port, metric_value

    remote, _ = box
    ws_url = remote.url.replace("http", "ws") + "/v1/realtime"
    edge = TransceiverProcess(remote.secret_file, agent="voice", extra=[
        "--api-key", "sk-edge", "--drain-timeout", "1", "--asr", f"realtime:{ws_url}#moonshine"],
        env={**os.environ, "VOXGATE_ASR_API_KEY": KEY})
    try:
        c = _ask_over_websocket(edge, "sk-edge", question_pcm(tmp_path))
        assert_heard_and_answered(c)
        created = c.of("session.created")[0]["session"]["audio"]["input"]["transcription"]
        assert created["model"] == "realtime:moonshine", created
        assert metric_value(edge.get("/metrics")[1].decode(), "voxgate_agent_model_fallbacks_total") == 0
    finally:
        edge.stop()
    dead = f"ws://127.0.0.1:{free_port(socket.SOCK_STREAM)}/v1/realtime"
    edge = TransceiverProcess(remote.secret_file, agent="voice", extra=[
        "--api-key", "sk-edge", "--drain-timeout", "1", "--asr", f"realtime:{dead}#m", "--asr-fallback", "moonshine"])
    try:
        c = _ask_over_websocket(edge, "sk-edge", question_pcm(tmp_path))
        heard = c.of("conversation.item.input_audio_transcription.completed")[0]["transcript"].lower()
        assert "france" in heard and not c.of("error"), (heard, c.of("error"))
        assert metric_value(edge.get("/metrics")[1].decode(), "voxgate_agent_model_fallbacks_total", stage="asr") >= 1
    finally:
        edge.stop()


def test_the_callers_language_reaches_a_multilingual_recognizer_and_the_model(box, tmp_path):
    """A German session (audio.input.transcription.language=de): --asr whisper-base hears German it never heard
    (espeak-ng's), the language model by URL is asked to answer in German, and the voice by URL speaks it; with the
    embedded English voice the same session is told plainly that replies stay English."""
    import json
    import os
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from voxgate.audio import Resampler

    seen = []

    class Chat(BaseHTTPRequestHandler):
        def do_POST(self):
            seen.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            for piece in ("Es ist", " fünf Uhr."):
                self.wfile.write(f"data: {json.dumps({'choices': [{'delta': {'content': piece}}]})}\n\n".encode())
            self.wfile.write(b"data: [DONE]\n\n")

        def log_message(self, *a):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Chat)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    remote, _ = box
    subprocess.run(["espeak-ng", "-v", "de", "-s", "150", "-w", str(tmp_path / "de.wav"), "Guten Morgen, wie geht es dir?"],
                   check=True)
    with wave.open(str(tmp_path / "de.wav")) as w:
        pcm = Resampler(w.getframerate(), 24000)(w.readframes(w.getnframes()))
    german = {"audio": {"input": {"transcription": {"language": "de"}}}}
    chat = f"openai:http://127.0.0.1:{server.server_port}/v1#m"
    edge = TransceiverProcess(remote.secret_file, agent="voice", extra=[
        "--api-key", "sk-edge", "--drain-timeout", "1", "--asr", "whisper-base", "--responder", chat,
        "--tts", f"openai:{remote.url}/v1#tts-1"], env={**os.environ, "VOXGATE_TTS_API_KEY": KEY})
    try:
        c = _ask_over_websocket(edge, "sk-edge", pcm, german)
        heard = c.of("conversation.item.input_audio_transcription.completed")[0]["transcript"].lower()
        assert "guten morgen" in heard and "geht es" in heard, heard  # German words, as German
        assert seen[-1]["messages"][0]["content"].endswith("always answer in German."), seen[-1]["messages"][0]
        assert "voxgate" not in c.of("session.updated")[0]["session"] or not c.of("session.updated")[0]["session"][
            "voxgate"].get("ignored"), c.of("session.updated")[0]
        assert len(c.audio) / 2 / 24000 > 0.5 and not c.of("error"), c.of("error")
    finally:
        edge.stop()
    edge = TransceiverProcess(remote.secret_file, agent="voice", extra=[
        "--api-key", "sk-edge", "--drain-timeout", "1", "--asr", "whisper-base", "--responder", chat])
    try:
        c = _ask_over_websocket(edge, "sk-edge", pcm, german)
        ignored = " ".join(c.of("session.updated")[0]["session"]["voxgate"]["ignored"])
        assert "replies are in English, not German" in ignored, ignored
        assert not seen[-1]["messages"][0]["content"].endswith("always answer in German.")
    finally:
        edge.stop()
        server.shutdown()
