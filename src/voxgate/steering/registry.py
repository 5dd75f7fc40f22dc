"""The transceiver registry in Redis: each transceiver's ``Member`` record, kept alive by a heartbeat.

Layout (all under ``voxgate:``):

    voxgate:tx:<id>     hash: the Member fields; expires ``ttl`` seconds after the last heartbeat, so a
                        transceiver that dies leaves the registry by itself
    voxgate:fleet       set of ids; an id whose hash has expired is pruned by whoever reads it
    voxgate:ek:<value>  a client secret (``ek_…``) minted by any transceiver: JSON ``{"expires_at", "session"}``,
                        expiring with it, so a call made with it may land on any transceiver

A record is re-written at every heartbeat and at once whenever the transceiver's live sessions or state change,
so placement reads fresh loads without one Redis call per packet or per call of its own. Redis being away never
stops calls: a transceiver that cannot publish keeps serving what reaches it, and one that cannot read the
registry answers calls itself.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Callable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from .placement import Member, MemberError

log = logging.getLogger("voxgate.steering")

PREFIX = "voxgate:tx:"
INDEX = "voxgate:fleet"
SECRET = "voxgate:ek:"


async def read_members(r) -> list[Member]:
    """Every live member, sorted by region and id; prunes ids whose record has expired."""
    ids = sorted(i.decode() if isinstance(i, bytes) else i for i in await r.smembers(INDEX))
    if not ids:
        return []
    pipe = r.pipeline(transaction=False)
    for i in ids:
        pipe.hgetall(PREFIX + i)
    records = await pipe.execute()
    members, gone = [], []
    for i, fields in zip(ids, records):
        if not fields:
            gone.append(i)
            continue
        try:
            members.append(Member.from_fields(fields))
        except MemberError as exc:
            log.warning("%s", exc)
    if gone:
        await r.srem(INDEX, *gone)
    return sorted(members, key=lambda m: (m.region, m.id))


class Registry:
    def __init__(self, url: str, describe: Callable[[], Member], interval: float = 2.0, ttl: float = 6.0):
        self.redis = aioredis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
        self.describe = describe
        self.interval, self.ttl = interval, ttl
        self.up = False
        self._beat: asyncio.Task | None = None
        self._dirty: asyncio.Event = asyncio.Event()
        self._leaving = False

    async def start(self):
        await self.publish()
        self._beat = asyncio.ensure_future(self._heartbeat())

    async def _heartbeat(self):
        """Publish every ``interval``, and at once when ``changed()`` says the record moved. Ends when ``leave()``
        says so (a flag, not a cancel: on Python 3.11 ``wait_for`` can swallow a cancel that races the event)."""
        while not self._leaving:
            try:
                async with asyncio.timeout(self.interval):
                    await self._dirty.wait()
            except TimeoutError:
                pass
            if self._leaving:
                return
            self._dirty.clear()
            await self.publish()

    def changed(self):
        """Sessions or state changed: publish soon (coalesced with other changes), without waiting here."""
        self._dirty.set()

    async def publish(self) -> bool:
        m = self.describe()
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.hset(PREFIX + m.id, mapping=m.to_fields())
            pipe.pexpire(PREFIX + m.id, int(self.ttl * 1000))
            pipe.sadd(INDEX, m.id)
            await pipe.execute()
        except (RedisError, OSError) as exc:
            if self.up:
                log.warning("registry: cannot publish to Redis (%s); calls go on, placement is local", exc)
            self.up = False
            return False
        if not self.up:
            log.info("registry: %s registered in region %s (%s)", m.id, m.region, m.state)
        self.up = True
        return True

    async def members(self) -> list[Member] | None:
        """The live fleet, or None if Redis cannot be read."""
        try:
            return await read_members(self.redis)
        except (RedisError, OSError) as exc:
            log.warning("registry: cannot read the fleet (%s)", exc)
            return None

    async def member(self, member_id: str) -> Member | None:
        try:
            fields = await self.redis.hgetall(PREFIX + member_id)
            return Member.from_fields(fields) if fields else None
        except (RedisError, OSError, MemberError) as exc:
            log.warning("registry: cannot read %s (%s)", member_id, exc)
            return None

    async def leave(self):
        """Done draining: out of the registry at once (not at the record's expiry)."""
        self._leaving = True
        self._dirty.set()
        if self._beat is not None:
            await asyncio.gather(self._beat, return_exceptions=True)
        m = self.describe()
        try:
            await self.redis.delete(PREFIX + m.id)
            await self.redis.srem(INDEX, m.id)
        except (RedisError, OSError) as exc:
            log.warning("registry: could not leave (%s); the record expires in %.0f s", exc, self.ttl)
        await self.redis.aclose()

    async def region_map(self) -> dict:
        """The region map kept in Redis (``steering.regions.REDIS_KEY``), as JSON."""
        from .regions import REDIS_KEY, RegionMapError

        raw = await self.redis.get(REDIS_KEY)
        if raw is None:
            raise RegionMapError(f"no region map in Redis under {REDIS_KEY}")
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise RegionMapError(f"the region map in Redis is not JSON: {exc}") from None

    # ------------------------------------------------------------- client secrets, shared by the fleet
    async def put_secret(self, value: str, expires_at: int, session: dict, ttl: int) -> bool:
        try:
            await self.redis.set(SECRET + value, json.dumps({"expires_at": expires_at, "session": session}), ex=ttl)
            return True
        except (RedisError, OSError) as exc:
            log.warning("registry: cannot store a client secret (%s); it works on this transceiver only", exc)
            return False

    async def get_secret(self, value: str) -> dict | None:
        try:
            raw = await self.redis.get(SECRET + value)
        except (RedisError, OSError):
            return None
        return json.loads(raw) if raw else None
