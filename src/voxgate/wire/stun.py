"""STUN (RFC 8489) messages, with the attributes ICE (RFC 8445) uses.

Our own codec rather than aioice's because the relay needs a bounds-checked,
allocation-light look at one attribute (USERNAME) of untrusted first packets,
and the transceiver's muxed ICE-lite endpoint needs to build responses carrying
an address it learned from the encapsulation header. Everything here is pure:
bytes in, values out, ``StunError`` on anything malformed.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import ipaddress
import struct
from dataclasses import dataclass, field

MAGIC_COOKIE = 0x2112A442
HEADER = struct.Struct("!HHI12s")
HEADER_LEN = 20
FINGERPRINT_XOR = 0x5354554E

# methods and classes
BINDING = 0x001
CLASS_REQUEST = 0x000
CLASS_INDICATION = 0x010
CLASS_SUCCESS = 0x100
CLASS_ERROR = 0x110
BINDING_REQUEST = BINDING | CLASS_REQUEST
BINDING_SUCCESS = BINDING | CLASS_SUCCESS
BINDING_ERROR = BINDING | CLASS_ERROR
BINDING_INDICATION = BINDING | CLASS_INDICATION

# attributes
MAPPED_ADDRESS = 0x0001
USERNAME = 0x0006
MESSAGE_INTEGRITY = 0x0008
ERROR_CODE = 0x0009
UNKNOWN_ATTRIBUTES = 0x000A
XOR_MAPPED_ADDRESS = 0x0020
PRIORITY = 0x0024
USE_CANDIDATE = 0x0025
SOFTWARE = 0x8022
FINGERPRINT = 0x8028
ICE_CONTROLLED = 0x8029
ICE_CONTROLLING = 0x802A

MAX_USERNAME = 513  # RFC 8489 14.3


class StunError(ValueError):
    """A datagram that is not a well-formed STUN message; ``reason`` is a short metric label."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def is_stun(data: bytes) -> bool:
    """Cheap test: header length, first two bits zero, magic cookie, length a multiple of 4."""
    if len(data) < HEADER_LEN or data[0] & 0xC0:
        return False
    _, length, cookie, _ = HEADER.unpack_from(data)
    return cookie == MAGIC_COOKIE and length % 4 == 0 and length + HEADER_LEN == len(data)


def _check_header(data: bytes) -> tuple[int, int, bytes]:
    if len(data) < HEADER_LEN:
        raise StunError("truncated", f"{len(data)} bytes, header needs 20")
    msg_type, length, cookie, txid = HEADER.unpack_from(data)
    if msg_type & 0xC000:
        raise StunError("not_stun", "top two bits of the type are set")
    if cookie != MAGIC_COOKIE:
        raise StunError("not_stun", "bad magic cookie")
    if length % 4:
        raise StunError("malformed", "length is not a multiple of 4")
    if length + HEADER_LEN != len(data):
        raise StunError("truncated", f"header says {length} bytes of attributes, datagram has {len(data) - HEADER_LEN}")
    return msg_type, length, txid


def iter_attributes(data: bytes):
    """Yield ``(type, offset_of_value, length)`` for each attribute; raises on overruns."""
    pos = HEADER_LEN
    end = len(data)
    while pos < end:
        if pos + 4 > end:
            raise StunError("truncated", "attribute header runs past the end")
        atype, alen = struct.unpack_from("!HH", data, pos)
        vpos = pos + 4
        if vpos + alen > end:
            raise StunError("truncated", f"attribute 0x{atype:04x} runs past the end")
        yield atype, vpos, alen
        pos = vpos + ((alen + 3) & ~3)


def read_username(data: bytes) -> bytes:
    """The raw USERNAME of a Binding request, for routing. Raises ``StunError`` if absent or malformed."""
    msg_type, _, _ = _check_header(data)
    if msg_type != BINDING_REQUEST:
        raise StunError("not_binding_request", f"type 0x{msg_type:04x}")
    for atype, vpos, alen in iter_attributes(data):
        if atype == USERNAME:
            if alen == 0 or alen > MAX_USERNAME:
                raise StunError("bad_username", f"length {alen}")
            return bytes(data[vpos : vpos + alen])
        if atype == MESSAGE_INTEGRITY:
            break  # attributes after integrity are not covered by it; USERNAME must precede it
    raise StunError("no_username")


def transaction_id(data: bytes) -> bytes:
    return bytes(data[8:20])


# ---------------------------------------------------------------- addresses

def _pack_address(addr: tuple[str, int], xor_txid: bytes | None) -> bytes:
    ip = ipaddress.ip_address(addr[0])
    port = addr[1]
    raw = ip.packed
    family = 1 if ip.version == 4 else 2
    if xor_txid is not None:
        port ^= MAGIC_COOKIE >> 16
        mask = struct.pack("!I", MAGIC_COOKIE) + xor_txid
        raw = bytes(a ^ b for a, b in zip(raw, mask))
    return struct.pack("!BBH", 0, family, port) + raw


def _unpack_address(value: bytes, xor_txid: bytes | None) -> tuple[str, int]:
    if len(value) < 4:
        raise StunError("bad_address", "too short")
    _, family, port = struct.unpack_from("!BBH", value)
    raw = value[4:]
    if family == 1 and len(raw) == 4 or family == 2 and len(raw) == 16:
        if xor_txid is not None:
            port ^= MAGIC_COOKIE >> 16
            mask = struct.pack("!I", MAGIC_COOKIE) + xor_txid
            raw = bytes(a ^ b for a, b in zip(raw, mask))
        return str(ipaddress.ip_address(bytes(raw))), port
    raise StunError("bad_address", f"family {family} with {len(raw)} address bytes")


# ---------------------------------------------------------------- messages

@dataclass
class StunMessage:
    msg_type: int
    transaction_id: bytes
    attributes: list[tuple[int, bytes]] = field(default_factory=list)
    # offsets into the parsed datagram, kept so integrity can be checked later
    _raw: bytes = b""
    _integrity_at: int = -1

    def get(self, atype: int) -> bytes | None:
        for t, v in self.attributes:
            if t == atype:
                return v
        return None

    # typed accessors
    @property
    def username(self) -> str | None:
        v = self.get(USERNAME)
        return v.decode("utf-8", "replace") if v is not None else None

    @property
    def priority(self) -> int | None:
        v = self.get(PRIORITY)
        if v is None:
            return None
        if len(v) != 4:
            raise StunError("bad_priority")
        return struct.unpack("!I", v)[0]

    @property
    def use_candidate(self) -> bool:
        return self.get(USE_CANDIDATE) is not None

    @property
    def ice_controlling(self) -> int | None:
        return _u64(self.get(ICE_CONTROLLING))

    @property
    def ice_controlled(self) -> int | None:
        return _u64(self.get(ICE_CONTROLLED))

    @property
    def xor_mapped_address(self) -> tuple[str, int] | None:
        v = self.get(XOR_MAPPED_ADDRESS)
        return _unpack_address(v, self.transaction_id) if v is not None else None

    @property
    def mapped_address(self) -> tuple[str, int] | None:
        v = self.get(MAPPED_ADDRESS)
        return _unpack_address(v, None) if v is not None else None

    @property
    def error_code(self) -> tuple[int, str] | None:
        v = self.get(ERROR_CODE)
        if v is None:
            return None
        if len(v) < 4:
            raise StunError("bad_error_code")
        code = (v[2] & 0x7) * 100 + v[3]
        return code, v[4:].decode("utf-8", "replace")

    def check_integrity(self, key: bytes) -> bool:
        """True if MESSAGE-INTEGRITY is present and matches ``key`` (the ICE password for short-term creds)."""
        if self._integrity_at < 0:
            return False
        at = self._integrity_at
        # the length field must cover up to and including MESSAGE-INTEGRITY
        covered = bytearray(self._raw[:at])
        struct.pack_into("!H", covered, 2, at + 24 - HEADER_LEN)
        expected = hmac.new(key, bytes(covered), hashlib.sha1).digest()
        return hmac.compare_digest(expected, self._raw[at + 4 : at + 24])


def _u64(v: bytes | None) -> int | None:
    if v is None:
        return None
    if len(v) != 8:
        raise StunError("bad_tiebreaker")
    return struct.unpack("!Q", v)[0]


def parse(data: bytes) -> StunMessage:
    """Parse and validate a STUN message (FINGERPRINT is checked if present)."""
    data = bytes(data)
    msg_type, _, txid = _check_header(data)
    msg = StunMessage(msg_type, txid, _raw=data)
    seen_integrity = False
    for atype, vpos, alen in iter_attributes(data):
        value = data[vpos : vpos + alen]
        if atype == FINGERPRINT:
            if alen != 4 or vpos + 4 != len(data):
                raise StunError("bad_fingerprint", "must be the last attribute, 4 bytes")
            crc = binascii.crc32(data[: vpos - 4]) ^ FINGERPRINT_XOR
            if struct.unpack("!I", value)[0] != crc:
                raise StunError("bad_fingerprint", "CRC mismatch")
            continue
        if seen_integrity:
            continue  # RFC 8489: ignore everything after MESSAGE-INTEGRITY except FINGERPRINT
        if atype == MESSAGE_INTEGRITY:
            if alen != 20:
                raise StunError("bad_integrity", "MESSAGE-INTEGRITY must be 20 bytes")
            msg._integrity_at = vpos - 4
            seen_integrity = True
        msg.attributes.append((atype, value))
    return msg


def build(
    msg_type: int,
    txid: bytes,
    attributes: list[tuple[int, bytes]] = (),
    *,
    integrity_key: bytes | None = None,
    fingerprint: bool = True,
) -> bytes:
    """Serialize a message; appends MESSAGE-INTEGRITY (if a key is given) then FINGERPRINT."""
    if len(txid) != 12:
        raise ValueError("transaction id must be 12 bytes")
    body = bytearray()
    for atype, value in attributes:
        body += struct.pack("!HH", atype, len(value)) + value + b"\x00" * (-len(value) % 4)
    buf = bytearray(HEADER.pack(msg_type, len(body), MAGIC_COOKIE, txid)) + body
    if integrity_key is not None:
        struct.pack_into("!H", buf, 2, len(body) + 24)
        mac = hmac.new(integrity_key, bytes(buf), hashlib.sha1).digest()
        buf += struct.pack("!HH", MESSAGE_INTEGRITY, 20) + mac
    if fingerprint:
        struct.pack_into("!H", buf, 2, len(buf) - HEADER_LEN + 8)
        crc = binascii.crc32(bytes(buf)) ^ FINGERPRINT_XOR
        buf += struct.pack("!HHI", FINGERPRINT, 4, crc)
    struct.pack_into("!H", buf, 2, len(buf) - HEADER_LEN)
    return bytes(buf)


# attribute value encoders
def attr_username(name: str) -> tuple[int, bytes]:
    return USERNAME, name.encode()


def attr_xor_mapped_address(addr: tuple[str, int], txid: bytes) -> tuple[int, bytes]:
    return XOR_MAPPED_ADDRESS, _pack_address(addr, txid)


def attr_mapped_address(addr: tuple[str, int]) -> tuple[int, bytes]:
    return MAPPED_ADDRESS, _pack_address(addr, None)


def attr_priority(priority: int) -> tuple[int, bytes]:
    return PRIORITY, struct.pack("!I", priority)


def attr_use_candidate() -> tuple[int, bytes]:
    return USE_CANDIDATE, b""


def attr_ice_controlling(tiebreaker: int) -> tuple[int, bytes]:
    return ICE_CONTROLLING, struct.pack("!Q", tiebreaker)


def attr_ice_controlled(tiebreaker: int) -> tuple[int, bytes]:
    return ICE_CONTROLLED, struct.pack("!Q", tiebreaker)


def attr_error_code(code: int, reason: str) -> tuple[int, bytes]:
    return ERROR_CODE, struct.pack("!HBB", 0, code // 100, code % 100) + reason.encode()


def split_username(username: bytes) -> tuple[bytes, bytes]:
    """ICE USERNAME of a request to us is ``<our ufrag>:<their ufrag>``; return both halves."""
    server, sep, client = username.partition(b":")
    if not sep or not server or not client:
        raise StunError("bad_username", "expected SERVER:CLIENT")
    return server, client
