from __future__ import annotations

import logging

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from pipeline import Kind, Logs, Metrics, Signal, Traces
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
        "InstrumentationScope lib ",  # the Collector's: name and version, even when empty
        "    Trace ID       : 0af7651916cd43dd8448eb211c80319c",
        "    ID             : b7ad6b7169203331",
        "    Name           : GET /x",
        "    Kind           : Server",
        "    Start time     : 2023-11-14 22:13:20 +0000 UTC",
        "    End time       : 2023-11-14 22:13:20.5 +0000 UTC",
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


def logs() -> Logs:
    """The records of the Collector's debug exporter test data (``two_records.out``,
    ``embedded_maps.out``, ``log_with_event_name.out``)."""
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    rl.resource.attributes.add(key="resource-attr").value.string_value = "resource-attr-val-1"
    sl = rl.scope_logs.add()
    first = sl.log_records.add(
        time_unix_nano=1_581_452_773_000_000_789,
        severity_text="Info",
        severity_number=9,
        trace_id=bytes.fromhex("08040201000000000000000000000000"),
        span_id=bytes.fromhex("0102040800000000"),
    )
    first.body.string_value = "This is a log message"
    first.attributes.add(key="app").value.string_value = "server"
    first.attributes.add(key="instance_num").value.int_value = 1
    second = sl.log_records.add(
        time_unix_nano=1_581_452_773_000_000_789,
        severity_text="INFO",
        severity_number=9,
        event_name="my.event",
    )
    body = second.body.kvlist_value.values
    body.add(key="key1").value.string_value = "val1"
    nested = body.add(key="key2").value.kvlist_value.values
    nested.add(key="key21").value.string_value = "val21"
    nested.add(key="key22").value.string_value = "val22"
    second.attributes.add(key="key2").value.string_value = "val2"
    second.attributes.add(key="ratio").value.double_value = 0.25
    second.attributes.add(key="tags").value.array_value.values.add().int_value = 7
    return Logs(req.SerializeToString())


async def test_logs_basic_normal_and_detailed_as_the_collector(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="pipeline")
    await exporter("basic", Signal.LOGS).consume(logs())
    record = next(r for r in caplog.records if r.name == "pipeline.exporter")
    assert record.getMessage() == "Logs"
    assert record.__dict__["resource logs"] == 1 and record.__dict__["log records"] == 2
    caplog.clear()
    await exporter("normal", Signal.LOGS).consume(logs())
    assert messages(caplog)[1].splitlines() == [
        "This is a log message app=server instance_num=1",
        '{"key1":"val1","key2":{"key21":"val21","key22":"val22"}} key2=val2 ratio=0.25 tags=[7]',
    ]
    caplog.clear()
    await exporter("detailed", Signal.LOGS).consume(logs())
    assert messages(caplog)[1] == (
        "ResourceLog #0\n"
        "Resource SchemaURL: \n"
        "Resource attributes:\n"
        "     -> resource-attr: Str(resource-attr-val-1)\n"
        "ScopeLogs #0\n"
        "ScopeLogs SchemaURL: \n"
        "InstrumentationScope  \n"
        "LogRecord #0\n"
        "ObservedTimestamp: 1970-01-01 00:00:00 +0000 UTC\n"
        "Timestamp: 2020-02-11 20:26:13.000000789 +0000 UTC\n"
        "SeverityText: Info\n"
        "SeverityNumber: Info(9)\n"
        "Body: Str(This is a log message)\n"
        "Attributes:\n"
        "     -> app: Str(server)\n"
        "     -> instance_num: Int(1)\n"
        "Trace ID: 08040201000000000000000000000000\n"
        "Span ID: 0102040800000000\n"
        "Flags: 0\n"
        "LogRecord #1\n"
        "ObservedTimestamp: 1970-01-01 00:00:00 +0000 UTC\n"
        "Timestamp: 2020-02-11 20:26:13.000000789 +0000 UTC\n"
        "SeverityText: INFO\n"
        "SeverityNumber: Info(9)\n"
        "EventName: my.event\n"
        'Body: Map({"key1":"val1","key2":{"key21":"val21","key22":"val22"}})\n'
        "Attributes:\n"
        "     -> key2: Str(val2)\n"
        "     -> ratio: Double(0.25)\n"
        "     -> tags: Slice([7])\n"
        "Trace ID: \n"
        "Span ID: \n"
        "Flags: 0"
    )
    assert caplog.records[0].__dict__["log records"] == 2  # the counts line comes first


def test_values_print_as_pdata_prints_them() -> None:
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue

    from plugins.debugexporter import format_value

    cases = [
        (AnyValue(double_value=3.0), "Double(3)"),
        (AnyValue(double_value=1e16), "Double(10000000000000000)"),
        (AnyValue(double_value=1 / 3), "Double(0.3333333333333333)"),
        (AnyValue(bool_value=True), "Bool(true)"),
        (AnyValue(bytes_value=b"\x01\x02"), "Bytes(AQI=)"),
        (AnyValue(), "Empty()"),
    ]
    kv = AnyValue()
    kv.kvlist_value.values.add(key="b").value.string_value = "<x&y>"
    kv.kvlist_value.values.add(key="a").value.double_value = 2.0
    cases.append((kv, 'Map({"a":2,"b":"\\u003cx\\u0026y\\u003e"})'))
    for value, text in cases:
        assert format_value(value) == text


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
