"""A recognizer by Realtime WebSocket: ``--asr realtime:ws(s)://HOST/v1/realtime#MODEL`` streams each call's audio
to a server's Realtime *transcription* session (OpenAI's ``gpt-4o-transcribe`` / ``gpt-realtime`` servers, vLLM's,
another voxgate) as it is heard, and reads its transcription deltas back as partial hypotheses.

Unlike the per-utterance HTTP recognizer (``remote.RemoteTranscriber``), the audio is already at the server when the
turn ends: the final transcript costs one commit and the server's last decode, not an upload. The agent keeps its own
VAD, turn detection and barge-in judgement (the session is opened with ``turn_detection: null``; the agent commits):

- ``start`` / ``feed``: audio appended (16 kHz resampled to the API's 24 kHz PCM, sent every 100 ms); ``feed``
  returns the transcript deltas received so far (the agent's partial hypothesis);
- ``finish``: ``input_audio_buffer.commit``, then the item's ``...transcription.completed`` (or ``.failed``);
- ``cancel``: ``input_audio_buffer.clear``.

One WebSocket per recognizer, opened at its first utterance and kept across calls (the stack pools recognizers);
one that broke is opened again at the next utterance. It runs on the call's recognizer thread with the
``websockets`` synchronous client (the recognizer interface is blocking, like the embedded models'). A server that is
down, slow (``timeout``), refuses the key or answers an error raises ``RemoteError``: the turn's transcription fails
with the reason, or with ``--asr-fallback`` the embedded recognizer hears it from the audio kept here. The key
comes from ``$VOXGATE_ASR_API_KEY``, else ``$OPENAI_API_KEY``.
"""

from __future__ import annotations

import base64
import json
import os

from ...audio import Resampler
from .interfaces import decode_hints
from .remote import RemoteError, asr_backup, fell_back

SEND_EVERY = 4800  # bytes of 24 kHz PCM per append: 100 ms
MAX_SECONDS = 60  # the audio kept for a fallback decode


def parse_realtime_spec(spec: str) -> tuple[str, str]:
    """``realtime:ws(s)://HOST/v1/realtime#MODEL`` -> (URL with ``intent=transcription``, model)."""
    if spec.startswith("realtime:"):
        spec = spec[len("realtime:"):]
    url, _, model = spec.partition("#")
    if not url.startswith(("ws://", "wss://")):
        raise ValueError(f"{spec!r}: give realtime:ws(s)://HOST[:PORT]/v1/realtime#MODEL")
    url += ("&" if "?" in url else "?") + "intent=transcription"
    return url, model or "gpt-4o-transcribe"


class RealtimeAsr:
    """One call's recognizer on a server's Realtime transcription session (see the module's docstring)."""

    partials = True  # deltas stream in while the user speaks
    languages = None  # what the server hears is its business: a session's language is passed on

    def __init__(self, spec: str, timeout: float = 10.0, backup=None):
        self.url, self.model = parse_realtime_spec(spec)
        self.name = "realtime:" + self.model
        self.timeout = timeout
        self.key = os.environ.get("VOXGATE_ASR_API_KEY") or os.environ.get("OPENAI_API_KEY")
        self.backup = backup  # an embedded model (``transcribe_scored``) for when the server fails
        self.hints: dict = {}
        self._ws = None
        self._configured: dict | None = None  # the hints the server's session has
        self._resample = Resampler(16000, 24000)
        self._out = b""  # 24 kHz PCM not sent yet
        self._kept: list[bytes] = []  # this utterance's 16 kHz audio, for a fallback decode
        self._partial = ""
        self._failed: str | None = None  # the server failed during this utterance
        self.active = False

    # ------------------------------------------------------------- the connection
    def _connect(self):
        from websockets.sync.client import connect

        headers = {"Authorization": f"Bearer {self.key}"} if self.key else {}
        try:
            self._ws = connect(self.url, additional_headers=headers, open_timeout=self.timeout,
                               close_timeout=1, max_size=2 ** 22)
        except Exception as exc:  # refused, unreachable, a handshake the server turned down (a bad key: 401)
            raise RemoteError(f"{self.url}: {exc}") from None
        try:
            self._expect("session.created", "transcription_session.created")
        except RemoteError:
            self._drop()
            raise
        self._configured = None

    def _configure(self):
        if self._configured == self.hints:
            return
        transcription = {"model": self.model, **self.hints}
        self._send({"type": "session.update", "session": {"type": "transcription", "audio": {"input": {
            "format": {"type": "audio/pcm", "rate": 24000}, "transcription": transcription,
            "turn_detection": None}}}})
        self._configured = dict(self.hints)

    def _send(self, event: dict):
        try:
            self._ws.send(json.dumps(event))
        except Exception as exc:
            self._drop()
            raise RemoteError(f"{self.url}: {exc}") from None

    def _recv(self, timeout: float) -> dict | None:
        """The next server event, None when none came within ``timeout`` (0: only what has arrived)."""
        try:
            raw = self._ws.recv(timeout=timeout)
        except TimeoutError:
            return None
        except Exception as exc:
            self._drop()
            raise RemoteError(f"{self.url}: {exc}") from None
        try:
            event = json.loads(raw)
        except ValueError:
            raise RemoteError(f"{self.url} sent something that is not JSON: {str(raw)[:120]!r}") from None
        if event.get("type") == "error":
            err = event.get("error") or {}
            raise RemoteError(f"{self.url}: {err.get('code')}: {err.get('message')}")
        return event

    def _expect(self, *types: str) -> dict:
        while True:
            event = self._recv(self.timeout)
            if event is None:
                raise RemoteError(f"{self.url} sent no {types[0]} in {self.timeout:g} s")
            if event.get("type") in types:
                return event

    def _drop(self):
        if self._ws is not None:
            try:
                self._ws.close()
            except Exception:
                pass
        self._ws = None

    def _take_deltas(self):
        while self._ws is not None and (event := self._recv(0)) is not None:
            if event.get("type") == "conversation.item.input_audio_transcription.delta":
                self._partial += event.get("delta") or ""

    def _guarded(self, fn):
        """Run a step against the server; a failure is kept for the utterance's end (the fallback or the error)."""
        if self._failed is not None:
            return
        try:
            fn()
        except RemoteError as exc:
            self._failed = str(exc)
            self._drop()

    # ------------------------------------------------------------- the recognizer interface
    def configure(self, language: str | None = None, prompt: str | None = None):
        self.hints = decode_hints(language, prompt)

    def start(self):
        self._out, self._kept, self._partial, self._failed = b"", [], "", None
        self._resample = Resampler(16000, 24000)
        self.active = True

        def begin():
            kept = self._ws is not None  # a kept connection the server may have closed while we were idle
            while True:
                if self._ws is None:
                    self._connect()
                try:
                    self._configure()
                    self._send({"type": "input_audio_buffer.clear"})
                    return
                except RemoteError:
                    if not kept:
                        raise
                    kept = False  # once more, on a new connection
        self._guarded(begin)

    def feed(self, pcm16k: bytes) -> str:
        if not self.active:
            self.start()
        self._kept.append(pcm16k)
        if len(self._kept) > MAX_SECONDS * 50:
            del self._kept[0]
        self._out += self._resample(pcm16k)

        def send():
            while len(self._out) >= SEND_EVERY:
                chunk, self._out = self._out[:SEND_EVERY], self._out[SEND_EVERY:]
                self._send({"type": "input_audio_buffer.append", "audio": base64.b64encode(chunk).decode()})
            self._take_deltas()
        self._guarded(send)
        return self._partial

    def finish(self) -> str:
        """Commit the utterance and wait for its transcript (blocking: call it off the event loop)."""
        if not self.active:
            return ""
        self.active = False
        text: list[str] = []

        def commit():
            if self._out:
                self._send({"type": "input_audio_buffer.append", "audio": base64.b64encode(self._out).decode()})
                self._out = b""
            self._send({"type": "input_audio_buffer.commit"})
            while True:
                event = self._recv(self.timeout)
                if event is None:
                    raise RemoteError(f"{self.url}: no transcription in {self.timeout:g} s")
                kind = event.get("type")
                if kind == "conversation.item.input_audio_transcription.completed":
                    text.append(event.get("transcript") or "")
                    return
                if kind == "conversation.item.input_audio_transcription.failed":
                    raise RemoteError(f"{self.url}: {json.dumps(event.get('error'))[:200]}")
        self._guarded(commit)
        if self._failed is None:
            return text[0].strip()
        return self._fall_back()

    def _fall_back(self) -> str:
        reason, kept = self._failed, b"".join(self._kept)
        self._failed, self._kept = None, []
        if self.backup is None:
            raise RemoteError(reason)
        import numpy as np

        from .moonshine import trim_silence

        fell_back("asr", self.url, reason)
        audio = np.frombuffer(kept, np.int16).astype(np.float32) / 32768.0
        return self.backup.transcribe_scored(trim_silence(audio))[0]

    def cancel(self):
        """The input buffer was cleared (or the turn was decided without this utterance)."""
        if self.active and self._failed is None and self._ws is not None:
            self._guarded(lambda: self._send({"type": "input_audio_buffer.clear"}))
        self.active, self._out, self._kept, self._partial = False, b"", [], ""

    def reset(self):
        """Back to the model's defaults for the next call (the connection is kept)."""
        self.cancel()
        self.hints = {}

    def close(self):
        self._drop()


def realtime_asr_factory(spec: str, fallback: str | None = None):
    """The stack's ASR factory for ``--asr realtime:ws(s)://…#MODEL``."""
    name = "realtime:" + parse_realtime_spec(spec)[1]  # a bad spec fails at start-up
    backup = asr_backup(fallback)

    def make():
        return RealtimeAsr(spec, backup=backup)

    make.name = name
    return make
