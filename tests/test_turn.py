"""TURN credentials per call (transceiver/turn.py) in the form coturn's use-auth-secret checks, and the endpoint that
hands them out (`voxgate lab firewall` has coturn accept them for a real call over TLS)."""

import asyncio
import base64
import hashlib
import hmac

import pytest

from voxgate.transceiver import turn

CFG = turn.TurnConfig(("turns:turn.example:443?transport=tcp",), b"s" * 24, ttl=600)


def test_credentials_are_coturns_rest_form():
    server = turn.ice_server(CFG, 1_700_000_000.5, label="call42")
    assert server["urls"] == ["turns:turn.example:443?transport=tcp"]
    assert server["username"] == "1700000600:call42"  # expiry first: coturn refuses it after that time
    expected = base64.b64encode(hmac.new(b"s" * 24, b"1700000600:call42", hashlib.sha1).digest()).decode()
    assert server["credential"] == expected
    assert turn.ice_server(CFG, 0)["username"] != turn.ice_server(CFG, 0)["username"]  # a fresh label each time
    with pytest.raises(ValueError):
        turn.ice_server(CFG, 0, label="a:b")


def test_configuration_errors_say_what_is_wrong(tmp_path):
    assert turn.load([], None) is None
    with pytest.raises(ValueError, match="turn-secret-file"):
        turn.load(["turns:x:443"], None)
    with pytest.raises(ValueError, match="16 characters"):
        turn.load(["turns:x:443"], None, "short")
    with pytest.raises(ValueError, match="expected turn"):
        turn.load(["stun:x:3478"], None, "x" * 20)
    f = tmp_path / "secret"
    f.write_text("y" * 20 + "\n")
    assert turn.load(["turns:x:443?transport=tcp"], str(f)).secret == b"y" * 20


def test_the_transceiver_hands_them_out(keyring):
    import aiohttp

    from helpers import free_port
    from voxgate.transceiver.http import start_http
    from voxgate.transceiver.server import Transceiver, TransceiverConfig

    async def run():
        port = free_port()
        cfg = TransceiverConfig(http=("127.0.0.1", port), media=("127.0.0.1", 0), keyring=keyring,
                                api_keys=["sk-test"], turn=CFG)
        t = Transceiver(cfg)
        await t.start()
        runner = await start_http(t, *cfg.http)
        try:
            async with aiohttp.ClientSession() as http:
                base = f"http://127.0.0.1:{port}"
                async with http.get(base + "/v1/voxgate/ice_servers") as r:
                    assert r.status == 401  # not for anyone who asks
                auth = {"Authorization": "Bearer sk-test"}
                async with http.get(base + "/v1/voxgate/ice_servers", headers=auth) as r:
                    body = await r.json()
                    assert r.status == 200 and r.headers["Cache-Control"] == "no-store"
                async with http.post(base + "/v1/realtime/client_secrets", headers=auth, json={}) as r:
                    secret = await r.json()
                async with http.get(base + "/v1/voxgate/ice_servers",
                                    headers={"Authorization": "Bearer " + secret["value"]}) as r:
                    assert r.status == 200  # a client secret is enough, as for placing the call
        finally:
            await runner.cleanup()
            await t.stop()
        return body, secret

    body, secret = asyncio.run(run())
    [server] = body["ice_servers"]
    assert server["urls"] == list(CFG.urls) and body["ttl"] == 600 and ":" in server["username"]
    assert secret["ice_servers"][0]["urls"] == list(CFG.urls)
