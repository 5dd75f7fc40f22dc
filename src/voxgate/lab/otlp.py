"""An OTLP/HTTP trace receiver for tests and the lab, in a process of its own: it decodes each export with
``opentelemetry-proto`` (the protocol's own generated classes) and writes one JSON line per span to a file.

    python -m voxgate.lab.otlp PORT OUT.jsonl

A collector (the OpenTelemetry Collector, Jaeger, Tempo) is what a deployment points ``--otlp-endpoint`` at; none
installs from PyPI, Debian or npm here, and what a test must check is what went over the wire, decoded by the
protocol's reference classes, not by our exporter.
"""

from __future__ import annotations

import gzip
import json
import socket
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def _value(v):
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    return getattr(v, kind) if kind else None


def _spans(body: bytes) -> list[dict]:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    req = ExportTraceServiceRequest()
    req.ParseFromString(body)
    out = []
    for rs in req.resource_spans:
        resource = {a.key: _value(a.value) for a in rs.resource.attributes}
        for ss in rs.scope_spans:
            for s in ss.spans:
                out.append({"name": s.name, "trace_id": s.trace_id.hex(), "span_id": s.span_id.hex(),
                            "parent_span_id": s.parent_span_id.hex(), "start_ns": s.start_time_unix_nano,
                            "end_ns": s.end_time_unix_nano, "kind": s.kind,
                            "attributes": {a.key: _value(a.value) for a in s.attributes},
                            "events": [{"name": e.name, "ns": e.time_unix_nano} for e in s.events],
                            "service": resource.get("service.name")})
    return out


def serve(port: int, path: str) -> None:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            if self.path != "/v1/traces":
                self.send_response(404)
                self.end_headers()
                return
            with open(path, "a") as fh:
                for span in _spans(body):
                    fh.write(json.dumps(span) + "\n")
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *a):
            pass

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


def receiver(path: str) -> tuple[subprocess.Popen, str]:
    """The receiver in another process, listening: (its process, its base URL for ``--otlp-endpoint``)."""
    from .ports import free_port

    port = free_port(socket.SOCK_STREAM)
    proc = subprocess.Popen([sys.executable, "-m", "voxgate.lab.otlp", str(port), path])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("the OTLP receiver did not start")


def read(path: str) -> list[dict]:
    try:
        with open(path) as fh:
            return [json.loads(line) for line in fh if line.strip()]
    except FileNotFoundError:
        return []


if __name__ == "__main__":
    serve(int(sys.argv[1]), sys.argv[2])
