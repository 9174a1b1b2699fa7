"""``plugins._offload``: small decodes in place, large ones in the process's decode threads,
at most ``MAX_WORKERS`` at once."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from plugins import _offload


async def test_small_inputs_are_decoded_in_place_large_ones_in_a_decode_thread() -> None:
    here = threading.current_thread().name
    assert await _offload.decode_off_loop(10, 100, lambda: threading.current_thread().name) == here
    name = await _offload.decode_off_loop(100, 100, lambda: threading.current_thread().name)
    assert name.startswith("pipeline-decode")


async def test_exceptions_propagate() -> None:
    def fail(text: str) -> None:
        raise ValueError(text)

    for size in (1, 1000):
        with pytest.raises(ValueError, match="bad input"):
            await _offload.decode_off_loop(size, 100, fail, "bad input")


async def _peak_of_decodes(count: int) -> int:
    """How many of ``count`` large decodes (50 ms each) ran at once."""
    lock = threading.Lock()
    running = peak = 0

    def decode() -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.05)
        with lock:
            running -= 1

    await asyncio.gather(*(_offload.decode_off_loop(1 << 20, 0, decode) for _ in range(count)))
    return peak


async def test_at_most_max_workers_decodes_run_at_once() -> None:
    assert await _peak_of_decodes(6) == _offload.MAX_WORKERS


async def test_worker_processes_share_the_decode_threads(tmp_path: Path) -> None:
    from pipeline import workers

    assert _offload.threads() == _offload.MAX_WORKERS
    old, _offload._executor = _offload._executor, None
    workers._CONTEXT = workers.WorkerContext(0, 2, tmp_path)
    try:
        assert _offload.threads() == max(1, _offload.MAX_WORKERS // 2)
        assert await _peak_of_decodes(4) == max(1, _offload.MAX_WORKERS // 2)
        workers._CONTEXT = workers.WorkerContext(0, 8, tmp_path)
        assert _offload.threads() == 1  # never none
    finally:
        workers.leave()
        if _offload._executor is not None:
            _offload._executor.shutdown()
        _offload._executor = old
