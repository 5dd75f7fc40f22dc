"""What the benchmarks share: the source tree on the path, free ports, CPU time from /proc, the agent's servers.

Benchmarks run as scripts (``python bench/NAME.py``), so this directory is on ``sys.path`` and they
``import common`` first.
"""

from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(HERE, "..", "src")
if SRC not in sys.path:
    sys.path.insert(0, SRC)

from voxgate.lab.ports import free_port  # noqa: E402,F401  (free for UDP and TCP alike)


def cpu_seconds(pids) -> float:
    """utime+stime of the processes (their threads included), from /proc; a process that has exited counts 0."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total / tick


def serve_dir(directory: str = HERE):
    """A static HTTP server for ``directory`` on a free port, in a thread: (server, port). ``server.shutdown()``."""
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=directory, **kw)

        def log_message(self, *a):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


def start_agent(responder: str = "auto", asr: str = "auto", log: str | None = None, relay_workers: int = 1,
                tts: str = "piper", env: dict | None = None):
    """``voxgate relay`` and ``voxgate transceiver --agent voice`` (the embedded stack) on free loopback ports, as
    ``voxgate demo`` runs them: ``(processes, http url)``; terminate the processes when done. ``log``: the
    transceiver's log goes to this file, at INFO (each response's stage marks) or ``VOXGATE_BENCH_LOG_LEVEL``
    (DEBUG adds each pause's verdict)."""
    import json
    import subprocess

    from voxgate.wire.token import new_secret_line

    env = {**os.environ, **(env or {}), "PYTHONPATH": SRC, "VOXGATE_SECRET": new_secret_line()}
    relay, http = free_port(), free_port()
    procs = [subprocess.Popen([sys.executable, "-m", "voxgate", "--log-level", "WARNING", "relay", "--listen",
                               f"127.0.0.1:{relay}", "--workers", str(relay_workers)], stdout=subprocess.PIPE,
                              text=True, env=env)]
    json.loads(procs[-1].stdout.readline())
    level, err = (os.environ.get("VOXGATE_BENCH_LOG_LEVEL", "INFO"), open(log, "w")) if log else ("WARNING", None)
    procs.append(subprocess.Popen([sys.executable, "-m", "voxgate", "--log-level", level, "transceiver", "--http",
                                   f"127.0.0.1:{http}", "--media", f"127.0.0.1:{free_port()}", "--relay",
                                   f"127.0.0.1:{relay}", "--no-auth", "--calls-per-address", "0", "--agent", "voice", "--responder", responder,
                                   "--asr", asr, "--tts", tts, "--drain-timeout", "0"], stdout=subprocess.PIPE, stderr=err,
                                  text=True, env=env))
    json.loads(procs[-1].stdout.readline())
    return procs, f"http://127.0.0.1:{http}"


def pin(pid: int, cpus: str) -> None:
    """Every thread of ``pid`` (and the threads it makes later) onto ``cpus``."""
    import subprocess

    subprocess.run(["taskset", "-a", "-c", "-p", cpus, str(pid)], check=True, capture_output=True)


def models_elsewhere(tmp: str, cpus: str | None = None, asr: str = "whisper") -> tuple[list, dict, callable]:
    """The three models in processes of their own: the recognizer (``whisper``: faster-whisper-server with Whisper
    tiny.en; ``box``: another voxgate's /v1/audio/transcriptions, Moonshine), llama.cpp's server (SmolLM2) and
    another voxgate's /v1/audio/speech (Piper); or (``stub``) all three from ``voxgate.lab.stub_models``; pinned to ``cpus`` if given. Returns their pids, ``start_agent``'s
    arguments for a transceiver that uses them, and a function that stops them. Whisper pads every decode to a 30 s
    window: ~0.7 s of one of these cores per decode, where Moonshine by HTTP takes ~0.1 s."""
    from voxgate.agent.shell.embedded import smollm2_path
    from voxgate.lab.model_servers import llama_server, whisper_server
    from voxgate.lab.peers import TransceiverProcess
    from voxgate.wire.token import new_secret_line

    if asr == "stub":  # all three answered after fixed delays, no CPU (voxgate.lab.stub_models): a GPU box's part
        import subprocess

        from voxgate.lab.model_servers import wait_http

        port = free_port()
        stub = subprocess.Popen([sys.executable, "-m", "voxgate.lab.stub_models", "--port", str(port)],
                                env={**os.environ, "PYTHONPATH": SRC})
        wait_http(f"http://127.0.0.1:{port}/v1/models")
        if cpus:
            pin(stub.pid, cpus)
        url = f"http://127.0.0.1:{port}/v1"

        def stop_stub():
            stub.kill()
            stub.wait(10)

        return [stub.pid], dict(asr=f"openai:{url}#stub", responder=f"openai:{url}#stub", tts=f"openai:{url}#stub",
                                env={"OPENAI_API_KEY": "sk-stub"}), stop_stub
    secret = os.path.join(tmp, "secret")
    with open(secret, "w") as fh:
        fh.write(new_secret_line(1) + "\n")
    procs = []
    if asr == "whisper":
        whisper, asr_url = whisper_server()
        procs.append(whisper)
    llama, llama_url = llama_server(smollm2_path(), threads=1)
    procs.append(llama)
    box = TransceiverProcess(secret, agent="voice", extra=["--api-key", "sk-models", "--drain-timeout", "0"])
    if asr == "box":
        asr_url = box.url + "/v1"
    pids = [p.pid for p in procs] + [box.proc.pid]
    if cpus:
        for pid in pids:
            pin(pid, cpus)

    def stop():
        box.stop()
        for p in procs:
            p.kill()
            p.wait(10)

    return pids, dict(asr=f"openai:{asr_url}#whisper-1", responder=f"openai:{llama_url}#smollm2",
                      tts=f"openai:{box.url}/v1#tts-1", env={"OPENAI_API_KEY": "sk-models"}), stop
