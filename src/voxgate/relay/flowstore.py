"""Mirror of the relay's flows in Redis, kept off the hot path by a thread of its own.

Why: a relay worker's flow table lives in memory; if the worker restarts, the
pool is resized, or a sibling relay behind the same address receives the
client's packets, the flow must still be known. The first STUN packet of a
session carries its route (the ufrag token), but DTLS and RTP do not, so the
flow itself (client address -> transceiver) is written here.

The packet loop only appends to deques; this thread batches writes in
pipelines, answers lookups, and survives Redis going away: it marks itself
down, answers lookups with "store down", and reconnects with backoff. Known
flows never depend on it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque

import redis

log = logging.getLogger("voxgate.relay.flowstore")

PREFIX = "voxgate:flow:"


def flow_key(client) -> str:
    return f"{PREFIX}{client[0]}|{client[1]}"


def encode(transceiver, verified: bool) -> str:
    return f"{transceiver[0]}|{transceiver[1]}|{1 if verified else 0}"


def decode(value) -> tuple[tuple[str, int], bool] | None:
    try:
        text = value.decode() if isinstance(value, bytes) else value
        ip, port, verified = text.rsplit("|", 2)
        return (ip, int(port)), verified == "1"
    except (ValueError, AttributeError, UnicodeDecodeError):
        return None


class FlowStore:
    """Thread-backed Redis mirror. ``wake_fd`` becomes readable when lookup results are waiting."""

    def __init__(self, url: str, ttl: float = 120.0, max_queue: int = 100_000):
        self.url, self.ttl, self.max_queue = url, ttl, max_queue
        self.writes: deque = deque()
        self.lookups: deque = deque()
        self.results: deque = deque()
        self.up = False
        self.errors = 0
        self.dropped_writes = 0
        self._event = threading.Event()
        self._stop = False
        self._rfd, self._wfd = os.pipe()
        os.set_blocking(self._rfd, False)
        os.set_blocking(self._wfd, False)
        self._client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self._thread = threading.Thread(target=self._run, name="flowstore", daemon=True)
        self._thread.start()

    @property
    def wake_fd(self) -> int:
        return self._rfd

    # ------------------------------------------------------------- called from the packet loop
    def publish(self, client, transceiver, verified: bool = False):
        self._queue_write((client, transceiver, verified))

    def refresh(self, flows):
        """Re-write active flows (TTL refresh, and repair after an outage) in one batch."""
        for item in flows:
            self._queue_write(item)

    def _queue_write(self, item):
        if len(self.writes) >= self.max_queue:
            self.dropped_writes += 1
            return
        self.writes.append(item)
        self._event.set()

    def lookup(self, client):
        self.lookups.append(client)
        self._event.set()

    def drain(self) -> list:
        """Lookup answers: ``(client, transceiver | None, verified, reason)``."""
        try:
            os.read(self._rfd, 4096)
        except BlockingIOError:
            pass
        out = []
        while self.results:
            out.append(self.results.popleft())
        return out

    def close(self):
        self._stop = True
        self._event.set()
        self._thread.join(timeout=2)
        os.close(self._rfd)
        os.close(self._wfd)

    # ------------------------------------------------------------- the thread
    def _answer(self, items):
        self.results.extend(items)
        try:
            os.write(self._wfd, b"x")
        except BlockingIOError:
            pass

    def _run(self):
        backoff, next_try, warned = 0.2, 0.0, False
        while not self._stop:
            if not self.up:
                if time.monotonic() < next_try:
                    self._event.wait(0.05)
                    self._event.clear()
                    self._fail_lookups()
                    self.writes.clear()  # the periodic refresh re-writes every live flow once we are back
                    continue
                try:
                    self._client.ping()
                except redis.RedisError as exc:
                    self.errors += 1
                    self._fail_lookups()
                    if not warned:
                        log.warning("redis at %s unreachable (%s); known flows keep flowing, retrying", self.url, exc)
                        warned = True
                    next_try = time.monotonic() + backoff
                    backoff = min(backoff * 2, 5.0)
                    continue
                log.info("redis at %s is up", self.url)
                self.up, backoff, warned = True, 0.2, False
            self._event.wait(0.5)
            self._event.clear()
            try:
                self._flush()
            except redis.RedisError as exc:
                self.errors += 1
                self.up = False
                log.warning("redis at %s failed (%s); known flows keep flowing, reconnecting", self.url, exc)

    def _fail_lookups(self):
        failed = []
        while self.lookups:
            failed.append((self.lookups.popleft(), None, False, "store_down"))
        if failed:
            self._answer(failed)

    def _flush(self):
        writes = []
        while self.writes and len(writes) < 5000:
            writes.append(self.writes.popleft())
        if writes:
            pipe = self._client.pipeline(transaction=False)
            ttl = int(self.ttl * 1000)
            for client, transceiver, verified in writes:
                pipe.set(flow_key(client), encode(transceiver, verified), px=ttl)
            pipe.execute()
        clients = []
        while self.lookups and len(clients) < 1000:
            clients.append(self.lookups.popleft())
        if clients:
            try:
                values = self._client.mget([flow_key(c) for c in clients])
            except redis.RedisError:
                self.lookups.extendleft(reversed(clients))
                raise
            answers = []
            for client, value in zip(clients, values):
                rec = decode(value) if value is not None else None
                if rec is None:
                    answers.append((client, None, False, "unknown_flow"))
                else:
                    answers.append((client, rec[0], rec[1], ""))
            self._answer(answers)
        if self.writes or self.lookups:
            self._event.set()
