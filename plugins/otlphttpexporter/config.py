"""Config of the ``otlphttp`` exporter, with the Collector's option names."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, model_validator

from pipeline import ClientAuthConfig, Duration, ExporterHelperConfig, Seconds
from plugins.otlpexporter.config import ClientTLSConfig, Compression


def _check_url(name: str, url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{name} must be an http:// or https:// URL, got {url!r}")


class OTLPHTTPExporterConfig(ExporterHelperConfig):
    """``exporters.otlphttp``."""

    endpoint: str = ""
    """Base URL: traces go to ``<endpoint>/v1/traces``, metrics to ``<endpoint>/v1/metrics``,
    logs to ``<endpoint>/v1/logs``."""
    traces_endpoint: str = ""
    metrics_endpoint: str = ""
    logs_endpoint: str = ""
    tls: ClientTLSConfig = ClientTLSConfig()
    headers: dict[str, str] = {}
    auth: ClientAuthConfig | None = None
    """``{authenticator: <extension>}``: every request carries its credentials (headers)."""
    compression: Compression = "gzip"
    encoding: Literal["proto", "json"] = "proto"
    timeout: Duration = Seconds(30.0)
    max_idle_conns: int = Field(100, ge=0)
    max_request_bytes: int = Field(0, ge=0)
    """Split a batch whose protobuf encoding (before compression) is larger than this many
    bytes into requests below it before sending; 0 = off. Requests the server refuses as too
    large are split in any case."""

    @model_validator(mode="after")
    def _urls(self) -> OTLPHTTPExporterConfig:
        if not (
            self.endpoint or self.traces_endpoint or self.metrics_endpoint or self.logs_endpoint
        ):
            raise ValueError(
                "at least one endpoint must be given: endpoint, traces_endpoint, "
                "metrics_endpoint or logs_endpoint"
            )
        for name in ("endpoint", "traces_endpoint", "metrics_endpoint", "logs_endpoint"):
            value = getattr(self, name)
            if value:
                _check_url(name, value)
        return self

    def url(self, signal: str) -> str:
        """Where ``signal`` (``traces`` / ``metrics`` / ``logs``) is sent."""
        specific = {
            "traces": self.traces_endpoint,
            "metrics": self.metrics_endpoint,
            "logs": self.logs_endpoint,
        }[signal]
        if specific:
            return specific
        if not self.endpoint:
            raise ValueError(f"no endpoint for {signal}: set endpoint or {signal}_endpoint")
        return self.endpoint.rstrip("/") + f"/v1/{signal}"
