"""Helpers for the agent component tests: hand-built OTLP spans and a capturing consumer."""

from __future__ import annotations

import logging
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from pipeline import ComponentID, CreateSettings, Kind, Payload, Traces
from pipeline.telemetry import SelfTelemetry, component_logger


def tid(n: int) -> bytes:
    return n.to_bytes(16, "big")


def sid(n: int) -> bytes:
    return n.to_bytes(8, "big")


def kv(key: str, value: Any) -> KeyValue:
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    if isinstance(value, float):
        return KeyValue(key=key, value=AnyValue(double_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=value))


def span(
    trace: int,
    span_id: int,
    parent: int | None,
    name: str,
    *,
    kind: int = Span.SPAN_KIND_INTERNAL,
    attrs: dict[str, Any] | None = None,
    error: str | None = None,
    start: float = 1_700_000_000.0,
    duration: float = 0.1,
) -> Span:
    s = Span(
        trace_id=tid(trace),
        span_id=sid(span_id),
        parent_span_id=sid(parent) if parent is not None else b"",
        name=name,
        kind=kind,  # type: ignore[arg-type]
        start_time_unix_nano=int(start * 1e9),
        end_time_unix_nano=int((start + duration) * 1e9),
        attributes=[kv(k, v) for k, v in (attrs or {}).items()],
    )
    if error is not None:
        s.status.CopyFrom(Status(code=Status.STATUS_CODE_ERROR, message=error))
    return s


def request(spans: list[Span], service: str = "agent-svc") -> Traces:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.append(kv("service.name", service))
    ss = rs.scope_spans.add()
    ss.scope.name = "agent.test"
    ss.spans.extend(spans)
    return Traces(req.SerializeToString())


def attrs_of(s: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for a in s.attributes:
        kind = a.value.WhichOneof("value")
        out[a.key] = getattr(a.value, kind) if kind else None
    return out


class Capture:
    """An in-test consumer that keeps what reaches it."""

    mutates_data = False

    def __init__(self) -> None:
        self.payloads: list[Payload] = []

    async def consume(self, data: Payload) -> None:
        self.payloads.append(Traces(data.to_bytes()) if isinstance(data, Traces) else data)

    def spans(self) -> list[tuple[Any, Any]]:
        """(resource, span) of everything captured."""
        out = []
        for p in self.payloads:
            for rs in p.message().resource_spans:
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        out.append((rs.resource, s))
        return out


def settings(kind: Kind, name: str, telemetry: SelfTelemetry | None = None) -> CreateSettings:
    telemetry = telemetry or SelfTelemetry()
    cid = ComponentID.parse(name)
    logger = component_logger(kind, cid)
    logger.logger.setLevel(logging.INFO)
    return CreateSettings(
        id=cid, kind=kind, logger=logger, telemetry=telemetry.component(kind, cid)
    )
