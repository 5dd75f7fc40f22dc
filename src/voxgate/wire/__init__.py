"""Sans-IO wire formats: STUN, packet classes, routing tokens, relay encapsulation.

Nothing in this package opens a socket or reads a clock; every function takes
bytes (and, where it matters, the time) and returns values or raises a
``ValueError`` subclass that names the problem.
"""
