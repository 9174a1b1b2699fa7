"""The gateway at its file-descriptor limit (``RLIMIT_NOFILE`` 256, set on the subprocess):
thousands of connections to the data endpoints (OTLP gRPC and HTTP, Jaeger) must leave the
health check, the self-metrics endpoint and the ``prometheus`` exporter reachable, keep the
log quiet (the audit saw 24,600 lines a second of ``socket.accept() out of system resource``),
count what was refused, and serve good clients, during the flood and after it."""

from __future__ import annotations

import asyncio
import resource
import socket
import time
from pathlib import Path

from tests.edge_support import EdgeGateway, sdk_grpc_export, sdk_http_export, wait_for

LIMIT = 256


def low_fd_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (LIMIT, LIMIT))


def flood(ports: list[int], per_port: int) -> list[socket.socket]:
    out = []
    for port in ports:
        for _ in range(per_port):
            try:
                out.append(socket.create_connection(("127.0.0.1", port), timeout=2))
            except OSError:
                pass
    return out


async def test_at_the_descriptor_limit_health_and_metrics_stay_reachable(tmp_path: Path) -> None:
    with EdgeGateway(tmp_path, max_connections=4096, preexec_fn=low_fd_limit) as gw:
        lines = gw.log_lines()
        # 3 x 400 connections against 256 descriptors
        socks = await asyncio.to_thread(flood, [gw.grpc, gw.http, gw.jaeger], 400)
        try:
            start = time.monotonic()
            assert gw.fds() < LIMIT
            assert gw.health_status() == 200
            assert "otelcol_process_uptime" in gw.scrape()
            assert gw.scrape(gw.prom) is not None

            def count(reason: str) -> float:
                return gw.refused(reason) + gw.refused(reason, "http")

            # every connection beyond what the descriptors allow was refused, or made room by
            # closing an idle one (or was closed for saying nothing in time)
            reasons = ("fd_reserve", "evicted_idle", "handshake_timeout", "read_header_timeout")
            wait_for(lambda: sum(count(r) for r in reasons) >= len(socks) - LIMIT)
            reserve_refused, evicted = count("fd_reserve"), count("evicted_idle")
            # good clients get through while the flood holds its connections (idle flood
            # connections make room)
            ok_grpc, ok_http = await asyncio.gather(
                asyncio.to_thread(sdk_grpc_export, gw.grpc),
                asyncio.to_thread(sdk_http_export, gw.http),
            )
            assert ok_grpc and ok_http
            assert gw.health_status() == 200
            elapsed = time.monotonic() - start
            logged = gw.log_lines() - lines
            print(
                f"fd flood: {len(socks)} connections opened, {reserve_refused:.0f} refused "
                f"(fd_reserve), {evicted:.0f} idle ones closed, {logged} log lines in "
                f"{elapsed:.1f}s"
            )
            assert logged < 60
        finally:
            for s in socks:
                s.close()
        # after the flood, everything is as before
        wait_for(lambda: gw.fds() < 64, within=10)
        assert sdk_grpc_export(gw.grpc) and sdk_http_export(gw.http)
