"""`voxgate relay`: start N workers on one port, restart the ones that die, serve /metrics and /healthz.

Workers are forked processes, not threads: each runs its own interpreter on
its own core with its own SO_REUSEPORT socket, so no GIL is shared.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from multiprocessing.connection import wait
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .worker import RelayConfig, worker_main

log = logging.getLogger("voxgate.relay")


class Supervisor:
    def __init__(self, cfg: RelayConfig):
        self.cfg = cfg
        self.ctx = multiprocessing.get_context("fork")
        self.procs: dict[int, multiprocessing.Process] = {}
        self.info: dict[int, dict] = {}
        self.conns: dict[int, object] = {}
        self.stopping = False
        self.restarts = 0
        self.tcp_listener = None
        self.program = None  # xdp.Program: the kernel path, attached before the workers fork

    TCP = -1  # the ICE-TCP front's index among the processes

    def start_worker(self, index: int):
        parent, child = self.ctx.Pipe(duplex=False)
        if index == self.TCP:
            from .tcp import open_listener, tcp_main

            # the listening socket belongs to the supervisor: a TCP front that dies leaves it open, so clients that
            # reconnect at once (Chromium does, on its next packet) wait in the backlog for the new front instead
            # of being refused (a refused reconnect makes Chromium give the connection up)
            if self.tcp_listener is None:
                self.tcp_listener = open_listener(self.cfg.tcp_listen)
            p = self.ctx.Process(target=tcp_main, args=(self.cfg, child, self.tcp_listener), name="relay-tcp",
                                 daemon=True)
        else:
            p = self.ctx.Process(target=worker_main, args=(self.cfg, index, child, self.program),
                                 name=f"relay-worker-{index}",
                                 daemon=True)
        p.start()
        child.close()
        self.procs[index], self.conns[index] = p, parent

    def wait_ready(self, index: int, timeout: float = 10.0) -> dict:
        conn = self.conns[index]
        if not conn.poll(timeout):
            raise RuntimeError(f"worker {index} did not start (exit code {self.procs[index].exitcode})")
        try:
            info = conn.recv()
        except EOFError:
            raise RuntimeError(f"worker {index} died on start (exit code {self.procs[index].exitcode})") from None
        self.info[index] = info
        return info

    def healthy(self) -> bool:
        return all(p.is_alive() for p in self.procs.values())

    def health(self) -> dict:
        return {
            "status": "ok" if self.healthy() else "degraded",
            "listen": f"{self.cfg.listen[0]}:{self.cfg.listen[1]}",
            "restarts": self.restarts,
            "workers": [
                dict(self.info.get(i, {}), alive=p.is_alive()) for i, p in sorted(self.procs.items()) if i >= 0
            ],
            "tcp": dict(self.info.get(self.TCP, {}), alive=self.procs[self.TCP].is_alive())
            if self.TCP in self.procs else None,
        }

    def serve_http(self):
        sup = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path == "/metrics":
                    from .metrics import render

                    body, ctype, code = render(), "text/plain; version=0.0.4", 200
                elif self.path == "/healthz":
                    body = json.dumps(sup.health()).encode()
                    ctype, code = "application/json", 200 if sup.healthy() else 503
                else:
                    body, ctype, code = b'{"error": "not found"}', "application/json", 404
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        server = ThreadingHTTPServer(self.cfg.metrics, Handler)
        threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
        return server

    def run(self) -> int:
        from .metrics import mark_dead

        def stop(*_):
            self.stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        from .xdp import XdpUnavailable, load

        try:
            self.program = load(self.cfg.xdp_interfaces, self.cfg.xdp, self.cfg.listen[1])
        except XdpUnavailable as exc:  # --xdp native/generic asked for it: say why, and do not start
            print(json.dumps({"event": "relay_failed", "error": f"--xdp {self.cfg.xdp}: {exc}"}), flush=True)
            return 1
        indexes = list(range(self.cfg.workers)) + ([self.TCP] if self.cfg.tcp_listen else [])
        for i in indexes:
            self.start_worker(i)
        for i in indexes:
            self.wait_ready(i)
        server = self.serve_http() if self.cfg.metrics else None
        fast = all(info.get("fast_path") for i, info in self.info.items() if i >= 0)
        print(json.dumps({
            "event": "relay_ready",
            "listen": f"{self.cfg.listen[0]}:{self.cfg.listen[1]}",
            "workers": [self.info[i] for i in sorted(self.info) if i >= 0],
            "fast_path": "c" if fast else "python",
            "kernel_path": (f"xdp {self.program.mode} on "
                            + ",".join(socket.if_indextoname(i) for i, _ in self.program.attached))
            if self.program is not None else "off",
            "tcp": self.info[self.TCP]["tcp"] if self.TCP in self.info else None,
            "redis": self.cfg.redis_url,
            "metrics": f"http://{self.cfg.metrics[0]}:{self.cfg.metrics[1]}/metrics" if self.cfg.metrics else None,
        }), flush=True)
        if not fast:
            log.warning("C fast path unavailable: forwarding in pure Python (slower)")
        wake_r, wake_w = os.pipe()  # a signal wakes the wait below (no polling: it waits on the workers' sentinels)
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        while not self.stopping:
            if wake_r in wait([p.sentinel for p in self.procs.values()] + [wake_r]):
                os.read(wake_r, 512)
            for i, p in list(self.procs.items()):
                if not p.is_alive() and not self.stopping:
                    log.error("worker %d (pid %s) exited with %s; restarting", i, p.pid, p.exitcode)
                    mark_dead(p.pid)
                    dead = self.info.pop(i, None)
                    if self.program is not None and dead and dead.get("internal"):
                        self.program.forget_port(dead["internal"][1])
                    self.start_worker(i)
                    try:
                        self.wait_ready(i)
                    except RuntimeError as exc:
                        log.error("%s", exc)
                    self.restarts += 1
        for p in self.procs.values():
            if p.is_alive():
                p.terminate()
        deadline = time.monotonic() + 5
        for p in self.procs.values():
            p.join(max(0.1, deadline - time.monotonic()))
            if p.is_alive():
                p.kill()
            mark_dead(p.pid)
        if server:
            server.shutdown()
        signal.set_wakeup_fd(-1)
        os.close(wake_r)
        os.close(wake_w)
        if self.tcp_listener is not None:
            self.tcp_listener.close()
        if self.program is not None:  # detached: the interfaces are as they were
            self.program.close()
        print(json.dumps({"event": "relay_stopped"}), flush=True)
        return 0


def run_relay(cfg: RelayConfig) -> int:
    from .metrics import cleanup, enable_multiprocess

    path, created = enable_multiprocess()
    try:
        return Supervisor(cfg).run()
    finally:
        if created:
            cleanup(path)
        sys.stdout.flush()
