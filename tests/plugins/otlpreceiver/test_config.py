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
