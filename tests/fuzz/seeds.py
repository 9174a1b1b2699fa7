"""Writes the seed corpus of the fuzz targets (``tests/fuzz/corpus/<target>/``) from real peers.

``python -m tests.fuzz.seeds`` (run by hand when a target is added or a peer changes; the files
are committed, a few KiB each):

* OTLP protobuf and OTLP/JSON: an agent workflow traced with the OpenTelemetry SDK (a workflow
  root, an agent, tool calls one of which fails with its exception recorded, an MCP call, A2A
  producer and consumer with a link, an HTTP server span, a database call) and SDK metrics
  (counter, histogram, gauge), encoded by the SDK's OTLP exporters' own encoders;
* HTTP/2: the bytes the SDK's gRPC exporter (grpcio) and grpcio's server exchange for an
  export, caught by a relay between them; the ``h2`` library's client and the native client
  sessions' bytes, and the native server sessions' answers to the ``h2_client`` harness calls;
* Jaeger: the datagrams of the PyPI ``jaeger-client`` (UDP, compact), the body the npm
  ``jaeger-client`` posts (HTTP, binary), and batches written by the code generated from the
  Jaeger IDL (binary datagram, compact body);
* Prometheus: a real Prometheus server's own ``/metrics`` in both formats (cut to a few
  families) and ``prometheus_client``'s exposition of every metric type, exemplars included.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tests" / "fuzz" / "corpus"
HERE = ROOT / "tests" / "plugins"

TRACE_TARGETS = (
    "otlpvalid",
    "tracewire_ingest",
    "workflow",
    "agentscan",
    "spanscan",
    "otlp_proto",
    "ottl",
    "route",
    "tailscan",
)


def write(target: str, name: str, data: bytes) -> None:
    directory = CORPUS / target
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_bytes(data)
    print(f"  {target}/{name}: {len(data)} bytes ({hashlib.sha1(data).hexdigest()[:8]})")


# -- OpenTelemetry SDK ----------------------------------------------------------------------------
def sdk_spans() -> list[Any]:
    """An agent workflow traced with the SDK, as an instrumented agent would emit it."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import Link, SpanKind, Status, StatusCode

    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "research-agent"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("agent.workflow", "1.0.0")
    with tracer.start_as_current_span(
        "workflow.research",
        attributes={"workflow.name": "research", "workflow.id": "wf-1", "workflow.type": "plan"},
    ):
        with tracer.start_as_current_span(
            "invoke_agent planner",
            attributes={"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.id": "planner"},
        ):
            with tracer.start_as_current_span(
                "chat gpt-4o",
                kind=SpanKind.CLIENT,
                attributes={
                    "gen_ai.operation.name": "chat",
                    "gen_ai.request.model": "gpt-4o",
                    "gen_ai.usage.input_tokens": 812,
                    "gen_ai.usage.output_tokens": 96,
                },
            ):
                pass
            with tracer.start_as_current_span(
                "execute_tool search",
                attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search"},
            ):
                pass
            with tracer.start_as_current_span(
                "execute_tool fetch",
                attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "fetch"},
            ) as failed:
                failed.record_exception(TimeoutError("fetch timed out after 5s"))
                failed.set_status(Status(StatusCode.ERROR, "fetch timed out after 5s"))
            with tracer.start_as_current_span(
                "tools/call lookup",
                kind=SpanKind.CLIENT,
                attributes={
                    "mcp.method.name": "tools/call",
                    "mcp.server.name": "kb",
                    "gen_ai.tool.name": "lookup",
                    "server.address": "kb.internal",
                },
            ):
                pass
            with tracer.start_as_current_span(
                "a2a send",
                kind=SpanKind.PRODUCER,
                attributes={"a2a.message.type": "task", "a2a.recipient.type": "agent"},
            ) as producer:
                sent = producer.get_span_context()
        with tracer.start_as_current_span(
            "a2a receive",
            kind=SpanKind.CONSUMER,
            links=[Link(sent)],
            attributes={"a2a.message.type": "task", "a2a.sender.type": "agent"},
        ):
            pass
        with (
            tracer.start_as_current_span(
                "GET /reports/{id}",
                kind=SpanKind.SERVER,
                attributes={
                    "http.request.method": "GET",
                    "http.route": "/reports/{id}",
                    "http.response.status_code": 503,
                },
            ),
            tracer.start_as_current_span(
                "SELECT reports", kind=SpanKind.CLIENT, attributes={"db.system.name": "postgresql"}
            ),
        ):
            pass
    provider.shutdown()
    return list(exporter.get_finished_spans())


def sdk_metrics() -> Any:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.resources import Resource

    reader = InMemoryMetricReader()
    provider = MeterProvider(
        resource=Resource.create({"service.name": "research-agent"}), metric_readers=[reader]
    )
    meter = provider.get_meter("agent.metrics", "1.0.0")
    meter.create_counter("gen_ai.client.token.usage.total").add(908, {"gen_ai.token.type": "input"})
    hist = meter.create_histogram("gen_ai.client.operation.duration", unit="s")
    for v in (0.05, 0.4, 2.5):
        hist.record(v, {"gen_ai.operation.name": "chat"})
    meter.create_up_down_counter("agent.active_workflows").add(3)
    meter.create_gauge("agent.queue_depth").set(7, {"queue": "tasks"})
    data = reader.get_metrics_data()
    provider.shutdown()
    return data


def otlp_seeds() -> None:
    from opentelemetry.exporter.otlp.json.common.metrics_encoder import (
        encode_metrics as json_metrics,
    )
    from opentelemetry.exporter.otlp.json.common.trace_encoder import encode_spans as json_spans
    from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    spans = sdk_spans()
    whole = encode_spans(spans).SerializeToString()
    tools = encode_spans([s for s in spans if "tool" in s.name]).SerializeToString()
    root = encode_spans([s for s in spans if s.parent is None]).SerializeToString()
    for target in TRACE_TARGETS:
        write(target, "sdk-agent-workflow.pb", whole)
        write(target, "sdk-tool-calls.pb", tools)
        write(target, "sdk-workflow-root.pb", root)
    metrics = sdk_metrics()
    write("otlp_proto", "sdk-metrics.pb", encode_metrics(metrics).SerializeToString())
    write("route", "sdk-metrics.pb", encode_metrics(metrics).SerializeToString())
    write("route", "genai-events-logs.pb", genai_events_logs())
    write("otlp_json", "sdk-agent-workflow.json", encode_spans_json(json_spans, spans))
    write("otlp_json", "sdk-tool-calls.json", encode_spans_json(json_spans, spans[2:5]))
    write("otlp_json", "sdk-metrics.json", json_metrics(metrics).to_json().encode())


def encode_spans_json(encode: Any, spans: list[Any]) -> bytes:
    return bytes(encode(spans).to_json().encode())


# -- HTTP/2 ---------------------------------------------------------------------------------------
@contextlib.contextmanager
def relay(upstream: int) -> Iterator[tuple[int, list[bytes], list[bytes]]]:
    """A TCP relay to ``127.0.0.1:upstream`` keeping what each side sent."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    up: list[bytes] = []
    down: list[bytes] = []

    def pump(src: socket.socket, dst: socket.socket, keep: list[bytes]) -> None:
        with contextlib.suppress(OSError):
            while chunk := src.recv(65536):
                keep.append(chunk)
                dst.sendall(chunk)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def serve() -> None:
        client, _ = listener.accept()
        server = socket.create_connection(("127.0.0.1", upstream))
        threading.Thread(target=pump, args=(server, client, down), daemon=True).start()
        pump(client, server, up)

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield port, up, down
    finally:
        listener.close()


def grpc_seeds() -> None:
    """The SDK's gRPC exporter against grpcio's server, through the relay."""
    import grpc
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

    class Service(trace_service_pb2_grpc.TraceServiceServicer):  # type: ignore[misc]
        def Export(self, request: Any, context: Any) -> Any:
            return trace_service_pb2.ExportTraceServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Service(), server)
    upstream = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with relay(upstream) as (port, up, down):
            exporter = OTLPSpanExporter(endpoint=f"127.0.0.1:{port}", insecure=True, timeout=10)
            spans = sdk_spans()
            exporter.export([s for s in spans if "tool" in s.name])
            time.sleep(0.3)
            exporter.shutdown()
            time.sleep(0.3)
    finally:
        server.stop(None)
    write("h2_server", "grpcio-sdk-export.bin", b"".join(up))
    write("h2_client", "grpcio-server-answer.bin", b"".join(down))


def h2_seeds() -> None:
    """The h2 library's client, the native client sessions, the native server's answers."""
    import h2.config
    import h2.connection

    from plugins._native import load
    from tests.plugins._native.test_h2server import CLIENT_HEADERS, framed, headers

    client = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
    )
    client.initiate_connection()
    sid = client.get_next_available_stream_id()
    client.send_headers(sid, headers(**{"grpc-encoding": "gzip"}))
    client.send_data(sid, framed(b"\x0a\x02ab"), end_stream=False)
    client.send_data(sid, b"", end_stream=True)
    sid = client.get_next_available_stream_id()
    client.send_headers(sid, headers(content_type="application/json"), end_stream=False)
    client.reset_stream(sid)
    client.ping(b"12345678")
    client.increment_flow_control_window(1 << 20)
    write("h2_server", "h2-client-calls.bin", client.data_to_send())

    h2server = load("_h2server")
    assert h2server is not None, "the native modules must be built"
    native = h2server.ClientSession(stream_window=65535, connection_window=1 << 16)
    native.request(CLIENT_HEADERS, b"\x0a\x00", False)
    native.request(CLIENT_HEADERS, b"y" * 300, True)
    write("h2_server", "native-client-calls.bin", native.data_to_send())

    # the native server's answers to the h2_client target's own three calls
    c = h2server.ClientSession(stream_window=65535, connection_window=1 << 16)
    s = h2server.Session(
        max_message=1 << 12, max_concurrent_streams=8, stream_window=65535, connection_window=65535
    )
    c.request(CLIENT_HEADERS, b"\x0a\x00", False)
    c.request(CLIENT_HEADERS, b"x" * 100, True)
    c.request(CLIENT_HEADERS, b"", False)
    calls = s.feed(c.data_to_send())
    s.respond(calls[0][0], 0, b"\x0a\x00")
    s.respond(calls[1][0], 14, b"busy %25", None, b"AAEC")
    s.respond(calls[2][0], 0, http_status=415)
    s.goaway()
    write("h2_client", "native-server-answers.bin", s.data_to_send())


# -- Jaeger ---------------------------------------------------------------------------------------
def jaeger_seeds() -> None:
    from jaeger_client.thrift_gen.agent import Agent
    from jaeger_client.thrift_gen.jaeger import ttypes
    from thrift.protocol.TBinaryProtocol import TBinaryProtocol
    from thrift.protocol.TCompactProtocol import TCompactProtocol
    from thrift.transport.TTransport import TMemoryBuffer

    # the PyPI client: UDP datagrams, compact
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(10)
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "jaeger_py_client.py"), str(sock.getsockname()[1])],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    datagram = sock.recv(65536)
    proc.communicate(timeout=60)
    sock.close()
    write("jaeger_compact", "jaeger-client-py-udp.bin", datagram)

    # generated code: a binary datagram and a compact body
    span = ttypes.Span(
        traceIdLow=-1,
        traceIdHigh=1,
        spanId=42,
        parentSpanId=7,
        operationName="execute_tool search",
        references=[ttypes.SpanRef(refType=1, traceIdLow=-1, traceIdHigh=1, spanId=9)],
        flags=1,
        startTime=1_700_000_000_000_000,
        duration=10,
        tags=[
            ttypes.Tag(key="n", vType=ttypes.TagType.LONG, vLong=-5),
            ttypes.Tag(key="r", vType=ttypes.TagType.DOUBLE, vDouble=0.5),
            ttypes.Tag(key="b", vType=ttypes.TagType.BOOL, vBool=True),
            # the generated code writes vBinary through writeString: a str
            ttypes.Tag(key="x", vType=ttypes.TagType.BINARY, vBinary="\x00bin"),
            ttypes.Tag(key="gen_ai.tool.name", vType=ttypes.TagType.STRING, vStr="search"),
        ],
        logs=[
            ttypes.Log(
                timestamp=1_700_000_000_000_005,
                fields=[ttypes.Tag(key="event", vType=ttypes.TagType.STRING, vStr="error")],
            )
        ],
    )
    process = ttypes.Process(
        serviceName="bin-svc", tags=[ttypes.Tag(key="ip", vType=ttypes.TagType.STRING, vStr="::1")]
    )
    batch = ttypes.Batch(process=process, spans=[span])
    buf = TMemoryBuffer()
    proto = TBinaryProtocol(buf)
    proto.writeMessageBegin("emitBatch", 4, 1)
    Agent.emitBatch_args(batch=batch).write(proto)
    proto.writeMessageEnd()
    write("jaeger_binary", "generated-udp.bin", buf.getvalue())
    buf = TMemoryBuffer()
    batch.write(TCompactProtocol(buf))
    write("jaeger_compact", "generated-http-body.bin", buf.getvalue())

    # the npm client: an HTTP body, binary
    npm = HERE / "jaeger_npm"
    if (npm / "node_modules" / "jaeger-client").is_dir():
        write("jaeger_binary", "jaeger-client-npm-http.bin", asyncio.run(npm_body(npm)))
    else:
        print("  (npm jaeger-client not installed: run npm ci --prefix tests/plugins/jaeger_npm)")


async def npm_body(npm: Path) -> bytes:
    from aiohttp import web

    bodies: list[bytes] = []

    async def handle(request: web.Request) -> web.Response:
        bodies.append(await request.read())
        return web.Response(status=202)

    app = web.Application()
    app.router.add_post("/api/traces", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        proc = await asyncio.create_subprocess_exec(
            "node", str(npm / "send.js"), f"http://127.0.0.1:{port}/api/traces",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        await asyncio.wait_for(proc.communicate(), 60)
    finally:
        await runner.cleanup()
    return bodies[0]


# -- Prometheus -----------------------------------------------------------------------------------
def cut_families(text: str, families: int, openmetrics: bool) -> bytes:
    """The first ``families`` metric families of an exposition (whole, so it stays valid)."""
    out: list[str] = []
    seen = 0
    for line in text.splitlines():
        if line.startswith("# HELP "):
            seen += 1
            if seen > families:
                break
        if line == "# EOF":
            break
        out.append(line)
    return ("\n".join(out) + ("\n# EOF\n" if openmetrics else "\n")).encode()


def prometheus_seeds() -> None:
    import urllib.request

    from prometheus_client import (
        CollectorRegistry,
        Counter,
        Enum,
        Gauge,
        Histogram,
        Info,
        Summary,
        generate_latest,
    )
    from prometheus_client.openmetrics.exposition import generate_latest as generate_om

    registry = CollectorRegistry()
    Counter("tool_calls", "Tool calls", ["tool"], registry=registry).labels("search").inc(3)
    Gauge("queue_depth", "Queued tasks", registry=registry).set(7.5)
    hist = Histogram(
        "workflow_duration_seconds", "Workflow duration", ["type"], registry=registry,
        buckets=(0.1, 1.0, 10.0),
    )  # fmt: skip
    hist.labels("plan").observe(0.4, exemplar={"trace_id": "0af7651916cd43dd8448eb211c80319c"})
    hist.labels("plan").observe(12)
    Summary("request_size_bytes", "Request size", registry=registry).observe(512)
    Info("build", "Build facts", registry=registry).info({"version": "1.2.3", "commit": "abc"})
    Enum("state", "Agent state", states=["idle", "busy"], registry=registry).state("busy")
    write("prometheus_text", "prometheus-client-types.txt", generate_latest(registry))
    write("prometheus_openmetrics", "prometheus-client-types.om", generate_om(registry))

    binary = "/usr/bin/prometheus"
    if not os.path.exists(binary):
        print("  (prometheus not installed: apt-get install prometheus)")
        return
    with tempfile.TemporaryDirectory() as tmp:
        listener = socket.create_server(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        listener.close()
        Path(tmp, "prometheus.yml").write_text("scrape_configs: []\n")
        proc = subprocess.Popen(
            [
                binary, f"--config.file={tmp}/prometheus.yml", f"--storage.tsdb.path={tmp}/data",
                f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn",
            ],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            url = f"http://127.0.0.1:{port}/metrics"
            for _ in range(200):
                with contextlib.suppress(OSError):
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=1)
                    break
                time.sleep(0.1)
            text = urllib.request.urlopen(url, timeout=10).read().decode()
            om = urllib.request.urlopen(
                urllib.request.Request(
                    url, headers={"Accept": "application/openmetrics-text; version=1.0.0"}
                ),
                timeout=10,
            ).read()
        finally:
            proc.terminate()
            proc.wait(20)
    write("prometheus_text", "prometheus-server.txt", cut_families(text, 12, False))
    write("prometheus_openmetrics", "prometheus-server.om", cut_families(om.decode(), 12, True))


def agent_source_seeds() -> None:
    """Traces of real agent libraries (the recorded corpus, tests/data/agent_sources): agent
    runs that are not the trace root, OpenLLMetry workflows below an agent span (the workflow
    processor's execution path)."""
    from google.protobuf import json_format
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    sources = ROOT / "tests" / "data" / "agent_sources"
    for source, scenario in (
        ("pydantic_ai_mcp", "tool_error"),
        ("langgraph_openllmetry", "success"),
        ("pydantic_ai_http", "success"),  # an HTTP server span above the agent run
    ):
        text = (sources / source / f"{scenario}.json").read_text()
        data = json_format.Parse(text, ExportTraceServiceRequest()).SerializeToString()
        for target in ("tracewire_ingest", "workflow"):
            write(target, f"{source}-{scenario}.pb", data)
    # what the workflow processor releases for an agent run below an HTTP server span: the root
    # carries workflow.duration (the connector's scanner reads it)
    from tests.plugins.test_workflowprocessor_executions import load, make, run

    spans = run(make("python"), [load("pydantic_ai_http", "success").SerializeToString()])
    stamped = ExportTraceServiceRequest()
    stamped.resource_spans.add().scope_spans.add().spans.extend(spans)
    write("agentscan", "pydantic_ai_http-stamped.pb", stamped.SerializeToString())
    # the same with a peer service's parentless span in the trace (two roots): the processor
    # marks the peer's workflow.secondary_root, the scanner skips it
    from tests.plugins.test_workflow_roots import with_peer

    two_roots = with_peer("success", first=True).SerializeToString()
    for target in ("tracewire_ingest", "workflow"):
        write(target, "pydantic_ai_http-peer.pb", two_roots)
    spans = run(make("python"), [two_roots])
    stamped = ExportTraceServiceRequest()
    stamped.resource_spans.add().scope_spans.add().spans.extend(spans)
    write("agentscan", "pydantic_ai_http-peer-stamped.pb", stamped.SerializeToString())


def agent_id_seeds() -> None:
    """Workflows naming their agent by ``gen_ai.agent.id`` (the workflow processor's agent
    rule): a request of the benchmark's workload (roots naming it by a logical id alone), and
    roots whose id is a per-run id (UUID-shaped: no label, the workflow's id), an integer, not
    UTF-8 (the hostile cases of tests/plugins/test_workflow_agent.py)."""
    from benchmarks.agent_pipeline import Load, build_template, fill, marker_offsets
    from tests.plugins.test_workflow_agent import (
        UUID,
        attribute,
        child,
        encoded,
        int_value,
        raw_request,
        root,
        string_value,
    )

    load = Load(traces_per_request=4)
    template = build_template(load, 0)
    ids = [(k + 1).to_bytes(16, "big") for k in range(load.traces_per_request)]
    bench = fill(template, marker_offsets(template, load.traces_per_request), ids)
    tool = child(1, 2, {"gen_ai.operation.name": "execute_tool"}, "execute_tool t")
    hostile = raw_request(
        [
            encoded(root(i + 1, workflow_id=None), [attribute("gen_ai.agent.id", v)])
            for i, v in enumerate(
                (string_value(UUID.encode()), int_value(42), string_value(b"agent-\xff"))
            )
        ]
        + [
            tool.SerializeToString(),
            child(2, 3, {"gen_ai.agent.id": "research-agent"}).SerializeToString(),
        ]
    )
    for target in ("tracewire_ingest", "workflow"):
        write(target, "bench-agent-id.pb", bench)
        write(target, "agent-id-hostile.pb", hostile)


def sanitizer_seeds() -> None:
    """The statements the redaction tests send to the real PostgreSQL (through the asyncpg
    instrumentation), commands of Redis and Memcached, MongoDB/Elasticsearch documents and
    URLs with ids, for ``redaction``'s sanitizers."""
    from tests.plugins.redaction.db_sources import STATEMENTS

    for i, statement in enumerate(STATEMENTS):
        write("redaction_sanitize", f"sql-{i}.txt", statement.encode())
    others = {
        "redis.txt": "SET user:1 secret\nHSET h email alice@example.com\nAUTH pw\nSET ? ?",
        "memcached.txt": "set mykey 0 60 5\r\nhello\r\nget mykey",
        "mongo.txt": '{"find": "users", "filter": {"name": "bob", "age": {"$gt": 30}}}',
        "mongo-repr.txt": "{'name': 'bob', 'id': ObjectId('5f1d'), 'n': -1.5, 'x': True}",
        "es.txt": '{"query":{"match":{"title":"x"}},"size":10,"tags":["a",1.5],"n":null}',
        "url.txt": "https://u:p@example.com:8443/api/v1/users/12345/o/550e8400-e29b-41d4-a716"
        "-446655440000?token=abc&flag#frag",
        "span-name.txt": "GET /api/users/123/posts/456?id=7",
    }
    for name, text in others.items():
        write("redaction_sanitize", name, text.encode())


def main() -> None:
    print(f"writing seeds to {CORPUS.relative_to(ROOT)}")
    otlp_seeds()
    sanitizer_seeds()
    agent_source_seeds()
    agent_id_seeds()
    grpc_seeds()
    h2_seeds()
    jaeger_seeds()
    prometheus_seeds()


if __name__ == "__main__":
    main()


def genai_events_logs() -> bytes:
    """Log records of two traces (GenAI-event-like) and one without a trace id: the logs
    routing between workers (``split_logs``)."""
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    from tests.poison import good_logs

    req = ExportLogsServiceRequest.FromString(good_logs(2, seed=1))
    req.MergeFrom(ExportLogsServiceRequest.FromString(good_logs(2, seed=2)))
    rl = req.resource_logs[0]
    rl.scope_logs[0].log_records.add(event_name="app.log").body.string_value = "no trace"
    return req.SerializeToString()
