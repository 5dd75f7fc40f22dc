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

With ``--xdp`` (root; clang-built relay_xdp.o, libbpf1) the same comparison runs in a lab of two network
namespaces joined by a veth (the generator and its sink in one, the forwarder in the other, which forwards back
out of the same veth: XDP_TX), for ``c_baseline``, ``voxgate`` (the C path), ``xdp_native`` and ``xdp_generic``,
and CPU is counted per CPU from ``/proc/stat`` (user, system, softirq, …), not per process: the kernel path's work
is softirq, which no process's time shows. The forwarder's CPU does everything on the relay's side and only that:
the forwarder process, and the relay veth's receive processing (its NAPI, threaded and pinned there: GRO on, so
a path without XDP gets NAPI too); the generator's CPU does the generator and its own veth's receive processing.
The forwarder's packets per CPU-second are packets forwarded / that CPU's busy time; the whole machine's are shown
beside them.

    python bench/relay.py --xdp [--rounds 3] [--seconds 3]
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
        from voxgate.lab.netns import entered
        from voxgate.relay.xdp import Program

        with entered(self.gen):  # the veth peer of an XDP_TX needs XDP on: a pass-through
            self.programs.append(Program(["vgen"], "native", 1))

    def close(self):
        for p in self.programs:
            p.close()
        for ns in (self.gen, self.rl):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def _xdp_forwarder(lab, kind, bins, listen, sink, secret_file, src):
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
                                  "--internal-host", RELAY, "--xdp", mode, "--xdp-iface", "vc"],
                            stdout=subprocess.PIPE, text=True, env=env)
    ready = json.loads(proc.stdout.readline())
    internal = tuple(ready["workers"][0]["internal"])
    keyring = Keyring.load(secret_file)
    with entered(lab.gen):  # learn the flow with a token, then verify it as a transceiver would (DTLS done)
        snk = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        snk.bind((GEN, sink))
        snk.settimeout(2)
        cli = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        cli.bind((GEN, src))
        cli.settimeout(2)
        ufrag = mint(keyring, (GEN, sink), time.time())
        cli.sendto(stun.build(stun.BINDING_REQUEST, os.urandom(12), [stun.attr_username(ufrag + ":bench")]),
                   (RELAY, listen))
        snk.recvfrom(2048)
        hdr = b"\xf1\x02" + src.to_bytes(2, "big") + socket.inet_aton(GEN)
        snk.sendto(hdr + b"\x80" + b"v" * 40, (internal[0] if internal[0] not in ("0.0.0.0", "::") else RELAY,
                                              internal[1]))
        cli.recvfrom(2048)
        cli.close()
        snk.close()
    time.sleep(1.5)  # the worker installs verified flows in the kernel once a second
    return proc


def _xdp_load(lab, bins, listen, src, sink, rate, seconds, size):
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


def main_xdp(args):
    tmp = tempfile.mkdtemp(prefix="voxgate-bench-")
    bins = build(os.path.join(HERE, "out"))
    secret_file = os.path.join(tmp, "secret")
    with open(secret_file, "w") as fh:
        fh.write(new_secret_line() + "\n")
    kinds = ["c_baseline", "voxgate", "xdp_native", "xdp_generic"]
    res = {k: {"ppc": [], "ppc_all": [], "pps": [], "p50": [], "p99": []} for k in kinds}
    lab = XdpLab()
    rate = args.rate
    try:
        for rnd in range(args.rounds):
            order = kinds[rnd % len(kinds):] + kinds[: rnd % len(kinds)]
            if rnd == 0:
                order.remove("c_baseline")
                order.insert(0, "c_baseline")
            for kind in order:
                listen, sink, src = free_port(), free_port(), free_port()
                proc = _xdp_forwarder(lab, kind, bins, listen, sink, secret_file, src)
                try:
                    sat = _xdp_load(lab, bins, listen, src, sink, 0, args.seconds, args.size)
                    res[kind]["pps"].append(sat["received"] / args.seconds)
                    res[kind]["ppc"].append(sat["received"] / max(1e-3, sat["forwarder_cpu_s"]))
                    res[kind]["ppc_all"].append(sat["received"] / max(1e-3, sat["machine_cpu_s"]))
                    if not rate:
                        rate = round(sat["received"] / args.seconds / 2, -2)
                    lat = _xdp_load(lab, bins, listen, src, sink, rate, args.seconds, args.size)
                    res[kind]["p50"].append(lat["p50_us"])
                    res[kind]["p99"].append(lat["p99_us"])
                    print(f"round {rnd + 1} {kind:12s} {sat['received'] / args.seconds:>9.0f} pkt/s, "
                          f"{res[kind]['ppc'][-1]:>9.0f} pkt/CPU-s (forwarder's CPU {sat['forwarder_cpu_s']:.2f} s, machine "
                          f"{sat['machine_cpu_s']:.2f} s) | at {rate:.0f} pkt/s p50 {lat['p50_us']:.1f} us p99 "
                          f"{lat['p99_us']:.1f} us", flush=True)
                finally:
                    proc.terminate()
                    try:
                        proc.wait(5)
                    except subprocess.TimeoutExpired:
                        proc.kill()
    finally:
        lab.close()
    med = statistics.median
    print(f"\nmedians of {args.rounds} rounds, {args.size}-byte datagrams, packets per CPU-second of the "
          f"forwarder's CPU (softirq included; the whole machine's, generator included, last), latency at "
          f"{rate:.0f} pkt/s")
    print(f"{'forwarder':12s} {'pkt/s':>9s} {'pkt/CPU-s':>10s} {'vs C fwd':>9s} {'p50 us':>8s} {'p99 us':>8s} "
          f"{'machine':>9s} {'vs C':>6s}")
    summary = {}
    for kind in kinds:
        r = res[kind]
        vs = med(a / b for a, b in zip(r["ppc"], res["c_baseline"]["ppc"]))
        summary[kind] = {"pps": med(r["pps"]), "pps_per_cpu": med(r["ppc"]), "vs_c": vs, "p50_us": med(r["p50"]),
                         "p99_us": med(r["p99"]), "pps_per_machine_cpu": med(r["ppc_all"]),
                         "machine_vs_c": med(a / b for a, b in zip(r["ppc_all"], res["c_baseline"]["ppc_all"]))}
        s = summary[kind]
        print(f"{kind:12s} {s['pps']:>9.0f} {s['pps_per_cpu']:>10.0f} {vs:>9.2f} {s['p50_us']:>8.1f} "
              f"{s['p99_us']:>8.1f} {s['pps_per_machine_cpu']:>9.0f} {s['machine_vs_c']:>6.2f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"rate": rate, "raw": res, "summary": summary}, fh, indent=1)


if __name__ == "__main__":
    main()
