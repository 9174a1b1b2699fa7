"""benchmarks/idle_cost.py's readings of a process: CPU time of every thread (ns resolution)
and voluntary context switches."""

from __future__ import annotations

import os
import sys
import threading
import time

import pytest

from benchmarks.idle_cost import cpu_seconds, wakeups

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def test_cpu_and_wakeups_of_every_thread() -> None:
    pid = os.getpid()
    cpu0, wake0 = cpu_seconds(pid), wakeups(pid)

    slept = threading.Event()
    done = threading.Event()

    def sleeper() -> None:
        for _ in range(5):
            time.sleep(0.001)  # five voluntary switches in another thread
        slept.set()
        done.wait()  # alive (its /proc entry there) while it is counted

    t = threading.Thread(target=sleeper)
    t.start()
    slept.wait()
    end = time.thread_time() + 0.02
    while time.thread_time() < end:  # 20 ms of CPU
        pass
    try:
        assert cpu_seconds(pid) - cpu0 >= 0.015
        assert wakeups(pid) - wake0 >= 5
    finally:
        done.set()
        t.join()
