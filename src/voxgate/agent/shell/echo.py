"""The echo agent: sends the caller's audio straight back and answers every data-channel message.

For tests and benchmarks: it exercises the whole media path (decode, resample,
pace, encode) and the data channel, with no models.
"""

from __future__ import annotations

import asyncio

from .base import Agent, CallIO


class EchoAgent(Agent):
    sample_rate = 48000  # what the Opus decoder emits: the echo costs no resampling (agents may ask for 16k/24k)

    async def run(self, call: CallIO) -> None:
        async def audio():
            async for frame in call.audio():
                call.write_audio(frame)

        async def events():
            async for event in call.events():
                call.send_event({"type": "echo", "event": event})

        await asyncio.gather(audio(), events())
