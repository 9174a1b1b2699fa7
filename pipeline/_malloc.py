"""Allocator tuning for the forwarding path (glibc only).

Requests of a few hundred KB and batches of a few MB are allocated and freed many times a
second. With glibc's defaults these sizes are often served by fresh ``mmap`` regions or from heap
memory just trimmed back to the system, so every buffer is page-faulted in again: in the
forward-path benchmark that cost about 0.4 CPU-µs per span (a quarter of the gateway's CPU).
Keeping such buffers in the heap (``M_MMAP_THRESHOLD`` 16 MiB) and trimming the heap only when
more than 32 MiB at its top are free (``M_TRIM_THRESHOLD``) removes that cost without raising
peak RSS (the working set is the same).

What a burst leaves free is given back by :class:`PeriodicTrim`: ``malloc_trim(0)`` every five
seconds returns the free pages of every arena (the top of each heap and whole free pages inside
it) to the system. After a 100,000 spans/s run a forward gateway went back from 80 to 63 MiB
RSS and the agent pipeline from 154 to 132 MiB, where they stayed without it; a call takes
about 0.2 ms. While data keeps flowing, what a trim gives back is the memory the next requests
reuse: every page of it is faulted in again (a fault costs ~5 µs of kernel CPU on the
benchmark machine). So a tick trims only when the process used less than ``BUSY_SHARE`` of a
CPU since the last tick: a loaded gateway keeps its working set, and the first tick after the
load ends gives back what it left. In the agent pipeline at 50,000 spans/s (three alternated
pairs, the gateway's minor faults over 5 s of load) that took 9,700 -> 8,050 faults (medians,
-17 %) at the same peak RSS (130-142 MiB before, 133-137 after); at 20,000 spans/s the faults
did not change.

Set ``PIPELINE_MALLOC_TUNING=0`` to keep the allocator's defaults (no periodic trim either);
``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` in the environment also take precedence.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import os
import sys
import time
from collections.abc import Callable

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 16 << 20
TRIM_THRESHOLD = 32 << 20
TRIM_INTERVAL = 5.0  # seconds between two malloc_trim calls
# a tick trims only when the process used less CPU than this share of the interval since the
# last tick (every thread's CPU): at 10,000 spans/s the agent pipeline uses ~6 % of a CPU and is
# trimmed as before; at 100,000 spans/s (~30 %) it keeps its free pages until the load ends
BUSY_SHARE = 0.1


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        return ctypes.CDLL(name)
    except OSError:
        return None


def tune_allocator() -> bool:
    """Apply the settings above; ``True`` when they were applied."""
    if not sys.platform.startswith("linux") or os.environ.get("PIPELINE_MALLOC_TUNING") == "0":
        return False
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or "MALLOC_TRIM_THRESHOLD_" in os.environ:
        return False
    libc = _libc()
    mallopt = getattr(libc, "mallopt", None)  # None: not glibc (musl has no mallopt)
    if mallopt is None:
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )


def malloc_trim() -> Callable[[], object] | None:
    """glibc's ``malloc_trim(0)`` as a callable, or ``None`` where there is none."""
    trim = getattr(_libc(), "malloc_trim", None)
    if trim is None:
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: trim(0)


class PeriodicTrim:
    """Calls ``trim`` every ``interval`` seconds on the running event loop until cancelled,
    except at ticks when the process used more than ``busy_share`` of a CPU since the last tick
    (``cpu``: the process's CPU seconds, every thread's; counted in ``skipped``)."""

    def __init__(
        self,
        trim: Callable[[], object],
        interval: float = TRIM_INTERVAL,
        busy_share: float = BUSY_SHARE,
        cpu: Callable[[], float] = time.process_time,
    ) -> None:
        self.trim = trim
        self.interval = interval
        self.busy_share = busy_share
        self.cpu = cpu
        self.calls = 0
        self.skipped = 0
        self._cpu_mark = 0.0
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self._cpu_mark = self.cpu()
        self._handle = asyncio.get_running_loop().call_later(self.interval, self._tick)

    def _tick(self) -> None:
        if self.cpu() - self._cpu_mark <= self.busy_share * self.interval:
            self.trim()
            self.calls += 1
        else:
            self.skipped += 1
        self.start()

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
