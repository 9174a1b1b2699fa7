"""The allocator tuning the CLI applies before running a gateway."""

from __future__ import annotations

import sys

import pytest

from pipeline._malloc import tune_allocator


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
