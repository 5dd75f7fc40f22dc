"""Model servers that cost no CPU: OpenAI's three model APIs answered after fixed delays, as a GPU box serving
them would, for measuring what the agent's own box spends per call (``bench/agents.py --models-elsewhere stub``).

- ``POST /v1/audio/transcriptions``: ``{"text": TRANSCRIPT}`` after ``asr_ms``;
- ``POST /v1/chat/completions`` (``stream``): ``REPLY`` a word at a time, the first after ``first_token_ms``, then
  ``tokens_per_s``;
- ``POST /v1/audio/speech`` (``pcm``): 24 kHz speech-band noise as long as the text would take to say (150 words a
  minute), the first 200 ms after ``first_audio_ms``, the rest as fast as the socket takes it.

What is said does not matter to the load: the recognizer "hears" the same question every time, and the caller's
next question interrupts or follows the reply as with real models. Run it as a process of its own::

    python -m voxgate.lab.stub_models --port 9100 [--asr-ms 60] [--first-token-ms 150] [--first-audio-ms 120]
"""

from __future__ import annotations

import argparse
import asyncio
import json

import numpy as np
from aiohttp import web

TRANSCRIPT = "What is the capital of France?"
REPLY = "The capital of France is Paris, a city on the Seine known for its museums and cafes."
RATE = 24000


def _speech_like(seconds: float, seed: int = 7) -> bytes:
    """Noise shaped like speech's loudness (syllables at ~4 Hz), s16le at 24 kHz."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2
    return (rng.normal(0, 0.15, n) * envelope * 32767).clip(-32768, 32767).astype(np.int16).tobytes()


def make_app(asr_ms: float, first_token_ms: float, tokens_per_s: float, first_audio_ms: float) -> web.Application:
    speech = _speech_like(12.0)

    async def transcriptions(request):
        await request.read()
        await asyncio.sleep(asr_ms / 1000)
        return web.json_response({"text": TRANSCRIPT})

    async def chat(request):
        body = await request.json()
        await asyncio.sleep(first_token_ms / 1000)
        words = REPLY.split(" ")
        if not body.get("stream"):
            return web.json_response({"choices": [{"index": 0, "message": {"role": "assistant", "content": REPLY},
                                                   "finish_reason": "stop"}]})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for i, word in enumerate(words):
            if i:
                await asyncio.sleep(1 / tokens_per_s)
            chunk = {"choices": [{"index": 0, "delta": {"content": (" " if i else "") + word}}]}
            await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
        await resp.write(b"data: [DONE]\n\n")
        return resp

    async def speech_(request):
        body = await request.json()
        seconds = min(len(str(body.get("input", "")).split()) / 2.5, 12.0)
        pcm = speech[: int(seconds * RATE) * 2]
        resp = web.StreamResponse(headers={"Content-Type": "audio/pcm"})
        await resp.prepare(request)
        await asyncio.sleep(first_audio_ms / 1000)
        step = RATE // 5 * 2  # 200 ms
        for i in range(0, len(pcm), step):
            await resp.write(pcm[i:i + step])
        await resp.write_eof()
        return resp

    def quiet(handler):
        async def run(request):  # a reply the agent stopped reading (a barge-in, a speculation dropped) is normal
            try:
                return await handler(request)
            except ConnectionResetError:
                return web.Response(status=499)
        return run

    app = web.Application(client_max_size=32 * 1024 * 1024)
    app.router.add_post("/v1/audio/transcriptions", quiet(transcriptions))
    app.router.add_post("/v1/chat/completions", quiet(chat))
    app.router.add_post("/v1/audio/speech", quiet(speech_))
    app.router.add_get("/v1/models", lambda r: web.json_response({"object": "list", "data": []}))
    return app


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--asr-ms", type=float, default=60)
    ap.add_argument("--first-token-ms", type=float, default=150)
    ap.add_argument("--tokens-per-s", type=float, default=60)
    ap.add_argument("--first-audio-ms", type=float, default=120)
    args = ap.parse_args(argv)
    web.run_app(make_app(args.asr_ms, args.first_token_ms, args.tokens_per_s, args.first_audio_ms),
                host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
