"""voxgate touches aiortc's private seam in one module; this fails loudly, naming what moved, on an upgrade."""

import asyncio

from voxgate.transceiver import aiortc_glue


def test_installed_aiortc_has_everything_the_glue_uses():
    missing = aiortc_glue.check()
    assert not missing, ("aiortc moved names that voxgate.transceiver.aiortc_glue uses; update the glue and its "
                         "TESTED versions (and the pin in pyproject.toml): " + "; ".join(missing))


def test_ice_transport_feeds_dtls_and_remembers_the_path():
    from aiortc.rtcdtlstransport import RTCCertificate

    async def run():
        sent = []
        ice = aiortc_glue.IceTransport(sent.append)
        dtls = aiortc_glue.dtls_transport(ice, RTCCertificate.generateCertificate())
        assert dtls.transport is ice and ice.role == "controlled"
        ice.deliver(b"\x16abc", (("192.0.2.1", 5000), ("10.0.0.7", 40000)))
        assert await ice._recv() == b"\x16abc"
        assert ice.current == (("192.0.2.1", 5000), ("10.0.0.7", 40000))
        await ice._send(b"out")
        ice.close()
        try:
            await ice._recv()
        except ConnectionError:
            pass
        else:
            raise AssertionError("a closed transport must end aiortc's receive loop")
        return sent

    assert asyncio.run(run()) == [b"out"]


def test_taps_report_only_what_authenticates():
    import pylibsrtp

    class Inner:
        def unprotect(self, data):
            if data != b"good":
                raise pylibsrtp.Error("auth failed")
            return b"plain"

        unprotect_rtcp = unprotect

    class Dtls:
        _rx_srtp = Inner()
        _data_receiver = None

    seen = []
    d = Dtls()
    aiortc_glue.tap_authenticated(d, lambda: seen.append(1))
    assert d._rx_srtp.unprotect(b"good") == b"plain" and seen == [1]
    for bad in (b"forged", b"replayed"):
        try:
            d._rx_srtp.unprotect_rtcp(bad)
        except pylibsrtp.Error:
            pass
    assert seen == [1]
