from __future__ import annotations

import logging

import pytest

from pipeline.ratelimit import LogLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_one_line_per_key_per_interval_with_the_count_held_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    limiter = LogLimiter(interval=1.0, clock=clock)
    log = logging.getLogger("test.ratelimit")
    with caplog.at_level(logging.WARNING, logger="test.ratelimit"):
        for _ in range(1000):
            limiter.log(log, logging.WARNING, "refused: %s", "bad")
        assert len(caplog.records) == 1
        assert not hasattr(caplog.records[0], "similar_not_logged")
        clock.now += 0.5
        assert not limiter.log(log, logging.WARNING, "refused: %s", "bad")
        clock.now += 0.6
        assert limiter.log(log, logging.WARNING, "refused: %s", "bad")
    assert len(caplog.records) == 2
    assert caplog.records[1].similar_not_logged == 1000  # type: ignore[attr-defined]


def test_keys_are_independent_and_bounded() -> None:
    clock = Clock()
    limiter = LogLimiter(interval=1.0, max_keys=3, clock=clock)
    assert limiter.allow("a") == 0
    assert limiter.allow("b") == 0
    assert limiter.allow("a") is None
    for key in ("c", "d", "e"):
        assert limiter.allow(key) == 0
    # "a" and "b" were forgotten (least recently used): they log again at once
    assert limiter.allow("b") == 0
