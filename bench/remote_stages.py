"""The turn with the models elsewhere: each stage remote on loopback against the embedded stack, and the upstream
agent's added latency against a client of the same upstream directly.

Agents compared in one run, interleaved question by question (these machines are noisy):

* ``embedded``  -- `voxgate transceiver --agent voice`: every model on the box;
* ``remote``    -- the same with ``--asr`` faster-whisper-server (its own venv, .ci/run makes it), ``--responder``
                   llama.cpp's own server (SmolLM2's gguf) and ``--tts`` another voxgate's /v1/audio/speech;
* ``remote_box`` -- all three stages on another voxgate's model APIs (the embedded models by HTTP): what going
                   over the network costs, with the same models;
* ``direct``    -- a WebSocket client of the model box itself (the upstream);
* ``upstream``  -- `--agent upstream:ws://<the model box>/v1/realtime`: the same model box behind an edge.

Each round asks every agent the same question over a Realtime WebSocket (push-to-talk: the audio appended, committed,
``response.create``) and takes, after the commit: the transcription, the first audio delta, and ``response.done``.
Medians over the rounds; the ratio to ``embedded`` (and ``upstream`` to ``direct``). Everything runs on this 2-core
machine, the model servers included: "remote" here costs their CPU too, it does not remove it.

    python bench/remote_stages.py [--rounds 8] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import statistics
import subprocess
import tempfile
import time
import wave

import common  # noqa: F401  (src on the path)

from voxgate.agent.shell.embedded import smollm2_path
from voxgate.audio import Resampler
from voxgate.lab.model_servers import llama_server, whisper_server
from voxgate.lab.peers import TransceiverProcess
from voxgate.wire.token import new_secret_line

KEY = "sk-bench"
def question(tmp: str) -> bytes:
    path = os.path.join(tmp, "q.wav")
    subprocess.run(["flite", "-voice", "slt", "-t", "What is the capital of France?", "-o", path], check=True)
    with wave.open(path) as w:
        return Resampler(w.getframerate(), 24000)(w.readframes(w.getnframes()))


async def ask(url: str, key: str, pcm: bytes) -> dict:
    import aiohttp

    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(url.replace("http", "ws") + "/v1/realtime?model=x",
                                   headers={"Authorization": f"Bearer {key}"}, max_msg_size=0) as ws:
            async def next_of(*types):
                async for msg in ws:
                    event = json.loads(msg.data)
                    if event["type"] in types:
                        return event
                raise RuntimeError("closed")

            await next_of("session.created")
            await ws.send_json({"type": "session.update", "session": {"audio": {"input": {"turn_detection": None}}}})
            await next_of("session.updated")
            for i in range(0, len(pcm), 9600):
                await ws.send_json({"type": "input_audio_buffer.append",
                                    "audio": base64.b64encode(pcm[i:i + 9600]).decode()})
            t0 = time.monotonic()
            await ws.send_json({"type": "input_audio_buffer.commit"})
            await ws.send_json({"type": "response.create"})
            out = {}
            async for msg in ws:
                event = json.loads(msg.data)
                now = (time.monotonic() - t0) * 1000
                kind = event["type"]
                if kind == "conversation.item.input_audio_transcription.completed" and "transcribed" not in out:
                    out["transcribed"] = now
                elif kind == "response.output_audio.delta" and "first_audio" not in out:
                    out["first_audio"] = now
                elif kind == "response.done":
                    out["done"] = now
                    break
            return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--json")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp()
    secret = os.path.join(tmp, "secret")
    with open(secret, "w") as fh:
        fh.write(new_secret_line(1) + "\n")
    procs, txs = [], []
    env = {**os.environ, "OPENAI_API_KEY": KEY}
    try:
        box = TransceiverProcess(secret, agent="voice", extra=["--api-key", KEY, "--drain-timeout", "1"])
        txs.append(box)
        whisper, whisper_url = whisper_server()
        procs.append(whisper)
        llama, llama_url = llama_server(smollm2_path(), threads=2)
        procs.append(llama)
        agents = {
            "embedded": (TransceiverProcess(secret, agent="voice", extra=["--api-key", "k", "--drain-timeout", "1"]),
                         "k"),
            "remote": (TransceiverProcess(secret, agent="voice", env=env, extra=[
                "--api-key", "k", "--drain-timeout", "1", "--asr", f"openai:{whisper_url}#whisper-1",
                "--responder", f"openai:{llama_url}#smollm2",
                "--tts", f"openai:{box.url}/v1#tts-1"]), "k"),
            "remote_box": (TransceiverProcess(secret, agent="voice", env=env, extra=[
                "--api-key", "k", "--drain-timeout", "1", "--asr", f"openai:{box.url}/v1#whisper-1",
                "--responder", f"openai:{box.url}/v1#smollm2", "--tts", f"openai:{box.url}/v1#tts-1"]), "k"),
            "direct": (box, KEY),
            "upstream": (TransceiverProcess(secret, agent=f"upstream:{box.url.replace('http', 'ws')}/v1/realtime",
                                            env=env, extra=["--api-key", "k", "--drain-timeout", "1"]), "k"),
        }
        txs += [tx for name, (tx, _) in agents.items() if name != "direct"]
        pcm = question(tmp)
        results: dict = {name: [] for name in agents}
        for r in range(args.rounds + 1):  # the first round warms every path up and is not counted
            for name, (tx, key) in agents.items():
                got = asyncio.run(ask(tx.url, key, pcm))
                if r:
                    results[name].append(got)
            print(f"round {r}: " + ", ".join(f"{n} {results[n][-1].get('first_audio', 0):.0f} ms" if r else n
                                             for n in agents), flush=True)
        table = {}
        for name, rows in results.items():
            table[name] = {k: round(statistics.median(row[k] for row in rows if k in row), 1)
                           for k in ("transcribed", "first_audio", "done") if any(k in row for row in rows)}
        print(f"\nmedians of {args.rounds} rounds, ms after the commit")
        print(f"{'agent':10s} {'transcribed':>12s} {'first audio':>12s} {'done':>8s} {'first audio vs':>16s}")
        for name, row in table.items():
            base = table["direct" if name == "upstream" else "embedded"]["first_audio"]
            print(f"{name:10s} {row.get('transcribed', 0):12.0f} {row['first_audio']:12.0f} {row['done']:8.0f} "
                  f"{row['first_audio'] / base:10.2f} ({'direct' if name == 'upstream' else 'embedded'})")
        if args.json:
            with open(args.json, "w") as fh:
                json.dump({"rounds": args.rounds, "medians": table, "raw": results}, fh, indent=1)
    finally:
        for tx in txs:
            tx.stop()
        for p in procs:
            p.kill()


if __name__ == "__main__":
    main()
