"""The relay's kernel data plane: ``relay_xdp.c`` attached with XDP, and the user-space relay as its control plane.

The kernel forwards the packets of verified flows (a client that finished DTLS with its transceiver) both ways and
passes everything else up; the worker (``relay/worker.py``) keeps deciding: it learns flows (tokens, Redis),
verifies them, and once a flow is verified installs it here (``KernelPath.sync``, every second, with the worker's
internal port and the source address toward its transceiver). It reads each flow's counters and last-seen time
back, so idle expiry and ``voxgate_relay_packets_total`` stay true, and removes a flow from the kernel when it
expires, moves or is forgotten. A token is verified only in user space: the kernel never routes a flow user space
did not install.

The loader is libbpf (Debian's ``libbpf1``, the library the kernel's own tools use) through ``ctypes``
(``_libbpf.py``): it does the ELF relocations, BTF and map creation that a hand-made ``bpf()`` wrapper would have to
redo, and there is no maintained Python binding of it on PyPI that installs without a compiler.
"""

from __future__ import annotations

import ctypes
import errno
import ipaddress
import logging
import os
import socket
import struct
import time

log = logging.getLogger("voxgate.relay")

HERE = os.path.dirname(os.path.abspath(__file__))
OBJECT = os.path.join(HERE, "relay_xdp.o")
SOURCE = os.path.join(HERE, "relay_xdp.c")
MODES = ("auto", "native", "generic", "off")
XDP_FLAGS_SKB_MODE, XDP_FLAGS_DRV_MODE = 1 << 1, 1 << 2
FLOW = struct.Struct("<IHHII QQQQQ")  # struct flow (network-order fields kept as their raw bytes' value)
KEY = struct.Struct("<IHH")
ST_C2T, ST_T2C, ST_PASS, ST_NO_ROUTE = range(4)


class XdpUnavailable(RuntimeError):
    """Why the kernel path cannot run here (no libbpf, no privilege, the driver refuses, …)."""


def _raw_ip(ip: str) -> int:
    return int.from_bytes(ipaddress.IPv4Address(ip).packed, "little")


def _raw_port(port: int) -> int:
    return int.from_bytes(port.to_bytes(2, "big"), "little")


def _ip_of(raw: int) -> str:
    return str(ipaddress.IPv4Address(raw.to_bytes(4, "little")))


def _port_of(raw: int) -> int:
    return int.from_bytes(raw.to_bytes(2, "little"), "big")


class Program:
    """The XDP object loaded (its maps made), attached to interfaces; closed, it is detached."""

    def __init__(self, interfaces: list[str], mode: str, public_port: int, path: str = OBJECT):
        from . import _libbpf as lb

        self.lb = lb.libbpf()
        self.obj = self.lb.bpf_object__open_file(path.encode(), None)
        if not self.obj:
            raise XdpUnavailable(f"cannot open {path}: {os.strerror(ctypes.get_errno())}")
        rc = self.lb.bpf_object__load(self.obj)
        if rc:
            self.lb.bpf_object__close(self.obj)
            raise XdpUnavailable(f"the kernel refused the program: {os.strerror(-rc)} (root or CAP_BPF+CAP_NET_ADMIN"
                                 " is needed)")
        prog = self.lb.bpf_object__find_program_by_name(self.obj, b"voxgate_relay")
        self.prog_fd = self.lb.bpf_program__fd(prog)
        self.maps = {name: self.lb.bpf_map__fd(self.lb.bpf_object__find_map_by_name(self.obj, name.encode()))
                     for name in ("flows", "config", "internal_ports", "stats")}
        self.attached: list[tuple[int, int]] = []
        self.mode = None
        cfg = struct.pack("<HHI", _raw_port(public_port), 0, 0)
        self._update("config", struct.pack("<I", 0), cfg)
        try:
            for name in interfaces:
                self.attach(name, mode)
        except XdpUnavailable:
            self.close()
            raise

    def attach(self, name: str, mode: str) -> None:
        index = socket.if_nametoindex(name)
        tries = {"native": [XDP_FLAGS_DRV_MODE], "generic": [XDP_FLAGS_SKB_MODE],
                 "auto": [XDP_FLAGS_DRV_MODE, XDP_FLAGS_SKB_MODE]}[mode]
        why = ""
        for flags in tries:
            rc = self.lb.bpf_xdp_attach(index, self.prog_fd, flags, None)
            if rc == 0:
                self.attached.append((index, flags))
                self.mode = "native" if flags == XDP_FLAGS_DRV_MODE else "generic"
                return
            why = os.strerror(-rc)
        raise XdpUnavailable(f"XDP ({mode}) on {name}: {why}")

    def close(self) -> None:
        for index, flags in self.attached:
            self.lb.bpf_xdp_detach(index, flags, None)
        self.attached = []
        if self.obj:
            self.lb.bpf_object__close(self.obj)
            self.obj = None

    # ------------------------------------------------------------- maps
    def _update(self, name: str, key: bytes, value: bytes) -> None:
        rc = self.lb.bpf_map_update_elem(self.maps[name], key, value, 0)
        if rc:
            raise OSError(-rc, f"bpf map {name}: {os.strerror(-rc)}")

    def _lookup(self, name: str, key: bytes, size: int) -> bytes | None:
        buf = ctypes.create_string_buffer(size)
        rc = self.lb.bpf_map_lookup_elem(self.maps[name], key, buf)
        return None if rc else buf.raw

    def _delete(self, name: str, key: bytes) -> bool:
        return self.lb.bpf_map_delete_elem(self.maps[name], key) == 0

    def add_internal_port(self, port: int) -> None:
        self._update("internal_ports", struct.pack("<H", _raw_port(port)), b"\x01")

    def install(self, client: tuple[str, int], transceiver: tuple[str, int], int_ip: str, int_port: int) -> None:
        key = KEY.pack(_raw_ip(client[0]), _raw_port(client[1]), 0)
        old = self._lookup("flows", key, FLOW.size)
        pub_ip = FLOW.unpack(old)[4] if old else 0  # what the kernel learned of our public address stays
        value = FLOW.pack(_raw_ip(transceiver[0]), _raw_port(transceiver[1]), _raw_port(int_port), _raw_ip(int_ip),
                          pub_ip, 0, 0, 0, 0, 0)
        self._update("flows", key, value)

    def remove(self, client: tuple[str, int]) -> bool:
        return self._delete("flows", KEY.pack(_raw_ip(client[0]), _raw_port(client[1]), 0))

    def read(self, client: tuple[str, int]) -> dict | None:
        raw = self._lookup("flows", KEY.pack(_raw_ip(client[0]), _raw_port(client[1]), 0), FLOW.size)
        if raw is None:
            return None
        tx_ip, tx_port, int_port, int_ip, pub_ip, c2tp, c2tb, t2cp, t2cb, seen = FLOW.unpack(raw)
        return {"transceiver": (_ip_of(tx_ip), _port_of(tx_port)), "internal_port": _port_of(int_port),
                "public_ip": _ip_of(pub_ip) if pub_ip else None, "c2t_packets": c2tp, "c2t_bytes": c2tb,
                "t2c_packets": t2cp, "t2c_bytes": t2cb, "last_seen_ns": seen}

    def forget_port(self, port: int) -> int:
        """A worker died: its internal port and the flows it had installed go (their clients' next packets reach a
        worker again, which learns them back from Redis). Returns the flows removed."""
        gone = 0
        for client in self.flows():
            v = self.read(client)
            if v is not None and v["internal_port"] == port and self.remove(client):
                gone += 1
        self._delete("internal_ports", struct.pack("<H", _raw_port(port)))
        return gone

    def flows(self) -> list[tuple[str, int]]:
        out, key = [], None
        nxt = ctypes.create_string_buffer(KEY.size)
        while self.lb.bpf_map_get_next_key(self.maps["flows"], key, nxt) == 0:
            ip, port, _ = KEY.unpack(nxt.raw)
            out.append((_ip_of(ip), _port_of(port)))
            key = nxt.raw
        return out

    def stats(self) -> dict:
        """The program's own counters, summed over CPUs: forwarded each way, passed up, no route yet."""
        ncpu = self.lb.libbpf_num_possible_cpus()
        out = {}
        for i, name in enumerate(("kernel_c2t", "kernel_t2c", "kernel_pass", "kernel_no_route")):
            raw = self._lookup("stats", struct.pack("<I", i), 8 * ncpu)
            out[name] = sum(struct.unpack(f"<{ncpu}Q", raw)) if raw else 0
        return out


def _now_ns() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)  # bpf_ktime_get_ns's clock


class KernelPath:
    """One worker's share of the kernel path: the flows it installed, and what their counters said last."""

    def __init__(self, program: Program, internal_port: int):
        self.prog, self.internal_port = program, internal_port
        self.installed: dict[tuple, tuple] = {}  # client -> (transceiver, last counters (c2tp, c2tb, t2cp, t2cb))
        self.counts = dict.fromkeys(("client_packets", "client_bytes", "to_transceiver_packets",
                                     "to_transceiver_bytes", "transceiver_packets", "transceiver_bytes",
                                     "to_client_packets", "to_client_bytes"), 0)
        self._sources: dict[tuple, str] = {}
        program.add_internal_port(internal_port)

    def source_toward(self, transceiver: tuple[str, int]) -> str:
        """The address the kernel sends from toward ``transceiver`` (the internal socket may be bound to any)."""
        src = self._sources.get(transceiver)
        if src is None:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                s.connect(transceiver)
                src = s.getsockname()[0]
            finally:
                s.close()
            self._sources[transceiver] = src
        return src

    def sync(self, flows) -> list:
        """Make the kernel hold exactly the verified IPv4 flows of ``flows`` (the forwarder's ``active_since(0)``
        list) and fold the kernel's counters into ours. Returns the clients that sent through the kernel since the
        last sync: the forwarder is to ``touch`` them (their packets no longer reach it)."""
        want = {}
        for client, transceiver, verified in flows:
            if verified and ":" not in client[0] and ":" not in transceiver[0]:
                want[tuple(client)] = tuple(transceiver[:2])
        for client in list(self.installed):
            if want.get(client) != self.installed[client][0]:
                self._read(client)
                self.prog.remove(client)
                del self.installed[client]
        touched = []
        for client, transceiver in want.items():
            if client not in self.installed:
                try:
                    self.prog.install(client, transceiver, self.source_toward(transceiver), self.internal_port)
                except OSError as exc:
                    if exc.errno != errno.E2BIG:
                        log.warning("kernel path: cannot install %s: %s", client, exc)
                    continue
                self.installed[client] = (transceiver, (0, 0, 0, 0))
            elif self._read(client):
                touched.append(client)
        return touched

    def _read(self, client) -> bool:
        """Fold the flow's kernel counters into ours; True if its client sent since the last read."""
        v = self.prog.read(client)
        if v is None:
            return False
        transceiver, (a, b, c, d) = self.installed[client]
        now = (v["c2t_packets"], v["c2t_bytes"], v["t2c_packets"], v["t2c_bytes"])
        dc2tp, dc2tb, dt2cp, dt2cb = (max(0, x - y) for x, y in zip(now, (a, b, c, d)))
        k = self.counts
        k["client_packets"] += dc2tp
        k["client_bytes"] += dc2tb
        k["to_transceiver_packets"] += dc2tp
        k["to_transceiver_bytes"] += dc2tb + 8 * dc2tp
        k["transceiver_packets"] += dt2cp
        k["transceiver_bytes"] += dt2cb + 8 * dt2cp
        k["to_client_packets"] += dt2cp
        k["to_client_bytes"] += dt2cb
        self.installed[client] = (transceiver, now)
        return dc2tp > 0

    def close(self) -> None:
        for client in list(self.installed):
            self.prog.remove(client)
        self.installed.clear()


def load(interfaces: list[str], mode: str, public_port: int) -> Program | None:
    """``--xdp``: off -> None; native/generic -> the program, or XdpUnavailable; auto -> the program where it
    loads, else None (and the C path runs)."""
    if mode == "off":
        return None
    if not interfaces:
        interfaces = default_interfaces()
    try:
        return Program(interfaces, mode, public_port)
    except (XdpUnavailable, OSError) as exc:
        if mode != "auto":
            raise XdpUnavailable(str(exc)) from None
        log.warning("kernel path (XDP) off: %s; the C path forwards", exc)
        return None


def default_interfaces() -> list[str]:
    """The interfaces that are up, loopback left out (XDP there is generic only, and a relay's clients are not on
    it)."""
    out = []
    for index, name in socket.if_nameindex():
        try:
            with open(f"/sys/class/net/{name}/operstate") as fh:
                state = fh.read().strip()
        except OSError:
            continue
        if name != "lo" and state in ("up", "unknown"):
            out.append(name)
    return out
