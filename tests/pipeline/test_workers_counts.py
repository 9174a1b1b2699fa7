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
