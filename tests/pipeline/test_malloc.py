"""The allocator tuning the CLI applies before running a gateway."""

from __future__ import annotations

import asyncio
import itertools
import sys

import pytest

from pipeline._malloc import PeriodicTrim, malloc_trim, tune_allocator


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_tuning_applies_on_glibc_and_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    monkeypatch.delenv("PIPELINE_MALLOC_TUNING", raising=False)
    assert tune_allocator() is True
    monkeypatch.setenv("PIPELINE_MALLOC_TUNING", "0")
    assert tune_allocator() is False
    monkeypatch.delenv("PIPELINE_MALLOC_TUNING")
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "1000")
    assert tune_allocator() is False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_malloc_trim_is_callable_on_glibc() -> None:
    trim = malloc_trim()
    assert trim is not None
    assert trim() in (0, 1)  # 1: memory was released


async def test_periodic_trim_runs_until_cancelled() -> None:
    calls: list[float] = []
    loop = asyncio.get_running_loop()
    # an idle process (its CPU clock stands still): every tick trims
    trimmer = PeriodicTrim(lambda: calls.append(loop.time()), interval=0.02, cpu=lambda: 0.0)
    trimmer.start()
    while len(calls) < 3:
        await asyncio.sleep(0.01)
    trimmer.cancel()
    seen = len(calls)
    await asyncio.sleep(0.1)
    assert len(calls) == seen
    assert trimmer.calls == seen
    assert all(b - a >= 0.015 for a, b in itertools.pairwise(calls))
    trimmer.cancel()  # twice is fine


async def test_periodic_trim_skips_the_ticks_of_a_busy_process() -> None:
    """A tick after the process used more than busy_share of a CPU since the last one does not
    trim (what it would give back, the next requests fault in again); the first tick after the
    load calms down does."""
    calls: list[int] = []
    state = {"used": 0.0, "busy": True}

    def cpu() -> float:  # the process's CPU seconds: a busy process used 1 s since the last look
        if state["busy"]:
            state["used"] += 1.0
        return state["used"]

    trimmer = PeriodicTrim(lambda: calls.append(1), interval=0.02, busy_share=0.1, cpu=cpu)
    trimmer.start()
    while trimmer.skipped < 3:
        await asyncio.sleep(0.01)
    assert calls == []
    state["busy"] = False  # idle again: the next tick trims
    while not calls:
        await asyncio.sleep(0.01)
    trimmer.cancel()
    assert trimmer.calls == len(calls) == 1
    assert trimmer.skipped >= 3
