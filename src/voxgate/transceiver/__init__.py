"""The transceiver: every WebRTC session of this process on one UDP socket behind the relays.

``ice`` is the sans-IO ICE-lite responder and demultiplexer, ``sdp`` reads
offers and writes answers, ``media`` is the Opus/RTP seam to the agent,
``session`` glues one call's DTLS/SRTP/SCTP (from aiortc) to the shared socket,
``endpoint`` is the socket, ``http`` the signaling API, ``server`` the wiring.
"""
