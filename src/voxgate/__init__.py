"""voxgate: real-time voice between people and AI models over standard WebRTC.

Components, one package each: ``wire`` (sans-IO codecs shared by everything),
``relay`` (the stateless public UDP edge).
"""

__version__ = "0.1.0"
