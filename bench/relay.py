"""Relay benchmark: packets per CPU-second and added latency, side by side with two baselines.

Forwarders compared in one run, interleaved round by round (these machines are shared and noisy):

* ``c_baseline``  -- bench/cfwd.c: minimal C recvmmsg/sendmmsg forwarder, built here with gcc;
* ``naive_python`` -- a plain recvfrom/sendto loop in Python;
* ``voxgate``      -- `voxgate relay --workers 1` with its C fast path;
* ``voxgate_pure`` -- the same with VOXGATE_PURE_PYTHON=1 (the fallback).

Each forwarder gets (1) a saturating load for --seconds: forwarded packets / CPU seconds of the
forwarder's processes; (2) a fixed offered load (default: half of what the C baseline forwarded per
second in round 1): p50/p99 one-way latency through it minus the same measured with no forwarder.
The load generator and sink (bench/loadgen.c) are C too, so they are not the bottleneck; it runs pinned
to the first CPU and every forwarder to the last (voxgate's worker pins itself within that affinity).

    python bench/relay.py [--rounds 3] [--seconds 3] [--rate PPS] [--json out.json]

With ``--xdp`` (root; clang, libbpf-dev) the comparison runs in a lab of two network namespaces joined by a veth
(the client and the transceiver in one, the forwarder in the other, which forwards back out of the same veth:
XDP_TX), for ``c_baseline``, ``voxgate`` (the C path), ``xdp_native`` and ``xdp_generic``, and CPU is counted per
CPU from ``/proc/stat`` (user, system, softirq, …), not per process: the kernel path's work is softirq, which no
process's time shows. The forwarder's CPU does the forwarder and its veth's receive processing (NAPI, threaded and
pinned there); the other CPU does the load's side. Two loads, each forwarder meeting both:

* the closed loop (``xdploop.c`` and ``xdploop.bpf.c``), the figure the kernel path is judged by: an XDP program on
  the clients' veth turns every datagram the forwarder delivers to the "transceiver" back into the next client's
  next one, so a fixed number of datagrams circulate round ``--flows`` clients (each learned by voxgate's relay
  with a token and verified) and the forwarder's CPU is saturated, while the loop itself costs the machine 0.1 µs
  (the kernel path's frames) to 0.9 µs (a socket's datagrams, which the veth copies for XDP) per datagram.
  Packets per CPU-second of the **whole machine**, the loop's own CPU included, and of the forwarder's CPU; what
  the loop lost or got back wrong, and the share voxgate's relay counted as the kernel's, are printed with them;
* the socket generator (``loadgen.c``: sendmmsg, a UDP socket as the sink, one flow), as before: throughput and
  the whole machine's CPU at saturation, and the one-way latency p50/p99 (generator to sink through the
  forwarder) at half the rate the C forwarder reached with it. Its own cost per datagram (a send and a receive
  through the stack) is several times the kernel path's, so its machine-wide figure measures mostly itself; it is
  kept for the latency and for comparison with earlier runs.

    python bench/relay.py --xdp [--rounds 3] [--seconds 3] [--flows 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from common import HERE, cpu_seconds, free_port  # first: it puts src/ on the path

from voxgate.wire import stun
from voxgate.wire.token import Keyring, mint, new_secret_line

_CPUS = sorted(os.sched_getaffinity(0))
LOAD_CPU, FWD_CPU = _CPUS[0], _CPUS[-1]

NAIVE = r"""
import socket, sys
i = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); i.bind(("127.0.0.1", int(sys.argv[1])))
i.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
o = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); dst = ("127.0.0.1", int(sys.argv[2]))
hdr = {}
print("ready", flush=True)
while True:
    data, addr = i.recvfrom(2048)
    h = hdr.get(addr)
    if h is None:
        h = hdr[addr] = b"\xf1\x00" + addr[1].to_bytes(2, "big") + socket.inet_aton(addr[0])
    o.sendto(h + data, dst)
"""


def build(out_dir: str) -> dict:
    os.makedirs(out_dir, exist_ok=True)
    bins = {}
    for name, extra in (("loadgen", ["-pthread"]), ("cfwd", [])):
        exe = os.path.join(out_dir, name)
        subprocess.run(["gcc", "-O2", "-Wall", *extra, "-o", exe, os.path.join(HERE, name + ".c")], check=True)
        bins[name] = exe
    return bins


class Forwarder:
    def __init__(self, kind: str, bins: dict, listen: int, dest: int, secret_file: str, src_port: int):
        self.kind = kind
        env = dict(os.environ)
        if kind == "c_baseline":
            cmd = [bins["cfwd"], str(listen), str(dest)]
        elif kind == "naive_python":
            cmd = [sys.executable, "-c", NAIVE, str(listen), str(dest)]
        else:
            cmd = [sys.executable, "-m", "voxgate", "--log-level", "WARNING", "relay", "--listen", f"127.0.0.1:{listen}",
                   "--workers", "1", "--secret-file", secret_file, "--internal-host", "127.0.0.1"]
            env["PYTHONPATH"] = os.path.join(HERE, "..", "src")
            if kind == "voxgate_pure":
                env["VOXGATE_PURE_PYTHON"] = "1"
        # forwarder on one core, load generator on another: they must not fight for a CPU
        self.proc = subprocess.Popen(["taskset", "-c", str(FWD_CPU), *cmd], stdout=subprocess.PIPE, text=True, env=env)
        line = self.proc.stdout.readline()
        self.pids = [self.proc.pid]
        if kind.startswith("voxgate"):
            ready = json.loads(line)
            self.pids += [w["pid"] for w in ready["workers"]]
            self.fast_path = ready["fast_path"]
            self._learn_flow(listen, dest, secret_file, src_port)

    def _learn_flow(self, listen, dest, secret_file, src_port):
        """Bind the load generator's ports, send the STUN with a token, wait until it reaches the sink."""
        keyring = Keyring.load(secret_file)
        sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sink.bind(("127.0.0.1", dest))
        sink.settimeout(2)
        src = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        src.bind(("127.0.0.1", src_port))
        ufrag = mint(keyring, ("127.0.0.1", dest), time.time())
        src.sendto(stun.build(stun.BINDING_REQUEST, os.urandom(12), [stun.attr_username(ufrag + ":bench")]),
                   ("127.0.0.1", listen))
        sink.recvfrom(2048)
        src.close()
        sink.close()

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def run_load(bins, target_port, src_port, sink_port, rate, seconds, size, pids=()) -> dict:
    c0, t0 = cpu_seconds(pids), time.monotonic()
    out = subprocess.run(["taskset", "-c", str(LOAD_CPU), bins["loadgen"], "127.0.0.1", str(target_port), str(src_port), str(sink_port),
                          str(rate), str(seconds), str(size)], capture_output=True, text=True, check=True)
    res = json.loads(out.stdout)
    res["cpu_s"] = cpu_seconds(pids) - c0
    res["wall_s"] = time.monotonic() - t0
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--rate", type=float, default=0, help="fixed offered load for latency (default: half the C baseline)")
    ap.add_argument("--size", type=int, default=200, help="datagram size (an Opus RTP packet is ~100-200 B)")
    ap.add_argument("--kinds", default="c_baseline,naive_python,voxgate,voxgate_pure")
    ap.add_argument("--json", help="write raw results here")
    ap.add_argument("--xdp", action="store_true", help="the namespace lab: the kernel path beside the C ones")
    ap.add_argument("--flows", type=int, default=1000,
                    help="with --xdp: the clients (flows) the closed loop goes round (default 1000)")
    args = ap.parse_args()
    if args.xdp:
        return main_xdp(args)

    tmp = tempfile.mkdtemp(prefix="voxgate-bench-")
    bins = build(os.path.join(HERE, "out"))
    secret_file = os.path.join(tmp, "secret")
    with open(secret_file, "w") as fh:
        fh.write(new_secret_line() + "\n")
    kinds = args.kinds.split(",")
    results: dict[str, dict[str, list]] = {k: {"pps_per_cpu": [], "pps": [], "p50": [], "p99": []} for k in kinds}
    direct = {"p50": [], "p99": []}
    rate = args.rate
    for rnd in range(args.rounds):
        order = kinds[rnd % len(kinds):] + kinds[: rnd % len(kinds)]
        if rnd == 0 and "c_baseline" in order:
            order.remove("c_baseline")
            order.insert(0, "c_baseline")  # its throughput sets the latency load
        for kind in order:
            listen, sink, src = free_port(), free_port(), free_port()
            fwd = Forwarder(kind, bins, listen, sink, secret_file, src)
            try:
                time.sleep(0.2)
                sat = run_load(bins, listen, src, sink, 0, args.seconds, args.size, fwd.pids)
                pps = sat["received"] / args.seconds
                results[kind]["pps"].append(pps)
                results[kind]["pps_per_cpu"].append(sat["received"] / max(sat["cpu_s"], 1e-3))
                if not rate:
                    rate = round(pps / 2, -2)
                lat = run_load(bins, listen, src, sink, rate, args.seconds, args.size, fwd.pids)
                results[kind]["p50"].append(lat["p50_us"])
                results[kind]["p99"].append(lat["p99_us"])
                print(f"round {rnd + 1} {kind:13s} forwarded {pps:>9.0f} pkt/s, {results[kind]['pps_per_cpu'][-1]:>9.0f} "
                      f"pkt/CPU-s (cpu {sat['cpu_s']:.2f}s) | at {rate:.0f} pkt/s p50 {lat['p50_us']:.1f} us "
                      f"p99 {lat['p99_us']:.1f} us, lost {lat['sent'] - lat['received']}", flush=True)
            finally:
                fwd.stop()
        src, sink = free_port(), free_port()
        d = run_load(bins, sink, src, sink, rate, args.seconds, args.size)
        direct["p50"].append(d["p50_us"])
        direct["p99"].append(d["p99_us"])
        print(f"round {rnd + 1} {'direct':13s} at {rate:.0f} pkt/s p50 {d['p50_us']:.1f} us p99 {d['p99_us']:.1f} us",
              flush=True)

    med = statistics.median
    dp50, dp99 = med(direct["p50"]), med(direct["p99"])
    print()
    print(f"medians of {args.rounds} rounds, {args.size}-byte datagrams, latency load {rate:.0f} pkt/s")
    print(f"{'forwarder':14s} {'pkt/CPU-s':>10s} {'vs C':>6s} {'vs naive':>9s} {'added p50':>10s} {'added p99':>10s}")
    summary = {}
    def ratio(kind, ref):
        """Median over rounds of the per-round ratio: each round's pair ran minutes apart, not hours."""
        if ref not in results:
            return None
        return med(a / b for a, b in zip(results[kind]["pps_per_cpu"], results[ref]["pps_per_cpu"]))

    for kind, r in results.items():
        ppc = med(r["pps_per_cpu"])
        row = {
            "pps_per_cpu": ppc,
            "vs_c": ratio(kind, "c_baseline"),
            "vs_naive": ratio(kind, "naive_python"),
            "added_p50_us": med(r["p50"]) - dp50,
            "added_p99_us": med(r["p99"]) - dp99,
        }
        summary[kind] = row
        print(f"{kind:14s} {ppc:>10.0f} {row['vs_c'] or 0:>6.2f} {row['vs_naive'] or 0:>9.2f} "
              f"{row['added_p50_us']:>8.1f}us {row['added_p99_us']:>8.1f}us")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"rate": rate, "direct": direct, "raw": results, "summary": summary}, fh, indent=1)


# ---------------------------------------------------------------- the kernel path, in a namespace lab
GEN, RELAY = "10.77.9.2", "10.77.9.1"
LOOP_INFLIGHT = 192  # datagrams circulating in the closed loop: enough to keep every forwarder busy, < a veth ring
# the closed loop is native XDP: generic XDP on the relay's veth cannot take the frames a native XDP_TX sends it
LOOP_KINDS = ("c_baseline", "voxgate", "xdp_native")
METRICS_PORT = 9109


def relay_counts(lab) -> dict:
    """voxgate's relay's counters in the lab (its /metrics; the worker flushes them every second): datagrams
    forwarded (sent on: to a transceiver or a client) in all, and by the kernel path."""
    from urllib.request import urlopen

    from voxgate.lab.netns import entered
    from voxgate.lab.peers import metric_value

    with entered(lab.rl):
        text = urlopen(f"http://{RELAY}:{METRICS_PORT}/metrics", timeout=5).read().decode()
    return {name: sum(metric_value(text, f"{name}_total", direction=d) for d in ("to_transceiver", "to_client"))
            for name in ("voxgate_relay_packets", "voxgate_relay_kernel_packets")}


def busy(cpu: int | None = None) -> float:
    """CPU seconds not idle (softirq included), of one CPU or (None) the whole machine, from /proc/stat."""
    name = "cpu" if cpu is None else f"cpu{cpu}"
    with open("/proc/stat") as fh:
        for line in fh:
            if line.split()[0] == name:
                f = [int(x) for x in line.split()[1:]]
                break
    user, nice, system, idle, iowait, irq, softirq, steal = f[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def pin_napi() -> None:
    """The veths' NAPI threads to their side's CPU (they are made again when an XDP program comes or goes)."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/comm") as fh:
                comm = fh.read().strip()
        except OSError:
            continue
        if comm.startswith("napi/vc-"):
            os.sched_setaffinity(int(pid), {FWD_CPU})
        elif comm.startswith("napi/vgen-"):
            os.sched_setaffinity(int(pid), {LOAD_CPU})


def build_loop(out_dir: str) -> dict:
    """bench/xdploop.c (gcc, libbpf) and its kernel half xdploop.bpf.c (clang's BPF target, as the relay's own)."""
    from voxgate.relay.xdp.__main__ import compile_bpf

    obj, exe = os.path.join(out_dir, "xdploop.bpf.o"), os.path.join(out_dir, "xdploop")
    compile_bpf(os.path.join(HERE, "xdploop.bpf.c"), obj)
    subprocess.run(["gcc", "-O2", "-Wall", "-o", exe, os.path.join(HERE, "xdploop.c"), "-lbpf"], check=True)
    return {"xdploop": exe, "xdploop_obj": obj}


class XdpLab:
    def __init__(self):
        from voxgate.lab.netns import check_available, ip

        check_available()
        tag = os.urandom(2).hex()
        self.gen, self.rl = f"vgb{tag}-gen", f"vgb{tag}-rl"
        self.programs = []
        for ns in (self.gen, self.rl):
            ip("netns", "add", ns)
            ip("-n", ns, "link", "set", "lo", "up")
        ip("link", "add", "vgg0", "netns", self.gen, "type", "veth", "peer", "name", "vc", "netns", self.rl)
        ip("-n", self.gen, "link", "set", "vgg0", "name", "vgen")
        for ns, dev, addr in ((self.gen, "vgen", GEN), (self.rl, "vc", RELAY)):
            ip("-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            ip("-n", ns, "link", "set", dev, "up")
            subprocess.run(["ip", "netns", "exec", ns, "ethtool", "-K", dev, "gro", "on"], check=True,
                           capture_output=True)
            subprocess.run(["ip", "netns", "exec", ns, "sh", "-c", f"echo 1 > /sys/class/net/{dev}/threaded"],
                           check=True)
        for key in ("net.ipv4.ip_forward", "net.ipv4.conf.all.forwarding", "net.ipv4.conf.vc.forwarding"):
            subprocess.run(["ip", "netns", "exec", self.rl, "sysctl", "-qw", f"{key}=1"], check=True)
        self.vc_mac = subprocess.run(["ip", "netns", "exec", self.rl, "cat", "/sys/class/net/vc/address"],
                                     capture_output=True, text=True, check=True).stdout.strip()
        from voxgate.lab.netns import entered
        from voxgate.relay.xdp import Program

        with entered(self.gen):  # the veth peer of an XDP_TX needs XDP on: a pass-through
            self.programs.append(Program(["vgen"], "native", 1))

    def relay_side_pass(self, obj: str | None) -> None:
        """A pass-through XDP program on the relay's veth (None: none). A veth drops, without a count, the frames
        its peer's native XDP_TX sends it unless it runs XDP itself: the closed loop needs it for the C paths."""
        subprocess.run(["ip", "-n", self.rl, "link", "set", "dev", "vc", "xdpdrv", "off"], check=True)
        if obj:
            subprocess.run(["ip", "-n", self.rl, "link", "set", "dev", "vc", "xdpdrv", "object", obj, "program",
                            "pass"], check=True)

    def close(self):
        for p in self.programs:
            p.close()
        for ns in (self.gen, self.rl):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def _xdp_forwarder(lab, kind, bins, listen, sink, secret_file, src, flows=1):
    """The forwarder started on its CPU in the relay's namespace; voxgate's has learned the clients' flows (ports
    ``src`` .. ``src + flows - 1``) with a token each and had them verified, as a transceiver would after DTLS."""
    from voxgate.lab.netns import entered

    rl = ["ip", "netns", "exec", lab.rl, "taskset", "-c", str(FWD_CPU)]
    if kind == "c_baseline":
        proc = subprocess.Popen(rl + [bins["cfwd"], str(listen), str(sink), RELAY, GEN], stdout=subprocess.PIPE,
                                text=True)
        proc.stdout.readline()
        return proc
    mode = {"voxgate": "off", "xdp_native": "native", "xdp_generic": "generic"}[kind]
    env = dict(os.environ, PYTHONPATH=os.path.join(HERE, "..", "src"))
    proc = subprocess.Popen(rl + [sys.executable, "-m", "voxgate", "--log-level", "WARNING", "relay", "--listen",
                                  f"{RELAY}:{listen}", "--workers", "1", "--secret-file", secret_file,
                                  "--internal-host", RELAY, "--xdp", mode, "--xdp-iface", "vc", "--metrics",
                                  f"{RELAY}:{METRICS_PORT}"],
                            stdout=subprocess.PIPE, text=True, env=env)
    ready = json.loads(proc.stdout.readline())
    internal = tuple(ready["workers"][0]["internal"])
    internal = (internal[0] if internal[0] not in ("0.0.0.0", "::") else RELAY, internal[1])
    keyring = Keyring.load(secret_file)
    with entered(lab.gen):
        snk = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        snk.bind((GEN, sink))
        snk.settimeout(2)
        for port in range(src, src + flows):
            cli = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            cli.bind((GEN, port))
            cli.settimeout(2)
            ufrag = mint(keyring, (GEN, sink), time.time())
            cli.sendto(stun.build(stun.BINDING_REQUEST, os.urandom(12), [stun.attr_username(ufrag + ":bench")]),
                       (RELAY, listen))
            snk.recvfrom(2048)
            snk.sendto(b"\xf1\x02" + port.to_bytes(2, "big") + socket.inet_aton(GEN) + b"\x80" + b"v" * 40, internal)
            cli.recvfrom(2048)
            cli.close()
        snk.close()
    time.sleep(1.5)  # the worker installs verified flows in the kernel once a second
    return proc


def _xdp_load(lab, bins, listen, src, sink, rate, seconds, size):
    """The socket generator (loadgen.c) for ``seconds``: what it sent and got back, its latency, CPU per side."""
    import resource

    pin_napi()
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    b0, f0 = busy(), busy(FWD_CPU)
    out = subprocess.run(["ip", "netns", "exec", lab.gen, "taskset", "-c", str(LOAD_CPU), bins["loadgen"], RELAY,
                          str(listen), str(src), str(sink), str(rate), str(seconds), str(size), GEN],
                         capture_output=True, text=True, check=True)
    b1, f1 = busy(), busy(FWD_CPU)
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    res = json.loads(out.stdout)
    res["machine_cpu_s"] = b1 - b0
    res["forwarder_cpu_s"] = f1 - f0
    res["generator_cpu_s"] = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return res


def _xdp_loop(lab, bins, kind, listen, src, sink, seconds, size, flows):
    """The closed loop (xdploop.c) for ``seconds``: datagrams forwarded, CPU per side and the whole machine's."""
    c_path = kind in ("c_baseline", "voxgate")  # the kernel path's own program is on the veth already
    if c_path:
        lab.relay_side_pass(bins["xdploop_obj"])
    cmd = ["ip", "netns", "exec", lab.gen, "taskset", "-c", str(LOAD_CPU), bins["xdploop"], bins["xdploop_obj"],
           "vgen", lab.vc_mac, GEN, str(src), RELAY, str(listen), str(sink), str(size), str(LOOP_INFLIGHT), "0.5",
           str(seconds), str(flows)]
    counts0 = relay_counts(lab) if kind != "c_baseline" else None
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        json.loads(proc.stdout.readline())  # attached
        pin_napi()
        proc.stdin.write("go\n")
        proc.stdin.flush()
        json.loads(proc.stdout.readline())  # started, warm
        b0, f0, g0 = busy(), busy(FWD_CPU), busy(LOAD_CPU)
        end = json.loads(proc.stdout.readline())
        b1, f1, g1 = busy(), busy(FWD_CPU), busy(LOAD_CPU)
        after = json.loads(proc.stdout.readline())
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
        if c_path:
            lab.relay_side_pass(None)
    kernel_share = None
    if counts0 is not None:  # of what the relay forwarded over the whole loop (warm-up and drain too)
        time.sleep(1.5)
        counts1 = relay_counts(lab)
        grew = {k: counts1[k] - counts0[k] for k in counts0}
        kernel_share = grew["voxgate_relay_kernel_packets"] / max(1.0, grew["voxgate_relay_packets"])
    return {"kernel_share": kernel_share, "forwarded": end["forwarded"], "seconds": end["seconds"],
            "machine_cpu_s": b1 - b0, "forwarder_cpu_s": f1 - f0, "generator_cpu_s": g1 - g0, **after}


def main_xdp(args):
    tmp = tempfile.mkdtemp(prefix="voxgate-bench-")
    out_dir = os.path.join(HERE, "out")
    bins = {**build(out_dir), **build_loop(out_dir)}
    secret_file = os.path.join(tmp, "secret")
    with open(secret_file, "w") as fh:
        fh.write(new_secret_line() + "\n")
    kinds = ["c_baseline", "voxgate", "xdp_native", "xdp_generic"]
    res = {k: {m: [] for m in ("ppc", "ppc_all", "pps", "p50", "p99", "loop_pps", "loop_ppc", "loop_ppc_all",
                                "loop_gen_share", "loop_lost", "loop_wrong", "loop_kernel_share")}
           for k in kinds}
    lab = XdpLab()
    rate = args.rate
    try:
        for rnd in range(args.rounds):
            order = kinds[rnd % len(kinds):] + kinds[: rnd % len(kinds)]
            if rnd == 0:
                order.remove("c_baseline")
                order.insert(0, "c_baseline")
            for kind in order:
                # ports in the lab's own namespaces: any is free there (the clients' are SRC .. SRC + flows - 1)
                listen, sink, src = 4000 + rnd, 5000 + rnd, 10000 + 1000 * rnd
                proc = _xdp_forwarder(lab, kind, bins, listen, sink, secret_file, src, args.flows)
                r = res[kind]
                try:
                    said = ""
                    if kind in LOOP_KINDS:
                        loop = _xdp_loop(lab, bins, kind, listen, src, sink, args.seconds, args.size, args.flows)
                        r["loop_pps"].append(loop["forwarded"] / loop["seconds"])
                        r["loop_ppc"].append(loop["forwarded"] / max(1e-3, loop["forwarder_cpu_s"]))
                        r["loop_ppc_all"].append(loop["forwarded"] / max(1e-3, loop["machine_cpu_s"]))
                        r["loop_gen_share"].append(loop["generator_cpu_s"] / max(1e-3, loop["machine_cpu_s"]))
                        r["loop_lost"].append(max(0, loop["inflight"] - loop["came_back"]))
                        r["loop_wrong"].append(loop["wrong"])
                        if loop["kernel_share"] is not None:
                            r["loop_kernel_share"].append(loop["kernel_share"])
                        said = (f"loop: {r['loop_pps'][-1]:>8.0f} pkt/s, {r['loop_ppc_all'][-1]:>8.0f} per machine "
                                f"CPU-s, {r['loop_ppc'][-1]:>8.0f} per forwarder's CPU-s (CPU: forwarder's "
                                f"{loop['forwarder_cpu_s']:.2f} s, loop's {loop['generator_cpu_s']:.2f} s; lost "
                                f"{r['loop_lost'][-1]}, wrong {loop['wrong']}"
                                + ("" if loop["kernel_share"] is None else
                                   f"; the kernel forwarded {100 * loop['kernel_share']:.1f}%") + ") | ")
                    sat = _xdp_load(lab, bins, listen, src, sink, 0, args.seconds, args.size)
                    r["pps"].append(sat["received"] / args.seconds)
                    r["ppc"].append(sat["received"] / max(1e-3, sat["forwarder_cpu_s"]))
                    r["ppc_all"].append(sat["received"] / max(1e-3, sat["machine_cpu_s"]))
                    if not rate:
                        rate = round(sat["received"] / args.seconds / 2, -2)
                    lat = _xdp_load(lab, bins, listen, src, sink, rate, args.seconds, args.size)
                    r["p50"].append(lat["p50_us"])
                    r["p99"].append(lat["p99_us"])
                    print(f"round {rnd + 1} {kind:12s} {said}socket generator: {r['pps'][-1]:>7.0f} pkt/s, "
                          f"{r['ppc_all'][-1]:>7.0f} per machine CPU-s | at {rate:.0f} pkt/s p50 "
                          f"{lat['p50_us']:.1f} us p99 {lat['p99_us']:.1f} us", flush=True)
                finally:
                    proc.terminate()
                    try:
                        proc.wait(5)
                    except subprocess.TimeoutExpired:
                        proc.kill()
    finally:
        lab.close()
    report(args, rate, kinds, res)


def report(args, rate, kinds, res) -> None:
    med = statistics.median

    def vs(kind, key):
        pairs = list(zip(res[kind][key], res["c_baseline"][key]))
        return med(a / b for a, b in pairs) if pairs else None

    def m(values):
        return med(values) if values else None

    def cell(v, fmt, width):
        return format("–", f">{width}") if v is None else format(v, f">{width}{fmt}")

    print(f"\nmedians of {args.rounds} rounds, {args.size}-byte datagrams. Closed loop (xdploop.c, {LOOP_INFLIGHT} "
          f"in flight round {args.flows} flows; not for generic XDP): packets per CPU-second of the whole machine "
          f"(/proc/stat, softirq included, the loop's own CPU too) and of the forwarder's CPU. Socket generator "
          f"(loadgen.c): the same at saturation, and the one-way latency through the forwarder at {rate:.0f} pkt/s")
    print(f"{'forwarder':12s} {'pkt/s':>8s} {'machine':>8s} {'vs C':>5s} {'fwd CPU':>8s} {'vs C':>5s} {'loop%':>5s} "
          f"{'lost':>4s} | {'pkt/s':>7s} {'machine':>7s} {'vs C':>5s} {'fwd CPU':>7s} {'vs C':>5s} "
          f"{'p50 us':>6s} {'p99 us':>6s}")
    summary = {}
    for kind in kinds:
        r = res[kind]
        s = summary[kind] = {
            "loop_pps": m(r["loop_pps"]), "loop_pps_per_machine_cpu": m(r["loop_ppc_all"]),
            "loop_machine_vs_c": vs(kind, "loop_ppc_all"), "loop_pps_per_cpu": m(r["loop_ppc"]),
            "loop_vs_c": vs(kind, "loop_ppc"), "loop_share": m(r["loop_gen_share"]),
            "loop_lost_max": max(r["loop_lost"], default=None), "loop_wrong_max": max(r["loop_wrong"], default=None),
            "loop_kernel_share_min": min(r["loop_kernel_share"], default=None),
            "pps": m(r["pps"]), "pps_per_machine_cpu": m(r["ppc_all"]), "machine_vs_c": vs(kind, "ppc_all"),
            "pps_per_cpu": m(r["ppc"]), "vs_c": vs(kind, "ppc"), "p50_us": m(r["p50"]), "p99_us": m(r["p99"])}
        if kind == "xdp_generic":  # its hook runs in the sending CPU's softirq here: not on the forwarder's CPU
            s["pps_per_cpu"] = s["vs_c"] = None
        share = "–" if s["loop_share"] is None else f"{100 * s['loop_share']:.0f}%"
        print(f"{kind:12s} {cell(s['loop_pps'], '.0f', 8)} {cell(s['loop_pps_per_machine_cpu'], '.0f', 8)} "
              f"{cell(s['loop_machine_vs_c'], '.2f', 5)} {cell(s['loop_pps_per_cpu'], '.0f', 8)} "
              f"{cell(s['loop_vs_c'], '.2f', 5)} {share:>5s} {cell(s['loop_lost_max'], 'd', 4)} | "
              f"{cell(s['pps'], '.0f', 7)} {cell(s['pps_per_machine_cpu'], '.0f', 7)} "
              f"{cell(s['machine_vs_c'], '.2f', 5)} {cell(s['pps_per_cpu'], '.0f', 7)} {cell(s['vs_c'], '.2f', 5)} "
              f"{cell(s['p50_us'], '.1f', 6)} {cell(s['p99_us'], '.1f', 6)}")
    for kind in ("voxgate", "xdp_native"):
        if summary[kind]["loop_kernel_share_min"] is not None:
            print(f"{kind}: the kernel path forwarded {100 * summary[kind]['loop_kernel_share_min']:.1f}% of the "
                  f"loop's datagrams (the least of {args.rounds} rounds; the relay's own counters)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"rate": rate, "raw": res, "summary": summary}, fh, indent=1)


if __name__ == "__main__":
    main()
