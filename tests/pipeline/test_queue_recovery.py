"""The persistent sending queue's recovery at start (``sending_queue.storage``): a large
backlog is read in the background, one segment at a time in a thread, so the start does not
wait for it and the event loop serves meanwhile (receivers, the metrics endpoint); every
batch is recovered (exact counts), a damaged batch in the middle is counted and skipped and
the rest delivered, and a ``kill -9`` during the recovery loses nothing acknowledged."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import textwrap
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from pipeline.config import load_config
from pipeline.exporterhelper import QueueCodec
from pipeline.pdata import Signal, Traces
from pipeline.pluginmanager import default_registry
from pipeline.service import Service
from pipeline.storage import SegmentLog
from pipeline.telemetry import SelfTelemetry
from tests.durable_support import IdBackend, build_request, span_id, wait_delivered
from tests.support import CLIENT_TIMEOUT, free_port, wait_until, write_config

SPANS = 400  # spans a batch (~86 KB): 240 batches are ~20 MiB, three 8 MiB segments
BATCHES = 240
QUEUE_DIR = "exporter_otlp__traces"
ROOT = Path(__file__).resolve().parents[2]

CONFIG = """
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:{port}"}}
exporters:
  otlp:
    endpoint: "127.0.0.1:{backend}"
    tls: {{insecure: true}}
    compression: none
    timeout: 5s
    retry_on_failure: {{initial_interval: 50ms, max_interval: 200ms, max_elapsed_time: 0}}
    sending_queue: {{enabled: true, storage: file_storage, num_consumers: 4, queue_size: 5000}}
extensions:
  file_storage:
    directory: "{storage}"
    create_directory: true
service:
  extensions: [file_storage]
  telemetry:
    metrics: {{level: normal, address: "127.0.0.1:{metrics}"}}
    logs: {{level: warn}}
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [otlp]
"""


def batch_ids(k: int) -> set[bytes]:
    first = 1 + k * SPANS
    return {span_id(i) for i in range(first, first + SPANS)}


async def backlog(storage: Path, batches: int = BATCHES) -> list[Any]:
    """What a gateway leaves in its persistent queue after an outage: ``batches`` batches of
    ``SPANS`` spans (ids ``1 + k*SPANS ...``), written as the exporter writes them."""
    codec = QueueCodec(Signal.TRACES)
    log = SegmentLog(storage / QUEUE_DIR)
    log.open()
    recs = []
    for k in range(batches):
        recs.append(await log.append(codec.encode(Traces(build_request(1 + k * SPANS, SPANS)))))
    log.close()
    return recs


@pytest.fixture
async def backend() -> AsyncIterator[IdBackend]:
    b = IdBackend()
    await b.start_grpc()
    try:
        yield b
    finally:
        await b.stop()


class Gate:
    """Holds the recovery's reading of the queue's ``n``-th segment scan (counting every
    segment read at open and after) until released: the real scan, only made to wait, so
    a test sees the gateway while its recovery is under way, by the order of events."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, n: int) -> None:
        self.reached = threading.Event()
        self.release = threading.Event()
        self.calls = 0
        real: Callable[..., Any] = SegmentLog._scan

        def scan(log: SegmentLog, *args: Any, **kwargs: Any) -> Any:
            if log.directory.name == QUEUE_DIR:
                self.calls += 1
                if self.calls == n:
                    self.reached.set()
                    self.release.wait(60)
            return real(log, *args, **kwargs)

        monkeypatch.setattr(SegmentLog, "_scan", scan)


async def scrape(port: int) -> str:
    async with (
        aiohttp.ClientSession(timeout=CLIENT_TIMEOUT) as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as resp,
    ):
        assert resp.status == 200
        return await resp.text()


def sample(text: str, name: str) -> float:
    m = re.search(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M)
    assert m is not None, f"{name} not in the metrics"
    return float(m.group(1))


async def test_a_large_backlog_recovers_in_the_background_exactly_and_the_loop_serves(
    tmp_path: Path, backend: IdBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three segments of queued batches, one damaged in the middle segment. The recovery
    is held inside its second segment read: the start has returned, the metrics endpoint
    answers (showing bytes still to recover) and the receiver takes a request. Released,
    every batch but the damaged one is delivered, the recovered count is exact and the
    damaged batch is counted. Before, the start read every entry (on the event loop) before
    the receivers started: held there, the gateway did not start at all."""
    storage = tmp_path / "storage"
    recs = await backlog(storage)
    seqs = sorted({r.segment.seq for r in recs})
    assert len(seqs) >= 3
    damaged = next(k for k, r in enumerate(recs) if r.segment.seq == seqs[1]) + 5
    seg_file = storage / QUEUE_DIR / f"{seqs[1]:012d}.seg"
    data = bytearray(seg_file.read_bytes())
    data[recs[damaged].offset + 1000] ^= 0xFF
    seg_file.write_bytes(bytes(data))

    gate = Gate(monkeypatch, 3)  # the last segment at open, the first, then the second
    port, metrics = free_port(), free_port()
    text = CONFIG.format(port=port, backend=backend.grpc_port, storage=storage, metrics=metrics)
    config = load_config([str(write_config(tmp_path, text))], default_registry())
    svc = Service(config, SelfTelemetry())
    starting = asyncio.ensure_future(svc.start())
    try:
        done, _ = await asyncio.wait({starting}, timeout=20)  # a guard against the hang only
        assert done, "the start waited for the queue's recovery"
        starting.result()
        await asyncio.to_thread(gate.reached.wait, 20)
        assert gate.reached.is_set()
        # the recovery is under way (held in its second segment): the loop serves
        page = await scrape(metrics)
        assert not gate.release.is_set()
        left = sample(page, "otelcol_exporter_queue_recovery_pending_bytes")
        assert left > 8 << 20  # the second and third segments
        from tests.pipeline.test_durability import send

        assert await send(port, [build_request(10_000_000, 5)]) == ["OK"]
        gate.release.set()

        want: set[bytes] = set()
        for k in range(BATCHES):
            if k != damaged:
                want |= batch_ids(k)
        want |= {span_id(i) for i in range(10_000_000, 10_000_005)}
        assert await wait_delivered(backend, want, within=120) == set()
        got = backend.count()
        assert not batch_ids(damaged) & set(got)

        def value(name: str) -> float:
            return svc.telemetry.value(name, exporter="otlp")

        await wait_until(
            lambda: value("otelcol_exporter_queue_recovery_pending_bytes") == 0, within=10
        )
        assert value("otelcol_exporter_queue_recovered_spans_total") == (BATCHES - 1) * SPANS
        assert value("otelcol_exporter_queue_unreadable_batches_total") == 1
        assert max(got.values()) == 1  # no batch sent twice
    finally:
        gate.release.set()
        starting.cancel()
        await asyncio.gather(starting, return_exceptions=True)
        await asyncio.wait_for(svc.shutdown(), 30)
    # everything delivered is done: the queue's files are gone
    await asyncio.sleep(0)
    check = SegmentLog(storage / QUEUE_DIR)
    assert check.open() == []
    check.close()


DRIVER = """
import asyncio, sys, threading
from pathlib import Path
from pipeline.config import load_config
from pipeline.pluginmanager import default_registry
from pipeline.service import Service
from pipeline.storage import SegmentLog
from pipeline.telemetry import SelfTelemetry

marker = Path(sys.argv[2])
real = SegmentLog._scan
calls = [0]

def scan(log, *args, **kwargs):
    if log.directory.name == "exporter_otlp__traces":
        calls[0] += 1
        if calls[0] == 3:  # inside the recovery's second segment: wait to be killed
            marker.write_text("recovering")
            threading.Event().wait()
    return real(log, *args, **kwargs)

SegmentLog._scan = scan
config = load_config([sys.argv[1]], default_registry())
asyncio.run(Service(config, SelfTelemetry()).run(install_signal_handlers=False))
"""


async def test_kill_9_during_the_recovery_loses_nothing_acknowledged(
    tmp_path: Path, backend: IdBackend
) -> None:
    """A gateway recovering a three-segment backlog sends what it recovered first and is
    killed (SIGKILL) while it reads its second segment; the next start delivers everything
    that had not been delivered: no batch is missing."""
    storage = tmp_path / "storage"
    await backlog(storage)
    port, metrics = free_port(), free_port()
    text = CONFIG.format(port=port, backend=backend.grpc_port, storage=storage, metrics=metrics)
    path = write_config(tmp_path, text)
    driver = tmp_path / "driver.py"
    driver.write_text(textwrap.dedent(DRIVER))
    marker = tmp_path / "recovering"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(driver),
        str(path),
        str(marker),
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        await wait_until(marker.exists, within=60)
        # the first segment recovered is being delivered: wait for part of it to arrive
        first_segment = set().union(*(batch_ids(k) for k in range(20)))
        await wait_until(lambda: len(first_segment & set(backend.count())) > 0, within=60)
        await asyncio.sleep(0.3)  # (done marks are written every 50 ms)
    finally:
        proc.send_signal(signal.SIGKILL)
        await asyncio.wait_for(proc.wait(), 30)
    delivered_before = len(backend.count())
    assert 0 < delivered_before < BATCHES * SPANS
    config = load_config([str(path)], default_registry())
    svc = Service(config, SelfTelemetry())
    await svc.start()
    try:
        want = set().union(*(batch_ids(k) for k in range(BATCHES)))
        assert await wait_delivered(backend, want, within=120) == set()
        recovered = svc.telemetry.value(
            "otelcol_exporter_queue_recovered_spans_total", exporter="otlp"
        )
        # the second start recovered what the first had not marked done, at least the rest
        assert BATCHES * SPANS - delivered_before <= recovered < BATCHES * SPANS
    finally:
        await asyncio.wait_for(svc.shutdown(), 30)
