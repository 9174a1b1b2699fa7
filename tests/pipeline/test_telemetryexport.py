"""``service.telemetry`` in the Collector's declarative form: ``metrics.readers`` (a pull
reader serves Prometheus text; a periodic reader pushes the otelcol_* metrics by OTLP over HTTP
or gRPC) and ``logs.processors`` (the gateway's log records pushed by OTLP)."""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.request

import pytest

from pipeline import ConfigErrors
from tests.otlp_support import any_value, recording_backend
from tests.support import config_from_text, free_port, running_service, wait_until


def _metric_names(requests: list[object]) -> set[str]:
    return {
        m.name
        for r in requests
        for rm in r.resource_metrics  # type: ignore[attr-defined]
        for sm in rm.scope_metrics
        for m in sm.metrics
    }


async def test_readers_and_log_processors(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pipeline")  # what `pipeline run` sets from the config
    pull_port = free_port()
    async with recording_backend() as backend:
        config = {
            "receivers": {
                "otlp": {"protocols": {"grpc": {"endpoint": f"127.0.0.1:{free_port()}"}}}
            },
            "exporters": {"debug": {}},
            "service": {
                "pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["debug"]}},
                "telemetry": {
                    "resource": {"deployment.environment": "test"},
                    "metrics": {
                        "readers": [
                            {"pull": {"exporter": {"prometheus": {"host": "127.0.0.1",
                                                                  "port": pull_port}}}},
                            {"periodic": {"interval": 200, "exporter": {"otlp": {
                                "protocol": "http/protobuf",
                                "endpoint": f"http://127.0.0.1:{backend.http_port}"}}}},
                            {"periodic": {"interval": 200, "exporter": {"otlp": {
                                "protocol": "grpc",
                                "endpoint": f"http://127.0.0.1:{backend.grpc_port}"}}}},
                        ]
                    },
                    "logs": {"processors": [{"batch": {"schedule_delay": 100, "exporter": {
                        "otlp": {"protocol": "http/protobuf",
                                 "endpoint": f"http://127.0.0.1:{backend.http_port}"}}}}]},
                },
            },
        }  # fmt: skip
        async with running_service(json.dumps(config)):
            await wait_until(
                lambda: bool(backend.grpc_metadata and backend.http_headers and backend.logs),
                within=10,
            )
            text = await asyncio.to_thread(_get, f"http://127.0.0.1:{pull_port}/metrics")
        assert "otelcol_process_uptime" in text or "otelcol_" in text
        names = _metric_names(backend.metrics)
        assert any(n.startswith("otelcol_") for n in names), names
        first = backend.metrics[0].resource_metrics[0]
        resource = {kv.key: any_value(kv.value) for kv in first.resource.attributes}
        assert resource["service.name"] == "pipeline-gateway"
        assert resource["deployment.environment"] == "test"
        bodies = [
            any_value(lr.body)
            for r in backend.logs
            for rl in r.resource_logs
            for sl in rl.scope_logs
            for lr in sl.log_records
        ]
        assert any("component started" in str(b) for b in bodies), bodies


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as r:
        return str(r.read().decode())


def test_a_reader_is_pull_or_periodic() -> None:
    with pytest.raises(ConfigErrors, match="either 'pull' or 'periodic'"):
        config_from_text(
            "receivers: {otlp: {protocols: {grpc: {endpoint: '127.0.0.1:0'}}}}\n"
            "exporters: {debug: }\n"
            "service:\n  pipelines: {traces: {receivers: [otlp], exporters: [debug]}}\n"
            "  telemetry: {metrics: {readers: [{}]}}\n"
        )
