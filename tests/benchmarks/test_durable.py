"""The durability benchmark's configs and arithmetic (the benchmark itself is run by hand)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from benchmarks.durable import CASES, Run, gateway_config, report
from pipeline.config import load_config
from pipeline.pluginmanager import default_registry
from tests.support import write_config


@pytest.mark.parametrize("case", [c for c in CASES if c != "rotel"])
def test_every_gateway_case_is_a_valid_config(tmp_path: Path, case: str) -> None:
    text = gateway_config(case, 4317, 4318, tmp_path / "storage")
    config = load_config([str(write_config(tmp_path, text))], default_registry())
    assert (config.service.durability is not None) == ("+wal" in case)


def test_report_ratios() -> None:
    def run(case: str, cpu: float) -> Run:
        return Run(case, 30_000, cpu, 70.0, 500.0, 10, 10, 0, 0)

    args = argparse.Namespace(rate=30_000, duration=15, repeat=1, cases="rotel,forward,forward+wal")
    text = report([run("rotel", 4.0), run("forward", 1.0), run("forward+wal", 1.5)], args, "cmd")
    assert "| forward+wal | **1.50** (1.50) | 1.50 | 0.38 |" in text
    assert "costs +0.50 µs of CPU per span over **forward** (1.50x)" in text
