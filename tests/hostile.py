"""Measuring what hostile input costs, for the decoders' amplification and loop-stall tests:
CPU time and Python memory in the test's own process (never wall-clock thresholds on the
work itself), and how long the event loop stops answering while a receiver decodes."""

from __future__ import annotations

import asyncio
import gc
import random
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from typing import Any


def cost(fn: Callable[[], Any]) -> tuple[float, int]:
    """CPU seconds of ``fn()`` (run once untraced), and the peak of the Python memory it
    allocates (run again under ``tracemalloc``).

    The CPU is this thread's (threads other tests left running are not ``fn``'s) with the
    cyclic collector paused: a full collection that ``fn``'s allocations happen to trigger
    walks the whole heap the test session built, which is not ``fn``'s cost."""
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        started = time.thread_time()
        fn()
        cpu = time.thread_time() - started
    finally:
        if enabled:
            gc.enable()
    tracemalloc.start()
    try:
        fn()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return cpu, peak


class LoopLag:
    """The longest time the running event loop took to come back to a task that asked to
    run every ``interval`` seconds: how long it was unable to serve anybody."""

    def __init__(self, interval: float = 0.002) -> None:
        self.interval = interval
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(self.interval)
            self.worst = max(self.worst, loop.time() - before - self.interval)

    async def __aenter__(self) -> LoopLag:
        self._task = asyncio.get_running_loop().create_task(self._run())
        await asyncio.sleep(0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass


async def probe_during(
    work: Awaitable[Any], probe: Callable[[], Awaitable[Any]], pause: float = 0.01
) -> tuple[Any, float, list[float], float]:
    """Run ``work`` while probing: ``probe()`` again and again until ``work`` is done.
    Returns ``work``'s result, its duration, every probe's latency and the loop's worst
    lag meanwhile."""
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    async with LoopLag() as lag:
        started = loop.time()
        task = asyncio.ensure_future(work)
        while not task.done():
            t0 = loop.time()
            await probe()
            latencies.append(loop.time() - t0)
            await asyncio.sleep(pause)
        result = await task
        duration = loop.time() - started
    return result, duration, latencies, lag.worst


def mutate(data: bytes, rng: random.Random, other: bytes) -> bytes:
    """``data`` with one to four seeded random changes: a bit flipped, a byte overwritten with
    an interesting one, cut short, random bytes inserted, a slice repeated, a piece of
    ``other`` spliced in, a huge varint length inserted."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        how = rng.randrange(7)
        at = rng.randrange(len(buf) + 1)
        if how == 0 and buf:  # flip a bit
            i = min(at, len(buf) - 1)
            buf[i] ^= 1 << rng.randrange(8)
        elif how == 1 and buf:  # overwrite a byte with an interesting one
            buf[min(at, len(buf) - 1)] = rng.choice([0x00, 0x7F, 0x80, 0xFF, 0x0A, 0x22, 0x7B])
        elif how == 2:  # truncate
            del buf[at:]
        elif how == 3:  # insert random bytes
            buf[at:at] = rng.randbytes(rng.randint(1, 8))
        elif how == 4:  # duplicate a slice
            end = min(len(buf), at + rng.randint(1, 32))
            buf[at:at] = buf[at:end]
        elif how == 5:  # splice in a piece of another valid request
            start = rng.randrange(len(other))
            buf[at:at] = other[start : start + rng.randint(1, 64)]
        else:  # a huge varint length
            buf[at:at] = b"\xff\xff\xff\xff\x0f"
    return bytes(buf)
