"""The OpenTelemetry SDK set up for one process of a scenario: spans exported over OTLP/HTTP to
``OTLP_ENDPOINT`` (a gateway), or kept in memory and written as OTLP/JSON to ``SPANS_OUT``."""

from __future__ import annotations

import atexit
import os

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


def setup(service_name: str) -> TracerProvider:
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    endpoint = os.environ.get("OTLP_ENDPOINT")
    if endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces"))
        )
        atexit.register(provider.shutdown)
    out = os.environ.get("SPANS_OUT")
    if out:
        memory = InMemorySpanExporter()
        provider.add_span_processor(SimpleSpanProcessor(memory))

        def dump() -> None:
            from google.protobuf.json_format import MessageToJson
            from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

            with open(out, "w") as f:
                f.write(MessageToJson(encode_spans(memory.get_finished_spans()), indent=1))

        atexit.register(dump)
    trace.set_tracer_provider(provider)
    return provider
