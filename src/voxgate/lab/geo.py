"""`voxgate lab geo`: two regions and their clients on one machine, distance simulated, the steering measured.

The world (network namespaces this command creates and always removes; addresses from the documentation ranges)::

    cli-a 192.0.2.1 ──near──▶ reg-a 198.51.100.1 ◀──backbone──▶ reg-b 203.0.113.1 ◀──near── cli-b 192.0.2.2
        └────────far────────────────────────────────────────────────▶┘   ◀──far── cli-b ──▶ reg-a
                              reg-a, reg-b ──(no delay)──▶ core 192.0.2.254 (Redis)

Each region runs a real ``voxgate relay`` (public :3478) and ``voxgate transceiver`` (signaling :8080, media
:40000) with a region map; links are TUN pairs with a delaying forwarder (``delay.py``). Measured:

- steered: a ``voxgate call`` from cli-a to its region's signaling URL (placed in region a by its address);
- forced_far: the same call with the trusted region header set to b (placed in region b, through b's relay);
  for both, setup (POST → DTLS connected) and the media round trip (data-channel pings through the relay);
- failover: headless Chromium in cli-a calls region a; its relay is SIGKILLed mid-call; the longest audio stall
  both ways and whether the call lived on, on its transceiver, through region b's relay (the answer's backup).

aiortc nominates the first pair that answers, not the best one, so the ``voxgate call``s keep only the answer's
primary candidates (``--primary-only``): otherwise the forced call would quietly use region a's backup relay.
Chromium ranks pairs by priority and gets the whole answer.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import wave
from dataclasses import asdict, dataclass
from pathlib import Path

from .delay import DelayLine, TunLink, open_tun
from .netns import LabUnavailable, Namespaces, check_available, entered, remove_orphans

ADDR = {"core": "192.0.2.254", "cli-a": "192.0.2.1", "cli-b": "192.0.2.2", "reg-a": "198.51.100.1",
        "reg-b": "203.0.113.1"}
HTTP, MEDIA, RELAY = 8080, 40000, 3478


@dataclass
class GeoConfig:
    near_ms: float = 5.0  # client <-> the relay (and signaling) of its own region, one way
    far_ms: float = 70.0  # client <-> the other region
    backbone_ms: float = 30.0  # region <-> region (relay -> transceiver across regions, placement proxying)
    jitter_ms: float = 0.0
    loss: float = 0.0
    rounds: int = 2  # steered / forced-far call pairs
    failover: bool = True


class _Links:
    """The delayed links, served by an asyncio loop on a thread of this process."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.links: list[TunLink] = []

    def add(self, link: TunLink):
        self.links.append(link)
        asyncio.run_coroutine_threadsafe(self._start(link), self.loop).result(5)

    @staticmethod
    async def _start(link):
        link.start()

    def close(self):
        async def stop():
            for link in self.links:
                link.stop()

        try:
            asyncio.run_coroutine_threadsafe(stop(), self.loop).result(5)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)


def _tone_wav(path: Path, seconds: float):
    """Something to say: a 440/660 Hz warble with pauses (no speech engine needed)."""
    rate = 48000
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(rate)
        frames = bytearray()
        for k in range(int(seconds * rate)):
            t = k / rate
            f = 440 if int(t * 2) % 2 else 660
            frames += struct.pack("<h", int(6000 * math.sin(2 * math.pi * f * t)) if (t % 1.0) < 0.7 else 0)
        w.writeframes(bytes(frames))


class GeoLab:
    def __init__(self, cfg: GeoConfig):
        self.cfg = cfg
        self.tmp = Path(tempfile.mkdtemp(prefix="voxgate-lab-"))
        self.ns = Namespaces(f"vxlab{os.getpid()}")
        self.links = None
        self.procs: dict[str, subprocess.Popen] = {}

    # ------------------------------------------------------------- the world
    def build(self):
        for short, addr in ADDR.items():
            self.ns.add(short, addr)
        self.links = _Links()
        c = self.cfg
        near, far, bb = c.near_ms / 1000, c.far_ms / 1000, c.backbone_ms / 1000
        wiring = [("cli-a", "reg-a", near), ("cli-a", "reg-b", far), ("cli-b", "reg-b", near), ("cli-b", "reg-a", far),
                  ("reg-a", "reg-b", bb), ("reg-a", "core", 0.0), ("reg-b", "core", 0.0)]
        fds = {}  # devices first: a client's address goes on its first link (browsers skip loopback devices)
        for x, y, delay in wiring:
            with entered(self.ns.names[x]):
                fds[(x, y)] = open_tun(f"to-{y}")
            with entered(self.ns.names[y]):
                fds[(y, x)] = open_tun(f"to-{x}")
        for short in ADDR:
            first = next((f"to-{y}" for x, y, _ in wiring if x == short), None)
            self.ns.address(short, first if short.startswith("cli") else "lo")
        for x, y, delay in wiring:
            self.ns.route(x, f"to-{y}", y)
            self.ns.route(y, f"to-{x}", x)
            jitter = c.jitter_ms / 1000 if delay else 0.0
            loss = c.loss if delay else 0.0
            self.links.add(TunLink(fds[(x, y)], fds[(y, x)], DelayLine(delay, jitter, loss),
                                   DelayLine(delay, jitter, loss)))

    def _start(self, key: str, where: str, args: list[str], ready: bool = True) -> dict | None:
        proc = subprocess.Popen([*self.ns.exec_args(where), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True,
                                env={**os.environ, "VOXGATE_LOG_LEVEL": "WARNING"})
        self.procs[key] = proc
        if not ready:
            return None
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{key} did not start: {proc.stderr.read()[-2000:]}")
        return json.loads(line)

    def start_services(self):
        redis = shutil.which("redis-server")
        if not redis:
            raise LabUnavailable("the lab needs redis-server (apt-get install redis-server)")
        self._start("redis", "core", [redis, "--bind", ADDR["core"], "--port", "6379", "--save", "", "--protected-mode", "no",
                                      "--appendonly", "no", "--dir", str(self.tmp)], ready=False)
        from ..wire.token import new_secret_line

        (self.tmp / "secret").write_text(new_secret_line(1) + "\n")
        region_map = {
            "default_region": "a",
            "regions": {"a": {"relays": [f"{ADDR['reg-a']}:{RELAY}"], "nearest": ["b"]},
                        "b": {"relays": [f"{ADDR['reg-b']}:{RELAY}"], "nearest": ["a"]}},
            "cidrs": {f"{ADDR['cli-a']}/32": "a", f"{ADDR['cli-b']}/32": "b"},
            # the lab's clients stand in for a CDN that sets the region header (to force a call elsewhere)
            "header": {"name": "X-Voxgate-Region", "trusted_proxies": ["192.0.2.0/24"]},
        }
        (self.tmp / "regions.json").write_text(json.dumps(region_map, indent=1))
        redis_url = f"redis://{ADDR['core']}:6379/0"
        self._wait_redis()
        py = [sys.executable, "-m", "voxgate"]
        for r in ("a", "b"):
            host = ADDR[f"reg-{r}"]
            self._start(f"relay-{r}", f"reg-{r}", [*py, "relay", "--listen", f"{host}:{RELAY}", "--workers", "1",
                                                    "--secret-file", str(self.tmp / "secret"), "--redis-url", redis_url,
                                                    "--internal-host", host])
            self._start(f"tx-{r}", f"reg-{r}", [*py, "transceiver", "--http", f"{host}:{HTTP}", "--media",
                                                 f"{host}:{MEDIA}", "--secret-file", str(self.tmp / "secret"),
                                                 "--agent", "echo", "--no-auth", "--redis-url", redis_url,
                                                 "--region", r, "--id", f"t{r}", "--region-map",
                                                 str(self.tmp / "regions.json")])

    def _wait_redis(self):
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            out = subprocess.run([*self.ns.exec_args("reg-a"), "redis-cli", "-h", ADDR["core"], "ping"],
                                 capture_output=True, text=True)
            if out.stdout.strip() == "PONG":
                return
            time.sleep(0.1)
        raise RuntimeError("redis did not come up in the core namespace")

    # ------------------------------------------------------------- measurements
    def call(self, where: str, url: str, *extra: str) -> dict:
        wav = self.tmp / "say.wav"
        if not wav.exists():
            _tone_wav(wav, 6.0)
        out = subprocess.run([*self.ns.exec_args(where), sys.executable, "-m", "voxgate", "call", "--url", url,
                              "--input", str(wav), "--output", str(self.tmp / "heard.wav"), "--duration", "4",
                              "--ping", "15", "--primary-only", *extra], capture_output=True, text=True, timeout=90)
        if out.returncode != 0:
            raise RuntimeError(f"voxgate call failed: {out.stderr[-2000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])

    def steering(self) -> dict:
        url = f"http://{ADDR['reg-a']}:{HTTP}"
        runs = {"steered": [], "forced_far": []}
        for _ in range(self.cfg.rounds):
            runs["steered"].append(self.call("cli-a", url))
            runs["forced_far"].append(self.call("cli-a", url, "--header", "X-Voxgate-Region:b"))
        out = {}
        for kind, results in runs.items():
            out[kind] = {
                "setup_ms": round(statistics.median(r["setup"]["dtls_connected_ms"] for r in results), 1),
                "rtt_ms": round(statistics.median(r["rtt_ms"] for r in results), 1),
                "answer_ms": round(statistics.median(r["setup"]["answer_ms"] for r in results), 1),
                "region": results[0]["region"], "transceiver": results[0]["holder"],
                "route": results[0]["server"].get("route"),
            }
        return out

    def failover(self) -> dict:
        try:
            from playwright.sync_api import sync_playwright
        except ImportError:
            return {"skipped": "playwright is not installed (pip install playwright)"}
        from .chromium import CHROMIUM, in_namespace, launch, longest_stall

        if not os.path.exists(CHROMIUM):
            return {"skipped": "Debian's chromium is not installed (apt-get install chromium)"}
        wrapper = in_namespace(self.tmp / "chromium-in-cli-a", self.ns.exec_args("cli-a"))  # the client's side
        wav = self.tmp / "say.wav"
        if not wav.exists():
            _tone_wav(wav, 6.0)
        origin = f"http://{ADDR['reg-a']}:{HTTP}"
        with sync_playwright() as p:
            browser = launch(p, str(wav), f"--unsafely-treat-insecure-origin-as-secure={origin}",
                             executable=str(wrapper))
            try:
                page = browser.new_page()
                page.goto(origin + "/")
                page.evaluate("start({})")
                page.wait_for_function("window.voxgate.state === 'connected'", timeout=20000)
                call_id = page.evaluate("window.voxgate.callId")
                info = "fetch('/v1/realtime/calls/' + window.voxgate.callId).then(r => r.json())"
                before = page.evaluate(info)
                samples = []

                def sample(seconds):
                    end = time.monotonic() + seconds
                    while time.monotonic() < end:
                        s = page.evaluate("inboundAudio().then(s => s ? s.packetsReceived : 0)")
                        samples.append((time.monotonic(), s))
                        time.sleep(0.05)

                sample(2.0)
                killed = time.monotonic()
                os.killpg(self.procs["relay-a"].pid, signal.SIGKILL)  # the client's relay, all its processes
                sample(15.0)
                after = page.evaluate(info)
                state = page.evaluate("window.voxgate.state")
                page.evaluate("hangup()")
            finally:
                browser.close()
        stall = longest_stall(samples)
        resumed = samples[-1][1] > next(n for t, n in samples if t >= killed)
        gap_in = round(stall * 1000, 1)
        gap_out = after.get("max_audio_in_gap_ms")
        return {"gap_ms": max(gap_in, gap_out or 0), "gap_in_ms": gap_in, "gap_out_ms": gap_out,
                "survived": bool(resumed and state == "connected" and after.get("id") == call_id
                                 and after.get("state") == "connected"),
                "transceiver": call_id.split("_")[1], "route_before": before.get("route"),
                "route_after": after.get("route")}

    def close(self):
        for proc in self.procs.values():
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for proc in self.procs.values():
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
            for stream in (proc.stdout, proc.stderr):
                if stream:
                    stream.close()
        if self.links is not None:
            self.links.close()
        self.ns.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def run(cfg: GeoConfig, log=print) -> dict:
    check_available()
    remove_orphans()
    lab = GeoLab(cfg)

    def interrupted(*_):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, interrupted)
    try:
        log("building the world (namespaces, delayed links)…")
        lab.build()
        log("starting redis, two relays, two transceivers…")
        lab.start_services()
        log("steered and forced-far calls…")
        result = {"config": asdict(cfg), **lab.steering()}
        if cfg.failover:
            log("failover: Chromium in region a, its relay killed mid-call…")
            result["failover"] = lab.failover()
        return result
    finally:
        lab.close()
        signal.signal(signal.SIGTERM, old)


def table(r: dict) -> str:
    c = r["config"]
    lines = [f"voxgate lab geo: near {c['near_ms']} ms, far {c['far_ms']} ms, backbone {c['backbone_ms']} ms "
             f"(one way), jitter {c['jitter_ms']} ms, loss {c['loss']}",
             f"{'call':<12} {'region':<7} {'setup (POST→DTLS)':>18} {'media RTT':>10}"]
    for kind in ("steered", "forced_far"):
        k = r[kind]
        lines.append(f"{kind:<12} {k['region']:<7} {k['setup_ms']:>15.1f} ms {k['rtt_ms']:>7.1f} ms")
    lines.append(f"steered wins by {r['forced_far']['setup_ms'] - r['steered']['setup_ms']:.1f} ms of setup and "
                 f"{r['forced_far']['rtt_ms'] - r['steered']['rtt_ms']:.1f} ms of round trip "
                 f"(configured RTT difference {2 * (c['far_ms'] - c['near_ms']):.0f} ms)")
    f = r.get("failover")
    if f and "skipped" not in f:
        lines.append(f"failover: relay killed mid-call: gap {f['gap_ms']:.0f} ms (in {f['gap_in_ms']:.0f}, out "
                     f"{f['gap_out_ms']} ms), survived on its transceiver: {f['survived']}")
    elif f:
        lines.append(f"failover: skipped ({f['skipped']})")
    return "\n".join(lines)


def main(args) -> int:
    cfg = GeoConfig(near_ms=args.near_ms, far_ms=args.far_ms, backbone_ms=args.backbone_ms, jitter_ms=args.jitter_ms,
                    loss=args.loss, rounds=args.rounds, failover=not args.no_failover)
    try:
        result = run(cfg, log=(lambda *a: None) if args.json else (lambda m: print(m, file=sys.stderr)))
    except LabUnavailable as exc:
        print(f"voxgate lab geo: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result) if args.json else table(result))
    return 0
