"""The two-tier example configs (docs/scaling.md) are valid as shipped."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline import Kind
from pipeline.config import load_config
from pipeline.pluginmanager import default_registry

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize(
    ("name", "exporter", "receiver"),
    [
        ("tier1-loadbalancing.yaml", "loadbalancing", "otlp"),
        ("tier1-kafka.yaml", "kafka", "otlp"),
        ("tier2-kafka.yaml", "otlp", "kafka"),
    ],
)
def test_two_tier_configs_are_valid(
    name: str, exporter: str, receiver: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTLP_EXPORTER_ENDPOINT", "backend.example:4317")
    config = load_config([str(CONFIGS / name)], default_registry())
    assert exporter in {c.type for c in config.components[Kind.EXPORTER]}
    assert receiver in {c.type for c in config.components[Kind.RECEIVER]}


COLLECTOR_LOADBALANCING = """
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: localhost:{port}

processors:

exporters:
  loadbalancing:
    routing_key: "service"
    protocol:
      otlp:
        # all options from the OTLP exporter are supported
        # except the endpoint
        timeout: 1s
        tls:
          insecure: true
    resolver:
      static:
        hostnames:
        - backend-1:4317
        - backend-2:4317
        - backend-3:4317
        - backend-4:4317
  loadbalancing/dns:
    protocol:
      otlp: {{}}
    resolver:
      dns:
        hostname: otelcol-headless.observability.svc.cluster.local
        port: 4317

service:
  pipelines:
    traces:
      receivers:
        - otlp
      processors: []
      exporters:
        - loadbalancing
    logs:
      receivers:
        - otlp
      processors: []
      exporters:
        - loadbalancing/dns
"""

COLLECTOR_KAFKA = """
receivers:
  kafka:
    protocol_version: 2.0.0
  kafka/logs:
    brokers: [localhost:9092]
    topic: otlp_logs
    encoding: otlp_proto
    group_id: otel-collector
    client_id: otel-collector
    initial_offset: latest
    autocommit:
      enable: true
      interval: 1s
    message_marking:
      after: true
      on_error: true

exporters:
  kafka:
    brokers:
      - localhost:9092
    protocol_version: 2.0.0
    partition_traces_by_id: true
    producer:
      max_message_bytes: 1000000
      required_acks: 1
      compression: none
      flush_max_messages: 0
    auth:
      sasl:
        username: collector
        password: secret
        mechanism: SCRAM-SHA-512
      tls:
        insecure: false
        ca_file: /etc/ssl/ca.pem

service:
  pipelines:
    traces:
      receivers: [kafka]
      exporters: [kafka]
    logs:
      receivers: [kafka/logs]
      exporters: [kafka]
"""


@pytest.mark.parametrize("text", [COLLECTOR_LOADBALANCING, COLLECTOR_KAFKA])
def test_collector_yaml_loads_unchanged(text: str, tmp_path: Path) -> None:
    from tests.support import config_from_text, free_port

    config = config_from_text(text.format(port=free_port()) if "{port}" in text else text, tmp_path)
    assert config.components[Kind.EXPORTER]
