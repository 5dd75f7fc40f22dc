"""A delaying link between two network namespaces: what ``netem`` would do, in user space (these kernels have none).

``DelayLine`` is the sans-IO core: each packet gets a due time (delay, jitter, loss); ``TunLink`` is the shell: two
TUN devices, one in each namespace, and an asyncio loop that moves IP packets from one to the other when they are
due. A TUN link carries everything (UDP media, TCP signaling, Redis), so the lab's processes are ordinary.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import random
import struct
from dataclasses import dataclass, field

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000


@dataclass
class DelayLine:
    """One direction of a link. ``push`` returns when the packet is due (or None: lost). Jitter never reorders:
    a packet is never due before the one in front of it, as on a real queue."""

    delay: float  # seconds
    jitter: float = 0.0  # seconds, uniform ±
    loss: float = 0.0  # 0..1
    rng: random.Random = field(default_factory=random.Random)
    last_due: float = 0.0
    passed: int = 0
    lost: int = 0

    def push(self, now: float) -> float | None:
        if self.loss and self.rng.random() < self.loss:
            self.lost += 1
            return None
        due = now + max(0.0, self.delay + (self.rng.uniform(-self.jitter, self.jitter) if self.jitter else 0.0))
        due = max(due, self.last_due)
        self.last_due = due
        self.passed += 1
        return due


def open_tun(name: str) -> int:
    """A non-persistent TUN device named ``name`` in the calling thread's network namespace (gone with the fd)."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    except OSError:
        os.close(fd)
        raise
    return fd


class TunLink:
    """Moves packets between two TUN fds through two ``DelayLine``s, on the running asyncio loop."""

    def __init__(self, fd_a: int, fd_b: int, a_to_b: DelayLine, b_to_a: DelayLine):
        self.fds = (fd_a, fd_b)
        self.lines = (a_to_b, b_to_a)

    def start(self):
        loop = asyncio.get_running_loop()
        for i in (0, 1):
            loop.add_reader(self.fds[i], self._readable, loop, i)

    def _readable(self, loop, i: int):
        src, dst, line = self.fds[i], self.fds[1 - i], self.lines[i]
        for _ in range(64):
            try:
                packet = os.read(src, 65536)
            except BlockingIOError:
                return
            except OSError:
                loop.remove_reader(src)
                return
            due = line.push(loop.time())
            if due is not None:
                loop.call_at(due, _write, dst, packet)

    def stop(self):
        loop = asyncio.get_running_loop()
        for fd in self.fds:
            loop.remove_reader(fd)
            os.close(fd)


def _write(fd: int, packet: bytes):
    try:
        os.write(fd, packet)
    except OSError:  # the link is going away, or the kernel's queue is full: a dropped packet, as on a wire
        pass
