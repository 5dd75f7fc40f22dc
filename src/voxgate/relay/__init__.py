"""The relay: voxgate's stateless public UDP edge.

``core`` decides (sans-IO), ``forwarder`` / ``_fastpath`` move packets,
``flowstore`` mirrors flows to Redis, ``worker`` and ``supervisor`` are the
process shells, ``metrics`` exports what they count.
"""
