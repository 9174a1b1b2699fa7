"""The Collector's newer snake_case type names (``otlp_grpc``, ``otlp_http``, ``host_metrics``,
``span_metrics``...) name our components too, so configs written for current releases run."""

from __future__ import annotations

import pytest

from pipeline import ComponentConfig, ConfigErrors, Kind, ProcessorFactory, Signal, Stability
from pipeline.registry import RegistrationError, Registry
from tests.support import config_from_text


def test_newer_names_resolve_to_our_components() -> None:
    config = config_from_text(
        """\
receivers:
  otlp: {protocols: {grpc: {endpoint: "127.0.0.1:0"}}}
  host_metrics: {scrapers: {load: }}
exporters:
  otlp_grpc/jaeger: {endpoint: "127.0.0.1:4317", tls: {insecure: true}}
  otlp_http/prometheus: {endpoint: "http://127.0.0.1:9090/api/v1/otlp"}
connectors:
  span_metrics:
service:
  pipelines:
    traces: {receivers: [otlp], exporters: [otlp_grpc/jaeger, span_metrics]}
    metrics: {receivers: [otlp, host_metrics, span_metrics], exporters: [otlp_http/prometheus]}
"""
    )
    assert config.factory(Kind.EXPORTER, next(iter(config.components[Kind.EXPORTER]))).type in (
        "otlp",
        "otlphttp",
    )
    types = {c.type for c in config.components[Kind.RECEIVER]}
    assert types == {"otlp", "host_metrics"}


def test_a_misspelt_newer_name_gets_a_hint() -> None:
    with pytest.raises(ConfigErrors, match="did you mean 'host_metrics'"):
        config_from_text(
            "receivers: {host_metric: {scrapers: {load: }}}\nexporters: {debug: }\n"
            "service: {pipelines: {metrics: {receivers: [host_metric], exporters: [debug]}}}\n"
        )


def test_an_alias_cannot_shadow_a_type() -> None:
    class A(ProcessorFactory):
        type = "a"
        config_class = ComponentConfig
        stability = {Signal.TRACES: Stability.ALPHA}
        aliases = ("b",)

    class B(ProcessorFactory):
        type = "b"
        config_class = ComponentConfig
        stability = {Signal.TRACES: Stability.ALPHA}

    registry = Registry()
    registry.register(A())
    with pytest.raises(RegistrationError, match="already an alias"):
        registry.register(B())
