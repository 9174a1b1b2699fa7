"""Third-party plugins: the sample plugin in tests/sample_plugin is installed as its own
distribution (scripts/setup.sh does it) and found through the entry-point group."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from pipeline import hookspecs
from pipeline.pluginmanager import DISABLE_AUTOLOAD_ENV, build_registry, create_plugin_manager
from pipeline.registry import RegistrationError, Registry
from tests.support import ROOT, free_port, running_service


def components(env: dict[str, str] | None = None) -> list[dict[str, object]]:
    out = subprocess.run(
        [sys.executable, "-m", "pipeline", "components", "--json"],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )
    return list(json.loads(out.stdout))


def test_plugin_is_listed_with_its_distribution() -> None:
    rows = {(r["kind"], r["type"]): r for r in components()}
    tag = rows[("processor", "resource_tag")]
    assert tag["distribution"] == "pipeline-sample-plugin"
    assert tag["plugin"] == "sample"
    assert tag["signals"] == {"traces": "alpha", "metrics": "alpha"}
    assert rows[("exporter", "span_sink")]["signals"] == {"traces": "development"}
    # built-ins come through the same hooks, named by our distribution
    assert rows[("receiver", "otlp")]["distribution"] == "pipeline-gateway"
    assert rows[("processor", "batch")]["plugin"] == "builtin.batchprocessor"
    # the logs signal: the components that carry it say so
    for kind, type_ in [
        ("receiver", "otlp"),
        ("processor", "batch"),
        ("processor", "memory_limiter"),
        ("exporter", "otlp"),
        ("exporter", "otlphttp"),
        ("exporter", "debug"),
    ]:
        assert "logs" in rows[(kind, type_)]["signals"], (kind, type_)  # type: ignore[operator]
    assert "logs_to_logs" in rows[("connector", "forward")]["signals"]  # type: ignore[operator]
    # the agent components where the GenAI conventions use events (log records)
    assert "logs" in rows[("processor", "workflow")]["signals"]  # type: ignore[operator]
    assert "logs_to_metrics" in rows[("connector", "agentmetrics")]["signals"]  # type: ignore[operator]
    assert "logs" not in rows[("processor", "tail_sampling")]["signals"]  # type: ignore[operator]


def test_table_output() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "pipeline", "components"],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    ).stdout
    assert out.splitlines()[0].split() == ["KIND", "TYPE", "SIGNALS", "(STABILITY)", "DISTRIBUTION"]
    assert any(line.split()[:2] == ["processor", "resource_tag"] for line in out.splitlines())


def test_autoload_can_be_turned_off() -> None:
    types = {r["type"] for r in components({DISABLE_AUTOLOAD_ENV: "1"})}
    assert "resource_tag" not in types and "otlp" in types
    # ...and a plugin module can still be named explicitly
    types = {
        r["type"]
        for r in components(
            {DISABLE_AUTOLOAD_ENV: "1", "PIPELINE_PLUGINS": "pipeline_sample_plugin"}
        )
    }
    assert "resource_tag" in types


async def test_plugin_works_from_yaml(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pipeline")
    port = free_port()
    text = f"""\
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{port}
processors:
  resource_tag:
    key: team
    value: agents
exporters:
  debug:
    verbosity: detailed
  span_sink:
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces:
      receivers: [otlp]
      processors: [resource_tag]
      exporters: [debug, span_sink]
"""

    def send() -> None:
        provider = TracerProvider()
        provider.add_span_processor(
            SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"127.0.0.1:{port}", insecure=True))
        )
        with provider.get_tracer("t").start_as_current_span("hello"):
            pass
        provider.shutdown()

    async with running_service(text, tmp_path) as service:
        await asyncio.to_thread(send)
        assert (
            service.telemetry.value("otelcol_exporter_sent_spans_total", exporter="span_sink") == 1
        )
    text_out = "\n".join(r.getMessage() for r in caplog.records)
    assert "     -> team: Str(agents)" in text_out
    assert any(
        r.__dict__.get("spans") == 1 and r.getMessage() == "span sink total" for r in caplog.records
    )


def test_duplicate_type_names_both_plugins() -> None:
    pm = create_plugin_manager(autoload=False)

    class Clash:
        @hookspecs.hookimpl
        def register_components(self, registry: Registry) -> None:
            from plugins.batchprocessor import BatchProcessorFactory

            registry.register(BatchProcessorFactory())

    pm.register(Clash(), name="clash")
    with pytest.raises(RegistrationError, match="processor type 'batch' is registered twice"):
        build_registry(pm)


async def test_plugin_adds_an_ottl_function() -> None:
    """``register_ottl_functions``: the sample plugin's ``Reverse`` works in a transform
    statement like a standard converter."""
    from pipeline import Signal
    from tests.plugins.ottl.support import through_gateway, traces

    out = await through_gateway(
        {"transform": {"trace_statements": ['set(span.attributes["r"], Reverse(span.name))']}},
        Signal.TRACES,
        traces([{"name": "abc"}]),
    )
    assert out[0]["attributes"] == {"r": "cba"}
