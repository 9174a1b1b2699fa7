"""A real Prometheus scrapes a gateway of two workers (``pipeline run --workers 2``): the
``prometheus`` exporter's merged endpoint (OpenMetrics, Prometheus's default) and the own
metrics endpoint. Series with the same labels held by both workers (two SDK resources, one
owned by each) are seen added up, monotone, their hostile label values as sent."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from pipeline._route import resource_owner
from tests.pipeline.test_workers import ready
from tests.plugins.prometheus_server import prometheus
from tests.support import GatewayProcess, free_port, write_config

pytestmark = pytest.mark.slow

CONFIG = """
receivers:
  otlp:
    protocols:
      http: {{endpoint: "127.0.0.1:{http}"}}
exporters:
  prometheus: {{endpoint: "127.0.0.1:{prom}", enable_open_metrics: true}}
service:
  pipelines:
    metrics: {{receivers: [otlp], exporters: [prometheus]}}
  telemetry:
    metrics: {{address: "127.0.0.1:{telemetry}"}}
"""

# label values the writers escape, and a long one (under the label bound of 4,096)
HOSTILE = ['say "hi"', "back\\slash\\", "two\nlines", "\\n not a newline", 'x"\\\n' * 900]


async def test_prometheus_sees_two_workers_series_merged_and_monotone(tmp_path: Path) -> None:
    from opentelemetry.exporter.otlp.proto.common._internal import _encode_resource
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource

    # two resources with the same job and instance, one owned by each worker: their series
    # carry the same labels, one share in each worker, merged at the scrape
    resources: dict[int, Resource] = {}
    for i in range(64):
        r = Resource.create(
            {"service.name": "agents", "service.instance.id": "i-1", "host.name": f"h{i}"}
        )
        resources.setdefault(resource_owner(_encode_resource(r).SerializeToString(), 2), r)
    assert set(resources) == {0, 1}

    ports = {k: free_port() for k in ("http", "prom", "telemetry")}
    path = write_config(tmp_path, CONFIG.format(**ports), "gateway.yaml")
    scrape_configs = [
        {
            "job_name": name,
            "honor_labels": True,
            "static_configs": [{"targets": [f"127.0.0.1:{ports[name]}"]}],
        }
        for name in ("prom", "telemetry")
    ]
    with GatewayProcess(path, args=("--workers", "2")) as gw:
        await asyncio.to_thread(ready, gw, 2)
        async with prometheus(tmp_path, scrape_configs) as prom:
            providers = []
            counters = []
            for r in resources.values():
                reader = PeriodicExportingMetricReader(
                    OTLPMetricExporter(endpoint=f"http://127.0.0.1:{ports['http']}/v1/metrics"),
                    export_interval_millis=3_600_000,
                )
                provider = MeterProvider(metric_readers=[reader], resource=r)
                providers.append(provider)
                counters.append(provider.get_meter("agent.sdk").create_counter("agent.calls"))
            rounds = 6
            for n in range(rounds):
                for w, counter in enumerate(counters):
                    for v in HOSTILE:
                        counter.add(w + 1, {"tool": v})
                for provider in providers:
                    assert await asyncio.to_thread(provider.force_flush)
                # each round seen by a scrape before the next
                want = str(3 * (n + 1))
                await prom.wait_for(
                    'agent_calls_total{tool="say \\"hi\\""}',
                    lambda r, want=want: len(r) == 1 and r[0]["value"][1] == want,
                )
            for provider in providers:
                await asyncio.to_thread(provider.shutdown)

            result = await prom.query("agent_calls_total")
            seen = {r["metric"]["tool"]: r["value"][1] for r in result}
            assert seen == {v: str(3 * rounds) for v in HOSTILE}
            assert {r["metric"]["job"] for r in result} == {"agents"}
            # monotone: Prometheus saw no reset of a merged counter
            resets = await prom.query("resets(agent_calls_total[5m])")
            assert len(resets) == len(HOSTILE)
            assert all(r["value"][1] == "0" for r in resets), resets
            # the own metrics, merged: every point accepted, counted once
            points = len(HOSTILE) * 2 * rounds
            await prom.wait_for(
                'sum(otelcol_receiver_accepted_metric_points_total{receiver="otlp"})',
                lambda r: len(r) == 1 and r[0]["value"][1] == str(points),
            )
            own = await prom.query(
                'resets(otelcol_receiver_accepted_metric_points_total{receiver="otlp"}[5m])'
            )
            assert own and all(r["value"][1] == "0" for r in own), own
            workers = await prom.query("otelcol_workers")
            assert [r["value"][1] for r in workers] == ["2"]
            # the own metrics' merged scrape (written from the workers' shares,
            # pipeline.ownrender) taken whole: the supervisor's series, the process
            # metrics of both workers (one series each), what one worker holds
            up = await prom.query('up{job="telemetry"}')
            assert [r["value"][1] for r in up] == ["1"]
            restarts = await prom.query("otelcol_worker_restarts_total")
            assert sorted((r["metric"]["worker"], r["value"][1]) for r in restarts) == [
                ("0", "0"),
                ("1", "0"),
            ]
            for name in (
                "otelcol_process_uptime_seconds_total",
                "otelcol_process_memory_rss_bytes",
            ):
                assert len(await prom.query(name)) == 1, name
            # every plain counter's and gauge's series of a scrape is in Prometheus (the
            # series only come: a later scrape of Prometheus's holds at least as many)
            text = await asyncio.to_thread(_own_scrape, ports["telemetry"])
            await asyncio.sleep(2.5)  # Prometheus scrapes every second
            lines = text.splitlines()
            for line in lines:
                if not line.startswith("# TYPE "):
                    continue
                _, _, name, kind = line.split(" ")
                want = sum(1 for x in lines if x.startswith((f"{name} ", f"{name}{{")))
                if kind not in ("counter", "gauge") or not want:
                    continue
                got = await prom.query(f'count({{__name__="{name}", job="telemetry"}})')
                assert len(got) == 1 and int(got[0]["value"][1]) >= want, (name, want, got)


def _own_scrape(port: int) -> str:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return str(r.read().decode())
