"""A call's recording: one two-channel WAV, the caller on the left and the agent on the right, on one timeline.

Written as the call goes (the header's sizes rewritten at every flush, about once a second), so a crash loses at
most the last second. The left channel is what the agent heard, frame after frame (its timeline is the call's
audio: a WebSocket client that sends faster than real time makes a recording as long as the audio, not the wall
clock). The agent's audio is placed where it plays: at the caller's position when it was written, or after what
it said before; what a barge-in dropped from the queue, never played, is cut from it (``cleared``).

Python's ``wave`` module cannot rewrite a header while the file stays open for appending, and the format is a
44-byte header: written here, in ``_header``, once.
"""

from __future__ import annotations

import os
import struct
import time

from ..audio import Resampler

RATE = 24000  # both channels, s16le
FLUSH_S = 1.0  # at most this much audio waits in memory


class Recording:
    def __init__(self, path: str, caller_rate: int, agent_rate: int):
        self.path = path
        self.caller_rate, self.agent_rate = caller_rate, agent_rate
        self._in = Resampler(caller_rate, RATE)
        self._out = Resampler(agent_rate, RATE)
        self.left = bytearray()  # samples not yet written, from ``self.written``
        self.right = bytearray()
        self.written = 0  # stereo frames in the file
        self.closed = False
        self.fh = open(path, "wb")
        self.fh.write(_header(0))
        self.started = time.time()

    @property
    def caller_at(self) -> int:
        """The caller's position, in samples from the start."""
        return self.written + len(self.left) // 2

    def caller(self, pcm: bytes) -> None:
        if self.closed:
            return
        self.left += self._in(pcm)
        if len(self.left) // 2 >= FLUSH_S * RATE:
            self.flush()

    def agent(self, pcm: bytes) -> None:
        """Audio the agent queued for the caller: it plays after what was queued before, and not before now."""
        if self.closed:
            return
        data = self._out(pcm)
        gap = len(self.left) - len(self.right)
        if gap > 0:  # silence since it last spoke
            self.right += bytes(gap)
        self.right += data

    def cleared(self, dropped_ms: float) -> None:
        """The agent's queued output was dropped (barge-in): it was never heard."""
        n = int(dropped_ms * RATE / 1000) * 2
        keep = max(len(self.left), len(self.right) - n)  # what played up to now stays
        del self.right[keep:]

    def flush(self, final: bool = False) -> None:
        """Write both channels up to the caller's position (the agent's audio ahead of it waits: it has not played)."""
        n = len(self.left) // 2
        if final:
            n = max(n, len(self.right) // 2)
        if n == 0:
            return
        left = bytes(self.left[:n * 2]).ljust(n * 2, b"\0")
        right = bytes(self.right[:n * 2]).ljust(n * 2, b"\0")
        del self.left[:n * 2]
        del self.right[:n * 2]
        frames = bytearray(n * 4)
        frames[0::4], frames[1::4] = left[0::2], left[1::2]
        frames[2::4], frames[3::4] = right[0::2], right[1::2]
        self.fh.write(frames)
        self.written += n
        self.fh.seek(0)
        self.fh.write(_header(self.written * 4))
        self.fh.seek(0, os.SEEK_END)
        self.fh.flush()

    def close(self) -> None:
        if self.closed:
            return
        self.flush(final=True)
        self.closed = True
        self.fh.close()

    @property
    def seconds(self) -> float:
        return self.caller_at / RATE


def _header(data_bytes: int) -> bytes:
    """A 16-bit PCM stereo WAV header at ``RATE`` for ``data_bytes`` of samples."""
    return (b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVEfmt " +
            struct.pack("<IHHIIHH", 16, 1, 2, RATE, RATE * 4, 4, 16) + b"data" + struct.pack("<I", data_bytes))


def prune(directory: str, retention_s: float, now: float | None = None) -> int:
    """Delete the recordings (and their sidecars) in ``directory`` older than ``retention_s``; how many went."""
    now = time.time() if now is None else now
    gone = 0
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return 0
    for name in names:
        if not name.endswith((".wav", ".json")):
            continue
        path = os.path.join(directory, name)
        try:
            if now - os.stat(path).st_mtime > retention_s:
                os.unlink(path)
                gone += 1
        except FileNotFoundError:
            pass
    return gone


class Recordings:
    """Where a transceiver keeps its calls' recordings, and which calls record: every call (``--record DIR``) or
    the sessions that ask (GPT-Live's ``store: true``; then, without ``--record``, a directory of this process's).
    Each recording has a sidecar (``ID.json``): what was said, each response's timing, and a hash of the key that
    made the call (who may download it). None outlives ``retention`` seconds."""

    def __init__(self, directory: str | None, record_all: bool = False, retention: float = 86400.0):
        import tempfile

        self._directory = directory
        self.all = record_all
        self.retention = retention
        self._mkdtemp = lambda: tempfile.mkdtemp(prefix="voxgate-recordings-")

    @property
    def directory(self) -> str:
        """``--record DIR``, else (made the first time a session asks to be stored) a directory of this process's."""
        if self._directory is None:
            self._directory = self._mkdtemp()
        os.makedirs(self._directory, exist_ok=True)
        return self._directory

    def path_of(self, call_id: str) -> str | None:
        if not call_id.replace("_", "").replace("-", "").isalnum():
            return None
        return os.path.join(self.directory, call_id + ".wav")

    def open(self, call_id: str, caller_rate: int, agent_rate: int) -> Recording | None:
        path = self.path_of(call_id)
        if path is None:
            return None
        prune(self.directory, self.retention)
        return Recording(path, caller_rate, agent_rate)

    def finish(self, rec: Recording, meta: dict) -> None:
        """The call ended: the file's last second, and its sidecar."""
        rec.close()
        self.describe(rec, meta)

    def describe(self, rec: Recording, meta: dict) -> None:
        """Write the sidecar as it is now (a GPT-Live session's, as it goes: a fork reads it)."""
        import json

        meta = {**meta, "recording": os.path.basename(rec.path), "seconds": round(rec.seconds, 3),
                "started_at": int(rec.started)}
        tmp = rec.path[:-4] + ".json.tmp"
        with open(tmp, "w") as fh:
            json.dump(meta, fh)
        os.replace(tmp, rec.path[:-4] + ".json")

    def meta_of(self, call_id: str) -> dict | None:
        import json

        path = self.path_of(call_id)
        if path is None:
            return None
        try:
            with open(path[:-4] + ".json") as fh:
                return json.load(fh)
        except (FileNotFoundError, ValueError):
            return None


def owner_hash(key: str | None) -> str | None:
    import hashlib

    return hashlib.sha256(key.encode()).hexdigest() if key else None
