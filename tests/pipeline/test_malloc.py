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
    trimmer = PeriodicTrim(lambda: calls.append(loop.time()), interval=0.02)
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
