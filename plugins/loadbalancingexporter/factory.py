"""Factory of the ``loadbalancing`` exporter."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline import CreateSettings, ExporterFactory, Signal, Stability
from plugins._otlproute import SUPPORTED
from plugins.loadbalancingexporter.config import (
    LoadBalancingConfig,
    ResolverConfig,
    StaticResolverConfig,
)

if TYPE_CHECKING:
    from plugins.loadbalancingexporter.exporter import LoadBalancingExporter


class LoadBalancingExporterFactory(ExporterFactory):
    type = "loadbalancing"
    config_class = LoadBalancingConfig
    description = (
        "Routes traces by trace id (or by service, resource, metric, stream) to backends found "
        "by a static list or DNS, through consistent hashing, over OTLP."
    )
    stability = {
        Signal.TRACES: Stability.BETA,
        Signal.METRICS: Stability.DEVELOPMENT,
        Signal.LOGS: Stability.BETA,
    }

    def create_default_config(self) -> LoadBalancingConfig:
        return LoadBalancingConfig(
            resolver=ResolverConfig(static=StaticResolverConfig(hostnames=["localhost:4317"]))
        )

    def _create(
        self, settings: CreateSettings, config: LoadBalancingConfig, signal: Signal
    ) -> LoadBalancingExporter:
        from plugins.loadbalancingexporter.exporter import LoadBalancingExporter

        if config.routing_key and config.routing_key not in SUPPORTED[signal]:
            raise ValueError(
                f"routing_key {config.routing_key!r} does not apply to {signal}: use one of "
                f"{', '.join(SUPPORTED[signal])}"
            )
        return LoadBalancingExporter(settings, config, signal)

    def create_traces(
        self, settings: CreateSettings, config: LoadBalancingConfig
    ) -> LoadBalancingExporter:
        return self._create(settings, config, Signal.TRACES)

    def create_metrics(
        self, settings: CreateSettings, config: LoadBalancingConfig
    ) -> LoadBalancingExporter:
        return self._create(settings, config, Signal.METRICS)

    def create_logs(
        self, settings: CreateSettings, config: LoadBalancingConfig
    ) -> LoadBalancingExporter:
        return self._create(settings, config, Signal.LOGS)
