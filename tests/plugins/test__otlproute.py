"""The byte-level split of plugins/_otlproute.py on random and mutated requests: valid input
splits into parts holding every item once (a full parse of each part agrees), anything else
raises MalformedDataError and nothing else."""

from __future__ import annotations

import pytest

from pipeline import MalformedDataError, Signal
from pipeline.pdata import payload_type
from plugins._otlproute import SUPPORTED, split
from tests.otlp_corpus import corpus, fuzz

KINDS = {Signal.TRACES: "traces", Signal.METRICS: "metrics", Signal.LOGS: "logs"}


def _parts(key: bytes) -> int:
    return key[-1] % 3 if key else 0


@pytest.mark.parametrize("signal", list(Signal))
def test_valid_requests_split_into_every_item_once(signal: Signal) -> None:
    make = payload_type(signal)
    for raw in corpus(KINDS[signal], seed=7, n=40):
        total = make(raw).item_count()
        for key in SUPPORTED[signal]:
            try:
                parts = split(signal, raw, key, _parts)
            except MalformedDataError:
                continue  # a random request may hold what the split cannot read
            assert sum(c for _, c in parts.values()) == total, key
            for data, count in parts.values():
                part = make(data)
                part.message()  # a full parse of each part
                assert part.item_count() == count


@pytest.mark.parametrize("signal", list(Signal))
def test_mutated_requests_never_raise_anything_else(signal: Signal) -> None:
    seeds = corpus(KINDS[signal], seed=11, n=10)

    def check(data: bytes) -> None:
        for key in SUPPORTED[signal]:
            try:
                split(signal, data, key, _parts)
            except MalformedDataError:
                pass

    fuzz(KINDS[signal], seeds, 300, seed=3, check=check)
