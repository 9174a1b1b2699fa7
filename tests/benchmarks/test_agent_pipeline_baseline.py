"""``benchmarks.agent_pipeline --baseline TREE``: the gateway of another source tree is run with
that tree's own Python, and each case's runs are summed up against the baseline's."""

from __future__ import annotations

import sys
from pathlib import Path

from benchmarks.agent_pipeline import ROOT, Result, against_baseline, tree_python


def result(case: str, cpu: float) -> Result:
    return Result(case, "agent", 10, 8, 10000.0, 100, 100, cpu, cpu, 100.0, None, None, 0.0)


def test_a_baseline_tree_runs_with_its_own_venv(tmp_path: Path) -> None:
    assert tree_python(ROOT) == sys.executable
    assert tree_python(tmp_path) == sys.executable  # no venv there: this Python
    own = tmp_path / ".venv" / "bin" / "python"
    own.parent.mkdir(parents=True)
    own.write_text("")
    assert tree_python(tmp_path) == str(own)


def test_medians_and_ratio_per_case() -> None:
    runs = [
        result("agent pipeline", 8.0),
        result("agent pipeline @ baseline", 6.0),
        result("agent pipeline", 9.0),
        result("agent pipeline @ baseline", 7.0),
        result("agent pipeline", 7.0),
        result("agent pipeline @ baseline", 5.0),
        result("rotel forward", 4.0),  # no baseline run: no row
    ]
    lines = against_baseline(runs)
    rows = [line for line in lines if line.startswith("| agent pipeline")]
    assert rows == ["| agent pipeline | 8.0, 9.0, 7.0 | 6.0, 7.0, 5.0 | 8.00 | 6.00 | 1.33 |"]
    assert not any(line.startswith("| rotel") for line in lines)
    assert against_baseline([result("rotel forward", 4.0)]) == []
