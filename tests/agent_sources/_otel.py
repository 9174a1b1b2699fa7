"""Capturing what a library exports with the OpenTelemetry SDK, as OTLP requests."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from plugins.otlpreceiver import otlpjson

CORPUS = Path(__file__).resolve().parent.parent / "data" / "agent_sources"
MAX_TEXT = 512  # long attribute values (prompts, messages) are cut to keep the corpus small
SPANS_FILE_ENV = "AGENT_SOURCES_SPANS_FILE"


def provider(service: str, exporter: SpanExporter) -> TracerProvider:
    tp = TracerProvider(resource=Resource.create({"service.name": service}))
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    return tp


@contextmanager
def capture(service: str) -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    """A tracer provider exporting to memory (``service.name`` = ``service``)."""
    exporter = InMemorySpanExporter()
    tp = provider(service, exporter)
    try:
        yield tp, exporter
    finally:
        tp.shutdown()


_GLOBAL: InMemorySpanExporter | None = None


def global_capture(service: str) -> InMemorySpanExporter:
    """For libraries that trace through the global tracer provider (the mcp SDK, a2a-sdk):
    installs it once per process, exporting to memory, and returns the (cleared) exporter."""
    global _GLOBAL
    if _GLOBAL is None:
        from opentelemetry import trace

        _GLOBAL = InMemorySpanExporter()
        trace.set_tracer_provider(provider(service, _GLOBAL))
    _GLOBAL.clear()
    return _GLOBAL


def to_request(spans: Sequence[ReadableSpan]) -> ExportTraceServiceRequest:
    return encode_spans(spans)


class FileSpanExporter(SpanExporter):
    """Appends each exported batch to a file, one hex-encoded ``ExportTraceServiceRequest`` per
    line (for a server subprocess, whose spans the driver merges after it ended)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        data = encode_spans(spans).SerializeToString().hex()
        with open(self.path, "a", encoding="ascii") as f:
            f.write(data + "\n")
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


def install_file_tracing(service: str) -> TracerProvider | None:
    """In a server subprocess: the global tracer provider writes to the file named by
    ``AGENT_SOURCES_SPANS_FILE`` (nothing when unset)."""
    path = os.environ.get(SPANS_FILE_ENV)
    if not path:
        return None
    from opentelemetry import trace

    tp = provider(service, FileSpanExporter(path))
    trace.set_tracer_provider(tp)
    return tp


def read_span_file(path: str | Path) -> list[ExportTraceServiceRequest]:
    out = []
    if os.path.exists(path):
        for line in Path(path).read_text().splitlines():
            if line.strip():
                out.append(ExportTraceServiceRequest.FromString(bytes.fromhex(line)))
    return out


def merge(requests: Iterable[ExportTraceServiceRequest]) -> ExportTraceServiceRequest:
    merged = ExportTraceServiceRequest()
    for r in requests:
        merged.resource_spans.extend(r.resource_spans)
    return _trim(merged)


def _trim(request: ExportTraceServiceRequest) -> ExportTraceServiceRequest:
    for rs in request.resource_spans:
        for ss in rs.scope_spans:
            for span in ss.spans:
                for kv in span.attributes:
                    if len(kv.value.string_value) > MAX_TEXT:
                        kv.value.string_value = kv.value.string_value[:MAX_TEXT] + "…"
                for ev in span.events:
                    for kv in ev.attributes:
                        if len(kv.value.string_value) > MAX_TEXT:
                            kv.value.string_value = kv.value.string_value[:MAX_TEXT] + "…"
    return request


def write_corpus(source: str, scenario: str, request: ExportTraceServiceRequest) -> Path:
    path = CORPUS / source / f"{scenario}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = otlpjson.to_dict(request)
    path.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
    return path


def read_corpus(path: str | Path) -> ExportTraceServiceRequest:
    return otlpjson.parse(Path(path).read_bytes(), ExportTraceServiceRequest())  # type: ignore[return-value]


def spans_of(request: ExportTraceServiceRequest) -> list[tuple[str, Any]]:
    """``(scope name, span)`` of every span of a request."""
    return [
        (ss.scope.name, span)
        for rs in request.resource_spans
        for ss in rs.scope_spans
        for span in ss.spans
    ]
