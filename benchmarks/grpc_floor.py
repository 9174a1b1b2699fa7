"""The floor under any Python gRPC receiver: a grpc.aio server that takes the OTLP trace
``Export`` call as raw bytes (as the gateway's receiver does) and answers at once, doing
nothing else. Run beside the gateway in ``benchmarks/agent_pipeline.py`` (case ``grpc floor``)
to show how much of the CPU per span is grpcio's own per-request cost.

    python -m benchmarks.grpc_floor --port 4317
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import grpc

SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
EMPTY_RESPONSE = b""  # an ExportTraceServiceResponse with no partial success


async def serve(port: int) -> None:
    async def export(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return EMPTY_RESPONSE

    handler = grpc.method_handlers_generic_handler(
        SERVICE, {"Export": grpc.unary_unary_rpc_method_handler(export)}
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(serve(parser.parse_args().port))


if __name__ == "__main__":
    main()
