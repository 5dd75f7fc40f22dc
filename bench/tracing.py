"""What tracing costs a call: per response, the work the executor does for its trace, off (the default) and on
(spans made and handed to the SDK's batch processor, exported by OTLP/HTTP to a receiver in another process).

    python bench/tracing.py [--responses 20000]

Off, a response costs one ``is None`` test: nothing of OpenTelemetry is imported (checked here). On, it is a turn
span, a chat span and their stage events, made in the call's event loop; the export runs on the SDK's thread.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time

import common  # noqa: F401  (the source tree on the path)


def marks(t0: float) -> dict:
    return {"speech_end": t0, "turn_end": t0 + 0.2, "started": t0 + 0.21, "final_transcript": t0 + 0.25,
            "first_token": t0 + 0.3, "first_chunk": t0 + 0.32, "first_tts_audio": t0 + 0.38,
            "first_audio_written": t0 + 0.381, "first_audio_sent": t0 + 0.39}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--responses", type=int, default=20000)
    args = ap.parse_args()
    from voxgate import tracing

    info = {"id": "resp_x", "status": "completed", "reason": None, "tokens": 12, "barged": False, "model": "m",
            "tool_calls": 0}
    n = args.responses
    t = time.perf_counter()
    for _ in range(n):  # what the executor does per call and per response with tracing off
        trace = tracing.CallTrace.start("rtc_x", {"voxgate.transport": "webrtc"})
        if trace is not None:
            trace.response(marks(time.monotonic()), info)
    off_us = (time.perf_counter() - t) / n * 1e6
    assert "opentelemetry" not in sys.modules, "tracing off imported OpenTelemetry"

    from voxgate.lab.otlp import read, receiver

    path = tempfile.mktemp(suffix=".jsonl")
    proc, url = receiver(path)
    try:
        tracing.configure(url, service="bench")
        trace = tracing.CallTrace.start("rtc_x", {"voxgate.transport": "webrtc"})
        t = time.perf_counter()
        for _ in range(n):
            trace.response(marks(time.monotonic()), info)
        on_us = (time.perf_counter() - t) / n * 1e6
        trace.end("ended")
        tracing.shutdown()
        got = len(read(path))
    finally:
        proc.kill()
    print(f"per response: off {off_us:.2f} us, on {on_us:.1f} us (span creation in the event loop); "
          f"{got} spans reached the receiver of {2 * n + 1} made (the batch queue drops beyond 2048 when full)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
