"""The ``hostmetrics`` receiver instance: scrapes on a fixed interval, off the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import time

from pipeline import Component, ConsumeError, Consumer, CreateSettings, Host, Metrics
from pipeline.tasks import supervise
from plugins._metricbuilder import RequestBuilder
from plugins.hostmetricsreceiver.config import HostMetricsConfig
from plugins.hostmetricsreceiver.scrapers import Scraper, ScrapeResult, make_scrapers


class HostMetricsReceiver(Component):
    """Runs the configured scrapers every ``collection_interval`` and sends one
    ``ExportMetricsServiceRequest`` per cycle to the pipeline."""

    def __init__(
        self, settings: CreateSettings, config: HostMetricsConfig, next_consumer: Consumer
    ) -> None:
        self.settings = settings
        self.config = config
        self.next_consumer = next_consumer
        self.scrapers: list[Scraper] = make_scrapers(config.scrapers.configured(), config.root_path)
        self._task: asyncio.Task[None] | None = None
        self.cycles = 0
        service = settings.telemetry.service
        self._scraped = service.counter(
            "otelcol_scraper_scraped_metric_points",
            "Number of metric points successfully scraped.",
            ("receiver", "scraper"),
        )
        self._errored = service.counter(
            "otelcol_scraper_errored_metric_points",
            "Number of metric points that were unable to be scraped.",
            ("receiver", "scraper"),
        )

    async def start(self, host: Host) -> None:
        if self._task is None:
            self._task = supervise(self.settings, host, "scrape", self._run)

    async def shutdown(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(self.config.initial_delay)
        next_at = loop.time()
        while True:
            try:
                await self.scrape_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep scraping on the next tick whatever happened
                self.settings.logger.exception("scrape cycle failed: %s", exc)
            next_at += self.config.collection_interval
            now = loop.time()
            if next_at < now:  # a slow cycle: skip the ticks we missed
                next_at = now + self.config.collection_interval
            await asyncio.sleep(next_at - now)

    async def _scrape(self, scraper: Scraper, now_ns: int) -> RequestBuilder | None:
        builder = RequestBuilder()
        try:
            result: ScrapeResult = await asyncio.to_thread(scraper.scrape, builder, now_ns)
        except Exception as exc:
            self._errored.labels(self.settings.name, scraper.name).inc()
            self.settings.logger.error("scraper failed: %s", exc, extra={"scraper": scraper.name})
            return None
        if result.errors:
            self._errored.labels(self.settings.name, scraper.name).inc(len(result.errors))
            self.settings.logger.debug(
                "scraper met partial errors",
                extra={"scraper": scraper.name, "errors": "; ".join(result.errors[:10])},
            )
        self._scraped.labels(self.settings.name, scraper.name).inc(result.points)
        return builder

    async def scrape_once(self) -> Metrics | None:
        """Run every scraper once (in worker threads) and send the result; returns it."""
        now_ns = time.time_ns()
        builders = await asyncio.gather(*(self._scrape(s, now_ns) for s in self.scrapers))
        merged = RequestBuilder()
        for b in builders:
            if b is not None:
                merged.request.resource_metrics.extend(b.request.resource_metrics)
        merged.prune()
        self.cycles += 1
        payload = Metrics.from_message(merged.request)
        if payload.item_count() == 0:
            return None
        try:
            await self.next_consumer.consume(payload)
        except ConsumeError as exc:
            # Counted as refused by the engine (otelcol_receiver_refused_metric_points).
            self.settings.logger.warning(
                "the pipeline refused scraped metrics: %s",
                exc,
                extra={"refused_points": payload.item_count()},
            )
        return payload  # type: ignore[return-value]
