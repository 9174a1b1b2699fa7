"""pipeline/netedge.py on its own: the process-wide budget of unfinished request data, the
listener's connection cap (idle ones make room), accept errors, the TLS handshake timeout,
the HTTP/1.1 timeouts through pipeline.httpserver.serve, and the descriptor limit."""

from __future__ import annotations

import asyncio
import errno
import socket
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

from aiohttp import web

from pipeline.component import ComponentID, CreateSettings, Kind
from pipeline.configtypes import Seconds
from pipeline.httpserver import serve
from pipeline.netedge import (
    ACCEPT_PAUSE,
    FDS,
    HTTPServerLimits,
    Listener,
    RequestDataBudget,
    sweep_tick,
)
from pipeline.telemetry import SelfTelemetry, component_logger
from tests.plugins.otlphttpexporter.test_tls_and_json import make_certs
from tests.support import free_port, wait_until


# -- the budget -------------------------------------------------------------------------------
class Holder:
    def __init__(self, budget: RequestDataBudget, name: str) -> None:
        self.budget = budget
        self.name = name
        self.evicted = 0

    def budget_evict(self) -> None:
        self.evicted += 1
        self.budget.update(self, 0)

    def __repr__(self) -> str:
        return self.name


def test_budget_evicts_the_largest_holders_for_a_smaller_one() -> None:
    budget = RequestDataBudget(100)
    a, b, c, small = (Holder(budget, n) for n in ("a", "b", "c", "small"))
    budget.update(a, 50)
    budget.update(b, 30)
    budget.update(c, 15)
    assert budget.used == 95 and budget.room == 5
    # 20 bytes for a holder of nothing: the largest (a) goes first, and that is enough
    assert budget.make_room(small, 20) == 55
    assert (a.evicted, b.evicted, c.evicted) == (1, 0, 0)
    budget.update(small, 20)
    budget.update(a, 35)
    assert budget.room == 0
    # a holder of 20 needing 10 more may evict only those holding over twice 30
    assert budget.make_room(small, 10) == 0
    assert (a.evicted, b.evicted) == (1, 0)
    # holders that changed size leave stale entries behind: they are skipped
    for n in range(1, 40):
        budget.update(c, n % 7 + 1)
    budget.update(b, 0)
    budget.update(a, 0)
    budget.update(small, 0)
    budget.update(c, 0)
    assert budget.used == 0 and budget.room == 100


# -- listeners ------------------------------------------------------------------------------
class Conn(asyncio.Protocol):
    """A connection that says when it is busy (any byte received) and can be evicted."""

    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        self.transport: Any = None
        self.busy = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.listener.connected(self, transport)

    def data_received(self, data: bytes) -> None:
        self.busy = True
        self.listener.set_idle(self, False)

    def connection_lost(self, exc: Exception | None) -> None:
        self.listener.forget(self, self.transport)

    def edge_check(self, now: float) -> None:
        pass

    def edge_evict(self) -> bool:
        if self.busy:
            return False
        self.transport.close()
        return True


class Counts:
    def __init__(self) -> None:
        self.refused: list[str] = []
        self.logged: list[str] = []

    def refuse(self, reason: str) -> None:
        self.refused.append(reason)

    def log(self, level: int, msg: str, *args: object, **kw: Any) -> None:
        self.logged.append(msg % args)


async def closed(reader: asyncio.StreamReader, within: float = 3.0) -> bool:
    try:
        async with asyncio.timeout(within):
            return await reader.read(1) == b""
    except (TimeoutError, ConnectionError):
        return False


async def test_listener_cap_evicts_the_longest_idle_and_refuses_when_all_are_busy() -> None:
    counts = Counts()
    port = free_port()
    listener: Listener
    listener = Listener(
        f"127.0.0.1:{port}",
        lambda: Conn(listener),
        refused=counts.refuse,
        log_limited=counts.log,
        max_connections=2,
    )
    await listener.start()
    try:
        first = await asyncio.open_connection("127.0.0.1", port)
        second = await asyncio.open_connection("127.0.0.1", port)
        await wait_until(lambda: len(listener.by_transport) == 2)
        # a third: the first (idle the longest) makes room
        third = await asyncio.open_connection("127.0.0.1", port)
        assert await closed(first[0])
        assert counts.refused == ["evicted_idle"]
        # both left busy: a fourth is refused
        for _, writer in (second, third):
            writer.write(b"x")
            await writer.drain()
        await wait_until(lambda: all(c.busy for c in listener.connections))
        try:  # refused with a reset, which may come before the connect is seen done
            fourth = await asyncio.open_connection("127.0.0.1", port)
            assert await closed(fourth[0])
            fourth[1].close()
        except ConnectionResetError:
            pass
        await wait_until(lambda: counts.refused == ["evicted_idle", "max_connections"])
        assert any("max_connections" in line for line in counts.logged)
        for _, writer in (second, third):
            writer.close()
    finally:
        listener.close()


class CheckedConn(Conn):
    def __init__(self, listener: Listener) -> None:
        super().__init__(listener)
        self.checks = 0

    def edge_check(self, now: float) -> None:
        self.checks += 1


async def test_the_sweeper_does_not_tick_without_connections() -> None:
    """The timeouts are checked every tick while connections are open, and not at all while
    there is none (an idle gateway is not woken by it): counted in ticks run."""
    counts = Counts()
    port = free_port()
    listener: Listener
    made: list[CheckedConn] = []

    def factory() -> CheckedConn:
        made.append(CheckedConn(listener))
        return made[-1]

    listener = Listener(
        f"127.0.0.1:{port}", factory, refused=counts.refuse, log_limited=counts.log, tick=0.01
    )
    await listener.start()
    try:
        await asyncio.sleep(0.2)  # twenty ticks' time without a connection
        assert listener.sweeps == 0
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        await wait_until(lambda: len(made) == 1 and made[0].checks >= 3)
        assert listener.sweeps >= 3
        writer.close()
        await wait_until(lambda: not listener.connections)
        after = listener.sweeps
        await asyncio.sleep(0.2)
        assert listener.sweeps <= after + 1  # the tick under way when the last one left
    finally:
        listener.close()


class FailingSocket:
    """A listening socket whose accept() fails as at the descriptor limit."""

    def __init__(self, real: socket.socket) -> None:
        self.real = real
        self.calls = 0

    def accept(self) -> Any:
        self.calls += 1
        raise OSError(errno.EMFILE, "Too many open files")

    def fileno(self) -> int:
        return self.real.fileno()


async def test_accept_errors_pause_the_socket_and_are_counted_once() -> None:
    counts = Counts()
    port = free_port()
    listener = Listener(
        f"127.0.0.1:{port}", asyncio.Protocol, refused=counts.refuse, log_limited=counts.log
    )
    await listener.start()
    try:
        real = listener.sockets[0]
        failing = FailingSocket(real)
        loop = asyncio.get_running_loop()
        loop.remove_reader(real.fileno())
        listener._sockets = [failing]  # type: ignore[list-item]
        listener._accept(failing)  # type: ignore[arg-type]
        # one attempt, not asyncio's 100 per event: counted, logged, and the socket rests
        assert failing.calls == 1
        assert counts.refused == ["fd_exhausted"]
        assert "Too many open files" in counts.logged[0]
        assert failing in listener._paused  # type: ignore[comparison-overlap]
        await asyncio.sleep(ACCEPT_PAUSE + 0.1)
        assert failing not in listener._paused  # type: ignore[comparison-overlap]
        loop.remove_reader(real.fileno())
        listener._sockets = [real]
    finally:
        listener.close()


async def test_tls_handshake_timeout(tmp_path: Path) -> None:
    _, cert, key = make_certs(tmp_path)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    counts = Counts()
    port = free_port()
    listener: Listener
    listener = Listener(
        f"127.0.0.1:{port}",
        lambda: Conn(listener),
        refused=counts.refuse,
        log_limited=counts.log,
        ssl=ctx,
        handshake_timeout=0.3,
    )
    await listener.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)  # no ClientHello
        assert await closed(reader, within=3.0)
        await wait_until(lambda: counts.refused == ["handshake_timeout"])
        assert not listener.connections
        writer.close()
    finally:
        listener.close()


# -- HTTP/1.1 through pipeline.httpserver ------------------------------------------------------
async def test_http_timeouts_through_serve_counted_for_the_component() -> None:
    telemetry = SelfTelemetry()
    cid = ComponentID("health_check")
    settings = CreateSettings(
        id=cid,
        kind=Kind.EXTENSION,
        logger=component_logger(Kind.EXTENSION, cid),
        telemetry=telemetry.component(Kind.EXTENSION, cid),
    )

    def refused(reason: str) -> float:
        return telemetry.value(
            "otelcol_extension_refused_requests_total",
            extension="health_check",
            transport="http",
            reason=reason,
        )

    port = free_port()
    app = web.Application()

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hi")

    app.router.add_get("/", hello)
    limits = HTTPServerLimits(
        max_connections=3,
        read_header_timeout=Seconds(0.3),
        idle_timeout=Seconds(0.5),
        read_timeout=Seconds(1),
        write_timeout=Seconds(1),
    )
    serving = await serve(app, f"127.0.0.1:{port}", limits=limits, settings=settings)
    try:
        # a head that never ends: cut after read_header_timeout, counted
        r1, w1 = await asyncio.open_connection("127.0.0.1", port)
        w1.write(b"GET / HTTP/1.1\r\nHost: x\r\n")
        assert await closed(r1)
        assert refused("read_header_timeout") == 1
        # a request answered, then the idle keep-alive connection closed (not counted)
        r2, w2 = await asyncio.open_connection("127.0.0.1", port)
        w2.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await r2.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
        assert await r2.readexactly(2) == b"hi"
        assert await closed(r2, within=3.0)
        assert refused("read_header_timeout") == 1  # an idle close is not a refusal
        for w in (w1, w2):
            w.close()
    finally:
        await serving.cleanup()


def test_sweep_tick() -> None:
    assert sweep_tick() == 1.0
    assert sweep_tick(0, 10) == 1.0
    assert sweep_tick(1, 30) == 0.25
    assert sweep_tick(0.01) == 0.05


# -- descriptors ------------------------------------------------------------------------------
def test_fd_budget_reserve_and_the_limit_raised_at_start() -> None:
    before = FDS.configured
    try:
        FDS.configure(0)
        assert 64 <= FDS.reserve <= 1024
        FDS.configure(100)
        assert FDS.reserve == min(100, FDS.limit // 2)
        assert FDS.data_connections == FDS.limit - FDS.reserve - FDS.baseline
    finally:
        FDS.configure(before)
    # `pipeline run` raises the soft limit to the hard one, as Go does for the Collector
    code = (
        "import resource; from pipeline.netedge import raise_fd_limit; "
        "print(raise_fd_limit()[0], resource.getrlimit(resource.RLIMIT_NOFILE)[0])"
    )
    out = subprocess.run(
        ["prlimit", "--nofile=256:512", sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.split() == ["512", "512"]
