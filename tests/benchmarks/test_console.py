"""The console benchmark's config and arithmetic (the benchmark itself is run by hand)."""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks.agent_pipeline import AGENT, Result
from benchmarks.console import overlay, report
from pipeline.config import load_config
from pipeline.pluginmanager import default_registry
from tests.support import write_config


def test_the_console_overlay_is_a_valid_config(tmp_path: Path) -> None:
    base = AGENT.format(
        port=4317,
        telemetry=8888,
        wait="1s",
        max_traces=1000,
        max_bytes=1 << 24,
        spanmetrics_def="",
        spanmetrics_use="",
        exporter_def="  debug:",
        exporter="debug",
        batch=8192,
    )
    files = [write_config(tmp_path, base), write_config(tmp_path, overlay(55679), "o.yaml")]
    config = load_config([str(f) for f in files], default_registry())
    assert [str(e) for e in config.extensions] == ["console"]


def test_report_ratios_and_the_consoles_own_time() -> None:
    def result(cpu: float) -> Result:
        return Result("agent pipeline", "agent", 10, 8, 100_000, 1_000_000, 1_000_000, cpu, cpu,
                      100.0, None, None, 0.0)  # fmt: skip

    args = argparse.Namespace(
        rate=100_000, seconds=10, repeat=1, baseline=None, exporter="blackhole"
    )
    text = report(
        [
            ("console off", result(2.0), {}),
            ("console on", result(2.0), {"busy_s_per_million": 0.001}),
            ("console watched", result(2.1), {"busy_s_per_million": 0.05, "updates": 12}),
        ],
        args,
    )
    assert "| console watched | 2.100 | 2.100 | 1.050 | +1.00 % of a core |" in text
    assert "| console watched | 0.0500 | 0.0500 | 0.50 % | 2.50 % |" in text
    assert "12 updates" in text
