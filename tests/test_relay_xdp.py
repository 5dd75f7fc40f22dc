"""The relay's kernel path (relay/xdp): the shipped object is its source's, libbpf has what we call, and in a lab of
network namespaces (client ↔ veth ↔ relay ↔ veth ↔ transceiver) a real call's media is forwarded by XDP, both
ways: the kernel map holds the flow and its counters grow while the user-space relay forwards nothing of it; the
relay restarted (SIGKILL, then a new one) keeps the call; a forged token forwards nothing."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time

import pytest

from helpers import assert_audio_both_ways, long_speech_wav
from voxgate.lab.peers import metric_value
from voxgate.wire.token import new_secret_line


def test_the_shipped_object_is_built_from_its_source():
    if not shutil.which("clang"):
        pytest.fail("clang is needed to check relay_xdp.o against relay_xdp.c (Debian: clang libbpf-dev llvm)")
    run = subprocess.run([sys.executable, "-m", "voxgate.relay.xdp", "check"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


def test_libbpf_has_what_we_call():
    from voxgate.relay.xdp import _libbpf

    lib = _libbpf.libbpf()
    for name in _libbpf.SIGNATURES:
        assert getattr(lib, name), name


def _lab():
    from voxgate.lab.netns import LabUnavailable
    from voxgate.lab.relaylab import RelayLab

    try:
        return RelayLab()
    except LabUnavailable as exc:
        pytest.skip(str(exc))


def _relay(lab, secret, redis_url, mode="native"):
    from voxgate.lab.relaylab import RELAY_C, RELAY_T

    proc = lab.popen("rl", [sys.executable, "-m", "voxgate", "relay", "--listen", f"{RELAY_C}:3478",
                            "--internal-host", RELAY_T, "--workers", "1", "--secret-file", str(secret),
                            "--redis-url", redis_url, "--metrics", f"{RELAY_T}:9100", "--xdp", mode,
                            "--xdp-iface", "vc", "--xdp-iface", "vt"],
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ready = json.loads(proc.stdout.readline() or "{}")
    assert ready.get("event") == "relay_ready", (ready, proc.stderr.read() if proc.poll() is not None else "")
    return proc, ready


def _kernel_flows(lab) -> list[dict]:
    """The relay program's flow map, read with bpftool (what an operator would do)."""
    link = json.loads(subprocess.run(lab.exec_args("rl") + ["ip", "-j", "link", "show", "vc"], capture_output=True,
                                     text=True, check=True).stdout)[0]
    prog = link.get("xdp", {}).get("prog", {}).get("id")
    if prog is None:
        return []
    maps = json.loads(subprocess.run(["bpftool", "-j", "prog", "show", "id", str(prog)], capture_output=True,
                                     text=True, check=True).stdout)["map_ids"]
    for m in maps:
        info = json.loads(subprocess.run(["bpftool", "-j", "map", "show", "id", str(m)], capture_output=True,
                                         text=True, check=True).stdout)
        if info["name"] == "flows":
            return json.loads(subprocess.run(["bpftool", "-j", "map", "dump", "id", str(m)], capture_output=True,
                                             text=True, check=True).stdout)
    return []


def _relay_metrics(lab) -> str:
    from voxgate.lab.relaylab import RELAY_T

    return subprocess.run(lab.exec_args("rl") + ["python3", "-c", f"import urllib.request;print(urllib.request."
                                                 f"urlopen('http://{RELAY_T}:9100/metrics').read().decode())"],
                          capture_output=True, text=True, check=True).stdout


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("bpftool"), reason="needs root and bpftool")
def test_a_call_through_the_kernel_path_survives_a_relay_restart(tmp_path):
    from voxgate.lab.relaylab import RELAY_C, TX, forged_probe, stop

    secret = tmp_path / "secret"
    secret.write_text(new_secret_line(4) + "\n")
    wav = long_speech_wav(tmp_path / "talk.wav", 22.0)
    lab = _lab()
    procs = []
    try:
        lab.pass_through()
        # Redis in the relay's namespace (its flows outlive the relay process: a restart learns them back)
        rproc = lab.popen("rl", ["redis-server", "--port", "6390", "--bind", "127.0.0.1", "--save", "",
                                 "--appendonly", "no", "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)
        procs.append(rproc)
        redis_url = "redis://127.0.0.1:6390/0"
        time.sleep(0.5)
        relay, ready = _relay(lab, secret, redis_url)
        procs.append(relay)
        assert ready["kernel_path"].startswith("xdp native"), ready
        tx = lab.popen("tx", [sys.executable, "-m", "voxgate", "transceiver", "--http", f"{TX}:8080",
                              "--media", f"{TX}:40000", "--relay", f"{RELAY_C}:3478", "--secret-file", str(secret),
                              "--agent", "echo", "--no-auth"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True)
        procs.append(tx)
        assert json.loads(tx.stdout.readline())["event"] == "transceiver_ready"
        out = tmp_path / "out.wav"
        call = lab.popen("cl", [sys.executable, "-m", "voxgate", "call", "--url", f"http://{TX}:8080",
                                "--input", wav, "--output", str(out), "--duration", "22"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs.append(call)
        deadline = time.monotonic() + 15  # started, connected, verified, installed (the worker syncs every second)
        while time.monotonic() < deadline and not _kernel_flows(lab):
            time.sleep(0.5)
        flows = _kernel_flows(lab)
        assert len(flows) == 1, flows
        value = flows[0]["formatted"]["value"]
        assert socket.inet_ntoa(value["tx_ip"].to_bytes(4, "little")) == TX and value["pub_ip"]
        before_kernel = metric_value(_relay_metrics(lab), "voxgate_relay_kernel_packets_total")
        before_slow = metric_value(_relay_metrics(lab), "voxgate_relay_slow_path_total")
        time.sleep(2)
        after = _relay_metrics(lab)
        grew = metric_value(after, "voxgate_relay_kernel_packets_total") - before_kernel
        assert grew > 100, grew  # ~50 packets/s each way, forwarded by the kernel
        assert metric_value(after, "voxgate_relay_slow_path_total") - before_slow < 10
        # the relay killed and replaced mid-call: the call goes on (the program stays attached until the new one
        # replaces it; the new relay learns the flow back from Redis and installs it again)
        relay.kill()
        relay.wait(5)
        time.sleep(1)
        relay2, ready2 = _relay(lab, secret, redis_url)
        procs.append(relay2)
        stdout, stderr = call.communicate(timeout=40)
        assert call.returncode == 0, stderr[-2000:]
        result = json.loads(stdout.strip().splitlines()[-1])
        assert_audio_both_ways(result)
        # a forged token forwards nothing: a STUN check with a made-up ufrag, from the client's namespace
        drops = metric_value(_relay_metrics(lab), "voxgate_relay_drops_total")
        assert forged_probe(lab) == "silent"
        time.sleep(1.5)  # the worker's metrics are flushed every second
        assert metric_value(_relay_metrics(lab), "voxgate_relay_drops_total") > drops  # counted and dropped, not forwarded
    finally:
        stop(procs)
        lab.close()
