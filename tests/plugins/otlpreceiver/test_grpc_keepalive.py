"""``keepalive`` of the ``otlp`` receiver's gRPC side (the Collector's ``configgrpc`` names):
on the native server, idle and old connections get GOAWAY, silent clients are pinged and
closed when they do not answer, clients pinging too often get GOAWAY "too_many_pings"; on
grpcio's server the same options become its channel arguments."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import h2.errors
import h2.events
import pytest
from hyperframe.frame import PingFrame, SettingsFrame

from pipeline.service import Service
from plugins.otlpreceiver.config import GRPCServerConfig
from tests.plugins._native_support import require_native
from tests.plugins.otlpreceiver.test_config import COLLECTOR_KEEPALIVE
from tests.plugins.otlpreceiver.test_grpc_native import RawClient, framed
from tests.plugins.otlpreceiver.test_grpc_server import refused, request
from tests.support import free_port, running_service, wait_until

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


@pytest.fixture
def native(monkeypatch: pytest.MonkeyPatch) -> None:
    require_native("_h2server")
    monkeypatch.delenv("PIPELINE_GRPC_SERVER", raising=False)


def config(port: int, grpc: str) -> str:
    return f"""
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: "127.0.0.1:{port}"
{grpc}
exporters:
  debug: {{verbosity: basic}}
service:
  pipelines:
    traces: {{receivers: [otlp], exporters: [debug]}}
"""


def goaway(client: RawClient) -> h2.events.ConnectionTerminated | None:
    ends = [e for e in client.events if isinstance(e, h2.events.ConnectionTerminated)]
    return ends[-1] if ends else None


async def test_idle_connections_get_goaway(tmp_path: Path, native: None) -> None:
    port = free_port()
    grpc = "        keepalive: {server_parameters: {max_connection_idle: 500ms}}"
    async with running_service(config(port, grpc), tmp_path):
        c = await RawClient.open(port)
        sid = await c.call(framed(request(1)))
        await c.read_until(lambda: c.ended(sid))
        start = time.monotonic()
        await c.read_until(lambda: "eof" in c.events, within=5)
        end = goaway(c)
        assert end is not None and end.error_code == h2.errors.ErrorCodes.NO_ERROR
        assert end.additional_data == b"max_connection_idle"
        assert 0.4 < time.monotonic() - start < 3
        await c.close()


async def test_old_connections_get_goaway_then_close_after_the_grace(
    tmp_path: Path, native: None
) -> None:
    port = free_port()
    grpc = (
        "        keepalive: {server_parameters: "
        "{max_connection_age: 500ms, max_connection_age_grace: 500ms}}"
    )
    async with running_service(config(port, grpc), tmp_path):
        c = await RawClient.open(port)
        half = c.start()  # a call that never ends: the grace period ends it
        c.conn.send_data(half, framed(request(1))[:10])
        await c.flush()
        start = time.monotonic()
        await c.read_until(lambda: goaway(c) is not None, within=5)
        assert 0.4 < time.monotonic() - start < 2.5
        assert goaway(c).error_code == h2.errors.ErrorCodes.NO_ERROR  # type: ignore[union-attr]
        await c.read_until(lambda: "eof" in c.events, within=5)
        assert time.monotonic() - start < 4
        await c.close()


def silent_client(port: int) -> float:
    """Preface and SETTINGS, then never a byte more (no PING ACK): seconds until closed."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(PREFACE + SettingsFrame(0).serialize())
    start = time.monotonic()
    try:
        while s.recv(65536):
            pass
    except OSError:
        pass
    s.close()
    return time.monotonic() - start


async def test_silent_clients_are_pinged_and_closed(tmp_path: Path, native: None) -> None:
    port = free_port()
    grpc = "        keepalive: {server_parameters: {time: 300ms, timeout: 300ms}}"
    async with running_service(config(port, grpc), tmp_path) as service:
        # a client that answers pings (the h2 library does, while it reads) stays
        c = await RawClient.open(port)
        silent = asyncio.create_task(asyncio.to_thread(silent_client, port))
        await c.read_until(silent.done, within=5)
        waited = await silent
        assert 0.5 < waited < 3
        assert any(isinstance(e, h2.events.PingReceived) for e in c.events)
        assert refused(service, "keepalive_timeout") == 1
        sid = await c.call(framed(request(1)))
        await c.read_until(lambda: c.ended(sid))
        assert c.headers(sid)["grpc-status"] == "0"
        await c.close()


def pinger(port: int, pings: int) -> bytes:
    """Pings back to back with no call: the GOAWAY's debug data."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(PREFACE + SettingsFrame(0).serialize())
    for i in range(pings):
        s.sendall(PingFrame(0, opaque_data=i.to_bytes(8, "big")).serialize())
    data = b""
    try:
        while chunk := s.recv(65536):
            data += chunk
    except OSError:
        pass
    s.close()
    return data


async def test_clients_pinging_too_often_get_too_many_pings(tmp_path: Path, native: None) -> None:
    port = free_port()
    async with running_service(config(port, ""), tmp_path) as service:  # min_time: 5m
        data = await asyncio.to_thread(pinger, port, 5)
        assert b"too_many_pings" in data
        await wait_until(lambda: refused(service, "too_many_pings") == 1)


def test_grpcio_gets_the_options_as_channel_arguments() -> None:
    from plugins.otlpreceiver.grpc_server import GRPCServer

    cfg = GRPCServerConfig.model_validate(
        {
            "max_connections": 7,
            "max_header_list_size": 4096,
            "handshake_timeout": "2s",
            "keepalive": COLLECTOR_KEEPALIVE,
        }
    )
    options = dict(GRPCServer(None, cfg).options())  # type: ignore[arg-type]
    assert options["grpc.max_allowed_incoming_connections"] == 7
    assert options["grpc.max_metadata_size"] == 4096
    assert options["grpc.server_handshake_timeout_ms"] == 2000
    assert options["grpc.max_connection_idle_ms"] == 11000
    assert options["grpc.max_connection_age_ms"] == 12000
    assert options["grpc.max_connection_age_grace_ms"] == 13000
    assert options["grpc.keepalive_time_ms"] == 30000
    assert options["grpc.keepalive_timeout_ms"] == 5000
    assert options["grpc.http2.min_ping_interval_without_data_ms"] == 10000
    assert options["grpc.keepalive_permit_without_calls"] == 1


async def test_grpcio_server_starts_with_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import grpc

    monkeypatch.setenv("PIPELINE_GRPC_SERVER", "grpcio")
    port = free_port()
    grpc_cfg = (
        "        max_connections: 10\n"
        "        keepalive: {server_parameters: {max_connection_idle: 1s}}"
    )
    service: Service
    async with running_service(config(port, grpc_cfg), tmp_path) as service:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary(
                "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
            )
            await call(request(2))
        assert (
            service.telemetry.value("otelcol_receiver_accepted_spans_total", receiver="otlp") == 2
        )
