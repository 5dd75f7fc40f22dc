"""The soak, short (bench/soak.py runs it for 20 minutes): calls coming and going on every transport, some killed
mid-call, garbage at every port; the processes hold no more at the end than the stated bounds allow."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))


def test_a_short_soak_leaks_nothing():
    import soak

    result = soak.soak(0.5, print)
    assert result["cycles"] >= 2 and result["turns"] > 0, result
    assert result["within_bounds"], result
