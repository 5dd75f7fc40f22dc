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
