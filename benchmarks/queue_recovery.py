"""A persistent sending queue's start-up recovery over a large backlog (default ~1 GiB: 12,000
batches of 400 spans), as the exporter reads it now (``incremental``: the last segment at open,
the others one per thread call, each record measured in the same pass) and as it read it before
(``on_loop``: every segment scanned in a thread, then every entry read and measured on the event
loop). A ticker task on the loop counts its turns (every 5 ms asked) and the longest gap between
two: what a health check or metrics scrape waits at most meanwhile.

    .venv/bin/python -m benchmarks.queue_recovery make
    .venv/bin/python -m benchmarks.queue_recovery incremental
    .venv/bin/python -m benchmarks.queue_recovery on_loop

The gaps are wall-clock figures on whatever else the machine runs: compare the two modes in one
sitting, not across machines.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import shutil
import time
from pathlib import Path

from pipeline.exporterhelper import QueueCodec
from pipeline.pdata import Signal, Traces
from pipeline.storage import SegmentLog
from tests.durable_support import build_request


async def make(directory: Path, batches: int) -> None:
    shutil.rmtree(directory, ignore_errors=True)
    log = SegmentLog(directory)
    log.open()
    body = QueueCodec(Signal.TRACES).encode(Traces(build_request(1, 400)))
    await asyncio.gather(*(log.append(body) for _ in range(batches)))
    log.close()


async def recover(directory: Path, mode: str) -> None:
    codec = QueueCodec(Signal.TRACES)
    log = SegmentLog(directory)
    ticks = 0
    gap = 0.0
    done = False

    async def ticker() -> None:
        nonlocal ticks, gap
        last = time.monotonic()
        while not done:
            await asyncio.sleep(0.005)
            now = time.monotonic()
            ticks += 1
            gap = max(gap, now - last)
            last = now

    task = asyncio.ensure_future(ticker())
    await asyncio.sleep(0.01)
    began = time.monotonic()
    items = records = 0
    if mode == "on_loop":
        for rec in await asyncio.to_thread(log.open):
            n, _ = codec.measure(log.read(rec))
            items += n
            records += 1
    else:
        recovery = await asyncio.to_thread(log.open_incremental, codec.measure)
        while (chunk := await asyncio.to_thread(recovery.next)) is not None:
            for rec in chunk:
                n, _ = rec.measured
                rec.measured = None
                items += n
                records += 1
    done = True
    await task
    log.close()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss >> 10
    print(
        f"{mode}: records={records} items={items} loop turns={ticks} longest gap={gap:.3f}s "
        f"elapsed={time.monotonic() - began:.1f}s peak RSS={rss} MiB"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["make", "incremental", "on_loop"])
    parser.add_argument("--dir", default="/tmp/queue_recovery/exporter_otlp__traces")
    parser.add_argument("--batches", type=int, default=12_000)
    args = parser.parse_args()
    directory = Path(args.dir)
    if args.mode == "make":
        asyncio.run(make(directory, args.batches))
        size = sum(p.stat().st_size for p in directory.glob("*.seg"))
        print(f"{args.batches} batches, {size >> 20} MiB")
    else:
        asyncio.run(recover(directory, args.mode))


if __name__ == "__main__":
    main()
