"""A real Prometheus server for the tests: Debian's ``prometheus`` on a free port, with its own
storage directory, queried through its HTTP API (never a fixed sleep: every wait polls)."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from tests.support import free_port, require_program, serving


class PrometheusServer:
    """One ``prometheus`` process; ``url`` is its base URL."""

    def __init__(
        self,
        proc: subprocess.Popen[bytes],
        port: int,
        log: Path,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.proc = proc
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        self.headers = headers  # for its own API when it has basic_auth_users

    async def get_json(self, path: str, **params: str) -> Any:
        async with (
            aiohttp.ClientSession(headers=self.headers) as session,
            session.get(self.url + path, params=params) as resp,
        ):
            return await resp.json()

    async def query(self, expr: str) -> list[dict[str, Any]]:
        """The result vector of an instant query."""
        body = await self.get_json("/api/v1/query", query=expr)
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    async def wait_for(
        self,
        expr: str,
        predicate: Callable[[list[dict[str, Any]]], bool] = bool,
        within: float = 30.0,
    ) -> list[dict[str, Any]]:
        """Poll ``expr`` until ``predicate(result)`` holds; the last result is in the error."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        result: list[dict[str, Any]] = []
        while True:
            result = await self.query(expr)
            if predicate(result):
                return result
            if loop.time() > deadline:
                raise AssertionError(
                    f"query {expr!r} never met the condition; last result: {result}\n"
                    f"prometheus log tail:\n{self.log.read_text(errors='replace')[-3000:]}"
                )
            await asyncio.sleep(0.2)


@contextlib.asynccontextmanager
async def prometheus(
    tmp_path: Path,
    scrape_configs: list[dict[str, Any]] | None = None,
    *,
    remote_write_receiver: bool = False,
    rule_files: list[str] | None = None,
    web_config: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> AsyncIterator[PrometheusServer]:
    """Start Prometheus with these scrape configs; wait until it is ready; stop it after.

    ``web_config``: its ``--web.config.file`` (``basic_auth_users``...); ``headers``: what the
    helper itself sends then (an ``Authorization``)."""
    binary = require_program("prometheus", "apt-get install prometheus")
    port = free_port()
    directory = tmp_path / f"prometheus-{port}"
    (directory / "data").mkdir(parents=True)
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "scrape_configs": scrape_configs or [],
        "rule_files": rule_files or [],
    }
    config_file = directory / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config))
    args = [
        binary,
        f"--config.file={config_file}",
        f"--storage.tsdb.path={directory / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
    ]
    if remote_write_receiver:
        args.append("--web.enable-remote-write-receiver")
    if web_config is not None:
        web_file = directory / "web.yml"
        web_file.write_text(yaml.safe_dump(web_config))
        args.append(f"--web.config.file={web_file}")
    log = directory / "prometheus.log"
    async with serving(
        "prometheus", args, log, f"http://127.0.0.1:{port}/-/ready", 60, headers
    ) as proc:
        yield PrometheusServer(proc, port, log, headers)


def run(args: list[str], input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run a program (``promtool``) to completion, output captured."""
    return subprocess.run(args, input=input, capture_output=True, timeout=120, check=False)


def value(result: list[dict[str, Any]]) -> float:
    """The value of a one-element result vector."""
    assert len(result) == 1, result
    return float(result[0]["value"][1])
