"""The running ``prometheus`` receiver: one scrape loop per target, on the event loop; the
parsing and conversion of a scrape run in a worker thread so the loop never waits on them."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import aiohttp
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
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
from plugins._offload import decode_off_loop
from plugins.prometheusreceiver.config import PrometheusReceiverConfig, ScrapeConfig, ScrapeLimits
from plugins.prometheusreceiver.convert import Converter, ScrapeError, Target

ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)


def parse(body: str, content_type: str) -> list[Any]:
    """The metric families of a scrape, by its content type (raises ``ValueError``)."""
    return list(families_of(body, content_type))


def families_of(body: str, content_type: str) -> Iterator[Any]:
    """The metric families of a scrape, by its content type, as they are parsed."""
    if content_type.startswith("application/openmetrics-text"):
        return iter(parse_openmetrics(body))
    return iter(parse_text(body))


def count_samples(body: bytes) -> int:
    """An upper bound on the samples of an exposition (text 0.0.4 or OpenMetrics), counted at
    memory speed: its lines, less those that start with ``#`` or are empty."""
    lines = body.count(b"\n") + (1 if body and not body.endswith(b"\n") else 0)
    return lines - body.count(b"\n#") - body.startswith(b"#") - body.count(b"\n\n")


# a line that is not a sample: blank, or a comment (after optional whitespace)
_NOT_A_SAMPLE = re.compile(rb"^[ \t\r\f\v]*(?:#|$)", re.MULTILINE)


def exact_sample_count(body: bytes) -> int:
    """The samples of an exposition as the parsers see them: its lines that are neither blank
    nor comments (the last line counts whether or not it ends with a newline)."""
    return body.count(b"\n") + 1 - sum(1 for _ in _NOT_A_SAMPLE.finditer(body))


def decode_scrape(
    converter: Converter, body: bytes, content_type: str, charset: str, scrape_ns: int
) -> tuple[ExportMetricsServiceRequest, int]:
    """A scraped exposition as a request (to ``converter.finish``) and its sample count.
    Raises :class:`ScrapeError` (only) when it cannot be taken: unparsable, or over
    ``sample_limit`` (counted before anything is parsed) or a label limit."""
    limit = converter.limits.sample_limit
    if limit and count_samples(body) > limit:
        exact = exact_sample_count(body)
        if exact > limit:
            raise ScrapeError(
                f"sample limit exceeded ({exact} samples, limit: {limit}: sample_limit)",
                reason="sample_limit",
                samples=exact,
            )
    try:
        text = body.decode(charset, errors="replace")
    except LookupError:  # an unknown charset
        text = body.decode("utf-8", errors="replace")
    try:
        return converter.convert_scrape(families_of(text, content_type), scrape_ns)
    except ScrapeError:
        raise
    except Exception as exc:  # ValueError, or what else the parser trips on: the input's
        raise ScrapeError(f"cannot parse the exposition: {exc!r}") from None


async def read_body(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """The response body, decompressed, refused as soon as it is over ``limit`` bytes
    (0: no limit) without reading further."""
    declared = resp.content_length
    # with a Content-Encoding, the declared length is the compressed one
    if (
        limit
        and declared is not None
        and declared > limit
        and "Content-Encoding" not in resp.headers
    ):
        raise ScrapeError(
            f"body size limit exceeded ({declared} bytes, limit: {limit}: body_size_limit)",
            reason="body_size_limit",
        )
    chunks: list[bytes] = []
    total = 0
    async for chunk in resp.content.iter_chunked(1 << 16):
        total += len(chunk)
        if limit and total > limit:
            raise ScrapeError(
                f"body size limit exceeded (more than {limit} bytes: body_size_limit)",
                reason="body_size_limit",
            )
        chunks.append(chunk)
    return b"".join(chunks)


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
        limits: ScrapeLimits | None = None,
    ) -> None:
        limits = limits or ScrapeLimits()
        self.receiver = receiver
        self.target = target
        self.interval = interval
        self.timeout = timeout
        self.limits = limits
        self.converter = Converter(target, sc.honor_labels, sc.honor_timestamps, limits)
        self.last_error: str | None = None
        self.last_invalid = ""
        self.scrapes = 0
        self.target_error: str | None = None  # set: the target is not scraped (target_limit)

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
        error: str | None = self.target_error
        request: ExportMetricsServiceRequest | None = None
        samples = 0
        try:
            if error is None:
                body: bytes | None = None
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
                        body = await read_body(resp, self.limits.body_size_limit)
                        content_type = resp.headers.get("Content-Type", "")
                        charset = resp.charset or "utf-8"
                if body is not None:
                    # always in a decode thread: a scrape is periodic, the hand-off is nothing
                    request, samples = await decode_off_loop(
                        len(body),
                        0,
                        decode_scrape,
                        self.converter,
                        body,
                        content_type,
                        charset,
                        scrape_ns,
                    )
        except TimeoutError:
            error = f"scrape timed out after {self.timeout:g}s"
        except aiohttp.ClientError as exc:
            error = f"{type(exc).__name__}: {exc}"
        except ScrapeError as exc:  # unparsable, or over a limit: the scrape fails
            error = str(exc)
            samples = exc.samples
            settings.telemetry.refused_request("scrape", exc.reason)
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
        if request is None:
            request, _ = self.converter.empty()
        self.converter.finish(request, scrape_ns, up=up, duration=duration, samples_scraped=samples)
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
        self.loops = []
        for sc in prom.scrape_configs:
            limits = prom.limits(sc)
            targets = targets_of(sc)
            loops = [
                ScrapeLoop(self, target, sc, prom.interval(sc), prom.timeout(sc), limits)
                for target in targets
            ]
            if limits.target_limit and len(targets) > limits.target_limit:
                # As Prometheus: every target of the job is down, none is scraped.
                error = (
                    f"target_limit exceeded (number of targets: {len(targets)}, "
                    f"limit: {limits.target_limit})"
                )
                for loop in loops:
                    loop.target_error = error
            self.loops.extend(loops)
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
