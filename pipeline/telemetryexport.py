"""Pushing the gateway's own telemetry by OTLP, as the Collector's declarative
``service.telemetry`` says: ``metrics.readers[].periodic`` (the ``otelcol_*`` metrics every
``interval``) and ``logs.processors[].batch`` / ``simple`` (the gateway's log records).

Both send OTLP/HTTP protobuf (``http/protobuf``; an endpoint without a path gets
``/v1/metrics`` or ``/v1/logs``) or OTLP/gRPC (``grpc``). What cannot be sent is dropped and
logged at most once a minute per exporter, never retried into a backlog: this is the gateway's
own monitoring and must not grow without bound when its backend is away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pipeline._version import __version__
from pipeline.compression import gzip_compress
from pipeline.telemetry import LOGGER_NAME

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from pipeline.config import OTLPTelemetryExporter, TelemetryConfig

log = logging.getLogger(f"{LOGGER_NAME}.telemetry.export")
INSTANCE_ID = str(uuid.uuid4())
_METHODS = {
    "metrics": "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
    "logs": "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
}


def resource_attributes(config: TelemetryConfig) -> dict[str, str]:
    attrs = {
        "service.name": "pipeline-gateway",
        "service.version": __version__,
        "service.instance.id": INSTANCE_ID,
    }
    for key, value in config.resource.items():
        if value is None:
            attrs.pop(key, None)
        else:
            attrs[key] = value
    return attrs


def _set_resource(resource: Any, attrs: dict[str, str]) -> None:
    for key, value in attrs.items():
        resource.attributes.add(key=key).value.string_value = value


def metrics_request(registry: CollectorRegistry, attrs: dict[str, str], start_ns: int) -> bytes:
    """The registry's metrics as an encoded ``ExportMetricsServiceRequest``: counters as
    cumulative monotonic sums, gauges as gauges, histograms as cumulative histograms."""
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
        ExportMetricsServiceRequest,
    )

    now = time.time_ns()
    request = ExportMetricsServiceRequest()
    rm = request.resource_metrics.add()
    _set_resource(rm.resource, attrs)
    sm = rm.scope_metrics.add()
    sm.scope.name = "pipeline"
    sm.scope.version = __version__

    def labels(point: Any, values: dict[str, str]) -> None:
        for k, v in sorted(values.items()):
            point.attributes.add(key=k).value.string_value = v

    for family in registry.collect():
        if not family.samples:
            continue
        if family.type in ("counter", "gauge", "unknown"):
            metric = sm.metrics.add(name=family.name, description=family.documentation)
            if family.unit:
                metric.unit = family.unit
            if family.type == "counter":
                metric.sum.aggregation_temporality = 2
                metric.sum.is_monotonic = True
                points = metric.sum.data_points
            else:
                points = metric.gauge.data_points
            for sample in family.samples:
                if family.type == "counter" and not sample.name.endswith("_total"):
                    continue
                p = points.add(time_unix_nano=now, as_double=float(sample.value))
                if family.type == "counter":
                    p.start_time_unix_nano = start_ns
                labels(p, sample.labels)
        elif family.type == "histogram":
            series: dict[tuple[tuple[str, str], ...], dict[str, Any]] = {}
            for sample in family.samples:
                key = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "le"))
                entry = series.setdefault(key, {"buckets": [], "sum": 0.0, "count": 0})
                if sample.name.endswith("_bucket"):
                    entry["buckets"].append((float(sample.labels["le"]), sample.value))
                elif sample.name.endswith("_sum"):
                    entry["sum"] = float(sample.value)
                elif sample.name.endswith("_count"):
                    entry["count"] = int(sample.value)
            metric = sm.metrics.add(name=family.name, description=family.documentation)
            metric.histogram.aggregation_temporality = 2
            for key, entry in series.items():
                buckets = sorted(entry["buckets"])
                bounds = [b for b, _ in buckets if b != float("inf")]
                cumulative = [int(c) for _, c in buckets]
                counts = [c - (cumulative[i - 1] if i else 0) for i, c in enumerate(cumulative)]
                p = metric.histogram.data_points.add(
                    time_unix_nano=now,
                    start_time_unix_nano=start_ns,
                    count=entry["count"],
                    sum=entry["sum"],
                )
                p.explicit_bounds.extend(bounds)
                p.bucket_counts.extend(counts)
                labels(p, dict(key))
    return bytes(request.SerializeToString())


_SEVERITY = {logging.DEBUG: 5, logging.INFO: 9, logging.WARNING: 13, logging.ERROR: 17,
             logging.CRITICAL: 21}  # fmt: skip
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


def logs_request(records: list[logging.LogRecord], attrs: dict[str, str]) -> bytes:
    """Log records as an encoded ``ExportLogsServiceRequest``: the message as the body, the
    logger's name and every extra field as attributes."""
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    request = ExportLogsServiceRequest()
    rl = request.resource_logs.add()
    _set_resource(rl.resource, attrs)
    sl = rl.scope_logs.add()
    sl.scope.name = "pipeline"
    sl.scope.version = __version__
    for record in records:
        lr = sl.log_records.add(
            time_unix_nano=int(record.created * 1e9),
            observed_time_unix_nano=time.time_ns(),
            severity_number=_SEVERITY.get(record.levelno, 9),
            severity_text=record.levelname,
        )
        try:
            lr.body.string_value = record.getMessage()
        except Exception:  # a message whose arguments do not format
            lr.body.string_value = str(record.msg)
        lr.attributes.add(key="logger").value.string_value = record.name
        for key, value in record.__dict__.items():
            if key in _STANDARD or key.startswith("_"):
                continue
            v = lr.attributes.add(key=key).value
            if isinstance(value, bool):
                v.bool_value = value
            elif isinstance(value, int) and -(2**63) <= value < 2**63:
                v.int_value = value
            elif isinstance(value, float):
                v.double_value = value
            else:
                v.string_value = str(value)
        if record.exc_info:
            lr.attributes.add(
                key="exception.stacktrace"
            ).value.string_value = logging.Formatter().formatException(record.exc_info)
    return bytes(request.SerializeToString())


class Sender:
    """One OTLP destination (``http/protobuf`` or ``grpc``) for one signal."""

    def __init__(self, config: OTLPTelemetryExporter, signal: str) -> None:
        self.config = config
        self.signal = signal
        self.url = config.endpoint
        if config.protocol == "http/protobuf":
            parts = urlsplit(config.endpoint)
            if parts.path in ("", "/"):
                self.url = config.endpoint.rstrip("/") + f"/v1/{signal}"
        self._session: Any = None
        self._channel: Any = None
        self._last_error_log = 0.0
        self.sent = 0
        self.failed = 0

    async def send(self, body: bytes) -> None:
        try:
            if self.config.protocol == "grpc":
                await self._send_grpc(body)
            else:
                await self._send_http(body)
        except Exception as exc:
            self.failed += 1
            now = time.monotonic()
            if now - self._last_error_log > 60:
                self._last_error_log = now
                log.warning(
                    "cannot send the gateway's own %s to %s: %s", self.signal, self.url, exc
                )
            return
        self.sent += 1

    async def _send_http(self, body: bytes) -> None:
        import aiohttp

        timeout = self.config.timeout / 1000 or None
        if self._session is None:
            self._session = aiohttp.ClientSession()
        headers = {"Content-Type": "application/x-protobuf", **dict(self.config.header_items())}
        if self.config.compression == "gzip":
            body = gzip_compress(body)
            headers["Content-Encoding"] = "gzip"
        async with self._session.post(
            self.url, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout)
        ) as response:
            await response.read()
            if response.status >= 300:
                raise RuntimeError(f"HTTP {response.status}")

    async def _send_grpc(self, body: bytes) -> None:
        import grpc

        timeout = self.config.timeout / 1000 or None
        if self._channel is None:
            parts = urlsplit(self.url if "://" in self.url else f"http://{self.url}")
            target = parts.netloc or parts.path
            secure = parts.scheme == "https" and not self.config.insecure
            self._channel = (
                grpc.aio.secure_channel(target, grpc.ssl_channel_credentials())
                if secure
                else grpc.aio.insecure_channel(target)
            )
        call = self._channel.unary_unary(_METHODS[self.signal])
        compression = grpc.Compression.Gzip if self.config.compression == "gzip" else None
        await call(
            body,
            timeout=timeout,
            metadata=[(k.lower(), v) for k, v in self.config.header_items()] or None,
            compression=compression,
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._channel is not None:
            await self._channel.close()
            self._channel = None


class QueueHandler(logging.Handler):
    """Keeps the gateway's log records for a log processor (bounded: the oldest go first)."""

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.records: deque[logging.LogRecord] = deque(maxlen=capacity)
        self.wake = asyncio.Event()
        self.dropped = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(log.name):
            return  # the exporter's own complaints would feed themselves
        if len(self.records) == self.records.maxlen:
            self.dropped += 1
        self.records.append(record)


class TelemetryExports:
    """The running pushes; ``close()`` sends what is left once and stops them."""

    def __init__(self) -> None:
        self.tasks: list[asyncio.Task[None]] = []
        self.final: list[Any] = []
        self.handlers: list[QueueHandler] = []
        self.senders: list[Sender] = []

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for handler in self.handlers:
            logging.getLogger(LOGGER_NAME).removeHandler(handler)
        for flush in self.final:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await flush()
        for sender in self.senders:
            await sender.close()


async def start_exports(
    config: TelemetryConfig, registry: CollectorRegistry
) -> TelemetryExports | None:
    """Start the OTLP pushes the config asks for (none: ``None``)."""
    readers = [r.periodic for r in config.metrics.readers if r.periodic is not None]
    processors = config.logs.processors
    if not readers and not processors:
        return None
    exports = TelemetryExports()
    attrs = resource_attributes(config)
    start_ns = time.time_ns()
    if config.metrics.level != "none":
        for reader in readers:
            if reader.exporter.otlp is None:
                continue  # console: the Prometheus endpoint already shows them
            sender = Sender(reader.exporter.otlp, "metrics")
            exports.senders.append(sender)

            async def push(sender: Sender = sender) -> None:
                body = await asyncio.to_thread(metrics_request, registry, attrs, start_ns)
                await sender.send(body)

            async def every(push: Any = push, interval: float = reader.interval / 1000) -> None:
                while True:
                    await asyncio.sleep(interval)
                    await push()

            exports.tasks.append(asyncio.create_task(every()))
            exports.final.append(push)
    for processor in processors:
        spec = processor.batch or processor.simple
        assert spec is not None
        if spec.exporter.otlp is None:
            continue  # console: the logs already go to stderr
        batch = processor.batch
        handler = QueueHandler(batch.max_queue_size if batch else 2048)
        logging.getLogger(LOGGER_NAME).addHandler(handler)
        exports.handlers.append(handler)
        sender = Sender(spec.exporter.otlp, "logs")
        exports.senders.append(sender)
        size = batch.max_export_batch_size if batch else 1
        delay = batch.schedule_delay / 1000 if batch else 0.05

        async def flush(handler: QueueHandler = handler, sender: Sender = sender,
                        size: int = size) -> None:  # fmt: skip
            while handler.records:
                records = [handler.records.popleft()
                           for _ in range(min(size, len(handler.records)))]  # fmt: skip
                await sender.send(logs_request(records, attrs))

        async def loop(flush: Any = flush, delay: float = delay) -> None:
            while True:
                await asyncio.sleep(delay)
                await flush()

        exports.tasks.append(asyncio.create_task(loop()))
        exports.final.append(flush)
    return exports
