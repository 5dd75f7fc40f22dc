"""The Realtime API over a WebSocket: sessions of their own, and the sideband of a WebRTC call.

``GET /v1/realtime?model=…`` upgraded to a WebSocket is a session like a WebRTC call, served by the same agent and
events: audio comes up as ``input_audio_buffer.append`` (base64 PCM16 mono 24 kHz, or G.711 as
``audio.input.format`` says) and goes down as ``response.output_audio.delta``. Nothing is paced: the client plays
what it gets, so on a barge-in the server cancels what it is still generating and the client truncates what it had
not played (``conversation.item.truncate``), as the API defines for WebSockets.

``GET /v1/realtime?call_id=rtc_…`` is the sideband of a live WebRTC call: it receives every server event of the call
and sends client events into the same conversation, in order with the browser's.

Order: a client event that follows appended audio is handled only after the agent has heard that audio (a commit
right after the last append commits all of it).

Back-pressure, both ways:
- up: appended audio waits in a queue of ``AUDIO_QUEUE`` frames; when the agent is behind, the reader stops reading
  the socket and TCP slows the client down. An append over the API's 15 MiB is answered with an error and dropped;
  a message over ``MAX_MESSAGE`` (20 MiB: an append somewhat over the limit still gets its error) closes the
  socket (1009, message too big).
- down: server events wait in an outbox of at most ``OUTBOX_LIMIT`` bytes. A client that stops reading for so long
  that the outbox fills is closed with 1008 and its session ends: the server's memory never grows without bound.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import contextlib
import json
import logging
import secrets
import time

from aiohttp import WSMsgType, web

from ..agent.core import events
from ..agent.core.events import transport_error
from ..agent.core.live_events import live_error
from ..call.io import CallIO, until_none
from ..audio import G711, Framer, Resampler
from .errors import BadRequest, json_object

log = logging.getLogger("voxgate.transceiver")

MAX_MESSAGE = 20 * 1024 * 1024  # bytes of one WebSocket message: past this aiohttp drops the connection (1009)
MAX_APPEND = 15 * 1024 * 1024  # base64 characters of one input_audio_buffer.append
AUDIO_QUEUE = 50  # 20 ms frames the agent may be behind before the reader stops reading
OUTBOX_LIMIT = 8 * 1024 * 1024  # bytes of server events queued for a client that does not read
PCM_RATE = 24000
SUBPROTOCOL_KEY = "openai-insecure-api-key."


def token_of(request) -> str | None:
    """The caller's key: ``Authorization: Bearer``, or (browsers cannot set headers on a WebSocket) the
    ``openai-insecure-api-key.<key>`` subprotocol."""
    auth = request.headers.get("Authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    for proto in request.headers.get("Sec-WebSocket-Protocol", "").split(","):
        proto = proto.strip()
        if proto.startswith(SUBPROTOCOL_KEY):
            return proto[len(SUBPROTOCOL_KEY):]
    return None


# the ids of audio an agent writes outside any response (the echo agent's): a WebSocket client still gets deltas
UNPROMPTED = {"response_id": "resp_unprompted", "item_id": "item_unprompted", "output_index": 0, "content_index": 0}


class AudioBudget:
    """Bytes of appended audio being decoded at once, across every WebSocket session of the transceiver
    (``--input-audio-total-mb``): an append that would pass it waits (its reader stops reading, and TCP slows its
    client) until others are done. One append alone is always let through, whatever its size."""

    def __init__(self, limit: int, limited=None):
        self.limit, self.used = limit, 0
        self._freed = asyncio.Condition()
        self.limited = limited or (lambda limit: None)

    @contextlib.asynccontextmanager
    async def hold(self, size: int):
        if self.limit:
            async with self._freed:
                if self.used and self.used + size > self.limit:
                    self.limited("input_audio_total")
                    await self._freed.wait_for(lambda: not self.used or self.used + size <= self.limit)
                self.used += size
        try:
            yield
        finally:
            if self.limit:
                async with self._freed:
                    self.used -= size
                    self._freed.notify_all()


class Outbox:
    """Server events for one WebSocket, sent in order by one writer task; at most ``limit`` bytes queued."""

    def __init__(self, ws: web.WebSocketResponse, limit: int = OUTBOX_LIMIT):
        self.ws, self.limit = ws, limit
        self.queue: collections.deque = collections.deque()
        self.bytes = 0
        self.closed = False
        self.overflowed = False
        self._ready = asyncio.Event()
        self._drained = asyncio.Event()  # set whenever the queue has been written out
        self.task = asyncio.ensure_future(self._run())

    def put(self, text: str, on_sent=None) -> bool:
        if self.closed:
            return False
        if self.bytes + len(text) > self.limit:
            self.overflowed = True
            self.closed = True
            log.warning("a WebSocket client stopped reading (%d bytes queued): closing it", self.bytes)
            asyncio.ensure_future(self.ws.close(code=1008, message=b"client not reading: outbox full"))
            return False
        self.queue.append((text, on_sent))
        self.bytes += len(text)
        self._drained.clear()
        self._ready.set()
        return True

    async def _run(self):
        try:
            while True:
                await self._ready.wait()
                while self.queue:
                    text, on_sent = self.queue.popleft()
                    self.bytes -= len(text)
                    await self.ws.send_str(text)  # waits while the socket's buffer is full
                    if on_sent is not None:
                        on_sent()
                self._ready.clear()
                self._drained.set()
        except (ConnectionError, RuntimeError):  # the client went away
            self.closed = True

    async def flushed(self, timeout: float) -> None:
        """Wait (at most ``timeout``) until everything queued has been written."""
        if self.queue and not self.closed:
            try:
                await asyncio.wait_for(self._drained.wait(), timeout)
            except asyncio.TimeoutError:
                pass

    async def close(self):
        self.closed = True
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


def wire_error(api: str, code: str, message: str, param: str | None = None, event_id: str | None = None,
               type_: str = "invalid_request_error") -> dict:
    """An error a transport sends itself (a frame that is no event), in the shape of the API the client speaks."""
    if api == "live":
        return live_error(code, message, param, event_id, type_).as_dict(events.one_off_id())
    return transport_error(code, message, param, event_id, type_)


class WsCall(CallIO):
    """A WebSocket session as the agent's ``CallIO``: Realtime's (``input_audio_buffer.append`` in,
    ``response.output_audio.delta`` out) or GPT-Live's (``api="live"``: ``session.input_audio.append`` in,
    ``session.output_audio.delta`` out, in the session's format)."""

    paced = False
    transport = "websocket"

    def __init__(self, ws: web.WebSocketResponse, sample_rate: int, session_config: dict | None = None,
                 budget: "AudioBudget | None" = None, limited=None, api: str = "realtime"):
        prefix = "live_" if api == "live" else "ws_"
        super().__init__(prefix + secrets.token_hex(12), sample_rate, session_config, api)
        self.append_type = "session.input_audio.append" if api == "live" else "input_audio_buffer.append"
        self.ws = ws
        self.outbox = Outbox(ws)
        self._audio_q: asyncio.Queue = asyncio.Queue(maxsize=AUDIO_QUEUE)
        self._event_q: asyncio.Queue = asyncio.Queue()
        self._framer = Framer(sample_rate // 50 * 2)
        self._audio_ids = events.EventIds(self.call_id[-9:] + "a")  # its audio deltas: a stream of their own
        self.ended = False
        self.appended_ms = 0.0
        self.budget = budget or AudioBudget(0)
        self.metrics_limited = limited or (lambda limit: None)  # counts a limit that bit (voxgate_transceiver_limited)
        self.last_activity = time.monotonic()  # the client's last message or our last event (the idle timeout)
        self.configure_audio({"type": "audio/pcm", "rate": PCM_RATE}, {"type": "audio/pcm", "rate": PCM_RATE})

    def configure_audio(self, input_format: dict | None, output_format: dict | None) -> None:
        """The session's audio formats (``schema.check_session`` checked them): PCM16 24 kHz, or G.711 at 8 kHz."""
        if input_format:
            kind = input_format.get("type", "audio/pcm")
            self._g711_in = G711(kind) if kind in G711.CODECS else None
            self._in_rate = G711.RATE if self._g711_in else input_format.get("rate", PCM_RATE)  # Live: 16 or 24 kHz
            self._in = Resampler(self._in_rate, self.sample_rate)
        if output_format:
            kind = output_format.get("type", "audio/pcm")
            self._g711_out = G711(kind) if kind in G711.CODECS else None
            out_rate = G711.RATE if self._g711_out else output_format.get("rate", PCM_RATE)
            self._out = Resampler(self.sample_rate, out_rate)

    # ------------------------------------------------------------- from the client
    async def take(self, text: str) -> None:
        """One text message from the client."""
        self.last_activity = time.monotonic()
        try:
            event = json_object(text, "the message")
        except BadRequest as exc:
            self.send_event(wire_error(self.api, "invalid_json", str(exc)))
            return
        del text  # an append's audio is large: hold one copy of it, not two
        if event.get("type") == self.append_type:
            await self._append(event)
            return
        await self._audio_q.join()  # the agent has heard every frame appended before this event
        self._event_q.put_nowait(event)

    async def _append(self, event: dict):
        audio, eid = event.pop("audio", None), event.get("event_id")
        if not isinstance(audio, str):
            self.send_event(wire_error(self.api, "invalid_value", f"{self.append_type} needs 'audio' (base64)", "audio",
                                       eid))
            return
        if len(audio) > MAX_APPEND:
            self.metrics_limited("max_append")
            self.send_event(wire_error(self.api, "audio_too_large",
                                       f"one append takes at most {MAX_APPEND} base64 characters",
                                       "audio", eid))
            return
        try:
            data = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError):
            self.send_event(wire_error(self.api, "invalid_value", "'audio' is not base64", "audio", eid))
            return
        del audio
        if self._g711_in is None and len(data) % 2:
            self.send_event(wire_error(self.api, "invalid_value",
                                       "PCM16 audio must be a whole number of 2-byte samples",
                                       "audio", eid))
            return
        async with self.budget.hold(len(data)):  # appends in flight across all sessions are bounded
            rate = self._in_rate
            width = 1 if self._g711_in else 2
            self.appended_ms += len(data) / width / rate * 1000
            step = rate * width  # one second of input at a time: the resampler never sees more
            for i in range(0, len(data), step):
                chunk = data[i:i + step]
                if self._g711_in is not None:
                    chunk = self._g711_in.decode(chunk)
                for frame in self._framer.push(self._in(chunk)):
                    if self.ended:
                        return
                    await self._audio_q.put(frame)

    def end(self):
        """The socket closed (or the agent ended): the agent's streams end, and a reader waiting on the queue goes on."""
        if self.ended:
            return
        self.ended = True
        while not self._audio_q.empty():
            self._audio_q.get_nowait()
            self._audio_q.task_done()
        self._audio_q.put_nowait(None)
        self._event_q.put_nowait(None)

    # ------------------------------------------------------------- CallIO
    async def audio(self):
        while (frame := await self._audio_q.get()) is not None:
            yield frame
            self._audio_q.task_done()  # the agent came back for the next frame: it has heard this one

    def events(self):
        return until_none(self._event_q)

    def send_event(self, event: dict) -> bool:
        self.last_activity = time.monotonic()
        return self.outbox.put(json.dumps(event))

    def write_audio(self, pcm: bytes, ids: dict | None = None) -> None:
        data = self._out(pcm)
        if self._g711_out is not None:
            data = self._g711_out.encode(data)
        if not data:
            return
        delta = base64.b64encode(data).decode()
        if self.api == "live":  # GPT-Live: the audio alone, no ids (its timing is the sideband's)
            wire = {"type": "session.output_audio.delta", "delta": delta}
        else:
            wire = events.AudioDelta(**(ids or UNPROMPTED), delta=delta).as_dict(self._audio_ids.next())
        self.outbox.put(json.dumps(wire), on_sent=self._on_audio_sent)

    def _on_audio_sent(self):
        self.sent.resolve(time.monotonic())

    def flush_audio(self) -> None:
        pass

    def end_call(self, reason: str) -> None:
        """The client closed the session: what is queued goes out (``session.closed`` last), then the socket closes
        with 1000."""
        async def close():
            await self.outbox.flushed(1.0)
            await self.ws.close(code=1000)
        self.closing = asyncio.ensure_future(close())

    def clear_audio(self) -> int:
        return 0  # nothing is queued here: the client holds what it has not played

    @property
    def queued_audio_ms(self) -> int:
        return 0


async def serve_session(t, request, session_config: dict | None, limits, api: str = "realtime",
                        owner: str | None = None, fork_of: dict | None = None) -> web.WebSocketResponse:
    """A WebSocket session: the agent runs on it until either side ends, or nothing passes either way for
    ``limits.ws_idle_timeout`` seconds (then an ``error`` event says so and the socket closes with 1000)."""
    ws = web.WebSocketResponse(protocols=("realtime",), max_msg_size=MAX_MESSAGE, heartbeat=30)
    await ws.prepare(request)
    agent = t.agent_factory()
    limited = lambda name: t.metrics.limited.labels(name).inc()  # noqa: E731
    call = WsCall(ws, agent.sample_rate, session_config, t.audio_budget, limited, api)
    call.owner = owner  # the key that made it: its recording is for that key (and server keys)
    call.fork_of = fork_of  # a GPT-Live fork's stored session
    t.traced(call, request)
    t.add_ws_call(call)
    task = asyncio.ensure_future(agent.run(call))
    task.add_done_callback(lambda _: (call.end(), asyncio.ensure_future(ws.close())))
    idle = limits.ws_idle_timeout
    try:
        while not task.done():
            wait = idle - (time.monotonic() - call.last_activity) if idle else None
            if wait is not None and wait <= 0:
                limited("ws_idle_timeout")
                call.send_event(wire_error(call.api, "session_idle", f"nothing was sent either way for {idle:g} s: "
                                            "the session is closed (--ws-idle-timeout)"))
                await call.outbox.flushed(1.0)  # let the outbox write it before the socket closes
                break
            try:
                msg = await ws.receive(timeout=wait)
            except asyncio.TimeoutError:
                continue
            if msg.type == WSMsgType.TEXT:
                text = msg.data
                del msg
                await call.take(text)
                del text
            elif msg.type == WSMsgType.BINARY:
                call.send_event(wire_error(call.api, "invalid_message",
                                           "binary messages are not events: send JSON text"))
            elif msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                break
    finally:
        call.end()
        try:
            await asyncio.wait_for(asyncio.shield(task), 10)
        except asyncio.TimeoutError:
            task.cancel()
        except Exception:
            log.exception("agent failed on %s", call.call_id)
        await call.outbox.close()
        if not ws.closed:
            await ws.close(code=1008 if call.outbox.overflowed else 1000)
        t.remove_ws_call(call)
    return ws


async def serve_sideband(session, request, api: str = "realtime") -> web.WebSocketResponse:
    """The sideband of a live call: its server events out, client events into its conversation (GPT-Live's, with
    ``api="live"``: its error shape, and no audio from the sideband)."""
    agent = session.agent  # a Realtime agent's declared sideband: attach, submit, detach
    append = "session.input_audio.append" if api == "live" else "input_audio_buffer.append"
    ws = web.WebSocketResponse(protocols=("realtime",), max_msg_size=MAX_MESSAGE, heartbeat=30)
    await ws.prepare(request)
    outbox = Outbox(ws)

    def sink(event: dict):
        outbox.put(json.dumps(event))

    agent.attach(sink)

    async def read():
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                outbox.put(json.dumps(wire_error(api, "invalid_message", "binary messages are not events: send JSON")))
                continue
            try:
                event = json_object(msg.data, "the message")
            except BadRequest as exc:
                outbox.put(json.dumps(wire_error(api, "invalid_json", str(exc))))
                continue
            if event.get("type") == append:
                outbox.put(json.dumps(wire_error(api, "not_supported", "a sideband sends no audio: the call's audio is "
                                                  "its WebRTC track", "type", event.get("event_id"))))
                continue
            agent.submit(event)

    reader = asyncio.ensure_future(read())
    ended = asyncio.ensure_future(session.ended.wait())
    try:
        await asyncio.wait([reader, ended], return_when=asyncio.FIRST_COMPLETED)
    finally:
        agent.detach(sink)
        for task in (reader, ended):
            task.cancel()
        await asyncio.gather(reader, ended, return_exceptions=True)
        await outbox.close()
        if not ws.closed:
            await ws.close(code=1000, message=b"call ended" if session.ended.is_set() else b"")
    return ws
