"""The ``loadbalancing`` exporter's byte-level split (``plugins/_otlproute.py``) on hostile
requests that the receivers' edge check accepts: seeded mutations of real requests (unknown
fields, odd wire types where protobuf allows them, repeated slices), a huge request and one
whose attributes are nested as deep as the check allows. What a receiver accepted must be
routed, never refused as unreadable (the exporter would drop it for good: "cannot route the
request"); every item lands in exactly one part, each part a request a full parse accepts."""

from __future__ import annotations

import random

import pytest

from pipeline import MalformedDataError, PermanentError, Signal
from pipeline.pdata import payload_type
from plugins._otlproute import SUPPORTED, split
from tests.hostile import mutate
from tests.otlp_corpus import corpus
from tests.poison import _nested_anyvalue, _span_with_extra_field, good_traces, ld

KINDS = {Signal.TRACES: "traces", Signal.METRICS: "metrics", Signal.LOGS: "logs"}


def _accepted(signal: Signal, data: bytes) -> int | None:
    try:
        payload = payload_type(signal)(data)
        payload.validate()
    except PermanentError:
        return None
    return payload.item_count()


def _check_split(signal: Signal, data: bytes, total: int) -> None:
    make = payload_type(signal)
    for key in SUPPORTED[signal]:
        try:
            parts = split(signal, data, key, lambda k: k[-1] % 3 if k else 0)
        except MalformedDataError as exc:  # pragma: no cover - the failure being tested
            raise AssertionError(f"{key}: an accepted request refused: {exc}") from None
        assert sum(c for _, c in parts.values()) == total, key
        for raw, count in parts.values():
            part = make(raw)
            part.validate()
            assert part.item_count() == count, key


@pytest.mark.parametrize("signal", list(Signal))
def test_fuzzed_requests_the_edge_accepts_are_routed_every_item_once(signal: Signal) -> None:
    rng = random.Random(1207)
    seeds = [s for s in corpus(KINDS[signal], seed=5, n=16) if s][:12]
    accepted = 0
    for i in range(600):
        data = mutate(seeds[i % len(seeds)], rng, seeds[(i + 1) % len(seeds)])
        total = _accepted(signal, data)
        if total is None:
            continue
        accepted += 1
        _check_split(signal, data, total)
    assert accepted >= 20  # enough of the mutations pass the check to mean something


def test_huge_and_deeply_nested_requests_are_routed() -> None:
    huge = good_traces(2000, seed=3)
    _check_split(Signal.TRACES, huge, 2000)
    # an attribute nested as deep as the check allows (and one level more: refused)
    for depth, ok in ((30, True), (60, False)):
        span_extra = ld(9, ld(1, b"deep") + ld(2, _nested_anyvalue(depth)))
        data = _span_with_extra_field(span_extra)
        total = _accepted(Signal.TRACES, data)
        assert (total is not None) == ok, depth
        if total is not None:
            _check_split(Signal.TRACES, data, total)
