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


def prune(directory: str, retention_s: float, now: float | None = None) -> list[dict]:
    """Delete the recordings (and their sidecars) in ``directory`` older than ``retention_s``: the sidecars deleted
    (what they said: where each was uploaded)."""
    import json

    now = time.time() if now is None else now
    gone = []
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return gone
    for name in names:
        if not name.endswith((".wav", ".json")):
            continue
        path = os.path.join(directory, name)
        try:
            if now - os.stat(path).st_mtime <= retention_s:
                continue
            meta = {}
            if name.endswith(".json"):
                try:
                    with open(path) as fh:
                        meta = json.load(fh)
                except ValueError:
                    pass
            os.unlink(path)
            if name.endswith(".json"):
                gone.append(meta)
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
        self.finished = None  # told each recording's path when its call ends (an Uploader's enqueue)
        self.expired = None  # told each expired sidecar's upload (its object is deleted too)

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
        self.prune()
        return Recording(path, caller_rate, agent_rate)

    def prune(self) -> None:
        """Delete what is older than the retention, here and (its sidecar says where) in the store."""
        for meta in prune(self.directory, self.retention):
            if meta.get("uploaded") and self.expired is not None:
                self.expired(meta["uploaded"])

    def finish(self, rec: Recording, meta: dict) -> None:
        """The call ended: the file's last second, and its sidecar."""
        rec.close()
        self.describe(rec, {**meta, "ended": True})
        if self.finished is not None:
            self.finished(rec.path)

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


class Uploader:
    """Finished recordings to S3-compatible storage (``--record-upload s3://BUCKET/PREFIX``; boto3, its blocking
    calls in a thread; the endpoint and keys the standard AWS way, or ``--s3-endpoint-url``). A recording stays on
    disk until its upload succeeds (then its sidecar says where it went); a failing store is retried with backoff
    (1 s doubling to a minute) and nothing is dropped; what a restart left behind is uploaded at start."""

    def __init__(self, recordings: Recordings, url: str, endpoint_url: str | None = None):
        import asyncio

        if not url.startswith("s3://") or not url[5:].split("/", 1)[0]:
            raise ValueError(f"--record-upload {url!r}: s3://BUCKET[/PREFIX]")
        self.bucket, _, prefix = url[5:].partition("/")
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.endpoint_url = endpoint_url
        self.recordings = recordings
        self.queue: asyncio.Queue = asyncio.Queue()
        self.uploaded = 0
        self.failures = 0
        self._client = None
        recordings.finished = self.enqueue
        recordings.expired = self.forget

    def client(self):
        if self._client is None:
            import boto3

            self._client = boto3.client("s3", endpoint_url=self.endpoint_url)
        return self._client

    def enqueue(self, path: str) -> None:
        self.queue.put_nowait(("put", path))

    def forget(self, where: str) -> None:
        self.queue.put_nowait(("delete", where))

    def pending(self) -> list[str]:
        """The recordings on disk whose call ended and which are not uploaded (a restart's leftovers)."""
        import json

        out = []
        d = self.recordings._directory
        if d is None or not os.path.isdir(d):
            return out
        for name in sorted(os.listdir(d)):
            if name.endswith(".json"):
                try:
                    with open(os.path.join(d, name)) as fh:
                        meta = json.load(fh)
                except (OSError, ValueError):
                    continue
                wav = os.path.join(d, name[:-5] + ".wav")
                if not meta.get("uploaded") and meta.get("ended") and os.path.exists(wav):
                    out.append(wav)
        return out

    def _put(self, path: str) -> str:
        import json

        key = self.prefix + os.path.basename(path)
        s3 = self.client()
        s3.upload_file(path, self.bucket, key, ExtraArgs={"ContentType": "audio/wav"})
        side = path[:-4] + ".json"
        with open(side) as fh:
            meta = json.load(fh)
        meta["uploaded"] = f"s3://{self.bucket}/{key}"
        s3.put_object(Bucket=self.bucket, Key=key[:-4] + ".json", Body=json.dumps(meta).encode(),
                      ContentType="application/json")
        tmp = side + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(meta, fh)
        os.replace(tmp, side)
        return meta["uploaded"]

    def _delete(self, where: str) -> None:
        key = where[len(f"s3://{self.bucket}/"):]
        self.client().delete_objects(Bucket=self.bucket, Delete={"Objects": [{"Key": key},
                                                                             {"Key": key[:-4] + ".json"}]})

    async def run(self) -> None:
        import asyncio
        import logging

        log = logging.getLogger("voxgate.recording")
        for path in self.pending():
            self.enqueue(path)
        while True:
            op, arg = await self.queue.get()
            delay = 1.0
            while True:
                try:
                    if op == "put":
                        if not os.path.exists(arg):
                            break  # expired before it could go
                        await asyncio.to_thread(self._put, arg)
                        self.uploaded += 1
                    else:
                        await asyncio.to_thread(self._delete, arg)
                    break
                except Exception as exc:  # the store is down or refuses: the file stays, we try again
                    self.failures += 1
                    log.warning("recording %s %s failed (%s): again in %.0f s", op, os.path.basename(arg), exc, delay)
                    await asyncio.sleep(delay)
                    delay = min(60.0, delay * 2)
            self.queue.task_done()
