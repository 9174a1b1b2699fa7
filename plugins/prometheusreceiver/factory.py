"""Factory of the ``prometheus`` receiver."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline import Consumer, CreateSettings, ReceiverFactory, Signal, Stability
from plugins.prometheusreceiver.config import PrometheusReceiverConfig

if TYPE_CHECKING:
    from plugins.prometheusreceiver.receiver import PrometheusReceiver


class PrometheusReceiverFactory(ReceiverFactory):
    type = "prometheus"
    config_class = PrometheusReceiverConfig
    description = "Scrapes Prometheus endpoints and turns their metrics into OTLP."
    stability = {Signal.METRICS: Stability.BETA}

    def create_default_config(self) -> PrometheusReceiverConfig:
        return PrometheusReceiverConfig.model_validate(
            {
                "config": {
                    "scrape_configs": [
                        {
                            "job_name": "pipeline",
                            "static_configs": [{"targets": ["localhost:8888"]}],
                        }
                    ]
                }
            }
        )

    def create_metrics(
        self, settings: CreateSettings, config: PrometheusReceiverConfig, next_consumer: Consumer
    ) -> PrometheusReceiver:
        from plugins.prometheusreceiver.receiver import PrometheusReceiver

        return PrometheusReceiver(settings, config, next_consumer)
