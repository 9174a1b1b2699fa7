"""The engine's failure isolation: :class:`IsolatedConsumer` at every consumer boundary,
``deliver_holding`` in background tasks, and supervised tasks (:mod:`pipeline.tasks`)."""

from __future__ import annotations

import asyncio
import logging

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from pipeline import Kind, PermanentError, RetryableError, Traces
from pipeline.consumer import IsolatedConsumer, deliver_holding
from pipeline.errors import DataDroppedError
from pipeline.pdata import Payload
from pipeline.tasks import supervise
from pipeline.testing import StubHost, create_settings


def request(names: list[str]) -> Traces:
    req = ExportTraceServiceRequest()
    for name in names:  # one resource per span: halves split anywhere
        span = req.resource_spans.add().scope_spans.add().spans.add()
        span.name = name
        span.trace_id = b"t" * 16
        span.span_id = b"s" * 8
    return Traces(req.SerializeToString())


class Picky:
    """Takes payloads atomically; raises (not a ConsumeError) on any holding a 'bad' span."""

    mutates_data = False

    def __init__(self) -> None:
        self.taken: list[str] = []
        self.calls = 0

    async def consume(self, data: Payload) -> None:
        self.calls += 1
        names = [s.name for rs in data.message().resource_spans for s in rs.scope_spans[0].spans]
        if any(n.startswith("bad") for n in names):
            raise KeyError("cannot handle " + ",".join(n for n in names if n.startswith("bad")))
        self.taken.extend(names)


async def test_only_the_failing_items_are_dropped_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = create_settings(Kind.CONNECTOR, "picky")
    inner = Picky()
    consumer = IsolatedConsumer(inner, settings)
    names = [f"good-{i}" for i in range(30)]
    names[7] = "bad-7"
    names[21] = "bad-21"
    with caplog.at_level(logging.ERROR):
        await consumer.consume(request(names))  # partly taken: no error upstream
    assert inner.taken == [n for n in names if not n.startswith("bad")]
    dropped = settings.telemetry.service.value(
        "otelcol_connector_dropped_items_total",
        connector="picky",
        otel_signal="traces",
        reason="component_error",
    )
    assert dropped == 2
    assert inner.calls < 30  # halving, not one call per item
    # logged once (rate-limited), with the error and the trace ids of what was dropped
    records = [r for r in caplog.records if "dropped" in r.getMessage()]
    assert len(records) == 1
    assert records[0].trace_ids == (b"t" * 16).hex()  # type: ignore[attr-defined]
    assert records[0].error_type == "KeyError"  # type: ignore[attr-defined]


async def test_nothing_taken_raises_data_dropped() -> None:
    settings = create_settings(Kind.EXPORTER, "picky")
    consumer = IsolatedConsumer(Picky(), settings)
    with pytest.raises(DataDroppedError, match="KeyError"):
        await consumer.consume(request(["bad-1", "bad-2"]))


async def test_consume_errors_pass_through_untouched() -> None:
    class Refusing:
        mutates_data = False

        async def consume(self, data: Payload) -> None:
            raise RetryableError("full", retry_after=2)

    consumer = IsolatedConsumer(Refusing(), create_settings(Kind.EXPORTER, "r"))
    with pytest.raises(RetryableError) as info:
        await consumer.consume(request(["a", "b"]))
    assert info.value.retry_after == 2


async def test_deliver_holding_does_not_count_a_drop_twice() -> None:
    settings = create_settings(Kind.PROCESSOR, "batch")

    class Dropping:
        mutates_data = False

        async def consume(self, data: Payload) -> None:
            raise DataDroppedError("dropped downstream")

    assert not await deliver_holding(Dropping(), request(["a"]), settings)
    assert (
        settings.telemetry.service.value(
            "otelcol_processor_dropped_items_total",
            processor="batch",
            otel_signal="traces",
            reason="refused_permanently",
        )
        == 0
    )

    class Permanent:
        mutates_data = False

        async def consume(self, data: Payload) -> None:
            raise PermanentError("never")

    assert not await deliver_holding(Permanent(), request(["a", "b"]), settings)
    assert (
        settings.telemetry.service.value(
            "otelcol_processor_dropped_items_total",
            processor="batch",
            otel_signal="traces",
            reason="refused_permanently",
        )
        == 2
    )


async def test_supervised_task_is_restarted_and_reported() -> None:
    settings = create_settings(Kind.PROCESSOR, "batch")
    settings.instance = "processor batch (pipeline traces)"
    host = StubHost()
    runs = 0
    done = asyncio.Event()

    async def run() -> None:
        nonlocal runs
        runs += 1
        if runs < 3:
            raise RuntimeError(f"boom {runs}")
        done.set()

    task = supervise(settings, host, "batch", run)
    await asyncio.wait_for(done.wait(), 5)
    await task
    assert runs == 3
    assert host.statuses[settings.instance][0] == "recoverable_error"
    assert (
        settings.telemetry.service.value(
            "otelcol_component_task_restarts_total",
            kind="processor",
            component="batch",
            task="batch",
        )
        == 2
    )


async def test_a_task_that_keeps_failing_is_given_up_as_permanent_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("pipeline.tasks.RESTART_DELAY", 0.001)
    settings = create_settings(Kind.EXPORTER, "otlp")
    settings.instance = "exporter otlp (traces)"
    host = StubHost()

    async def run() -> None:
        raise ValueError("always")

    await asyncio.wait_for(supervise(settings, host, "sender-0", run, max_restarts=3), 5)
    status, error = host.statuses[settings.instance]
    assert status == "permanent_error"
    assert isinstance(error, ValueError)


async def test_fan_out_asks_to_retry_when_any_consumer_deferred() -> None:
    """One consumer refuses permanently (or drops), another only pushes back: the sender must
    retry (at least once), not drop what the second consumer deferred."""
    from pipeline.consumer import FanOut

    class Taking:
        mutates_data = False

        def __init__(self) -> None:
            self.n = 0

        async def consume(self, data: Payload) -> None:
            self.n += 1

    class Full:
        mutates_data = False

        async def consume(self, data: Payload) -> None:
            raise RetryableError("queue full", retry_after=0.5)

    class Dropping:
        mutates_data = False

        async def consume(self, data: Payload) -> None:
            raise DataDroppedError("corrupt")

    taking = Taking()
    with pytest.raises(RetryableError) as info:
        await FanOut([taking, Dropping(), Full()]).consume(request(["a"]))
    assert info.value.retry_after == 0.5
    assert taking.n == 1
    with pytest.raises(DataDroppedError):
        await FanOut([taking, Dropping()]).consume(request(["a"]))
