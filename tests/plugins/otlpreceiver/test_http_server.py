"""OTLP/HTTP receiver: the OpenTelemetry Python SDK sends protobuf and JSON, the gateway
forwards with its ``otlp`` exporter, and what arrives is compared field by field with what the
SDK recorded; bad input gets the right status and the gateway goes on serving."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
from typing import Any

import aiohttp
import pytest
from google.rpc import status_pb2
from opentelemetry.exporter.otlp.common.http import Compression as JsonCompression
from opentelemetry.exporter.otlp.json.http._log_exporter import (
    OTLPLogExporter as JsonLogExporter,
)
from opentelemetry.exporter.otlp.json.http.metric_exporter import (
    OTLPMetricExporter as JsonMetricExporter,
)
from opentelemetry.exporter.otlp.json.http.trace_exporter import (
    OTLPSpanExporter as JsonSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http import Compression as ProtoCompression
from opentelemetry.exporter.otlp.proto.http._log_exporter import (
    OTLPLogExporter as ProtoLogExporter,
)
from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
    OTLPMetricExporter as ProtoMetricExporter,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as ProtoSpanExporter,
)
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from plugins.otlpreceiver.common import inflate
from tests.hostile import probe_during
from tests.otlp_support import (
    RecordingBackend,
    compare_logs,
    make_logs,
    recording_backend,
    second_gateway,
)
from tests.plugins import jaeger_capture as cap
from tests.support import free_port, running_service, wait_until


def gateway_config(http_port: int, backend: RecordingBackend, extra_http: str = "") -> str:
    return f"""
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:{http_port}
{extra_http}
exporters:
  otlp:
    endpoint: 127.0.0.1:{backend.grpc_port}
    tls: {{insecure: true}}
    retry_on_failure: {{initial_interval: 100ms, max_interval: 200ms}}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces: {{receivers: [otlp], exporters: [otlp]}}
    metrics: {{receivers: [otlp], exporters: [otlp]}}
"""


def make_spans(exporter: Any) -> list[ReadableSpan]:
    """Record spans with the SDK, sending them with ``exporter`` and keeping a copy."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "interop-test"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("interop", "1.2.3")
    for i in range(5):
        with tracer.start_as_current_span(
            f"agent-step-{i}", kind=SpanKind.CLIENT, attributes={"step": i, "tool": "search"}
        ) as span:
            span.add_event("tool.called", {"query": f"q{i}", "ok": True, "score": 0.5})
            with tracer.start_as_current_span("llm-call") as child:
                child.set_attribute("gen_ai.usage.input_tokens", 1234567890123)
                child.set_attribute("tags", ["a", "b"])
                if i % 2:
                    child.set_status(Status(StatusCode.ERROR, "model timeout"))
                else:
                    child.set_status(Status(StatusCode.OK))
    provider.shutdown()
    return list(memory.get_finished_spans())


def attr_value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return tuple(attr_value(x) for x in v.array_value.values)
    return getattr(v, kind)


def compare_spans(expected: list[ReadableSpan], backend: RecordingBackend) -> None:
    got = {s.span_id: s for s in backend.spans}
    assert len(got) == len(expected) == len(backend.spans)
    for span in expected:
        ctx = span.get_span_context()
        assert ctx is not None
        received = got[ctx.span_id.to_bytes(8, "big")]
        assert received.trace_id == ctx.trace_id.to_bytes(16, "big")
        assert received.name == span.name
        parent = span.parent.span_id.to_bytes(8, "big") if span.parent else b""
        assert received.parent_span_id == parent
        assert received.kind == span.kind.value + 1
        assert received.start_time_unix_nano == span.start_time
        assert received.end_time_unix_nano == span.end_time
        attrs = {kv.key: attr_value(kv.value) for kv in received.attributes}
        assert attrs == {
            k: tuple(v) if isinstance(v, tuple | list) else v
            for k, v in (span.attributes or {}).items()
        }
        assert [e.name for e in received.events] == [e.name for e in span.events]
        for ev_got, ev in zip(received.events, span.events, strict=True):
            assert ev_got.time_unix_nano == ev.timestamp
            assert {kv.key: attr_value(kv.value) for kv in ev_got.attributes} == dict(
                ev.attributes or {}
            )
        code = {StatusCode.UNSET: 0, StatusCode.OK: 1, StatusCode.ERROR: 2}[span.status.status_code]
        assert received.status.code == code
        assert received.status.message == (span.status.description or "")
    for req in backend.traces:
        for rs in req.resource_spans:
            res = {kv.key: attr_value(kv.value) for kv in rs.resource.attributes}
            assert res["service.name"] == "interop-test"
            assert rs.scope_spans[0].scope.name == "interop"
            assert rs.scope_spans[0].scope.version == "1.2.3"


@pytest.mark.parametrize(
    "make_exporter",
    [
        pytest.param(lambda url: ProtoSpanExporter(endpoint=url), id="protobuf"),
        pytest.param(
            lambda url: ProtoSpanExporter(endpoint=url, compression=ProtoCompression.Gzip),
            id="protobuf-gzip",
        ),
        pytest.param(lambda url: JsonSpanExporter(endpoint=url), id="json"),
        pytest.param(
            lambda url: JsonSpanExporter(endpoint=url, compression=JsonCompression.GZIP),
            id="json-gzip",
        ),
        pytest.param(
            lambda url: JsonSpanExporter(endpoint=url, compression=JsonCompression.DEFLATE),
            id="json-deflate",
        ),
    ],
)
async def test_sdk_traces_end_to_end(make_exporter: Any) -> None:
    port = free_port()
    async with recording_backend() as backend, running_service(gateway_config(port, backend)):
        exporter = make_exporter(f"http://127.0.0.1:{port}/v1/traces")
        expected = await asyncio.to_thread(make_spans, exporter)
        assert len(expected) == 10
        await wait_until(lambda: backend.span_count() >= 10)
        compare_spans(expected, backend)


def record_metrics(exporter: Any) -> Any:
    memory = InMemoryMetricReader()
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    provider = MeterProvider(
        resource=Resource.create({"service.name": "interop-test"}), metric_readers=[memory, reader]
    )
    meter = provider.get_meter("interop")
    counter = meter.create_counter("agent.tool_calls")
    hist = meter.create_histogram("agent.latency", unit="ms")
    gauge = meter.create_up_down_counter("agent.queue")
    for i in range(6):
        counter.add(3, {"tool": f"t{i % 3}"})
        hist.record(12.5 * i, {"tool": f"t{i % 2}"})
        gauge.add(i - 2)
    data = memory.get_metrics_data()
    provider.shutdown()
    return data


@pytest.mark.parametrize(
    "make_exporter",
    [
        pytest.param(lambda url: ProtoMetricExporter(endpoint=url), id="protobuf"),
        pytest.param(lambda url: JsonMetricExporter(endpoint=url), id="json"),
    ],
)
async def test_sdk_metrics_end_to_end(make_exporter: Any) -> None:
    port = free_port()
    async with recording_backend() as backend, running_service(gateway_config(port, backend)):
        exporter = make_exporter(f"http://127.0.0.1:{port}/v1/metrics")
        expected = await asyncio.to_thread(record_metrics, exporter)
        points = {
            (m.name, tuple(sorted((dp.attributes or {}).items()))): dp
            for rm in expected.resource_metrics
            for sm in rm.scope_metrics
            for m in sm.metrics
            for dp in m.data.data_points
        }
        assert len(points) == 3 + 2 + 1
        await wait_until(lambda: backend.point_count() >= len(points))
        assert backend.point_count() == len(points)
        for req in backend.metrics:
            for rm in req.resource_metrics:
                for sm in rm.scope_metrics:
                    for m in sm.metrics:
                        kind = m.WhichOneof("data")
                        for dp in getattr(m, kind).data_points:
                            key = (
                                m.name,
                                tuple(
                                    sorted((kv.key, attr_value(kv.value)) for kv in dp.attributes)
                                ),
                            )
                            want = points[key]
                            if kind == "sum":
                                assert dp.as_int == want.value
                                assert m.sum.is_monotonic == (m.name == "agent.tool_calls")
                            else:
                                assert kind == "histogram"
                                assert m.unit == "ms"
                                assert dp.count == want.count
                                assert dp.sum == want.sum
                                assert list(dp.bucket_counts) == list(want.bucket_counts)
                                assert list(dp.explicit_bounds) == list(want.explicit_bounds)


def a_request(n: int = 3) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    ss = req.resource_spans.add().scope_spans.add()
    for i in range(n):
        ss.spans.add(trace_id=bytes(range(16)), span_id=bytes([i + 1] * 8), name=f"s{i}")
    return req


def a_logs_request(n: int = 3) -> ExportLogsServiceRequest:
    req = ExportLogsServiceRequest()
    sl = req.resource_logs.add().scope_logs.add()
    for i in range(n):
        lr = sl.log_records.add(
            trace_id=bytes(range(16)), span_id=bytes([i + 1] * 8), severity_number=9
        )
        lr.body.string_value = f"log {i}"
    return req


async def test_bad_input_gets_the_right_status_and_the_gateway_goes_on() -> None:
    port = free_port()
    limit = 1 << 20
    extra = f"        max_request_body_size: {limit}\n"
    async with (
        recording_backend() as backend,
        running_service(gateway_config(port, backend, extra)) as service,
    ):
        url = f"http://127.0.0.1:{port}/v1/traces"
        good = a_request().SerializeToString()
        good_json = json.dumps(
            {
                "resourceSpans": [
                    {
                        "scopeSpans": [
                            {
                                "spans": [
                                    {
                                        "traceId": "0102030405060708090a0b0c0d0e0f10",
                                        "spanId": "1112131415161718",
                                        "name": "json-span",
                                        "kind": 3,
                                        "startTimeUnixNano": "1700000000000000000",
                                        "endTimeUnixNano": 1700000000000000100,
                                        "attributes": [{"key": "n", "value": {"intValue": "42"}}],
                                        "status": {"code": 2, "message": "boom"},
                                    }
                                ]
                            }
                        ]
                    }
                ]
            }
        ).encode()
        bomb = gzip.compress(b"\0" * (limit * 4))
        cases: list[tuple[str, bytes, dict[str, str], int, str]] = [
            ("malformed protobuf", b"\x0a\xff\xff\xff\x0f\x01", {}, 400, "malformed"),
            (
                "malformed json",
                b'{"resourceSpans": [',
                {"Content-Type": "application/json"},
                400,
                "malformed JSON",
            ),
            (
                "100k-deep json",
                b"[" * 100_000,
                {"Content-Type": "application/json"},
                400,
                "nested too deeply",
            ),
            (
                "bad hex id",
                good_json.replace(b"1112131415161718", b"zz12131415161718"),
                {"Content-Type": "application/json"},
                400,
                "resourceSpans[0].scopeSpans[0].spans[0].spanId: 'zz12131415161718' is not an id",
            ),
            (
                "truncated gzip",
                gzip.compress(good)[:-6],
                {"Content-Encoding": "gzip"},
                400,
                "truncated",
            ),
            ("gzip bomb", bomb, {"Content-Encoding": "gzip"}, 413, "inflates to more than"),
            ("oversize", b"\0" * (limit + 1), {}, 413, "larger than max_request_body_size"),
            ("wrong content type", good, {"Content-Type": "text/plain"}, 415, "unsupported"),
            ("unknown encoding", good, {"Content-Encoding": "br"}, 400, "Content-Encoding"),
        ]
        async with aiohttp.ClientSession() as session:
            sent_ok = 0
            for name, body, headers, status, text in cases:
                h = {"Content-Type": "application/x-protobuf", **headers}
                async with session.post(url, data=body, headers=h) as resp:
                    content = await resp.read()
                    assert resp.status == status, (name, content)
                    if resp.content_type == "application/x-protobuf":
                        message = status_pb2.Status.FromString(content).message
                    elif resp.content_type == "application/json":
                        message = json.loads(content)["message"]
                    else:
                        message = content.decode()
                    assert text in message, (name, message)
                # the gateway goes on serving after each bad request
                async with session.post(
                    url, data=good, headers={"Content-Type": "application/x-protobuf"}
                ) as resp:
                    assert resp.status == 200
                    assert resp.content_type == "application/x-protobuf"
                    sent_ok += 3
            async with session.post(
                url,
                data=gzip.compress(good_json),
                headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
            ) as resp:
                assert resp.status == 200
                assert resp.content_type == "application/json"
                assert json.loads(await resp.read()) == {}
            async with session.get(url) as resp:
                assert resp.status == 405
            async with session.post(f"http://127.0.0.1:{port}/v1/logs", data=good) as resp:
                assert resp.status == 404
        await wait_until(lambda: backend.span_count() >= sent_ok + 1)
        js = next(s for s in backend.spans if s.name == "json-span")
        assert js.trace_id.hex() == "0102030405060708090a0b0c0d0e0f10"
        assert js.span_id.hex() == "1112131415161718"
        assert js.kind == 3 and js.status.code == 2 and js.status.message == "boom"
        assert js.start_time_unix_nano == 1700000000000000000
        assert js.attributes[0].value.int_value == 42
        malformed = service.telemetry.value(
            "otelcol_receiver_malformed_requests_total", receiver="otlp", otel_signal="traces"
        )
        assert malformed == 8  # all but the content type


def test_inflate_is_bounded() -> None:
    data = b"x" * 1000
    assert inflate(gzip.compress(data), 1000, 31, "gzip") == data
    assert inflate(gzip.compress(data) + gzip.compress(data), 2000, 31, "gzip") == data * 2
    with pytest.raises(Exception, match="inflates"):
        inflate(gzip.compress(data), 999, 31, "gzip")


async def test_cors_preflight_and_simple_requests() -> None:
    port = free_port()
    extra = (
        "        cors:\n"
        "          allowed_origins: ['https://*.example.com']\n"
        "          allowed_headers: ['X-Agent']\n"
        "          max_age: 600\n"
    )
    async with (
        recording_backend() as backend,
        running_service(gateway_config(port, backend, extra)),
    ):
        url = f"http://127.0.0.1:{port}/v1/traces"
        async with aiohttp.ClientSession() as session:
            pre = {
                "Origin": "https://app.example.com",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type, x-agent",
            }
            async with session.options(url, headers=pre) as resp:
                assert resp.status == 204
                assert resp.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
                assert resp.headers["Access-Control-Allow-Methods"] == "POST"
                assert "x-agent" in resp.headers["Access-Control-Allow-Headers"]
                assert resp.headers["Access-Control-Max-Age"] == "600"
            async with session.options(url, headers={**pre, "Origin": "https://evil.test"}) as resp:
                assert "Access-Control-Allow-Origin" not in resp.headers
            async with session.options(
                url, headers={**pre, "Access-Control-Request-Headers": "x-other"}
            ) as resp:
                assert "Access-Control-Allow-Origin" not in resp.headers
            async with session.post(
                url,
                data=a_request().SerializeToString(),
                headers={
                    "Content-Type": "application/x-protobuf",
                    "Origin": "https://app.example.com",
                },
            ) as resp:
                assert resp.status == 200
                assert resp.headers["Access-Control-Allow-Origin"] == "https://app.example.com"


async def test_json_that_encodes_to_an_invalid_request_is_refused_naming_the_field() -> None:
    """OTLP/JSON is checked as the protobuf encoding is: an id that is not hex of its length,
    a span without ids (the specification requires both), a value nested past protobuf's limit
    are refused with 400 naming the field, counted and logged; nothing of the request is
    delivered; a good request after them is."""
    port = free_port()
    good = {"traceId": "0102030405060708090a0b0c0d0e0f10", "spanId": "1112131415161718",
            "name": "good"}  # fmt: skip
    deep: dict[str, Any] = {"stringValue": "x"}
    for _ in range(60):
        deep = {"arrayValue": {"values": [deep]}}
    cases = [
        (
            [good, {"traceId": "0102", "spanId": "2122232425262728", "name": "bad"}],
            "resourceSpans[0].scopeSpans[0].spans[1].traceId: '0102' is not an id of 32 hex",
        ),
        (
            [dict(good, links=[{"traceId": "01", "spanId": "1112131415161718"}])],
            "resourceSpans[0].scopeSpans[0].spans[0].links[0].traceId: '01' is not an id",
        ),
        (
            [{"name": "no ids"}],
            "resource_spans[0].scope_spans[0].spans[0].trace_id: 0 bytes, expected 16",
        ),
        (
            [dict(good, attributes=[{"key": "deep", "value": deep}])],
            # json_format stops at protobuf's own limit; the check of the encoding would too
            "recursion depth is 100|nesting deeper than 100 levels",
        ),
    ]
    async with (
        recording_backend() as backend,
        running_service(gateway_config(port, backend)) as service,
        aiohttp.ClientSession() as s,
    ):
        url = f"http://127.0.0.1:{port}/v1/traces"
        for spans, message in cases:
            doc = {"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}
            async with s.post(
                url, data=json.dumps(doc), headers={"Content-Type": "application/json"}
            ) as resp:
                assert resp.status == 400
                answer = json.loads(await resp.read())
            assert answer["code"] == 3, answer
            assert any(m in answer["message"] for m in message.split("|")), answer
        doc = {"resourceSpans": [{"scopeSpans": [{"spans": [good]}]}]}
        async with s.post(
            url, data=json.dumps(doc), headers={"Content-Type": "application/json"}
        ) as resp:
            assert resp.status == 200
        await wait_until(lambda: backend.span_count() == 1)
        tel = service.telemetry
        assert tel.value("otelcol_receiver_accepted_spans_total", receiver="otlp") == 1
        assert (
            tel.value(
                "otelcol_receiver_malformed_requests_total", receiver="otlp", otel_signal="traces"
            )
            == 4
        )


async def test_backend_unavailable_without_queue_gives_503_with_retry_after() -> None:
    port, dead = free_port(), free_port()
    config = f"""
receivers:
  otlp: {{protocols: {{http: {{endpoint: 127.0.0.1:{port}}}}}}}
exporters:
  otlp:
    endpoint: 127.0.0.1:{dead}
    tls: {{insecure: true}}
    sending_queue: {{enabled: false}}
    retry_on_failure: {{enabled: false}}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces: {{receivers: [otlp], exporters: [otlp]}}
"""
    async with running_service(config) as service:
        for content_type, body in (
            ("application/x-protobuf", a_request(2).SerializeToString()),
            (
                "application/json",
                b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"name":"a",'
                b'"traceId":"0102030405060708090a0b0c0d0e0f10","spanId":"1112131415161718"}]}]}]}',
            ),
        ):
            async with (
                aiohttp.ClientSession() as s,
                s.post(
                    f"http://127.0.0.1:{port}/v1/traces",
                    data=body,
                    headers={"Content-Type": content_type},
                ) as resp,
            ):
                assert resp.status == 503
                assert int(resp.headers["Retry-After"]) >= 1
                assert resp.content_type == content_type
                content = await resp.read()
                if content_type == "application/json":
                    status = json.loads(content)
                    assert status["code"] == 14 and "UNAVAILABLE" in status["message"]
                else:
                    assert "UNAVAILABLE" in status_pb2.Status.FromString(content).message
        tel = service.telemetry
        assert tel.value("otelcol_receiver_refused_spans_total", receiver="otlp") == 3
        assert tel.value("otelcol_exporter_send_failed_spans_total", exporter="otlp") == 3


@pytest.mark.parametrize(
    "make_exporter",
    [
        pytest.param(lambda url: ProtoLogExporter(endpoint=url), id="protobuf"),
        pytest.param(
            lambda url: ProtoLogExporter(endpoint=url, compression=ProtoCompression.Gzip),
            id="protobuf-gzip",
        ),
        pytest.param(lambda url: JsonLogExporter(endpoint=url), id="json"),
        pytest.param(
            lambda url: JsonLogExporter(endpoint=url, compression=JsonCompression.GZIP),
            id="json-gzip",
        ),
        pytest.param(
            lambda url: JsonLogExporter(endpoint=url, compression=JsonCompression.DEFLATE),
            id="json-deflate",
        ),
    ],
)
async def test_sdk_logs_end_to_end(make_exporter: Any) -> None:
    """SDK (OTLP/HTTP protobuf or JSON) -> gateway -> otlp exporter -> a second gateway ->
    backend: every record field by field (bodies of every AnyValue type, attributes, severity,
    ids, event name, times, dropped count, resource and scope)."""
    port = free_port()
    async with recording_backend() as backend, second_gateway(backend) as (relay, _):
        config = (
            gateway_config(port, backend).replace(
                f"127.0.0.1:{backend.grpc_port}", f"127.0.0.1:{relay}"
            )
            + "    logs: {receivers: [otlp], exporters: [otlp]}\n"
        )
        async with running_service(config) as service:
            exporter = make_exporter(f"http://127.0.0.1:{port}/v1/logs")
            expected = await asyncio.to_thread(make_logs, exporter)
            await wait_until(lambda: backend.log_record_count() >= len(expected))
            assert service.telemetry.value(
                "otelcol_receiver_accepted_log_records_total", receiver="otlp"
            ) == len(expected)
        await asyncio.sleep(0.2)
        compare_logs(expected, backend.logs)


async def test_logs_bad_input_partial_success_and_url_path() -> None:
    """``logs_url_path`` moves the endpoint; bad logs get the statuses bad traces get; a JSON
    record with an invalid hex id refuses the whole request (400 naming it, as the Collector);
    a record without trace context is valid."""
    port = free_port()
    extra = "        logs_url_path: /custom/logs\n"
    async with (
        recording_backend() as backend,
        running_service(
            gateway_config(port, backend, extra)
            + "    logs: {receivers: [otlp], exporters: [otlp]}\n"
        ) as service,
        aiohttp.ClientSession() as session,
    ):
        url = f"http://127.0.0.1:{port}/custom/logs"
        proto = {"Content-Type": "application/x-protobuf"}
        as_json = {"Content-Type": "application/json"}
        async with session.post(f"http://127.0.0.1:{port}/v1/logs", data=b"", headers=proto) as r:
            assert r.status == 404
        for body, headers, status, text in [
            (b"\x0a\xff\xff\xff\x0f\x01", proto, 400, "malformed ExportLogsServiceRequest"),
            (b'{"resourceLogs": [', as_json, 400, "malformed JSON"),
            (
                gzip.compress(a_logs_request().SerializeToString())[:-6],
                {**proto, "Content-Encoding": "gzip"},
                400,
                "truncated",
            ),
        ]:
            async with session.post(url, data=body, headers=headers) as resp:
                assert resp.status == status
                content = await resp.read()
                message = (
                    json.loads(content)["message"]
                    if resp.content_type == "application/json"
                    else status_pb2.Status.FromString(content).message
                )
                assert text in message
            async with session.post(
                url, data=a_logs_request(2).SerializeToString(), headers=proto
            ) as resp:
                assert resp.status == 200
        good = {"traceId": "0102030405060708090a0b0c0d0e0f10", "spanId": "1112131415161718",
                "body": {"stringValue": "good"}, "severityNumber": 9}  # fmt: skip
        no_ids = {"body": {"kvlistValue": {"values": [{"key": "k", "value": {"intValue": "7"}}]}}}
        bad = {"traceId": "0102", "body": {"stringValue": "bad"}}
        doc = {"resourceLogs": [{"scopeLogs": [{"logRecords": [good, bad, no_ids]}]}]}
        async with session.post(url, data=json.dumps(doc), headers=as_json) as resp:
            assert resp.status == 400
            message = json.loads(await resp.read())["message"]
        assert "logRecords[1].traceId: '0102' is not an id of 32 hex digits" in message
        doc = {"resourceLogs": [{"scopeLogs": [{"logRecords": [good, no_ids]}]}]}
        async with session.post(url, data=json.dumps(doc), headers=as_json) as resp:
            assert resp.status == 200
        await wait_until(lambda: backend.log_record_count() == 3 * 2 + 2)
        got = [r for r in backend.log_records if not r.body.string_value.startswith("log ")]
        assert got[0].trace_id.hex() == "0102030405060708090a0b0c0d0e0f10"
        assert got[0].span_id.hex() == "1112131415161718" and got[0].severity_number == 9
        assert got[1].trace_id == b"" and got[1].body.kvlist_value.values[0].value.int_value == 7
        tel = service.telemetry
        assert (
            tel.value(
                "otelcol_receiver_malformed_requests_total", receiver="otlp", otel_signal="logs"
            )
            == 4
        )


# -- hostile input ------------------------------------------------------------------------------
def capture_config(http_port: int, key: str, extra_http: str = "") -> str:
    cap.install()
    return f"""
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:{http_port}
{extra_http}
exporters:
  jaeger_test_capture: {{key: "{key}"}}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces: {{receivers: [otlp], exporters: [jaeger_test_capture]}}
"""


def json_spans(n: int, attributes: int = 0) -> bytes:
    span = {
        "traceId": "0102030405060708090a0b0c0d0e0f10",
        "spanId": "1112131415161718",
        "name": "step",
        "startTimeUnixNano": "1700000000000000000",
        "attributes": [
            {"key": f"gen_ai.attr{k}", "value": {"stringValue": "value-value"}}
            for k in range(attributes)
        ],
    }
    return json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [span] * n}]}]}).encode()


def _refused(service: Any, reason: str) -> float:
    return float(
        service.telemetry.value(
            "otelcol_receiver_refused_requests_total",
            receiver="otlp",
            transport="http",
            reason=reason,
        )
    )


async def test_hostile_json_gets_4xx_is_counted_and_logged_rate_limited(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Deep JSON used to get a 500 and an error traceback; every malformed body is a 400
    naming what is wrong, a body over max_json_values a 413; the refusals are counted and
    logged at most once a second (1,000 malformed requests made 1.2 MiB of log)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1/traces"
    headers = {"Content-Type": "application/json"}
    extra = "        max_json_values: 5000\n"
    async with (
        running_service(capture_config(port, "json-hostile", extra)) as service,
        aiohttp.ClientSession() as session,
    ):
        cases = [
            (b"[" * 4000, 400, "nested too deeply"),
            (b'{"resourceSpans": [{"scopeSpans": 7}]}', 400, "scopeSpans"),
            (json_spans(1).replace(b'"step"', b"5"), 400, "name"),
            (json_spans(1000), 413, "max_json_values"),
        ] + [(b'{"resourceSpans": [', 400, "malformed JSON")] * 200
        for body, status, text in cases:
            async with session.post(url, data=body, headers=headers) as resp:
                assert resp.status == status
                assert text in json.loads(await resp.read())["message"]
        async with session.post(url, data=json_spans(3), headers=headers) as resp:
            assert resp.status == 200
        assert len(cap.spans("json-hostile")) == 3
        assert _refused(service, "malformed") == len(cases) - 1
        assert _refused(service, "too_large") == 1
        malformed = service.telemetry.value(
            "otelcol_receiver_malformed_requests_total", receiver="otlp", otel_signal="traces"
        )
        assert malformed == len(cases)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    lines = [r for r in caplog.records if "refused an OTLP/HTTP request" in r.getMessage()]
    assert 1 <= len(lines) <= 6, len(lines)  # one a second per kind of refusal


async def test_a_client_that_disconnects_mid_body_is_counted_not_logged_as_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = free_port()
    async with running_service(capture_config(port, "json-gone")) as service:
        for chunked in (False, True) * 10:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            framing = (
                b'Transfer-Encoding: chunked\r\n\r\n5\r\n{"res'
                if chunked
                else b'Content-Length: 1000\r\n\r\n{"res'
            )
            writer.write(
                b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + framing
            )
            await writer.drain()
            writer.close()
            await writer.wait_closed()
        await wait_until(lambda: _refused(service, "client_disconnected") == 20)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


async def test_the_loop_keeps_serving_while_a_large_json_body_is_decoded() -> None:
    """A 2.8 MB OTLP/JSON body (4,000 spans of 6 attributes) takes a second or more to
    decode (json_format is pure Python): it runs in a decode thread while small requests
    are served (an 11.8 MiB body used to stop the loop for 2.3 s)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1/traces"
    headers = {"Content-Type": "application/json"}
    big, small = json_spans(4000, attributes=6), json_spans(1)
    async with (
        running_service(capture_config(port, "json-big")),
        aiohttp.ClientSession() as session,
    ):

        async def post(body: bytes) -> int:
            async with session.post(url, data=body, headers=headers) as resp:
                return resp.status

        status, duration, latencies, lag = await probe_during(post(big), lambda: post(small))
    assert status == 200
    assert len(latencies) >= 5, (duration, latencies)
    # a loop stopped by the decode serves one or two probes and lags by the whole duration;
    # on a loaded 2-core machine (a full suite beside eight other engineers' runs) the decode
    # thread's GIL share and the collector's passes stretch the served loop's worst lag to
    # 0.35-0.65 of it, so the probes served are the measure and the lag bounds are loose
    assert max(latencies) < duration * 0.9, (duration, latencies)
    assert lag < duration * 0.9, (duration, lag)
    assert len(cap.spans("json-big")) == 4000 + len(latencies)
