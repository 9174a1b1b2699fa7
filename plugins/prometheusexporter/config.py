"""Config of the ``prometheus`` exporter, with the Collector's option names."""

from __future__ import annotations

from pydantic import field_validator

from pipeline import (
    ComponentConfig,
    ConfigModel,
    Duration,
    Endpoint,
    ListenEndpoint,
    Seconds,
    ServerTLSConfig,
)
from pipeline.netedge import ControlHTTPServerLimits
from plugins.prometheustranslator import label_name


class ResourceToTelemetryConfig(ConfigModel):
    """``resource_to_telemetry_conversion``: copy resource attributes onto every series."""

    enabled: bool = False


class PrometheusExporterConfig(ControlHTTPServerLimits, ComponentConfig):
    """``exporters.prometheus`` (with the connection limits and timeouts of
    :class:`pipeline.netedge.ControlHTTPServerLimits`)."""

    endpoint: Endpoint = "localhost:8889"
    tls: ServerTLSConfig | None = None
    """HTTPS for scrapes; with ``client_ca_file``, only scrapers with a certificate of that CA
    (Prometheus: ``tls_config.cert_file``/``key_file``)."""
    namespace: str = ""
    const_labels: dict[str, str] = {}
    send_timestamps: bool = False
    metric_expiration: Duration = Seconds(300)
    resource_to_telemetry_conversion: ResourceToTelemetryConfig = ResourceToTelemetryConfig()
    enable_open_metrics: bool = False
    add_metric_suffixes: bool = True

    @field_validator("const_labels")
    @classmethod
    def _valid_label_names(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not key or label_name(key) != key or key.startswith("__"):
                raise ValueError(
                    f"const_labels: {key!r} is not a valid Prometheus label name "
                    "(letters, digits and '_', not starting with a digit or '__')"
                )
        return value

    @field_validator("metric_expiration")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("metric_expiration must be above 0, such as '5m'")
        return value

    def listen_endpoints(self) -> list[ListenEndpoint]:
        return [ListenEndpoint("endpoint", self.endpoint)]
