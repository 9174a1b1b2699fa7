"""The running ``prometheus`` exporter: an accumulator and an aiohttp server for scrapes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

from aiohttp import web
from prometheus_client import exposition
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics import exposition as openmetrics

from pipeline import Component, CreateSettings, Host, Payload, Signal, server_ssl_context, workers
from pipeline.httpserver import Serving, serve
from plugins._labelbound import CutCounter
from plugins.prometheusexporter.accumulator import Accumulator
from plugins.prometheusexporter.config import PrometheusExporterConfig
from plugins.prometheusexporter.render import Share, render, render_merged, share

OPENMETRICS = "application/openmetrics-text"


class _Snapshot:
    """A ``prometheus_client`` collector over families already built (what a scrape writes)."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def serialize(families: list[Metric], openmetrics_format: bool) -> tuple[bytes, str]:
    """The exposition of ``families``: body and content type."""
    if openmetrics_format:
        return openmetrics.generate_latest(_Snapshot(families)), openmetrics.CONTENT_TYPE_LATEST
    return exposition.generate_latest(_Snapshot(families)), exposition.CONTENT_TYPE_PLAIN_0_0_4


def wants_openmetrics(accept: str) -> bool:
    """Whether an ``Accept`` header asks for OpenMetrics (Prometheus's default does)."""
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        if media != OPENMETRICS:
            continue
        q = 1.0
        for p in params:
            if p.startswith("q="):
                try:
                    q = float(p[2:])
                except ValueError:
                    q = 0.0
        if q > 0:
            return True
    return False


class PrometheusExporter(Component):
    """Holds the latest state of every series and serves it at ``/metrics``."""

    mutates_data = False

    def __init__(self, settings: CreateSettings, config: PrometheusExporterConfig) -> None:
        self.settings = settings
        self.config = config
        self.accumulator = Accumulator(
            namespace=config.namespace,
            const_labels=config.const_labels,
            add_metric_suffixes=config.add_metric_suffixes,
            resource_to_telemetry=config.resource_to_telemetry_conversion.enabled,
            metric_expiration=config.metric_expiration,
            on_drop=self._dropped,
            on_cut=CutCounter(settings.telemetry.service, "exporter", settings.name),
        )
        self._runner: Serving | None = None
        # with workers: the merged lines of the series several hold, per format (OpenMetrics)
        self._merged_lines: dict[bool, dict[tuple[str, str], tuple[Any, str]]] = {
            False: {},
            True: {},
        }
        self._warned: set[str] = set()

    def _dropped(self, n: int, reason: str) -> None:
        self.settings.telemetry.dropped(Signal.METRICS, n, reason.split(":")[0][:60])
        if reason not in self._warned and len(self._warned) < 1000:
            self._warned.add(reason)
            self.settings.logger.warning("dropping data points: %s", reason, extra={"points": n})

    async def consume(self, data: Payload) -> None:
        accepted = self.accumulator.add(data.message())
        if accepted:
            self.settings.telemetry.sent(Signal.METRICS, accepted)

    async def _handle(self, request: web.Request) -> web.Response:
        try:
            want_om = self.config.enable_open_metrics and wants_openmetrics(
                request.headers.get("Accept", "")
            )
            ctx = workers.current()
            if ctx is None:
                # Written on the loop, where the accumulator changes: from the lines each
                # series keeps while it does not change (render), what serialize would write.
                body = render(self.accumulator, want_om, self.config.send_timestamps)
            else:
                body = await self._merged(ctx, want_om)
            content_type = (
                openmetrics.CONTENT_TYPE_LATEST if want_om else exposition.CONTENT_TYPE_PLAIN_0_0_4
            )
        except Exception as exc:  # a bug must show in the scrape, not kill the server
            self.settings.logger.exception("cannot render the exposition")
            return web.Response(status=500, text=f"error rendering metrics: {exc}\n")
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def _merged(self, ctx: workers.WorkerContext, want_om: bool) -> bytes:
        """With workers (``service.workers``): every worker's series merged (each holds the
        series of what it processed). Each sends its share (render.share: the lines its series
        keep, and what merging needs); the primary writes the series one worker holds as that
        worker's lines, merges the others (render.render_merged). What it cannot merge series
        by series (a share says so: two families of one name, a histogram series labelled
        ``le``...) goes the way of prometheus_client's families (merge_families, serialize),
        whose output render_merged's is byte for byte."""
        shares = await ctx.gather(self._share_key(want_om))
        body = render_merged(
            shares, want_om, self.config.send_timestamps, self._merged_lines[want_om]
        )
        if body is not None:
            return body
        families = await self._families()
        text, _ = await asyncio.to_thread(serialize, families, want_om)
        return text

    def _share_key(self, want_om: bool) -> str:
        return f"{self._key}/{'openmetrics' if want_om else 'text'}"

    def _share_text(self) -> Share:
        return share(self.accumulator, False, self.config.send_timestamps)

    def _share_openmetrics(self) -> Share:
        return share(self.accumulator, True, self.config.send_timestamps)

    async def _families(self) -> list[Metric]:
        """The families to serve: this process's, or with workers (``service.workers``)
        every worker's merged (each holds the series of what it processed)."""
        ctx = workers.current()
        if ctx is None:
            return list(self.accumulator.collect(self.config.send_timestamps))
        merged = workers.merge_families(await ctx.gather(self._key), gauges="latest")
        return merged if self.config.send_timestamps else workers.strip_timestamps(merged)

    def _exposition(self) -> list[Metric]:
        return list(self.accumulator.collect(True))

    @property
    def _key(self) -> str:
        return f"prometheus/{self.settings.id}"

    async def start(self, host: Host) -> None:
        if self._runner is not None:
            return
        ctx = workers.current()
        if ctx is not None:
            ctx.expose(self._key, self._exposition)
            ctx.expose(self._share_key(False), self._share_text)
            ctx.expose(self._share_key(True), self._share_openmetrics)
            if not ctx.primary:
                return  # the primary worker serves the endpoint
        app = web.Application()
        app.router.add_get("/metrics", self._handle)
        tls = self.config.tls
        self._runner = await serve(
            app,
            self.config.endpoint,
            server_ssl_context(tls) if tls is not None else None,
            limits=self.config,
            settings=self.settings,
            reserved=True,  # scrapes get through when the data endpoints are flooded
        )
        self.settings.logger.info(
            "serving metrics for Prometheus", extra={"endpoint": self.config.endpoint}
        )

    async def shutdown(self) -> None:
        ctx = workers.current()
        if ctx is not None:
            ctx.withdraw(self._key, self._exposition)
            ctx.withdraw(self._share_key(False), self._share_text)
            ctx.withdraw(self._share_key(True), self._share_openmetrics)
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
