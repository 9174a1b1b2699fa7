"""Run by every Python process started with this folder on ``PYTHONPATH`` (``python -m
benchmarks.workers --probe DIR`` puts it there for the gateway only): a worker process of
the gateway installs :mod:`benchmarks.workers_probe`."""

import os

if os.environ.get("PIPELINE_WORKERS_PROBE") and os.environ.get("PIPELINE_WORKER"):
    from benchmarks import workers_probe

    workers_probe.install(os.environ["PIPELINE_WORKERS_PROBE"])
