"""The ``prometheus`` receiver, scraping a real Prometheus server's own ``/metrics``."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from opentelemetry.proto.metrics.v1 import metrics_pb2

from pipeline import ComponentID, ConfigErrors, CreateSettings, Kind, Payload
from pipeline.telemetry import SelfTelemetry, component_logger
from plugins.prometheusreceiver.config import PrometheusReceiverConfig
from plugins.prometheusreceiver.receiver import PrometheusReceiver
from tests.plugins.prometheus_server import prometheus
from tests.support import config_from_text, free_port, running_service, wait_until


class Collected:
    """The pipeline side of the receiver: keeps what it is given."""

    mutates_data = False

    def __init__(self) -> None:
        self.payloads: list[Payload] = []

    async def consume(self, data: Payload) -> None:
        self.payloads.append(data)

    def metrics(self) -> dict[tuple[str, str], list[tuple[dict[str, str], Any]]]:
        """``(job, metric name)`` -> ``[(resource attributes, metric)]``."""
        out: dict[tuple[str, str], list[tuple[dict[str, str], Any]]] = {}
        for p in self.payloads:
            for rm in p.message().resource_metrics:
                res = {kv.key: kv.value.string_value for kv in rm.resource.attributes}
                for sm in rm.scope_metrics:
                    for m in sm.metrics:
                        out.setdefault((res.get("service.name", ""), m.name), []).append((res, m))
        return out


def receiver(
    scrape_configs: list[dict[str, Any]],
) -> tuple[PrometheusReceiver, Collected, SelfTelemetry]:
    telemetry = SelfTelemetry()
    cid = ComponentID("prometheus")
    settings = CreateSettings(
        cid,
        Kind.RECEIVER,
        component_logger(Kind.RECEIVER, cid),
        telemetry.component(Kind.RECEIVER, cid),
    )
    config = PrometheusReceiverConfig.model_validate({"config": {"scrape_configs": scrape_configs}})
    sink = Collected()
    return PrometheusReceiver(settings, config, sink), sink, telemetry


async def test_scrapes_prometheus_and_emits_otlp(tmp_path: Path) -> None:
    dead = free_port()
    async with prometheus(tmp_path) as prom:
        rcv, sink, telemetry = receiver(
            [
                {
                    "job_name": "prom",
                    "scrape_interval": "500ms",
                    "scrape_timeout": "400ms",
                    "static_configs": [
                        {"targets": [f"127.0.0.1:{prom.port}"], "labels": {"env": "test"}}
                    ],
                },
                {
                    "job_name": "dead",
                    "scrape_interval": "500ms",
                    "scrape_timeout": "200ms",
                    "static_configs": [{"targets": [f"127.0.0.1:{dead}"]}],
                },
            ]
        )
        await rcv.start(None)  # type: ignore[arg-type]
        try:
            await wait_until(lambda: all(loop.scrapes >= 2 for loop in rcv.loops), within=20)
        finally:
            await rcv.shutdown()
    got = sink.metrics()
    res, build_info = got[("prom", "prometheus_build_info")][0]
    assert res["service.instance.id"] == f"127.0.0.1:{prom.port}"
    assert res["server.port"] == str(prom.port) and res["url.scheme"] == "http"
    assert build_info.WhichOneof("data") == "gauge"
    attrs = {kv.key: kv.value.string_value for kv in build_info.gauge.data_points[0].attributes}
    assert attrs["version"].startswith("2.") and attrs["env"] == "test"
    assert "job" not in attrs and "instance" not in attrs
    # up and scrape_duration_seconds per target
    ups = {
        job: [m.gauge.data_points[0].as_double for _, m in got[(job, "up")]]
        for job in ("prom", "dead")
    }
    assert ups["prom"][-1] == 1.0 and set(ups["dead"]) == {0.0}
    duration = got[("prom", "scrape_duration_seconds")][-1][1].gauge.data_points[0].as_double
    assert 0 < duration < 0.4
    # A counter: cumulative monotonic sum, its start time kept from one scrape to the next.
    counters = [m for _, m in got[("prom", "prometheus_http_requests_total")]]
    assert counters[0].sum.is_monotonic
    assert counters[0].sum.aggregation_temporality == metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE
    first = {
        tuple(sorted((kv.key, kv.value.string_value) for kv in dp.attributes)): dp
        for dp in counters[0].sum.data_points
    }
    later = {
        tuple(sorted((kv.key, kv.value.string_value) for kv in dp.attributes)): dp
        for dp in counters[-1].sum.data_points
    }
    common = set(first) & set(later)
    assert common
    for key in common:
        assert later[key].start_time_unix_nano == first[key].start_time_unix_nano
        assert later[key].time_unix_nano > first[key].time_unix_nano
        assert later[key].as_double >= first[key].as_double
    # A histogram with its buckets de-accumulated, and a summary.
    hist = got[("prom", "prometheus_http_request_duration_seconds")][-1][1]
    dp = hist.histogram.data_points[0]
    assert len(dp.bucket_counts) == len(dp.explicit_bounds) + 1
    assert sum(dp.bucket_counts) == dp.count
    summary = got[("prom", "go_gc_duration_seconds")][-1][1]
    assert {q.quantile for q in summary.summary.data_points[0].quantile_values} >= {0.0, 0.5, 1.0}
    accepted = telemetry.value(
        "otelcol_receiver_accepted_metric_points_total", receiver="prometheus"
    )
    assert accepted > 100


async def test_openmetrics_and_labels(tmp_path: Path) -> None:
    """A target serving OpenMetrics with exemplars, _created and a clashing label."""
    body = (
        "# TYPE jobs counter\n"
        "# HELP jobs Jobs run.\n"
        'jobs_total{job="inner",kind="a"} 5 # {trace_id="0af7651916cd43dd8448eb211c80319c",'
        'span_id="b7ad6b7169203331"} 1.0 1700000000.5\n'
        'jobs_created{job="inner",kind="a"} 1700000000.25\n'
        "# TYPE temp_celsius gauge\n# UNIT temp_celsius celsius\n"
        "temp_celsius 21.5\n"
        "# EOF\n"
    )
    served = {"n": 0}

    async def handle(_: web.Request) -> web.Response:
        served["n"] += 1
        return web.Response(
            body=body.encode(),
            headers={"Content-Type": "application/openmetrics-text; version=1.0.0; charset=utf-8"},
        )

    app = web.Application()
    app.router.add_get("/custom", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        for honor, expect_job in ((False, "app"), (True, "inner")):
            rcv, sink, _ = receiver(
                [
                    {
                        "job_name": "app",
                        "scrape_interval": "1s",
                        "metrics_path": "/custom",
                        "honor_labels": honor,
                        "params": {"module": ["x"]},
                        "static_configs": [{"targets": [f"127.0.0.1:{port}"]}],
                    }
                ]
            )
            assert rcv.loops[0].target.url.endswith("/custom?module=x")
            await rcv.start(None)  # type: ignore[arg-type]
            try:
                await wait_until(lambda: rcv.loops[0].scrapes >= 1)  # noqa: B023
            finally:
                await rcv.shutdown()
            got = sink.metrics()
            _, jobs = got[(expect_job, "jobs_total")][0]
            dp = jobs.sum.data_points[0]
            attrs = {kv.key: kv.value.string_value for kv in dp.attributes}
            if honor:
                assert "exported_job" not in attrs
            else:
                assert attrs["exported_job"] == "inner"
            assert dp.as_double == 5
            assert dp.start_time_unix_nano == 1700000000_250000000
            assert dp.exemplars[0].trace_id.hex() == "0af7651916cd43dd8448eb211c80319c"
            assert dp.exemplars[0].span_id.hex() == "b7ad6b7169203331"
            assert jobs.description == "Jobs run."
            _, temp = got[("app", "temp_celsius")][0]
            assert temp.unit == "celsius" and temp.gauge.data_points[0].as_double == 21.5
    finally:
        await runner.cleanup()


async def scrape_once(job: str, handle: Any) -> tuple[PrometheusReceiver, Collected]:
    """A target served by ``handle`` at ``/metrics``, scraped once by a receiver."""
    app = web.Application()
    app.router.add_get("/metrics", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        rcv, sink, _ = receiver(
            [{"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}]
        )
        await rcv.start(None)  # type: ignore[arg-type]
        try:
            await wait_until(lambda: rcv.loops[0].scrapes >= 1)
        finally:
            await rcv.shutdown()
    finally:
        await runner.cleanup()
    return rcv, sink


async def test_a_broken_exposition_gives_up_zero(tmp_path: Path) -> None:
    async def handle(_: web.Request) -> web.Response:
        return web.Response(text="this is not { a metric\n", content_type="text/plain")

    rcv, sink = await scrape_once("bad", handle)
    assert rcv.loops[0].last_error is not None and "parse" in rcv.loops[0].last_error
    ((_, up),) = sink.metrics()[("bad", "up")]
    assert up.gauge.data_points[0].as_double == 0


HOSTILE_TEXT = (
    b"# HELP bad_help Help with bytes that are not UTF-8: \xff\xed\xa0\x80.\n"
    b"# TYPE bad_help gauge\n"
    b'bad_help{path="/caf\xe9",k="\xc0\x80"} 1\n'
    b'nan_value{k="v"} NaN\n'
    b'inf_value{k="v"} +Inf\n'
    b'long_label{k="' + b"x" * 70_000 + b'"} 3\n'
)
HOSTILE_OPENMETRICS = (
    b"# TYPE jobs counter\n"
    b"# HELP jobs Help \xff\xfe.\n"
    b'jobs_total{kind="\xed\xa0\x80"} 5 # {trace_id="0af7",span_id="b7ad6b7169203331aa"} 1.0\n'
    b'jobs_total{kind="b"} 6 # {trace_id="zz",span_id="\xff"} 1.0\n'
    b"# TYPE lat histogram\n"
    b'lat_bucket{le="0.1"} 1 # {trace_id="0af7651916cd43dd8448eb211c80319c"} 0.05\n'
    b'lat_bucket{le="+Inf"} 2\n'
    b"lat_count 2\n"
    b"lat_sum 0.3\n"
    b"# EOF\n"
)


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (HOSTILE_TEXT, "text/plain; version=0.0.4"),
        (HOSTILE_OPENMETRICS, "application/openmetrics-text; version=1.0.0"),
    ],
)
async def test_what_the_receiver_makes_of_hostile_targets_is_valid_otlp(
    body: bytes, content_type: str
) -> None:
    """The receiver builds its own OTLP: bytes that are not UTF-8 in names, help and label
    values are replaced (the body is decoded with replacement), exemplar ids that are not hex
    of their length stay attributes, so what it emits passes the edge check every receiver of
    OTLP applies."""
    from pipeline._otlpvalid import check

    async def handle(_: web.Request) -> web.Response:
        return web.Response(body=body, headers={"Content-Type": content_type})

    rcv, sink = await scrape_once("hostile", handle)
    assert sink.payloads
    for payload in sink.payloads:
        assert check("metrics", payload.to_bytes()) == payload.item_count()
    names = {name for _, name in sink.metrics()}
    assert "up" in names and len(names) > 3, (names, rcv.loops[0].last_error)


async def test_receiver_to_prometheus_exporter_pipeline(tmp_path: Path) -> None:
    """Prometheus's own metrics, scraped by the gateway and served again by its exporter."""
    out_port = free_port()
    async with prometheus(tmp_path) as prom:
        config = f"""
        receivers:
          prometheus:
            config:
              scrape_configs:
                - job_name: prometheus-self
                  scrape_interval: 1s
                  static_configs:
                    - targets: ["127.0.0.1:{prom.port}"]
        exporters:
          prometheus:
            endpoint: 127.0.0.1:{out_port}
        service:
          pipelines:
            metrics:
              receivers: [prometheus]
              exporters: [prometheus]
          telemetry:
            metrics:
              level: none
        """
        async with running_service(config, tmp_path):
            text = ""
            async with aiohttp.ClientSession() as session:
                for _ in range(100):
                    async with session.get(f"http://127.0.0.1:{out_port}/metrics") as resp:
                        text = await resp.text()
                    if "prometheus_build_info" in text:
                        break
                    await asyncio.sleep(0.1)
    line = next(x for x in text.splitlines() if x.startswith("prometheus_build_info{"))
    assert 'job="prometheus-self"' in line and f'instance="127.0.0.1:{prom.port}"' in line
    assert f'up{{instance="127.0.0.1:{prom.port}",job="prometheus-self"' in text
    assert "# TYPE prometheus_http_requests_total counter" in text


def test_config_errors(tmp_path: Path) -> None:
    base = """
    receivers:
      prometheus:
        config:
          scrape_configs:
            {jobs}
    exporters:
      debug:
    service:
      pipelines:
        metrics:
          receivers: [prometheus]
          exporters: [debug]
    """
    with pytest.raises(ConfigErrors, match="greater than"):
        config_from_text(
            base.format(
                jobs="- {job_name: a, scrape_interval: 1s, scrape_timeout: 2s, "
                "static_configs: [{targets: ['x:1']}]}"
            ),
            tmp_path,
        )
    with pytest.raises(ConfigErrors, match="multiple scrape configs"):
        config_from_text(base.format(jobs="[{job_name: a}, {job_name: a}]"), tmp_path)
    with pytest.raises(ConfigErrors, match="endpoint"):
        config_from_text(
            base.format(jobs="- {job_name: a, static_configs: [{targets: ['nohostport']}]}"),
            tmp_path,
        )
