"""`voxgate lab`: worlds built on one machine to measure what distance does (network namespaces, delayed links),
and the instruments the tests and the benchmarks share (``harness.LocalCall``: an agent driven in-process;
``wer``: word errors; ``ports.free_port``; ``chromium``: the browser peer). Nothing in the product imports them."""
