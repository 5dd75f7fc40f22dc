"""The tests' peers and process helpers: they live in ``voxgate.lab.peers``, shared with the benchmarks."""

from voxgate.lab.peers import *  # noqa: F401,F403
