"""The call layer: what every transport shares beneath the agent.

``io`` is the agent's view of a call (``CallIO``) and the waiters a transport resolves; ``paced`` the paced output
(``PacedOut``) and the call that sends it on a clock (``PacedCall``: WebRTC sessions and phone calls); ``registry``
the one table of live calls and the rule for admitting one; ``phone`` the interface between the transceiver and a
phone server. The layer imports no transport and no agent: ``transceiver`` and ``sip`` import it, never each other.
"""
