"""A speech-to-speech model behind the edge: each call bridged to a Realtime WebSocket session of its own upstream.

``voxgate transceiver --agent upstream:ws://HOST:PORT/v1/realtime[?model=M]`` (``wss://`` too; the key from
``VOXGATE_UPSTREAM_API_KEY``, else ``OPENAI_API_KEY``) makes voxgate the WebRTC, WebSocket and SIP edge of any
server that speaks the Realtime API over a WebSocket: OpenAI's, another voxgate, an Ultravox or Moshi server with a
Realtime front. Per call:

- up: the caller's audio as ``input_audio_buffer.append`` (PCM16 24 kHz, 40 ms at a time), and every client event
  as it came (its ``event_id`` kept);
- down: every server event as it came, except the audio: ``response.output_audio.delta`` is played on the call
  (WebRTC and SIP paced on the transceiver's clock; a WebSocket client gets it as deltas again);
- barge-in at the edge: when the upstream says ``input_audio_buffer.speech_started`` while its audio is still
  queued here, the queue is dropped at once, and the upstream is told ``response.cancel`` (if a response is live)
  and ``conversation.item.truncate`` to what the caller actually heard; on WebRTC the client gets the
  ``output_audio_buffer.started`` / ``stopped`` / ``cleared`` events a paced call has;
- an upstream that cannot be reached, fails or closes ends the call with an ``error`` event
  (``upstream_unavailable``, ``upstream_closed``), never a silent line.

Why our own bridge: the Realtime API's WebSocket is plain JSON over aiohttp's client; the choreography (what goes
up, what is played, how a barge-in is told upstream) is the edge's job and nobody else's.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os

from ..core import events as ev
from .base import Agent, CallIO

log = logging.getLogger("voxgate.agent")

EDGE = "evt_edge_"  # the event ids of what the bridge itself sends upstream
APPEND_FRAMES = 2  # 20 ms frames per append: 40 ms up at a time
MAX_MESSAGE = 20 * 1024 * 1024


class UpstreamFailed(RuntimeError):
    """The upstream model server is gone: the call ends (its client was told why)."""


def _error(code: str, message: str) -> dict:
    return ev.transport_error(code, message, type_="server_error")


def _buffer(event: "ev.ServerEvent") -> dict:
    """The edge's own output-buffer events (the upstream, a WebSocket server, sends none): ids of their own."""
    return event.as_dict(ev.one_off_id())


class UpstreamAgent(Agent):
    sample_rate = 24000  # the Realtime API's PCM: no resampling on the way up or down
    any_voice = True  # the upstream model knows its voices: a session's is passed on as named

    def __init__(self, url: str):
        if not url.startswith(("ws://", "wss://")):
            raise ValueError(f"--agent upstream:{url}: give upstream:ws(s)://HOST[:PORT]/v1/realtime[?model=M]")
        self.url = url
        self.key = os.environ.get("VOXGATE_UPSTREAM_API_KEY") or os.environ.get("OPENAI_API_KEY")

    async def run(self, call: CallIO) -> None:
        import aiohttp

        headers = {"Authorization": f"Bearer {self.key}"} if self.key else {}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, connect=5)) as http:
            try:
                ws = await http.ws_connect(self.url, headers=headers, protocols=("realtime",), heartbeat=30,
                                           max_msg_size=MAX_MESSAGE)
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                await _fail(call, "upstream_unavailable", f"the model server at {self.url} cannot be reached: {exc}")
            bridge = Bridge(call, ws)
            try:
                await bridge.run()
            finally:
                await ws.close()
            if bridge.upstream_gone:
                await _fail(call, "upstream_closed", f"the model server at {self.url} closed the session"
                                                     f"{': ' + bridge.why if bridge.why else ''}")


async def _fail(call: CallIO, code: str, message: str):
    log.warning("%s: %s", call.call_id, message)
    call.send_event(_error(code, message))
    await asyncio.sleep(0.2)  # let the event leave before the call ends
    raise UpstreamFailed(message)


class Bridge:
    """One call and its upstream session: three loops, ended together."""

    def __init__(self, call: CallIO, ws):
        self.call, self.ws = call, ws
        self.upstream_gone = False
        self.why = ""
        self.live_response: str | None = None  # the response being made upstream (response.created .. done)
        self.playing: dict | None = None  # the audio item being played here: its ids and ms written
        self.buffer_started = False  # output_audio_buffer.started sent, not yet stopped or cleared
        self._stopped: asyncio.Task | None = None

    async def run(self):
        tasks = [asyncio.ensure_future(c) for c in (self._up_audio(), self._up_events(), self._down())]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks + ([self._stopped] if self._stopped else []):
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _send(self, event: dict):
        await self.ws.send_str(json.dumps(event))

    # ------------------------------------------------------------- up
    async def _up_audio(self):
        frames: list[bytes] = []
        async for frame in self.call.audio():
            frames.append(frame)
            if len(frames) >= APPEND_FRAMES:
                await self._send({"type": "input_audio_buffer.append",
                                  "audio": base64.b64encode(b"".join(frames)).decode()})
                frames.clear()

    async def _up_events(self):
        async for event in self.call.events():
            await self._send(event)

    # ------------------------------------------------------------- down
    async def _down(self):
        import aiohttp

        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                if msg.type == aiohttp.WSMsgType.ERROR:
                    self.why = str(self.ws.exception())
                break
            try:
                event = json.loads(msg.data)
            except ValueError:
                continue
            if isinstance(event, dict):
                await self._event(event)
        self.upstream_gone = True  # the upstream ended the session (the call ending cancels this loop instead)

    async def _event(self, event: dict):
        kind = event.get("type")
        call = self.call
        if kind == "error" and str((event.get("error") or {}).get("event_id") or "").startswith(EDGE):
            return  # about an event the edge sent itself (a cancel that raced the upstream's own): not the client's
        if kind == "response.output_audio.delta":
            try:
                pcm = base64.b64decode(event.get("delta") or "")
            except ValueError:
                return
            ids = {k: event.get(k) for k in ("response_id", "item_id", "output_index", "content_index")}
            if self.playing is None or self.playing["item_id"] != ids["item_id"]:
                self.playing = {**ids, "written_ms": 0.0}
            self.playing["written_ms"] += len(pcm) / 2 / 24000 * 1000
            call.write_audio(pcm, ids)
            if call.paced and not self.buffer_started:
                self.buffer_started = True
                call.send_event(_buffer(ev.OutputStarted(ids["response_id"])))
            return
        if kind == "response.created":
            self.live_response = (event.get("response") or {}).get("id")
        elif kind == "response.done":
            self.live_response = None
        elif kind == "response.output_audio.done":
            call.flush_audio()
            if call.paced and self.buffer_started:  # stopped once what is queued has been played
                self._stopped = asyncio.ensure_future(self._when_played(event.get("response_id")))
        elif kind == "input_audio_buffer.speech_started":
            await self._barge_in()
        call.send_event(event)

    async def _when_played(self, response_id):
        await self.call.queue_below(0)
        if self.buffer_started:
            self.buffer_started = False
            self.call.send_event(_buffer(ev.OutputStopped(response_id)))

    async def _barge_in(self):
        """The caller spoke: what is queued here is dropped, and the upstream learns what was heard."""
        call, playing = self.call, self.playing
        if playing is None:
            return
        dropped = call.clear_audio() if call.paced else 0
        if self.live_response is not None:
            await self._send({"type": "response.cancel", "event_id": EDGE + "cancel"})
        if call.paced and dropped > 0:  # cut short: the upstream's item keeps only what was played
            heard = max(0, int(playing["written_ms"] - dropped))
            await self._send({"type": "conversation.item.truncate", "event_id": EDGE + "truncate",
                              "item_id": playing["item_id"],
                              "content_index": playing.get("content_index") or 0, "audio_end_ms": heard})
            if self.buffer_started:
                self.buffer_started = False
                call.send_event(_buffer(ev.OutputCleared(playing["response_id"])))
        self.playing = None
