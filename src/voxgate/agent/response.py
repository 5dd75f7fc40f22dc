"""One response: responder text -> TTS chunks -> PCM for the call, optionally held back while speculative.

A speculative response (partial inference) runs exactly like a live one, but
everything it would emit (events and audio) is held. ``commit()`` releases what
is held, in order, and goes live; ``cancel()`` throws it away. Nothing
speculative ever reaches the caller before the turn has ended.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time

from ..wire.pcm import Resampler
from .stages import Chunker


log = logging.getLogger("voxgate.agent")

AHEAD_MS = 1000


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


class Response:
    def __init__(self, agent, messages: list[dict], *, speculative: bool, transcript: str = ""):
        self.agent = agent  # RealtimeSession
        self.call = agent.call
        self.id = new_id("resp")
        self.item_id = new_id("item")
        self.messages = messages
        self.speculative = speculative
        self.live = not speculative
        self.transcript_in = transcript
        self.text = ""
        self.held: list[tuple[str, object]] = []
        self.status = "in_progress"
        self.reason = None
        self.marks: dict[str, float] = {"started": time.monotonic()}
        self.written_ms = 0.0
        self.task: asyncio.Task | None = None
        self.first_sent: asyncio.Future | None = None  # resolves when the first audio packet leaves
        self._went_live = asyncio.Event()
        if self.live:
            self._went_live.set()
        self._chunks = 0

    # ------------------------------------------------------------- control
    def start(self):
        self.task = asyncio.ensure_future(self._run())
        return self

    def commit(self, turn_end: float):
        """Go live: release what was held (events, then audio), in the order it was produced."""
        self.marks["committed"] = turn_end
        self.live = True
        self._went_live.set()
        held, self.held = self.held, []
        for kind, payload in held:
            self._deliver(kind, payload)

    async def cancel(self, reason: str):
        if self.status != "in_progress":
            return
        self.status, self.reason = "cancelled", reason
        if self.task is not None and self.task is not asyncio.current_task():
            self.task.cancel()
            try:
                await self.task
            except (asyncio.CancelledError, Exception):
                pass
        if self.live:
            self._finish_events()

    # ------------------------------------------------------------- output
    def _out(self, kind: str, payload):
        if self.live:
            self._deliver(kind, payload)
        else:
            self.held.append((kind, payload))

    def _deliver(self, kind: str, payload):
        if kind == "event":
            self.agent.emit(payload)
        elif kind == "audio":
            if "first_audio_written" not in self.marks:
                self.marks["first_audio_written"] = time.monotonic()
                self.agent.emit({"type": "output_audio_buffer.started", "response_id": self.id})
                self.first_sent = self.call.audio_sent()
                self.first_sent.add_done_callback(lambda f: self.marks.setdefault("first_audio_sent", f.result())
                                             if not f.cancelled() else None)
            self.call.write_audio(payload)
            self.written_ms += len(payload) / 2 / self.call.sample_rate * 1000
        elif kind == "flush":
            self.call.flush_audio()
        elif kind == "done":
            self._finish_events()

    def _ids(self) -> dict:
        return {"response_id": self.id, "item_id": self.item_id, "output_index": 0, "content_index": 0}

    @property
    def item_status(self) -> str:
        """The status of the response's item once it has ended."""
        return "completed" if self.status == "completed" else "incomplete"

    def _item(self, status: str) -> dict:
        return {"id": self.item_id, "object": "realtime.item", "type": "message", "role": "assistant",
                "status": status, "content": [{"type": "output_audio", "transcript": self.text}]}

    # ------------------------------------------------------------- the work
    async def _run(self):
        a = self.agent
        self._out("event", {"type": "response.created", "response": self.describe()})
        self._out("event", {"type": "response.output_item.added", "response_id": self.id, "output_index": 0,
                            "item": self._item("in_progress")})
        self._out("event", {"type": "conversation.item.added", "previous_item_id": a.last_item_id(),
                            "item": self._item("in_progress")})
        self._out("event", {"type": "response.content_part.added", **self._ids(),
                            "part": {"type": "audio", "transcript": ""}})
        chunker = Chunker()
        resample = Resampler(a.stack.tts.rate, self.call.sample_rate)
        try:
            async for delta in a.stack.responder.stream(self.messages, a.instructions):
                if "first_token" not in self.marks:
                    self.marks["first_token"] = time.monotonic()
                self.text += delta
                self._out("event", {"type": "response.output_audio_transcript.delta", **self._ids(), "delta": delta})
                for chunk in chunker.push(delta):
                    await self._speak(chunk, resample)
            for chunk in chunker.flush():
                await self._speak(chunk, resample)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a failing model ends this response, not the call
            self.status, self.reason = "failed", "error"
            self.agent.error("server_error", "response_failed", f"response failed: {exc}")
        else:
            self.status = "completed"
        self._out("flush", None)
        self._out("done", None)

    async def _speak(self, text: str, resample):
        """Synthesize one chunk. Only the first runs ahead while speculative; later ones wait until the response
        is live and the call has less than AHEAD_MS queued, so TTS never works far ahead of playback (a barge-in
        then throws away little, and the response stays in progress while it speaks)."""
        tts = self.agent.stack.tts
        self._chunks += 1
        if self._chunks > 1:
            await self._went_live.wait()
            while self.call.queued_audio_ms > AHEAD_MS:
                await asyncio.sleep(0.02)
        pcm = await asyncio.to_thread(lambda: b"".join(tts.synthesize(text)))
        if "first_tts_audio" not in self.marks:
            self.marks["first_tts_audio"] = time.monotonic()
        self._out("audio", resample(pcm))

    def _finish_events(self):
        s = self.marks["started"]
        log.info("response %s %s: %s", self.id, self.status,
                 " ".join(f"{k}={(v - s) * 1000:.0f}ms" for k, v in sorted(self.marks.items(), key=lambda kv: kv[1])))
        ids = self._ids()
        self.agent.emit({"type": "response.output_audio.done", **ids})
        self.agent.emit({"type": "response.output_audio_transcript.done", **ids, "transcript": self.text})
        self.agent.emit({"type": "response.content_part.done", **ids,
                         "part": {"type": "audio", "transcript": self.text}})
        self.agent.emit({"type": "response.output_item.done", "response_id": self.id, "output_index": 0,
                         "item": self._item(self.item_status)})
        self.agent.emit({"type": "conversation.item.done", "previous_item_id": self.agent.last_item_id(),
                         "item": self._item(self.item_status)})
        self.agent.on_response_done(self)

    # ------------------------------------------------------------- reporting
    def timing_ms(self) -> dict:
        """Per-stage latency, measured from the end of the turn (speech_stopped) and from the end of speech."""
        m = self.marks
        t0 = m.get("turn_end") or m.get("committed") or m["started"]
        out = {"speculative": self.speculative, "committed": "committed" in m}
        for stage in ("final_transcript", "first_token", "first_tts_audio", "first_audio_written", "first_audio_sent"):
            if stage in m:
                out[f"turn_end_to_{stage}"] = round(max(0.0, m[stage] - t0) * 1000, 1)
        if "speech_end" in m and "first_audio_sent" in m:
            out["speech_end_to_first_audio_sent"] = round((m["first_audio_sent"] - m["speech_end"]) * 1000, 1)
        return out

    def describe(self) -> dict:
        r = {"id": self.id, "object": "realtime.response", "status": self.status,
             "output": [] if self.status == "in_progress" else [self._item("completed")],
             "usage": {"total_tokens": 0, "input_tokens": 0, "output_tokens": 0}}
        if self.status != "in_progress":
            r["status_details"] = {"type": self.status, "reason": self.reason}
            r["voxgate_timing_ms"] = self.timing_ms()
        return r
