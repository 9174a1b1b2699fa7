"""The two-tier example configs (docs/scaling.md) are valid as shipped."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline import Kind
from pipeline.config import load_config
from pipeline.pluginmanager import default_registry

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize(
    ("name", "exporter", "receiver"),
    [
        ("tier1-loadbalancing.yaml", "loadbalancing", "otlp"),
        ("tier1-kafka.yaml", "kafka", "otlp"),
        ("tier2-kafka.yaml", "otlp", "kafka"),
    ],
)
def test_two_tier_configs_are_valid(name: str, exporter: str, receiver: str) -> None:
    config = load_config([str(CONFIGS / name)], default_registry())
    assert exporter in {c.type for c in config.components[Kind.EXPORTER]}
    assert receiver in {c.type for c in config.components[Kind.RECEIVER]}
