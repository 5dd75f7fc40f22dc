"""A relay between two networks, in namespaces this process creates and removes: client ↔ veth ↔ relay ↔ veth ↔
transceiver, the relay's namespace forwarding (the XDP path's FIB lookups need it). What ``bench/relay.py --xdp``
and ``tests/test_relay_xdp.py`` run in.

    client   10.77.1.2/24  cl:eth0 ── veth ── rl:vc  10.77.1.1/24
    relay                                       rl:vt  10.77.2.1/24 ── veth ── tx:eth0  10.77.2.2/24   transceiver

The client and the transceiver reach each other's network through the relay (default routes), so signaling (HTTP)
crosses it too; a veth that is an XDP_REDIRECT target needs an XDP program on its peer, so the outer ends get a
pass-through one (``pass_through``).
"""

from __future__ import annotations

import os
import secrets
import subprocess

from .netns import check_available, ip

CLIENT, RELAY_C, RELAY_T, TX = "10.77.1.2", "10.77.1.1", "10.77.2.1", "10.77.2.2"


class RelayLab:
    def __init__(self):
        check_available()
        tag = secrets.token_hex(2)
        self.ns = {"cl": f"vg{tag}-cl", "rl": f"vg{tag}-rl", "tx": f"vg{tag}-tx"}
        self.programs: list = []
        try:
            for name in self.ns.values():
                ip("netns", "add", name)
                ip("-n", name, "link", "set", "lo", "up")
            cl, rl, tx = self.ns["cl"], self.ns["rl"], self.ns["tx"]
            ip("link", "add", "vgc0", "netns", cl, "type", "veth", "peer", "name", "vc", "netns", rl)
            ip("link", "add", "vgt0", "netns", tx, "type", "veth", "peer", "name", "vt", "netns", rl)
            ip("-n", cl, "link", "set", "vgc0", "name", "eth0")
            ip("-n", tx, "link", "set", "vgt0", "name", "eth0")
            for ns, dev, addr in ((cl, "eth0", CLIENT), (rl, "vc", RELAY_C), (rl, "vt", RELAY_T), (tx, "eth0", TX)):
                ip("-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
                ip("-n", ns, "link", "set", dev, "up")
            ip("-n", cl, "route", "add", "default", "via", RELAY_C)
            ip("-n", tx, "route", "add", "default", "via", RELAY_T)
            self.sysctl("rl", "net.ipv4.ip_forward", "1")
            for dev in ("all", "vc", "vt"):
                self.sysctl("rl", f"net.ipv4.conf.{dev}.forwarding", "1")
        except BaseException:
            self.close()
            raise

    def sysctl(self, where: str, key: str, value: str) -> None:
        subprocess.run(["ip", "netns", "exec", self.ns[where], "sysctl", "-qw", f"{key}={value}"], check=True)

    def exec_args(self, where: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns[where]]

    def popen(self, where: str, args: list[str], **kw) -> subprocess.Popen:
        return subprocess.Popen(self.exec_args(where) + args, **kw)

    def pass_through(self) -> None:
        """An XDP program on the outer veth ends (the relay's redirects land there): the relay's own, which passes
        whatever is not a relay's flow."""
        from ..relay.xdp import Program
        from .netns import entered

        for where in ("cl", "tx"):
            with entered(self.ns[where]):
                self.programs.append(Program(["eth0"], "native", 1))

    def close(self) -> None:
        for p in self.programs:
            try:
                p.close()
            except Exception:
                pass
        self.programs = []
        for name in self.ns.values():
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


def env_for_lab() -> dict:
    """The environment for processes in the lab: the source tree on the path, no proxies."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    return env


def forged_probe(lab: RelayLab) -> str:
    """A STUN check with a made-up token, sent from the client's namespace to the relay: "silent" if nothing
    answered it (it was not forwarded), else "answered"."""
    import sys

    from .peers import binding_request

    probe = subprocess.run(lab.exec_args("cl") + [sys.executable, "-c", (
        "import socket,sys;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.settimeout(1);"
        f"s.sendto(bytes.fromhex(sys.argv[1]),('{RELAY_C}',3478));"
        "\ntry: s.recvfrom(2048); print('answered')\nexcept socket.timeout: print('silent')"),
        binding_request("forgedtokenforgedtoken").hex()], capture_output=True, text=True, timeout=10)
    return probe.stdout.strip()


def stop(procs: list) -> None:
    """The lab's processes: SIGTERM to each's process group (or the process), then SIGKILL after 10 s."""
    import signal

    for p in procs:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                p.terminate()
    for p in procs:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()


def chromium_through_the_kernel(tmp, log=print, seconds: float = 6.0) -> dict:
    """A Chromium call through ``voxgate relay --xdp auto`` in the lab: the echo agent returns a steady tone, so
    any gap is an outage's. Measured: the kernel map's flow and its counters against the user-space relay's, then
    the relay SIGKILLed and replaced, then a sibling relay on the same port (SO_REUSEPORT) taking over when the
    first is killed; a forged token at the end. Packets received in the browser are sampled every 50 ms."""
    import json
    import signal
    import sys
    import time
    from pathlib import Path

    from playwright.sync_api import sync_playwright

    from ..client.call import tone_wav
    from ..wire.token import new_secret_line
    from .chromium import in_namespace, launch, longest_stall
    from .peers import metric_value

    tmp = Path(tmp)
    secret = tmp / "secret"
    secret.write_text(new_secret_line(4) + "\n")
    os.chmod(tmp, 0o755)
    wav = tone_wav(tmp / "tone.wav", seconds=4.0, hz=330.0)
    os.chmod(wav, 0o644)
    lab = RelayLab()
    procs: list = []

    def relay(metrics_port: int):
        p = lab.popen("rl", [sys.executable, "-m", "voxgate", "--log-level", "WARNING", "relay", "--listen",
                             f"{RELAY_C}:3478", "--internal-host", RELAY_T, "--workers", "1", "--secret-file",
                             str(secret), "--redis-url", "redis://127.0.0.1:6390/0", "--metrics",
                             f"{RELAY_T}:{metrics_port}", "--xdp", "auto", "--xdp-iface", "vc", "--xdp-iface", "vt"],
                      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
        ready = json.loads(p.stdout.readline())
        procs.append(p)
        return p, ready

    def kernel() -> dict:
        link = json.loads(subprocess.run(lab.exec_args("rl") + ["ip", "-j", "link", "show", "vc"],
                                         capture_output=True, text=True).stdout)[0]
        prog = link.get("xdp", {}).get("prog", {}).get("id")
        out = {"prog": prog, "flows": []}
        if prog is None:
            return out
        for m in json.loads(subprocess.run(["bpftool", "-j", "prog", "show", "id", str(prog)],
                                           capture_output=True, text=True).stdout)["map_ids"]:
            info = json.loads(subprocess.run(["bpftool", "-j", "map", "show", "id", str(m)], capture_output=True,
                                             text=True).stdout)
            if info["name"] == "flows":
                dump = json.loads(subprocess.run(["bpftool", "-j", "map", "dump", "id", str(m)],
                                                 capture_output=True, text=True).stdout)
                out["flows"] = [d["formatted"]["value"] for d in dump]
        return out

    def slow(port: int) -> float:
        text = subprocess.run(lab.exec_args("rl") + [sys.executable, "-c", "import urllib.request;print(urllib."
                              f"request.urlopen('http://{RELAY_T}:{port}/metrics').read().decode())"],
                              capture_output=True, text=True).stdout
        # what the user-space relay itself forwarded from clients: all it counts, less what the kernel did
        return (metric_value(text, "voxgate_relay_packets_total", direction="from_client")
                - metric_value(text, "voxgate_relay_kernel_packets_total", direction="to_transceiver"))

    result: dict = {}
    try:
        lab.pass_through()
        procs.append(lab.popen("rl", ["redis-server", "--port", "6390", "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--dir", str(tmp)], stdout=subprocess.DEVNULL))
        time.sleep(0.5)
        first, ready = relay(9100)
        result["kernel_path"] = ready["kernel_path"]
        log(f"relay: {ready['kernel_path']}")
        tx = lab.popen("tx", [sys.executable, "-m", "voxgate", "--log-level", "WARNING", "transceiver", "--http",
                              f"{TX}:8080", "--media", f"{TX}:40000", "--relay", f"{RELAY_C}:3478",
                              "--secret-file", str(secret), "--agent", "echo", "--no-auth"],
                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        procs.append(tx)
        tx.stdout.readline()
        origin = f"http://{TX}:8080"
        wrapper = in_namespace(tmp / "chromium-in-cl", lab.exec_args("cl"))
        with sync_playwright() as p:
            browser = launch(p, wav, f"--unsafely-treat-insecure-origin-as-secure={origin}", executable=wrapper)
            try:
                page = browser.new_page()
                page.goto(origin + "/demo?raw")
                page.click("#talk")
                page.wait_for_function("window.demo.state === 'connected'", timeout=30000)
                stats = ("pc.getStats().then(r => { let n = 0; r.forEach(s => { if (s.type === 'inbound-rtp' && "
                         "s.kind === 'audio') n = s.packetsReceived; }); return n; })")
                samples: list = []

                def sample(s):
                    end = time.monotonic() + s
                    while time.monotonic() < end:
                        samples.append((time.monotonic(), page.evaluate(stats)))
                        time.sleep(0.05)

                sample(3.0)  # verified and installed (the worker syncs every second)
                k0, s0 = kernel(), slow(9100)
                sample(seconds)
                k1, s1 = kernel(), slow(9100)
                grew = [(b["c2t_packets"] - a["c2t_packets"], b["t2c_packets"] - a["t2c_packets"])
                        for a, b in zip(k0["flows"], k1["flows"])]
                result["kernel"] = {"flows": len(k1["flows"]), "grew_c2t_t2c": grew,
                                    "user_space_from_client_grew": s1 - s0}
                log(f"kernel map: {len(k1['flows'])} flow(s), grew {grew} in {seconds:.0f} s; the user-space relay "
                    f"forwarded {s1 - s0:.0f} of the client's packets meanwhile")
                # the relay SIGKILLed, a new one started (the program stays attached meanwhile)
                t_kill = time.monotonic()
                os.killpg(first.pid, signal.SIGKILL)
                first.wait(5)
                second, _ = relay(9101)
                sample(seconds)
                result["restart"] = {"gap_ms": round(longest_stall([x for x in samples if x[0] >= t_kill - 1])
                                                     * 1000, 1), "kernel_flows_after": len(kernel()["flows"])}
                log(f"relay restarted: longest gap {result['restart']['gap_ms']} ms")
                # a sibling on the same port, then the second killed: the sibling takes the call
                sibling, _ = relay(9102)
                sample(2.0)
                t_kill = time.monotonic()
                os.killpg(second.pid, signal.SIGKILL)
                second.wait(5)
                sample(seconds)
                result["sibling"] = {"gap_ms": round(longest_stall([x for x in samples if x[0] >= t_kill - 1])
                                                     * 1000, 1), "kernel_flows_after": len(kernel()["flows"])}
                log(f"sibling took over: longest gap {result['sibling']['gap_ms']} ms")
                info = page.evaluate("fetch('/v1/realtime/calls/' + callId).then(r => r.json())")
                result["call"] = {"state": info.get("state"), "max_audio_in_gap_ms": info.get("max_audio_in_gap_ms"),
                                  "browser_state": page.evaluate("window.demo.state")}
                page.click("#talk")
            finally:
                browser.close()
        result["forged_token"] = forged_probe(lab)
        log(f"a forged token: {result['forged_token']}")
    finally:
        stop(procs)
        lab.close()
    return result


if __name__ == "__main__":
    import json
    import tempfile

    print(json.dumps(chromium_through_the_kernel(tempfile.mkdtemp(prefix="voxgate-xdp-lab-"))))
