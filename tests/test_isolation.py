"""No input stops a component: every processor, exporter and connector that is registered is fed
corrupt-but-framing-valid payloads (``tests/poison.py``: what the receivers' old framing check
let through and a full decode refuses; their edge check refuses them now), and the pipeline
still delivers the good requests after them, with every component still reporting ``ok``.

The payloads are pushed past the receiver's validation (``OTLPReceiver.push_payload``), so each
component meets them as it would if a receiver (or a third-party one) let them through.
New components are covered as soon as they are registered; one that needs options to run gets
them in ``OPTIONS``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from pipeline import ConsumeError, Kind, PermanentError, Signal
from pipeline.pdata import Logs, Metrics, Payload, Traces
from pipeline.pluginmanager import default_registry
from pipeline.service import Service
from tests.otlp_support import RecordingBackend, recording_backend
from tests.poison import (
    framing_valid,
    good_logs,
    good_metrics,
    good_traces,
    poison_logs,
    poison_metrics,
    poison_traces,
)
from tests.support import free_port, running_service, wait_until

# Options a component needs to run here (endpoints of the sinks are filled in per test).
OPTIONS: dict[str, dict[str, Any]] = {
    "batch": {"timeout": "10ms"},
    "memory_limiter": {"check_interval": "1s", "limit_mib": 16000},
    "workflow": {"wait_duration": "100ms"},
    "probabilistic_sampler": {"sampling_percentage": 100},
    # every attribute read (allowed, values checked), GenAI content rules on
    "redaction": {
        "allow_all_keys": True,
        "blocked_values": ["never-[0-9]+"],
        "summary": "debug",
        "genai_content": {"action": "mask"},
    },
    "tail_sampling": {
        "decision_wait": "100ms",
        "policies": [{"name": "all", "type": "always_sample"}],
    },
    "debug": {"verbosity": "detailed"},
    "spanmetrics": {"metrics_flush_interval": "100ms"},
    # GenAI events (the logs input) whose span does not come count at once
    "agentmetrics": {"metrics_flush_interval": "100ms", "genai_events": {"window": "0s"}},
    "dbmetrics": {"metrics_flush_interval": "100ms"},
    # the good metrics' series are watched, and a threshold every one of them crosses opens
    # an anomaly at the first evaluation: scores and records carry their services
    "anomaly": {
        "interval": "100ms",
        "open_after": "100ms",
        "rules": [{"metric": "requests", "type": "threshold", "above": 0, "value": "value"}],
    },
    # every item read and changed, so corrupt items are met
    "attributes": {"actions": [{"key": "checked", "action": "upsert", "value": "yes"}]},
    "resource": {"attributes": [{"key": "checked", "action": "upsert", "value": "yes"}]},
    "resourcedetection": {"detectors": ["system"]},
    "transform": {
        "trace_statements": [
            'set(span.attributes["checked"], Concat([span.name, "x"], "-"))',
            'set(spanevent.attributes["checked"], "yes")',
        ],
        "metric_statements": ['set(datapoint.attributes["checked"], metric.name)'],
        "log_statements": ['set(log.attributes["checked"], log.severity_text)'],
    },
    "filter": {
        "traces": {"span": ['span.name == "never"'], "spanevent": ['name == "never"']},
        "metrics": {"datapoint": ['attributes["route"] == "never"']},
        "logs": {"log_record": ['IsMatch(body, "never")']},
    },
}
GOOD_REQUESTS = 5


def _cases() -> list[Any]:
    cases = []
    for entry in default_registry().entries():
        factory = entry.factory
        if factory.kind in (Kind.PROCESSOR, Kind.EXPORTER):
            for signal in Signal:
                if factory.supports(signal):  # type: ignore[attr-defined]
                    cases.append(pytest.param(factory.kind, factory.type, signal, signal))
        elif factory.kind == Kind.CONNECTOR:
            for a in Signal:
                for b in Signal:
                    if factory.supports(a, b):  # type: ignore[attr-defined]
                        cases.append(pytest.param(factory.kind, factory.type, a, b))
    return [
        pytest.param(*c.values, id=f"{c.values[0]}-{c.values[1]}-{c.values[2]}-{c.values[3]}")
        for c in cases
    ]


# Span attributes a connector needs to derive anything from the good spans.
GOOD_SPAN_ATTRIBUTES: dict[str, dict[str, str]] = {
    "dbmetrics": {"db.system.name": "postgresql", "db.query.text": "SELECT 1 FROM t"},
}


def _good(i: int, signal: Signal, type_: str = "") -> Payload:
    if signal is Signal.TRACES:
        extra = GOOD_SPAN_ATTRIBUTES.get(type_)
        if extra:
            req = ExportTraceServiceRequest.FromString(good_traces(3, service=f"good-{i}"))
            for rs in req.resource_spans:
                for ss in rs.scope_spans:
                    for span in ss.spans:
                        for key, value in extra.items():
                            span.attributes.add(key=key).value.string_value = value
            return Traces(req.SerializeToString())
        return Traces(good_traces(3, service=f"good-{i}"))
    if signal is Signal.LOGS:
        return Logs(good_logs(3, service=f"good-{i}"))
    return Metrics(good_metrics(3, service=f"good-{i}"))


def _with_usage(payload: Payload) -> Payload:
    """Good GenAI events with token usage: what a connector deriving metrics from logs counts."""
    req = ExportLogsServiceRequest.FromString(payload.to_bytes())
    for rl in req.resource_logs:
        for sl in rl.scope_logs:
            for lr in sl.log_records:
                lr.attributes.add(key="gen_ai.usage.input_tokens").value.int_value = 10
                lr.attributes.add(key="gen_ai.usage.output_tokens").value.int_value = 2
    return Logs(req.SerializeToString())


def _bad(signal: Signal) -> list[Payload]:
    if signal is Signal.TRACES:
        return [Traces(data) for _, data in poison_traces()]
    if signal is Signal.LOGS:
        return [Logs(data) for _, data in poison_logs()]
    return [Metrics(data) for _, data in poison_metrics()]


def _services(requests: list[Any]) -> set[str]:
    out = set()
    for req in requests:
        groups = (
            getattr(req, "resource_spans", None)
            or getattr(req, "resource_metrics", None)
            or getattr(req, "resource_logs", [])
        )
        for group in groups:
            for kv in group.resource.attributes:
                if kv.key == "service.name":
                    out.add(kv.value.string_value)
    return out


class Sink:
    """An HTTP endpoint that answers 200 to every POST (Jaeger Thrift over HTTP, remote
    write): for exporters whose delivery is read from their own ``sent`` counter."""

    def __init__(self) -> None:
        self.port = free_port()
        self.posts = 0
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        await request.read()
        self.posts += 1
        return web.Response(status=200)

    async def start(self) -> None:
        app = web.Application(client_max_size=64 << 20)
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@contextlib.asynccontextmanager
async def sinks() -> AsyncIterator[tuple[RecordingBackend, Sink]]:
    sink = Sink()
    await sink.start()
    try:
        async with recording_backend() as backend:
            yield backend, sink
    finally:
        await sink.stop()


def _exporter_options(type_: str, backend: RecordingBackend, sink: Sink) -> dict[str, Any]:
    no_retry = {"retry_on_failure": {"enabled": False}}
    if type_ == "otlp":
        return {
            "endpoint": f"127.0.0.1:{backend.grpc_port}",
            "tls": {"insecure": True},
            **no_retry,
        }
    if type_ == "otlphttp":
        return {"endpoint": f"http://127.0.0.1:{backend.http_port}", **no_retry}
    if type_ == "jaeger":
        return {
            "protocol": "thrift_http",
            "endpoint": f"http://127.0.0.1:{sink.port}/api/traces",
            **no_retry,
        }
    if type_ == "prometheusremotewrite":
        return {"endpoint": f"http://127.0.0.1:{sink.port}/api/v1/write", **no_retry}
    if type_ == "prometheus":
        return {"endpoint": f"127.0.0.1:{free_port()}"}
    if type_ == "kafka":
        from tests.kafka_support import shared_broker

        return {"brokers": [shared_broker().bootstrap], **no_retry}
    if type_ == "loadbalancing":
        return {
            "protocol": {"otlp": {"tls": {"insecure": True}, **no_retry}},
            "resolver": {"static": {"hostnames": [f"127.0.0.1:{backend.grpc_port}"]}},
        }
    if type_ == "alertmanager":
        # every good record raises an alert (one per service: its label)
        return {
            "endpoint": f"http://127.0.0.1:{sink.port}",
            "resend_interval": "1h",
            "conditions": [
                {
                    "name": "GoodRecord",
                    "match": {"event_name": "gen_ai.client.inference.operation.details"},
                    "label_attributes": {"service": "service.name"},
                }
            ],
            **no_retry,
        }
    return OPTIONS.get(type_, {})


def _config(
    kind: Kind, type_: str, a: Signal, b: Signal, backend: RecordingBackend, sink: Sink
) -> str:
    """The pipeline around the component under test; everything ends at the recording
    backend (``otlp/out``) unless the component is the exporter."""
    out = _exporter_options("otlp", backend, sink)
    config: dict[str, Any] = {
        "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": f"127.0.0.1:{free_port()}"}}}},
        "processors": {},
        "exporters": {"otlp/out": out},
        "connectors": {},
        "service": {"pipelines": {}, "telemetry": {"metrics": {"level": "none"}}},
    }
    pipes = config["service"]["pipelines"]
    if kind == Kind.PROCESSOR:
        config["processors"][type_] = OPTIONS.get(type_, {})
        pipes[str(a)] = {"receivers": ["otlp"], "processors": [type_], "exporters": ["otlp/out"]}
    elif kind == Kind.EXPORTER:
        config["exporters"][type_] = _exporter_options(type_, backend, sink)
        pipes[str(a)] = {"receivers": ["otlp"], "exporters": [type_]}
    else:
        config["connectors"][type_] = OPTIONS.get(type_, {})
        pipes[f"{a}/in"] = {"receivers": ["otlp"], "exporters": [type_]}
        pipes[f"{b}/out"] = {"receivers": [type_], "exporters": ["otlp/out"]}
    if not config["connectors"]:
        del config["connectors"]
    return json.dumps(config)  # JSON is YAML


def _receiver(service: Service) -> Any:
    return next(n.component for n in service.graph.nodes if n.kind == Kind.RECEIVER)


def _sent(service: Service, type_: str, signal: Signal) -> float:
    return service.telemetry.value(
        f"otelcol_exporter_sent_{signal.item_name}_total", exporter=type_
    )


def _not_ok(service: Service) -> dict[str, str]:
    return {k: f"{v.status}: {v.error}" for k, v in service.statuses.items() if v.status != "ok"}


# exporters whose counts are not of the items they take: alertmanager counts the alerts its
# records raise (a record that matches no condition is neither sent nor dropped)
NOT_ITEM_COUNTING = {"alertmanager"}


def _flushes(service: Service) -> dict[str, float]:
    """Each aggregating connector's flushes so far (``otelcol_connector_aggregation_flushes``)."""
    out: dict[str, float] = {}
    for family in service.telemetry.registry.collect():
        if family.name == "otelcol_connector_aggregation_flushes":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    name = sample.labels["connector"]
                    out[name] = out.get(name, 0.0) + sample.value
    return out


def _settled(service: Service, flushes: dict[str, float]) -> bool:
    """Whether nothing the poison left is held any more: every processor passed on or dropped
    each item it took, every exporter's queue is empty, nothing in flight, and each item it
    took sent, failed or dropped, every aggregating connector flushed since ``flushes``
    (:func:`_flushes`)."""
    for (kind, name, signal), v in service.telemetry.component_samples().items():
        if not signal:
            continue
        taken = v.get("incoming", 0.0)
        if kind == "processor" and v.get("outgoing", 0.0) + v.get("dropped", 0.0) < taken:
            return False
        if kind == "exporter":
            if v.get("queue_size", 0.0):
                return False
            done = sum(v.get(k, 0.0) for k in ("sent", "send_failed", "dropped", "enqueue_failed"))
            if done < taken and name not in NOT_ITEM_COUNTING:
                return False
    for node in service.graph.nodes:  # nothing queued, batched or in flight in an exporter
        helper = getattr(node.component, "helper", None)
        if node.kind == Kind.EXPORTER and helper is not None:
            batcher = getattr(helper, "_batcher", None)
            if not helper._idle.is_set() or (batcher is not None and batcher.pending):
                return False
    now = _flushes(service)
    return all(now.get(name, 0.0) > n for name, n in flushes.items())


@pytest.mark.parametrize(("kind", "type_", "a", "b"), _cases())
async def test_component_survives_poison(kind: Kind, type_: str, a: Signal, b: Signal) -> None:
    async with sinks() as (backend, sink):
        config = _config(kind, type_, a, b, backend, sink)
        async with running_service(config) as service:
            # telemetry level none: the counters still exist in the service's registry
            receiver = _receiver(service)
            for payload in _bad(a):
                try:
                    await receiver.push_payload(a, payload)
                except ConsumeError:
                    pass  # refused: fine; anything else fails the test
            # what the components hold (batch, workflow, a queue, a connector's series) goes
            # out before the good requests come (else they would leave joined with it)
            flushes = _flushes(service)
            await wait_until(lambda: _not_ok(service) or _settled(service, flushes))
            assert not _not_ok(service), _not_ok(service)
            sent_before = _sent(service, type_, a) if kind == Kind.EXPORTER else 0.0
            received_before = len(backend.traces) + len(backend.metrics) + len(backend.logs)
            derives = kind == Kind.CONNECTOR and b is Signal.METRICS
            for i in range(GOOD_REQUESTS):
                good = _good(i, a, type_)
                await receiver.push_payload(
                    a, _with_usage(good) if derives and a is Signal.LOGS else good
                )
            good_items = GOOD_REQUESTS * 3
            if kind == Kind.EXPORTER and type_ not in ("otlp", "otlphttp"):
                await wait_until(lambda: _sent(service, type_, a) - sent_before >= good_items)
                assert _sent(service, type_, a) - sent_before == good_items
            elif derives and a in (Signal.TRACES, Signal.LOGS):
                # a connector deriving metrics: a flush after the good spans (or GenAI events)
                # reaches the backend
                await wait_until(
                    lambda: len(backend.traces) + len(backend.metrics) > received_before + 1
                )
            else:
                wanted = {f"good-{i}" for i in range(GOOD_REQUESTS)}
                await wait_until(
                    lambda: wanted <= _services([*backend.traces, *backend.metrics, *backend.logs])
                )
            assert not _not_ok(service), _not_ok(service)


def test_poison_corpus_is_framing_valid_undecodable_and_refused_at_the_edge() -> None:
    """The corpus is what it claims: framing-valid, refused by a full parse (but for the
    id-length cases), and refused by the receivers' edge check (all of it)."""
    for signal, cases, request, payload in (
        ("traces", poison_traces(), ExportTraceServiceRequest, Traces),
        ("metrics", poison_metrics(), ExportMetricsServiceRequest, Metrics),
        ("logs", poison_logs(), ExportLogsServiceRequest, Logs),
    ):
        for name, data in cases:
            assert framing_valid(data, signal), name
            if "id of" not in name:
                with pytest.raises(DecodeError):
                    request.FromString(data)
            with pytest.raises(PermanentError):
                payload(data).validate()


def test_every_signal_is_covered() -> None:
    """The registry's logs components are fed poison too (the cases follow the registry)."""
    ids = {p.id for p in _cases()}
    for case in (
        "processor-batch-logs-logs",
        "processor-memory_limiter-logs-logs",
        "exporter-otlp-logs-logs",
        "exporter-otlphttp-logs-logs",
        "exporter-debug-logs-logs",
        "connector-forward-logs-logs",
        "connector-agentmetrics-logs-metrics",
        "processor-workflow-logs-logs",
    ):
        assert case in ids
