"""Every touch of aiortc's private names, in one module, pinned to the aiortc versions tested.

voxgate uses aiortc's DTLS, SRTP and SCTP unchanged, but runs them without aiortc's ICE agent (one socket serves
every call, ``ice.py``) and without its RTP receiver (no jitter buffer, ``media.py``). That seam is private in
aiortc: an ICE transport is something with ``_recv()`` / ``_send()``, a receiver is something with
``_handle_rtp_packet()``, and the transport's SRTP sessions live in ``_rx_srtp`` / ``_tx_srtp``. Nowhere else in
voxgate names them. ``check()`` verifies them against the installed aiortc, and ``tests/test_aiortc_glue.py``
fails loudly, naming what moved, when an upgrade changes any of them; ``TESTED`` is what that test passed on (the
dependency pin in ``pyproject.toml`` says the same).
"""

from __future__ import annotations

import asyncio
import inspect
from importlib.metadata import version

from aiortc.rtcdtlstransport import RTCDtlsTransport

TESTED = ("1.16",)  # aiortc major.minor versions this module was tested with

_DTLS_METHODS = ("_set_role", "_register_rtp_receiver", "_recv_next", "_handle_rtp_data", "_handle_rtcp_data",
                 "_send_rtp")
_DTLS_STATE = ("self._rx_srtp", "self._tx_srtp", "self._data_receiver")  # set in RTCDtlsTransport.__init__
_USES = {  # method -> what it must still do with the names above
    "_recv_next": ("self.transport._recv()", "self._rx_srtp.unprotect(", "self._rx_srtp.unprotect_rtcp(",
                   "self._data_receiver._handle_data("),
    "_handle_rtp_data": ("._handle_rtp_packet(",),
    "_handle_rtcp_data": ("._handle_rtcp_packet(",),
    "_RTCDtlsTransport__run": ("._handle_disconnect()",),
    "_write_ssl": ("self.transport._send(",),
}


def check() -> list[str]:
    """What the installed aiortc lacks of what this module uses (empty when all is there)."""
    missing = []
    installed = version("aiortc")
    if not any(installed == v or installed.startswith(v + ".") for v in TESTED):
        missing.append(f"aiortc {installed} is not a tested version ({', '.join(TESTED)})")
    missing += [f"RTCDtlsTransport.{m}()" for m in _DTLS_METHODS if not callable(getattr(RTCDtlsTransport, m, None))]
    init = inspect.getsource(RTCDtlsTransport.__init__)
    missing += [f"RTCDtlsTransport.__init__ no longer sets {a}" for a in _DTLS_STATE if a + ":" not in init
                and a + " =" not in init]
    for method, uses in _USES.items():
        fn = getattr(RTCDtlsTransport, method, None)
        source = inspect.getsource(fn) if fn is not None else ""
        missing += [f"RTCDtlsTransport.{method} no longer calls {u}" for u in uses if u not in source]
    return missing


class IceTransport:
    """Just enough of aiortc's RTCIceTransport for RTCDtlsTransport (an ICE-lite server is always controlled;
    ``bench/loadclient.py`` uses it as the controlling side).

    ``deliver(data, via)`` feeds it; aiortc reads with ``_recv()``. ``via`` (client, relay) of the packet aiortc
    is handling is kept in ``current``, so the authentication taps below know which path a packet that
    authenticated came by."""

    def __init__(self, send, role: str = "controlled"):
        self._send_out = send
        self.role = role
        self.inbox: asyncio.Queue = asyncio.Queue()
        self.current: tuple | None = None
        self.state = "new"

    def deliver(self, data: bytes, via: tuple):
        self.inbox.put_nowait((data, via))

    async def _recv(self) -> bytes:
        item = await self.inbox.get()
        if item is None:
            raise ConnectionError("session closed")
        data, self.current = item
        return data

    async def _send(self, data: bytes) -> None:
        if self.state == "closed":
            raise ConnectionError("session closed")
        self._send_out(data)

    def close(self):
        self.state = "closed"
        self.inbox.put_nowait(None)


def dtls_transport(transport: IceTransport, certificate, role: str = "server") -> RTCDtlsTransport:
    """A DTLS transport over ``transport`` in ``role`` (the transceiver's answer says ``a=setup:passive``)."""
    dtls = RTCDtlsTransport(transport, [certificate])
    dtls._set_role(role)
    return dtls


async def send_rtp(dtls: RTCDtlsTransport, packet: bytes) -> None:
    """Protect and send one RTP packet (for test and benchmark clients; the transceiver protects its own)."""
    await dtls._send_rtp(packet)


def tx_srtp(dtls: RTCDtlsTransport):
    """The SRTP session that protects what we send (None until DTLS has completed)."""
    return dtls._tx_srtp


class _RtpReceiver:
    """What aiortc's RTP router calls on a receiver, mapped onto ``media.OpusIn``'s public methods."""

    def __init__(self, target):
        self.target = target

    async def _handle_rtp_packet(self, packet, arrival_time_ms: int) -> None:
        self.target.on_rtp(packet)

    async def _handle_rtcp_packet(self, packet) -> None:
        self.target.on_rtcp(packet)

    def _handle_disconnect(self) -> None:
        self.target.on_end()


def receive_rtp(dtls: RTCDtlsTransport, target, parameters) -> None:
    """Route the client's RTP to ``target`` (``on_rtp(packet)``, ``on_rtcp(packet)``, ``on_end()``) as it is
    decrypted: no RTCRtpReceiver, so no jitter buffer and no decoder thread."""
    dtls._register_rtp_receiver(_RtpReceiver(target), parameters)


class _SrtpTap:
    """Stands in for the receiving SRTP session: unprotects through the real one, and reports each packet that
    authenticated (libsrtp checks the tag and rejects replays before returning)."""

    def __init__(self, inner, on_authenticated):
        self._inner, self._on = inner, on_authenticated

    def unprotect(self, data: bytes) -> bytes:
        out = self._inner.unprotect(data)
        self._on()
        return out

    def unprotect_rtcp(self, data: bytes) -> bytes:
        out = self._inner.unprotect_rtcp(data)
        self._on()
        return out


class _DataTap:
    """Stands in for the DTLS transport's data receiver (SCTP): a record that decrypted is authenticated."""

    def __init__(self, inner, on_authenticated):
        self._inner, self._on = inner, on_authenticated

    async def _handle_data(self, data: bytes) -> None:
        self._on()
        await self._inner._handle_data(data)


def tap_authenticated(dtls: RTCDtlsTransport, on_authenticated) -> None:
    """Call ``on_authenticated()`` for every SRTP/SRTCP packet and DTLS record that authenticates from now on.
    Call once DTLS has connected (the SRTP session exists then) and after the data channel's SCTP transport has
    registered itself, if there is one."""
    dtls._rx_srtp = _SrtpTap(dtls._rx_srtp, on_authenticated)
    if dtls._data_receiver is not None:
        dtls._data_receiver = _DataTap(dtls._data_receiver, on_authenticated)
