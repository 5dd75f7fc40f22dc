"""`voxgate lab firewall`: a client on a network that drops UDP reaches the agent over ICE-TCP through the relay.

Two network namespaces this command makes and removes, joined by a veth pair::

    cli 192.0.2.30 (iptables: every UDP packet in or out dropped)  ══veth══  srv 198.51.100.30 (voxgate demo)

``voxgate demo --host 198.51.100.30`` runs in ``srv`` (relay on UDP and TCP 3478, transceiver, the embedded agent).
Headless Chromium runs in ``cli`` (a wrapper script enters the namespace), opens the demo page, speaks a question
(espeak-ng) and waits for the transcript, the reply and its audio; the page reports which candidate pair ICE
selected. The calls:

1. UDP dropped: the call must go over TCP to the relay's passive candidate;
2. UDP open: it must pick UDP;
3. only TLS to 443 (and the signaling port) let out: coturn runs on 443 in ``srv``, the demo hands out credentials
   for it, and the call must go through it (a ``relay`` candidate over ``tls``);
4. a TCP call to the demo with ``--agent echo`` (a steady tone comes back) while the relay's TCP front is killed,
   then while the whole relay is killed with a sibling relay on the same port: the call must go on.

Reported for each: the transport, the setup marks (answer, ICE, DTLS) and the turn, or the gaps in audio.

The aiortc client cannot take part: aioice gathers and checks UDP candidates only (its TCP support is for TURN
servers), so ``voxgate call`` has no ICE-TCP.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .netns import LabUnavailable, Namespaces, check_available, ip

SRV, CLI = "198.51.100.30", "192.0.2.30"
HTTP, RELAY = 8080, 3478


class FirewallLab:
    def __init__(self):
        self.tmp = Path(tempfile.mkdtemp(prefix="voxgate-fw-"))
        self.ns = Namespaces(f"vxlab{os.getpid()}")
        self.demo: subprocess.Popen | None = None
        self.turn: subprocess.Popen | None = None
        self.sibling: subprocess.Popen | None = None
        from ..wire.token import new_secret_line

        self.secret = new_secret_line(0)

    def build(self):
        self.ns.add("srv", SRV)
        self.ns.add("cli", CLI)
        a, b = f"vxfw{os.getpid() % 100000}c", f"vxfw{os.getpid() % 100000}s"
        ip("link", "add", a, "type", "veth", "peer", "name", b)
        ip("link", "set", a, "netns", self.ns.names["cli"])
        ip("link", "set", b, "netns", self.ns.names["srv"])
        self.ns.address("cli", a)  # on the veth: a browser gathers candidates from non-loopback devices only
        self.ns.address("srv", b)
        self.ns.route("cli", a, "srv")
        self.ns.route("srv", b, "cli")

    def block_udp(self, on: bool, tls_only: bool = False):
        """Drop every UDP packet the client sends or receives (a corporate firewall that lets only TCP out); with
        ``tls_only``, TCP too except to port 443 (TLS) and to the signaling port (HTTPS in real life)."""
        cmd = [*self.ns.exec_args("cli"), "iptables", "-w"]
        subprocess.run(cmd + ["-F"], capture_output=True)
        if not on:
            return
        rules = [["OUTPUT", "-p", "udp", "-j", "DROP"], ["INPUT", "-p", "udp", "-j", "DROP"]]
        if tls_only:
            rules.append(["OUTPUT", "-p", "tcp", "-m", "multiport", "!", "--dports", f"443,{HTTP}", "-j", "DROP"])
        for rule in rules:
            subprocess.run(cmd + ["-A", *rule], check=True, capture_output=True)

    def start_turn(self) -> tuple[str, str]:
        """coturn on TLS 443 in the server's namespace (self-signed certificate made here), shared-secret
        credentials; returns its URL and the secret."""
        import datetime
        import ipaddress
        import secrets as _secrets

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        turnserver = shutil.which("turnserver")
        if not turnserver:
            raise LabUnavailable("the TLS part needs coturn (apt-get install coturn)")
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "voxgate lab turn")])
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(SRV))]), False)
                .sign(key, hashes.SHA256()))
        (self.tmp / "turn.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (self.tmp / "turn.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                              serialization.PrivateFormat.PKCS8,
                                                              serialization.NoEncryption()))
        secret = _secrets.token_urlsafe(24)
        self.turn = subprocess.Popen(
            [*self.ns.exec_args("srv"), turnserver, "-n", "--listening-ip", SRV, "--relay-ip", SRV,
             "--listening-port", "3479", "--tls-listening-port", "443", "--no-udp", "--no-tcp", "--no-dtls",
             "--cert", str(self.tmp / "turn.pem"), "--pkey", str(self.tmp / "turn.key"), "--use-auth-secret",
             "--static-auth-secret", secret, "--realm", "voxgate.lab", "--fingerprint", "--no-cli",
             "--log-file", "stdout", "--simple-log"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(0.5)
        return f"turns:{SRV}:443?transport=tcp", secret

    def start_demo(self, extra=(), env=None) -> str:
        self.demo = subprocess.Popen(
            [*self.ns.exec_args("srv"), sys.executable, "-m", "voxgate", "demo", "--host", SRV, "--port", str(HTTP),
             "--relay-port", str(RELAY), *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True, env={**os.environ, "VOXGATE_LOG_LEVEL": "WARNING", "VOXGATE_SECRET": self.secret,
                                         **(env or {})})
        deadline = time.monotonic() + 180
        lines = []
        while time.monotonic() < deadline:
            line = self.demo.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith('{"event": "demo_ready"'):
                return json.loads(line)["url"]
        raise RuntimeError("the demo did not start:\n" + "".join(lines) + self.demo.stderr.read()[-2000:])

    def question(self) -> str:
        wav = self.tmp / "question.wav"
        if not wav.exists():
            if not shutil.which("espeak-ng"):
                raise LabUnavailable("the lab speaks with espeak-ng (apt-get install espeak-ng)")
            subprocess.run(["espeak-ng", "-v", "en-us+f4", "-s", "150", "-w", str(wav),
                            "What is the capital of France?"], check=True)
            wav.chmod(0o644)
        return str(wav)

    def browser_call(self, url: str) -> dict:
        from .chromium import CHROMIUM, in_namespace, talk_to_demo

        if not os.path.exists(CHROMIUM):
            raise LabUnavailable("Debian's chromium is not installed (apt-get install chromium)")
        wrapper = in_namespace(self.tmp / "chromium-in-cli", self.ns.exec_args("cli"))
        origin = url.rsplit("/demo", 1)[0]
        # the lab's TURN certificate is self-signed
        return talk_to_demo(url, self.question(), timeout=45, executable=wrapper,
                            extra=[f"--unsafely-treat-insecure-origin-as-secure={origin}", "--ignore-certificate-errors"])

    def stop_demo(self):
        if self.demo is not None and self.demo.poll() is None:
            os.killpg(self.demo.pid, signal.SIGINT)
            try:
                self.demo.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.demo.pid, signal.SIGKILL)
                self.demo.wait()
        if self.demo is not None:
            for stream in (self.demo.stdout, self.demo.stderr):
                stream.close()
        self.demo = None

    def tone(self) -> str:
        """A steady tone the echo agent sends back: reply audio that never pauses, so any gap is the outage's."""
        from ..client.call import tone_wav

        path = tone_wav(self.tmp / "tone.wav", seconds=4.0, hz=330.0)
        os.chmod(path, 0o644)
        return path

    def listener_pids(self) -> list[int]:
        """The processes holding a listening socket on the relay's TCP port: supervisors (they own the sockets) and
        their TCP fronts (forked with it)."""
        out = subprocess.run([*self.ns.exec_args("srv"), "ss", "-Hltnp", f"sport = :{RELAY}"], capture_output=True,
                             text=True).stdout
        return sorted({int(part.split(",")[0]) for part in out.split("pid=")[1:]})

    @staticmethod
    def parent(pid: int) -> int:
        try:
            with open(f"/proc/{pid}/status") as fh:
                return int(next(line.split()[1] for line in fh if line.startswith("PPid:")))
        except (OSError, StopIteration):  # gone between `ss` and here
            return -1

    def fronts(self) -> list[int]:
        pids = self.listener_pids()
        return [p for p in pids if self.parent(p) in pids]

    def start_sibling(self) -> subprocess.Popen:
        """A second relay on the same UDP and TCP port (SO_REUSEPORT), with the demo's secret: what a second relay
        pod behind the load balancer is to a client."""
        proc = subprocess.Popen(
            [*self.ns.exec_args("srv"), sys.executable, "-m", "voxgate", "--log-level", "WARNING", "relay",
             "--listen", f"{SRV}:{RELAY}", "--tcp-listen", f"{SRV}:{RELAY}", "--workers", "1", "--internal-host", SRV],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True,
            env={**os.environ, "VOXGATE_SECRET": self.secret})
        if not proc.stdout.readline():
            raise RuntimeError("the sibling relay did not start")
        self.sibling = proc
        return proc

    def kill_front(self) -> dict:
        """The TCP front process only: its supervisor starts another and keeps the listening socket."""
        [front] = [p for p in self.fronts() if self.sibling is None or self.parent(p) != self.sibling.pid]
        os.kill(front, signal.SIGKILL)
        return {"killed": [front]}

    def kill_relay(self) -> dict:
        """The demo's whole relay (supervisor and TCP front; its workers die with their parent): only the sibling's
        listener is left on the port."""
        keep = {self.sibling.pid} | {p for p in self.listener_pids() if self.parent(p) == self.sibling.pid}
        victims = [p for p in self.listener_pids() if p not in keep]
        for pid in victims:
            os.kill(pid, signal.SIGKILL)
        return {"killed": victims}

    def restart_during_call(self, url: str, kill, seconds_after: float = 10.0) -> dict:
        """A call over TCP (UDP dropped) to the demo running ``--agent echo`` (a looping tone comes back without a
        pause); mid-call ``kill()`` kills part of the relay with SIGKILL: its TCP front (``kill_front``: the
        supervisor starts another and keeps the listening socket, as a relay process is replaced), or the whole
        relay (``kill_relay``: a sibling relay on the port takes the reconnect, as another pod behind the load
        balancer would). Chromium's ICE-TCP reconnects at its next packet and its next Binding request routes it
        again. Measured: the longest gap in the echoed audio at the browser, the server's longest gap in the
        browser's audio, whether the same call goes on."""
        from playwright.sync_api import sync_playwright

        from .chromium import in_namespace, launch, longest_stall

        wrapper = in_namespace(self.tmp / "chromium-in-cli", self.ns.exec_args("cli"))
        origin = url.rsplit("/demo", 1)[0]
        with sync_playwright() as p:
            browser = launch(p, self.tone(), f"--unsafely-treat-insecure-origin-as-secure={origin}",
                             executable=wrapper)
            try:
                page = browser.new_page()
                page.goto(origin + "/demo?raw")
                page.click("#talk")
                page.wait_for_function("window.demo.state === 'connected'", timeout=30000)
                samples = []
                stats = ("pc.getStats().then(r => { let n = 0; r.forEach(s => { if (s.type === 'inbound-rtp' && "
                         "s.kind === 'audio') n = s.packetsReceived; }); return n; })")

                def sample(seconds):
                    end = time.monotonic() + seconds
                    while time.monotonic() < end:
                        samples.append((time.monotonic(), page.evaluate(stats)))
                        time.sleep(0.05)

                sample(3.0)
                transport_before = page.evaluate("window.demo.transport")
                before = self.fronts()
                killed = time.monotonic()
                what = kill()
                sample(seconds_after)
                after_fronts = self.fronts()
                info = page.evaluate("fetch('/v1/realtime/calls/' + callId).then(r => r.json())")
                state = page.evaluate("window.demo.state")
                transport_after = page.evaluate("window.demo.transport")
                page.click("#talk")
            finally:
                browser.close()
        stall = longest_stall(samples)
        at_kill = next(n for t, n in samples if t >= killed)
        return {"gap_in_ms": round(stall * 1000, 1), "gap_out_ms": info.get("max_audio_in_gap_ms"),
                "resumed": samples[-1][1] > at_kill, "state": state, "call_state": info.get("state"),
                "fronts": [before, after_fronts], **what, "transport": [transport_before, transport_after],
                "server_transport": info.get("transport"),
                "survived": samples[-1][1] > at_kill and state == "connected" and info.get("state") == "connected"}

    def close(self):
        try:
            self.stop_demo()
        except ProcessLookupError:
            pass
        for proc in (self.turn, self.sibling):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.ns.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def summary(call: dict) -> dict:
    turn = (call.get("turns") or [{}])[0]
    return {"transport": call.get("transport"), "candidate": call.get("candidate"), "setup_ms": call.get("setup"), "heard": call.get("user"),
            "answered": call.get("agent"), "reply_packets": call.get("packets"), "turn_ms": turn.get("total"),
            "ok": call.get("ok")}


def run(log=print, with_restart: bool = True, with_tls: bool = True) -> dict:
    check_available()
    if not shutil.which("iptables"):
        raise LabUnavailable("the lab needs iptables (apt-get install iptables)")
    lab = FirewallLab()

    def interrupted(*_):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, interrupted)
    try:
        lab.build()
        url = lab.start_demo()  # no TURN server: with one, Chromium may settle on it before the TCP pair
        log(f"voxgate lab firewall: demo at {url} in its namespace; client {CLI}")
        lab.block_udp(True)
        blocked = summary(lab.browser_call(url))
        log(f"  UDP dropped: {json.dumps(blocked)}")
        lab.block_udp(False)
        open_ = summary(lab.browser_call(url))
        log(f"  UDP open:    {json.dumps(open_)}")
        tls = None
        if with_tls:
            turn_url, turn_secret = lab.start_turn()
            lab.stop_demo()
            url = lab.start_demo(["--turn-url", turn_url], {"VOXGATE_TURN_SECRET": turn_secret})
            lab.block_udp(True, tls_only=True)
            tls = summary(lab.browser_call(url))
            log(f"  only TLS to 443: {json.dumps(tls)}")
        restart = relay_killed = None
        if with_restart:
            lab.stop_demo()
            lab.block_udp(True)
            echo = lab.start_demo(["--agent", "echo"])
            restart = lab.restart_during_call(echo, lab.kill_front)
            log(f"  TCP front killed mid-call: {json.dumps(restart)}")
            lab.start_sibling()
            relay_killed = lab.restart_during_call(echo, lab.kill_relay)
            log(f"  relay killed mid-call, a sibling on the port: {json.dumps(relay_killed)}")
        ok = blocked["ok"] and blocked["transport"] == "tcp" and open_["ok"] and open_["transport"] == "udp"
        if tls is not None:
            ok = ok and tls["ok"] and tls["candidate"] == "relay/tls"
        if with_restart:
            ok = ok and restart["survived"] and relay_killed["survived"]
        return {"udp_blocked": blocked, "tls_only": tls, "udp_open": open_, "restart": restart,
                "relay_killed": relay_killed, "ok": ok}
    finally:
        signal.signal(signal.SIGTERM, old)
        lab.close()


def main(args) -> int:
    try:
        result = run(log=(lambda *_: None) if args.json else print, with_restart=not args.no_restart,
                     with_tls=not args.no_tls)
    except LabUnavailable as exc:
        print(f"voxgate lab firewall: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result))
    else:
        for name in ("udp_blocked", "tls_only", "udp_open"):
            r = result[name]
            if r is None:
                continue
            s = r["setup_ms"] or {}
            print(f"{name:12s} transport {r['transport']} ({r['candidate']}), answer {s.get('answer')} ms, ICE {s.get('ice')} ms, "
                  f"DTLS {s.get('dtls')} ms, turn {r['turn_ms']} ms: heard {r['heard']} -> {r['answered']}")
        for name, what in (("restart", "relay's TCP front killed"), ("relay_killed", "relay killed, sibling")):
            r = result[name]
            if r:
                print(f"{what} mid-call: survived {r['survived']}, audio gap in {r['gap_in_ms']} ms, "
                      f"out {r['gap_out_ms']} ms")
    return 0 if result["ok"] else 1
