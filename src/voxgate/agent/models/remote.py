"""Recognizer and voice by URL: any server that speaks OpenAI's audio APIs (another voxgate, a Whisper server, a
hosted API) as the agent's ASR or TTS stage.

- ``RemoteTranscriber`` is a model for ``UtteranceAsr`` (the agent's whole-utterance recognizer): each decode —
  the pause's peek, the turn's end — is one ``POST {url}/audio/transcriptions`` of the utterance as a 16 kHz WAV,
  asked with ``stream=true``: a server that streams answers in server-sent events (OpenAI's deltas, or a segment
  per event), one that does not in JSON, and both are read (a server that ignores ``stream`` is the common case).
  VAD, semantic end of turn, barge-in judgement and partial inference stay on the box; what a remote recognizer
  costs is one round trip per decode (docs/performance.md).
- ``RemoteTts`` is a synthesizer: ``POST {url}/audio/speech`` with ``response_format=pcm`` (24 kHz s16le), read as
  it arrives, a chunk of text at a time (the agent's chunker sends the first clause first).

Both keep one HTTP/1.1 connection per instance alive (``http.client``: the standard library's, no TLS handshake per
utterance); a recognizer instance serves one call at a time and the stack pools them, so connections are reused
across calls. The key comes from the environment (``VOXGATE_ASR_API_KEY`` / ``VOXGATE_TTS_API_KEY``, else
``OPENAI_API_KEY``), never the command line. A server that is down, slow (``timeout``) or answers garbage raises
``RemoteError``, which the agent reports as it reports a failing embedded model.

Why ``http.client`` and not the ``openai`` SDK: these run on the recognizer's and the synthesizer's own threads,
blocking, per utterance; the SDK would bring its own client stack and retries into the hot path of every turn.
"""

from __future__ import annotations

import http.client
import io
import logging
import json
import os
import secrets
import threading
import urllib.parse
import wave

from prometheus_client import Counter

from . import ASR_RATE

SPEECH_RATE = 24000
log = logging.getLogger("voxgate.agent")


class RemoteError(RuntimeError):
    """A model server failed: unreachable, too slow, refused the key, or answered something that is not the API."""


# work an embedded model did because a model server failed (the default registry: a transceiver's /metrics has it)
FALLBACKS = Counter("voxgate_agent_model_fallbacks", "Work an embedded model did because a model server failed, by "
                    "stage", ["stage"])
_FELL_BACK = {"asr": "the recognizer at %s failed (%s): the embedded one decodes this turn",
              "tts": "the voice at %s failed (%s): the embedded one speaks this piece"}


def fell_back(stage: str, url: str, reason) -> None:
    """An embedded model does ``stage``'s work this time because the server at ``url`` failed: logged and counted."""
    log.warning(_FELL_BACK[stage], url, reason)
    FALLBACKS.labels(stage).inc()


def asr_backup(fallback: str | None):
    """``--asr-fallback``'s model (``moonshine``: the process's shared Moonshine), or None without one."""
    if fallback not in (None, "moonshine"):
        raise ValueError(f"--asr-fallback {fallback!r}: moonshine (or none)")
    if not fallback:
        return None
    from .moonshine import MoonshineModel

    return MoonshineModel.shared()


def parse_spec(spec: str, default_model: str) -> tuple[str, str]:
    """``openai:URL#MODEL`` (the ``openai:`` already stripped or not) -> (base URL ending in /v1 or as given, model)."""
    if spec.startswith("openai:"):
        spec = spec[len("openai:"):]
    url, _, model = spec.partition("#")
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"{spec!r}: give openai:http(s)://HOST[:PORT]/v1#MODEL")
    return url.rstrip("/"), model or default_model


class _Client:
    """One kept-alive connection to a model server, used from one thread at a time (a lock makes sure)."""

    def __init__(self, base_url: str, key_env: str, timeout: float):
        u = urllib.parse.urlsplit(base_url)
        self.https, self.host, self.port = u.scheme == "https", u.hostname, u.port
        self.path = u.path.rstrip("/")
        self.timeout = timeout
        self.key = os.environ.get(key_env) or os.environ.get("OPENAI_API_KEY")
        self._conn: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            cls = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
            self._conn = cls(self.host, self.port, timeout=self.timeout)
        return self._conn

    def request(self, path: str, body: bytes, content_type: str):
        """POST; the response (read it whole, or ``read1(n)`` as it comes); ``RemoteError`` on failure.
        A connection the server closed while idle is opened again once."""
        headers = {"Content-Type": content_type, "Content-Length": str(len(body))}
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        for attempt in (0, 1):
            conn = self._connection()
            try:
                conn.request("POST", self.path + path, body=body, headers=headers)
                resp = conn.getresponse()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as exc:
                self.close()
                if attempt:
                    raise RemoteError(f"{self.host}:{self.port}: {exc}") from None
                continue
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                raise RemoteError(f"{self.host}:{self.port}{self.path}{path}: {exc}") from None
            if resp.status >= 400:
                detail = resp.read()[:300].decode("utf-8", "replace")
                raise RemoteError(f"{self.path}{path} answered {resp.status}: {detail}")
            return resp
        raise AssertionError("unreachable")

    def close(self):
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _wav(pcm16k: bytes) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(ASR_RATE)
        w.writeframes(pcm16k)
    return buf.getvalue()


def _multipart(fields: dict, file: bytes) -> tuple[bytes, str]:
    boundary = "voxgate" + secrets.token_hex(12)
    out = io.BytesIO()
    for name, value in fields.items():
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="utterance.wav"\r\n'
              "Content-Type: audio/wav\r\n\r\n".encode() + file + f"\r\n--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


class RemoteTranscriber:
    """A model for ``UtteranceAsr``: ``transcribe_scored(float32 16 kHz audio, language=, prompt=) -> (text, 1.0)``;
    the session's language and prompt go to the server as the API's own fields."""

    languages = None  # what the server hears is its business: a session's language is passed on
    hints = True

    def __init__(self, spec: str, timeout: float = 10.0):
        self.url, self.model = parse_spec(spec, "whisper-1")
        self.client = _Client(self.url, "VOXGATE_ASR_API_KEY", timeout)

    def transcribe_scored(self, audio, language: str | None = None, prompt: str | None = None) -> tuple[str, float]:
        import numpy as np

        pcm = (np.clip(audio, -1, 1) * 32767).astype(np.int16).tobytes()
        fields = {"model": self.model, "response_format": "json", "stream": "true"}
        if language:
            fields["language"] = language
        if prompt:
            fields["prompt"] = prompt
        body, ctype = _multipart(fields, _wav(pcm))
        with self.client._lock:
            resp = self.client.request("/audio/transcriptions", body, ctype)
            streamed = (resp.getheader("Content-Type") or "").startswith("text/event-stream")
            raw = resp.read()
        try:
            text = _streamed_text(raw) if streamed else json.loads(raw)["text"]
        except (ValueError, KeyError, TypeError):
            raise RemoteError(f"{self.url}/audio/transcriptions answered no transcription: {raw[:200]!r}") from None
        if not isinstance(text, str):
            raise RemoteError(f"{self.url}/audio/transcriptions answered a {type(text).__name__} as text")
        return text.strip(), 1.0  # a server says nothing of its certainty: every decode counts as sure


def _streamed_text(raw: bytes) -> str:
    """A transcription streamed as server-sent events: OpenAI's (``transcript.text.delta`` pieces, then
    ``transcript.text.done`` with the whole text), or one ``{"text"}`` per segment (faster-whisper-server's)."""
    pieces, done = [], None
    for line in raw.decode("utf-8", "replace").splitlines():
        if not line.startswith("data:") or line[5:].strip() == "[DONE]":
            continue
        event = json.loads(line[5:])
        kind = event.get("type")
        if kind == "transcript.text.done":
            done = event["text"]
        elif kind == "transcript.text.delta":
            pieces.append(event["delta"])
        elif "text" in event:
            pieces.append(" " + event["text"].strip())
    if done is None and not pieces and b"data:" not in raw:
        raise ValueError("no events")
    return done if done is not None else "".join(pieces)


class FallbackTranscriber:
    """A model server's transcriber, with an embedded model that decodes whenever the server fails (``RemoteError``:
    down, slow, refusing the key, answering garbage): that turn is heard all the same, and it is counted."""

    languages = None
    hints = True

    def __init__(self, remote: RemoteTranscriber, backup):
        self.remote, self.backup = remote, backup

    def transcribe_scored(self, audio, **hints) -> tuple[str, float]:
        try:
            return self.remote.transcribe_scored(audio, **hints)
        except RemoteError as exc:
            fell_back("asr", self.remote.url, exc)
            return self.backup.transcribe_scored(audio)


def remote_asr_factory(spec: str, fallback: str | None = None):
    """The stack's ASR factory for ``--asr openai:URL#MODEL``: one ``UtteranceAsr`` per call, each with its own
    kept-alive connection (the stack pools them, and so their connections). ``fallback`` (``moonshine``): the
    embedded model that decodes when the server fails."""
    from .moonshine import UtteranceAsr

    model_name = parse_spec(spec, "whisper-1")[1]  # a bad spec fails at start-up, not on the first call
    backup = asr_backup(fallback)

    class RemoteAsr(UtteranceAsr):
        name = "openai:" + model_name

        def __init__(self):
            model = RemoteTranscriber(spec)
            super().__init__(FallbackTranscriber(model, backup) if backup is not None else model)

    return RemoteAsr


class RemoteTts:
    """A synthesizer by URL: ``synthesize(text, voice, speed)`` yields 24 kHz s16le PCM as it arrives. The voice
    is the session's, named as the server names it (``alloy`` when the session names none)."""

    languages = None  # the server's voice reads what it is given
    any_voice = True
    default_voice = "alloy"

    def __init__(self, spec: str, timeout: float = 10.0):
        self.url, self.model = parse_spec(spec, "tts-1")
        self.name = "openai:" + self.model
        self.client = _Client(self.url, "VOXGATE_TTS_API_KEY", timeout)

    def rate_of(self, voice: str | None = None) -> int:
        return SPEECH_RATE

    def synthesize(self, text: str, voice: str | None = None, speed: float = 1.0):
        body = json.dumps({"model": self.model, "input": text, "voice": voice or self.default_voice, "speed": speed,
                           "response_format": "pcm"}).encode()
        with self.client._lock:
            resp = self.client.request("/audio/speech", body, "application/json")
            carry, done = b"", False
            try:
                while chunk := resp.read1(9600):
                    chunk = carry + chunk
                    cut = len(chunk) - len(chunk) % 2
                    carry = chunk[cut:]
                    if cut:
                        yield chunk[:cut]
                done = True
            except (OSError, http.client.HTTPException) as exc:
                raise RemoteError(f"{self.url}/audio/speech: {exc}") from None
            finally:
                if not done:  # abandoned or broken mid-answer: this connection cannot carry the next request
                    self.client.close()


class FallbackTts:
    """A model server's voice, with the embedded one speaking whenever the server fails before the first audio of a
    piece (a failure after it ends that piece, as a failing embedded model would). Both at 24 kHz."""

    def __init__(self, remote: RemoteTts, backup):
        self.remote, self.backup = remote, backup
        self.name = remote.name
        self.languages, self.any_voice, self.default_voice = None, True, remote.default_voice

    def rate_of(self, voice: str | None = None) -> int:
        return SPEECH_RATE

    def synthesize(self, text: str, voice: str | None = None, speed: float = 1.0):
        from ...audio import Resampler

        pieces = self.remote.synthesize(text, voice, speed)
        try:
            first = next(pieces, None)
        except RemoteError as exc:
            fell_back("tts", self.remote.url, exc)
            resample = Resampler(self.backup.rate_of(voice), SPEECH_RATE)
            from ..core.voices import resolve_voice

            try:
                resolve_voice(voice)
            except ValueError:
                voice = None  # a voice only the server has: the embedded default
            for pcm in self.backup.synthesize(text, voice, speed=speed):
                yield resample(pcm)
            return
        if first is not None:
            yield first
        yield from pieces
