"""The running ``prometheus`` receiver: one scrape loop per target, on the event loop; the
parsing and conversion of a scrape run in a worker thread so the loop never waits on them."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from typing import Any
from urllib.parse import urlencode

import aiohttp
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_text

from pipeline import (
    Component,
    ConsumeError,
    Consumer,
    CreateSettings,
    Host,
    Metrics,
    Payload,
    Signal,
)
from pipeline.tasks import supervise
from plugins.prometheusreceiver.config import PrometheusReceiverConfig, ScrapeConfig
from plugins.prometheusreceiver.convert import Converter, Target

ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)


def parse(body: str, content_type: str) -> list[Any]:
    """The metric families of a scrape, by its content type (raises ``ValueError``)."""
    try:
        if content_type.startswith("application/openmetrics-text"):
            return list(parse_openmetrics(body))
        return list(parse_text(body))
    except ValueError:
        raise
    except Exception as exc:
        # prometheus_client's parsers fail on some malformed lines with other errors (a
        # KeyError for a native histogram without its count, found by fuzzing): the
        # exposition cannot be parsed all the same
        raise ValueError(f"{type(exc).__name__}: {exc}") from exc


def targets_of(sc: ScrapeConfig) -> list[Target]:
    out = []
    query = urlencode([(k, v) for k, values in sc.params.items() for v in values])
    for static in sc.static_configs:
        for address in static.targets:
            url = f"{sc.scheme}://{address}{sc.metrics_path}" + (f"?{query}" if query else "")
            labels = {**static.labels, "job": sc.job_name, "instance": address}
            out.append(Target(sc.job_name, address, url, sc.scheme, labels))
    return out


class ScrapeLoop:
    """Scrapes one target every interval and sends the result down the pipeline."""

    def __init__(
        self,
        receiver: PrometheusReceiver,
        target: Target,
        sc: ScrapeConfig,
        interval: float,
        timeout: float,
    ) -> None:
        self.receiver = receiver
        self.target = target
        self.interval = interval
        self.timeout = timeout
        self.converter = Converter(target, sc.honor_labels, sc.honor_timestamps)
        self.last_error: str | None = None
        self.last_invalid = ""
        self.scrapes = 0

    async def run(self, session: aiohttp.ClientSession) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            try:
                await self.scrape_once(session)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug must not end this target's scraping for good
                self.receiver.settings.logger.exception(
                    "unexpected error while scraping", extra={"target": self.target.url}
                )
            next_at += self.interval
            # A scrape that overran skips the missed slots rather than bunching up.
            while next_at <= loop.time():
                next_at += self.interval
            await asyncio.sleep(next_at - loop.time())

    async def scrape_once(self, session: aiohttp.ClientSession) -> None:
        settings = self.receiver.settings
        started = time.monotonic()
        scrape_ns = time.time_ns()
        families: list[Any] = []
        error: str | None = None
        try:
            async with session.get(
                self.target.url,
                headers={
                    "Accept": ACCEPT,
                    "X-Prometheus-Scrape-Timeout-Seconds": f"{self.timeout:g}",
                },
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            ) as resp:
                if resp.status != 200:
                    error = f"server returned HTTP status {resp.status}"
                else:
                    body = await resp.text(errors="replace")
                    families = await asyncio.to_thread(
                        parse, body, resp.headers.get("Content-Type", "")
                    )
        except TimeoutError:
            error = f"scrape timed out after {self.timeout:g}s"
        except aiohttp.ClientError as exc:
            error = f"{type(exc).__name__}: {exc}"
        except ValueError as exc:  # the exposition could not be parsed
            error = f"cannot parse the exposition: {exc}"
        duration = time.monotonic() - started
        up = error is None
        if error != self.last_error:
            if error is not None:
                settings.logger.warning(
                    "scrape failed", extra={"target": self.target.url, "error": error}
                )
            elif self.last_error is not None:
                settings.logger.info("scrape recovered", extra={"target": self.target.url})
        self.last_error = error
        samples = sum(len(f.samples) for f in families)
        request = await asyncio.to_thread(
            self.converter.convert,
            families,
            scrape_ns,
            up=up,
            duration=duration,
            samples_scraped=samples,
        )
        for reason, n in self.converter.dropped.items():
            settings.telemetry.dropped(Signal.METRICS, n, reason)
        invalid = self.converter.invalid
        if invalid and invalid != self.last_invalid:  # logged when it changes, as errors
            settings.logger.warning(
                "dropped metric families OTLP cannot hold",
                extra={"target": self.target.url, "error": invalid},
            )
        self.last_invalid = invalid
        self.scrapes += 1
        await self.receiver.push(Metrics.from_message(request))


class PrometheusReceiver(Component):
    """Runs a :class:`ScrapeLoop` per target of every scrape config."""

    def __init__(
        self, settings: CreateSettings, config: PrometheusReceiverConfig, consumer: Consumer
    ) -> None:
        self.settings = settings
        self.config = config
        self.consumer = consumer
        prom = config.config
        self.loops = [
            ScrapeLoop(self, target, sc, prom.interval(sc), prom.timeout(sc))
            for sc in prom.scrape_configs
            for target in targets_of(sc)
        ]
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None

    async def push(self, payload: Payload) -> None:
        n = payload.item_count()
        tel = self.settings.telemetry
        try:
            await self.consumer.consume(payload)
        except ConsumeError as exc:
            # A scrape cannot be retried later: what the pipeline refuses is lost, and counted.
            tel.refused(Signal.METRICS, n)
            self.settings.logger.warning(
                "the pipeline refused scraped data", extra={"points": n, "error": str(exc)}
            )
        else:
            tel.accepted(Signal.METRICS, n)

    async def start(self, host: Host) -> None:
        if self._session is not None:
            return
        self._session = aiohttp.ClientSession()
        for loop in self.loops:
            self._tasks.append(
                supervise(
                    self.settings,
                    host,
                    f"scrape {loop.target.url}",
                    functools.partial(loop.run, self._session),
                )
            )
        self.settings.logger.info("scraping", extra={"targets": len(self.loops)})

    async def shutdown(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        session, self._session = self._session, None
        if session is not None:
            await session.close()
