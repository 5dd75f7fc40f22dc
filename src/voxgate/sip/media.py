"""A phone call's audio, sans-IO: plain RTP in (jitter buffer, DTMF) → 20 ms PCM for the agent; agent PCM → paced
RTP out. G.711 μ-law/A-law and G.722 through libavcodec (PyAV), resampled to the agent's rate.

- **Symmetric RTP (RFC 4961)**: replies go to where the caller's RTP comes from, not only to the SDP's address;
  a phone behind NAT gives a private address in its SDP. The first packet latches the address; a later source
  is taken only when the latched one has been silent for ``RELATCH`` seconds (a caller's NAT rebinding), so
  a stray packet from elsewhere cannot steal the call's audio.
- **Jitter buffer**: packets are released in sequence order; a missing one is waited for at most ``DEPTH``
  packets (60 ms), then its 20 ms is filled with silence. The agent hears an ordered stream without the fixed
  playout delay a phone needs (it does not play it).
- **DTMF (RFC 4733)**: ``telephone-event`` packets become one key each, keyed on their RTP timestamp — the start
  of an event — so a missing marker bit (some trunks) or the three redundant end packets never double a key.
- **RTCP**: a sender report every 5 s (``PacedOut.sender_report``); what comes in is counted.
"""

from __future__ import annotations

from aiortc.rtp import RtpPacket

from ..call.paced import FRAME_MS, PacedOut
from ..audio import AvCodec, Framer, Resampler
from .core import DTMF_KEYS  # RFC 4733's event codes 0-15, as SIP INFO names them too
from .sdp import Codec

CODEC_RATE = {"PCMU": ("pcm_mulaw", 8000), "PCMA": ("pcm_alaw", 8000), "G722": ("g722", 16000)}
DEPTH = 3  # packets a gap is waited for before its frame is given up as lost
RELATCH = 2.0  # seconds of silence from the latched source before another source may take over


class PhoneOut(PacedOut):
    """The agent's audio as G.711 or G.722 RTP; the RTP clock moves 160 per 20 ms for all three (RFC 3551). A packet
    every 20 ms for the whole call (``continuous``): silence between the agent's words, as a phone line carries."""

    continuous = True
    TONE_PACKETS = 5  # a key is 100 ms of tone (RFC 4733 events every 20 ms, the duration growing)...
    END_PACKETS = 3  # ... then its end, sent three times (section 2.5.1.4)

    def __init__(self, rate: int, codec: Codec, ssrc: int, dtmf_pt: int | None = None):
        name, codec_rate = CODEC_RATE[codec.name]
        super().__init__(rate, codec.pt, ssrc, codec_rate, ts_step=codec.clock * FRAME_MS // 1000)
        self.codec = AvCodec(name, codec_rate)
        self.dtmf_pt = dtmf_pt  # the peer's telephone-event payload type (None: it offered none)
        self.keys: list[str] = []  # keys to send, in order
        self._key: list | None = None  # the key being sent: [code, its timestamp, packets sent]
        self._key_due = 0.0

    def encode(self, pcm: bytes) -> bytes | None:
        return self.codec.encode(pcm) or None

    def send_dtmf(self, key: str) -> bool:
        """Queue a key (0-9, A-D, * or #) as RFC 4733 events; False if the peer cannot take them."""
        if self.dtmf_pt is None or key not in DTMF_KEYS:
            return False
        self.keys.append(key)
        return True

    def next_packet(self, now: float) -> bytes | None:
        """A key's events take the line while it sounds (the audio waits), on the same RTP clock and sequence."""
        if self._key is None and self.keys:
            ts = int(now * 50) * self.ts_step if self.last_ts is None else self.last_ts + self.ts_step
            self._key, self._key_due = [DTMF_KEYS.index(self.keys.pop(0)), ts, 0], now
        if self._key is None:
            return super().next_packet(now)
        if now + self.LEAD < self._key_due:
            return None
        code, ts, n = self._key
        end = n >= self.TONE_PACKETS
        duration = min(n + 1, self.TONE_PACKETS) * self.ts_step
        payload = bytes([code, (0x80 if end else 0) | 10]) + duration.to_bytes(2, "big")  # volume -10 dBm0
        rtp = RtpPacket(payload_type=self.dtmf_pt, marker=int(n == 0), sequence_number=self.seq,
                        timestamp=(self.ts_base + ts) & 0xFFFFFFFF, ssrc=self.ssrc, payload=payload)
        self.seq = (self.seq + 1) & 0xFFFF
        self.packets += 1
        self.bytes += len(payload)
        self._key[2] = n + 1
        self._key_due += FRAME_MS / 1000
        if n + 1 >= self.TONE_PACKETS + self.END_PACKETS:  # the key is over: the audio goes on after it
            self._key = None
            self.last_ts = ts + self.TONE_PACKETS * self.ts_step
            self.spurt_start = None  # a new spurt: its timestamp from last_ts on
        return rtp.serialize()


class PhoneIn:
    """The caller's RTP: ``receive`` returns the 20 ms PCM frames (at ``rate``) and DTMF keys it completes."""

    def __init__(self, rate: int, codec: Codec, dtmf_pt: int | None):
        name, codec_rate = CODEC_RATE[codec.name]
        self.pt, self.dtmf_pt = codec.pt, dtmf_pt
        self.codec = AvCodec(name, codec_rate)
        self.frame_silence = b"\0" * (codec_rate * FRAME_MS // 1000 * 2)
        self.resample = Resampler(codec_rate, rate)
        self._framer = Framer(rate * FRAME_MS // 1000 * 2)
        self.expected: int | None = None  # the next sequence number to release
        self.held: dict[int, bytes] = {}  # seq -> payload, waiting for the ones before
        self.last_key_ts: int | None = None
        self.source: tuple[str, int] | None = None
        self.last_arrival = 0.0
        self.ssrc: int | None = None
        self.packets = self.lost = self.late = self.dtmf = self.foreign = self.rtcp = 0
        self.max_gap = 0.0

    def latch(self, addr: tuple[str, int], now: float) -> bool:
        """Whether a packet from ``addr`` belongs to the call (and where our RTP now goes)."""
        if self.source is None or addr == self.source or now - self.last_arrival > RELATCH:
            if self.source is not None and self.last_arrival and now - self.last_arrival > self.max_gap:
                self.max_gap = now - self.last_arrival
            self.source, self.last_arrival = addr, now
            return True
        self.foreign += 1
        return False

    def receive(self, data: bytes, addr: tuple[str, int], now: float) -> tuple[list[bytes], list[tuple[str, int]]]:
        try:
            pkt = RtpPacket.parse(data)
        except ValueError:
            return [], []
        if not self.latch(addr, now):
            return [], []
        self.packets += 1
        if pkt.payload_type == self.dtmf_pt:
            return [], self._dtmf(pkt)
        if pkt.payload_type != self.pt:
            return [], []  # comfort noise (13) or a codec not negotiated
        if self.ssrc != pkt.ssrc:  # a new stream (the caller's phone restarted it): start over at its sequence
            self.ssrc, self.expected, self.held = pkt.ssrc, pkt.sequence_number, {}
        return self._jitter(pkt.sequence_number, pkt.payload), []

    def _jitter(self, seq: int, payload: bytes) -> list[bytes]:
        ahead = (seq - self.expected) & 0xFFFF
        if ahead >= 0x8000:  # older than what was released
            self.late += 1
            return []
        self.held[seq] = payload
        pcm = []
        while self.held:
            if self.expected in self.held:
                pcm.append(self.codec.decode(self.held.pop(self.expected)))
            elif len(self.held) > DEPTH:
                pcm.append(self.frame_silence)  # given up as lost: its time is kept as silence
                self.lost += 1
            else:
                break
            self.expected = (self.expected + 1) & 0xFFFF
        return self._framer.push(self.resample(b"".join(pcm))) if pcm else []

    def _dtmf(self, pkt: RtpPacket) -> list[tuple[str, int]]:
        p = pkt.payload
        if len(p) < 4 or p[0] >= len(DTMF_KEYS):
            return []
        if pkt.timestamp == self.last_key_ts:  # the same event again (its updates, its end packets)
            return []
        self.last_key_ts = pkt.timestamp
        self.dtmf += 1
        return [(DTMF_KEYS[p[0]], int.from_bytes(p[2:4], "big") * 1000 // 8000)]
