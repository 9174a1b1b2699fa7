"""A counting OTLP sink for the benchmarks: accepts OTLP/gRPC and OTLP/HTTP trace requests,
counts their spans (shallow parse, no span decoded) and reports the count on
``GET /count`` of its control port.

How it counts: a request compressed by the exporter (``grpc-encoding: gzip``, the OTLP
exporters' default; ``Content-Encoding: gzip`` over HTTP) is decompressed by grpcio's server
(aiohttp's over HTTP, ``auto_decompress``) before :class:`Counter` sees it: a span count needs
the protobuf, and gzip cannot be counted without inflating it. Then one shallow parse
(``pipeline._wire.ShallowTraces``: resource and scope levels, each span kept as its encoded
bytes, none decoded) and ``count_spans``; ``requests`` and ``bytes`` (decompressed) beside it.
The benchmark compares ``spans`` with what the server accepted: every accepted span came out.
The sink runs on its own CPU (``benchmarks/forward_path.py`` pins it to CPU 1), apart from the
server measured.

    python -m benchmarks.sink --grpc-port P --http-port Q --control-port C
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from typing import Any

import grpc
from aiohttp import web

from pipeline import _wire


class Counter:
    def __init__(self) -> None:
        self.spans = 0
        self.requests = 0
        self.bytes = 0

    def add(self, data: bytes) -> None:
        self.spans += _wire.count_spans(_wire.ShallowTraces.FromString(data))
        self.requests += 1
        self.bytes += len(data)


async def serve(grpc_port: int, http_port: int, control_port: int) -> None:
    counter = Counter()

    async def export(request: bytes, context: Any) -> bytes:
        counter.add(request)
        return b""

    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 256 << 20)])
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "opentelemetry.proto.collector.trace.v1.TraceService",
                {"Export": grpc.unary_unary_rpc_method_handler(export)},
            ),
        )
    )
    server.add_insecure_port(f"127.0.0.1:{grpc_port}")
    await server.start()

    async def http_export(request: web.Request) -> web.Response:
        counter.add(await request.read())
        return web.Response(body=b"", content_type="application/x-protobuf")

    async def count(request: web.Request) -> web.Response:
        return web.json_response(
            {"spans": counter.spans, "requests": counter.requests, "bytes": counter.bytes}
        )

    app = web.Application(client_max_size=256 << 20)
    app.router.add_post("/v1/traces", http_export)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", http_port).start()
    control = web.Application()
    control.router.add_get("/count", count)
    crunner = web.AppRunner(control, access_log=None)
    await crunner.setup()
    await web.TCPSite(crunner, "127.0.0.1", control_port).start()
    print(json.dumps({"ready": True}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(0)
    await runner.cleanup()
    await crunner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--control-port", type=int, required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.grpc_port, args.http_port, args.control_port))


if __name__ == "__main__":
    main()
