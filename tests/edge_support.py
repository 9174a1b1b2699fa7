"""Helpers of the attack tests (network edges): a gateway subprocess with every kind of
endpoint, its memory, CPU, descriptors and counters read from outside, and good clients (the
OTel SDK's exporters) that must keep getting through."""

from __future__ import annotations

import os
import time
import urllib.request
from pathlib import Path
from typing import Any

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from tests.support import GatewayProcess, free_port, write_config

PAGE = os.sysconf("SC_PAGE_SIZE")
TICKS = os.sysconf("SC_CLK_TCK")
# under AddressSanitizer freed memory is held in quarantine (256 MB by default) and every
# allocation carries redzones: RSS says nothing about what the gateway holds
SANITIZED = "libasan" in os.environ.get("LD_PRELOAD", "")


def rss_bound(mib: float) -> float:
    """The RSS growth an attack test allows (none checked under AddressSanitizer)."""
    return float("inf") if SANITIZED else mib


class EdgeGateway:
    """``pipeline run`` with OTLP gRPC (native) and HTTP, Jaeger Thrift/HTTP, the health check,
    the ``prometheus`` exporter and the self-metrics endpoint, all on loopback, with limits
    short enough for tests (``extra_grpc`` / ``extra_http`` / ``limits`` add options)."""

    def __init__(
        self,
        tmp: Path,
        *,
        extra_grpc: str = "",
        extra_http: str = "",
        max_connections: int = 300,
        limits: str = "max_unfinished_request_bytes: 33554432",
        env: dict[str, str] | None = None,
        preexec_fn: Any = None,
    ) -> None:
        self.grpc = free_port()
        self.http = free_port()
        self.jaeger = free_port()
        self.health = free_port()
        self.prom = free_port()
        self.metrics = free_port()
        text = f"""
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{self.grpc}
        max_connections: {max_connections}
        handshake_timeout: 1s
        read_header_timeout: 1s
        read_timeout: 2s
        write_timeout: 2s
        max_stream_resets_per_second: 50
{extra_grpc}
      http:
        endpoint: 127.0.0.1:{self.http}
        max_connections: {max_connections}
        read_header_timeout: 1s
        read_timeout: 2s
        write_timeout: 2s
        idle_timeout: 5s
{extra_http}
  jaeger:
    protocols:
      thrift_http: {{endpoint: "127.0.0.1:{self.jaeger}", read_header_timeout: 1s}}
exporters:
  debug: {{verbosity: basic}}
  prometheus: {{endpoint: "127.0.0.1:{self.prom}"}}
extensions:
  health_check: {{endpoint: "127.0.0.1:{self.health}"}}
service:
  extensions: [health_check]
  limits: {{{limits}}}
  pipelines:
    traces: {{receivers: [otlp, jaeger], exporters: [debug]}}
    metrics: {{receivers: [otlp], exporters: [prometheus]}}
  telemetry:
    logs: {{level: info}}
    metrics: {{address: "127.0.0.1:{self.metrics}"}}
"""
        path = write_config(tmp, text, name="edge-gateway.yaml")
        self.proc = GatewayProcess(path, env=env, preexec_fn=preexec_fn)

    def __enter__(self) -> EdgeGateway:
        self.proc.__enter__()
        self.proc.wait_ready()
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.__exit__(*exc)

    @property
    def pid(self) -> int:
        return int(self.proc.proc.pid)

    # -- what the process uses, read from /proc ---------------------------------------------------
    def rss_mib(self) -> float:
        fields = Path(f"/proc/{self.pid}/statm").read_text().split()
        return int(fields[1]) * PAGE / (1 << 20)

    def cpu_s(self) -> float:
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) / TICKS

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    # -- its own metrics ---------------------------------------------------------------------------
    def scrape(self, port: int | None = None, timeout: float = 5.0) -> str:
        url = f"http://127.0.0.1:{port or self.metrics}/metrics"
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return str(response.read().decode())

    def metric(self, name: str, **labels: str) -> float:
        total = 0.0
        for family in text_string_to_metric_families(self.scrape()):
            for sample in family.samples:
                if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in labels.items()
                ):
                    total += sample.value
        return total

    def refused(self, reason: str, transport: str = "grpc") -> float:
        return self.metric(
            "otelcol_receiver_refused_requests_total", transport=transport, reason=reason
        )

    def accepted_spans(self) -> float:
        return self.metric("otelcol_receiver_accepted_spans_total", receiver="otlp")

    def log_lines(self) -> int:
        return len(self.proc.lines())

    def health_status(self, timeout: float = 3.0) -> int:
        url = f"http://127.0.0.1:{self.health}/"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)


# -- good clients -------------------------------------------------------------------------------
def finished_spans(n: int = 3, name: str = "good") -> list[ReadableSpan]:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("edge-tests")
    for i in range(n):
        with tracer.start_as_current_span(f"{name}-{i}"):
            pass
    return list(memory.get_finished_spans())


def sdk_grpc_export(port: int, n: int = 3, timeout: float = 10.0) -> bool:
    """One export by the OTel SDK's OTLP/gRPC exporter (its own retries included)."""
    exporter = GrpcSpanExporter(endpoint=f"127.0.0.1:{port}", insecure=True, timeout=timeout)
    try:
        return exporter.export(finished_spans(n)) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()


def sdk_http_export(port: int, n: int = 3, timeout: float = 10.0) -> bool:
    """One export by the OTel SDK's OTLP/HTTP exporter."""
    exporter = HttpSpanExporter(endpoint=f"http://127.0.0.1:{port}/v1/traces", timeout=timeout)
    try:
        return exporter.export(finished_spans(n)) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()


def wait_for(predicate: Any, within: float = 10.0, interval: float = 0.05) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(interval)
