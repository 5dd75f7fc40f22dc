"""Responders: the scripted one, an OpenAI-compatible endpoint (a local server speaking the chat-completions
streaming format), and the embedded SmolLM2 when llama-cpp-python is installed."""

import asyncio
import json

import pytest
from aiohttp import web

from voxgate.agent.responders import OpenAIChatResponder, ScriptedResponder


async def collect(responder, text):
    return "".join([d async for d in responder.stream([{"role": "user", "content": text}], "Be brief.")])


def test_scripted_is_deterministic():
    r = ScriptedResponder()
    a = asyncio.run(collect(r, "what is the weather like today"))
    assert a == asyncio.run(collect(r, "what is the weather like today"))
    assert "weather" in a and asyncio.run(collect(r, "hello there")).startswith("Hello")


def test_openai_compatible_endpoint_streams(unused_port=None):
    seen = {}

    async def completions(request):
        seen["body"] = await request.json()
        seen["auth"] = request.headers.get("Authorization")
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for piece in ["It is", " sunny", " today."]:
            chunk = {"choices": [{"index": 0, "delta": {"content": piece}}]}
            await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
        await resp.write(b"data: [DONE]\n\n")
        return resp

    async def run():
        app = web.Application()
        app.router.add_post("/v1/chat/completions", completions)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        try:
            r = OpenAIChatResponder(f"http://127.0.0.1:{port}/v1", "test-model", api_key="sk-x")
            return await collect(r, "weather?")
        finally:
            await runner.cleanup()

    assert asyncio.run(run()) == "It is sunny today."
    assert seen["body"]["stream"] is True and seen["body"]["model"] == "test-model"
    assert seen["body"]["messages"][0] == {"role": "system", "content": "Be brief."}
    assert seen["auth"] == "Bearer sk-x"


def test_smollm2_answers():
    pytest.importorskip("llama_cpp")
    from voxgate.agent.responders import LlamaResponder

    text = asyncio.run(collect(LlamaResponder(max_tokens=20), "What color is the sky?"))
    assert len(text.split()) >= 3
