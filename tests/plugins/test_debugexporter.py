from __future__ import annotations

import logging

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from pipeline import Kind, Metrics, Signal, Traces
from pipeline.testing import create_settings
from plugins.debugexporter import DebugConfig, DebugExporter


def traces() -> Traces:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.add(key="service.name").value.string_value = "svc"
    ss = rs.scope_spans.add()
    ss.scope.name = "lib"
    span = ss.spans.add(
        name="GET /x",
        trace_id=bytes.fromhex("0af7651916cd43dd8448eb211c80319c"),
        span_id=bytes.fromhex("b7ad6b7169203331"),
        kind=2,
        start_time_unix_nano=1_700_000_000_000_000_000,
        end_time_unix_nano=1_700_000_000_500_000_000,
    )
    span.attributes.add(key="http.route").value.string_value = "/x"
    span.attributes.add(key="retries").value.int_value = 2
    span.status.code = 2
    span.status.message = "bad"
    return Traces(req.SerializeToString())


def metrics() -> Metrics:
    req = ExportMetricsServiceRequest()
    sm = req.resource_metrics.add().scope_metrics.add()
    m = sm.metrics.add(name="queue_depth", unit="1")
    m.gauge.data_points.add(as_double=4.5).attributes.add(key="q").value.string_value = "a"
    return Metrics(req.SerializeToString())


def exporter(verbosity: str, signal: Signal, **kw: object) -> DebugExporter:
    config = DebugConfig.model_validate({"verbosity": verbosity, **kw})
    return DebugExporter(create_settings(Kind.EXPORTER, "debug"), config, signal)


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "pipeline.exporter"]


async def test_basic_logs_counts(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pipeline")
    await exporter("basic", Signal.TRACES).consume(traces())
    record = next(r for r in caplog.records if r.name == "pipeline.exporter")
    assert record.getMessage() == "Traces"
    assert record.__dict__["resource spans"] == 1 and record.__dict__["spans"] == 1
    assert record.__dict__["component"] == "debug"


async def test_normal_one_line_per_item(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pipeline")
    await exporter("normal", Signal.TRACES).consume(traces())
    await exporter("normal", Signal.METRICS).consume(metrics())
    out = messages(caplog)
    assert (
        "GET /x 0af7651916cd43dd8448eb211c80319c b7ad6b7169203331 http.route=Str(/x) retries=Int(2)"
        in out
    )
    assert "queue_depth{q=Str(a)} 4.5" in out


async def test_detailed_has_every_field(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pipeline")
    await exporter("detailed", Signal.TRACES).consume(traces())
    text = messages(caplog)[1]
    for line in [
        "ResourceSpans #0",
        "     -> service.name: Str(svc)",
        "InstrumentationScope lib",
        "    Trace ID       : 0af7651916cd43dd8448eb211c80319c",
        "    ID             : b7ad6b7169203331",
        "    Name           : GET /x",
        "    Kind           : Server",
        "    Start time     : 2023-11-14 22:13:20.000000000 +0000 UTC",
        "    End time       : 2023-11-14 22:13:20.500000000 +0000 UTC",
        "    Status code    : Error",
        "    Status message : bad",
        "     -> retries: Int(2)",
    ]:
        assert line in text.splitlines()


async def test_sampling_limits_lines_per_second(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pipeline")
    exp = exporter("basic", Signal.TRACES, sampling_initial=2, sampling_thereafter=3)
    for _ in range(8):
        await exp.consume(traces())
    # 2 first, then every 3rd of the rest (the 5th and 8th), unless the second changed
    assert len(messages(caplog)) in (4, 5, 6)
    # everything is still counted as sent
    assert (
        exp.settings.telemetry.service.value("otelcol_exporter_sent_spans_total", exporter="debug")
        == 8
    )


async def test_stdout_output(capsys: pytest.CaptureFixture[str]) -> None:
    await exporter("basic", Signal.METRICS, use_internal_logger=False).consume(metrics())
    assert "Metrics resource metrics=1 metrics=1 data points=1" in capsys.readouterr().out


async def test_detailed_prints_enum_values_without_a_name(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """OTLP enums are open: a span kind, status code or temporality outside the known names
    (negative included) is printed as its number (found by fuzzing what receivers accept)."""
    caplog.set_level(logging.INFO, logger="pipeline")
    payload = traces()
    span = payload.mutable_message().resource_spans[0].scope_spans[0].spans[0]
    span.kind = -7
    span.status.code = 9
    await exporter("detailed", Signal.TRACES).consume(payload)
    text = "\n".join(messages(caplog))
    assert "Kind           : -7" in text and "Status code    : 9" in text
    req = ExportMetricsServiceRequest()
    s = req.resource_metrics.add().scope_metrics.add().metrics.add(name="m").sum
    s.aggregation_temporality = -4  # type: ignore[assignment]
    s.data_points.add(as_int=1)
    await exporter("detailed", Signal.METRICS).consume(Metrics(req.SerializeToString()))
    assert "AggregationTemporality: -4" in "\n".join(messages(caplog))
