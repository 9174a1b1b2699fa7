"""Where a gateway's CPU goes while a benchmark's measured load runs: py-spy, aligned.

``benchmarks.agent_pipeline --profile DIR`` records each gateway case with py-spy (``--native``,
100 Hz, raw folded stacks) from the moment its measured load starts until its CPU is read,
so a profile covers exactly the work the CPU figure counts (a fixed window after the start
does not: the agent cases wait for the join's settling before their load, the forward ones
do not, and a 10 s window then holds different shares of the load in two trees). Then

    python -m benchmarks.profile DIR/*.txt [--spans 1000000]

gives each profile's busy samples per component: a sample goes to the deepest frame a rule
matches (the receiver calls the pipeline inline: its time under the workflow processor is
the processor's), samples of a thread waiting (``epoll_wait``, an executor's queue) are left
out. With ``--spans`` (the run's sent spans; the benchmark writes them into the profile's
name) it gives milliseconds per 1M spans at 100 Hz.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

# (component, pattern on one frame "function (file:line)", its parts): a sample goes to the
# component of its deepest frame a component's pattern matches (among the patterns of one frame
# the first listed wins), then to the part of that component whose pattern matches the deepest
# frame of the stack, else to "<component>: other"
Rule = tuple[str, re.Pattern[str], tuple[tuple[str, re.Pattern[str]], ...]]


def _rule(name: str, pattern: str, *parts: tuple[str, str]) -> Rule:
    return name, re.compile(pattern), tuple((part, re.compile(p)) for part, p in parts)


RULES: tuple[Rule, ...] = (
    _rule("gc", r"^(gc_collect_main|gc_collect_with_callback|gc_collect_generations|collect) "),
    _rule("export compression", r"pipeline/compression\.py|isal_zlib|zlib"),
    _rule(
        "agentmetrics",
        r"agentmetricsconnector/|_agentscan",
        (
            "join",
            r"agentmetricsconnector/calls\.py|^(settle_\w+|finish_join|hold_packed) |"
            r"^AgentMetricsConnector\._settle ",
        ),
        ("failed roots", r"^AgentMetricsConnector\.(_read_fallback|_failed_root|_execution) "),
        ("merge", r"^AgentMetricsConnector\.(_merge_native|_shared_series) "),
        ("flush", r"^(AgentMetricsConnector\.prepare_flush|FlushingConnector\.\w+) "),
        ("scan", r"^(Scanner\.scan|Scanner_scan) "),
    ),
    _rule(
        "workflow",
        r"plugins/workflowprocessor/|_tracewire",
        ("release", r"[Rr]elease|[Ee]xpire|_send_loop|_emit "),
        ("ingest", r"ingest|WorkflowProcessor\.consume "),
    ),
    _rule("batch", r"batchprocessor"),
    _rule("otlp exporter", r"plugins/otlpexporter/"),
    _rule("otlp receiver", r"plugins/otlpreceiver/|_h2server"),
    _rule("metrics aggregation", r"plugins/_metricsagg|plugins/_metricbuilder"),
    _rule("self-telemetry", r"pipeline/(telemetry|metricsserver)\.py|prometheus_client"),
    _rule("engine", r"pipeline/(graph|consumer|service|component|exporterhelper|tasks)\.py"),
    _rule("event loop", r"asyncio/|selectors\.py|socketmodule"),
)

# a sample with one of these frames is a thread waiting (for events, work, the GIL), not work
IDLE = re.compile(
    r"EpollSelector\.select|SimpleQueue_get|pthread_cond_timedwait|pthread_cond_wait|"
    r"sem_clockwait|sem_timedwait|do_futex_wait|Condition\.wait|Event\.wait|take_gil"
)
PROFILE_HZ = 100


def read_folded(path: Path) -> Iterator[tuple[list[str], int]]:
    """py-spy's raw format: one stack a line, frames outermost first joined by ``;``, then the
    sample count."""
    with path.open() as f:
        for line in f:
            line = line.rstrip("\n")
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                continue
            yield stack.split(";"), int(count)


def bucket(frames: list[str]) -> str | None:
    """The component (and part) a sample's time belongs to; ``None`` when the thread waited."""
    if any(IDLE.search(frame) for frame in frames):
        return None
    for frame in reversed(frames):
        for name, pattern, parts in RULES:
            if pattern.search(frame):
                if not parts:
                    return name
                for deeper in reversed(frames):
                    for part, part_pattern in parts:
                        if part_pattern.search(deeper):
                            return f"{name}: {part}"
                return f"{name}: other"
    return "other"


def summarize(samples: Iterable[tuple[list[str], int]]) -> tuple[int, collections.Counter[str]]:
    """(all samples, busy samples per bucket)."""
    total = 0
    busy: collections.Counter[str] = collections.Counter()
    for frames, count in samples:
        total += count
        name = bucket(frames)
        if name is not None:
            busy[name] += count
    return total, busy


def spans_of(path: Path) -> int | None:
    """The sent spans the benchmark wrote into a profile's name (``...-spans1000000.txt``)."""
    m = re.search(r"-spans(\d+)\.txt$", path.name)
    return int(m.group(1)) if m else None


def table(paths: list[Path], spans: int | None) -> list[str]:
    """One column a profile: busy samples per bucket, or ms per 1M spans when the spans are
    known."""
    columns = []
    for path in paths:
        _, busy = summarize(read_folded(path))
        n = spans if spans is not None else spans_of(path)
        scale = 1000.0 / PROFILE_HZ * 1e6 / n if n else 1.0
        columns.append({k: v * scale for k, v in busy.items()})
    names = sorted(
        {k for c in columns for k in c}, key=lambda k: -sum(c.get(k, 0) for c in columns)
    )
    unit = "ms per 1M spans" if all(spans or spans_of(p) for p in paths) else "samples"
    lines = [
        f"| where ({unit}) | " + " | ".join(p.stem for p in paths) + " |",
        "|---|" + "---:|" * len(paths),
    ]
    for name in ["busy", *names]:
        cells = [sum(c.values()) if name == "busy" else c.get(name, 0.0) for c in columns]
        lines.append(f"| {name} | " + " | ".join(f"{v:,.0f}" for v in cells) + " |")
    return lines


@contextlib.contextmanager
def recording(pid: int, out: Path) -> Iterator[None]:
    """py-spy records ``pid`` into ``out`` while the block runs (the profile is written when
    py-spy is interrupted). Needs ``py-spy`` on PATH or in ``$PY_SPY``."""
    spy = os.environ.get("PY_SPY") or shutil.which("py-spy")
    if spy is None:
        raise SystemExit("--profile needs py-spy: pip install py-spy, or set PY_SPY")
    out.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [spy, "record", "--native", "--rate", str(PROFILE_HZ), "--format", "raw",
         "--output", str(out), "--pid", str(pid)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("profiles", nargs="+", type=Path)
    p.add_argument("--spans", type=int, help="spans the load sent (default: from the name)")
    a = p.parse_args(argv)
    print("\n".join(table(a.profiles, a.spans)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
