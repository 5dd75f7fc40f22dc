"""The phone path: what the recognizer makes of speech after a G.711/G.722 round trip, and the turn a caller waits.

``--wer``: every utterance of bench/asr.py's ``--plain`` set (nine voices the agent never uses, clean), heard by
Moonshine three ways, through the code a phone call runs (``sip.media``: RTP packets of 20 ms, the codec's decoder,
the resampler to the agent's 16 kHz): as the WebRTC path gets it (16 kHz PCM, the baseline), after μ-law at 8 kHz,
and after G.722.

``--turns``: ``voxgate demo --sip`` (the embedded stack as it ships) called by a scripted phone over real UDP on
loopback: INVITE/200/ACK, then each question as μ-law RTP paced at 20 ms with silence packets around it (a phone
never stops sending), in voices the agent never uses. The turn is the end of the question's speech (known from the
audio) to the first reply RTP packet that carries sound, as the phone receives it.

    python bench/phone.py --wer [--limit N]
    python bench/phone.py --turns [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import common  # noqa: F401  (first: it puts src/ on the path)
from asr import PLAIN, hear, plain_clips, resample, speak, voice_name

from voxgate.lab.wer import word_errors
from voxgate.sip import message
from voxgate.sip.media import PhoneIn, PhoneOut
from voxgate.sip.sdp import Codec

QUESTIONS = ["What is the capital of France?", "How many days are in a week?", "Can you tell me a joke?",
             "What color is the sky?", "Who wrote Romeo and Juliet?", "What is two plus two?"]
VOICES = [("espeak-ng", "en-us+f4", 150), ("flite", "slt", 0), ("espeak-ng", "en-gb+m2", 160), ("flite", "rms", 0)]


def through(codec: Codec, audio16k: np.ndarray) -> np.ndarray:
    """16 kHz speech sent by a phone with ``codec`` and received as the agent hears it (sip.media both ways)."""
    pcm = (np.clip(audio16k, -1, 1) * 32767).astype(np.int16).tobytes()
    out, inp = PhoneOut(16000, codec, 1), PhoneIn(16000, codec, None)
    out.write(pcm + b"\0" * 3200)
    out.flush()
    frames, now = [], 0.0
    while out.frames:
        data = out.next_packet(now)
        if data:
            frames += inp.receive(data, ("192.0.2.1", 4000), now)[0]
        now += 0.02
    return np.frombuffer(b"".join(frames), np.int16).astype(np.float32) / 32768


def bench_wer(limit: int | None) -> dict:
    from voxgate.agent.models.moonshine import MoonshineAsr

    asr = MoonshineAsr()
    tmp = Path(tempfile.mkdtemp(prefix="voxgate-phone-"))
    ways = {"16 kHz PCM (WebRTC)": None, "PCMU 8 kHz": Codec(0, "PCMU", 8000), "G.722": Codec(9, "G722", 8000)}
    errors = {k: 0 for k in ways}
    words = 0
    clips = list(plain_clips(limit, tmp))
    hear(asr, clips[0][4])
    for text, voice, _, _, audio in clips:
        for name, codec in ways.items():
            hyp, _ = hear(asr, audio if codec is None else through(codec, audio))
            errors[name] += word_errors(text, hyp)[0]
        words += word_errors(text, text)[1]
    result = {name: round(e / words, 3) for name, e in errors.items()}
    print(f"{len(clips)} clips in {', '.join(voice_name(v) for v in PLAIN)}")
    for name, wer in result.items():
        print(f"  Moonshine WER {name:22s} {wer * 100:5.1f}%")
    return {"clips": len(clips), "wer": result}


# ----------------------------------------------------------------------------- the scripted phone
class Phone(asyncio.DatagramProtocol):
    def __init__(self):
        self.queue: asyncio.Queue = asyncio.Queue()

    def datagram_received(self, data, addr):
        self.queue.put_nowait((time.monotonic(), data, addr))


async def call_once(sip_port: int, question: np.ndarray, speech_end_s: float, listen_s: float = 6.0) -> dict:
    loop = asyncio.get_running_loop()
    sig_t, sig = await loop.create_datagram_endpoint(Phone, local_addr=("127.0.0.1", 0))
    rtp_t, rtp = await loop.create_datagram_endpoint(Phone, local_addr=("127.0.0.1", 0))
    lport, rport = sig_t.get_extra_info("sockname")[1], rtp_t.get_extra_info("sockname")[1]
    offer = ("v=0\r\no=phone 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
             f"m=audio {rport} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\na=sendrecv\r\n").encode()
    call_id, tag = f"bench-{time.time_ns()}", message.tag()
    frm, to = f"<sip:bench@127.0.0.1:{lport}>;tag={tag}", f"<sip:agent@127.0.0.1:{sip_port}>"
    via = f"SIP/2.0/UDP 127.0.0.1:{lport};branch={message.branch()};rport"
    t0 = time.monotonic()
    sig_t.sendto(message.request("INVITE", f"sip:agent@127.0.0.1:{sip_port}", via=via, from_=frm, to=to,
                                 call_id=call_id, cseq=1, body=offer, content_type="application/sdp",
                                 headers={"Contact": f"<sip:bench@127.0.0.1:{lport}>"}), ("127.0.0.1", sip_port))
    ok = None
    while ok is None:
        _, data, _ = await asyncio.wait_for(sig.queue.get(), 10)
        msg = message.parse(data)
        if getattr(msg, "code", 0) >= 200:
            ok = msg
    answered_ms = (time.monotonic() - t0) * 1000
    assert ok.code == 200, ok.code
    from voxgate.sip import sdp

    remote = sdp.parse(ok.body)
    to_tagged = ok.headers["To"]
    sig_t.sendto(message.request("ACK", f"sip:agent@127.0.0.1:{sip_port}", via=via.replace("branch=", "branch=a"),
                                 from_=frm, to=to_tagged, call_id=call_id, cseq=1), ("127.0.0.1", sip_port))
    out = PhoneOut(8000, Codec(0, "PCMU", 8000), 42)
    pcm = (np.clip(resample(question, 16000, 8000), -1, 1) * 32767).astype(np.int16).tobytes()
    lead = 0.5
    out.write(b"\0" * int(8000 * 2 * lead) + pcm + b"\0" * int(8000 * 2 * listen_s))
    start = time.monotonic()
    end_of_speech = start + lead + speech_end_s
    decoder = PhoneIn(8000, remote.codecs[0], None)
    first_sound = None
    deadline = start + lead + len(pcm) / 16000 + listen_s
    while time.monotonic() < deadline:
        now = time.monotonic()
        while (data := out.next_packet(now)) is not None:
            rtp_t.sendto(data, (remote.host, remote.port))
        try:
            when, data, addr = await asyncio.wait_for(rtp.queue.get(), 0.01)
        except asyncio.TimeoutError:
            continue
        frames, _ = decoder.receive(data, addr, when)
        if first_sound is None and when > end_of_speech and frames:
            level = np.abs(np.frombuffer(b"".join(frames), np.int16)).max()
            if level > 800:
                first_sound = when
    bye = message.request("BYE", f"sip:voxgate@127.0.0.1:{sip_port}", via=via.replace("branch=", "branch=b"),
                          from_=frm, to=to_tagged, call_id=call_id, cseq=2)
    sig_t.sendto(bye, ("127.0.0.1", sip_port))
    await asyncio.sleep(0.2)
    sig_t.close()
    rtp_t.close()
    return {"answered_ms": round(answered_ms, 1),
            "turn_ms": None if first_sound is None else round((first_sound - end_of_speech) * 1000)}


def speech_end(audio: np.ndarray, rate=16000) -> float:
    """Where the last speech of the clip ends (20 ms frames above a level), in seconds."""
    n = rate // 50
    levels = [np.sqrt(np.mean(audio[i:i + n] ** 2)) for i in range(0, len(audio) - n, n)]
    loud = [i for i, v in enumerate(levels) if v > 0.01]
    return (loud[-1] + 1) * n / rate if loud else len(audio) / rate


def bench_turns(rounds: int) -> dict:
    from voxgate.lab.peers import free_port, running_demo

    tmp = Path(tempfile.mkdtemp(prefix="voxgate-phone-"))
    sip_port = free_port()
    results = []
    with running_demo("--sip", f"127.0.0.1:{sip_port}") as (url, _):
        for r in range(rounds):
            for i, q in enumerate(QUESTIONS):
                engine, voice, speed = VOICES[(i + r) % len(VOICES)]
                audio = speak(q, engine, voice, speed, tmp / "q.wav")
                got = asyncio.run(call_once(sip_port, audio, speech_end(audio)))
                got.update(question=q, voice=f"{engine} {voice}")
                print(f"  {got['turn_ms']!s:>6} ms  answered in {got['answered_ms']:5.1f} ms  {voice:10s} {q}")
                results.append(got)
    turns = sorted(r["turn_ms"] for r in results if r["turn_ms"] is not None)
    summary = {"calls": len(results), "answered": len(turns),
               "turn_median_ms": statistics.median(turns) if turns else None,
               "turn_p90_ms": turns[int(0.9 * (len(turns) - 1))] if turns else None,
               "invite_to_200_median_ms": statistics.median(r["answered_ms"] for r in results)}
    print(json.dumps(summary))
    return {"summary": summary, "calls": results}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--wer", action="store_true")
    ap.add_argument("--turns", action="store_true")
    ap.add_argument("--limit", type=int)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--json")
    args = ap.parse_args()
    if not (args.wer or args.turns):
        ap.error("say --wer, --turns or both")
    out = {}
    if args.wer:
        out["wer"] = bench_wer(args.limit)
    if args.turns:
        out["turns"] = bench_turns(args.rounds)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
