"""The gateway's own metrics (service.telemetry.metrics) against what a test sent, refused and
dropped, read from the Prometheus endpoint the way a scraper reads it."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

import aiohttp
import grpc
import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from tests.plugins.helpers import post_exporter
from tests.plugins.helpers.peers import http_server
from tests.support import free_port, gateway, running_service, wait_until


def scrape_text(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


async def scrape(address: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with aiohttp.ClientSession() as s, s.get(f"http://{address}/metrics") as resp:
        assert resp.status == 200
        return scrape_text(await resp.text())


def send_spans_with_sdk(endpoint: str, n: int) -> None:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": "telemetry-test"}))
    provider.add_span_processor(
        BatchSpanProcessor(
            OTLPSpanExporter(endpoint=endpoint, insecure=True), max_export_batch_size=7
        )
    )
    tracer = provider.get_tracer("test")
    for i in range(n):
        with tracer.start_as_current_span(f"span-{i}"):
            pass
    assert provider.force_flush(10_000)
    provider.shutdown()


def test_counters_match_what_the_sdk_sent(tmp_path: Path) -> None:
    grpc_port, metrics_port = free_port(), free_port()
    text = f"""
    receivers:
      otlp:
        protocols:
          grpc: {{endpoint: 127.0.0.1:{grpc_port}}}
    processors:
      batch: {{timeout: 50ms, send_batch_size: 20}}
    exporters:
      debug:
    service:
      pipelines:
        traces: {{receivers: [otlp], processors: [batch], exporters: [debug]}}
      telemetry:
        metrics: {{level: normal, address: 127.0.0.1:{metrics_port}}}
    """
    with gateway(text, tmp_path) as gw:
        send_spans_with_sdk(f"127.0.0.1:{grpc_port}", 53)

        async def read() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
            address = f"127.0.0.1:{metrics_port}"
            for _ in range(100):
                values = await scrape(address)
                if (
                    values.get(("otelcol_exporter_sent_spans_total", (("exporter", "debug"),)))
                    == 53
                ):
                    return values
                await asyncio.sleep(0.05)
            return values

        values = asyncio.run(read())
        with open(f"/proc/{gw.proc.pid}/status") as f:
            vmrss = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS"))
        with open(f"/proc/{gw.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    assert values[("otelcol_receiver_accepted_spans_total", (("receiver", "otlp"),))] == 53
    assert values[("otelcol_receiver_refused_spans_total", (("receiver", "otlp"),))] == 0
    assert values[("otelcol_exporter_sent_spans_total", (("exporter", "debug"),))] == 53
    batch = (("processor", "batch"),)
    assert values[("otelcol_processor_batch_batch_send_size_sum", batch)] == 53
    # 8 requests of up to 7 spans against send_batch_size 20: at least 2 batches (3 when the
    # requests arrive one by one; a busy machine lets several wait for the batch task)
    assert values[("otelcol_processor_batch_batch_send_size_count", batch)] >= 2
    incoming = (("otel_signal", "traces"), ("processor", "batch"))
    assert values[("otelcol_processor_incoming_items_total", incoming)] == 53
    assert values[("otelcol_processor_outgoing_items_total", incoming)] == 53
    # Process metrics with the Collector's names, agreeing with /proc.
    assert values[("otelcol_process_memory_rss_bytes", ())] == pytest.approx(vmrss, rel=0.25)
    assert 0 < values[("otelcol_process_cpu_seconds_total", ())] <= cpu + 0.05
    assert values[("otelcol_process_uptime_seconds_total", ())] > 0
    assert values[("otelcol_process_runtime_heap_alloc_bytes", ())] > 0
    assert values[("otelcol_process_runtime_total_sys_memory_bytes", ())] >= vmrss


def spans_request(n: int) -> trace_service_pb2.ExportTraceServiceRequest:
    request = trace_service_pb2.ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    for i in range(n):
        span = scope.spans.add()
        span.trace_id = os.urandom(16)
        span.span_id = os.urandom(8)
        span.name = f"s{i}"
    return request


async def test_refused_and_dropped_are_counted() -> None:
    """A stuck backend: the sending queue fills, later requests are refused
    (RESOURCE_EXHAUSTED), and what is still queued at shutdown is dropped (send_failed)."""
    post_exporter.register()
    release = asyncio.Event()
    posted = asyncio.Event()  # the queue's consumer took the first batch: it is stuck with it

    async def stuck(request: web.Request) -> web.Response:
        await request.read()
        posted.set()
        await release.wait()
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/", stuck)
    grpc_port, metrics_port = free_port(), free_port()
    async with http_server(app) as url:
        text = f"""
        receivers:
          otlp:
            protocols:
              grpc: {{endpoint: 127.0.0.1:{grpc_port}}}
        exporters:
          test_post:
            url: {url}/
            timeout: 60s
            sending_queue: {{num_consumers: 1, queue_size: 2}}
        service:
          shutdown_timeout: 500ms
          pipelines:
            traces: {{receivers: [otlp], exporters: [test_post]}}
          telemetry:
            metrics: {{address: 127.0.0.1:{metrics_port}}}
        """
        accepted = refused = 0
        async with running_service(text) as service:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
                stub = trace_service_pb2_grpc.TraceServiceStub(channel)
                for n in (5, 6, 7, 8, 9):
                    try:
                        await stub.Export(spans_request(n), timeout=5)
                    except grpc.aio.AioRpcError as exc:
                        assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                        refused += n
                    else:
                        accepted += n
                    if n == 5:  # the worker picked up the first batch: the queue is empty
                        await asyncio.wait_for(posted.wait(), 10)
            values = await scrape(f"127.0.0.1:{metrics_port}")
            r = (("receiver", "otlp"),)
            e = (("exporter", "test_post"),)
            assert accepted == 5 + 6 + 7 and refused == 8 + 9
            assert values[("otelcol_receiver_accepted_spans_total", r)] == accepted
            assert values[("otelcol_receiver_refused_spans_total", r)] == refused
            assert values[("otelcol_exporter_enqueue_failed_spans_total", e)] == refused
            queue = (("data_type", "traces"), ("exporter", "test_post"))
            assert values[("otelcol_exporter_queue_size", queue)] == 2
            assert values[("otelcol_exporter_queue_capacity", queue)] == 2
        # Shut down with the backend still stuck: everything accepted is dropped, and counted.
        tel = service.telemetry
        assert tel.value("otelcol_exporter_send_failed_spans_total", exporter="test_post") == (
            accepted
        )
        assert tel.value("otelcol_exporter_sent_spans_total", exporter="test_post") == 0
        release.set()


async def test_level_none_serves_nothing() -> None:
    port = free_port()
    text = f"""
    receivers:
      healthcheck: {{checks: [{{name: s, type: system}}]}}
    exporters:
      debug:
    service:
      pipelines:
        metrics: {{receivers: [healthcheck], exporters: [debug]}}
      telemetry:
        metrics: {{level: none, address: 127.0.0.1:{port}}}
    """
    async with running_service(text):
        await asyncio.sleep(0.1)
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0


async def test_hostmetrics_scraper_counters_on_the_endpoint() -> None:
    port = free_port()
    text = f"""
    receivers:
      hostmetrics:
        collection_interval: 100ms
        initial_delay: 0s
        scrapers: {{load: }}
    exporters:
      debug:
    service:
      pipelines:
        metrics: {{receivers: [hostmetrics], exporters: [debug]}}
      telemetry:
        metrics: {{address: 127.0.0.1:{port}}}
    """
    async with running_service(text) as service:
        tel = service.telemetry
        await wait_until(
            lambda: (
                tel.value("otelcol_receiver_accepted_metric_points_total", receiver="hostmetrics")
                >= 6
            )
        )
        values = await scrape(f"127.0.0.1:{port}")
    scraped = values[
        (
            "otelcol_scraper_scraped_metric_points_total",
            (("receiver", "hostmetrics"), ("scraper", "load")),
        )
    ]
    accepted = values[
        ("otelcol_receiver_accepted_metric_points_total", (("receiver", "hostmetrics"),))
    ]
    assert accepted >= 6 and accepted % 3 == 0  # three load averages per scrape
    assert accepted <= scraped <= accepted + 3
