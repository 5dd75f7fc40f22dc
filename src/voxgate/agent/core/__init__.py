"""The voice agent's sans-IO core: what a Realtime call is and how it goes, with no audio I/O, threads, clock or
tasks (``tests/test_agent_layout.py`` keeps it so).

``engine.Engine`` owns a call's state, applies its own decisions and puts the rest together: ``conversation``
(settings, items, which response is live), ``reply`` (each response's record and its ``response.*`` events),
``turns`` (turn detection, barge-in, the partial-inference points), ``eou`` (how
what was said sounds: finished, a question, a backchannel), ``events`` (the typed server events, the error shape,
ids), ``schema`` (client objects checked), ``voices`` (the voices and the API's names for them), ``text`` (a reply's
text on its way to speech). The shell (``agent/shell``) tells it what happens and carries out the I/O it asks for.
"""
