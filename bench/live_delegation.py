"""GPT-Live delegation, timed: how soon the caller hears the voice after a question, and how soon the answer.

A transceiver with the embedded voice (SmolLM2 answers small talk; acknowledgements are spoken by the synthesizer
alone) and a delegated backend in another process: llama.cpp's own OpenAI-compatible server (``xllamacpp``, SmolLM2's
gguf), reached by URL (``--delegate openai:URL#smollm2``). The official SDK (``client.live.connect``) speaks each
question in real time (espeak-ng voices the agent never uses) and measures, from the end of the question's audio:

- ``delegated``: ``session.delegation.created``;
- ``ack``: the voice's first audio (the acknowledgement; for decisions after ``acknowledgement_delay_ms``, 400);
- ``answer``: for ``responses``, the first audio of the backend's answer; for ``decisions``, ``decision.event``;
  for ``client``, the first audio of the app's ``commentary`` (the app answers as soon as the delegation comes).

    python bench/live_delegation.py [--rounds 2] [--kinds client,responses,decisions]

Prints one line per kind (median and max, in ms) and a Markdown row for docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import statistics
import sys
import tempfile
import time
from pathlib import Path

import common  # noqa: F401  (the source tree on the path)

QUESTIONS = ["What is the capital of France?", "How many days are there in a week?",
             "Can you recommend a good book for a long flight?"]
VOICES = ["en-us+f3", "en+m4", "en-gb+f2"]


def _speech(path: Path, text: str, voice: str) -> bytes:
    import subprocess

    from voxgate.client.ws import read_wav_24k

    subprocess.run(["espeak-ng", "-v", voice, "-s", "165", "-w", str(path), text], check=True, capture_output=True)
    return read_wav_24k(str(path))


async def one(url: str, kind: str, pcm: bytes) -> dict:
    import openai

    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="sk-bench", max_retries=0)
    delegation = {"client": {"type": "client"},
                  "responses": {"type": "responses", "responses": {"model": "smollm2", "max_output_tokens": 60}},
                  "decisions": {"type": "decisions", "decisions": {"model": "smollm2", "questions": [
                      {"type": "predicate", "name": "factual", "instructions": "Is the caller asking for a fact?"}]}},
                  }[kind]
    marks: dict = {}
    async with client.live.connect() as conn:
        await conn.send({"type": "session.start", "session": {"model": "gpt-live-1", "delegation": delegation}})
        while (await conn.recv()).type != "session.started":
            pass

        samples = memoryview(pcm).cast("h")
        last = max(i for i in range(len(samples)) if abs(samples[i]) > 500)  # the end of speech, not of the file

        async def talk():
            step = 2400  # 50 ms, in real time
            for i in range(0, len(pcm), step):
                await conn.send({"type": "session.input_audio.append",
                                 "audio": base64.b64encode(pcm[i:i + step]).decode()})
                if i <= last * 2 < i + step:
                    marks["end"] = time.monotonic() - (i + step - last * 2) / 48000
                await asyncio.sleep(0.05)
            for _ in range(60):  # 3 s of silence after it
                await conn.send({"type": "session.input_audio.append", "audio": base64.b64encode(bytes(step)).decode()})
                await asyncio.sleep(0.05)

        sender = asyncio.ensure_future(talk())
        answered = False
        try:
            async def read():
                nonlocal answered
                while not answered:
                    e = await conn.recv()
                    now = time.monotonic()
                    if e.type == "session.delegation.created":
                        marks.setdefault("delegated", now)
                        if kind == "client":  # the app answers at once
                            await conn.send({"type": "session.commentary.append", "delegation_id": e.delegation.id,
                                             "content": "Paris is the capital of France."})
                            marks["app"] = now
                    elif e.type == "session.output_audio.delta":
                        marks.setdefault("ack", now)
                        if "answering" in marks and kind != "decisions":
                            marks["answer"] = now
                            answered = True
                    elif e.type == "session.output_transcript.delta" and "done" in marks:
                        marks.setdefault("answering", now)  # the answer's words: its audio is the next
                    elif e.type == "session.commentary.appended":
                        marks["done"] = now  # the commentary's audio is the next
                    elif e.type == "response.event" and e.event.get("type") == "response.completed":
                        marks["done"] = now
                    elif e.type == "decision.event":
                        marks["answer"] = now
                        answered = True
                    if kind == "decisions" and "ack" in marks and "answer" in marks:
                        answered = True
            await asyncio.wait_for(read(), 60)
        finally:
            sender.cancel()
    end = marks["end"]
    return {k: round((marks[k] - end) * 1000) for k in ("delegated", "ack", "answer") if k in marks}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--kinds", default="client,responses,decisions")
    args = ap.parse_args()

    from voxgate.agent.shell.embedded import smollm2_path
    from voxgate.lab.model_servers import llama_server
    from voxgate.lab.peers import TransceiverProcess
    from voxgate.wire.token import new_secret_line

    tmp = Path(tempfile.mkdtemp(prefix="voxgate-live-bench-"))
    secret = tmp / "secret"
    secret.write_text(new_secret_line(3) + "\n")
    llama, llama_url = llama_server(smollm2_path())
    tx = TransceiverProcess(secret, agent="voice", extra=("--api-key", "sk-bench", "--delegate",
                                                          f"openai:{llama_url}#smollm2", "--drain-timeout", "1"))
    speech = [_speech(tmp / f"q{i}.wav", q, VOICES[i % len(VOICES)]) for i, q in enumerate(QUESTIONS)]
    try:
        rows = []
        for kind in args.kinds.split(","):
            results = []
            for r in range(args.rounds):
                for pcm in speech:
                    try:
                        results.append(asyncio.run(one(tx.url, kind, pcm)))
                    except Exception as exc:  # a round that timed out is reported, not hidden
                        print(f"  {kind}: round failed: {exc!r}", file=sys.stderr)
                        results.append({})
            stats = {}
            for k in ("delegated", "ack", "answer"):
                xs = [x[k] for x in results if k in x]
                stats[k] = (statistics.median(xs), max(xs), len(xs)) if xs else None
            line = "  ".join(f"{k} {v[0]:.0f} ms (max {v[1]:.0f}, n={v[2]})" if v else f"{k} -" for k, v in
                             stats.items())
            print(f"{kind:10s} {line}   of {len(results)}")
            rows.append((kind, stats, len(results)))
        print("\n| delegation | delegated | first audio (acknowledgement) | answer | n |\n|---|---|---|---|---|")
        for kind, st, n in rows:
            cell = [f"{st[k][0]:.0f} ms (max {st[k][1]:.0f})" if st[k] else "-" for k in ("delegated", "ack", "answer")]
            print(f"| {kind} | {' | '.join(cell)} | {n} |")
    finally:
        tx.stop()
        llama.kill()
        llama.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
