"""The ``spanmetrics`` connector: the Collector's names, labels and options."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from pipeline import Kind, Traces
from pipeline.telemetry import SelfTelemetry
from plugins.spanmetricsconnector.config import SpanMetricsConfig
from plugins.spanmetricsconnector.connector import RESOURCE_CACHE_BYTES, SpanMetricsConnector
from tests.plugins._agent_support import Capture, attrs_of, kv, request, settings, span
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


def connector(tel: SelfTelemetry | None = None, **options: Any) -> tuple[Any, Capture]:
    out = Capture()
    cfg = SpanMetricsConfig.model_validate({"metrics_flush_interval": "0s", **options})
    conn = SpanMetricsConnector(settings(Kind.CONNECTOR, "spanmetrics", tel), cfg, out)
    return conn, out


def resource_request(spans: list[Span], **resource: Any) -> Traces:
    """One ResourceSpans with the given resource attributes."""
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.extend(kv(k, v) for k, v in resource.items())
    rs.scope_spans.add().spans.extend(spans)
    return Traces(req.SerializeToString())


def calls_by_resource(req: Any) -> list[tuple[dict[str, Any], int]]:
    """(resource attributes, sum of the calls points) per ResourceMetrics."""
    out = []
    for rm in req.resource_metrics:
        total = sum(
            dp.as_int
            for sm in rm.scope_metrics
            for m in sm.metrics
            if m.name.endswith(".calls")
            for dp in m.sum.data_points
        )
        out.append((attrs_of(rm.resource), total))
    return out


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
    both = {"explicit": {"buckets": ["1s"]}, "exponential": {"max_size": 10}}
    with pytest.raises(ValueError, match="either `explicit` or `exponential`"):
        SpanMetricsConfig.model_validate({"histogram": both})
    with pytest.raises(ValueError, match="at least 2"):
        SpanMetricsConfig.model_validate({"histogram": {"exponential": {"max_size": 1}}})
    zero = {"histogram": {"exponential": {"max_size": 0}}}
    exponential = SpanMetricsConfig.model_validate(zero).histogram.exponential
    assert exponential is not None and exponential.max_size == 160
    empty = SpanMetricsConfig.model_validate({"histogram": {"exponential": None}}).histogram
    assert empty.exponential is not None and empty.exponential.max_size == 160


async def test_resource_metrics_key_attributes_merge_resources_keeping_the_first() -> None:
    """Only the key attributes identify a resource: a restarted process (new process.pid)
    keeps counting in the same series; the exported resource is the first one seen, whole."""
    conn, out = connector(resource_metrics_key_attributes=["service.name", "host.name"])
    await conn.consume(
        resource_request(
            [span(1, 1, None, "a")], **{"service.name": "svc", "host.name": "h1", "process.pid": 1}
        )
    )
    await conn.consume(
        resource_request(
            [span(1, 2, None, "a"), span(1, 3, None, "a")],
            **{"service.name": "svc", "host.name": "h1", "process.pid": 2},
        )
    )
    await conn.consume(
        resource_request(
            [span(1, 4, None, "a")], **{"service.name": "svc", "host.name": "h2", "process.pid": 3}
        )
    )
    await conn.flush()
    got = calls_by_resource(out.payloads[0].message())
    assert sorted(got, key=lambda r: r[0]["host.name"]) == [
        ({"service.name": "svc", "host.name": "h1", "process.pid": 1}, 3),
        ({"service.name": "svc", "host.name": "h2", "process.pid": 3}, 1),
    ]
    # without the option every distinct resource is its own
    conn, out = connector()
    for pid in (1, 2):
        await conn.consume(
            resource_request(
                [span(1, pid, None, "a")], **{"service.name": "svc", "process.pid": pid}
            )
        )
    await conn.flush()
    assert sorted(r[0]["process.pid"] for r in calls_by_resource(out.payloads[0].message())) == [
        1,
        2,
    ]


async def test_key_attributes_delta_takes_the_first_resource_of_each_interval() -> None:
    conn, out = connector(
        resource_metrics_key_attributes=["service.name"],
        aggregation_temporality="AGGREGATION_TEMPORALITY_DELTA",
    )
    for pids in ((1, 2), (2, 1)):
        for pid in pids:
            await conn.consume(
                resource_request(
                    [span(1, pid, None, "a")], **{"service.name": "svc", "process.pid": pid}
                )
            )
        await conn.flush()
    assert [calls_by_resource(p.message()) for p in out.payloads] == [
        [({"service.name": "svc", "process.pid": 1}, 2)],
        [({"service.name": "svc", "process.pid": 2}, 2)],
    ]


async def test_a_resource_seen_again_after_expiry_is_exported_whole() -> None:
    # 300 ms: the consume and flush after the expiry must stay inside it, also on a slow
    # (sanitizer) build of a busy machine (1 ms flaked there)
    conn, out = connector(metrics_expiration="300ms")
    res = {"service.name": "svc", "host.name": "h1"}
    await conn.consume(resource_request([span(1, 1, None, "a")], **res))
    await asyncio.sleep(0.35)
    assert await conn.flush() == 0  # expired
    await conn.consume(resource_request([span(1, 2, None, "a")], **res))
    await conn.flush()
    assert calls_by_resource(out.payloads[-1].message()) == [(res, 1)]


async def test_delta_points_start_at_the_previous_flush() -> None:
    conn, out = connector(aggregation_temporality="AGGREGATION_TEMPORALITY_DELTA")
    assert conn.aggregator.delta_start_cache_size == 10_000
    for i in range(2):
        await conn.consume(request([span(1, i, None, "a")]))
        await conn.flush()
    first, second = (
        {
            m.name: m
            for rm in p.message().resource_metrics
            for sm in rm.scope_metrics
            for m in sm.metrics
        }
        for p in out.payloads
    )
    for name, kind in (("calls", "sum"), ("duration", "histogram")):
        (p1,) = getattr(first[f"traces.span.metrics.{name}"], kind).data_points
        (p2,) = getattr(second[f"traces.span.metrics.{name}"], kind).data_points
        assert p2.start_time_unix_nano == p1.time_unix_nano
        assert p1.start_time_unix_nano < p1.time_unix_nano


def test_metric_timestamp_cache_size_options() -> None:
    nested = {"delta_temporality": {"metric_timestamp_cache_size": 5}}
    assert SpanMetricsConfig.model_validate(nested).timestamp_cache_size == 5
    top = {"metric_timestamp_cache_size": 7}
    assert SpanMetricsConfig.model_validate(top).timestamp_cache_size == 7
    assert SpanMetricsConfig.model_validate({}).timestamp_cache_size == 10_000
    with pytest.raises(ValueError, match="differ"):
        SpanMetricsConfig.model_validate({**nested, **top})
    with pytest.raises(ValueError):
        SpanMetricsConfig.model_validate({"delta_temporality": {"metric_timestamp_cache_size": 0}})


def with_events(s: Span, *events: dict[str, Any]) -> Span:
    for i, attrs in enumerate(events):
        s.events.add(
            time_unix_nano=s.start_time_unix_nano + i,
            name="exception",
            attributes=[kv(k, v) for k, v in attrs.items()],
        )
    return s


async def test_events_counted_by_common_span_and_event_dimensions() -> None:
    conn, out = connector(
        dimensions=[{"name": "http.method"}],
        events={
            "enabled": True,
            "dimensions": [
                {"name": "exception.type"},
                {"name": "exception.message", "default": "none"},
                {"name": "region"},
            ],
        },
        exclude_dimensions=["status.code"],
    )
    assert conn._scanner is None  # the Python path counts events
    spans = [
        with_events(
            span(1, 1, None, "a", attrs={"http.method": "GET"}),
            {"exception.type": "ValueError", "exception.message": "bad"},
            {"exception.type": "ValueError", "exception.message": "bad"},
            {"exception.type": "KeyError", "exception.escaped": True},
        ),
        # a span attribute wins over the event's
        with_events(
            span(1, 2, None, "b", attrs={"exception.type": "FromSpan"}),
            {"exception.type": "FromEvent", "exception.message": 7},
        ),
        span(1, 3, None, "c"),  # no events: not counted
    ]
    await conn.consume(resource_request(spans, **{"service.name": "svc", "region": "eu"}))
    await conn.flush()
    req = out.payloads[0].message()
    got = {tuple(labels(dp).items()): dp.as_int for dp in points(req, "traces.span.metrics.events")}
    common = (("service.name", "svc"),)
    assert got == {
        (
            *common,
            ("span.name", "a"),
            ("span.kind", "SPAN_KIND_INTERNAL"),
            ("http.method", "GET"),
            ("exception.type", "ValueError"),
            ("exception.message", "bad"),
            ("region", "eu"),
        ): 2,
        (
            *common,
            ("span.name", "a"),
            ("span.kind", "SPAN_KIND_INTERNAL"),
            ("http.method", "GET"),
            ("exception.type", "KeyError"),
            ("exception.message", "none"),
            ("region", "eu"),
        ): 1,
        (
            *common,
            ("span.name", "b"),
            ("span.kind", "SPAN_KIND_INTERNAL"),
            ("exception.type", "FromSpan"),
            ("exception.message", "7"),
            ("region", "eu"),
        ): 1,
    }
    (events_metric,) = [
        m
        for rm in req.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == "traces.span.metrics.events"
    ]
    assert events_metric.sum.is_monotonic and events_metric.sum.aggregation_temporality == 2
    assert sum(dp.as_int for dp in points(req, "traces.span.metrics.calls")) == 3


async def test_events_disabled_emit_no_events_metric() -> None:
    req, _ = await run({"svc": [with_events(span(1, 1, None, "a"), {"exception.type": "E"})]})
    assert not points(req, "traces.span.metrics.events")


def test_events_config_errors() -> None:
    with pytest.raises(ValueError, match="at least one dimension"):
        SpanMetricsConfig.model_validate({"events": {"enabled": True}})
    with pytest.raises(ValueError, match="duplicate"):
        SpanMetricsConfig.model_validate(
            {"events": {"enabled": True, "dimensions": [{"name": "span.name"}]}}
        )
    with pytest.raises(ValueError, match="duplicate"):
        SpanMetricsConfig.model_validate(
            {"events": {"enabled": True, "dimensions": [{"name": "x"}, {"name": "x"}]}}
        )
    # disabled: dimensions not needed
    assert not SpanMetricsConfig.model_validate({"events": {"enabled": False}}).events.enabled


async def test_events_without_span_dimensions_and_with_exemplars() -> None:
    conn, out = connector(
        exemplars={"enabled": True},
        events={"enabled": True, "dimensions": [{"name": "exception.type"}]},
    )
    s = with_events(span(1, 1, None, "a"), {"exception.type": "E"}, {"other": 1})
    await conn.consume(request([s, span(1, 2, None, "a")], service="svc"))
    await conn.flush()
    req = out.payloads[0].message()
    got = sorted(
        (labels(dp).get("exception.type", ""), dp.as_int)
        for dp in points(req, "traces.span.metrics.events")
    )
    assert got == [("", 1), ("E", 1)]
    (dur,) = points(req, "traces.span.metrics.duration")
    assert dur.count == 2 and len(dur.exemplars) == 2


async def test_exponential_histogram_end_to_end() -> None:
    conn, out = connector(histogram={"exponential": {"max_size": 160}}, exemplars={"enabled": True})
    assert conn._scanner is None  # the Python path aggregates exponential histograms
    spans = []
    # exact durations in ns (1, 2, 3 ms, 0, and a span ending before it started: 0)
    for i, duration_ns in enumerate([1_000_000, 2_000_000, 3_000_000, 0, -1000]):
        s = span(1, i + 1, None, "a")
        s.end_time_unix_nano = s.start_time_unix_nano + duration_ns
        spans.append(s)
    await conn.consume(request(spans, service="svc"))
    await conn.flush()
    req = out.payloads[0].message()
    (metric,) = [
        m
        for rm in req.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == "traces.span.metrics.duration"
    ]
    assert metric.unit == "ms" and metric.WhichOneof("data") == "exponential_histogram"
    assert metric.exponential_histogram.aggregation_temporality == 2
    (dp,) = metric.exponential_histogram.data_points
    # 1, 2 and 3 ms: at scale 6, 1 closes bucket -1, 2 closes bucket 63 and
    # floor(log2(3) * 64) = 101; at scale 7 the indexes -1..202 would not fit in 160 buckets
    assert (dp.count, dp.zero_count, dp.scale) == (5, 2, 6)
    assert (dp.sum, dp.min, dp.max) == (6.0, 0.0, 3.0)
    assert dp.positive.offset == -1 and len(dp.positive.bucket_counts) == 103
    assert {i - 1: n for i, n in enumerate(dp.positive.bucket_counts) if n} == {
        -1: 1,
        63: 1,
        101: 1,
    }
    assert not dp.negative.bucket_counts
    assert len(dp.exemplars) == 5
    assert labels(dp)["span.name"] == "a"


async def test_hostile_large_resources_hold_bounded_memory_in_the_resource_cache() -> None:
    """The decoded-resource cache is keyed by the encoded resource and bounded in bytes, the
    keys counted: distinct 1 MiB resources (a hostile sender) do not each stay held, up to the
    entry bound; what it holds (keys, series keys, attribute text) stays within the bound."""
    conn, out = connector()
    for i in range(40):
        big = f"{i}-" + "x" * (1 << 20)
        await conn.consume(resource_request([span(1, i + 1, None, "a")], **{"host.name": big}))
        held = sum(
            len(raw) + len(key) + sum(len(k) + len(v) for k, v in attrs.items())
            for raw, (key, _, attrs) in conn._resources.items()
        )
        assert held == conn._resources_bytes <= RESOURCE_CACHE_BYTES
        # the resources themselves are the keys, counted: each entry holds more than 2 MiB
        assert all(len(raw) > 1 << 20 for raw in conn._resources)
        assert len(conn._resources) <= RESOURCE_CACHE_BYTES // (2 << 20)
    assert conn._resources  # still a cache
    # a resource seen again is a hit (the same entry), and its series are the same
    raw = next(iter(conn._resources))
    entry = conn._resources[raw]
    assert conn._resource(bytes(bytearray(raw))) is entry
    await conn.shutdown()
    (req,) = (p.message() for p in out.payloads)
    assert sum(total for _, total in calls_by_resource(req)) == 40


def huge_array() -> KeyValue:
    """``host.ip``: a 1 MiB array (of 16,384 strings of 64 characters)."""
    value = AnyValue()
    for i in range(1 << 14):
        value.array_value.values.add(string_value=f"{i:06d}" + "a" * 58)
    assert value.ByteSize() > 1 << 20
    return KeyValue(key="host.ip", value=value)


def nested_kvlist(depth: int = 28) -> KeyValue:
    """``process.config``: a kvlist nested ``depth`` deep (as deep as the OTLP decoders take
    under a resource), each level padded, rendering to more than the bound."""
    inner = AnyValue(string_value="leaf")
    for i in range(depth):
        outer = AnyValue()
        outer.kvlist_value.values.add(key="pad", value=AnyValue(string_value="p" * 200))
        outer.kvlist_value.values.add(key=f"k{i}", value=inner)
        inner = outer
    return KeyValue(key="process.config", value=inner)


async def test_hostile_array_and_kvlist_resource_values_are_cut_as_labels_are(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A 1 MiB array and a deeply nested kvlist resource attribute are not flushed whole: each
    becomes its rendering as a label (compact JSON, as ``target_info`` renders it) cut to the
    bound, so the label made downstream is the one the uncut value makes; each cut is counted
    in ``otelcol_label_values_truncated_total`` and logged. Before, only strings and bytes were
    cut: every flush exported the 1 MiB array again."""
    from pipeline.ratelimit import LogLimiter
    from plugins import _labelbound
    from plugins._anyvalue import any_value_to_string
    from plugins._labelbound import MAX_LABEL_VALUE_CHARS
    from plugins.prometheustranslator import resource_target_info_labels
    from tests.support import logged

    monkeypatch.setattr(_labelbound, "_CUT_LOG", LogLimiter())  # (no other test's last line)
    hostile = [huge_array(), nested_kvlist(), kv("service.name", "svc"), kv("small", "x")]
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.extend(hostile)
    rs.scope_spans.add().spans.extend([span(1, 1, None, "a"), span(1, 2, 1, "b")])
    body = req.SerializeToString()
    req = ExportTraceServiceRequest.FromString(body)  # (the decoders take it)
    tel = SelfTelemetry()
    conn, out = connector(tel)
    with logged() as records:
        for _ in range(3):
            await conn.consume(Traces(body))
        await conn.shutdown()
    (got,) = (p.message() for p in out.payloads)
    (rm,) = got.resource_metrics
    flushed = {a.key: a.value for a in rm.resource.attributes}
    for original in hostile[:2]:
        value = flushed[original.key]
        assert value.WhichOneof("value") == "string_value"
        assert value.string_value == any_value_to_string(original.value)[:MAX_LABEL_VALUE_CHARS]
    assert flushed["service.name"].string_value == "svc" and flushed["small"].string_value == "x"
    assert rm.resource.ByteSize() < 3 * MAX_LABEL_VALUE_CHARS
    # the target_info labels of the flushed resource: those of the uncut one, cut
    want = {
        k: v[:MAX_LABEL_VALUE_CHARS]
        for k, v in resource_target_info_labels(req.resource_spans[0].resource).items()
    }
    assert resource_target_info_labels(rm.resource) == want
    assert sum(calls for _, calls in calls_by_resource(got)) == 6
    cut = [
        s.value
        for family in tel.registry.collect()
        if family.name == "otelcol_label_values_truncated"
        for s in family.samples
        if s.name.endswith("_total") and s.labels["component"] == "spanmetrics"
    ]
    assert cut == [2.0]  # (the resource is decoded once, then cached)
    assert any("2 label value(s) longer than" in r.getMessage() for r in records)


async def test_a_flush_carries_its_point_count_and_a_refused_one_is_counted_dropped() -> None:
    """The flush's payload says how many points it holds (the count its build made), so the
    components after it and a refusal count it without walking the request; a refused flush's
    points are counted dropped (``otelcol_connector_dropped_items{reason=refused}``)."""
    from pipeline.errors import PermanentError
    from pipeline.pdata import Metrics

    class Refusing(Capture):
        refuse = False

        async def consume(self, data: Any) -> None:
            await super().consume(data)
            if self.refuse:
                raise PermanentError("no")

    tel = SelfTelemetry()
    out = Refusing()
    cfg = SpanMetricsConfig.model_validate({"metrics_flush_interval": "0s"})
    conn = SpanMetricsConnector(settings(Kind.CONNECTOR, "spanmetrics", tel), cfg, out)
    spans = [span(1, 1, None, "a", duration=0.2), span(1, 2, 1, "b", error="x", duration=1.0)]
    await conn.consume(request(spans, service="svc"))
    sent = await conn.flush()
    flushed = out.payloads[0]
    # before: built without a count (None), counted by the first component that asked
    assert flushed._count == sent == Metrics(flushed.to_bytes()).item_count() > 0
    out.refuse = True
    await conn.consume(request(spans, service="svc"))
    assert await conn.flush() == 0
    refused = out.payloads[1]
    assert refused._count == Metrics(refused.to_bytes()).item_count()
    dropped = tel.registry.get_sample_value(
        "otelcol_connector_dropped_items_total",
        {"connector": "spanmetrics", "otel_signal": "metrics", "reason": "refused"},
    )
    assert dropped == refused._count
    await conn.shutdown()
