"""Clients: `voxgate call`, a Realtime-style WebRTC caller built on aiortc (used by the tests too)."""
