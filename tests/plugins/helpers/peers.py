"""Real peers for the tests: an MCP server subprocess, a port that accepts connections and
never answers, a server that speaks broken JSON-RPC, and local HTTP servers (targets, proxies
and webhooks beside a real Prometheus or Alertmanager)."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Self

import aiohttp
from aiohttp import web

from tests.support import free_port

HELPERS = Path(__file__).resolve().parent


def wait_port(port: int, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on port {port} after {within}s")


@contextlib.contextmanager
def mcp_server() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """The official ``mcp`` package serving streamable HTTP; yields (url, process)."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(HELPERS / "mcp_server.py"), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port)
        yield f"http://127.0.0.1:{port}/mcp", proc
    finally:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def silent_port() -> Iterator[int]:
    """A port whose connections are accepted (by the kernel) but never answered."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


@contextlib.asynccontextmanager
async def http_server(app: web.Application) -> AsyncIterator[str]:
    """Serve ``app`` on a free port; yields its base URL."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


class LocalServer:
    """A local HTTP server on a free port (``port`` and ``url``, known before it listens),
    serving the routes a subclass gives in :meth:`routes` while it is entered (``async
    with``)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._runner: web.AppRunner | None = None

    def routes(self) -> list[web.RouteDef]:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.add_routes(self.routes())
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


async def forward(target: str, request: web.Request, body: bytes) -> web.Response:
    """``request`` (its ``body``, already read) posted to ``target``, answered as it answers."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(target, data=body, headers=request.headers) as resp,
    ):
        return web.Response(status=resp.status, body=await resp.read())
