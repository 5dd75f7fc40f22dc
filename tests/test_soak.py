"""The soak, short (bench/soak.py runs it for 20 minutes): calls coming and going on every transport, some killed
mid-call, garbage at every port; at the end the processes hold no more descriptors, tasks, sessions or relay memory
than at the start. The transceiver's RSS is reported, not bounded here: its allocators and recognizer pool warm up
for about ten minutes before it is flat (the 20-minute figures in docs/performance.md)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))


def test_a_short_soak_leaks_nothing():
    import soak

    result = soak.soak(0.5, print)
    assert result["cycles"] >= 2 and result["turns"] > 0, result
    grew, bounds = result["growth"], result["bounds"]
    for key in ("transceiver_fds", "relay_fds", "asyncio_tasks", "sessions", "redis_keys", "relay_rss_mb"):
        assert grew[key] <= bounds[key], (key, result)
