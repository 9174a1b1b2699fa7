"""The native OTLP/gRPC client (``plugins/otlpexporter/native_sender.py``) against real gRPC
servers (grpcio's, and the gateway's own receiver): what it sends (headers, compression,
``grpc-timeout``), one connection for concurrent calls, deadlines, refused and lost
connections, and a server going away and coming back."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import aiohttp.web
import grpc
import pytest

from pipeline import RetryableError, Signal
from plugins.otlpexporter.config import OTLPExporterConfig
from plugins.otlpexporter.native_sender import NativeGrpcSender, grpc_timeout
from tests.plugins._native_support import require_native
from tests.plugins.otlpreceiver.test_grpc_server import accepted, request
from tests.plugins.otlpreceiver.test_grpc_server import config as receiver_config
from tests.support import free_port, running_service, wait_until

TRACE_SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"


@pytest.fixture
def grpc_client() -> str:
    """This module tests the native client only (it replaces the package's two-client
    fixture)."""
    return "native"


@pytest.fixture
def native(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.delenv("PIPELINE_GRPC_CLIENT", raising=False)
    return require_native("_h2server")


def sender(native: Any, port: int, **options: Any) -> NativeGrpcSender:
    cfg = OTLPExporterConfig(endpoint=f"127.0.0.1:{port}", tls={"insecure": True}, **options)
    return NativeGrpcSender(cfg, logging.getLogger("test"), None, native)


class Recorder:
    """A grpcio server recording each call's request, metadata and peer."""

    def __init__(self, delay: float = 0.0) -> None:
        self.calls: list[tuple[bytes, dict[str, str], str, float | None]] = []
        self.delay = delay
        self.port = free_port()
        self.server: Any = None

    async def __aenter__(self) -> Recorder:
        async def export(req: bytes, context: grpc.aio.ServicerContext) -> bytes:
            md = {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}
            self.calls.append((req, md, context.peer(), context.time_remaining()))
            if self.delay:
                await asyncio.sleep(self.delay)
            return b""

        handler = grpc.method_handlers_generic_handler(
            TRACE_SERVICE, {"Export": grpc.unary_unary_rpc_method_handler(export)}
        )
        self.server = grpc.aio.server()
        self.server.add_generic_rpc_handlers((handler,))
        self.server.add_insecure_port(f"127.0.0.1:{self.port}")
        await self.server.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.server.stop(0)


def test_grpc_timeout_header() -> None:
    assert grpc_timeout(5) == b"5000m"
    assert grpc_timeout(0.0001) == b"1m"
    assert grpc_timeout(200_000) == b"200000S"


async def test_what_is_sent_and_one_connection_for_concurrent_calls(native: Any) -> None:
    async with Recorder() as backend:
        s = sender(
            native,
            backend.port,
            headers={"X-Tenant": "acme"},
            compression="gzip",
            timeout="7s",
        )
        payloads = [request(i % 5 + 1) for i in range(40)]
        await asyncio.gather(*(s.send(Signal.TRACES, p) for p in payloads))
        await s.close()
    assert sorted(c[0] for c in backend.calls) == sorted(payloads)  # inflated by grpcio
    _, md, _, remaining = backend.calls[0]
    assert md["x-tenant"] == "acme"
    assert md["user-agent"].startswith("pipeline-gateway-otlp-native")
    assert remaining is not None and 5 < remaining <= 7
    assert len({c[2] for c in backend.calls}) == 1  # one connection


async def test_a_call_past_its_timeout_is_cancelled_and_retryable(native: Any) -> None:
    async with Recorder(delay=3.0) as backend:
        s = sender(native, backend.port, timeout="300ms", compression="none")
        started = time.monotonic()
        with pytest.raises(RetryableError, match="DEADLINE_EXCEEDED"):
            await s.send(Signal.TRACES, request(2))
        assert time.monotonic() - started < 2.0
        await s.close()


async def test_no_server_is_unavailable(native: Any) -> None:
    s = sender(native, free_port())
    with pytest.raises(RetryableError, match="UNAVAILABLE: cannot connect"):
        await s.send(Signal.TRACES, request(1))
    await s.close()


async def test_a_server_that_is_not_http2_is_unavailable(native: Any) -> None:
    app = aiohttp.web.Application()
    runner = aiohttp.web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = aiohttp.web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        s = sender(native, port)
        with pytest.raises(RetryableError, match="UNAVAILABLE"):
            await s.send(Signal.TRACES, request(1))
        await s.close()
    finally:
        await runner.cleanup()


async def test_the_server_goes_away_and_comes_back(native: Any, tmp_path: Any) -> None:
    port = free_port()
    s = sender(native, port, compression="none")
    async with running_service(receiver_config(port), tmp_path) as service:
        await s.send(Signal.TRACES, request(3))
        await wait_until(lambda: accepted(service) == 3)
    # stopped: its GOAWAY, then the connection closed
    with pytest.raises(RetryableError, match="UNAVAILABLE"):
        await s.send(Signal.TRACES, request(1))
    async with running_service(receiver_config(port), tmp_path) as service:
        await s.send(Signal.TRACES, request(4))  # a new connection
        await wait_until(lambda: accepted(service) == 4)
    await s.close()
