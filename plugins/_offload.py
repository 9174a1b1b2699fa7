"""Decoding untrusted input off the event loop.

A receiver decodes what it was sent (Jaeger Thrift, OTLP/JSON, a scraped exposition) before the
pipeline sees it; a large body can take tens or hundreds of milliseconds of pure Python, during
which an event loop that ran it could serve nobody. :func:`decode_off_loop` runs such a decode
in one of a few worker threads, shared by every receiver of the process, and runs small ones in
place (a thread hand-off costs about 70 µs of CPU).

While a worker holds the GIL the loop waits for it at most the interpreter's switch interval
(5 ms) before it gets its turn, so the loop keeps serving during a decode of any size; each
decoder's threshold (``inline_below``) is chosen so that its worst-case decode in place is no
longer than that (see the callers). At most :data:`MAX_WORKERS` large decodes run at once; the
others wait their turn, which bounds the memory that decodes in progress hold at once. With
several worker processes (``service.workers``) that budget is shared: each worker runs
``MAX_WORKERS // workers`` decode threads (at least one), so N workers on a machine decode no
more at once than one process did and do not crowd out each other's event loops.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")

MAX_WORKERS = 2
"""Large decodes running at once, in the whole process (shared by the worker processes)."""

_executor: ThreadPoolExecutor | None = None
_lock = threading.Lock()


def threads() -> int:
    """Decode threads of this process: :data:`MAX_WORKERS`, divided among the workers."""
    from pipeline import workers

    ctx = workers.current()
    return max(1, MAX_WORKERS // ctx.count) if ctx is not None else MAX_WORKERS


def executor() -> ThreadPoolExecutor:
    """The process's decode threads (created on first use)."""
    global _executor
    with _lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(threads(), thread_name_prefix="pipeline-decode")
        return _executor


async def decode_off_loop(
    size: int, inline_below: int, fn: Callable[..., T], /, *args: object
) -> T:
    """``fn(*args)``: in place when ``size`` (the input's bytes) is below ``inline_below``,
    else in a decode thread. Exceptions propagate as they are."""
    if size < inline_below:
        return fn(*args)
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(executor(), functools.partial(fn, *args))
