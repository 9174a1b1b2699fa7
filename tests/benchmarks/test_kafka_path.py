"""The Kafka-path benchmark's gateway configs are valid."""

from __future__ import annotations

from pathlib import Path

from benchmarks.kafka_path import GATEWAY_EXPORTER, GATEWAY_RECEIVER
from tests.support import config_from_text


def test_gateway_configs_are_valid(tmp_path: Path) -> None:
    config_from_text(
        GATEWAY_EXPORTER.format(port=1, bootstrap="127.0.0.1:9092", topic="t", metrics_port=2),
        tmp_path,
    )
    config_from_text(
        GATEWAY_RECEIVER.format(bootstrap="127.0.0.1:9092", topic="t", sink_port=3, metrics_port=4),
        tmp_path,
    )
