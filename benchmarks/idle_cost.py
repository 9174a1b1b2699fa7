"""The agent pipeline's CPU and wake-ups while idle (benchmarks/results/agent-pipeline.md,
Update 21).

The server of ``benchmarks.agent_pipeline`` (its AGENT config, OTLP/gzip export to a rotel
sink) gets a warm-up (1 s at 2,000 spans/s, then ``--warm-seconds`` at 10,000), the
connector's join settles, 6 s more pass, and then, with no traffic, its CPU time
(``/proc/PID/task/*/schedstat``, nanoseconds) and the voluntary context switches of every
thread are read over ``--seconds``.
Prints one JSON line: ``ms_cpu_per_s``, ``wakeups_per_s`` (all threads).

    python -m benchmarks.idle_cost --seconds 30
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from benchmarks.agent_pipeline import (
    Case,
    Load,
    _settle,
    _spawn_load,
    _wait_joined,
    _wait_out,
    server,
    sink_process,
)


def cpu_seconds(pid: int) -> float:
    """CPU time of every thread of ``pid`` (ns resolution, unlike the 10 ms ticks of stat)."""
    total = 0
    for path in glob.glob(f"/proc/{pid}/task/*/schedstat"):
        with open(path) as f:
            total += int(f.read().split()[0])
    return total / 1e9


def wakeups(pid: int) -> int:
    """Voluntary context switches of every thread of ``pid``."""
    n = 0
    for path in glob.glob(f"/proc/{pid}/task/*/status"):
        with open(path) as f:
            for line in f:
                if line.startswith("voluntary_ctxt_switches"):
                    n += int(line.split()[1])
    return n


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seconds", type=float, default=30.0, help="idle time measured")
    p.add_argument("--warm-seconds", type=float, default=3.0, help="warm-up at 10,000 spans/s")
    a = p.parse_args(argv)
    case = Case("agent pipeline", "agent", Load(seconds=a.warm_seconds, rate=10_000))
    with (
        tempfile.TemporaryDirectory(prefix="idle-cost-") as tmp,
        sink_process(Path(tmp)) as sink,
        server(case, Path(tmp), sink) as (ps, endpoint, telemetry),
    ):
        _spawn_load(endpoint, replace(case.load, seconds=1.0, rate=2000))
        _wait_out(telemetry, None, timeout=10, settle=_settle(case))
        _spawn_load(endpoint, case.load)
        _wait_out(telemetry, None, timeout=20, settle=_settle(case))
        _wait_joined(telemetry, timeout=30)
        time.sleep(6)
        cpu0, wake0 = cpu_seconds(ps.pid), wakeups(ps.pid)
        time.sleep(a.seconds)
        cpu1, wake1 = cpu_seconds(ps.pid), wakeups(ps.pid)
    print(
        json.dumps(
            {
                "ms_cpu_per_s": round((cpu1 - cpu0) / a.seconds * 1000, 3),
                "wakeups_per_s": round((wake1 - wake0) / a.seconds, 2),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
