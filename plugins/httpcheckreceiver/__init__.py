"""The ``httpcheck`` receiver (also ``http_check``): requests HTTP endpoints on an interval and
reports ``httpcheck.status``, ``httpcheck.duration`` and ``httpcheck.error`` as the Collector's
``httpcheckreceiver`` does."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator

import pipeline
from pipeline import (
    ComponentConfig,
    ConfigModel,
    Consumer,
    CreateSettings,
    Duration,
    ReceiverFactory,
    Seconds,
    Signal,
    Stability,
)

if TYPE_CHECKING:
    from plugins.httpcheckreceiver.receiver import HTTPCheckReceiver


class TLSSettings(ConfigModel):
    insecure: bool = False
    insecure_skip_verify: bool = False
    ca_file: str | None = None


class MetricSetting(ConfigModel):
    enabled: bool = True


class Target(ConfigModel):
    """One entry of ``targets``: ``endpoint`` (or several ``endpoints``) with a method and
    headers."""

    endpoint: str | None = None
    endpoints: list[str] = Field(default_factory=list)
    method: Literal["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"] = "GET"
    headers: dict[str, str] = Field(default_factory=dict)
    body: str | None = None
    timeout: Duration | None = None
    tls: TLSSettings = TLSSettings()

    @model_validator(mode="after")
    def _check(self) -> Target:
        urls = self.urls()
        if not urls:
            raise ValueError("a target needs an endpoint (or endpoints)")
        for url in urls:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"endpoint {url!r} must be an http:// or https:// URL")
        return self

    def urls(self) -> list[str]:
        return ([self.endpoint] if self.endpoint else []) + list(self.endpoints)


DEFAULT_METRICS = {
    "httpcheck.status": True,
    "httpcheck.duration": True,
    "httpcheck.error": True,
}


class HTTPCheckConfig(ComponentConfig):
    """``receivers.httpcheck``."""

    collection_interval: Duration = Seconds(60)
    initial_delay: Duration = Seconds(1)
    timeout: Duration = Seconds(10)
    targets: list[Target] = Field(default_factory=list)
    metrics: dict[str, MetricSetting] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> HTTPCheckConfig:
        if not self.targets:
            raise ValueError("no targets configured: give at least one target with an endpoint")
        if self.collection_interval <= 0:
            raise ValueError("collection_interval must be above 0")
        unknown = sorted(set(self.metrics) - set(DEFAULT_METRICS))
        if unknown:
            raise ValueError(
                f"unknown metric(s) {', '.join(unknown)}; this receiver emits "
                + ", ".join(DEFAULT_METRICS)
            )
        return self

    def enabled(self, metric: str) -> bool:
        setting = self.metrics.get(metric)
        return setting.enabled if setting is not None else DEFAULT_METRICS[metric]


class HTTPCheckReceiverFactory(ReceiverFactory):
    type = "httpcheck"
    aliases = ("http_check",)  # the Collector's newer name
    config_class = HTTPCheckConfig
    description = "Checks HTTP endpoints on an interval (status class, duration, errors)."
    stability = {Signal.METRICS: Stability.BETA}

    def create_default_config(self) -> HTTPCheckConfig:
        return HTTPCheckConfig.model_validate({"targets": [{"endpoint": "http://localhost:80"}]})

    def create_metrics(self, settings: CreateSettings, config: Any,
                       next_consumer: Consumer) -> HTTPCheckReceiver:  # fmt: skip
        from plugins.httpcheckreceiver.receiver import HTTPCheckReceiver

        return HTTPCheckReceiver(settings, config, next_consumer)


__all__ = ["HTTPCheckConfig", "HTTPCheckReceiverFactory"]


@pipeline.hookimpl
def register_components(registry: pipeline.Registry) -> None:
    registry.register(HTTPCheckReceiverFactory())
