"""Load generator: pre-encoded OTLP trace requests at a fixed offered rate, over gRPC or HTTP.

:class:`LeanGrpcClient` is the cheapest real OTLP/gRPC client this repository has: HTTP/2 by
libnghttp2 (the C ``ClientSession`` of ``plugins/_native/_h2server``: framing, HPACK, flow
control), one blocking socket, no threads, no event loop; the benchmarks whose load generator
shares the cores with the server (``benchmarks/workers.py``) use it.

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
import select
import socket
import time
from typing import Any

import aiohttp
import grpc

from benchmarks.payload import SPANS_PER_REQUEST, request_pool

TRACE_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


class LeanGrpcClient:
    """Unary OTLP/gRPC calls over one HTTP/2 connection, several in flight, from one thread.

    ``send(body)`` writes a call and returns at once; ``wait(timeout)`` reads what the server
    answered (at most ``timeout`` seconds of waiting) and counts the calls that ended:
    ``ok`` (gRPC status 0) and ``failed`` (by status: ``codes``). Every byte goes over the
    network as a gRPC client's would; the server cannot tell it from any other client."""

    def __init__(self, target: str, method: str = TRACE_METHOD) -> None:
        from plugins._native import _h2server  # built by scripts/setup.sh (needs libnghttp2)

        host, _, port = target.rpartition(":")
        self.sock = socket.create_connection((host.strip("[]"), int(port)), timeout=20)
        self.sock.settimeout(None)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.session = _h2server.ClientSession(stream_window=1 << 20, connection_window=16 << 20)
        self.headers = [
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", method.encode()),
            (b":authority", target.encode()),
            (b"content-type", b"application/grpc"),
            (b"te", b"trailers"),
            (b"grpc-timeout", b"30S"),
        ]
        self.in_flight = 0
        self.ok = 0
        self.failed = 0
        self.codes: collections.Counter[str] = collections.Counter()
        # the first grpc-message of each kind of failure (its cause, as the server said it)
        self.messages: dict[str, str] = {}
        self._flush()

    def _flush(self) -> None:
        out = self.session.data_to_send()
        if out:
            self.sock.sendall(out)
        self._ended(self.session.take_done())

    def _ended(self, calls: list[tuple[Any, ...]]) -> None:
        for call in calls:
            self.in_flight -= 1
            status = call[2]
            if status == 0:
                self.ok += 1
                continue
            self.failed += 1
            code = f"grpc {status}" if status >= 0 else f"HTTP {call[1]} reset {call[6]}"
            self.codes[code] += 1
            if code not in self.messages:
                self.messages[code] = bytes(call[3] or b"").decode(errors="replace")

    def send(self, body: bytes) -> None:
        self.session.request(self.headers, body, False)
        self.in_flight += 1
        self._flush()

    def wait(self, timeout: float | None) -> None:
        """Read and handle the server's answers: at most ``timeout`` s waiting for the first
        bytes (``None``: until some arrive), then whatever else is ready."""
        wait_any([self], timeout)

    def fileno(self) -> int:
        return self.sock.fileno()

    def _read(self) -> None:
        data = self.sock.recv(1 << 18)
        if not data:
            raise ConnectionError("the server closed the connection")
        self._ended(self.session.feed(data))
        self._flush()

    def close(self) -> None:
        self.sock.close()


def wait_any(clients: list[LeanGrpcClient], timeout: float | None) -> None:
    """:meth:`LeanGrpcClient.wait` for several connections at once."""
    ready, _, _ = select.select(clients, [], [], timeout)
    while ready:
        for client in ready:
            client._read()
        ready, _, _ = select.select(clients, [], [], 0)


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
