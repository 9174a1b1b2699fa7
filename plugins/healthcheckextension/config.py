"""Config of the ``health_check`` extension, with the Collector's option names."""

from __future__ import annotations

from pydantic import Field, field_validator

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


class CheckCollectorPipeline(ConfigModel):
    """``check_collector_pipeline``: not ready while an exporter keeps failing."""

    enabled: bool = False
    interval: Duration = Seconds(300)
    """The window in which export failures are counted."""
    exporter_failure_threshold: int = Field(5, ge=1)
    """Failed export attempts in ``interval`` (or in a row) that make the gateway not ready."""


class ResponseBody(ConfigModel):
    """``response_body``: fixed texts instead of the JSON report."""

    healthy: str = ""
    unhealthy: str = ""


class HealthCheckExtensionConfig(ControlHTTPServerLimits, ComponentConfig):
    """``extensions.health_check`` (with the connection limits and timeouts of
    :class:`pipeline.netedge.ControlHTTPServerLimits`)."""

    endpoint: Endpoint = "localhost:13133"
    tls: ServerTLSConfig | None = None
    """HTTPS; with ``client_ca_file``, only clients with a certificate of that CA (mTLS)."""
    path: str = "/"
    """The overall status; ``<path>/live`` and ``<path>/ready`` answer liveness and readiness."""
    response_body: ResponseBody | None = None
    check_collector_pipeline: CheckCollectorPipeline = CheckCollectorPipeline()
    exporter_queue_full_ratio: float = Field(0.9, gt=0, le=1)
    """Not ready while an exporter's sending queue is at least this full (a gateway
    addition)."""
    include_dependencies: bool = True
    """Report the ``healthcheck`` receivers' latest results; an unhealthy *critical* check
    makes the gateway not ready (a gateway addition)."""

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"path must start with '/', got {value!r}")
        return value

    def listen_endpoints(self) -> list[ListenEndpoint]:
        return [ListenEndpoint("endpoint", self.endpoint)]
