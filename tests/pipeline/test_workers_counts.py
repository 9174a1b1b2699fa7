"""The item count travels with a part handed to a sibling: the owner's entrance does not count
the spans again (``Payload.item_count`` without a count walks the request with upb: ~11k
instructions for a 1-span request, against ~25k for the whole consume)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from pipeline.pdata import Signal, Traces
from pipeline.workers import Router
from tests.pipeline.test__route import request, spans_of, trace_id
from tests.pipeline.test_workers import _Sink, _two_workers


class _CountSink(_Sink):
    """Records the count each payload arrived with (``None``: it would be counted)."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: list[int | None] = []

    async def consume(self, data: Any) -> None:
        self.counts.append(data._count)
        await super().consume(data)


@pytest.mark.parametrize("acknowledge", ["owner", "handover"])
def test_a_request_a_sibling_owns_whole_reaches_it_with_its_count(
    tmp_path: Path, acknowledge: str
) -> None:
    """Handed over one by one (``owner``) or joined (``handover``): every part that reaches
    the sibling says how many spans it holds."""
    t1 = trace_id(1, 2)
    whole = request([("a", [t1, t1, t1])]).SerializeToString()
    split = request([("a", [trace_id(0, 2), t1, t1])]).SerializeToString()

    async def main() -> None:
        remote = _CountSink()
        async with _two_workers(tmp_path, remote, acknowledge=acknowledge) as (a, _):
            router = Router(a, Signal.TRACES, ["traces"], _Sink())
            await a._peer(1).ready()
            received = Traces(whole)
            received.validate()  # as a receiver does: counted
            await router.consume(received)
            received = Traces(split)
            received.validate()
            await router.consume(received)
            for _ in range(100):
                if sum(len(spans_of(got)) for got in remote.got) == 5:
                    break
                await asyncio.sleep(0.02)
        spans = [s[3] for got in remote.got for s in spans_of(got)]
        assert spans == [t1] * 5
        # before: the whole request went on with its count unknown (-1; a joined part's
        # total unknown with it), counted again there
        assert None not in remote.counts and sum(remote.counts) == 5  # type: ignore[arg-type]

    asyncio.run(main())


def test_a_metrics_request_split_between_workers_carries_each_parts_count(
    tmp_path: Path,
) -> None:
    """A metrics request whose resources two workers own: each part reaches its owner (and
    this worker's pipelines) with its point count; the owner's permanent refusal of its part
    is counted with that part's points (``otelcol_worker_forward_failed_items``)."""
    from pipeline.errors import PermanentError
    from pipeline.pdata import Metrics
    from pipeline.telemetry import SelfTelemetry
    from tests.pipeline.test__route import metrics_request

    data = metrics_request([f"svc-{i}" for i in range(12)])  # a point a resource
    telemetry = SelfTelemetry()

    def failed() -> float:
        value = telemetry.registry.get_sample_value(
            "otelcol_worker_forward_failed_items_total",
            {"signal": "metrics", "reason": "refused"},
        )
        return value or 0.0

    async def main() -> tuple[list[int | None], list[int | None]]:
        remote, local = _CountSink(), _CountSink()
        async with _two_workers(tmp_path, remote) as (a, _):
            router = a.router(Signal.METRICS, ["traces"], local, telemetry)
            await a._peer(1).ready()
            received = Metrics(data)
            received.validate()
            await router.consume(received)
            theirs = remote.counts[0]
            remote.error = PermanentError("bad")
            with pytest.raises(PermanentError):
                await router.consume(received.copy())
            assert failed() == theirs
        return remote.counts, local.counts

    remote_counts, local_counts = asyncio.run(main())
    # before: both parts went on with their counts unknown, counted again where they arrived
    assert None not in remote_counts and None not in local_counts
    assert 0 < remote_counts[0] < 12  # type: ignore[operator]
    assert remote_counts[0] + local_counts[0] == 12  # type: ignore[operator]
