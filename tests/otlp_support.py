"""OTLP test helpers: a recording OTLP/gRPC + OTLP/HTTP backend (the end of a chain, where
tests read what arrived), request builders, rotel as a subprocess."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import sys
import tempfile
import warnings
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from aiohttp import web
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.support import STRICT, free_port

TRACE_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
METRICS_METHOD = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"
LOGS_METHOD = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
HTTP_METHODS = {"/v1/traces": TRACE_METHOD, "/v1/metrics": METRICS_METHOD, "/v1/logs": LOGS_METHOD}


class RecordingBackend:
    """A real OTLP/gRPC and OTLP/HTTP server that keeps every request it accepts.

    ``respond`` may be set to a callable returning ``None`` (accept) or a tuple describing a
    refusal: ``("grpc", code, message, trailers)`` / ``("http", status, body, headers)``.
    """

    def __init__(self) -> None:
        self.grpc_port = free_port()
        self.http_port = free_port()
        self.traces: list[ExportTraceServiceRequest] = []
        self.metrics: list[ExportMetricsServiceRequest] = []
        self.logs: list[ExportLogsServiceRequest] = []
        self.grpc_metadata: list[dict[str, str]] = []
        self.http_headers: list[dict[str, str]] = []
        self.respond: Callable[[str], Any] | None = None
        self.response_body: bytes = b""
        self.attempts = 0
        self._grpc: Any = None
        self._runner: web.AppRunner | None = None

    @property
    def spans(self) -> list[Any]:
        return [
            s
            for r in self.traces
            for rs in r.resource_spans
            for ss in rs.scope_spans
            for s in ss.spans
        ]

    def span_count(self) -> int:
        return len(self.spans)

    @property
    def log_records(self) -> list[Any]:
        return [
            lr
            for r in self.logs
            for rl in r.resource_logs
            for sl in rl.scope_logs
            for lr in sl.log_records
        ]

    def log_record_count(self) -> int:
        return len(self.log_records)

    def point_count(self) -> int:
        total = 0
        for r in self.metrics:
            for rm in r.resource_metrics:
                for sm in rm.scope_metrics:
                    for m in sm.metrics:
                        kind = m.WhichOneof("data")
                        if kind:
                            total += len(getattr(m, kind).data_points)
        return total

    def _record(self, method: str, data: bytes) -> None:
        if method == TRACE_METHOD:
            self.traces.append(ExportTraceServiceRequest.FromString(data))
        elif method == LOGS_METHOD:
            self.logs.append(ExportLogsServiceRequest.FromString(data))
        else:
            self.metrics.append(ExportMetricsServiceRequest.FromString(data))

    async def start_grpc(self) -> None:
        backend = self

        def handler(method: str) -> Any:
            async def export(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
                backend.attempts += 1
                backend.grpc_metadata.append(dict(context.invocation_metadata() or ()))
                refusal = backend.respond("grpc") if backend.respond else None
                if refusal is not None:
                    _, code, message, trailers = refusal
                    await context.abort(code, message, trailing_metadata=trailers)
                backend._record(method, request)
                return backend.response_body

            return grpc.unary_unary_rpc_method_handler(export)

        server = grpc.aio.server()
        server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    "opentelemetry.proto.collector.trace.v1.TraceService",
                    {"Export": handler(TRACE_METHOD)},
                ),
                grpc.method_handlers_generic_handler(
                    "opentelemetry.proto.collector.metrics.v1.MetricsService",
                    {"Export": handler(METRICS_METHOD)},
                ),
                grpc.method_handlers_generic_handler(
                    "opentelemetry.proto.collector.logs.v1.LogsService",
                    {"Export": handler(LOGS_METHOD)},
                ),
            )
        )
        server.add_insecure_port(f"127.0.0.1:{self.grpc_port}")
        await server.start()
        self._grpc = server

    async def start_http(self) -> None:
        backend = self

        async def handle(request: web.Request) -> web.Response:
            backend.attempts += 1
            backend.http_headers.append(dict(request.headers))
            body = await request.read()  # aiohttp inflates gzip request bodies itself
            refusal = backend.respond("http") if backend.respond else None
            if refusal is not None:
                _, status, rbody, headers = refusal
                return web.Response(status=status, body=rbody, headers=headers)
            backend._record(HTTP_METHODS[request.path], body)
            return web.Response(body=backend.response_body, content_type="application/x-protobuf")

        app = web.Application(client_max_size=64 << 20)
        app.router.add_post("/v1/traces", handle)
        app.router.add_post("/v1/metrics", handle)
        app.router.add_post("/v1/logs", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.http_port).start()
        self._runner = runner

    async def start(self) -> None:
        await self.start_grpc()
        await self.start_http()

    async def stop(self) -> None:
        if self._grpc is not None:
            await self._grpc.stop(0)
            self._grpc = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


@contextlib.asynccontextmanager
async def recording_backend() -> AsyncIterator[RecordingBackend]:
    backend = RecordingBackend()
    await backend.start()
    try:
        yield backend
    finally:
        await backend.stop()


def rotel_binary() -> str:
    """The ``rotel-agent`` shipped inside the PyPI package ``rotel``."""
    try:
        import rotel
    except ImportError:
        path = None
    else:
        candidate = Path(rotel.__file__).parent / "rotel-agent"
        path = str(candidate) if candidate.exists() else None
    if path is None:
        message = "this test needs rotel: pip install rotel==0.0.1a15"
        if STRICT:
            pytest.fail(message)
        pytest.skip(message)
    return path


class Rotel:
    """``rotel-agent start`` as a subprocess, with its own pid and log files."""

    def __init__(self, *args: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="rotel-"))
        self.grpc_port = free_port()
        self.http_port = free_port()
        self.log_file = self.dir / "rotel.log"
        cmd = [
            rotel_binary(),
            "start",
            "--pid-file",
            str(self.dir / "rotel.pid"),
            "--log-file",
            str(self.log_file),
            "--otlp-grpc-endpoint",
            f"127.0.0.1:{self.grpc_port}",
            "--otlp-http-endpoint",
            f"127.0.0.1:{self.http_port}",
            *args,
        ]
        self.out = open(self.dir / "stdout.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, stdout=self.out, stderr=subprocess.STDOUT)

    def output(self) -> str:
        return (self.dir / "stdout.log").read_text(errors="replace")

    async def wait_ready(self, within: float = 15.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while loop.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"rotel exited early:\n{self.output()}")
            ok = True
            for port in (self.grpc_port, self.http_port):
                try:
                    _, w = await asyncio.open_connection("127.0.0.1", port)
                    w.close()
                except OSError:
                    ok = False
            if ok:
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"rotel not ready:\n{self.output()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.out.close()


def python_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}


PYTHON = sys.executable


# -- logs from the OpenTelemetry Python SDK ------------------------------------------------------
# Bodies of every AnyValue type (None is the empty AnyValue), as GenAI events carry them: maps
# with nested lists for messages, strings for content.
LOG_BODIES: list[Any] = [
    "plain text body",
    1234567890123,
    2.5,
    True,
    b"\x00\x01binary\xff",
    ["a", 1, 2.5, False, ["nested"]],
    {
        "role": "assistant",
        "content": [{"type": "text", "text": "hello"}],
        "tool_calls": [{"id": "call_1", "function": {"name": "search", "arguments": "{}"}}],
        "score": 0.75,
    },
    None,
]


def make_logs(exporter: Any) -> list[Any]:
    """Emit log records with the SDK, sending them with ``exporter`` and keeping a copy.

    One record per body type, inside a span (trace and span ids, sampled flag) or outside any,
    with an event name, severities, explicit and observed times, attributes of every type and,
    for one record, more attributes than the limit (a dropped count); one record comes through
    the ``logging`` bridge. Each record carries ``seq`` to match it with what arrives.
    """
    from opentelemetry.sdk._logs import (
        LoggerProvider,
        LoggingHandler,
        LogRecordDroppedAttributesWarning,
        LogRecordLimits,
    )
    from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    memory = InMemoryLogRecordExporter()
    provider = LoggerProvider(
        resource=Resource.create({"service.name": "interop-test", "deployment.environment": "t"}),
        log_record_limits=LogRecordLimits(max_attributes=12),
        shutdown_on_exit=False,
    )
    provider.add_log_record_processor(SimpleLogRecordProcessor(memory))
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    logger = provider.get_logger(
        "interop.logs", "1.2.3", "https://opentelemetry.io/schemas/1.30.0", {"scope.attr": "s"}
    )
    tracer = TracerProvider().get_tracer("interop")
    from opentelemetry._logs import SeverityNumber

    for i, body in enumerate(LOG_BODIES):
        # for one record, more attributes than the limit: the oldest (the extras) are dropped
        attributes: dict[str, Any] = {f"extra.{n}": n for n in range(8)} if i == 3 else {}
        attributes |= {
            "seq": i,
            "gen_ai.operation.name": "chat",
            "gen_ai.usage.input_tokens": 1234567890123,
            "ratio": 0.5,
            "ok": True,
            "tags": ["a", "b"],
            "counts": [1, 2, 3],
        }
        kwargs: dict[str, Any] = {
            "timestamp": 1_700_000_000_000_000_000 + i * 1_000_003,
            "observed_timestamp": 1_700_000_000_500_000_000 + i,
            "severity_number": list(SeverityNumber)[(i * 3) % 25],
            "severity_text": ["INFO", "WARN", "ERROR", "", "DEBUG", "FATAL", "TRACE", "info"][i],
            "body": body,
            "attributes": attributes,
            "event_name": "gen_ai.client.inference.operation.details" if i % 2 == 0 else None,
        }
        with warnings.catch_warnings():  # the dropped attributes are meant
            warnings.simplefilter("ignore", LogRecordDroppedAttributesWarning)
            if i % 3 == 2:
                logger.emit(**kwargs)  # no span: no trace context
            else:
                with tracer.start_as_current_span(f"span-{i}"):
                    logger.emit(**kwargs)
    # the stdlib logging bridge
    std = logging.getLogger("interop.std")
    std.propagate = False
    with warnings.catch_warnings():  # the SDK's own handler is deprecated, not gone
        warnings.simplefilter("ignore", DeprecationWarning)
        handler = LoggingHandler(logger_provider=provider)
    std.addHandler(handler)
    try:
        with tracer.start_as_current_span("bridge"):
            std.warning("bridged %s", "message", extra={"seq": len(LOG_BODIES)})
    finally:
        std.removeHandler(handler)
    provider.shutdown()
    return list(memory.get_finished_logs())


def any_value(v: Any) -> Any:
    """An ``AnyValue`` as plain Python (lists for arrays, dicts for maps, None when empty)."""
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, kind)


def _plain(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_plain(x) for x in value]
    if isinstance(value, dict) or hasattr(value, "items"):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def compare_logs(expected: list[Any], requests: list[ExportLogsServiceRequest]) -> None:
    """Every record the SDK emitted arrived once in ``requests``, field by field, with its
    resource and scope."""
    got: dict[int, tuple[Any, Any, Any]] = {}
    for req in requests:
        for rl in req.resource_logs:
            for sl in rl.scope_logs:
                for lr in sl.log_records:
                    seq = next(kv.value.int_value for kv in lr.attributes if kv.key == "seq")
                    assert seq not in got, f"record {seq} arrived twice"
                    got[seq] = (rl, sl, lr)
    assert len(got) == len(expected)
    for readable in expected:
        rec = readable.log_record
        seq = rec.attributes["seq"]
        rl, sl, lr = got[seq]
        assert lr.time_unix_nano == rec.timestamp, seq
        assert lr.observed_time_unix_nano == rec.observed_timestamp, seq
        assert lr.severity_number == rec.severity_number.value, seq
        assert lr.severity_text == (rec.severity_text or ""), seq
        assert any_value(lr.body) == _plain(rec.body), seq
        assert {kv.key: any_value(kv.value) for kv in lr.attributes} == _plain(
            dict(rec.attributes)
        ), seq
        assert lr.dropped_attributes_count == readable.dropped_attributes, seq
        assert lr.trace_id == (rec.trace_id.to_bytes(16, "big") if rec.trace_id else b""), seq
        assert lr.span_id == (rec.span_id.to_bytes(8, "big") if rec.span_id else b""), seq
        assert lr.flags == int(rec.trace_flags or 0), seq
        assert lr.event_name == (rec.event_name or ""), seq
        resource = {kv.key: any_value(kv.value) for kv in rl.resource.attributes}
        assert resource == _plain(dict(readable.resource.attributes))
        scope = readable.instrumentation_scope
        assert (sl.scope.name, sl.scope.version) == (scope.name, scope.version)
        assert sl.schema_url == scope.schema_url
        assert {kv.key: any_value(kv.value) for kv in sl.scope.attributes} == _plain(
            dict(scope.attributes or {})
        )
    dropped = [r for r in expected if r.dropped_attributes]
    assert len(dropped) == 1 and dropped[0].dropped_attributes == 3
    assert any(r.log_record.trace_id for r in expected)
    assert any(not r.log_record.trace_id for r in expected)


@contextlib.asynccontextmanager
async def second_gateway(backend: RecordingBackend) -> AsyncIterator[tuple[int, int]]:
    """Another gateway in this event loop: OTLP logs in (gRPC and HTTP ports yielded), out
    through its ``otlp`` exporter to ``backend``."""
    from tests.support import running_service

    grpc_port, http_port = free_port(), free_port()
    config = f"""
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:{grpc_port}"}}
      http: {{endpoint: "127.0.0.1:{http_port}"}}
exporters:
  otlp: {{endpoint: "127.0.0.1:{backend.grpc_port}", tls: {{insecure: true}}}}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    logs: {{receivers: [otlp], exporters: [otlp]}}
"""
    async with running_service(config):
        yield grpc_port, http_port
