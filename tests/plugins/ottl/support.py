"""Building requests from plain dicts, running them through a gateway (OTLP in, the processor
under test, OTLP out to a recording backend) and reading the result back as plain dicts."""

from __future__ import annotations

import json
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from pipeline import Kind, Signal
from pipeline.ottl.values import set_any
from pipeline.pdata import Logs, Metrics, Payload, Traces
from tests.otlp_support import any_value, recording_backend
from tests.support import free_port, running_service, wait_until

TRACE_ID = bytes(range(16))


def _attrs(target: Any, values: dict[str, Any]) -> None:
    for k, v in values.items():
        set_any(target.add(key=k).value, v)


def traces(spans: list[dict[str, Any]], resource: dict[str, Any] | None = None,
           scope: str = "lib") -> Traces:  # fmt: skip
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    _attrs(rs.resource.attributes, resource or {"service.name": "svc"})
    ss = rs.scope_spans.add()
    ss.scope.name = scope
    for i, spec in enumerate(spans):
        span = ss.spans.add(
            trace_id=TRACE_ID,
            span_id=bytes([i + 1] * 8),
            name=spec.get("name", f"span-{i}"),
            kind=spec.get("kind", 2),
            start_time_unix_nano=spec.get("start", 1_700_000_000_000_000_000),
            end_time_unix_nano=spec.get("end", 1_700_000_000_500_000_000),
        )
        _attrs(span.attributes, spec.get("attributes", {}))
        for ev in spec.get("events", []):
            e = span.events.add(name=ev["name"], time_unix_nano=1_700_000_000_100_000_000)
            _attrs(e.attributes, ev.get("attributes", {}))
    return Traces(req.SerializeToString())


def logs(records: list[dict[str, Any]], resource: dict[str, Any] | None = None) -> Logs:
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    _attrs(rl.resource.attributes, resource or {"service.name": "svc"})
    sl = rl.scope_logs.add()
    for spec in records:
        lr = sl.log_records.add(
            severity_text=spec.get("severity_text", ""),
            severity_number=spec.get("severity_number", 0),
            time_unix_nano=1_700_000_000_000_000_000,
        )
        if "body" in spec:
            set_any(lr.body, spec["body"])
        _attrs(lr.attributes, spec.get("attributes", {}))
    return Logs(req.SerializeToString())


def metrics(specs: list[dict[str, Any]], resource: dict[str, Any] | None = None) -> Metrics:
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    _attrs(rm.resource.attributes, resource or {"service.name": "svc"})
    sm = rm.scope_metrics.add()
    for spec in specs:
        m = sm.metrics.add(name=spec["name"], description=spec.get("description", ""))
        kind = spec.get("type", "sum")
        data = getattr(m, kind)
        if kind == "sum":
            data.aggregation_temporality = 2
            data.is_monotonic = True
        for point in spec.get("points", [{}]):
            if kind == "summary" or kind == "histogram":
                dp = data.data_points.add(count=1, sum=1.0)
            else:
                dp = data.data_points.add(as_double=point.get("value", 1.0))
            _attrs(dp.attributes, point.get("attributes", {}))
    return Metrics(req.SerializeToString())


def plain(signal: Signal, requests: list[Any]) -> list[dict[str, Any]]:
    """Every item received, as a dict: name/body, attributes, resource attributes, ..."""
    out: list[dict[str, Any]] = []
    for req in requests:
        if signal is Signal.TRACES:
            for rs in req.resource_spans:
                res = {kv.key: any_value(kv.value) for kv in rs.resource.attributes}
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        out.append({
                            "name": s.name,
                            "attributes": {kv.key: any_value(kv.value) for kv in s.attributes},
                            "resource": res,
                            "events": [e.name for e in s.events],
                            "status": s.status.code,
                        })  # fmt: skip
        elif signal is Signal.LOGS:
            for rl in req.resource_logs:
                res = {kv.key: any_value(kv.value) for kv in rl.resource.attributes}
                for sl in rl.scope_logs:
                    for r in sl.log_records:
                        out.append({
                            "body": any_value(r.body),
                            "severity_text": r.severity_text,
                            "severity_number": r.severity_number,
                            "attributes": {kv.key: any_value(kv.value) for kv in r.attributes},
                            "resource": res,
                        })  # fmt: skip
        else:
            for rm in req.resource_metrics:
                res = {kv.key: any_value(kv.value) for kv in rm.resource.attributes}
                for sm in rm.scope_metrics:
                    for m in sm.metrics:
                        kind = m.WhichOneof("data")
                        points = getattr(m, kind).data_points if kind else []
                        out.append({
                            "name": m.name,
                            "description": m.description,
                            "type": kind,
                            "points": [
                                {kv.key: any_value(kv.value) for kv in p.attributes}
                                for p in points
                            ],
                            "resource": res,
                        })  # fmt: skip
    return out


async def through_gateway(
    processors: dict[str, Any], signal: Signal, payload: Payload, expect_nothing: bool = False
) -> list[dict[str, Any]]:
    """``payload`` through ``otlp -> processors (in order) -> otlp`` to a recording backend."""
    async with recording_backend() as backend:
        config = {
            "receivers": {
                "otlp": {"protocols": {"grpc": {"endpoint": f"127.0.0.1:{free_port()}"}}}
            },
            "processors": processors,
            "exporters": {
                "otlp": {
                    "endpoint": f"127.0.0.1:{backend.grpc_port}",
                    "tls": {"insecure": True},
                    "retry_on_failure": {"enabled": False},
                }
            },
            "service": {
                "telemetry": {"metrics": {"level": "none"}},
                "pipelines": {
                    str(signal): {
                        "receivers": ["otlp"],
                        "processors": list(processors),
                        "exporters": ["otlp"],
                    }
                },
            },
        }
        async with running_service(json.dumps(config)) as service:
            receiver = next(n.component for n in service.graph.nodes if n.kind == Kind.RECEIVER)
            await receiver.push_payload(signal, payload)
            got = {Signal.TRACES: backend.traces, Signal.LOGS: backend.logs,
                   Signal.METRICS: backend.metrics}[signal]  # fmt: skip
            if expect_nothing:
                import asyncio

                await asyncio.sleep(0.3)
                assert not got
                return []
            await wait_until(lambda: bool(got))
            return plain(signal, got)
