"""Test peers and process helpers the tests and the benchmarks share: a real ``redis-server``, the relay, transceiver
and call as processes, raw ICE/DTLS/RTP peers, speech WAVs, a running ``voxgate demo``."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

from .ports import free_port
from ..wire import encap, stun

ICE_PWD = b"test-ice-password-0123456789"


class RedisServer:
    """A real redis-server on a free port, in a temp dir, no persistence."""

    def __init__(self, tmp_path, port=None):
        exe = shutil.which("redis-server")
        if not exe:
            raise RuntimeError("redis-server not installed (apt-get install redis-server)")
        self.port = port or free_port()
        os.makedirs(tmp_path, exist_ok=True)
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(tmp_path)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        self.url = f"redis://127.0.0.1:{self.port}/0"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(5)


class EchoTransceiver:
    """A transceiver-side test peer speaking the relay encapsulation.

    Answers STUN Binding requests like an ICE-lite agent (MESSAGE-INTEGRITY with ICE_PWD and the client's
    real address as XOR-MAPPED-ADDRESS, taken from the encapsulation header) and echoes every other payload,
    marking flows VERIFIED once it has seen a DTLS-class packet (as a transceiver would after DTLS).
    """

    def __init__(self, host="127.0.0.1", reply_size=None):
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.settimeout(0.1)
        self.addr = self.sock.getsockname()[:2]
        self.received: list[tuple[tuple, bytes]] = []
        self.verified: set = set()
        self.reply_size = reply_size
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while self.running:
            try:
                data, relay = self.sock.recvfrom(4096)
            except (socket.timeout, OSError):
                continue
            try:
                client, _, payload = encap.decapsulate(data)
            except encap.EncapError:
                continue
            self.received.append((client, payload))
            if stun.is_stun(payload):
                msg = stun.parse(payload)
                if msg.msg_type != stun.BINDING_REQUEST:
                    continue
                reply = stun.build(stun.BINDING_SUCCESS, msg.transaction_id,
                                   [stun.attr_xor_mapped_address(client, msg.transaction_id)],
                                   integrity_key=ICE_PWD)
            else:
                if 20 <= payload[0] < 64:
                    self.verified.add(client)
                reply = payload if self.reply_size is None else payload[:1] * self.reply_size
            self.sock.sendto(encap.encapsulate(client, reply, client in self.verified), relay)

    def count(self, cls=None) -> int:
        return sum(1 for _, p in self.received if cls is None or cls(p))

    def close(self):
        self.running = False
        self.thread.join(2)
        self.sock.close()


def binding_request(ufrag: str, client_ufrag="cli1", txid=None) -> bytes:
    txid = txid or os.urandom(12)
    return stun.build(stun.BINDING_REQUEST, txid,
                      [stun.attr_username(f"{ufrag}:{client_ufrag}"), stun.attr_priority(0x6E7F1EFF),
                       stun.attr_ice_controlling(12345), stun.attr_use_candidate()],
                      integrity_key=ICE_PWD)


DTLS = b"\x16\xfe\xfd" + b"d" * 60  # DTLS 1.2 handshake-shaped
RTP = b"\x80\x6f" + b"r" * 100


class Client:
    """A UDP client socket with a short timeout."""

    def __init__(self, relay: tuple[str, int]):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.5)
        self.relay = relay
        self.addr = self.sock.getsockname()

    def send(self, data: bytes):
        self.sock.sendto(data, self.relay)

    def recv(self, timeout=0.5) -> bytes | None:
        self.sock.settimeout(timeout)
        try:
            return self.sock.recvfrom(4096)[0]
        except socket.timeout:
            return None

    def exchange(self, data: bytes, timeout=0.5) -> bytes | None:
        self.send(data)
        return self.recv(timeout)

    def close(self):
        self.sock.close()


class VoxgateProcess:
    """A `voxgate` command as a real subprocess: started, its JSON ready line read, stopped with a signal."""

    def _start(self, cmd, env, what: str):
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, **(env or {})})
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{what} did not start: " + self.proc.stderr.read())
        self.ready = json.loads(line)

    def stop(self, sig=signal.SIGTERM, timeout=15) -> int:
        """Stop it (again: its exit code)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            if not self.proc.stderr.closed:
                self.stderr_text = self.proc.stderr.read()
                self.proc.stdout.close()
                self.proc.stderr.close()


class RelayProcess(VoxgateProcess):
    """`voxgate relay` as a real subprocess; waits for its ready line."""

    def __init__(self, port: int, secret_file, workers=1, redis_url=None, metrics_port=None, allow=(), env=None,
                 extra=()):
        self.port, self.metrics_port = port, metrics_port
        cmd = [sys.executable, "-m", "voxgate", "relay", "--listen", f"127.0.0.1:{port}", "--workers", str(workers),
               "--secret-file", str(secret_file)]
        if redis_url:
            cmd += ["--redis-url", redis_url]
        if metrics_port:
            cmd += ["--metrics", f"127.0.0.1:{metrics_port}"]
        for cidr in allow:
            cmd += ["--allow", cidr]
        cmd += list(extra)
        self._start(cmd, env, "relay")
        assert self.ready["event"] == "relay_ready"

    @property
    def addr(self):
        return ("127.0.0.1", self.port)

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            return r.read().decode()

    def health(self) -> tuple[int, dict]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/healthz", timeout=5) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def kill(self, wait_workers=True):
        """SIGKILL the supervisor; its workers die with it (PR_SET_PDEATHSIG). ``wait_workers``: until they are
        reaped too (which may take a while after they are dead, so a test timing a failover does not wait)."""
        self.proc.kill()
        self.proc.wait(5)
        if wait_workers:
            for w in self.ready["workers"]:
                _wait_gone(w["pid"])



def _wait_gone(pid: int, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.02)
    raise AssertionError(f"process {pid} still alive")


def metric_value(text: str, name: str, **labels) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        metric, _, lab = head.partition("{")
        if metric != name:
            continue
        if all(f'{k}="{v}"' in lab for k, v in labels.items()):
            total += float(value)
    return total


def wait_for(pred, timeout=5.0, interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    return pred()


class TransceiverProcess(VoxgateProcess):
    """`voxgate transceiver` as a real subprocess; waits for its ready line. With ``redis_url`` it joins the fleet."""

    def __init__(self, secret_file, relay_port=None, agent="echo", extra=(), env=None, redis_url=None, id=None,
                 region=None):
        self.http_port, self.media_port = free_port(kind=socket.SOCK_STREAM), free_port()
        self.secret_file = secret_file  # what another process of the same cluster (an edge in front of it) needs
        cmd = [sys.executable, "-m", "voxgate", "transceiver", "--http", f"127.0.0.1:{self.http_port}",
               "--media", f"127.0.0.1:{self.media_port}", "--secret-file", str(secret_file), "--agent", agent,
               *extra]
        if relay_port:
            cmd += ["--relay", f"127.0.0.1:{relay_port}"]
        if redis_url:
            cmd += ["--redis-url", redis_url]
        if id:
            cmd += ["--id", id]
        if region:
            cmd += ["--region", region]
        extra = list(extra)
        self.api_key = extra[extra.index("--api-key") + 1] if "--api-key" in extra else None
        if self.api_key is None:
            cmd.append("--no-auth")
        self._start(cmd, env, "transceiver")
        self.url = f"http://127.0.0.1:{self.http_port}"

    def get(self, path, key=None):
        """GET ``path`` with ``key`` (default: the transceiver's server key, if it has one)."""
        key = key if key is not None else self.api_key
        req = urllib.request.Request(self.url + path, headers={"Authorization": f"Bearer {key}"} if key else {})
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def health(self) -> dict:
        return json.loads(self.get("/healthz")[1])

    def post(self, path, body=b"", headers=None):
        req = urllib.request.Request(self.url + path, data=body, headers=headers or {}, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()



def aiortc_offer() -> str:
    """A real aiortc offer (audio and the events data channel), as a client would POST it."""
    import asyncio

    from aiortc import RTCPeerConnection

    async def make():
        pc = RTCPeerConnection()
        pc.addTransceiver("audio")
        pc.createDataChannel("oai-events")
        await pc.setLocalDescription(await pc.createOffer())
        sdp = pc.localDescription.sdp
        await pc.close()
        return sdp

    return asyncio.run(make())


def fleet(redis_url) -> list[dict]:
    """`voxgate fleet` in its own process: the registry as operators see it."""
    out = subprocess.run([sys.executable, "-m", "voxgate", "fleet", "--redis-url", redis_url, "--compact"],
                         capture_output=True, text=True, timeout=30, check=True)
    return json.loads(out.stdout)


class CallProcess:
    """`voxgate call` running in the background (so something can be killed mid-call); ``result()`` waits."""

    def __init__(self, url, input_wav, output_wav, *extra):
        self.proc = subprocess.Popen([sys.executable, "-m", "voxgate", "call", "--url", url, "--input", str(input_wav),
                                      "--output", str(output_wav), *extra], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)

    def result(self, timeout=90) -> dict:
        out, err = self.proc.communicate(timeout=timeout)
        if self.proc.returncode != 0:
            raise AssertionError(f"voxgate call failed: {err[-2000:]}")
        return json.loads(out.strip().splitlines()[-1])


def assert_audio_both_ways(result: dict, max_gap_ms=1000, min_ratio=0.8):
    """A call that kept its audio in both directions: the longest silence heard by the client and by the server
    under ``max_gap_ms``, and most of what was sent came back (the echo agent returns every frame)."""
    assert result["packets_sent"] > 100, result
    assert result["packets_received"] >= min_ratio * result["packets_sent"], result
    assert result["max_gap_in_ms"] < max_gap_ms, result  # what the client heard (transceiver -> client)
    assert result["max_gap_out_ms"] is not None and result["max_gap_out_ms"] < max_gap_ms, result  # client -> it


def long_speech_wav(path, seconds: float) -> str:
    """Real speech (espeak-ng) repeated to ``seconds``: a call that talks the whole time."""
    import wave

    one = speech_wav(str(path) + ".one.wav", "Testing the fleet. One, two, three, four. The audio keeps flowing.")
    with wave.open(one, "rb") as w:
        params, frames = w.getparams(), w.readframes(w.getnframes())
    need = int(seconds * params.framerate) * params.sampwidth
    with wave.open(str(path), "wb") as w:
        w.setparams(params)
        w.writeframes((frames * (need // len(frames) + 1))[:need])
    return str(path)


def launch_chromium(playwright, wav):
    from voxgate.lab.chromium import launch

    return launch(playwright, str(wav))


def run_call(url, input_wav, output_wav, *extra, timeout=60) -> dict:
    """`voxgate call` in its own process; returns its JSON line."""
    out = subprocess.run([sys.executable, "-m", "voxgate", "call", "--url", url, "--input", str(input_wav),
                          "--output", str(output_wav), *extra], capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise AssertionError(f"voxgate call failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def speech_wav(path, text="The quick brown fox jumps over the lazy dog.") -> str:
    """A real spoken sentence, synthesized by espeak-ng (Debian package)."""
    exe = shutil.which("espeak-ng")
    if not exe:
        raise RuntimeError("espeak-ng not installed (apt-get install espeak-ng)")
    subprocess.run([exe, "-w", str(path), "-s", "160", text], check=True, capture_output=True)
    return str(path)


def piper_wav(path, pieces) -> tuple[str, float]:
    """A WAV of ``pieces``: text spoken by the embedded Piper voice, with its noise off so the audio is the same
    every run (docs/testing.md), or a float, seconds of silence. Returns the path and the length in seconds."""
    import wave

    from voxgate.agent.models.piper import PiperTts

    tts = PiperTts(varied=False)
    pcm = b"".join(b"\0\0" * int(p * tts.rate) if isinstance(p, float) else b"".join(tts.synthesize(p))
                   for p in pieces)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(tts.rate)
        w.writeframes(pcm)
    return str(path), len(pcm) / 2 / tts.rate


def wav_rms(path, start=0.0, end=None) -> float:
    import array
    import math
    import wave

    with wave.open(str(path), "rb") as w:
        rate, n = w.getframerate(), w.getnframes()
        w.setpos(int(start * rate))
        count = (int(end * rate) if end else n) - int(start * rate)
        raw = w.readframes(max(0, count))
        width, channels = w.getsampwidth(), w.getnchannels()
    assert width == 2
    samples = array.array("h", raw)[::channels]
    return math.sqrt(sum(s * s for s in samples) / len(samples)) if samples else 0.0


def wav_seconds(path) -> float:
    import wave

    with wave.open(str(path), "rb") as w:
        return w.getnframes() / w.getframerate()


def run_async(coro):
    """Run a coroutine on a loop of its own, in a thread: Playwright's sync API (a module-scoped fixture) keeps a
    loop running on the test's thread, where asyncio.run() refuses to start."""
    import asyncio
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


@contextlib.contextmanager
def running_demo(*extra: str, timeout: float = 180, env: dict | None = None):
    """`voxgate demo` on free ports with ``extra`` options (and ``env`` added to the environment); yields its URL and
    start-up output, stops it after."""
    port, media, relay = free_port(), free_port(), free_port()
    proc = subprocess.Popen([sys.executable, "-m", "voxgate", "demo", "--port", str(port), "--media-port", str(media),
                             "--relay-port", str(relay), *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, **(env or {})})
    lines = []
    deadline = time.monotonic() + timeout
    url = None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith('{"event": "demo_ready"'):
            url = json.loads(line)["url"]
            break
    if url is None:
        proc.kill()
        raise RuntimeError("demo did not start:\n" + "".join(lines) + proc.stderr.read())
    try:
        yield url, "".join(lines)
    finally:
        proc.send_signal(2)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


def chromium_asks(playwright, url: str, api_key: str | None, wav: str, timeout_s: float = 30.0) -> tuple[str, float]:
    """Debian's Chromium calls ``url`` (its ``/`` page) with ``wav`` as its microphone (padded with a pause, since
    Chromium loops it) and waits for the agent's answer: ``(what the answer's transcript said, the audio energy
    the track carried)``."""
    import subprocess

    padded = str(wav) + ".padded.wav"
    subprocess.run(["sox", str(wav), padded, "pad", "0.3", "4"], check=True)
    browser = launch_chromium(playwright, padded)
    try:
        page = browser.new_page()
        page.goto(url + "/")
        page.evaluate(f"start({{apiKey: {json.dumps(api_key)}}})")
        page.wait_for_function("window.voxgate.state === 'connected'", timeout=15000)
        try:
            page.wait_for_function("window.voxgate.events.some(e => e.type === "
                                   "'response.output_audio_transcript.done')", timeout=timeout_s * 1000)
        except Exception:
            raise AssertionError(page.evaluate("window.voxgate.events.map(e => e.type)")) from None
        said = page.evaluate("window.voxgate.events.filter(e => e.type === 'response.output_audio_transcript.done')"
                             ".map(e => e.transcript).join(' ')")
        deadline, energy = time.monotonic() + 10, 0
        while time.monotonic() < deadline and not energy:
            energy = page.evaluate("inboundAudio().then(s => s ? (s.totalAudioEnergy || 0) : 0)")
            time.sleep(0.25)
        return said, energy
    finally:
        browser.close()
