"""benchmarks.profile: py-spy's folded stacks summed per component."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import profile

RECV = "_Connection._export (plugins/otlpreceiver/grpc_native.py:200)"
LOOP = "BaseEventLoop._run_once (asyncio/base_events.py:1922)"
WF = "WorkflowProcessor.consume (plugins/workflowprocessor/processor.py:300)"
JOIN = "CallJoiner.settle (plugins/agentmetricsconnector/calls.py:760)"
SCAN = "Scanner_scan (plugins/_native/_agentscan.c:3383)"


def write(path: Path, rows: list[tuple[list[str], int]]) -> Path:
    path.write_text("".join(";".join(frames) + f" {n}\n" for frames, n in rows))
    return path


def test_a_sample_goes_to_the_deepest_component_and_waiting_is_not_counted(tmp_path: Path) -> None:
    f = write(
        tmp_path / "agent-pipeline-this-1-spans500000.txt",
        [
            ([LOOP, RECV], 7),  # the receiver's own work
            ([LOOP, RECV, WF], 5),  # the pipeline called inline: the processor's
            ([LOOP, RECV, WF, "collect (gcmodule.c:1)"], 2),  # a collection under it: gc
            ([LOOP, JOIN, "settle_due (_agentscan.c:10)"], 3),
            # the component of the deepest frame, the part of the deepest part's frame
            ([LOOP, SCAN, "parse_attr (plugins/_native/_agentscan.c:1127)"], 4),
            ([LOOP, "AgentMetricsConnector.consume (plugins/agentmetricsconnector/x.py:1)"], 1),
            ([LOOP, "EpollSelector.select (selectors.py:468)", "epoll_wait (libc.so.6)"], 50),
            (["Thread.run (threading.py:982)", "SimpleQueue_get (_queuemodule.c:1)"], 40),
            (["mystery (elsewhere.py:1)"], 1),
        ],
    )
    total, busy = profile.summarize(profile.read_folded(f))
    assert total == 113
    assert busy == {
        "otlp receiver": 7,
        "workflow: ingest": 5,
        "gc": 2,
        "agentmetrics: join": 3,
        "agentmetrics: scan": 4,
        "agentmetrics: other": 1,
        "other": 1,
    }
    # 23 busy samples at 100 Hz = 230 ms over 500,000 spans = 460 ms per 1M spans
    lines = profile.table([f], None)
    assert lines[0].startswith("| where (ms per 1M spans) |")
    assert "| busy | 460 |" in lines
    assert "| otlp receiver | 140 |" in lines


def test_without_the_spans_the_table_counts_samples(tmp_path: Path) -> None:
    f = write(tmp_path / "p.txt", [([LOOP, RECV], 3), (["garbage line without count"], 0)])
    assert profile.spans_of(f) is None
    lines = profile.table([f], None)
    assert lines[0].startswith("| where (samples) |")
    assert "| otlp receiver | 3 |" in lines


def test_recording_without_py_spy_says_what_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PY_SPY", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SystemExit, match="needs py-spy"), profile.recording(1, tmp_path / "x"):
        pass
