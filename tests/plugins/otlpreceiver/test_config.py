"""``protocols.http`` of the ``otlp`` receiver: the Collector's option names and defaults."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline import ComponentID, CreateSettings, Kind, Signal
from pipeline.telemetry import SelfTelemetry, component_logger
from plugins.memorylimiterprocessor import MemoryLimiterProcessorFactory
from plugins.otlpexporter import OTLPExporterFactory
from plugins.otlphttpexporter import OTLPHTTPExporterFactory
from plugins.otlpreceiver import OTLPReceiverConfig, OTLPReceiverFactory


def test_http_defaults_are_the_collectors() -> None:
    cfg = OTLPReceiverConfig.model_validate({"protocols": {"http": None}})
    http = cfg.protocols.http
    assert http is not None
    assert http.endpoint == "localhost:4318"
    assert (http.traces_url_path, http.metrics_url_path, http.logs_url_path) == (
        "/v1/traces",
        "/v1/metrics",
        "/v1/logs",
    )
    assert http.max_request_body_size == 20 * 1024 * 1024
    assert http.max_json_values == 1_000_000
    assert http.cors is None and http.tls is None
    assert [e.path for e in cfg.listen_endpoints()] == ["protocols.http.endpoint"]


def test_default_config_serves_both_protocols() -> None:
    cfg = OTLPReceiverFactory().create_default_config()
    assert cfg.protocols.grpc is not None and cfg.protocols.http is not None


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"traces_url_path": "v1/traces"}, "should match pattern"),
        ({"traces_url_path": "/x", "metrics_url_path": "/x"}, "must differ"),
        ({"logs_url_path": "/v1/metrics"}, "metrics_url_path and logs_url_path must differ"),
        ({"logs_url_path": "logs"}, "should match pattern"),
        ({"cors": {"allowed_origin": ["*"]}}, "Extra inputs are not permitted"),
        ({"max_request_body_size": 0}, "greater than or equal to 1"),
        ({"max_json_values": 0}, "greater than or equal to 1"),
    ],
)
def test_http_config_errors(section: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        OTLPReceiverConfig.model_validate({"protocols": {"http": section}})


@pytest.mark.parametrize(
    "factory",
    [OTLPExporterFactory(), OTLPHTTPExporterFactory(), MemoryLimiterProcessorFactory()],
)
async def test_factories_create_every_signal_from_their_default_config(factory: Any) -> None:
    tel = SelfTelemetry()
    f = factory
    cid = ComponentID(f.type)
    settings = CreateSettings(
        id=cid,
        kind=f.kind,
        logger=component_logger(f.kind, cid),
        telemetry=tel.component(f.kind, cid),
    )
    config = f.create_default_config()
    for signal in Signal:
        if f.kind is Kind.EXPORTER:
            component = f.create(signal, settings, config)
        else:

            class Sink:
                mutates_data = False

                async def consume(self, data: object) -> None:
                    return None

            component = f.create(signal, settings, config, Sink())
        assert component.mutates_data is False
        await component.shutdown()  # safe before start
        await component.shutdown()  # and twice


def test_edge_limits_defaults() -> None:
    cfg = OTLPReceiverConfig.model_validate({"protocols": {"grpc": None, "http": None}})
    grpc, http = cfg.protocols.grpc, cfg.protocols.http
    assert grpc is not None and http is not None
    assert (grpc.max_connections, grpc.handshake_timeout) == (4096, 10.0)
    assert (grpc.read_header_timeout, grpc.read_timeout, grpc.write_timeout) == (10.0, 30.0, 30.0)
    assert (grpc.max_header_list_size, grpc.max_stream_resets_per_second) == (16384, 100.0)
    params, policy = grpc.keepalive.server_parameters, grpc.keepalive.enforcement_policy
    assert (params.max_connection_idle, params.max_connection_age) == (0.0, 0.0)
    assert (params.time, params.timeout) == (7200.0, 20.0)
    assert (policy.min_time, policy.permit_without_stream) == (300.0, False)
    assert (http.max_connections, http.handshake_timeout) == (4096, 10.0)
    assert (http.read_timeout, http.read_header_timeout) == (30.0, 10.0)
    assert (http.write_timeout, http.idle_timeout) == (30.0, 60.0)


# keepalive as the Collector's configgrpc writes it
COLLECTOR_KEEPALIVE = {
    "server_parameters": {
        "max_connection_idle": "11s",
        "max_connection_age": "12s",
        "max_connection_age_grace": "13s",
        "time": "30s",
        "timeout": "5s",
    },
    "enforcement_policy": {"min_time": "10s", "permit_without_stream": True},
}


def test_collector_keepalive_yaml_runs_unchanged() -> None:
    cfg = OTLPReceiverConfig.model_validate(
        {
            "protocols": {
                "grpc": {
                    "max_concurrent_streams": 100,
                    "read_buffer_size": 524288,
                    "write_buffer_size": 0,
                    "keepalive": COLLECTOR_KEEPALIVE,
                },
                "http": {
                    "read_timeout": "10s",
                    "read_header_timeout": "5s",
                    "write_timeout": "20s",
                    "idle_timeout": "2m",
                },
            }
        }
    )
    assert cfg.protocols.grpc is not None and cfg.protocols.http is not None
    assert cfg.protocols.grpc.keepalive.server_parameters.max_connection_age_grace == 13.0
    assert cfg.protocols.http.idle_timeout == 120.0


@pytest.mark.parametrize(
    ("option", "path", "message"),
    [
        ("max_connections: 0", "grpc.max_connections", "greater than or equal to 1"),
        ("read_timeout: 30", "grpc.read_timeout", "a number has no unit"),
        (
            "keepalive: {server_parameters: {time: -1s}}",
            "grpc.keepalive.server_parameters.time",
            "not negative",
        ),
        ("max_header_list_size: 100", "grpc.max_header_list_size", "greater than or equal to"),
    ],
)
def test_edge_limit_errors_name_the_option_and_line(
    tmp_path: Any, option: str, path: str, message: str
) -> None:
    from pipeline.errors import ConfigErrors
    from tests.support import config_from_text

    text = f"""\
receivers:
  otlp:
    protocols:
      grpc:
        {option}
exporters:
  debug:
service:
  pipelines:
    traces: {{receivers: [otlp], exporters: [debug]}}
"""
    with pytest.raises(ConfigErrors) as info:
        config_from_text(text, tmp_path)
    text = str(info.value)
    assert f"receivers.otlp.protocols.{path}" in text
    assert message in text
    assert "line 5)" in text
