"""Network namespaces for the lab: created, wired and always removed by the process that made them."""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import subprocess
import threading

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


class LabUnavailable(RuntimeError):
    """The lab cannot run here (not root, no iproute2, no /dev/net/tun): the one-line reason."""


def check_available():
    if os.geteuid() != 0:
        raise LabUnavailable("the lab needs root (it creates network namespaces)")
    if not shutil.which("ip"):
        raise LabUnavailable("the lab needs iproute2 (`ip`; apt-get install iproute2)")
    if not os.path.exists("/dev/net/tun"):
        raise LabUnavailable("the lab needs /dev/net/tun")


def ip(*args: str):
    out = subprocess.run(["ip", *args], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {out.stderr.strip()}")


@contextlib.contextmanager
def entered(name: str):
    """Run the block with this thread in namespace ``name`` (setns is per thread for network namespaces)."""
    here = os.open(f"/proc/self/task/{threading.get_native_id()}/ns/net", os.O_RDONLY)
    there = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if _libc.setns(there, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {name}")
        try:
            yield
        finally:
            _libc.setns(here, CLONE_NEWNET)
    finally:
        os.close(here)
        os.close(there)


class Namespaces:
    """The namespaces of one lab, each with one address on its loopback; removed by ``close`` (call it always)."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.names: dict[str, str] = {}  # short name -> netns name
        self.addrs: dict[str, str] = {}

    def add(self, short: str, addr: str) -> str:
        name = f"{self.prefix}-{short}"
        ip("netns", "add", name)
        self.names[short] = name
        self.addrs[short] = addr
        ip("-n", name, "link", "set", "lo", "up")
        return name

    def address(self, short: str, dev: str = "lo"):
        """Put the namespace's address on ``dev`` (a browser gathers candidates from non-loopback devices only)."""
        ip("-n", self.names[short], "link", "set", dev, "up")
        ip("-n", self.names[short], "addr", "add", f"{self.addrs[short]}/32", "dev", dev)

    def route(self, short: str, dev: str, peer: str):
        """In ``short``, reach ``peer``'s address over ``dev`` (a TUN device), from our own address."""
        ns = self.names[short]
        ip("-n", ns, "link", "set", dev, "up")
        ip("-n", ns, "route", "add", f"{self.addrs[peer]}/32", "dev", dev, "src", self.addrs[short])

    def exec_args(self, short: str) -> list[str]:
        return ["ip", "netns", "exec", self.names[short]]

    def close(self):
        for name in self.names.values():
            pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), 9)
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        self.names.clear()


def remove_orphans(prefix: str = "vxlab") -> list[str]:
    """Remove the namespaces of labs whose process is gone (killed with SIGKILL, so it could not clean up)."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    removed = []
    for name in (line.split()[0] for line in out.splitlines() if line.startswith(prefix)):
        owner = name[len(prefix):].split("-", 1)[0]
        if owner.isdigit() and not os.path.exists(f"/proc/{owner}"):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
            removed.append(name)
    return removed
