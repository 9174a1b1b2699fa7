"""Plugin discovery registers every built-in component without importing its implementation:
the gateway loads only what its configuration creates."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support import ROOT

# Modules that only the components using them may load (big extensions and tables).
IMPLEMENTATION_MODULES = [
    "aiohttp",
    "cramjam",
    "grpc",
    "thrift",
    "plugins.agentmetricsconnector.connector",
    "plugins.healthcheckextension.extension",
    "plugins.healthcheckreceiver.checks",
    "plugins.healthcheckreceiver.receiver",
    "plugins.hostmetricsreceiver.receiver",
    "plugins.jaegerexporter.exporter",
    "plugins.jaegerreceiver.receiver",
    "plugins.otlpexporter.exporter",
    "plugins.otlpexporter.sender",
    "plugins.otlphttpexporter.sender",
    "plugins.prometheusexporter.exporter",
    "plugins.prometheusreceiver.receiver",
    "plugins.prometheusremotewriteexporter.exporter",
    "plugins.spanmetricsconnector.connector",
    "plugins.workflowprocessor.processor",
]


def _loaded_after(code: str) -> set[str]:
    script = f"import json, sys\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", script], check=True, capture_output=True, text=True, cwd=ROOT
    )
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_registering_imports_no_implementation() -> None:
    loaded = _loaded_after(
        "import pipeline.cli, pipeline.service\n"  # the own-metrics endpoint needs no aiohttp
        "from pipeline.pluginmanager import build_registry\n"
        "registry = build_registry()\n"
        "assert registry.get(__import__('pipeline').Kind.PROCESSOR, 'workflow') is not None"
    )
    assert not loaded & set(IMPLEMENTATION_MODULES)


def test_components_are_importable_from_their_packages() -> None:
    from plugins.healthcheckextension import HealthCheckExtension
    from plugins.healthcheckextension.extension import HealthCheckExtension as direct_ext
    from plugins.healthcheckreceiver import CheckResult, HealthCheckReceiver, Status
    from plugins.healthcheckreceiver.checks import CheckResult as direct_result
    from plugins.healthcheckreceiver.checks import Status as direct_status
    from plugins.healthcheckreceiver.receiver import HealthCheckReceiver as direct_recv
    from plugins.otlpexporter import OTLPExporter, OTLPGrpcSender
    from plugins.otlpexporter.exporter import OTLPExporter as direct_exporter
    from plugins.otlpexporter.sender import OTLPGrpcSender as direct_grpc
    from plugins.otlphttpexporter import OTLPHttpSender
    from plugins.otlphttpexporter.sender import OTLPHttpSender as direct_http

    assert HealthCheckExtension is direct_ext
    assert (CheckResult, HealthCheckReceiver, Status) == (direct_result, direct_recv, direct_status)
    assert (OTLPExporter, OTLPGrpcSender, OTLPHttpSender) == (
        direct_exporter,
        direct_grpc,
        direct_http,
    )


def test_unknown_package_attribute_is_an_attribute_error() -> None:
    import plugins.otlpexporter

    with pytest.raises(AttributeError, match="NoSuchThing"):
        _ = plugins.otlpexporter.NoSuchThing  # type: ignore[attr-defined]


def test_creating_a_component_loads_its_implementation() -> None:
    loaded = _loaded_after(
        "from pipeline import Kind, Signal\n"
        "from pipeline.pluginmanager import build_registry\n"
        "from pipeline.testing import create_settings\n"
        "factory = build_registry().get(Kind.EXPORTER, 'prometheusremotewrite')\n"
        "settings = create_settings(Kind.EXPORTER, 'prometheusremotewrite')\n"
        "factory.create(Signal.METRICS, settings, factory.create_default_config())"
    )
    assert "plugins.prometheusremotewriteexporter.exporter" in loaded
    assert "cramjam" in loaded
