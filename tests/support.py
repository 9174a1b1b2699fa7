"""Helpers shared by the tests: free ports, configs from text, the gateway in-process or as a
subprocess, and external programs that must be present in CI."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from pipeline.config import Config, load_config
from pipeline.pluginmanager import default_registry
from pipeline.service import Service
from pipeline.telemetry import LOGGER_NAME, SelfTelemetry

ROOT = Path(__file__).resolve().parent.parent
STRICT = bool(os.environ.get("CI") or os.environ.get("PIPELINE_TEST_STRICT"))


def _ephemeral_range() -> tuple[int, int]:
    """The ports the kernel hands out to outgoing connections and ``bind(0)``."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


_handed_out: set[int] = set()
_rng = random.Random()


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port nobody listens on right now (TCP by default), not handed out before in this
    process. It is taken below the kernel's ephemeral range when there is room there: a port
    from ``bind(0)`` could be given to an outgoing connection (a peer's client socket) between
    the moment it is picked and the moment the test binds it."""
    low, _ = _ephemeral_range()
    candidates = (10000, low - 1) if low > 12000 else None
    for _ in range(200):
        with socket.socket(socket.AF_INET, kind) as s:
            if candidates is None:
                s.bind(("127.0.0.1", 0))
            else:
                try:
                    s.bind(("127.0.0.1", _rng.randint(*candidates)))
                except OSError:
                    continue
            port = int(s.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise RuntimeError("no free port found")


def require_program(name: str, hint: str) -> str:
    """The path of an external program; skips the test when it is missing (fails in CI)."""
    path = shutil.which(name)
    if path is None:
        message = f"this test needs the program {name!r}, which is not installed: {hint}"
        if STRICT:
            pytest.fail(message)
        pytest.skip(message)
    return path


def write_config(directory: Path | str, text: str, name: str = "config.yaml") -> Path:
    path = Path(directory) / name
    path.write_text(textwrap.dedent(text))
    return path


def config_from_text(text: str, directory: Path | str | None = None) -> Config:
    directory = directory or tempfile.mkdtemp(prefix="pipeline-test-")
    return load_config([str(write_config(directory, text))], default_registry())


CLIENT_TIMEOUT = aiohttp.ClientTimeout(total=30)
"""The bound of a test's HTTP client (``aiohttp.ClientSession(timeout=CLIENT_TIMEOUT)``),
well under the tests' 300 s timeout: aiohttp's default is 300 s, so a request never answered
took the whole test timeout and the test never got to shut its gateway down."""

SHUTDOWN_GUARD = 60.0
"""Seconds :func:`running_service` lets a gateway take to shut down (well under the tests'
300 s timeout): past them the test fails, instead of hanging until pytest-timeout abandons
its event loop with the gateway and its ports still open."""


def own_metrics_on_a_free_port(config: Config) -> Config:
    """``config`` with the gateway's own metrics on a free port when it does not say where
    (``service.telemetry.metrics`` with no ``address`` nor ``readers``, level not ``none``):
    not on the default port 8888, which a gateway a test left running (a shutdown that hung)
    kept, failing every later test that started a gateway with "address already in use"."""
    telemetry = config.service.telemetry
    metrics = telemetry.metrics
    if metrics.level == "none" or metrics.readers or "address" in metrics.model_fields_set:
        return config
    address = f"127.0.0.1:{free_port()}"
    config.service.telemetry = telemetry.model_copy(
        update={"metrics": metrics.model_copy(update={"address": address})}
    )
    return config


@contextlib.asynccontextmanager
async def running_service(text: str, directory: Path | str | None = None) -> AsyncIterator[Service]:
    """Run a gateway in this event loop for the duration of the block (its own metrics on a
    free port unless the config says where: :func:`own_metrics_on_a_free_port`). Its shutdown
    is bounded by :data:`SHUTDOWN_GUARD`."""
    config = own_metrics_on_a_free_port(config_from_text(text, directory))
    service = Service(config, SelfTelemetry())
    await service.start()
    try:
        yield service
    finally:
        try:
            async with asyncio.timeout(SHUTDOWN_GUARD):
                await service.shutdown()
        except TimeoutError:
            raise AssertionError(
                f"the gateway did not shut down within {SHUTDOWN_GUARD:g}s"
            ) from None


class GatewayProcess:
    """``pipeline run`` as a subprocess, with JSON logs collected."""

    def __init__(
        self,
        *config_paths: Path | str,
        env: dict[str, str] | None = None,
        preexec_fn: Any = None,
        args: tuple[str, ...] = (),
    ) -> None:
        args = (sys.executable, "-m", "pipeline", "run", "--log-format", "json", *args)
        for p in config_paths:
            args += ("--config", str(p))
        self.log_path = Path(tempfile.mkstemp(prefix="gateway-", suffix=".log")[1])
        self._log = open(self.log_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            args,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env={**os.environ, **(env or {})},
            preexec_fn=preexec_fn,
        )

    def lines(self) -> list[str]:
        return self.log_path.read_text(errors="replace").splitlines()

    def records(self) -> list[dict[str, Any]]:
        out = []
        for line in self.lines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(r.get("msg") == "everything is ready; serving" for r in self.records()):
                return
            if self.proc.poll() is not None:
                raise AssertionError("gateway exited early:\n" + "\n".join(self.lines()))
            time.sleep(0.05)
        raise AssertionError("gateway not ready in time:\n" + "\n".join(self.lines()))

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()

    def __enter__(self) -> GatewayProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


@contextlib.contextmanager
def gateway(config_text: str, tmp_path: Path, **kw: Any) -> Iterator[GatewayProcess]:
    """A ready gateway subprocess running ``config_text``."""
    path = write_config(tmp_path, config_text)
    with GatewayProcess(path, **kw) as gw:
        gw.wait_ready()
        yield gw


async def wait_until(predicate: Any, within: float = 10.0, interval: float = 0.02) -> None:
    """Poll ``predicate()`` (sync) until true, or fail."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        if predicate():
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)


@contextlib.contextmanager
def logged() -> Iterator[list[logging.LogRecord]]:
    """The records the gateway's loggers emit meanwhile (its root logger does not propagate
    once a service configured it: pytest's caplog would not see them)."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger(LOGGER_NAME)
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


@contextlib.asynccontextmanager
async def serving(
    name: str,
    args: list[str],
    log: Path,
    ready_url: str,
    within: float = 60.0,
    headers: dict[str, str] | None = None,
) -> AsyncIterator[subprocess.Popen[bytes]]:
    """A real server program (Prometheus, Alertmanager: ``args``, its output in ``log``),
    once ``ready_url`` answers 200 (polled; it failing or not ready ``within`` seconds fails
    the test with its output); stopped after (SIGTERM, SIGKILL after 20 s)."""
    import aiohttp

    proc = _spawn(args, log)
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        async with aiohttp.ClientSession(headers=headers) as session:
            while True:
                if proc.poll() is not None:
                    raise AssertionError(f"{name} exited:\n" + _output(log))
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(ready_url) as resp:
                        if resp.status == 200:
                            break
                if loop.time() > deadline:
                    raise AssertionError(f"{name} not ready:\n" + _output(log))
                await asyncio.sleep(0.1)
        yield proc
    finally:
        proc.terminate()
        try:
            await asyncio.to_thread(proc.wait, 20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)


def _output(log: Path) -> str:
    return log.read_text(errors="replace")
