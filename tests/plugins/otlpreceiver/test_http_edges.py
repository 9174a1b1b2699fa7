"""Attacks on the HTTP/1.1 edge (pipeline/netedge.py's HTTPEdge around aiohttp) of the OTLP
receiver and of the Jaeger receiver, against a gateway subprocess: slowloris (heads that never
end), slow bodies, clients that do not read, more connections than allowed, and bodies held
unfinished across connections (the process-wide budget). During each, the OTel SDK's OTLP/HTTP
exporter keeps getting through."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator

import pytest

from tests.edge_support import EdgeGateway, rss_bound, sdk_http_export, wait_for


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeGateway]:
    with EdgeGateway(tmp_path_factory.mktemp("http-edges")) as gw:
        assert sdk_http_export(gw.http)
        yield gw


def slowloris(port: int, n: int, seconds: float) -> list[float]:
    """``n`` connections sending a request head one header line every 0.2 s; the seconds
    each lasted before the server closed it."""
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.setblocking(False)
        s.send(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\n")
        socks.append(s)
    start = time.monotonic()
    lasted = [0.0] * n
    open_ = set(range(n))
    i = 0
    while open_ and time.monotonic() - start < seconds:
        time.sleep(0.2)
        i += 1
        for k in list(open_):
            try:
                socks[k].send(f"X-Slow-{i}: {'y' * 10}\r\n".encode())
                if socks[k].recv(1) == b"":
                    raise ConnectionResetError
            except BlockingIOError:
                pass
            except OSError:
                lasted[k] = time.monotonic() - start
                open_.discard(k)
    for s in socks:
        s.close()
    for k in open_:
        lasted[k] = seconds
    return lasted


async def test_slowloris_heads_are_cut_at_read_header_timeout(gateway: EdgeGateway) -> None:
    gw = gateway
    before, cpu = gw.refused("read_header_timeout", "http"), gw.cpu_s()
    lasted, ok = await asyncio.gather(
        asyncio.to_thread(slowloris, gw.http, 200, 6.0),
        asyncio.to_thread(sdk_http_export, gw.http),
    )
    assert ok, "the SDK's OTLP/HTTP export failed during slowloris"
    assert max(lasted) < 3.5, f"a slow head was kept {max(lasted):.1f}s (limit 1s)"
    wait_for(lambda: gw.refused("read_header_timeout", "http") >= before + 200)
    print(f"slowloris: 200 connections cut after {max(lasted):.2f}s, CPU {gw.cpu_s() - cpu:.2f}s")


def slow_body(port: int, path: str = "/v1/traces") -> float:
    """A head announcing 100 KB, then 10 bytes every 0.2 s: seconds until closed."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
        "Content-Length: 100000\r\n\r\n".encode()
    )
    start = time.monotonic()
    s.setblocking(False)
    try:
        while time.monotonic() - start < 10:
            time.sleep(0.2)
            s.send(b"\x0a" * 10)
            try:
                if s.recv(65536) == b"":
                    break
            except BlockingIOError:
                pass
    except OSError:
        pass
    s.close()
    return time.monotonic() - start


async def test_slow_body_is_cut_at_read_timeout(gateway: EdgeGateway) -> None:
    gw = gateway
    before = gw.refused("read_timeout", "http")
    waited, ok = await asyncio.gather(
        asyncio.to_thread(slow_body, gw.http), asyncio.to_thread(sdk_http_export, gw.http)
    )
    assert ok
    assert 1.8 <= waited < 4.0  # read_timeout: 2s
    wait_for(lambda: gw.refused("read_timeout", "http") == before + 1)


def no_reader(port: int, requests: int) -> float:
    """Pipelined requests from a client that never reads: seconds until closed."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    body = b""
    head = (
        "POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    # an unknown path answers 404 with a body: many of them fill the socket buffers
    junk = b"GET /" + b"z" * 4000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    start = time.monotonic()
    s.setblocking(False)
    try:
        s.send(head + body)
        for _ in range(requests):
            s.send(junk)
            time.sleep(0.001)
    except OSError:
        pass
    while time.monotonic() - start < 10:
        time.sleep(0.1)
        try:
            s.send(junk)
        except BlockingIOError:
            continue
        except OSError:
            break
    s.close()
    return time.monotonic() - start


async def test_connection_limit_refuses_busy_and_evicts_idle(gateway: EdgeGateway) -> None:
    gw = gateway
    evicted = gw.refused("evicted_idle", "http")
    socks = []
    for _ in range(400):  # max_connections: 300
        socks.append(socket.create_connection(("127.0.0.1", gw.http), timeout=5))
    try:
        assert await asyncio.to_thread(sdk_http_export, gw.http)
        wait_for(lambda: gw.refused("evicted_idle", "http") >= evicted + 100)
    finally:
        for s in socks:
            s.close()


def hold_bodies(
    port: int, volume: int, size: int, within: float
) -> tuple[int, list[socket.socket]]:
    """Connections that each send up to ``size - 1`` bytes of a ``size``-byte body and stop,
    opened one after the other until ``volume`` bytes were sent (or ``within`` seconds
    passed); returns what was sent and the connections still open."""
    out = []
    chunk = b"\x0a" * 65536
    sent = 0
    start = time.monotonic()
    while sent < volume and time.monotonic() - start < within:
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(
            b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
            + f"Content-Length: {size}\r\n\r\n".encode()
        )
        left = size - 1
        try:
            while left > 0:
                n = s.send(chunk[: min(left, len(chunk))])
                left -= n
                sent += n
        except OSError:
            s.close()
            continue
        out.append(s)
    return sent, out


async def test_unfinished_bodies_are_bounded_by_the_process_budget(
    gateway: EdgeGateway,
) -> None:
    gw = gateway
    rss = gw.rss_mib()
    before = gw.refused("budget", "http")
    # 512 MiB in bodies of 16 MiB never finished, against a budget of 32 MiB
    # (service.limits.max_unfinished_request_bytes)
    sent, socks = await asyncio.to_thread(hold_bodies, gw.http, 512 << 20, 16 << 20, 20.0)
    try:
        held = gw.metric("otelcol_server_unfinished_request_bytes")
        grown = gw.rss_mib() - rss
        evicted = gw.refused("budget", "http") - before
        ok = await asyncio.to_thread(sdk_http_export, gw.http)
        assert ok, "the SDK's OTLP/HTTP export failed while bodies were held"
        print(
            f"unfinished bodies: {sent >> 20} MiB sent, {held / (1 << 20):.1f} MiB held, "
            f"{evicted:.0f} connections evicted, RSS +{grown:.1f} MiB"
        )
        assert sent >= 256 << 20
        assert held <= 32 << 20
        assert grown < rss_bound(32 * 3 + 16)
    finally:
        for s in socks:
            s.close()


async def test_jaeger_http_has_the_same_edge(gateway: EdgeGateway) -> None:
    gw = gateway
    before = gw.refused("read_header_timeout", "http")
    lasted = await asyncio.to_thread(slowloris, gw.jaeger, 20, 4.0)
    assert max(lasted) < 3.5
    wait_for(lambda: gw.refused("read_header_timeout", "http") >= before + 20)


async def test_client_that_does_not_read_is_cut_at_write_timeout(gateway: EdgeGateway) -> None:
    gw = gateway
    before = gw.refused("write_timeout", "http")
    waited, ok = await asyncio.gather(
        asyncio.to_thread(no_reader, gw.http, 3000), asyncio.to_thread(sdk_http_export, gw.http)
    )
    assert ok
    assert waited < 6.0  # write_timeout: 2s
    wait_for(lambda: gw.refused("write_timeout", "http") >= before + 1)
