"""The own-metrics HTTP endpoint: what a scraper gets, and what malformed requests get."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest

from pipeline import metricsserver
from pipeline.metricsserver import MetricsServer

BODY = b"# TYPE up gauge\nup 1.0\n"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@pytest.fixture
async def server() -> AsyncIterator[MetricsServer]:
    calls = 0

    async def collect() -> tuple[bytes, str]:
        nonlocal calls
        calls += 1
        return BODY, CONTENT_TYPE

    srv = MetricsServer("/metrics", collect)
    await srv.start("127.0.0.1:0")
    try:
        yield srv
    finally:
        await srv.close()


def _port(srv: MetricsServer) -> int:
    return srv.sockets[0][1]


async def _raw(srv: MetricsServer, data: bytes, *, read_all: bool = True) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", _port(srv))
    try:
        writer.write(data)
        await writer.drain()
        if read_all:
            return await asyncio.wait_for(reader.read(), 5)
        return await asyncio.wait_for(reader.read(65536), 5)
    finally:
        writer.close()


async def test_get_serves_the_handlers_body(server: MetricsServer) -> None:
    async with (
        aiohttp.ClientSession() as s,
        s.get(f"http://127.0.0.1:{_port(server)}/metrics") as resp,
    ):
        assert resp.status == 200
        assert resp.headers["Content-Type"] == CONTENT_TYPE
        assert await resp.read() == BODY


async def test_query_string_is_ignored_and_connection_is_kept_alive(server: MetricsServer) -> None:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as s:
        for _ in range(3):
            async with s.get(f"http://127.0.0.1:{_port(server)}/metrics?x=1") as resp:
                assert resp.status == 200
                assert await resp.read() == BODY
        assert len(server._connections) == 1  # one TCP connection served all three


async def test_pipelined_requests_on_one_connection(server: MetricsServer) -> None:
    request = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
    out = await _raw(
        server, request * 2 + b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert out.count(b"HTTP/1.1 200 OK") == 3
    assert out.count(BODY) == 3
    assert out.endswith(BODY)


async def test_head_has_headers_without_body(server: MetricsServer) -> None:
    out = await _raw(server, b"HEAD /metrics HTTP/1.0\r\n\r\n")
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert f"Content-Length: {len(BODY)}".encode() in head
    assert body == b""


async def test_http_1_0_closes_unless_asked_to_keep_alive(server: MetricsServer) -> None:
    out = await _raw(server, b"GET /metrics HTTP/1.0\r\n\r\n")
    assert b"Connection: close" in out and out.endswith(BODY)
    reader, writer = await asyncio.open_connection("127.0.0.1", _port(server))
    try:
        for _ in range(2):
            writer.write(b"GET /metrics HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert b"Connection: keep-alive" in head
            assert await reader.readexactly(len(BODY)) == BODY
    finally:
        writer.close()


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", b"404 Not Found"),
        (b"GET /%6Detrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", b"200 OK"),
        (b"GET /metricsx HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", b"404 Not Found"),
        (
            b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
            b"Connection: close\r\n\r\nabc",
            b"405",
        ),
        (b"GET /metrics\r\n\r\n", b"400 Bad Request"),
        (b"GET /metrics HTTP/2.0\r\n\r\n", b"400 Bad Request"),
        (b"GET /metrics HTTP/1.1\r\n\r\n", b"400 Bad Request"),  # no Host
        (b"GET /metrics HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n", b"400 Bad Request"),
        (b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: x\r\n\r\n", b"400 Bad Request"),
        (b"GET /metrics HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", b"501"),
        (b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999\r\n\r\n", b"413"),
    ],
)
async def test_errors(server: MetricsServer, request_bytes: bytes, status: bytes) -> None:
    out = await _raw(server, request_bytes)
    assert out.startswith(b"HTTP/1.1 " + status)


async def test_405_names_the_allowed_methods(server: MetricsServer) -> None:
    out = await _raw(server, b"DELETE /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 405 Method Not Allowed")
    assert b"Allow: GET,HEAD" in out


async def test_oversized_head_is_refused(server: MetricsServer) -> None:
    big = (
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nX: "
        + b"a" * (metricsserver.MAX_HEAD_BYTES + 10)
        + b"\r\n\r\n"
    )
    out = await _raw(server, big)
    assert out.startswith(b"HTTP/1.1 431")


async def test_idle_connection_is_closed(
    server: MetricsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(metricsserver, "IDLE_TIMEOUT", 0.2)
    reader, writer = await asyncio.open_connection("127.0.0.1", _port(server))
    try:
        writer.write(b"GET /metr")  # never finished
        assert await asyncio.wait_for(reader.read(), 5) == b""
    finally:
        writer.close()


async def test_handler_failure_is_a_500() -> None:
    async def broken() -> tuple[bytes, str]:
        raise RuntimeError("boom")

    srv = MetricsServer("/metrics", broken)
    await srv.start("127.0.0.1:0")
    try:
        out = await _raw(srv, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 500 Internal Server Error")
    finally:
        await srv.close()


async def test_close_ends_open_connections_and_frees_the_port(server: MetricsServer) -> None:
    port = _port(server)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    await asyncio.wait_for(reader.readuntil(BODY), 5)
    await asyncio.wait_for(server.close(), 5)
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    await server.close()  # twice is fine
    again = MetricsServer("/metrics", server.handler)
    await again.start(f"127.0.0.1:{port}")
    await again.close()


async def test_bind_failure_raises_oserror(server: MetricsServer) -> None:
    other = MetricsServer("/metrics", server.handler)
    with pytest.raises(OSError):
        await other.start(f"127.0.0.1:{_port(server)}")
    assert other.sockets == []


async def test_connections_are_bounded_and_slow_heads_cut() -> None:
    from pipeline.configtypes import Seconds
    from pipeline.netedge import ControlHTTPServerLimits

    refused: list[str] = []

    async def collect() -> tuple[bytes, str]:
        return BODY, CONTENT_TYPE

    limits = ControlHTTPServerLimits(max_connections=2, read_header_timeout=Seconds(0.3))
    srv = MetricsServer("/metrics", collect, refused.append, limits)
    await srv.start("127.0.0.1:0")
    try:
        # two connections writing a head that never ends: cut at read_header_timeout, counted
        slow = [await asyncio.open_connection("127.0.0.1", _port(srv)) for _ in range(2)]
        for _, writer in slow:
            writer.write(b"GET /metrics HTTP/1.1\r\n")
        for reader, _ in slow:
            async with asyncio.timeout(3):
                assert await reader.read() == b""  # closed at read_header_timeout
        assert refused.count("read_header_timeout") == 2
        # a scrape still gets its answer
        url = f"http://127.0.0.1:{_port(srv)}/metrics"
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            assert response.status == 200
            assert await response.read() == BODY
        for _, writer in slow:
            writer.close()
    finally:
        await srv.close()


async def test_a_connection_cancelled_as_its_next_request_arrives_ends(
    server: MetricsServer,
) -> None:
    """``close()`` cancels a keep-alive connection in the loop turn in which its next request
    arrives: the connection ends, unanswered. Before, ``asyncio.wait_for`` (Python 3.11)
    answered the read instead of the cancellation: the connection served the request and
    waited for the next one for up to ``IDLE_TIMEOUT`` (75 s), and ``close()`` (the
    gateway's shutdown) with it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", _port(server))
    task: asyncio.Task[None] | None = None
    try:
        for _ in range(500):
            if server._connections:
                (task,) = server._connections
                # the server's own stream reader of this connection, waiting for a request
                served = task.get_coro().cr_frame.f_locals["reader"]  # type: ignore[union-attr]
                if served._waiter is not None:
                    break
            await asyncio.sleep(0.01)
        assert task is not None and served._waiter is not None
        served.feed_data(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")  # a request arrives ...
        task.cancel()  # ... in the turn in which close() cancels the connection
        done, _ = await asyncio.wait({task}, timeout=5)  # a guard against the hang only
        assert done, "the connection went on serving after it was cancelled"
        assert await asyncio.wait_for(reader.read(), 5) == b""  # ended, unanswered
    finally:
        if task is not None:
            task.cancel()  # (the old code's connection: cancelled again, so the test ends)
        writer.close()
