"""A real Alertmanager for the tests: Debian's ``prometheus-alertmanager`` (0.25) on free
ports, with the shipped routing (``configs/alerts/alertmanager.yml``) whose receivers post to a
local webhook, and its timers shortened so that notifications come in about a second (every
wait polls; nothing sleeps a fixed time)."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web

from tests.plugins.helpers.peers import LocalServer
from tests.support import ROOT, free_port, require_program, serving

SHIPPED = ROOT / "configs" / "alerts" / "alertmanager.yml"
RELAY = "http://alert-relay.example.internal"


class Webhook(LocalServer):
    """Collects Alertmanager's webhook notifications (by path: one per receiver)."""

    def __init__(self) -> None:
        super().__init__()
        self.notifications: list[dict[str, Any]] = []

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/{tail:.*}", self._handle)]

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        body["_path"] = request.path
        self.notifications.append(body)
        return web.Response(status=200)

    def alerts(self, status: str | None = None) -> list[tuple[str, dict[str, Any]]]:
        """(receiver, alert) of every notification, optionally only ``firing`` / ``resolved``."""
        out = []
        for n in self.notifications:
            for a in n.get("alerts", []):
                if status is None or a.get("status") == status:
                    out.append((n["receiver"], a))
        return out


class AlertmanagerServer:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.proc = proc
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = log

    async def alerts(self, **params: str) -> list[dict[str, Any]]:
        async with (
            aiohttp.ClientSession() as session,
            session.get(self.url + "/api/v2/alerts", params=params) as resp,
        ):
            assert resp.status == 200, await resp.text()
            result: list[dict[str, Any]] = await resp.json()
            return result

    async def wait_for(
        self, predicate: Callable[[list[dict[str, Any]]], bool], within: float = 20.0
    ) -> list[dict[str, Any]]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            got = await self.alerts()
            if predicate(got):
                return got
            if loop.time() > deadline:
                raise AssertionError(
                    f"alertmanager never met the condition; alerts: {got}\n"
                    f"log tail:\n{self.log.read_text(errors='replace')[-2000:]}"
                )
            await asyncio.sleep(0.1)


def shipped_config(webhook: Webhook) -> str:
    """``configs/alerts/alertmanager.yml`` with its relays on the local webhook (same paths)
    and its waits in seconds."""
    doc = yaml.safe_load(SHIPPED.read_text())

    def fast(route: dict[str, Any]) -> None:
        for key in ("group_wait", "group_interval"):
            if key in route:
                route[key] = "500ms"
        for child in route.get("routes", []):
            fast(child)

    doc["route"]["group_wait"] = "500ms"
    doc["route"]["group_interval"] = "1s"
    fast(doc["route"])
    doc["route"]["group_interval"] = "1s"
    text = yaml.safe_dump(doc)
    return text.replace(RELAY, f"http://127.0.0.1:{webhook.port}")


async def wait_until_async(predicate: Callable[[], bool], within: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def alertmanager(
    tmp_path: Path, config_text: str | None = None, port: int | None = None
) -> AsyncIterator[tuple[AlertmanagerServer, Webhook]]:
    """Start Alertmanager (the shipped routing unless ``config_text``) and its webhook."""
    binary = require_program("prometheus-alertmanager", "apt-get install prometheus-alertmanager")
    webhook = Webhook()
    port = port or free_port()
    directory = tmp_path / f"alertmanager-{port}"
    directory.mkdir(parents=True)
    config = directory / "alertmanager.yml"
    config.write_text(config_text or shipped_config(webhook))
    log = directory / "alertmanager.log"
    args = [
        binary,
        f"--config.file={config}",
        f"--storage.path={directory}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",  # no cluster: notifications do not wait for gossip
        "--log.level=warn",
    ]
    ready = f"http://127.0.0.1:{port}/-/ready"
    async with webhook, serving("alertmanager", args, log, ready, 30) as proc:
        yield AlertmanagerServer(proc, port, log), webhook
