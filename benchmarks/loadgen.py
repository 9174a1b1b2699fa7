"""Load generator: pre-encoded OTLP trace requests at a fixed offered rate, over gRPC or HTTP.

    python -m benchmarks.loadgen --protocol grpc --target 127.0.0.1:4317 \
        --rate 100000 --duration 20

Requests are built once (:mod:`benchmarks.payload`) and sent on schedule (request ``i`` at
``start + i / requests_per_second``) with at most ``--concurrency`` in flight; a request that
cannot start on time because all slots are busy is counted as ``late``. Prints one JSON line:
spans acknowledged, refused (with the status codes), late requests, the achieved rate.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import time
from typing import Any

import aiohttp
import grpc

from benchmarks.payload import SPANS_PER_REQUEST, request_pool

TRACE_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


async def run(
    protocol: str,
    target: str,
    rate: float,
    duration: float,
    concurrency: int,
    health_every: int = 0,
) -> dict[str, Any]:
    pool = request_pool(health_every=health_every)
    per_second = rate / SPANS_PER_REQUEST
    total = int(per_second * duration)
    stats: dict[str, Any] = {
        "ok_spans": 0,
        "refused_spans": 0,
        "late": 0,
        "codes": collections.Counter(),
    }
    slots = asyncio.Semaphore(concurrency)
    channel: Any = None
    session: aiohttp.ClientSession | None = None
    if protocol == "grpc":
        channel = grpc.aio.insecure_channel(
            target, options=[("grpc.max_send_message_length", 64 << 20)]
        )
        call = channel.unary_unary(TRACE_METHOD)
    else:
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency))
        url = f"http://{target}/v1/traces"

    async def send(body: bytes) -> None:
        try:
            if protocol == "grpc":
                try:
                    await call(body, timeout=30)
                    code = "OK"
                except grpc.aio.AioRpcError as exc:
                    code = exc.code().name
            else:
                assert session is not None
                try:
                    async with session.post(
                        url, data=body, headers={"Content-Type": "application/x-protobuf"}
                    ) as resp:
                        await resp.read()
                        code = "OK" if resp.status == 200 else f"HTTP {resp.status}"
                except aiohttp.ClientError as exc:
                    code = type(exc).__name__
            stats["codes"][code] += 1
            if code == "OK":
                stats["ok_spans"] += SPANS_PER_REQUEST
            else:
                stats["refused_spans"] += SPANS_PER_REQUEST
        finally:
            slots.release()

    tasks = set()
    loop = asyncio.get_running_loop()
    start = loop.time()
    stats["send_started_at"] = time.time()
    for i in range(total):
        due = start + i / per_second
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        if slots.locked():
            stats["late"] += 1
        await slots.acquire()
        task = asyncio.create_task(send(pool[i % len(pool)]))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    sent_for = loop.time() - start
    stats["send_ended_at"] = time.time()
    await asyncio.gather(*tasks)
    if channel is not None:
        await channel.close()
    if session is not None:
        await session.close()
    stats["requests"] = total
    stats["offered_spans_per_s"] = round(total * SPANS_PER_REQUEST / sent_for)
    stats["bytes_per_span"] = round(sum(map(len, pool)) / len(pool) / SPANS_PER_REQUEST, 1)
    stats["codes"] = dict(stats["codes"])
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--protocol", choices=["grpc", "http"], default="grpc")
    parser.add_argument("--target", required=True, help="host:port of the receiver")
    parser.add_argument("--rate", type=float, default=100_000, help="spans per second")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument(
        "--health-every", type=int, default=0, help="name every Nth span 'health-check'"
    )
    args = parser.parse_args()
    started = time.time()
    stats = asyncio.run(
        run(
            args.protocol,
            args.target,
            args.rate,
            args.duration,
            args.concurrency,
            args.health_every,
        )
    )
    stats["wall_s"] = round(time.time() - started, 2)
    print(json.dumps(stats), flush=True)


if __name__ == "__main__":
    main()
