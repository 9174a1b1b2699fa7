"""The ``prometheusremotewrite`` exporter, writing into a real Prometheus."""

from __future__ import annotations

import asyncio
import base64
import struct
import time
from pathlib import Path
from typing import Any

import cramjam
import pytest
from aiohttp import web
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource

from pipeline import ConfigErrors, Metrics
from plugins.prometheusremotewriteexporter import prompb
from tests.plugins.helpers.peers import LocalServer, forward
from tests.plugins.prometheus_server import prometheus, value
from tests.support import config_from_text, free_port, logged, running_service, wait_until


def gateway_config(otlp_port: int, endpoint: str, extra: str = "") -> str:
    return f"""
    receivers:
      otlp:
        protocols:
          grpc:
            endpoint: 127.0.0.1:{otlp_port}
    exporters:
      prometheusremotewrite:
        endpoint: {endpoint}
        external_labels:
          cluster: test-cluster
        retry_on_failure:
          initial_interval: 50ms
          max_interval: 100ms
        {extra}
    service:
      pipelines:
        metrics:
          receivers: [otlp]
          exporters: [prometheusremotewrite]
      telemetry:
        metrics:
          level: none
    """


def sdk_provider(otlp_port: int) -> MeterProvider:
    exporter = OTLPMetricExporter(endpoint=f"127.0.0.1:{otlp_port}", insecure=True)
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    resource = Resource.create({"service.name": "writer", "service.instance.id": "w-1"})
    return MeterProvider(resource=resource, metric_readers=[reader])


async def send_with_sdk(otlp_port: int) -> None:
    provider = sdk_provider(otlp_port)
    meter = provider.get_meter("rw.test")
    meter.create_counter("agent.workflow.executions").add(7, {"outcome": "success"})
    meter.create_gauge("queue.depth").set(42)
    hist = meter.create_histogram("agent.workflow.duration", unit="s")
    for v in (0.5, 3.0, 30.0):
        hist.record(v, {"workflow.type": "rag"})
    assert await asyncio.to_thread(provider.force_flush)
    await asyncio.to_thread(provider.shutdown)


async def test_remote_write_lands_queryable_series(tmp_path: Path) -> None:
    otlp_port = free_port()
    async with prometheus(tmp_path, remote_write_receiver=True) as prom:
        config = gateway_config(otlp_port, f"{prom.url}/api/v1/write")
        async with running_service(config, tmp_path) as service:
            await send_with_sdk(otlp_port)
            total = 'agent_workflow_executions_total{outcome="success"}'
            result = await prom.wait_for(total, lambda r: len(r) == 1)
            assert value(result) == 7
            labels = result[0]["metric"]
            assert labels["job"] == "writer"
            assert labels["instance"] == "w-1"
            assert labels["cluster"] == "test-cluster"
            assert value(await prom.query("queue_depth")) == 42
            count = await prom.wait_for(
                'agent_workflow_duration_seconds_count{workflow_type="rag"}'
            )
            assert value(count) == 3
            assert value(await prom.query("agent_workflow_duration_seconds_sum")) == 33.5
            le5 = await prom.query('agent_workflow_duration_seconds_bucket{le="5.0"}')
            assert value(le5) == 2
            inf = await prom.query('agent_workflow_duration_seconds_bucket{le="+Inf"}')
            assert value(inf) == 3
            sent = service.telemetry.value(
                "otelcol_exporter_sent_metric_points_total", exporter="prometheusremotewrite"
            )
            assert sent in (3, 6)  # the SDK's shutdown may export the cumulative points again


def _delta_request(value_: int, t_ns: int) -> ExportMetricsServiceRequest:
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    rm.resource.attributes.add(key="service.name").value.string_value = "delta"
    m = rm.scope_metrics.add().metrics.add(name="tokens", unit="{token}")
    m.sum.is_monotonic = True
    m.sum.aggregation_temporality = metrics_pb2.AGGREGATION_TEMPORALITY_DELTA
    m.sum.data_points.add(as_int=value_, start_time_unix_nano=t_ns - 10**9, time_unix_nano=t_ns)
    m.sum.data_points.add(
        as_int=1, start_time_unix_nano=t_ns - 10**9, time_unix_nano=t_ns
    ).attributes.add(key="model").value.string_value = "a"
    return req


class FlakyProxy(LocalServer):
    """Answers the first ``failures`` requests with ``status``, then forwards to Prometheus;
    keeps every request's headers and body for inspection."""

    def __init__(self, target: str, failures: int, status: int) -> None:
        super().__init__()
        self.target = target
        self.failures = failures
        self.status = status
        self.requests: list[tuple[dict[str, str], bytes]] = []

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/api/v1/write", self._handle)]

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests.append((dict(request.headers), body))
        if self.failures > 0:
            self.failures -= 1
            return web.Response(status=self.status, text="try later", headers={"Retry-After": "0"})
        return await forward(self.target, request, body)


async def _export(otlp_port: int, req: ExportMetricsServiceRequest) -> None:
    import grpc
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2_grpc import (
        MetricsServiceStub,
    )

    async with grpc.aio.insecure_channel(f"127.0.0.1:{otlp_port}") as channel:
        await MetricsServiceStub(channel).Export(req)


@pytest.mark.parametrize("status", [503, 429])
async def test_retryable_answers_are_retried_and_deltas_accumulate(
    tmp_path: Path, status: int
) -> None:
    otlp_port = free_port()
    async with prometheus(tmp_path, remote_write_receiver=True) as prom:
        async with FlakyProxy(f"{prom.url}/api/v1/write", 2, status) as proxy:
            endpoint = f"http://127.0.0.1:{proxy.port}/api/v1/write"
            async with running_service(gateway_config(otlp_port, endpoint), tmp_path) as service:
                now = time.time_ns()
                await _export(otlp_port, _delta_request(5, now - 2 * 10**9))
                await _export(otlp_port, _delta_request(4, now - 10**9))
                result = await prom.wait_for(
                    "tokens_total{model=''}", lambda r: len(r) == 1 and r[0]["value"][1] == "9"
                )
                assert result[0]["metric"]["job"] == "delta"
                assert value(await prom.query("tokens_total{model='a'}")) == 2
                retried = service.telemetry.value(
                    "otelcol_exporter_retried_metric_points_total",
                    exporter="prometheusremotewrite",
                )
                assert retried == 4  # the first batch (2 points), retried twice
        # The wire format, as the remote-write 1.0 specification requires.
        headers, body = proxy.requests[-1]
        assert headers["Content-Encoding"] == "snappy"
        assert headers["Content-Type"] == "application/x-protobuf"
        assert headers["X-Prometheus-Remote-Write-Version"] == "0.1.0"
        request = prompb.WriteRequest.FromString(bytes(cramjam.snappy.decompress_raw(body)))
        keys = [[(lb.name, lb.value) for lb in ts.labels] for ts in request.timeseries]
        assert keys == sorted(keys)
        assert all(k == sorted(k) for k in keys)
        assert keys[0][0] == ("__name__", "tokens_total")
        assert [ts.samples[0].value for ts in request.timeseries] == [9.0, 2.0]


async def test_refused_data_is_dropped_and_counted(tmp_path: Path) -> None:
    """Prometheus refuses samples older than the newest of a series (400): permanent."""
    otlp_port = free_port()
    async with prometheus(tmp_path, remote_write_receiver=True) as prom:
        config = gateway_config(otlp_port, f"{prom.url}/api/v1/write")
        async with running_service(config, tmp_path) as service:
            now = time.time_ns()
            await _export(otlp_port, _delta_request(5, now))
            await prom.wait_for("tokens_total{model=''}")
        # A new gateway knows nothing of that series: it sends an older sample.
        async with running_service(config, tmp_path) as service:
            await _export(otlp_port, _delta_request(1, now - 60 * 10**9))

            def failed() -> float:
                return service.telemetry.value(
                    "otelcol_exporter_send_failed_metric_points_total",
                    exporter="prometheusremotewrite",
                )

            await wait_until(lambda: failed() == 2, within=20)
            assert (
                service.telemetry.value(
                    "otelcol_exporter_retried_metric_points_total",
                    exporter="prometheusremotewrite",
                )
                == 0
            )
        assert value(await prom.query("tokens_total{model=''}")) == 5


async def test_basic_auth_against_a_prometheus_with_users(tmp_path: Path) -> None:
    """Prometheus with ``basic_auth_users`` (a bcrypt hash, as its docs say): the exporter's
    ``basicauth`` client gets in; a wrong password is refused (401) and dropped, not retried."""
    import bcrypt

    hashed = bcrypt.hashpw(b"rw-secret", bcrypt.gensalt(4)).decode()
    web = {"basic_auth_users": {"writer": hashed}}
    otlp_port = free_port()
    async with prometheus(
        tmp_path,
        remote_write_receiver=True,
        web_config=web,
        headers={"Authorization": "Basic " + base64.b64encode(b"writer:rw-secret").decode()},
    ) as prom:
        for password, lands in (("rw-secret", True), ("wrong", False)):
            auth = "auth: {authenticator: basicauth}"
            config = gateway_config(otlp_port, f"{prom.url}/api/v1/write", auth).replace(
                "    service:\n",
                "    extensions:\n"
                f"      basicauth: {{client_auth: {{username: writer, password: {password}}}}}\n"
                "    service:\n      extensions: [basicauth]\n",
            )
            async with running_service(config, tmp_path) as service:
                now = time.time_ns()
                await _export(otlp_port, _delta_request(3 if lands else 4, now))
                if lands:
                    assert value(await prom.wait_for("tokens_total{model=''}")) == 3
                    continue

                def failed() -> float:
                    return service.telemetry.value(
                        "otelcol_exporter_send_failed_metric_points_total",
                        exporter="prometheusremotewrite",
                    )

                await wait_until(lambda: failed() == 2, within=20)
                retried = service.telemetry.value(
                    "otelcol_exporter_retried_metric_points_total",
                    exporter="prometheusremotewrite",
                )
                assert retried == 0
        assert value(await prom.query("tokens_total{model=''}")) == 3


def test_config_errors(tmp_path: Path) -> None:
    base = """
    receivers:
      otlp:
        protocols:
          grpc:
    exporters:
      prometheusremotewrite:
        {opt}
    service:
      pipelines:
        metrics:
          receivers: [otlp]
          exporters: [prometheusremotewrite]
    """
    with pytest.raises(ConfigErrors, match="endpoint"):
        config_from_text(base.format(opt="namespace: x"), tmp_path)
    with pytest.raises(ConfigErrors, match="http"):
        config_from_text(base.format(opt="endpoint: prometheus:9090"), tmp_path)
    with pytest.raises(ConfigErrors, match="set by the exporter"):
        config_from_text(
            base.format(opt="{endpoint: 'http://x/api/v1/write', headers: {Content-Type: x}}"),
            tmp_path,
        )


def test_a_sending_queue_without_num_consumers_keeps_one_consumer() -> None:
    """Requests must arrive in order: ``sending_queue: {batch: ...}`` (or ``storage``)
    written without ``num_consumers`` keeps the one consumer (it got the helper's 10, and
    batches posted at once were refused as out of order)."""
    from plugins.prometheusremotewriteexporter.config import PrometheusRemoteWriteConfig

    def consumers(queue: dict[str, Any] | None) -> int:
        doc: dict[str, Any] = {"endpoint": "http://p:9090/api/v1/write"}
        if queue is not None:
            doc["sending_queue"] = queue
        return PrometheusRemoteWriteConfig.model_validate(doc).sending_queue.num_consumers

    assert consumers(None) == 1
    assert consumers({"batch": {"min_size": 10}}) == 1
    assert consumers({"storage": "file_storage", "queue_size": 10}) == 1
    assert consumers({"num_consumers": 4}) == 4


class HoldingProxy(LocalServer):
    """Holds every request until ``release`` is set, then forwards it to Prometheus."""

    def __init__(self, target: str) -> None:
        super().__init__()
        self.target = target
        self.release = asyncio.Event()
        self.arrived = 0

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/api/v1/write", self._handle)]

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.arrived += 1
        await self.release.wait()
        return await forward(self.target, request, body)


FULL_QUEUES = {
    # a batch in flight (held), one queued: the queue is full in its own units
    "requests": {"queue_size": 1, "num_consumers": 1},
    "items": {"sizer": "items", "queue_size": 2, "num_consumers": 1},
    "bytes": {"sizer": "bytes", "queue_size": 50, "num_consumers": 1},
    # the batcher holds the first payload (flushed on its timeout): already full
    "batch": {"queue_size": 1, "num_consumers": 1, "batch": {"flush_timeout": "300ms"}},
    "batch-items": {
        "sizer": "items",
        "queue_size": 2,
        "num_consumers": 1,
        "batch": {"flush_timeout": "300ms", "min_size": 100},
    },
}


def exporter_settings() -> tuple[Any, Any]:
    """The settings of a ``prometheusremotewrite`` exporter built by hand, with the self
    telemetry its counters go to."""
    from pipeline import ComponentID, CreateSettings, Kind
    from pipeline.telemetry import SelfTelemetry, component_logger

    cid = ComponentID("prometheusremotewrite")
    telemetry = SelfTelemetry()
    settings = CreateSettings(
        cid,
        Kind.EXPORTER,
        component_logger(Kind.EXPORTER, cid),
        telemetry.component(Kind.EXPORTER, cid),
    )
    return settings, telemetry


@pytest.mark.parametrize("queue", list(FULL_QUEUES))
async def test_a_full_queue_refuses_before_counting_deltas(tmp_path: Path, queue: str) -> None:
    """A delta sum refused by a full sending queue (RetryableError) and sent again once the
    queue drained counts once in the running total Prometheus receives, whatever the queue's
    sizer (requests, items, bytes) and with ``sending_queue.batch`` holding payloads; the
    refusal is counted once (``enqueue_failed``, the payload's points) and logged. Before,
    only a queue full in requests refused before translating: with items, bytes or a batch
    the helper refused after the accumulator had added the delta, and the retry found that
    point already held: dropped as out of order, its sample (11 or 111) never posted (a
    retry with a later time would have added the delta twice); nothing was logged."""
    from pipeline import RetryableError
    from plugins.prometheusremotewriteexporter.config import PrometheusRemoteWriteConfig
    from plugins.prometheusremotewriteexporter.exporter import PrometheusRemoteWriteExporter

    batching = "batch" in FULL_QUEUES[queue]
    async with (
        prometheus(tmp_path, remote_write_receiver=True) as prom,
        HoldingProxy(f"{prom.url}/api/v1/write") as proxy,
    ):
        if batching:
            proxy.release.set()
        settings, telemetry = exporter_settings()
        config = PrometheusRemoteWriteConfig.model_validate(
            {
                "endpoint": f"http://127.0.0.1:{proxy.port}/api/v1/write",
                "sending_queue": FULL_QUEUES[queue],
            }
        )
        exporter = PrometheusRemoteWriteExporter(settings, config)
        helper = exporter.helper
        await exporter.start(None)  # type: ignore[arg-type]

        def refused() -> float:
            return telemetry.value(
                "otelcol_exporter_enqueue_failed_metric_points_total",
                exporter="prometheusremotewrite",
            )

        async def drained() -> None:
            await wait_until(
                lambda: (
                    helper.queue_size == 0
                    and helper._in_flight == 0
                    and (helper._batcher is None or not helper._batcher.pending)
                )
            )

        try:
            now = time.time_ns()
            payloads = [
                Metrics(_delta_request(v, now - (3 - i) * 10**9).SerializeToString())
                for i, v in enumerate((1, 10, 100))
            ]
            await exporter.consume(payloads[0])
            if batching:  # held by the batcher until its timeout
                last = payloads[1]
            else:
                await wait_until(lambda: proxy.arrived == 1)  # in flight, held
                await exporter.consume(payloads[1])  # queued
                last = payloads[2]
            with logged() as lines, pytest.raises(RetryableError, match=r"queue .* full"):
                await exporter.consume(last)
            assert refused() == 2  # the payload's two points, once
            proxy.release.set()
            await drained()
            await exporter.consume(last)  # the sender's retry
            if batching:
                await drained()
                await exporter.consume(payloads[2])
            await helper.shutdown()  # everything sent
            series = await prom.wait_for(
                "tokens_total{model=''}[1h]", lambda r: len(r) == 1 and len(r[0]["values"]) == 3
            )
            assert [float(v) for _, v in series[0]["values"]] == [1, 11, 111]
            assert refused() == 2
            assert not telemetry.value(  # no point of the retry dropped as a repeat
                "otelcol_exporter_dropped_items_total",
                exporter="prometheusremotewrite",
                otel_signal="metrics",
                reason="out-of-order data point (older than the one held)",
            )
            assert [r.levelname for r in lines if "full" in r.getMessage()] == ["WARNING"]
        finally:
            proxy.release.set()
            await exporter.shutdown()


async def test_a_translated_payload_is_never_handed_back_as_retryable(tmp_path: Path) -> None:
    """Without a sending queue or retries, a send Prometheus refuses for now (503) fails the
    payload permanently: its delta is already in the running total, so the upstream must not
    send it again (its points would be dropped as repeats, or counted twice). The next
    sample carries the total. Before, the 503 went back as retryable."""
    from pipeline import PermanentError
    from plugins.prometheusremotewriteexporter.config import PrometheusRemoteWriteConfig
    from plugins.prometheusremotewriteexporter.exporter import PrometheusRemoteWriteExporter

    async with (
        prometheus(tmp_path, remote_write_receiver=True) as prom,
        FlakyProxy(f"{prom.url}/api/v1/write", 1, 503) as proxy,
    ):
        settings, telemetry = exporter_settings()
        config = PrometheusRemoteWriteConfig.model_validate(
            {
                "endpoint": f"http://127.0.0.1:{proxy.port}/api/v1/write",
                "sending_queue": {"enabled": False},
                "retry_on_failure": {"enabled": False},
            }
        )
        exporter = PrometheusRemoteWriteExporter(settings, config)
        await exporter.start(None)  # type: ignore[arg-type]
        try:
            now = time.time_ns()
            with pytest.raises(PermanentError, match="503"):
                await exporter.consume(Metrics(_delta_request(1, now - 10**9).SerializeToString()))
            await exporter.consume(Metrics(_delta_request(10, now).SerializeToString()))
            series = await prom.wait_for(
                "tokens_total{model=''}[1h]", lambda r: len(r) == 1 and len(r[0]["values"]) == 1
            )
            assert [float(v) for _, v in series[0]["values"]] == [11]
            failed = "otelcol_exporter_send_failed_metric_points_total"
            assert telemetry.value(failed, exporter="prometheusremotewrite") == 2  # once
        finally:
            await exporter.shutdown()


def _write_request(*series: tuple[str, list[tuple[int, float]]]) -> bytes:
    """A snappy-compressed ``WriteRequest`` of ``(name, [(timestamp, value)])`` series."""
    request = prompb.WriteRequest()
    for name, samples in series:
        ts = request.timeseries.add()
        ts.labels.add(name="__name__", value=name)
        for t, v in samples:
            ts.samples.add(timestamp=t, value=v)
    return bytes(cramjam.snappy.compress_raw(request.SerializeToString()))


def _decoded(body: bytes) -> list[tuple[str, list[tuple[int, float]]]]:
    request = prompb.WriteRequest.FromString(bytes(cramjam.snappy.decompress_raw(body)))
    return [
        (ts.labels[0].value, [(s.timestamp, s.value) for s in ts.samples])
        for ts in request.timeseries
    ]


def test_write_batches_round_trip_through_the_persistent_queue_codec() -> None:
    from pipeline import Signal
    from plugins.prometheusremotewriteexporter.exporter import WriteBatch, WriteBatchCodec

    codec = WriteBatchCodec(Signal.METRICS)
    batch = WriteBatch([b"snappy-bytes"], 7, [7])
    body = b"".join(codec.encode(batch))
    back = codec.decode(body)
    assert isinstance(back, WriteBatch)
    assert (back.body, back.item_count()) == (b"snappy-bytes", 7)
    assert codec.count(body) == 7
    # a merged batch: every body, with its points
    a, b, c = _write_request(("a", [(1, 1.0)])), _write_request(("b", [(2, 2.0)])), b"x"
    merged = WriteBatch.merge([WriteBatch([a, b], 3, [1, 2]), WriteBatch([c], 4, [4])])
    body = b"".join(codec.encode(merged))
    back = codec.decode(body)
    assert isinstance(back, WriteBatch)
    assert (back.chunks, back.counts, back.item_count()) == ([a, b, c], [1, 2, 4], 7)
    assert codec.count(body) == 7
    # a record of the previous layout (item count, series, one body) is still read
    old = codec.decode(struct.pack("<II", 5, 2) + a)
    assert isinstance(old, WriteBatch)
    assert (old.chunks, old.counts, old.item_count(), old.body) == ([a], [5], 5, a)
    for cut in range(12):
        with pytest.raises(ValueError):
            codec.decode(body[:cut] if cut >= 8 else struct.pack("<II", 5, 2)[:cut])


def test_write_batches_merge_split_copy_and_size_by_their_requests() -> None:
    """What ``sending_queue.batch`` does with translated batches: before, a merge built an
    empty ``WriteBatch`` (no ``body``: the batch was dropped at send) of 0 bytes."""
    from pipeline import Metrics
    from plugins.prometheusremotewriteexporter.exporter import WriteBatch

    a = WriteBatch([_write_request(("up", [(1000, 1.0)]), ("x", [(1000, 5.0)]))], 2, [2])
    b = WriteBatch([_write_request(("up", [(2000, 0.0)]))], 1, [1])
    c = WriteBatch([_write_request(("y", [(3000, 7.0), (4000, 8.0)]))], 3, [3])
    a.carry_acks(["tok-a"])
    c.carry_acks(["tok-c"])
    merged = WriteBatch.merge([a, b, c])
    assert isinstance(merged, WriteBatch)
    assert merged.chunks == [*a.chunks, *b.chunks, *c.chunks]
    assert merged.item_count() == 6 and merged.nbytes == a.nbytes + b.nbytes + c.nbytes > 0
    assert merged.ack_tokens == ("tok-a", "tok-c")
    # posted as one WriteRequest: every series of each request, in order ("up" twice, its
    # samples in time order)
    assert _decoded(merged.body) == [
        ("up", [(1000, 1.0)]),
        ("x", [(1000, 5.0)]),
        ("up", [(2000, 0.0)]),
        ("y", [(3000, 7.0), (4000, 8.0)]),
    ]
    assert a.body is a.chunks[0]  # one request: posted as it was translated
    parts = merged.split(3)
    assert [p.item_count() for p in parts] == [3, 3]
    assert [_decoded(p.body) for p in parts if isinstance(p, WriteBatch)] == [
        [("up", [(1000, 1.0)]), ("x", [(1000, 5.0)]), ("up", [(2000, 0.0)])],
        [("y", [(3000, 7.0), (4000, 8.0)])],
    ]
    assert all(p.ack_tokens == ("tok-a", "tok-c") for p in parts)
    assert [p.item_count() for p in merged.split(1)] == [2, 1, 3]  # never inside a request
    dup = merged.copy()
    assert isinstance(dup, WriteBatch) and dup.body == merged.body and dup.item_count() == 6
    with pytest.raises(TypeError, match="no OTLP encoding"):
        merged.message()
    with pytest.raises(TypeError, match="cannot merge"):
        WriteBatch.merge([a, Metrics(b"")])


def recording_proxy(target: str) -> FlakyProxy:
    """Forwards every request to Prometheus and keeps it (nothing refused)."""
    return FlakyProxy(target, 0, 503)


def posted_samples(proxy: FlakyProxy) -> list[tuple[tuple[tuple[str, str], ...], int, float]]:
    """Every sample posted through ``proxy``: (labels, timestamp, value)."""
    out = []
    for _, body in proxy.requests:
        request = prompb.WriteRequest.FromString(bytes(cramjam.snappy.decompress_raw(body)))
        for ts in request.timeseries:
            labels = tuple((lb.name, lb.value) for lb in ts.labels)
            out += [(labels, s.timestamp, s.value) for s in ts.samples]
    return out


PROBE_SIZES = [3, 1, 5, 2, 4, 3, 6, 1, 2, 3]  # + one "shared" point each: 40 points


def _probe_request(index: int, points: int, t_ns: int) -> ExportMetricsServiceRequest:
    """Gauge ``probe`` with ``points`` series of its own (``req``, ``j``) and one point of the
    series ``shared`` (the same in every request, later each time)."""
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    rm.resource.attributes.add(key="service.name").value.string_value = "batcher"
    metrics = rm.scope_metrics.add().metrics
    probe = metrics.add(name="probe")
    for j in range(points):
        dp = probe.gauge.data_points.add(as_double=float(index * 100 + j), time_unix_nano=t_ns)
        dp.attributes.add(key="req").value.string_value = str(index)
        dp.attributes.add(key="j").value.string_value = str(j)
    metrics.add(name="shared").gauge.data_points.add(as_double=float(index), time_unix_nano=t_ns)
    return req


async def _send_probes(otlp_port: int, now_ns: int) -> None:
    for i, n in enumerate(PROBE_SIZES):
        await _export(otlp_port, _probe_request(i, n, now_ns - (len(PROBE_SIZES) - i) * 10**9))


async def _check_probes(
    prom: Any, proxy: FlakyProxy, telemetry: Any, recovered: bool = False
) -> None:
    """Every probe sample in Prometheus, posted once; the sent count is every point."""
    points = sum(PROBE_SIZES) + len(PROBE_SIZES)
    await prom.wait_for(
        "count_over_time(shared[1h])",
        lambda r: len(r) == 1 and r[0]["value"][1] == str(len(PROBE_SIZES)),
    )
    stored = await prom.wait_for(
        "sum(count_over_time(probe[1h]))",
        lambda r: len(r) == 1 and r[0]["value"][1] == str(sum(PROBE_SIZES)),
    )
    assert value(stored) == sum(PROBE_SIZES)
    shared = await prom.query("shared[1h]")
    assert [float(v) for _, v in shared[0]["values"]] == [float(i) for i in range(10)]
    await asyncio.sleep(0.3)  # anything posted twice arrives too
    posted = [s for s in posted_samples(proxy) if dict(s[0])["__name__"] in ("probe", "shared")]
    assert len(posted) == points and len(set(posted)) == points, posted
    exporter = "prometheusremotewrite"
    assert telemetry.value("otelcol_exporter_sent_metric_points_total", exporter=exporter) == (
        points
    )
    for name in ("send_failed", "enqueue_failed"):
        assert not telemetry.value(
            f"otelcol_exporter_{name}_metric_points_total", exporter=exporter
        )
    if recovered:
        name = "otelcol_exporter_queue_recovered_metric_points_total"
        assert telemetry.value(name, exporter=exporter) == points


@pytest.mark.parametrize(
    ("queue", "most_posts"),
    [
        ("{batch: {flush_timeout: 1s, min_size: 1000}}", 3),
        ("{batch: {flush_timeout: 1s, min_size: 5, max_size: 7}}", 9),
        ("{batch: {flush_timeout: 1s, min_size: 20}}", 5),
        (
            "{sizer: bytes, queue_size: 1000000, batch: {flush_timeout: 1s, min_size: 400, "
            "max_size: 400, sizer: bytes}}",
            9,
        ),
    ],
    ids=["batch", "batch-max-items", "batch-min-items", "batch-bytes"],
)
async def test_every_sample_arrives_through_a_batching_sending_queue(
    tmp_path: Path, queue: str, most_posts: int
) -> None:
    """OTLP -> prometheusremotewrite with ``sending_queue.batch`` -> a real Prometheus: the
    translated requests a batch gathers are posted together (fewer posts than requests), split
    at ``max_size`` (items or bytes) between requests; every sample lands once, counted as
    sent. Before, a batch of translated requests had no body: every point was dropped."""
    otlp_port = free_port()
    async with (
        prometheus(tmp_path, remote_write_receiver=True) as prom,
        recording_proxy(f"{prom.url}/api/v1/write") as proxy,
    ):
        endpoint = f"http://127.0.0.1:{proxy.port}/api/v1/write"
        config = gateway_config(otlp_port, endpoint, f"sending_queue: {queue}")
        async with running_service(config, tmp_path) as service:
            await _send_probes(otlp_port, time.time_ns())
            await _check_probes(prom, proxy, service.telemetry)
        assert 1 <= len(proxy.requests) <= most_posts, len(proxy.requests)
        if "max_size: 7" in queue:  # no post over max_size (no request has more than 7)
            for _, body in proxy.requests:
                request = prompb.WriteRequest.FromString(bytes(cramjam.snappy.decompress_raw(body)))
                names = [ts.labels[0].value for ts in request.timeseries]
                assert sum(name in ("probe", "shared") for name in names) <= 7


async def test_translated_batches_wait_in_the_persistent_queue_through_a_restart(
    tmp_path: Path,
) -> None:
    """Prometheus unreachable: the translated requests wait in the file_storage queue through
    a shutdown; on the next start every sample lands once and the points count as recovered
    and sent."""
    otlp_port = free_port()
    async with prometheus(tmp_path, remote_write_receiver=True) as prom:
        proxy = recording_proxy(f"{prom.url}/api/v1/write")  # not listening yet
        endpoint = f"http://127.0.0.1:{proxy.port}/api/v1/write"
        config = gateway_config(
            otlp_port,
            endpoint,
            "sending_queue: {storage: file_storage}",
        ).replace(
            "    service:\n",
            f'    extensions:\n      file_storage: {{directory: "{tmp_path}"}}\n'
            "    service:\n      shutdown_timeout: 1s\n      extensions: [file_storage]\n",
        )
        async with running_service(config, tmp_path) as service:
            await _send_probes(otlp_port, time.time_ns())
            await wait_until(
                lambda: (
                    service.telemetry.value(
                        "otelcol_exporter_retried_metric_points_total",
                        exporter="prometheusremotewrite",
                    )
                    > 0
                )
            )
        async with proxy, running_service(config, tmp_path) as service:
            await _check_probes(prom, proxy, service.telemetry, recovered=True)


def test_huge_resource_attributes_are_cut_in_every_label_written() -> None:
    """A 1 MiB ``service.name`` (``job``), ``service.namespace``, ``service.instance.id``
    (``instance``) or other resource attribute (a ``target_info`` label, and with
    ``resource_to_telemetry_conversion`` a label of every series) or point attribute is
    written cut to ``MAX_LABEL_VALUE_CHARS``, and each cut is counted. Before, the write
    request carried every one whole."""
    from plugins._labelbound import MAX_LABEL_VALUE_CHARS
    from plugins.prometheusremotewriteexporter.config import PrometheusRemoteWriteConfig
    from plugins.prometheusremotewriteexporter.exporter import PrometheusRemoteWriteExporter

    huge = 1 << 20
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    for key, ch in [
        ("service.name", "s"),
        ("service.namespace", "n"),
        ("service.instance.id", "i"),
        ("host.name", "h"),
    ]:
        kv = rm.resource.attributes.add(key=key)
        kv.value.string_value = ch * huge
    m = rm.scope_metrics.add().metrics.add(name="tokens", unit="1")
    m.gauge.SetInParent()
    dp = m.gauge.data_points.add(as_int=3, time_unix_nano=time.time_ns())
    dp.attributes.add(key="model").value.string_value = "m" * huge
    settings, telemetry = exporter_settings()
    config = PrometheusRemoteWriteConfig.model_validate(
        {
            "endpoint": "http://127.0.0.1:1/api/v1/write",
            "resource_to_telemetry_conversion": {"enabled": True},
        }
    )
    exporter = PrometheusRemoteWriteExporter(settings, config)
    batch = exporter.translate(Metrics(req.SerializeToString()))
    assert batch is not None
    written = prompb.WriteRequest.FromString(bytes(cramjam.snappy.decompress_raw(batch.body)))
    series = [{lb.name: lb.value for lb in ts.labels} for ts in written.timeseries]
    assert sorted(s["__name__"] for s in series) == ["target_info", "tokens_ratio"], series
    longest = {name: len(v) for s in series for name, v in s.items()}
    assert set(longest) >= {"job", "instance", "host_name", "model"}, longest
    assert max(longest.values()) == MAX_LABEL_VALUE_CHARS, longest
    cut = telemetry.value(
        "otelcol_label_values_truncated_total", kind="exporter", component="prometheusremotewrite"
    )
    assert cut >= 6, cut  # target_info: job, instance, host_name; the gauge: + model, ...
