"""The embedded models by OpenAI's model APIs, so the official clients (and another voxgate) can use a voxgate box:

POST /v1/audio/transcriptions   multipart ``file`` (any audio PyAV decodes), ``model``, ``language``, ``prompt``,
                                ``response_format`` json | text | verbose_json, ``stream`` (server-sent
                                ``transcript.text.delta`` / ``transcript.text.done``)
POST /v1/audio/speech           JSON ``input`` (≤ 4096 characters), ``voice``, ``speed`` (0.25-4), ``response_format``
                                pcm (24 kHz s16le, streamed a sentence at a time) | wav (streamed) | mp3 | opus |
                                aac | flac
POST /v1/chat/completions       JSON ``messages``, ``max_tokens`` / ``max_completion_tokens``, ``stream``

Every model name is served by the embedded model of its kind, and the answer says which one did (``model`` in a
chat completion, the ``X-Voxgate-Model`` header on all three). Only a server key may use them (a client secret is
for one browser's calls), and at most ``MAX_ACTIVE`` requests run their model at once, ``MAX_WAITING`` more wait,
past that 429: a flood of transcriptions cannot starve the calls the same models serve.

Why our own handlers: no library serves a model stack of our own by these APIs; the shapes follow the OpenAI API
reference (and the official SDK parses them in ``tests/test_models_api.py``).
"""

from __future__ import annotations

import asyncio
import io
import json
import secrets
import struct
import time

from aiohttp import web

from ..agent.models.interfaces import Configurable
from ..audio import Framer, Resampler
from .errors import BadRequest, error, form_parts, json_object, read_body

MAX_UPLOAD = 25 * 1024 * 1024  # bytes of one audio file (OpenAI's limit)
MAX_INPUT = 4096  # characters of text to speak (OpenAI's limit)
MAX_ACTIVE, MAX_WAITING = 2, 16
SEGMENT_S = 25  # seconds of audio the recognizer decodes at once (Moonshine keeps at most 30)
SPEECH_RATE = 24000  # OpenAI's pcm: 24 kHz s16le mono
ASR_RATE = 16000
_CONTAINERS = {"mp3": ("mp3", "mp3", "audio/mpeg"), "opus": ("ogg", "libopus", "audio/ogg"),
               "aac": ("adts", "aac", "audio/aac"), "flac": ("flac", "flac", "audio/flac")}


class Busy(Exception):
    pass


class Gate:
    """At most ``active`` model requests at once and ``waiting`` queued; more are refused (429)."""

    def __init__(self, active: int = MAX_ACTIVE, waiting: int = MAX_WAITING):
        self._sem = asyncio.Semaphore(active)
        self.waiting, self.max_waiting = 0, waiting

    async def __aenter__(self):
        if self._sem.locked() and self.waiting >= self.max_waiting:
            raise Busy()
        self.waiting += 1
        try:
            await self._sem.acquire()
        finally:
            self.waiting -= 1

    async def __aexit__(self, *exc):
        self._sem.release()


# ------------------------------------------------------------------ the models, blocking (run in threads)
def decode_audio(data: bytes) -> bytes:
    """Any audio file PyAV reads -> s16 mono 16 kHz PCM; ``BadRequest`` if it is not audio."""
    import av

    try:
        with av.open(io.BytesIO(data)) as container:
            stream = next((s for s in container.streams if s.type == "audio"), None)
            if stream is None:
                raise BadRequest("the file has no audio stream", "invalid_value", "file")
            resampler = av.AudioResampler(format="s16", layout="mono", rate=ASR_RATE)
            out = bytearray()
            for frame in container.decode(stream):
                for f in resampler.resample(frame):
                    out += bytes(f.planes[0])[: f.samples * 2]
            for f in resampler.resample(None):
                out += bytes(f.planes[0])[: f.samples * 2]
            return bytes(out)
    except BadRequest:
        raise
    except Exception as exc:  # PyAV raises many kinds on input that is not a file it knows
        raise BadRequest(f"the file is not audio we can decode ({type(exc).__name__})", "invalid_value",
                         "file") from None


def recognize(asr, pcm: bytes) -> list[str]:
    """The text of each ``SEGMENT_S`` of ``pcm`` (16 kHz s16le), with one recognizer."""
    texts = []
    step = SEGMENT_S * ASR_RATE * 2
    for i in range(0, max(len(pcm), 1), step):
        framer = Framer(ASR_RATE // 50 * 2)
        asr.start()
        for frame in framer.push(pcm[i:i + step]) + framer.flush():
            asr.feed(frame)
        text = asr.finish().strip()
        if text:
            texts.append(text)
    return texts


def wav_header(rate: int, data_bytes: int = 0xFFFFFFFF - 36) -> bytes:
    """A WAV header for s16 mono; a stream's length is unknown, so the sizes say "as long as it goes"."""
    return (b"RIFF" + struct.pack("<I", min(0xFFFFFFFF, data_bytes + 36)) + b"WAVEfmt "
            + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16) + b"data" + struct.pack("<I", data_bytes))


def encode(pcm: bytes, fmt: str) -> bytes:
    """24 kHz s16 mono PCM in a compressed container (PyAV's encoders)."""
    import av

    container_fmt, codec, _ = _CONTAINERS[fmt]
    rate = 48000 if codec == "libopus" else SPEECH_RATE
    buf = io.BytesIO()
    with av.open(buf, "w", format=container_fmt) as out:
        stream = out.add_stream(codec, rate=rate, layout="mono")
        resampler = av.AudioResampler(format=stream.codec_context.format.name if stream.codec_context.format else
                                      "s16", layout="mono", rate=rate)
        frame = av.AudioFrame(format="s16", layout="mono", samples=len(pcm) // 2)
        frame.sample_rate = SPEECH_RATE
        frame.planes[0].update(pcm)
        for f in resampler.resample(frame) + resampler.resample(None):
            for packet in stream.encode(f):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


# ------------------------------------------------------------------ HTTP
def add_routes(app: web.Application, t, caller_of) -> None:
    """``caller_of(request)``: an ``access.Caller`` or the 401 response (http.py's)."""
    gate = Gate()

    async def allowed(request):
        caller = await caller_of(request)
        if isinstance(caller, web.Response):
            return caller
        if not caller.server:
            return error(403, "the model APIs take a server key (a client secret is for one browser's calls)",
                         code="forbidden")
        if t.stack is None:
            return error(404, f"this transceiver runs no models (--agent {t.cfg.agent}): use --agent voice",
                         code="model_not_found", param="model")
        return None

    async def transcriptions(request):
        if (refused := await allowed(request)) is not None:
            return refused
        if not request.content_type.startswith("multipart/"):
            return error(400, "send multipart/form-data with the audio as 'file'", param="file")
        fields, data = await _form(t, request)
        if data is None:
            return error(400, "the form has no 'file' part", param="file")
        fmt = fields.get("response_format", "json")
        if fmt not in ("json", "text", "verbose_json"):
            return error(400, f"response_format {fmt!r}: this server gives json, text or verbose_json",
                         code="unsupported_value", param="response_format")
        stack = t.stack
        try:
            async with gate:
                pcm = await asyncio.to_thread(decode_audio, data)
                asr = await stack.acquire_asr()
                try:
                    if isinstance(asr, Configurable):  # a recognizer that takes them (Whisper base, one by URL)
                        asr.configure(language=fields.get("language") or None, prompt=fields.get("prompt") or None)
                    texts = await asyncio.to_thread(recognize, asr, pcm)
                finally:
                    stack.release_asr(asr)
        except Busy:
            return _busy()
        text = " ".join(texts)
        served = {"X-Voxgate-Model": stack.asr_name}
        if fields.get("stream") == "true":
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                               **served})
            await resp.prepare(request)
            for i, piece in enumerate(texts):
                await _sse(resp, {"type": "transcript.text.delta", "delta": (" " if i else "") + piece})
            await _sse(resp, {"type": "transcript.text.done", "text": text})
            await resp.write_eof()
            return resp
        if fmt == "text":
            return web.Response(text=text + "\n", content_type="text/plain", headers=served)
        body = {"text": text}
        if fmt == "verbose_json":
            body.update(task="transcribe", language=fields.get("language") or "english",
                        duration=round(len(pcm) / 2 / ASR_RATE, 3), segments=[])
        return web.json_response(body, headers=served)

    async def speech(request):
        if (refused := await allowed(request)) is not None:
            return refused
        body = json_object(await _read(t, request, 256 * 1024))
        text = body.get("input")
        if not isinstance(text, str) or not text.strip():
            return error(400, "'input' is the text to speak", param="input")
        if len(text) > MAX_INPUT:
            return error(400, f"'input' is at most {MAX_INPUT} characters", code="string_above_max_length",
                         param="input")
        fmt = body.get("response_format", "mp3")
        if fmt not in ("pcm", "wav", *_CONTAINERS):
            return error(400, f"response_format {fmt!r}: pcm, wav, mp3, opus, aac or flac", code="invalid_value",
                         param="response_format")
        speed = body.get("speed", 1.0)
        if not isinstance(speed, (int, float)) or isinstance(speed, bool) or not 0.25 <= speed <= 4.0:
            return error(400, "'speed' is a number from 0.25 to 4.0", code="invalid_value", param="speed")
        from ..agent.core.voices import resolve_voice

        voice = body.get("voice")
        try:
            resolve_voice(voice if isinstance(voice, str) else None)
        except ValueError as exc:
            return error(400, str(exc), code="invalid_value", param="voice")
        tts = t.stack.tts
        rate = tts.rate_of(voice)
        resample = Resampler(rate, SPEECH_RATE)
        pieces = iter(tts.synthesize(text, voice, speed=max(0.5, min(2.0, float(speed)))))
        served = {"X-Voxgate-Model": getattr(tts, "name", "piper")}
        try:
            async with gate:
                if fmt in ("pcm", "wav"):  # streamed: each sentence as soon as it is made
                    resp = web.StreamResponse(headers={"Content-Type": "audio/pcm" if fmt == "pcm" else "audio/wav",
                                                       **served})
                    await resp.prepare(request)
                    if fmt == "wav":
                        await resp.write(wav_header(SPEECH_RATE))
                    while (piece := await asyncio.to_thread(next, pieces, None)) is not None:
                        await resp.write(resample(piece))
                    await resp.write_eof()
                    return resp
                pcm = b"".join([resample(p) for p in await asyncio.to_thread(list, pieces)])
                data = await asyncio.to_thread(encode, pcm, fmt)
        except Busy:
            return _busy()
        return web.Response(body=data, content_type=_CONTAINERS[fmt][2], headers=served)

    async def chat(request):
        if (refused := await allowed(request)) is not None:
            return refused
        body = json_object(await _read(t, request, 1024 * 1024))
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return error(400, "'messages' is a non-empty list", param="messages")
        chat, system = [], []
        for i, m in enumerate(messages):
            content = m.get("content") if isinstance(m, dict) else None
            if isinstance(content, list):  # content parts: their text
                content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
            if not isinstance(m, dict) or m.get("role") not in ("system", "developer", "user", "assistant") \
                    or not isinstance(content, str):
                return error(400, f"messages[{i}] needs a role (system, developer, user, assistant) and text content",
                             param=f"messages[{i}]")
            (system if m["role"] in ("system", "developer") else chat).append({"role": m["role"], "content": content})
        limit = body.get("max_completion_tokens", body.get("max_tokens"))
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
            return error(400, "max_tokens is a positive integer", param="max_tokens")
        from ..agent.core.chat import DEFAULT_INSTRUCTIONS

        responder = t.stack.responder
        instructions = "\n".join(s["content"] for s in system) or DEFAULT_INSTRUCTIONS
        model = f"voxgate-{responder.name}"
        cid, created = "chatcmpl-" + secrets.token_hex(12), int(time.time())
        served = {"X-Voxgate-Model": model}

        def chunk(delta: dict, finish=None) -> dict:
            return {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

        try:
            async with gate:
                stream = responder.stream(chat, instructions, max_tokens=limit)
                if body.get("stream"):
                    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                                       **served})
                    await resp.prepare(request)
                    await _sse(resp, chunk({"role": "assistant", "content": ""}))
                    try:
                        async for piece in stream:
                            if isinstance(piece, str):
                                await _sse(resp, chunk({"content": piece}))
                    except Exception as exc:  # the model failed mid-answer: say so in the stream
                        await _sse(resp, {"error": {"message": str(exc), "type": "server_error"}})
                    await _sse(resp, chunk({}, "stop"))
                    await resp.write(b"data: [DONE]\n\n")
                    await resp.write_eof()
                    return resp
                try:
                    text = "".join([p async for p in stream if isinstance(p, str)])
                except Exception as exc:
                    return error(400 if "context" in str(exc) else 502, str(exc), "invalid_request_error"
                                 if "context" in str(exc) else "server_error", "model_error")
        except Busy:
            return _busy()
        return web.json_response({
            "id": cid, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}}, headers=served)

    app.router.add_post("/v1/audio/transcriptions", transcriptions)
    app.router.add_post("/v1/audio/speech", speech)
    app.router.add_post("/v1/chat/completions", chat)


def _busy() -> web.Response:
    return error(429, "the models are busy: retry shortly", "rate_limit_error", "models_busy")


async def _sse(resp: web.StreamResponse, event: dict) -> None:
    await resp.write(b"data: " + json.dumps(event).encode() + b"\n\n")


async def _read(t, request, limit: int) -> bytes:
    """The body, at most ``limit`` bytes, within the body deadline once per MiB it may hold (an upload of 25 MiB
    gets 25 of them)."""
    return await read_body(request, t.cfg.limits.body_timeout * max(1, limit // (1024 * 1024)), limit)


async def _form(t, request) -> tuple[dict, bytes | None]:
    """A multipart form's text fields and its ``file``."""
    parts = form_parts(await _read(t, request, MAX_UPLOAD + 64 * 1024), request.headers.get("Content-Type", ""))
    if parts is None:
        raise BadRequest("the multipart body is malformed (truncated, or its boundary is missing)")
    data = parts.pop("file", None)
    fields = {k: v.decode("utf-8", "replace").strip() for k, v in parts.items()}
    return fields, data
