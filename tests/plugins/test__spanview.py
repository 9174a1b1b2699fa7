"""``plugins._spanview``'s decoded-value cache: bounded in entries and in bytes."""

from __future__ import annotations

import pytest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from plugins import _spanview
from plugins._spanview import DECODED, DECODED_MAX_BYTES, cached_str


def encoded(text: str) -> bytes:
    return AnyValue(string_value=text).SerializeToString()


def test_short_values_are_remembered() -> None:
    raw = encoded("research-agent")
    assert cached_str(raw) == "research-agent"
    assert DECODED[raw] == "research-agent"


def test_huge_values_are_decoded_every_time_and_never_held() -> None:
    before = len(DECODED)
    for i in range(50):
        big = encoded(f"{i}" + "x" * (1 << 20))  # 1 MiB names: hostile labels
        assert cached_str(big) == f"{i}" + "x" * (1 << 20)
        assert big not in DECODED
    assert len(DECODED) <= before
    edge = encoded("y" * (DECODED_MAX_BYTES - 3))
    assert len(edge) == DECODED_MAX_BYTES
    assert cached_str(edge) == "y" * (DECODED_MAX_BYTES - 3)
    assert edge in DECODED


def test_the_cache_is_cleared_when_full(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_spanview, "DECODED_MAX", 4)
    DECODED.clear()
    for i in range(9):
        assert cached_str(encoded(f"v{i}")) == f"v{i}"
        assert len(DECODED) <= 4
