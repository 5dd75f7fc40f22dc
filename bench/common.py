"""What the benchmarks share: the source tree and the tests' helpers on the path, free ports, CPU time from /proc.

Benchmarks run as scripts (``python bench/NAME.py``), so this directory is on ``sys.path`` and they
``import common`` first.
"""

from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(HERE, "..", "src")
for path in (os.path.join(HERE, "..", "tests"), SRC):
    if path not in sys.path:
        sys.path.insert(0, path)

from helpers import free_port  # noqa: E402,F401  (free for UDP and TCP alike)


def cpu_seconds(pids) -> float:
    """utime+stime of the processes (their threads included), from /proc; a process that has exited counts 0."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total / tick


def serve_dir(directory: str = HERE):
    """A static HTTP server for ``directory`` on a free port, in a thread: (server, port). ``server.shutdown()``."""
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=directory, **kw)

        def log_message(self, *a):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]
