"""The voice agent's sans-IO core: what a Realtime call is and how it goes, with no audio I/O, threads, clock or
tasks (``tests/test_agent_layout.py`` keeps it so).

``connection.RealtimeConnection`` owns a call's state and puts the rest together: ``conversation`` (settings,
items, the response lifecycle), ``turns`` (turn detection, barge-in, the partial-inference points), ``eou`` (how
what was said sounds: finished, a question, a backchannel), ``events`` (the typed server events, the error shape,
ids), ``schema`` (client objects checked), ``voices`` (the voices and the API's names for them), ``text`` (a reply's
text on its way to speech). The shell (``agent/shell``) feeds it and carries out its actions.
"""
