"""The ``spanmetrics`` connector: the Collector's names, labels and options."""

from __future__ import annotations

import os
from typing import Any

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from pipeline import Kind
from pipeline.telemetry import SelfTelemetry
from plugins.spanmetricsconnector.config import SpanMetricsConfig
from plugins.spanmetricsconnector.connector import SpanMetricsConnector
from tests.plugins._agent_support import Capture, request, settings, span
from tests.plugins._native_support import both_paths
from tests.plugins.test__metricsagg import labels, points

# every test runs with the C scanner and with the pure-Python path
scanner = both_paths("_spanscan")


async def run(spans_by_service: dict[str, list[Span]], **options: Any) -> tuple[Any, SelfTelemetry]:
    tel = SelfTelemetry()
    out = Capture()
    cfg = SpanMetricsConfig.model_validate({"metrics_flush_interval": "0s", **options})
    conn = SpanMetricsConnector(settings(Kind.CONNECTOR, "spanmetrics", tel), cfg, out)
    assert (conn._scanner is not None) == (os.environ.get("PIPELINE_NATIVE") != "0")
    for service, spans in spans_by_service.items():
        await conn.consume(request(spans, service=service))
    await conn.shutdown()
    return out.payloads[0].message(), tel


async def test_default_names_labels_and_buckets() -> None:
    spans = [
        span(1, 1, None, "GET /a", kind=Span.SPAN_KIND_SERVER, duration=0.003),
        span(1, 2, 1, "GET /a", kind=Span.SPAN_KIND_SERVER, duration=0.0455),
        span(1, 3, 1, "q", kind=Span.SPAN_KIND_CLIENT, error="x", duration=2.0),
    ]
    req, _ = await run({"frontend": spans, "backend": [span(2, 1, None, "q", duration=0.5)]})
    names = {m.name for rm in req.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
    assert names == {"traces.span.metrics.calls", "traces.span.metrics.duration"}
    # one resource per service, with its resource attributes
    services = sorted(rm.resource.attributes[0].value.string_value for rm in req.resource_metrics)
    assert services == ["backend", "frontend"]
    calls = {
        tuple(sorted(labels(dp).items())): dp.as_int
        for dp in points(req, "traces.span.metrics.calls")
    }
    assert (
        calls[
            (
                ("service.name", "frontend"),
                ("span.kind", "SPAN_KIND_SERVER"),
                ("span.name", "GET /a"),
                ("status.code", "STATUS_CODE_UNSET"),
            )
        ]
        == 2
    )
    assert (
        calls[
            (
                ("service.name", "frontend"),
                ("span.kind", "SPAN_KIND_CLIENT"),
                ("span.name", "q"),
                ("status.code", "STATUS_CODE_ERROR"),
            )
        ]
        == 1
    )
    assert len(calls) == 3
    hist = [
        dp
        for dp in points(req, "traces.span.metrics.duration")
        if labels(dp)["span.name"] == "GET /a"
    ]
    (dp,) = hist
    assert list(dp.explicit_bounds) == [
        2,
        4,
        6,
        8,
        10,
        50,
        100,
        200,
        400,
        800,
        1000,
        1400,
        2000,
        5000,
        10000,
        15000,
    ]
    assert list(dp.bucket_counts)[:7] == [0, 1, 0, 0, 0, 1, 0]
    assert dp.sum == pytest.approx(48.5, abs=1e-3)
    unit = {
        m.name: m.unit for rm in req.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
    }
    assert unit["traces.span.metrics.duration"] == "ms"


async def test_dimensions_unit_seconds_namespace_exemplars_limit() -> None:
    spans = [
        span(1, i, None, f"op{i}", attrs={"http.method": "GET"} if i % 2 else {}, duration=0.2)
        for i in range(1, 7)
    ]
    req, tel = await run(
        {"svc": spans},
        namespace="",
        dimensions=[{"name": "http.method", "default": "NONE"}, {"name": "region"}],
        histogram={"unit": "s", "explicit": {"buckets": ["100ms", "1s"]}},
        exemplars={"enabled": True},
        aggregation_cardinality_limit=4,
    )
    calls = points(req, "calls")
    assert len(calls) == 5
    overflow = [dp for dp in calls if labels(dp) == {"otel.metric.overflow": True}]
    assert overflow[0].as_int == 2
    first = next(dp for dp in calls if labels(dp).get("span.name") == "op1")
    assert labels(first)["http.method"] == "GET" and "region" not in labels(first)
    second = next(dp for dp in calls if labels(dp).get("span.name") == "op2")
    assert labels(second)["http.method"] == "NONE"
    dur = next(dp for dp in points(req, "duration") if labels(dp).get("span.name") == "op1")
    assert list(dur.explicit_bounds) == [0.1, 1.0] and list(dur.bucket_counts) == [0, 1, 0]
    assert dur.exemplars[0].span_id == (1).to_bytes(8, "big")
    assert (
        tel.value(
            "otelcol_connector_aggregation_overflow_measurements_total",
            connector="spanmetrics",
            metric="calls",
        )
        == 2
    )


async def test_exclude_dimensions_and_delta() -> None:
    req, _ = await run(
        {"svc": [span(1, 1, None, "a"), span(1, 2, 1, "b")]},
        exclude_dimensions=["span.name"],
        aggregation_temporality="AGGREGATION_TEMPORALITY_DELTA",
        histogram={"disable": True},
    )
    (dp,) = points(req, "traces.span.metrics.calls")
    assert dp.as_int == 2 and "span.name" not in labels(dp)
    assert not points(req, "traces.span.metrics.duration")


def test_config_errors() -> None:
    with pytest.raises(ValueError, match="increasing"):
        SpanMetricsConfig.model_validate({"histogram": {"explicit": {"buckets": ["2s", "1s"]}}})
    with pytest.raises(ValueError):
        SpanMetricsConfig.model_validate({"histogram": {"exponential": {"max_size": 10}}})
