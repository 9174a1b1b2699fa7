"""Config of the ``prometheusremotewrite`` exporter, with the Collector's option names."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from pydantic import field_validator

from pipeline import ClientAuthConfig, ExporterHelperConfig, QueueConfig
from plugins.prometheusexporter.config import ResourceToTelemetryConfig
from plugins.prometheustranslator import label_name


class PrometheusRemoteWriteConfig(ExporterHelperConfig):
    """``exporters.prometheusremotewrite``.

    The sending queue has one consumer by default: Prometheus refuses samples older than the
    newest it holds for a series, so requests must arrive in order.
    """

    endpoint: str
    headers: dict[str, str] = {}
    auth: ClientAuthConfig | None = None
    """``{authenticator: <extension>}``: credentials on every request (such as ``basicauth``
    for a Prometheus with ``basic_auth_users``)."""
    namespace: str = ""
    external_labels: dict[str, str] = {}
    resource_to_telemetry_conversion: ResourceToTelemetryConfig = ResourceToTelemetryConfig()
    add_metric_suffixes: bool = True
    sending_queue: QueueConfig = QueueConfig(num_consumers=1)

    @field_validator("sending_queue", mode="before")
    @classmethod
    def _one_consumer(cls, value: Any) -> Any:
        return QueueConfig.one_consumer(value)  # (requests must arrive in order)

    @field_validator("endpoint")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(
                f"expected an http(s) URL such as 'http://prometheus:9090/api/v1/write', "
                f"got {value!r}"
            )
        return value

    @field_validator("external_labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        for key, v in value.items():
            if not key or label_name(key) != key or key.startswith("__"):
                raise ValueError(f"external_labels: {key!r} is not a valid label name")
            if v == "":
                raise ValueError(f"external_labels: the value of {key!r} is empty")
        return value

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        reserved = {"content-encoding", "content-type", "x-prometheus-remote-write-version"}
        for key in value:
            if key.lower() in reserved:
                raise ValueError(f"headers: {key!r} is set by the exporter and cannot be changed")
        return value
