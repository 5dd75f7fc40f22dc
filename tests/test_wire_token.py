import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voxgate.wire.token import Keyring, TokenError, mint, verify

ICE_CHARS = re.compile(r"^[A-Za-z0-9+/]+$")
NOW = 1_800_000_000
FUZZ_KEYRING = Keyring({0: b"fuzz-secret-0123456789abcdef"}, 0)


@pytest.mark.parametrize("endpoint,length", [(("10.1.2.3", 7000), 32), (("fd00::42", 65535), 48)])
def test_mint_verify(keyring, endpoint, length):
    ufrag = mint(keyring, endpoint, NOW)
    assert len(ufrag) == length and ICE_CHARS.match(ufrag)
    info = verify(keyring, ufrag, NOW + 60)
    assert info.transceiver == endpoint and info.key_id == keyring.active and info.issued_at == NOW
    assert mint(keyring, endpoint, NOW) != ufrag  # random session part


def test_every_single_bit_flip_is_rejected(keyring):
    import base64

    raw = bytearray(base64.b64decode(mint(keyring, ("10.0.0.1", 9), NOW)))
    for i in range(len(raw) * 8):
        flipped = bytearray(raw)
        flipped[i // 8] ^= 1 << (i % 8)
        with pytest.raises(TokenError):
            verify(keyring, base64.b64encode(bytes(flipped)), NOW)


def test_wrong_key_unknown_key_and_rotation():
    old = Keyring({1: b"old-secret-0123456789abcdef"}, 1)
    new = Keyring({1: b"old-secret-0123456789abcdef", 2: b"new-secret-0123456789abcdef"}, 2)
    imposter = Keyring({1: b"imposter-0123456789abcdefgh"}, 1)
    token_old = mint(old, ("10.0.0.1", 9), NOW)
    assert verify(new, token_old, NOW).key_id == 1  # rotation: old sessions survive
    token_new = mint(new, ("10.0.0.1", 9), NOW)
    with pytest.raises(TokenError, match="unknown_key"):
        verify(old, token_new, NOW)
    with pytest.raises(TokenError, match="bad_mac"):
        verify(imposter, token_old, NOW)


def test_expiry_and_future(keyring):
    t = mint(keyring, ("10.0.0.1", 9), NOW)
    with pytest.raises(TokenError, match="expired"):
        verify(keyring, t, NOW + 100, max_age=50)
    with pytest.raises(TokenError, match="expired"):
        verify(keyring, t, NOW - 3600)


def test_keyring_parsing(tmp_path, monkeypatch):
    k = Keyring.parse("# cluster\n2:second-secret-0123456789\n1:first-secret-01234567890\n")
    assert k.active == 2 and set(k.keys) == {1, 2}
    assert Keyring.parse("just-one-secret-0123456789").keys == {0: b"just-one-secret-0123456789"}
    for bad in ("", "1:short", "1:aaaaaaaaaaaaaaaaaaaa\n1:bbbbbbbbbbbbbbbbbbbbbb", "16:aaaaaaaaaaaaaaaaaaaaaa"):
        with pytest.raises(ValueError):
            Keyring.parse(bad)
    monkeypatch.setenv("VOXGATE_SECRET", "4:env-secret-0123456789abc")
    assert Keyring.load(None).active == 4


@settings(max_examples=2000, deadline=None)
@given(st.one_of(st.binary(max_size=60), st.text(alphabet="ABCxyz019+/=:", min_size=30, max_size=50)))
def test_fuzzed_tokens_raise_only_token_error(data):
    keyring = FUZZ_KEYRING
    try:
        verify(keyring, data, NOW)
    except TokenError:
        pass
    else:
        pytest.fail("random input verified")
