"""Phone calls into the agent over SIP, the way OpenAI's Realtime SIP works.

``core`` is the sans-IO user agent server (transactions, dialogs, timers), ``message`` and ``sdp`` its formats
(parsed by ``sipmessage`` and aiortc), ``policy`` who may call, ``media`` the RTP of a call (G.711/G.722, jitter
buffer, DTMF), ``webhook`` the signed ``realtime.call.incoming``, and ``server`` the asyncio shell that a
transceiver runs with ``--sip-listen`` (``voxgate demo --sip``).
"""
