"""The exporter helper's handling of requests too large for the receiving side: halves sent
with their own retries, single items dropped and counted, ``max_request_bytes`` splitting.
The real-peer versions (gRPC and HTTP receivers with small limits, rotel) are in
``tests/plugins/otlpexporter/test_request_size.py``."""

from __future__ import annotations

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from pipeline import (
    ExporterHelper,
    ExporterHelperConfig,
    Kind,
    Metrics,
    Payload,
    RequestTooLargeError,
    Signal,
    Traces,
)
from pipeline.errors import PermanentError, RetryableError
from pipeline.testing import StubHost, create_settings


def spans(n: int, size: int = 1000) -> Traces:
    req = ExportTraceServiceRequest()
    ss = req.resource_spans.add().scope_spans.add()
    for i in range(n):
        span = ss.spans.add(name=f"s{i}", span_id=i.to_bytes(8, "big"))
        span.attributes.add(key="pad").value.string_value = "x" * size
    return Traces(req.SerializeToString())


class LimitedSender:
    """Refuses any request above ``limit`` bytes as the gRPC/HTTP senders do."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.calls = 0
        self.sizes: list[int] = []
        self.span_ids: list[bytes] = []
        self.failures: list[Exception] = []

    async def send(self, data: Payload) -> None:
        self.calls += 1
        if data.nbytes > self.limit:
            raise RequestTooLargeError(f"message larger than max ({data.nbytes} vs. {self.limit})")
        if self.failures:
            raise self.failures.pop(0)
        self.sizes.append(data.nbytes)
        if data.signal is Signal.TRACES:
            for rs in data.message().resource_spans:
                for ss in rs.scope_spans:
                    self.span_ids.extend(s.span_id for s in ss.spans)


def helper(
    sender: LimitedSender,
    signal: Signal = Signal.TRACES,
    max_request_bytes: int = 0,
    **opts: object,
) -> ExporterHelper:
    config = ExporterHelperConfig.model_validate(
        {"retry_on_failure": {"initial_interval": "10ms", "max_interval": "20ms"}, **opts}
    )
    return ExporterHelper(
        create_settings(Kind.EXPORTER, "test"),
        signal,
        config,
        sender.send,
        max_request_bytes=max_request_bytes,
    )


def value(h: ExporterHelper, name: str, **labels: str) -> float:
    return h.settings.telemetry.service.value(name, **labels)


@pytest.mark.parametrize("queue", [True, False])
async def test_too_large_is_sent_in_halves_and_nothing_is_lost(queue: bool) -> None:
    sender = LimitedSender(limit=12_000)
    h = helper(sender, sending_queue={"enabled": queue})
    await h.start(StubHost())
    await h.consume(spans(100))  # ~100 kB: refused, then halves of halves...
    await h.shutdown()
    assert sorted(sender.span_ids) == [i.to_bytes(8, "big") for i in range(100)]
    assert max(sender.sizes) <= 12_000
    assert value(h, "otelcol_exporter_sent_spans_total", exporter="test") == 100
    assert value(h, "otelcol_exporter_send_failed_spans_total", exporter="test") == 0
    assert value(h, "otelcol_exporter_retried_spans_total", exporter="test") == 0
    splits = value(
        h,
        "otelcol_exporter_split_requests_total",
        exporter="test",
        data_type="traces",
        reason="too_large",
    )
    assert splits >= 7  # 100 -> 50 -> 25 -> 12/13: at least 1 + 2 + 4 splits


async def test_a_single_item_too_large_is_dropped_and_counted_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sender = LimitedSender(limit=5_000)
    h = helper(sender, sending_queue={"enabled": False})
    await h.start(StubHost())
    with pytest.raises(RequestTooLargeError):
        await h.consume(spans(1, size=10_000))
    await h.shutdown()
    assert sender.calls == 1  # not retried
    assert value(h, "otelcol_exporter_send_failed_spans_total", exporter="test") == 1
    assert value(h, "otelcol_exporter_retried_spans_total", exporter="test") == 0
    assert "a single span is too large" in caplog.text


async def test_one_metric_too_large_cannot_be_split_and_is_dropped() -> None:
    req = ExportMetricsServiceRequest()
    metric = req.resource_metrics.add().scope_metrics.add().metrics.add(name="m")
    for i in range(50):
        dp = metric.gauge.data_points.add(as_int=i)
        dp.attributes.add(key="pad").value.string_value = "y" * 200
    sender = LimitedSender(limit=2_000)
    h = helper(sender, Signal.METRICS, sending_queue={"enabled": False})
    await h.start(StubHost())
    with pytest.raises(RequestTooLargeError):
        await h.consume(Metrics(req.SerializeToString()))
    await h.shutdown()
    assert sender.calls == 1
    assert value(h, "otelcol_exporter_send_failed_metric_points_total", exporter="test") == 50


async def test_a_part_failing_after_another_was_delivered_is_not_retried_whole() -> None:
    sender = LimitedSender(limit=60_000)
    sender.failures = [RetryableError("busy")]
    h = helper(sender, sending_queue={"enabled": False}, retry_on_failure={"enabled": False})
    await h.start(StubHost())
    # First half refused once with a retryable error (retries off): dropped and counted; the
    # second half delivered. The caller must not retry the whole (it would duplicate).
    with pytest.raises(PermanentError):
        await h.consume(spans(100))
    await h.shutdown()
    assert len(sender.span_ids) == 50
    assert value(h, "otelcol_exporter_send_failed_spans_total", exporter="test") == 50
    assert value(h, "otelcol_exporter_sent_spans_total", exporter="test") == 50


async def test_max_request_bytes_splits_before_sending() -> None:
    sender = LimitedSender(limit=1 << 30)
    h = helper(sender, max_request_bytes=20_000)
    await h.start(StubHost())
    await h.consume(spans(100))
    await h.consume(spans(3))  # small: sent as is
    await h.shutdown()
    assert len(sender.span_ids) == 103
    assert max(sender.sizes) <= 20_000
    assert sender.calls == len(sender.sizes)  # nothing was refused
    assert (
        value(
            h,
            "otelcol_exporter_split_requests_total",
            exporter="test",
            data_type="traces",
            reason="max_request_bytes",
        )
        >= 1
    )
    assert (
        value(
            h,
            "otelcol_exporter_split_requests_total",
            exporter="test",
            data_type="traces",
            reason="too_large",
        )
        == 0
    )
