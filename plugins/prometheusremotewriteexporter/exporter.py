"""The running ``prometheusremotewrite`` exporter.

Each payload is translated once, when it arrives, into a remote-write request body (so a retry
resends the same bytes and delta points are never added twice): data points go through the
same accumulator as the ``prometheus`` exporter, which names them, turns delta sums and
histograms into cumulative ones and drops points older than what it holds; every point that
updates a series becomes a sample. The shared exporter helper then queues, sends and retries.
The helper admits a payload before it is translated (:meth:`pipeline.ExporterHelper.admit`):
one refused by a full queue has not touched the running totals when the upstream sends it
again; once translated, a payload is never handed back as retryable.
"""

from __future__ import annotations

import math
import struct
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import aiohttp
import cramjam
from prometheus_client.utils import floatToGoString

from pipeline import (
    ClientAuthenticator,
    Component,
    CreateSettings,
    ExporterHelper,
    Host,
    Metrics,
    Payload,
    PermanentError,
    PreparedPayload,
    PreparedQueueCodec,
    RetryableError,
    Signal,
    client_authenticator,
)
from plugins._labelbound import CutCounter
from plugins.prometheusexporter.accumulator import Accumulator, Family, Series
from plugins.prometheusremotewriteexporter import prompb
from plugins.prometheusremotewriteexporter.config import PrometheusRemoteWriteConfig
from plugins.prometheustranslator import MetricKind

REMOTE_WRITE_VERSION = "0.1.0"
DELTA_STATE_EXPIRATION = 300.0  # seconds a series' running total is kept without updates

LabelKey = tuple[tuple[str, str], ...]


class WriteBatch(PreparedPayload, Metrics):
    """Data points already translated: snappy-compressed ``WriteRequest`` bodies (one per
    payload that arrived; several once ``sending_queue.batch`` merged payloads), and the
    points each holds.

    A batch of several is posted as one request (:meth:`joined`): the snappy of the
    ``WriteRequest`` bodies concatenated, which is one valid ``WriteRequest`` holding every
    series of each (protobuf appends repeated fields of concatenated messages), in order: a
    series in two of them keeps its samples in time order, as the sender's one queue consumer
    keeps them across requests."""

    __slots__ = ()
    description = "metric points translated for remote write"

    @classmethod
    def join_chunks(cls, chunks: Sequence[bytes]) -> bytes:
        decompress = cramjam.snappy.decompress_raw
        return bytes(cramjam.snappy.compress_raw(b"".join(decompress(c) for c in chunks)))

    @property
    def body(self) -> bytes:
        """The request body to post."""
        return self.joined()


class WriteBatchCodec(PreparedQueueCodec):
    """Translated batches in a persistent sending queue (see
    :class:`pipeline.PreparedQueueCodec`); also reads the records of earlier versions (item
    count, series, one body)."""

    payload_class = WriteBatch
    _LEGACY = struct.Struct("<II")

    def decode_legacy(self, body: bytes) -> Payload:
        count, _series = self._LEGACY.unpack_from(body)
        return WriteBatch([body[self._LEGACY.size :]], count, [count])


class _Samples:
    """Samples collected while folding one payload, keyed by label set."""

    def __init__(self, external_labels: dict[str, str]) -> None:
        self.external = external_labels
        self.by_series: dict[LabelKey, list[tuple[int, float]]] = defaultdict(list)

    def add(self, name: str, labels: dict[str, str], ts_ms: int, value: float) -> None:
        full = {"__name__": name, **labels}
        for k, v in self.external.items():
            full.setdefault(k, v)
        self.by_series[tuple(sorted(full.items()))].append((ts_ms, value))

    def on_update(self, family: Family | None, s: Series) -> None:
        ts = s.time_ns // 1_000_000 if s.time_ns else int(time.time() * 1000)
        if family is None:
            self.add("target_info", s.labels, ts, 1.0)
            return
        name = family.name
        if family.kind is MetricKind.HISTOGRAM:
            cumulative = 0
            for i, bound in enumerate((*s.bounds, math.inf)):
                cumulative += s.counts[i] if i < len(s.counts) else 0
                self.add(
                    name + "_bucket", {**s.labels, "le": floatToGoString(bound)}, ts, cumulative
                )
            self.add(name + "_count", s.labels, ts, float(s.count))
            self.add(name + "_sum", s.labels, ts, s.sum)
        elif family.kind is MetricKind.SUMMARY:
            for q, v in s.quantiles:
                self.add(name, {**s.labels, "quantile": floatToGoString(q)}, ts, v)
            self.add(name + "_count", s.labels, ts, float(s.count))
            self.add(name + "_sum", s.labels, ts, s.sum)
        else:
            self.add(name, s.labels, ts, s.value)

    def write_request(self) -> Any:
        """The ``WriteRequest``: series sorted by labels, samples in time order."""
        request = prompb.WriteRequest()
        for key in sorted(self.by_series):
            ts = request.timeseries.add()
            for name, value in key:
                ts.labels.add(name=name, value=value)
            # Stable sort: two samples at the same time keep their arrival order.
            for t, v in sorted(self.by_series[key], key=lambda p: p[0]):
                ts.samples.add(value=v, timestamp=t)
        return request


class PrometheusRemoteWriteExporter(Component):
    """Translates payloads into remote-write requests and posts them through the helper."""

    mutates_data = False

    def __init__(self, settings: CreateSettings, config: PrometheusRemoteWriteConfig) -> None:
        self.settings = settings
        self.config = config
        self._current: _Samples | None = None
        self.accumulator = Accumulator(
            namespace=config.namespace,
            add_metric_suffixes=config.add_metric_suffixes,
            resource_to_telemetry=config.resource_to_telemetry_conversion.enabled,
            metric_expiration=DELTA_STATE_EXPIRATION,
            on_drop=self._dropped,
            on_cut=CutCounter(settings.telemetry.service, "exporter", settings.name),
            on_update=self._on_update,
        )
        self.helper = ExporterHelper(
            settings, Signal.METRICS, config, self._send, codec=WriteBatchCodec(Signal.METRICS)
        )
        self._session: aiohttp.ClientSession | None = None
        self._auth: ClientAuthenticator | None = None
        self._warned: set[str] = set()

    def _dropped(self, n: int, reason: str) -> None:
        self.settings.telemetry.dropped(Signal.METRICS, n, reason.split(":")[0][:60])
        if reason not in self._warned and len(self._warned) < 1000:
            self._warned.add(reason)
            self.settings.logger.warning("dropping data points: %s", reason, extra={"points": n})

    def _on_update(self, family: Family | None, s: Series) -> None:
        if self._current is not None:
            self._current.on_update(family, s)

    def translate(self, data: Payload) -> WriteBatch | None:
        """The payload as a ready-to-post batch (``None`` when no point survives)."""
        self._current = _Samples(self.config.external_labels)
        try:
            accepted = self.accumulator.add(data.message())
            samples = self._current
        finally:
            self._current = None
        self.accumulator.expire()
        if not samples.by_series:
            return None
        request = samples.write_request()
        body = bytes(cramjam.snappy.compress_raw(request.SerializeToString()))
        return WriteBatch([body], accepted, [accepted])

    async def consume(self, data: Payload) -> None:
        helper = self.helper
        # Admitted before translating, by the helper's own rule (its sizer's units, what the
        # batcher holds): the running totals advance only for a payload the queue takes. A
        # payload refused after translating would come again from the upstream retry, its
        # deltas already added (its points then dropped as repeats, or counted twice).
        await helper.admit(data.item_count())
        batch = self.translate(data)  # no await between: the admission holds
        if batch is None:
            return
        try:
            await helper.consume(batch)
        except RetryableError as exc:
            # Translated (a persistent queue that cannot write, or a failed send without a
            # queue, both counted by the helper): not to be sent again by the upstream.
            raise PermanentError(
                f"{exc} (the running totals already hold these points: dropped, not retried)"
            ) from exc

    async def _send(self, data: Payload) -> None:
        assert isinstance(data, WriteBatch)
        if self._session is None:
            self._session = aiohttp.ClientSession()
        headers = {
            **self.config.headers,
            "Content-Encoding": "snappy",
            "Content-Type": "application/x-protobuf",
            "X-Prometheus-Remote-Write-Version": REMOTE_WRITE_VERSION,
            "User-Agent": "pipeline-gateway",
        }
        if self._auth is not None:
            headers.update(await self._auth.request_headers())
        try:
            body = data.joined()
        except Exception as exc:  # a chunk that is not snappy (a damaged queue entry)
            raise PermanentError(
                f"cannot join the remote-write requests of a batch: {exc}"
            ) from None
        try:
            async with self._session.post(self.config.endpoint, data=body, headers=headers) as resp:
                if resp.status < 300:
                    return
                text = (await resp.text(errors="replace"))[:500].strip()
        except aiohttp.ClientError as exc:
            raise RetryableError(f"remote write to {self.config.endpoint} failed: {exc}") from exc
        message = f"remote write to {self.config.endpoint} answered {resp.status}: {text}"
        if resp.status == 429 or resp.status >= 500:
            raise RetryableError(message, retry_after=_retry_after(resp.headers.get("Retry-After")))
        raise PermanentError(message)

    async def start(self, host: Host) -> None:
        self._auth = client_authenticator(host, self.config.auth, self.settings.name)
        await self.helper.start(host)

    async def shutdown(self) -> None:
        try:
            await self.helper.shutdown()
        finally:
            session, self._session = self._session, None
            if session is not None:
                await session.close()


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
