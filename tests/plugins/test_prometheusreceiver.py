"""The ``prometheus`` receiver, scraping a real Prometheus server's own ``/metrics``."""

from __future__ import annotations

import asyncio
import gzip
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
from tests.hostile import cost
from tests.plugins.helpers.peers import LocalServer
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


async def serve_once(body: str | bytes, content_type: str, caplog: pytest.LogCaptureFixture) -> Any:
    """One scrape of a target serving ``body``: the receiver's loop, what it sent, its
    telemetry."""
    raw = body.encode() if isinstance(body, str) else body

    async def handle(_: web.Request) -> web.Response:
        return web.Response(body=raw, headers={"Content-Type": content_type})

    app = web.Application()
    app.router.add_get("/metrics", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        rcv, sink, telemetry = receiver(
            [{"job_name": "odd", "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}]
        )
        with caplog.at_level("WARNING"):
            await rcv.start(None)  # type: ignore[arg-type]
            try:
                await wait_until(lambda: rcv.loops[0].scrapes >= 1)
            finally:
                await rcv.shutdown()
    finally:
        await runner.cleanup()
    return rcv.loops[0], sink, telemetry


async def test_a_broken_exposition_gives_up_zero(caplog: pytest.LogCaptureFixture) -> None:
    loop, sink, _ = await serve_once("this is not { a metric\n", "text/plain", caplog)
    assert loop.last_error is not None and "parse" in loop.last_error
    ((_, up),) = sink.metrics()[("odd", "up")]
    assert up.gauge.data_points[0].as_double == 0


async def test_families_otlp_cannot_hold_are_dropped_counted_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Found by fuzzing (tests/fuzz/regressions/prometheus_text): a summary whose quantile is
    not a number ended the scrape with a ValueError from the converter (no ``up``, nothing
    sent). Such a family is dropped whole, counted and logged; the others go through."""
    body = (
        "# TYPE rpc_seconds summary\n"
        'rpc_seconds{quantile="0.5x"} 0.1\nrpc_seconds_sum 3\nrpc_seconds_count 7\n'
        "# TYPE big_seconds histogram\n"
        'big_seconds_bucket{le="+Inf"} 1e30\nbig_seconds_count 1e30\nbig_seconds_sum 1\n'
        "# TYPE fine gauge\nfine 2\n"
    )
    _, sink, telemetry = await serve_once(body, "text/plain; version=0.0.4", caplog)
    got = sink.metrics()
    assert ("odd", "fine") in got and ("odd", "rpc_seconds") not in got
    assert ("odd", "big_seconds") not in got
    assert got[("odd", "up")][0][1].gauge.data_points[0].as_double == 1
    dropped = telemetry.value(
        "otelcol_receiver_dropped_items_total",
        receiver="prometheus",
        otel_signal="metrics",
        reason="invalid sample values",
    )
    assert dropped == 6
    (record,) = [r for r in caplog.records if "OTLP cannot hold" in r.getMessage()]
    assert "rpc_seconds" in record.error  # type: ignore[attr-defined]


async def test_a_parser_failure_of_any_kind_is_a_failed_scrape(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Found by fuzzing (tests/fuzz/regressions/prometheus_openmetrics): prometheus_client's
    OpenMetrics parser raised KeyError for a native histogram without its count, which the
    scrape did not catch. It is a failed scrape like any unparsable exposition."""
    body = "# TYPE h histogram\nh {sum:1,schema:0,zero_threshold:0,zero_count:0}\n# EOF\n"
    loop, sink, _ = await serve_once(body, "application/openmetrics-text; version=1.0.0", caplog)
    assert loop.last_error is not None and "KeyError" in loop.last_error
    ((_, up),) = sink.metrics()[("odd", "up")]
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
    body: bytes, content_type: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The receiver builds its own OTLP: bytes that are not UTF-8 in names, help and label
    values are replaced (the body is decoded with replacement), exemplar ids that are not hex
    of their length stay attributes, so what it emits passes the edge check every receiver of
    OTLP applies."""
    from pipeline._otlpvalid import check

    loop, sink, _ = await serve_once(body, content_type, caplog)
    assert sink.payloads
    for payload in sink.payloads:
        assert check("metrics", payload.to_bytes()) == payload.item_count()
    names = {name for _, name in sink.metrics()}
    assert "up" in names and len(names) > 3, (names, loop.last_error)


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


# -- limits: hostile or runaway targets -------------------------------------------------------
class Target(LocalServer):
    """A scrape target serving what the test says, counting the requests it gets."""

    def __init__(self) -> None:
        super().__init__()
        self.bodies: list[tuple[bytes, dict[str, str]]] = []
        self.requests = 0

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/metrics", self._handle)]

    def serve(self, text: str | bytes, **headers: str) -> None:
        body = text.encode() if isinstance(text, str) else text
        self.bodies.append((body, {"Content-Type": "text/plain; version=0.0.4", **headers}))

    async def _handle(self, _: web.Request) -> web.Response:
        self.requests += 1
        body, headers = self.bodies[min(self.requests, len(self.bodies)) - 1]
        return web.Response(body=body, headers=headers)


async def scrape(
    target: Target, scrapes: int = 1, **job: Any
) -> tuple[PrometheusReceiver, Collected, SelfTelemetry]:
    rcv, sink, telemetry = receiver(
        [
            {
                "job_name": "t",
                "scrape_interval": "100ms",
                "scrape_timeout": "100ms",
                "static_configs": [{"targets": [f"127.0.0.1:{target.port}"]}],
                **job,
            }
        ]
    )
    await rcv.start(None)  # type: ignore[arg-type]
    try:
        await wait_until(lambda: rcv.loops[0].scrapes >= scrapes)
    finally:
        await rcv.shutdown()
    return rcv, sink, telemetry


def ups(sink: Collected) -> list[float]:
    return [m.gauge.data_points[0].as_double for _, m in sink.metrics()[("t", "up")]]


def refused_scrapes(telemetry: SelfTelemetry, reason: str) -> float:
    return float(
        telemetry.value(
            "otelcol_receiver_refused_requests_total",
            receiver="prometheus",
            transport="scrape",
            reason=reason,
        )
    )


@pytest.mark.parametrize(
    ("limit", "exposition", "error"),
    [
        ({"body_size_limit": "1KB"}, "m 1\n" * 300, "body size limit exceeded"),
        ({"sample_limit": 10}, "m 1\n" * 11, "sample limit exceeded (11 samples, limit: 10"),
        (
            {"label_limit": 4},  # __name__, job, instance and two of its own
            'm{a="1",b="2"} 1\n',
            "label_limit exceeded (metric: m, number of labels: 5, limit: 4)",
        ),
        (
            {"label_name_length_limit": 5},
            'm{toolong="1"} 1\n',
            "label_name_length_limit exceeded (metric: m, label name: toolong, length: 7",
        ),
        (
            {"label_value_length_limit": 20},  # the instance label is 15 characters long
            'm{a="longer_than_twenty_chars"} 1\n',
            "label_value_length_limit exceeded (metric: m, label name: a, value: 'longer_than",
        ),
        (
            {"label_value_length_limit": 20},  # the metric name is __name__'s value
            "a_name_longer_than_twenty 1\n",
            "label_value_length_limit exceeded (metric: a_name_longer_than_twenty, label name: "
            "__name__",
        ),
    ],
)
async def test_a_scrape_over_a_limit_fails_as_in_prometheus(
    limit: dict[str, Any], exposition: str, error: str
) -> None:
    async with Target() as target:
        target.serve(exposition)
        rcv, sink, telemetry = await scrape(target, **limit)
    assert rcv.loops[0].last_error is not None and error in rcv.loops[0].last_error
    assert set(ups(sink)) == {0.0}
    assert {name for _, name in sink.metrics()} == {
        "up",
        "scrape_duration_seconds",
        "scrape_samples_scraped",
    }
    (name,) = limit
    reason = "body_size_limit" if name == "body_size_limit" else name
    assert refused_scrapes(telemetry, reason) >= 1


async def test_limits_come_from_global_and_the_job_overrides_them() -> None:
    config = PrometheusReceiverConfig.model_validate(
        {
            "config": {
                "global": {"sample_limit": 5, "body_size_limit": "2MiB", "label_limit": 9},
                "scrape_configs": [
                    {"job_name": "a"},
                    {"job_name": "b", "sample_limit": 0, "body_size_limit": 1000},
                ],
            }
        }
    )
    prom = config.config
    a, b = (prom.limits(sc) for sc in prom.scrape_configs)
    assert (a.sample_limit, a.body_size_limit, a.label_limit) == (5, 2 << 20, 9)
    assert (b.sample_limit, b.body_size_limit, b.label_limit) == (0, 1000, 9)
    defaults = PrometheusReceiverConfig.model_validate({"config": {"scrape_configs": [a_job()]}})
    limits = defaults.config.limits(defaults.config.scrape_configs[0])
    assert (limits.body_size_limit, limits.sample_limit) == (10 << 20, 50_000)
    with pytest.raises(ValueError, match="not a size"):
        PrometheusReceiverConfig.model_validate(
            {"config": {"scrape_configs": [a_job(body_size_limit="10 parsecs")]}}
        )


def a_job(**kw: Any) -> dict[str, Any]:
    return {"job_name": "a", **kw}


async def test_samples_under_the_limits_are_taken() -> None:
    async with Target() as target:
        target.serve("# TYPE m gauge\n" + "".join(f'm{{i="{i}"}} {i}\n' for i in range(10)))
        rcv, sink, _ = await scrape(
            target, sample_limit=10, label_limit=4, label_value_length_limit=15
        )
    assert rcv.loops[0].last_error is None and ups(sink)[0] == 1.0
    assert len(sink.metrics()[("t", "m")][0][1].gauge.data_points) == 10


async def test_a_gzip_bomb_is_read_no_further_than_body_size_limit() -> None:
    """The limit is on the decompressed body, as Prometheus's; reading stops there."""
    bomb = gzip.compress(b"m 1\n" * (16 << 20), compresslevel=9)  # 64 MiB in ~100 KB
    async with Target() as target:
        target.serve(bomb, **{"Content-Encoding": "gzip"})
        rcv, _, telemetry = await scrape(target, body_size_limit="1MiB")
    assert "body size limit exceeded" in (rcv.loops[0].last_error or "")
    assert refused_scrapes(telemetry, "body_size_limit") >= 1


async def test_target_limit_marks_every_target_down_without_scraping() -> None:
    async with Target() as target:
        target.serve("m 1\n")
        rcv, sink, _ = receiver(
            [
                {
                    "job_name": "t",
                    "scrape_interval": "100ms",
                    "scrape_timeout": "100ms",
                    "target_limit": 2,
                    "static_configs": [
                        {"targets": [f"127.0.0.1:{target.port}", "127.0.0.1:1", "127.0.0.1:2"]}
                    ],
                }
            ]
        )
        await rcv.start(None)  # type: ignore[arg-type]
        try:
            await wait_until(lambda: all(loop.scrapes >= 2 for loop in rcv.loops))
        finally:
            await rcv.shutdown()
        assert target.requests == 0
    for loop in rcv.loops:
        assert loop.last_error == "target_limit exceeded (number of targets: 3, limit: 2)"
    assert set(ups(sink)) == {0.0}


def test_a_million_tiny_samples_cost_a_count_not_a_parse() -> None:
    """1M one-line samples (4 MB: parsing them took ~8 s of CPU and ~400 MB; the audit's
    49 MiB target of 1M series took 31 s and 1.85 GB): over sample_limit, refused after a
    count of its lines, before any parse."""
    from plugins.prometheusreceiver.config import ScrapeLimits
    from plugins.prometheusreceiver.convert import Converter, ScrapeError
    from plugins.prometheusreceiver.convert import Target as ConvTarget
    from plugins.prometheusreceiver.receiver import decode_scrape

    body = b"a 1\n" * 1_000_000
    converter = Converter(
        ConvTarget("t", "h:1", "http://h:1/metrics", "http", {"job": "t", "instance": "h:1"}),
        False,
        True,
        ScrapeLimits(),
    )

    def attempt() -> None:
        with pytest.raises(ScrapeError, match="sample limit exceeded") as info:
            decode_scrape(converter, body, "text/plain", "utf-8", 0)
        assert info.value.samples == 1_000_000 and info.value.reason == "sample_limit"

    cpu, peak = cost(attempt)
    assert cpu < 0.5, cpu
    assert peak < 1 << 20, peak


def test_a_failed_scrape_leaves_the_start_times_as_they_were() -> None:
    """A scrape that fails half-way (a label limit) changes nothing: the counter's start time
    survives it, as if it had not happened."""
    from prometheus_client.parser import text_string_to_metric_families as parse

    from plugins.prometheusreceiver.config import ScrapeLimits
    from plugins.prometheusreceiver.convert import Converter, ScrapeError
    from plugins.prometheusreceiver.convert import Target as ConvTarget

    converter = Converter(
        ConvTarget("t", "h:1", "http://h:1/metrics", "http", {"job": "t", "instance": "h:1"}),
        False,
        True,
        ScrapeLimits(label_value_length_limit=20),
    )

    def start_of(request: Any) -> int:
        (metric,) = request.resource_metrics[0].scope_metrics[0].metrics
        return int(metric.sum.data_points[0].start_time_unix_nano)

    first, _ = converter.convert_scrape(parse("# TYPE c_total counter\nc_total 5\n"), 1000)
    with pytest.raises(ScrapeError):
        converter.convert_scrape(
            parse('# TYPE c_total counter\nc_total 1\n# TYPE d gauge\nd{a="' + "x" * 30 + '"} 1\n'),
            2000,
        )
    third, _ = converter.convert_scrape(parse("# TYPE c_total counter\nc_total 7\n"), 3000)
    assert start_of(first) == start_of(third) == 1000
