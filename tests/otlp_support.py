"""OTLP test helpers: a recording OTLP/gRPC + OTLP/HTTP backend (the end of a chain, where
tests read what arrived), request builders, rotel as a subprocess."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from aiohttp import web
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.support import STRICT, free_port

TRACE_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
METRICS_METHOD = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"


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
            method = TRACE_METHOD if request.path == "/v1/traces" else METRICS_METHOD
            backend._record(method, body)
            return web.Response(body=backend.response_body, content_type="application/x-protobuf")

        app = web.Application(client_max_size=64 << 20)
        app.router.add_post("/v1/traces", handle)
        app.router.add_post("/v1/metrics", handle)
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
