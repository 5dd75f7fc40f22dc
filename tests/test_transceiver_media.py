"""The send side of a call's audio (transceiver/media.py), sans-IO: paced packets, and how a cut ends."""

import av

from voxgate.transceiver.media import FRAME_MS, OpusOut


def decode(packets: list[bytes]) -> list[float]:
    """Each packet's peak level after decoding (Opus at 48 kHz)."""
    from aiortc.rtp import RtpPacket

    dec = av.CodecContext.create("libopus", "r")
    dec.format, dec.layout, dec.sample_rate = "s16", "mono", 48000
    peaks = []
    for data in packets:
        frames = dec.decode(av.Packet(RtpPacket.parse(data).payload))
        samples = [abs(v) for f in frames for v in memoryview(bytes(f.planes[0])).cast("h")]
        peaks.append(max(samples) / 32768 if samples else 0.0)
    return peaks


def test_a_cut_talk_spurt_ends_with_silence_not_concealment():
    """Barge-in clears the queue; the spurt then ends with a few frames of real silence, so the browser's jitter
    buffer plays silence instead of stretching the last syllable (bench/bargein.py: 225 -> 96 ms to silence)."""
    import math

    out = OpusOut(16000, 111, 1234)
    tone = b"".join(int(12000 * math.sin(i / 5)).to_bytes(2, "little", signed=True) for i in range(16000))
    out.write(tone)  # 1 s of audio
    now, sent = 100.0, []
    for _ in range(10):  # 200 ms of it goes out
        sent.append(out.next_packet(now))
        now += FRAME_MS / 1000
    dropped = out.clear()
    assert dropped == 800 and out.queued_ms == OpusOut.CLOSE_FRAMES * FRAME_MS
    while (p := out.next_packet(now)) is not None:
        sent.append(p)
        now += FRAME_MS / 1000
    peaks = decode(sent)
    assert len(peaks) == 10 + OpusOut.CLOSE_FRAMES
    assert min(peaks[2:10]) > 0.2 and peaks[-1] < 0.01, peaks  # speech, then silence
    assert out.clear() == 0 and out.queued_ms == 0  # nothing queued: a clear sends nothing more


def test_a_held_talk_spurt_goes_quiet_with_silence_and_plays_on_where_it_stopped():
    """Speech over the agent holds its audio (pause): the spurt ends with the same closing silence as a cut, nothing
    more leaves while held, and playing on sends the rest (nothing lost) as a new spurt (marker bit set)."""
    import math

    from aiortc.rtp import RtpPacket

    out = OpusOut(16000, 111, 1234)
    tone = b"".join(int(12000 * math.sin(i / 5)).to_bytes(2, "little", signed=True) for i in range(16000))
    out.write(tone)  # 1 s: 50 frames
    now, sent = 100.0, []
    for _ in range(10):
        sent.append(out.next_packet(now))
        now += FRAME_MS / 1000
    out.pause(True, now)
    assert out.queued_ms == (40 + OpusOut.CLOSE_FRAMES) * FRAME_MS
    while (p := out.next_packet(now)) is not None:
        sent.append(p)
        now += FRAME_MS / 1000
    assert len(sent) == 10 + OpusOut.CLOSE_FRAMES and out.queued_ms == 40 * FRAME_MS  # held, the rest kept
    peaks = decode(sent)
    assert min(peaks[2:10]) > 0.2 and peaks[-1] < 0.01, peaks
    now += 0.5
    assert out.next_packet(now) is None  # still held, however long
    out.pause(False, now)
    resumed = []
    while (p := out.next_packet(now)) is not None:
        resumed.append(p)
        now += FRAME_MS / 1000
    assert len(resumed) == 40 and RtpPacket.parse(resumed[0]).marker == 1
    assert min(decode(resumed)[2:]) > 0.2
