"""The workers benchmark's probe (benchmarks/workers_probe.py): installed in a worker process
by ``benchmarks/_probe_site``, it files the event loop's waits by what the worker held and
names its long callbacks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from benchmarks.workers_probe import summarize

ROOT = Path(__file__).resolve().parents[2]

_WORKER = """
import asyncio, time

def blocking_step():
    time.sleep(0.005)

async def main():
    end = time.monotonic() + 1.5
    loop = asyncio.get_running_loop()
    while time.monotonic() < end:
        loop.call_soon(blocking_step)
        await asyncio.sleep(0.01)  # the step, then a wait

asyncio.run(main())
"""


def test_a_worker_records_its_waits_and_names_its_long_callbacks(tmp_path: Path) -> None:
    folder = tmp_path / "probe"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "benchmarks" / "_probe_site"), str(ROOT)]),
        "PIPELINE_WORKER": f"0/2/{tmp_path}",
        "PIPELINE_WORKERS_PROBE": str(folder),
    }
    subprocess.run([sys.executable, "-c", _WORKER], env=env, check=True, timeout=60)
    lines = summarize(str(folder), busy_turns=2.0)  # every second it recorded
    assert lines[0].startswith("worker 0: ")
    assert any(line.endswith(" no worker") for line in lines)  # no WorkerContext here
    assert any("callback blocking_step: " in line for line in lines)


def test_nothing_is_recorded_outside_a_worker(tmp_path: Path) -> None:
    folder = tmp_path / "probe"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "benchmarks" / "_probe_site"), str(ROOT)]),
        "PIPELINE_WORKERS_PROBE": str(folder),
    }
    env.pop("PIPELINE_WORKER", None)
    subprocess.run([sys.executable, "-c", _WORKER], env=env, check=True, timeout=60)
    assert not folder.exists()
