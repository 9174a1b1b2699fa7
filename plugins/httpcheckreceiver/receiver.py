"""The ``httpcheck`` receiver instance."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from typing import Any

import aiohttp

from pipeline import Component, ConsumeError, Consumer, CreateSettings, Host, Metrics
from pipeline.tasks import supervise
from plugins._metricbuilder import Point, RequestBuilder
from plugins.httpcheckreceiver import HTTPCheckConfig, Target

SCOPE = "pipeline/receiver/httpcheckreceiver"
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")


class HTTPCheckReceiver(Component):
    """Checks every target concurrently each ``collection_interval`` and sends one request of
    metrics per cycle: ``httpcheck.status`` (1 for the status class answered, 0 for the
    others), ``httpcheck.duration`` (ms) and, for a request that failed, ``httpcheck.error``
    with the error message."""

    def __init__(self, settings: CreateSettings, config: HTTPCheckConfig,
                 next_consumer: Consumer) -> None:  # fmt: skip
        self.settings = settings
        self.config = config
        self.next = next_consumer
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._start_ns = time.time_ns()

    async def start(self, host: Host) -> None:
        if self._task is None:
            self._session = aiohttp.ClientSession()
            self._task = supervise(self.settings, host, "check", self._run)

    async def shutdown(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _run(self) -> None:
        await asyncio.sleep(self.config.initial_delay)
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            await self.check_once()
            next_at += self.config.collection_interval
            now = loop.time()
            if next_at < now:
                next_at = now + self.config.collection_interval
            await asyncio.sleep(next_at - now)

    async def _check(self, target: Target, url: str) -> tuple[str, int | None, float, str]:
        assert self._session is not None
        ssl_arg: Any = None
        if url.startswith("https://") and target.tls.insecure_skip_verify:
            ssl_arg = False
        elif url.startswith("https://") and target.tls.ca_file:
            ssl_arg = ssl.create_default_context(cafile=target.tls.ca_file)
        timeout = aiohttp.ClientTimeout(total=target.timeout or self.config.timeout or None)
        started = time.perf_counter()
        try:
            async with self._session.request(
                target.method,
                url,
                headers=target.headers,
                data=target.body,
                ssl=ssl_arg,
                timeout=timeout,
                allow_redirects=True,
            ) as response:
                # read to the end (the duration covers the transfer) without keeping it: a
                # target answering with a huge or endless body costs no memory (the timeout
                # bounds the time)
                async for _ in response.content.iter_chunked(1 << 16):
                    pass
                status: int | None = response.status
            error = ""
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            status = None
            error = str(exc) or type(exc).__name__
        return url, status, (time.perf_counter() - started) * 1000.0, error

    async def check_once(self) -> Metrics:
        """Check every target once and send the result; returns it."""
        now_ns = time.time_ns()
        checks = [(t, u) for t in self.config.targets for u in t.urls()]
        results = await asyncio.gather(*(self._check(t, u) for t, u in checks))
        builder = RequestBuilder()
        writer = builder.scope(SCOPE, now_ns)
        status_points: list[Point] = []
        duration_points: list[Point] = []
        error_points: list[Point] = []
        for (target, _), (url, status, duration_ms, error) in zip(checks, results, strict=True):
            duration_points.append((int(duration_ms), {"http.url": url}))
            if status is None:
                error_points.append((1, {"http.url": url, "error.message": error}))
                continue
            actual = f"{status // 100}xx"
            for cls in STATUS_CLASSES:
                status_points.append(
                    (
                        1 if cls == actual else 0,
                        {"http.url": url, "http.status_code": status,
                         "http.method": target.method, "http.status_class": cls},
                    )
                )  # fmt: skip
        c = self.config
        if c.enabled("httpcheck.duration"):
            writer.gauge("httpcheck.duration", "ms", "Measures the duration of the HTTP check.",
                         duration_points)  # fmt: skip
        if c.enabled("httpcheck.status"):
            writer.sum("httpcheck.status", "1",
                       "1 if the check resulted in status_code matching the status_class, "
                       "otherwise 0.", status_points, monotonic=False,
                       start_ns=self._start_ns)  # fmt: skip
        if c.enabled("httpcheck.error"):
            writer.sum("httpcheck.error", "{error}", "Records errors occurring during HTTP check.",
                       error_points, monotonic=False, start_ns=self._start_ns)  # fmt: skip
        builder.prune()
        payload = Metrics.from_message(builder.request)
        try:
            await self.next.consume(payload)
        except ConsumeError as exc:
            self.settings.logger.warning("the pipeline refused the check results: %s", exc)
        return payload  # type: ignore[return-value]
