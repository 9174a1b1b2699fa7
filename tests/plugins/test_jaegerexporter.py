"""The ``jaeger`` exporter. Its output is decoded with an independent Thrift reader
(tests/plugins/jaeger_thrift_reader.py, which knows field ids only) and checked rule by rule
against the OpenTelemetry -> Jaeger mapping; then the Thrift transports (HTTP to a collector
endpoint, UDP datagrams to an agent port) and the round trip exporter -> receiver with spans
made by the OpenTelemetry SDK."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from pipeline import (
    ComponentConfig,
    ComponentID,
    CreateSettings,
    Duration,
    Kind,
    Seconds,
    Signal,
    Stability,
    Traces,
    pluginmanager,
)
from pipeline.errors import ConfigErrors
from pipeline.factory import ExporterFactory
from pipeline.pluginmanager import build_registry, default_registry
from pipeline.telemetry import SelfTelemetry, component_logger
from tests.plugins import jaeger_capture as cap
from tests.plugins import jaeger_thrift_reader as r
from tests.support import (
    CLIENT_TIMEOUT,
    config_from_text,
    free_port,
    running_service,
    wait_until,
)

TRACE_ID = bytes.fromhex("f0e1d2c3b4a5968778695a4b3c2d1e0f")
SPAN_ID = bytes.fromhex("8899aabbccddeeff")
PARENT_ID = bytes.fromhex("0102030405060708")


def jaeger_receiver(protocol: str) -> tuple[str, str]:
    """The jaeger receiver's protocol entry on a free port for ``protocol`` (``thrift_http``
    or ``thrift_compact``), and the endpoint the jaeger exporter sends to."""
    if protocol == "thrift_http":
        jport = free_port()
        return (
            f'thrift_http: {{endpoint: "127.0.0.1:{jport}"}}',
            f"http://127.0.0.1:{jport}/api/traces",
        )
    jport = free_port(socket.SOCK_DGRAM)
    return f'thrift_compact: {{endpoint: "127.0.0.1:{jport}"}}', f"127.0.0.1:{jport}"


def make_exporter(options: dict[str, Any]) -> tuple[Any, SelfTelemetry]:
    factory = default_registry().get(Kind.EXPORTER, "jaeger")
    assert factory is not None
    telemetry = SelfTelemetry()
    settings = CreateSettings(
        ComponentID("jaeger"),
        Kind.EXPORTER,
        component_logger(Kind.EXPORTER, "jaeger"),
        telemetry.component(Kind.EXPORTER, "jaeger"),
    )
    config = factory.config_class.model_validate(options)
    assert isinstance(factory, ExporterFactory)
    return factory.create(Signal.TRACES, settings, config), telemetry


class Collector:
    """A stand-in for the Jaeger collector's HTTP endpoint that keeps the bodies it gets and
    answers with the statuses it is told to (then 202)."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.headers: list[dict[str, str]] = []
        self.statuses: list[int] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.headers.append(dict(request.headers))
        status = self.statuses.pop(0) if self.statuses else 202
        if status == 202:
            self.bodies.append(body)
        return web.Response(status=status, text="nope" if status != 202 else "")

    async def __aenter__(self) -> Collector:
        app = web.Application()
        app.router.add_post("/api/traces", self.handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}/api/traces"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


@contextlib.asynccontextmanager
async def exporter(options: dict[str, Any]) -> AsyncIterator[tuple[Any, SelfTelemetry]]:
    exp, tel = make_exporter(options)
    await exp.start(None)
    try:
        yield exp, tel
    finally:
        await exp.shutdown()


async def export_http(request: ExportTraceServiceRequest) -> list[dict[int, Any]]:
    """Export through thrift_http; the batches the collector got, decoded independently."""
    async with Collector() as collector:
        async with exporter({"protocol": "thrift_http", "endpoint": collector.url}) as (exp, _):
            await exp.consume(Traces.from_message(request))
        return [r.read_struct(b, "binary") for b in collector.bodies]


def one_span_request(**span_fields: Any) -> tuple[ExportTraceServiceRequest, Any]:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.add(key="service.name").value.string_value = "checkout"
    span = rs.scope_spans.add().spans.add(
        trace_id=TRACE_ID,
        span_id=SPAN_ID,
        name="op",
        start_time_unix_nano=1_700_000_000_123_456_789,
        end_time_unix_nano=1_700_000_000_223_456_789,
        **span_fields,
    )
    return req, span


async def exported_span(request: ExportTraceServiceRequest) -> dict[int, Any]:
    (batch,) = await export_http(request)
    (span,) = batch[r.BATCH_SPANS]
    return span


# -- the mapping, one rule per test -------------------------------------------------------------
async def test_resource_becomes_process() -> None:
    req, _ = one_span_request()
    attrs = req.resource_spans[0].resource.attributes
    attrs.add(key="host.name").value.string_value = "h1"
    attrs.add(key="pid").value.int_value = 42
    (batch,) = await export_http(req)
    process = batch[r.BATCH_PROCESS]
    assert process[r.PROCESS_SERVICE_NAME] == b"checkout"
    assert r.tag_values(process[r.PROCESS_TAGS]) == {"host.name": "h1", "pid": 42}


async def test_missing_service_name() -> None:
    req, _ = one_span_request()
    del req.resource_spans[0].resource.attributes[:]
    (batch,) = await export_http(req)
    # "populated from the default Resource": the SDKs' default service name
    assert batch[r.BATCH_PROCESS][r.PROCESS_SERVICE_NAME] == b"unknown_service"


async def test_one_batch_per_resource() -> None:
    req, _ = one_span_request()
    other = req.resource_spans.add()
    other.resource.attributes.add(key="service.name").value.string_value = "billing"
    other.scope_spans.add().spans.add(trace_id=TRACE_ID, span_id=PARENT_ID, name="x")
    batches = await export_http(req)
    assert [b[r.BATCH_PROCESS][r.PROCESS_SERVICE_NAME] for b in batches] == [
        b"checkout",
        b"billing",
    ]


async def test_128_bit_trace_id_splits_into_signed_halves() -> None:
    span = await exported_span(one_span_request()[0])
    high = int.from_bytes(TRACE_ID[:8], "big", signed=True)
    low = int.from_bytes(TRACE_ID[8:], "big", signed=True)
    assert high < 0  # the high bit is set: Thrift's i64 is signed
    assert (span[r.SPAN_TRACE_ID_HIGH], span[r.SPAN_TRACE_ID_LOW]) == (high, low)
    assert span[r.SPAN_ID] == int.from_bytes(SPAN_ID, "big", signed=True)
    assert span[r.SPAN_FLAGS] == 1  # sampled


async def test_times_in_microseconds() -> None:
    span = await exported_span(one_span_request()[0])
    assert span[r.SPAN_START] == 1_700_000_000_123_456
    assert span[r.SPAN_DURATION] == 100_000
    assert span[r.SPAN_NAME] == b"op"


@pytest.mark.parametrize(
    ("kind", "tag"),
    [
        (Span.SPAN_KIND_CLIENT, "client"),
        (Span.SPAN_KIND_SERVER, "server"),
        (Span.SPAN_KIND_PRODUCER, "producer"),
        (Span.SPAN_KIND_CONSUMER, "consumer"),
        (Span.SPAN_KIND_INTERNAL, None),
        (Span.SPAN_KIND_UNSPECIFIED, None),
    ],
)
async def test_span_kind_tag(kind: int, tag: str | None) -> None:
    span = await exported_span(one_span_request(kind=kind)[0])
    assert r.tag_values(span.get(r.SPAN_TAGS, [])).get("span.kind") == tag


async def test_error_status() -> None:
    req, s = one_span_request()
    s.status.code = Status.STATUS_CODE_ERROR
    s.status.message = "card declined"
    tags = r.tag_values((await exported_span(req))[r.SPAN_TAGS])
    assert tags["otel.status_code"] == "ERROR"
    assert tags["error"] is True
    assert tags["otel.status_description"] == "card declined"


async def test_error_tag_overrides_an_error_attribute() -> None:
    req, s = one_span_request()
    s.attributes.add(key="error").value.string_value = "no"
    s.status.code = Status.STATUS_CODE_ERROR
    tags = (await exported_span(req))[r.SPAN_TAGS]
    assert [t[r.TAG_KEY] for t in tags].count(b"error") == 1
    assert r.tag_values(tags)["error"] is True


async def test_ok_and_unset_status() -> None:
    req, s = one_span_request()
    s.status.code = Status.STATUS_CODE_OK
    tags = r.tag_values((await exported_span(req))[r.SPAN_TAGS])
    assert tags == {"otel.status_code": "OK"}
    unset = await exported_span(one_span_request()[0])
    assert r.SPAN_TAGS not in unset


async def test_events_become_logs() -> None:
    req, s = one_span_request()
    ev = s.events.add(name="retry", time_unix_nano=1_700_000_000_150_000_999)
    ev.attributes.add(key="attempt").value.int_value = 2
    ev.dropped_attributes_count = 3
    s.events.add(time_unix_nano=1_700_000_000_160_000_000)  # no name: no event field
    logs = (await exported_span(req))[r.SPAN_LOGS]
    assert logs[0][r.LOG_TIMESTAMP] == 1_700_000_000_150_000
    assert r.tag_values(logs[0][r.LOG_FIELDS]) == {
        "event": "retry",
        "attempt": 2,
        "otel.event.dropped_attributes_count": 3,
    }
    assert logs[1][r.LOG_FIELDS] == []


async def test_event_attribute_takes_precedence_over_the_name() -> None:
    req, s = one_span_request()
    ev = s.events.add(name="generic", time_unix_nano=1)
    ev.attributes.add(key="event").value.string_value = "specific"
    (log,) = (await exported_span(req))[r.SPAN_LOGS]
    assert [(f[r.TAG_KEY], f[r.TAG_STR]) for f in log[r.LOG_FIELDS]] == [(b"event", b"specific")]


async def test_parent_is_child_of_and_links_follow_from() -> None:
    req, s = one_span_request(parent_span_id=PARENT_ID)
    link_trace = bytes(range(16))
    link = s.links.add(trace_id=link_trace, span_id=b"\x00" * 7 + b"\x09")
    link.attributes.add(key="why").value.string_value = "batch"
    span = await exported_span(req)
    parent = int.from_bytes(PARENT_ID, "big", signed=True)
    assert span[r.SPAN_PARENT_ID] == parent
    child_of, follows = span[r.SPAN_REFERENCES]
    assert child_of == {
        r.REF_TYPE: 0,
        r.REF_TRACE_ID_LOW: span[r.SPAN_TRACE_ID_LOW],
        r.REF_TRACE_ID_HIGH: span[r.SPAN_TRACE_ID_HIGH],
        r.REF_SPAN_ID: parent,
    }
    assert follows == {
        r.REF_TYPE: 1,
        r.REF_TRACE_ID_LOW: int.from_bytes(link_trace[8:], "big", signed=True),
        r.REF_TRACE_ID_HIGH: int.from_bytes(link_trace[:8], "big", signed=True),
        r.REF_SPAN_ID: 9,
    }


async def test_root_span_has_no_references() -> None:
    span = await exported_span(one_span_request()[0])
    assert span[r.SPAN_PARENT_ID] == 0
    assert r.SPAN_REFERENCES not in span


async def test_scope_becomes_tags() -> None:
    req, _ = one_span_request()
    scope = req.resource_spans[0].scope_spans[0].scope
    scope.name, scope.version = "io.opentelemetry.checkout", "1.4.0"
    tags = r.tag_values((await exported_span(req))[r.SPAN_TAGS])
    assert tags == {
        "otel.scope.name": "io.opentelemetry.checkout",
        "otel.scope.version": "1.4.0",
        # deprecated aliases the specification still requires
        "otel.library.name": "io.opentelemetry.checkout",
        "otel.library.version": "1.4.0",
    }


async def test_dropped_counts() -> None:
    req, _ = one_span_request(
        dropped_attributes_count=1, dropped_events_count=2, dropped_links_count=3
    )
    tags = r.tag_values((await exported_span(req))[r.SPAN_TAGS])
    assert tags == {
        "otel.dropped_attributes_count": 1,
        "otel.dropped_events_count": 2,
        "otel.dropped_links_count": 3,
    }


async def test_trace_state() -> None:
    req, _ = one_span_request(trace_state="vendor=abc")
    tags = r.tag_values((await exported_span(req))[r.SPAN_TAGS])
    assert tags == {"w3c.tracestate": "vendor=abc"}


async def test_attribute_types() -> None:
    req, s = one_span_request()
    a = s.attributes
    a.add(key="s").value.string_value = "text"
    a.add(key="b").value.bool_value = False
    a.add(key="i").value.int_value = -(2**63)
    a.add(key="d").value.double_value = 2.5
    a.add(key="x").value.bytes_value = b"\x00\xff"
    arr = a.add(key="arr").value.array_value.values
    arr.add().string_value = "a"
    arr.add().int_value = 1
    kv = a.add(key="map").value.kvlist_value.values.add(key="k")
    kv.value.bool_value = True
    tags = (await exported_span(req))[r.SPAN_TAGS]
    types = {t[r.TAG_KEY].decode(): t[r.TAG_TYPE] for t in tags}
    assert types == {"s": 0, "b": 2, "i": 3, "d": 1, "x": 4, "arr": 0, "map": 0}
    assert r.tag_values(tags) == {
        "s": "text",
        "b": False,
        "i": -(2**63),
        "d": 2.5,
        "x": b"\x00\xff",
        "arr": '["a",1]',
        "map": '{"k":true}',
    }


# -- transports ---------------------------------------------------------------------------------
async def test_thrift_http_headers_and_retry() -> None:
    req, _ = one_span_request()
    async with Collector() as collector:
        collector.statuses = [503]
        options = {
            "protocol": "thrift_http",
            "endpoint": collector.url,
            "headers": {"X-Tenant": "t1"},
            "retry_on_failure": {"initial_interval": "10ms", "max_interval": "20ms"},
        }
        async with exporter(options) as (exp, tel):
            await exp.consume(Traces.from_message(req))
            await wait_until(lambda: len(collector.bodies) == 1)
        assert collector.headers[0]["Content-Type"] == "application/x-thrift"
        assert collector.headers[-1]["X-Tenant"] == "t1"
        assert tel.value("otelcol_exporter_retried_spans_total", exporter="jaeger") == 1
        assert tel.value("otelcol_exporter_sent_spans_total", exporter="jaeger") == 1


async def test_thrift_http_permanent_error_is_counted() -> None:
    req, _ = one_span_request()
    async with Collector() as collector:
        collector.statuses = [400]
        async with exporter({"protocol": "thrift_http", "endpoint": collector.url}) as (exp, tel):
            await exp.consume(Traces.from_message(req))
            await wait_until(
                lambda: (
                    tel.value("otelcol_exporter_send_failed_spans_total", exporter="jaeger") == 1
                )
            )
        assert collector.bodies == []


class Agent(asyncio.DatagramProtocol):
    """A UDP port that keeps the datagrams it gets."""

    def __init__(self) -> None:
        self.packets: list[bytes] = []

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.packets.append(data)


@contextlib.asynccontextmanager
async def agent() -> AsyncIterator[tuple[Agent, int]]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(Agent, local_addr=("127.0.0.1", 0))
    try:
        yield protocol, transport.get_extra_info("sockname")[1]
    finally:
        transport.close()


def many_spans(n: int, big_attribute_on: int | None = None) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.add(key="service.name").value.string_value = "udp"
    ss = rs.scope_spans.add()
    for i in range(n):
        span = ss.spans.add(trace_id=TRACE_ID, span_id=i.to_bytes(8, "big"), name=f"span-{i}")
        span.attributes.add(key="payload").value.string_value = "x" * (
            5000 if i == big_attribute_on else 40
        )
    return req


async def test_thrift_compact_splits_batches_to_fit_the_packet_size() -> None:
    async with agent() as (agt, port):
        options = {
            "protocol": "thrift_compact",
            "endpoint": f"127.0.0.1:{port}",
            "max_packet_size": 1000,
        }
        async with exporter(options) as (exp, tel):
            await exp.consume(Traces.from_message(many_spans(60)))
            await wait_until(
                lambda: tel.value("otelcol_exporter_sent_spans_total", exporter="jaeger") == 60
            )
        await wait_until(lambda: sum(len(p) for p in agt.packets) > 0)
        assert len(agt.packets) > 3
        assert all(len(p) <= 1000 for p in agt.packets)
        names = []
        for packet in agt.packets:
            name, mtype, args = r.read_message(packet, "compact")
            assert (name, mtype) == ("emitBatch", 4)
            batch = args[1]
            assert batch[r.BATCH_PROCESS][r.PROCESS_SERVICE_NAME] == b"udp"
            names += [s[r.SPAN_NAME].decode() for s in batch[r.BATCH_SPANS]]
        assert names == [f"span-{i}" for i in range(60)]


async def test_thrift_compact_drops_and_counts_an_oversize_span(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with agent() as (agt, port):
        options = {
            "protocol": "thrift_compact",
            "endpoint": f"127.0.0.1:{port}",
            "max_packet_size": 1000,
        }
        with caplog.at_level(logging.ERROR, logger="pipeline"):
            async with exporter(options) as (exp, tel):
                assert exp.helper._retry.enabled is False  # UDP: never retried
                await exp.consume(Traces.from_message(many_spans(5, big_attribute_on=2)))
                await wait_until(
                    lambda: tel.value("otelcol_exporter_sent_spans_total", exporter="jaeger") == 4
                )
        assert tel.value("otelcol_exporter_send_failed_spans_total", exporter="jaeger") == 1
        assert (
            tel.value(
                "otelcol_exporter_dropped_items_total",
                exporter="jaeger",
                otel_signal="traces",
                reason="span_too_large",
            )
            == 1
        )
        assert any("too large for one UDP packet" in rec.getMessage() for rec in caplog.records)
        await wait_until(lambda: len(agt.packets) >= 1)
        names = [
            s[r.SPAN_NAME]
            for p in agt.packets
            for s in r.read_message(p, "compact")[2][1][r.BATCH_SPANS]
        ]
        assert names == [b"span-0", b"span-1", b"span-3", b"span-4"]


# -- config -----------------------------------------------------------------------------------
def _exporter_config(options: str) -> Any:
    return config_from_text(
        f"""
receivers:
  otlp: {{protocols: {{grpc: {{endpoint: "127.0.0.1:{free_port()}"}}}}}}
exporters:
  jaeger: {options}
service:
  pipelines:
    traces: {{receivers: [otlp], exporters: [jaeger]}}
"""
    )


def test_endpoint_forms_are_checked() -> None:
    with pytest.raises(ConfigErrors, match="full URL"):
        _exporter_config("{protocol: thrift_http, endpoint: 'jaeger:14268'}")
    with pytest.raises(ConfigErrors, match="host:port"):
        _exporter_config("{protocol: thrift_compact, endpoint: 'http://jaeger:6831'}")
    with pytest.raises(ConfigErrors, match="max_packet_size"):
        _exporter_config("{protocol: thrift_http, max_packet_size: 1000}")
    with pytest.raises(ConfigErrors, match="max_packet_size"):
        _exporter_config("{protocol: thrift_compact, max_packet_size: 70000}")
    cfg = _exporter_config("{protocol: thrift_compact}")
    jaeger = cfg.components[Kind.EXPORTER][ComponentID("jaeger")]
    assert jaeger.resolved_endpoint == "localhost:6831"


def test_otlp_protocols_delegate_through_the_registry() -> None:
    registered = default_registry().get(Kind.EXPORTER, "otlp") is not None
    if registered:
        cfg = _exporter_config("{endpoint: 'jaeger:4317', tls: {insecure: true}}")
        jaeger = cfg.components[Kind.EXPORTER][ComponentID("jaeger")]
        exp, _ = make_exporter(jaeger.model_dump(exclude_unset=True))
        assert type(exp.inner).__module__.split(".")[1] == "otlpexporter"
    else:
        with pytest.raises(ConfigErrors, match="'otlp' exporter, which is not installed"):
            _exporter_config("{protocol: otlp_grpc}")
    if default_registry().get(Kind.EXPORTER, "otlphttp") is None:
        with pytest.raises(ConfigErrors, match="'otlphttp' exporter, which is not installed"):
            _exporter_config("{protocol: otlp_http}")


def test_default_config_is_valid() -> None:
    factory = default_registry().get(Kind.EXPORTER, "jaeger")
    assert factory is not None
    config = factory.create_default_config()
    assert config.protocol in ("otlp_grpc", "thrift_compact")


# -- round trip ------------------------------------------------------------------------------
@pytest.mark.parametrize("protocol", ["thrift_http", "thrift_compact"])
async def test_round_trip_from_the_otel_sdk_through_exporter_and_receiver(protocol: str) -> None:
    """OTel SDK -> OTLP/gRPC -> otlp receiver -> jaeger exporter -> (Thrift) -> jaeger
    receiver -> captured OTLP: every span arrives with what Jaeger can carry."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import Link, SpanKind, StatusCode

    cap.install()
    key = f"roundtrip-{protocol}"
    otlp_port = free_port()
    receiver, endpoint = jaeger_receiver(protocol)
    config = f"""
receivers:
  otlp: {{protocols: {{grpc: {{endpoint: "127.0.0.1:{otlp_port}"}}}}}}
  jaeger: {{protocols: {{{receiver}}}}}
exporters:
  jaeger: {{protocol: {protocol}, endpoint: "{endpoint}"}}
  jaeger_test_capture: {{key: "{key}"}}
service:
  pipelines:
    traces/in: {{receivers: [otlp], exporters: [jaeger]}}
    traces/out: {{receivers: [jaeger], exporters: [jaeger_test_capture]}}
"""
    memory = InMemorySpanExporter()
    provider = TracerProvider(
        resource=Resource.create({"service.name": "agent-app", "team": "search"})
    )
    provider.add_span_processor(SimpleSpanProcessor(memory))
    provider.add_span_processor(
        SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"127.0.0.1:{otlp_port}", insecure=True))
    )
    tracer = provider.get_tracer("agent.lib", "2.1")

    def make_spans() -> None:
        with tracer.start_as_current_span("plan", kind=SpanKind.SERVER) as root:
            root.set_attribute("llm.model", "m-1")
            root.set_attribute("tokens", 812)
            root.set_attribute("temperature", 0.2)
            root.set_attribute("stream", True)
            root.set_attribute("tools", ["search", "calc"])
            root.add_event("tool-call", {"tool": "search"})
            with tracer.start_as_current_span(
                "call-tool",
                kind=SpanKind.CLIENT,
                links=[Link(root.get_span_context())],
            ) as child:
                child.set_status(StatusCode.ERROR, "timeout")
            with tracer.start_as_current_span("publish", kind=SpanKind.PRODUCER) as p:
                p.set_status(StatusCode.OK)
        provider.shutdown()

    async with running_service(config):
        await asyncio.to_thread(make_spans)
        await wait_until(lambda: len(cap.spans(key)) == 3)

    originals = {s.context.span_id.to_bytes(8, "big"): s for s in memory.get_finished_spans()}
    kinds = {
        SpanKind.SERVER: Span.SPAN_KIND_SERVER,
        SpanKind.CLIENT: Span.SPAN_KIND_CLIENT,
        SpanKind.PRODUCER: Span.SPAN_KIND_PRODUCER,
    }
    for rs, ss, got in cap.spans(key):
        want = originals[got.span_id]
        assert got.trace_id == want.context.trace_id.to_bytes(16, "big")
        assert got.name == want.name
        assert got.kind == kinds[want.kind]
        assert got.start_time_unix_nano == want.start_time // 1000 * 1000
        assert (
            got.end_time_unix_nano - got.start_time_unix_nano
            == (want.end_time // 1000 - want.start_time // 1000) * 1000
        )
        want_parent = want.parent.span_id.to_bytes(8, "big") if want.parent else b""
        assert got.parent_span_id == want_parent
        assert (ss.scope.name, ss.scope.version) == ("agent.lib", "2.1")
        resource = {kv.key: kv.value for kv in rs.resource.attributes}
        assert resource["service.name"].string_value == "agent-app"
        assert resource["team"].string_value == "search"
        attrs = {kv.key: kv.value for kv in got.attributes}
        expected_attrs = dict(want.attributes or {})
        if "tools" in expected_attrs:
            expected_attrs["tools"] = '["search","calc"]'  # arrays travel as JSON strings
        assert {k: getattr(v, v.WhichOneof("value")) for k, v in attrs.items()} == expected_attrs
        assert [(e.name, e.time_unix_nano // 1000) for e in got.events] == [
            (e.name, e.timestamp // 1000) for e in want.events
        ]
        assert [link.span_id for link in got.links] == [
            link.context.span_id.to_bytes(8, "big") for link in want.links
        ]
        want_code = {
            StatusCode.UNSET: Status.STATUS_CODE_UNSET,
            StatusCode.OK: Status.STATUS_CODE_OK,
            StatusCode.ERROR: Status.STATUS_CODE_ERROR,
        }[want.status.status_code]
        assert (got.status.code, got.status.message) == (want_code, want.status.description or "")


# -- OTLP delegation, with stand-in OTLP exporter types in a registry of this test's own ----------
class _StandInOTLPConfig(ComponentConfig):
    endpoint: str
    headers: dict[str, str] = {}
    tls: dict[str, Any] | None = None
    compression: str = "gzip"
    timeout: Duration = Seconds(5)


class _StandInOTLPFactory(ExporterFactory):
    """Records the config it is given; stands for the ``otlp``/``otlphttp`` exporters so the
    delegation is tested whether or not those exporters are in this build."""

    config_class = _StandInOTLPConfig
    stability = {Signal.TRACES: Stability.DEVELOPMENT}

    def __init__(self, type_: str) -> None:
        self.type = type_  # type: ignore[misc]
        self.created: list[tuple[CreateSettings, _StandInOTLPConfig]] = []

    def create_traces(self, settings: CreateSettings, config: _StandInOTLPConfig) -> Any:
        self.created.append((settings, config))
        return cap.CaptureExporter(cap.CaptureConfig(key="standin"))


@pytest.fixture
def standin_registry(monkeypatch: pytest.MonkeyPatch) -> dict[str, _StandInOTLPFactory]:
    registry = build_registry()
    factories = {}
    for type_ in ("otlp", "otlphttp"):
        if registry.get(Kind.EXPORTER, type_) is not None:
            registry._factories.pop((Kind.EXPORTER, type_))
        factories[type_] = _StandInOTLPFactory(type_)
        registry.register(factories[type_])
    monkeypatch.setattr(pluginmanager, "_default_registry", registry)
    return factories


def test_otlp_grpc_creates_the_otlp_exporter(
    standin_registry: dict[str, _StandInOTLPFactory],
) -> None:
    exp, _ = make_exporter(
        {
            "endpoint": "jaeger:4317",
            "tls": {"insecure": True},
            "headers": {"x-tenant": "t1"},
            "timeout": "2s",
            "otlp": {"compression": "none"},
        }
    )
    assert isinstance(exp.inner, cap.CaptureExporter)
    ((settings, config),) = standin_registry["otlp"].created
    assert settings.name == "jaeger"  # its counters carry the jaeger exporter's name
    assert config.endpoint == "jaeger:4317"
    assert config.tls == {"insecure": True}
    assert config.headers == {"x-tenant": "t1"}
    assert config.timeout == 2.0
    assert config.compression == "none"


def test_otlp_http_creates_the_otlphttp_exporter_with_a_url(
    standin_registry: dict[str, _StandInOTLPFactory],
) -> None:
    make_exporter({"protocol": "otlp_http", "endpoint": "jaeger:4318"})
    ((_, config),) = standin_registry["otlphttp"].created
    assert config.endpoint == "http://jaeger:4318"
    assert standin_registry["otlp"].created == []


def test_bad_options_for_the_otlp_exporter_are_config_errors(
    standin_registry: dict[str, _StandInOTLPFactory],
) -> None:
    with pytest.raises(ConfigErrors, match=r"options handed to the 'otlp' exporter.*bogus"):
        _exporter_config("{protocol: otlp_grpc, otlp: {bogus: 1}}")


@pytest.mark.parametrize("protocol", ["otlp_grpc", "otlp_http"])
async def test_otlp_protocols_end_to_end(protocol: str) -> None:
    """jaeger (protocol otlp_grpc / otlp_http, through the real otlp / otlphttp exporters)
    -> a second pipeline's otlp receiver -> captured."""
    cap.install()
    key = f"otlp-e2e-{protocol}"
    port_in, port_mid = free_port(), free_port()
    mid = "grpc" if protocol == "otlp_grpc" else "http"
    config = f"""
receivers:
  otlp/in: {{protocols: {{grpc: {{endpoint: "127.0.0.1:{port_in}"}}}}}}
  otlp/mid: {{protocols: {{{mid}: {{endpoint: "127.0.0.1:{port_mid}"}}}}}}
exporters:
  jaeger:
    protocol: {protocol}
    endpoint: "127.0.0.1:{port_mid}"
    tls: {{insecure: true}}
    headers: {{x-tenant: t1}}
  jaeger_test_capture: {{key: "{key}"}}
service:
  pipelines:
    traces/in: {{receivers: [otlp/in], exporters: [jaeger]}}
    traces/out: {{receivers: [otlp/mid], exporters: [jaeger_test_capture]}}
"""
    async with running_service(config) as service:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor

        provider = TracerProvider()
        provider.add_span_processor(
            SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"127.0.0.1:{port_in}", insecure=True))
        )

        def send() -> None:
            with provider.get_tracer("t").start_as_current_span("via-otlp"):
                pass
            provider.shutdown()

        await asyncio.to_thread(send)
        await wait_until(lambda: len(cap.spans(key)) == 1)
        # OTLP all the way: the kind survives (no Jaeger mapping in between).
        assert cap.spans(key)[0][2].kind == Span.SPAN_KIND_INTERNAL
        # counted once the backend's answer is back, which may be after the span was captured
        tel = service.telemetry
        await wait_until(
            lambda: tel.value("otelcol_exporter_sent_spans_total", exporter="jaeger") == 1
        )


async def test_thrift_exporter_lifecycle_with_data() -> None:
    """The contract (shutdown before start, start, consume, shutdown twice) with real spans."""
    from pipeline.testing import check_factory

    factory = default_registry().get(Kind.EXPORTER, "jaeger")
    assert factory is not None
    async with agent() as (agt, port):
        exp, tel = make_exporter({"protocol": "thrift_compact", "endpoint": f"127.0.0.1:{port}"})
        await exp.shutdown()
        await exp.start(None)
        await exp.consume(Traces.from_message(many_spans(3)))
        await exp.shutdown()
        await exp.shutdown()
        assert tel.value("otelcol_exporter_sent_spans_total", exporter="jaeger") == 3
        await wait_until(lambda: len(agt.packets) == 1)
    for protocol in ("thrift_compact", "thrift_http"):
        config = factory.config_class.model_validate({"protocol": protocol})
        await check_factory(factory, config)


async def test_delegating_exporter_forwards_spans_and_skips_empty_payloads(
    standin_registry: dict[str, _StandInOTLPFactory],
) -> None:
    exp, _ = make_exporter({"endpoint": "jaeger:4317"})
    before = len(cap.CAPTURED["standin"])
    await exp.shutdown()  # before start: a no-op, the inner exporter stays usable
    await exp.start(None)
    await exp.consume(Traces())
    assert len(cap.CAPTURED["standin"]) == before
    await exp.consume(Traces.from_message(one_span_request()[0]))
    assert len(cap.CAPTURED["standin"]) == before + 1
    await exp.shutdown()
    await exp.shutdown()


async def test_translation_runs_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """Translating and encoding a batch happens in a worker thread, not on the event loop, and
    the spans still go out."""
    import threading

    from plugins.jaegerexporter.exporter import JaegerThriftExporter

    threads: list[threading.Thread] = []
    original = JaegerThriftExporter.prepare

    def recording(self: JaegerThriftExporter, data: Any) -> Any:
        threads.append(threading.current_thread())
        return original(self, data)

    monkeypatch.setattr(JaegerThriftExporter, "prepare", recording)
    async with (
        agent() as (agt, port),
        exporter({"protocol": "thrift_compact", "endpoint": f"127.0.0.1:{port}"}) as (exp, tel),
    ):
        await exp.consume(Traces.from_message(many_spans(5)))
        await wait_until(lambda: len(agt.packets) == 1)
    assert threads and all(t is not threading.main_thread() for t in threads)
    assert tel.value("otelcol_exporter_sent_spans_total", exporter="jaeger") == 5


def test_prepared_spans_round_trip_through_the_persistent_queue_codec() -> None:
    from pipeline import Signal
    from plugins.jaegerexporter.exporter import PreparedCodec, PreparedTraces

    codec = PreparedCodec(Signal.TRACES)
    prepared = PreparedTraces([b"first chunk", b"", b"\x00" * 70000], item_count=12)
    back = codec.decode(b"".join(codec.encode(prepared)))
    assert isinstance(back, PreparedTraces)
    assert back.chunks == prepared.chunks and back.item_count() == 12 and back.done == 0
    assert codec.count(b"".join(codec.encode(prepared))) == 12


# -- the sending queue: batching and the persistent queue ------------------------------------
def _request_of(index: int, spans: int) -> bytes:
    """One OTLP request of ``spans`` spans named ``r<index>-s<j>`` (its own service.name)."""
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    kv = rs.resource.attributes.add(key="service.name")
    kv.value.string_value = f"svc-{index % 3}"
    ss = rs.scope_spans.add()
    for j in range(spans):
        ss.spans.add(
            trace_id=TRACE_ID,
            span_id=(index * 1000 + j + 1).to_bytes(8, "big"),
            name=f"r{index}-s{j}",
            start_time_unix_nano=1_700_000_000_000_000_000,
            end_time_unix_nano=1_700_000_000_001_000_000,
        )
    return request.SerializeToString()


@pytest.mark.parametrize("protocol", ["thrift_http", "thrift_compact"])
@pytest.mark.parametrize(
    "queue",
    [
        "{batch: {flush_timeout: 100ms, min_size: 1000}}",
        "{batch: {flush_timeout: 100ms, min_size: 5, max_size: 7}}",
        "{batch: {flush_timeout: 100ms, min_size: 20}}",
        "{sizer: bytes, queue_size: 100000, batch: {flush_timeout: 100ms, min_size: 300, "
        "max_size: 900, sizer: bytes}}",
        "{storage: file_storage}",
    ],
    ids=["batch", "batch-max-items", "batch-min-items", "batch-bytes", "persistent"],
)
async def test_every_span_arrives_through_the_sending_queue(
    protocol: str, queue: str, tmp_path: Any
) -> None:
    """OTLP receiver -> jaeger exporter with a batching or persistent sending queue ->
    (Thrift) -> jaeger receiver: requests merged into batches, batches split at max_size and
    entries written to and read back from the file_storage extension lose no span, duplicate
    none, and are counted as sent."""
    cap.install()
    key = f"queue-{protocol}-{abs(hash(queue))}"
    http_port = free_port()
    telemetry_port = free_port()
    receiver, endpoint = jaeger_receiver(protocol)
    config = f"""
extensions:
  file_storage: {{directory: "{tmp_path}"}}
receivers:
  otlp: {{protocols: {{http: {{endpoint: "127.0.0.1:{http_port}"}}}}}}
  jaeger: {{protocols: {{{receiver}}}}}
exporters:
  jaeger:
    protocol: {protocol}
    endpoint: "{endpoint}"
    sending_queue: {queue}
  jaeger_test_capture: {{key: "{key}"}}
service:
  extensions: [file_storage]
  pipelines:
    traces/in: {{receivers: [otlp], exporters: [jaeger]}}
    traces/out: {{receivers: [jaeger], exporters: [jaeger_test_capture]}}
  telemetry:
    metrics: {{address: "127.0.0.1:{telemetry_port}"}}
"""
    sizes = [3, 1, 5, 2, 4, 3, 6, 1, 2, 3]  # 30 spans in 10 requests
    expected = sorted(f"r{i}-s{j}" for i, n in enumerate(sizes) for j in range(n))
    async with running_service(config):
        async with aiohttp.ClientSession(timeout=CLIENT_TIMEOUT) as session:
            for i, n in enumerate(sizes):
                async with session.post(
                    f"http://127.0.0.1:{http_port}/v1/traces",
                    data=_request_of(i, n),
                    headers={"Content-Type": "application/x-protobuf"},
                ) as resp:
                    assert resp.status == 200, await resp.text()
        with contextlib.suppress(AssertionError):  # compared below, span by span
            await wait_until(lambda: len(cap.spans(key)) >= len(expected), within=5)
        await asyncio.sleep(0.3)  # anything sent twice arrives too
        async with (
            aiohttp.ClientSession(timeout=CLIENT_TIMEOUT) as session,
            session.get(f"http://127.0.0.1:{telemetry_port}/metrics") as resp,
        ):
            metrics = await resp.text()
    got = sorted(span.name for _, _, span in cap.spans(key))
    assert got == expected
    sent = [
        line
        for line in metrics.splitlines()
        if line.startswith("otelcol_exporter_sent_spans_total") and 'exporter="jaeger"' in line
    ]
    assert sent and float(sent[0].rsplit(" ", 1)[1]) == len(expected), sent


async def test_a_batch_of_prepared_spans_is_sent_whole_and_counted() -> None:
    """Two requests merged by ``sending_queue.batch`` reach the collector as the Thrift
    batches of both, and the sent count is what arrived (before, the merge kept no chunk:
    nothing was sent and every span was counted as sent)."""
    async with (
        Collector() as col,
        exporter(
            {
                "protocol": "thrift_http",
                "endpoint": col.url,
                "sending_queue": {"batch": {"flush_timeout": "50ms", "min_size": 1000}},
            }
        ) as (exp, tel),
    ):
        await exp.consume(Traces.from_message(many_spans(4)))
        await exp.consume(Traces.from_message(many_spans(3)))
        await wait_until(lambda: len(col.bodies) == 2)
        await asyncio.sleep(0.1)
    spans = [r.read_struct(b, "binary")[r.BATCH_SPANS] for b in col.bodies]
    assert [len(s) for s in spans] == [4, 3]
    assert tel.value("otelcol_exporter_sent_spans_total", exporter="jaeger") == 7
    assert not tel.value("otelcol_exporter_send_failed_spans_total", exporter="jaeger")


def test_prepared_spans_merge_split_copy_and_size_by_their_chunks() -> None:
    from plugins.jaegerexporter.exporter import PreparedTraces

    a = PreparedTraces([b"a1", b"a22"], 5, [2, 3])
    b = PreparedTraces([b"b333"], 4, [4])
    a.carry_acks(["tok-a"])
    b.carry_acks(["tok-b"])
    merged = PreparedTraces.merge([a, b])
    assert isinstance(merged, PreparedTraces)
    assert merged.chunks == [b"a1", b"a22", b"b333"] and merged.counts == [2, 3, 4]
    assert merged.item_count() == 9 and merged.nbytes == 9
    assert merged.ack_tokens == ("tok-a", "tok-b")

    parts = merged.split(5)
    assert [(p.chunks, p.item_count()) for p in parts] == [  # type: ignore[attr-defined]
        ([b"a1", b"a22"], 5),
        ([b"b333"], 4),
    ]
    assert all(p.ack_tokens == ("tok-a", "tok-b") for p in parts)
    # a chunk is never cut: one larger than the limit goes alone; first tops up a batch
    assert [p.item_count() for p in merged.split(2)] == [2, 3, 4]
    assert [p.item_count() for p in merged.split(9, first=2)] == [2, 7]
    assert merged.split(9) == [merged]
    # an entry read back from the persistent queue (counts unknown) is never split
    assert PreparedTraces([b"x", b"y"], 6).split(1)[0].item_count() == 6

    dup = merged.copy()
    assert isinstance(dup, PreparedTraces) and dup is not merged
    assert dup.chunks == merged.chunks and dup.item_count() == 9
    assert dup.ack_tokens == merged.ack_tokens

    # no OTLP behind them: reading them as OTLP fails loudly instead of yielding no spans
    with pytest.raises(TypeError, match="no OTLP encoding"):
        merged.to_bytes()
    with pytest.raises(TypeError, match="no OTLP encoding"):
        merged.encoded_parts()
    with pytest.raises(TypeError, match="cannot merge"):
        PreparedTraces.merge([a, Traces(b"")])


async def test_prepared_spans_left_in_the_persistent_queue_are_sent_after_a_restart(
    tmp_path: Any,
) -> None:
    """The Jaeger collector is down: the spans wait in the file_storage queue (as Thrift
    bodies) through a shutdown; on the next start, with the collector up (the project's jaeger
    receiver), every span arrives, once, and is counted as recovered."""
    cap.install()
    key = "queue-restart"
    http_port, jport, telemetry_port = free_port(), free_port(), free_port()
    exporter_config = f"""
  jaeger:
    protocol: thrift_http
    endpoint: "http://127.0.0.1:{jport}/api/traces"
    sending_queue: {{storage: file_storage}}
    retry_on_failure: {{initial_interval: 50ms, max_interval: 100ms, max_elapsed_time: 0s}}"""
    common = f"""
extensions:
  file_storage: {{directory: "{tmp_path}"}}
receivers:
  otlp: {{protocols: {{http: {{endpoint: "127.0.0.1:{http_port}"}}}}}}
  jaeger: {{protocols: {{thrift_http: {{endpoint: "127.0.0.1:{jport}"}}}}}}
exporters:{exporter_config}
  jaeger_test_capture: {{key: "{key}"}}
"""
    down = (
        common
        + """
service:
  shutdown_timeout: 1s
  extensions: [file_storage]
  pipelines:
    traces/in: {receivers: [otlp], exporters: [jaeger]}
  telemetry: {metrics: {level: none}}
"""
    )
    up = (
        common
        + f"""
service:
  extensions: [file_storage]
  pipelines:
    traces/in: {{receivers: [otlp], exporters: [jaeger]}}
    traces/out: {{receivers: [jaeger], exporters: [jaeger_test_capture]}}
  telemetry:
    metrics: {{address: "127.0.0.1:{telemetry_port}"}}
"""
    )
    sizes = [2, 3, 1]
    expected = sorted(f"r{i}-s{j}" for i, n in enumerate(sizes) for j in range(n))
    async with running_service(down):
        async with aiohttp.ClientSession(timeout=CLIENT_TIMEOUT) as session:
            for i, n in enumerate(sizes):
                async with session.post(
                    f"http://127.0.0.1:{http_port}/v1/traces",
                    data=_request_of(i, n),
                    headers={"Content-Type": "application/x-protobuf"},
                ) as resp:
                    assert resp.status == 200, await resp.text()
        await asyncio.sleep(0.3)  # sends fail and are retried
    assert cap.spans(key) == []
    async with running_service(up):
        with contextlib.suppress(AssertionError):  # compared below, span by span
            await wait_until(lambda: len(cap.spans(key)) >= len(expected), within=5)
        await asyncio.sleep(0.3)  # anything sent twice arrives too
        async with (
            aiohttp.ClientSession(timeout=CLIENT_TIMEOUT) as session,
            session.get(f"http://127.0.0.1:{telemetry_port}/metrics") as resp,
        ):
            metrics = await resp.text()
    assert sorted(span.name for _, _, span in cap.spans(key)) == expected
    recovered = [
        line
        for line in metrics.splitlines()
        if line.startswith("otelcol_exporter_queue_recovered_spans_total")
    ]
    assert recovered and float(recovered[0].rsplit(" ", 1)[1]) == len(expected), recovered


def test_prepared_spans_of_the_previous_queue_layout_are_still_read() -> None:
    """Records written before per-chunk counts were stored (item count, chunk count, sized
    chunks) are read back whole (never split); a damaged one is refused."""
    import struct

    from pipeline import Signal
    from plugins.jaegerexporter.exporter import PreparedCodec, PreparedTraces

    codec = PreparedCodec(Signal.TRACES)
    chunks = [b"first chunk", b"", b"\x00" * 70000]
    old = struct.pack("<II", 12, len(chunks)) + b"".join(
        struct.pack("<I", len(c)) + c for c in chunks
    )
    back = codec.decode(old)
    assert isinstance(back, PreparedTraces)
    assert back.chunks == chunks and back.counts is None and back.item_count() == 12
    assert codec.count(old) == 12 and back.split(1) == [back]
    for cut in (3, 7, 12, 30, len(old) - 1):
        with pytest.raises(ValueError):
            codec.decode(old[:cut])
