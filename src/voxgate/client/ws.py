"""`voxgate call --transport websocket`: one Realtime session over a WebSocket, from a WAV file.

Connects to ``{url}/v1/realtime?model=…``, sends the WAV as ``input_audio_buffer.append`` (PCM16 24 kHz) at the pace
of a microphone, then silence until the end, and writes the ``response.output_audio.delta`` audio to a WAV. It plays
what it gets on a clock of its own, as a WebSocket client must: when the user starts talking over the reply
(``speech_started``), it stops the playback and truncates the reply to what it played
(``conversation.item.truncate``). Prints one JSON line, like the WebRTC call.
"""

from __future__ import annotations

import asyncio
import base64
import json
import statistics
import time
import wave

import aiohttp

from ..audio import Resampler

RATE = 24000
CHUNK_MS = 40  # what a microphone callback hands over at once


def read_wav_24k(path: str) -> bytes:
    with wave.open(path, "rb") as w:
        rate, width, channels = w.getframerate(), w.getsampwidth(), w.getnchannels()
        raw = w.readframes(w.getnframes())
    if width != 2:
        raise SystemExit(f"{path}: 16-bit PCM WAV expected")
    if channels > 1:
        import array

        samples = array.array("h", raw)
        raw = array.array("h", samples[::channels]).tobytes()
    return Resampler(rate, RATE)(raw)


class Player:
    """Plays the reply audio on a virtual clock: what has been "heard" of each item at any moment."""

    def __init__(self):
        self.items: dict[str, dict] = {}  # item_id -> {"start": t, "ms": received}
        self.free_at = 0.0  # when the speaker is free for the next audio

    def add(self, item_id: str, pcm_bytes: int, now: float):
        ms = pcm_bytes / 2 / RATE * 1000
        item = self.items.setdefault(item_id, {"start": max(now, self.free_at), "ms": 0.0, "stopped": None})
        if item["stopped"] is not None:
            return False  # truncated: the rest is not played
        item["ms"] += ms
        self.free_at = item["start"] + item["ms"] / 1000
        return True

    def interrupt(self, now: float) -> tuple[str, int] | None:
        """Stop playing; the item that was playing and how much of it was heard (ms), if one was."""
        for item_id, item in self.items.items():
            played = (now - item["start"]) * 1000
            if item["stopped"] is None and 0 <= played < item["ms"]:
                item["stopped"] = int(played)
                self.free_at = now
                return item_id, int(played)
        return None


async def ws_session(url: str, input_wav: str, output_wav: str, *, api_key: str | None = None,
                     events: list | None = None, duration: float | None = None, session: dict | None = None,
                     pings: int = 0, model: str = "voxgate", api: str = "realtime") -> dict:
    """One WebSocket session from a WAV: Realtime's (``/v1/realtime``, ``session.update`` with ``session``) or
    GPT-Live's (``api="live"``: ``/v1/live/sessions``, ``session.start`` with ``session``)."""
    live = api == "live"
    pcm = read_wav_24k(input_wav)
    seconds = duration if duration is not None else len(pcm) / 2 / RATE + 1.0
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    ws_url = url.rstrip("/").replace("http://", "ws://").replace("https://", "wss://") + (
        "/v1/live/sessions" if live else f"/v1/realtime?model={model}")
    received: list = []
    marks: dict = {}
    player = Player()
    out = wave.open(output_wav, "wb")
    out.setnchannels(1), out.setsampwidth(2), out.setframerate(RATE)
    ping_sent: dict = {}
    rtts: list = []
    audio_in_ms = 0.0
    truncated = []
    t0 = time.monotonic()

    def mark(name):
        marks.setdefault(name, round((time.monotonic() - t0) * 1000, 1))

    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(ws_url, headers=headers, max_msg_size=0) as ws:
            mark("connected_ms")
            first = asyncio.get_running_loop().create_future()

            async def read():
                nonlocal audio_in_ms
                async for msg in ws:
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        continue
                    event = json.loads(msg.data)
                    etype = event.get("type")
                    now = time.monotonic()
                    if etype in ("response.output_audio.delta", "session.output_audio.delta"):
                        data = base64.b64decode(event["delta"])
                        mark("first_audio_ms")
                        if player.add(event.get("item_id", ""), len(data), now):
                            out.writeframes(data)
                            audio_in_ms += len(data) / 2 / RATE * 1000
                        continue
                    inner = event.get("event") if etype == "echo" else None
                    if isinstance(inner, dict) and inner.get("type") == "voxgate.ping" and inner.get("n") in ping_sent:
                        rtts.append((now - ping_sent.pop(inner["n"])) * 1000)
                        continue
                    if etype == "input_audio_buffer.speech_started":
                        cut = player.interrupt(now)
                        if cut is not None:  # barge-in: the client truncates what it did not play
                            truncated.append(cut)
                            await ws.send_json({"type": "conversation.item.truncate", "item_id": cut[0],
                                                "content_index": 0, "audio_end_ms": cut[1]})
                    received.append(event)
                    if not first.done() and etype in ("session.created", "session.started", "error"):
                        first.set_result(event)

            reader = asyncio.ensure_future(read())
            if live:  # silent until session.start
                await ws.send_json({"type": "session.start", "session": session or {"model": "gpt-live-1"}})
            created = await asyncio.wait_for(first, 10)
            mark("session_created_ms")
            if created.get("type") == "error":
                raise RuntimeError(f"session refused: {created}")
            if session is not None and not live:
                await ws.send_json({"type": "session.update", "session": session})
            for e in events or []:
                await ws.send_json(e)
            # the WAV at the pace of a microphone, then silence: server VAD hears the end of speech
            step = RATE * 2 * CHUNK_MS // 1000
            start = time.monotonic()
            i = 0
            n_pings = 0
            while time.monotonic() - start < seconds:
                chunk = pcm[i * step:(i + 1) * step] or b"\0" * step
                await ws.send_json({"type": "session.input_audio.append" if live else "input_audio_buffer.append",
                                    "audio": base64.b64encode(chunk).decode()})
                i += 1
                if n_pings < pings and i % 5 == 0:
                    ping_sent[n_pings] = time.monotonic()
                    await ws.send_json({"type": "voxgate.ping", "n": n_pings})
                    n_pings += 1
                await asyncio.sleep(max(0.0, start + i * CHUNK_MS / 1000 - time.monotonic()))
            sent_ms = i * CHUNK_MS
            await ws.close()
            await asyncio.gather(reader, return_exceptions=True)
            close_code = ws.close_code
    out.close()
    return {"transport": "websocket", "setup": marks, "audio_sent_ms": sent_ms, "audio_received_ms": round(audio_in_ms),
            "events": received, "truncated": [{"item_id": a, "audio_end_ms": b} for a, b in truncated],
            "close_code": close_code, "rtt_ms": round(statistics.median(rtts), 1) if rtts else None,
            "rtts_ms": [round(r, 1) for r in rtts]}
