"""`voxgate lab`: worlds built on one machine to measure what distance does (network namespaces, delayed links)."""
