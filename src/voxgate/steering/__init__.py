"""Steering: where a call goes. The transceiver registry and placement (``placement``, sans-IO) and its Redis
shell (``registry``)."""
