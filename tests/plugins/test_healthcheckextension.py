"""The health_check extension in a running gateway: components, exporters, dependencies."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from pipeline import ConfigError, ConfigErrors
from plugins.healthcheckextension.config import HealthCheckExtensionConfig
from tests.plugins.helpers import post_exporter
from tests.plugins.helpers.peers import http_server
from tests.support import config_from_text, free_port, running_service

PG = "postgresql://postgres@127.0.0.1:5432/postgres"


async def get(url: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s, s.get(url) as resp:
        if resp.content_type == "application/json":
            return resp.status, await resp.json()
        return resp.status, await resp.text()


async def wait_for(url: str, predicate: Any, within: float = 15.0) -> tuple[int, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        status, body = await get(url)
        if predicate(status, body):
            return status, body
        if loop.time() > deadline:
            raise AssertionError(f"not reached in time; last answer {status}: {body}")
        await asyncio.sleep(0.05)


_LINE = re.compile(r"^(health_check_\w+)\{([^}]*)\} (\S+)$")


def debug_metrics(text: str) -> dict[tuple[str, str], float]:
    """Latest value per (metric, check) from the debug exporter's ``normal`` output."""
    out = {}
    for line in text.splitlines():
        m = _LINE.match(line.strip())
        if m:
            labels = dict(re.findall(r"(\w+)=Str\(([^)]*)\)", m.group(2)))
            if "detail" not in labels:
                out[(m.group(1), labels["check"])] = float(m.group(3))
    return out


def test_defaults_and_config_errors() -> None:
    cfg = HealthCheckExtensionConfig()
    assert cfg.endpoint == "localhost:13133" and cfg.path == "/"
    assert cfg.check_collector_pipeline.enabled is False
    # a control endpoint: few connections, the descriptor reserve (pipeline/netedge.py)
    assert (cfg.max_connections, cfg.read_header_timeout, cfg.idle_timeout) == (64, 10.0, 60.0)
    text = """
    extensions:
      health_check: {path: health}
    receivers:
      healthcheck: {checks: [{name: s, type: system}]}
    exporters:
      debug:
    service:
      extensions: [health_check]
      pipelines:
        metrics: {receivers: [healthcheck], exporters: [debug]}
    """
    with pytest.raises((ConfigErrors, ConfigError)) as info:
        config_from_text(text)
    assert "extensions.health_check.path" in str(info.value)


async def test_ready_with_dependencies_and_metrics_agree(
    capsys: pytest.CaptureFixture[str],
) -> None:
    port = free_port()
    text = f"""
    extensions:
      health_check:
        endpoint: 127.0.0.1:{port}
    receivers:
      healthcheck:
        collection_interval: 300ms
        checks:
          - {{name: orders-db, type: postgresql, endpoint: "{PG}", critical: true, timeout: 5s}}
          - {{name: cache, type: redis, endpoint: "redis://127.0.0.1:{free_port()}/0",
              timeout: 1s}}
    exporters:
      debug: {{verbosity: normal, use_internal_logger: false}}
    service:
      extensions: [health_check]
      telemetry: {{metrics: {{level: none}}}}
      pipelines:
        metrics: {{receivers: [healthcheck], exporters: [debug]}}
    """
    async with running_service(text):
        base = f"http://127.0.0.1:{port}"
        status, body = await wait_for(
            f"{base}/ready",
            lambda s, b: (
                len(b.get("dependencies", {}).get("healthcheck", {})) == 2
                and b["dependencies"]["healthcheck"]["cache"]["consecutive_failures"] >= 2
            ),
        )
        # A non-critical dependency down does not take the gateway out of rotation.
        assert status == 200, body
        assert body["ready"] is True and body["live"] is True
        assert body["status"] == "Server available"
        assert all(c["status"] == "ok" for c in body["components"].values())
        assert "receiver healthcheck (metrics)" in body["components"]
        live_status, _ = await get(f"{base}/live")
        overall_status, overall = await get(f"{base}/")
        assert live_status == 200 and overall_status == 200
        assert overall["upSince"].endswith("Z") and overall["uptime"].endswith("s")
        deps = body["dependencies"]["healthcheck"]
        # Let the next emissions reach the debug exporter, then compare with the JSON.
        await asyncio.sleep(0.7)
        _, body = await get(f"{base}/ready")
        deps = body["dependencies"]["healthcheck"]
        metrics = debug_metrics(capsys.readouterr().out)
    values = {"healthy": 1.0, "degraded": 0.5, "unhealthy": 0.0}
    assert deps["orders-db"]["status"] == "healthy"
    assert deps["cache"]["status"] == "unhealthy"
    for name in ("orders-db", "cache"):
        assert metrics[("health_check_status", name)] == values[deps[name]["status"]]
    # The JSON is read after the metrics were printed: failures can only have grown.
    assert metrics[("health_check_consecutive_failures", "orders-db")] == 0
    assert (
        1
        <= metrics[("health_check_consecutive_failures", "cache")]
        <= (deps["cache"]["consecutive_failures"])
    )


async def test_critical_dependency_down_is_not_ready_but_live() -> None:
    port = free_port()
    text = f"""
    extensions:
      health_check:
        endpoint: 127.0.0.1:{port}
        path: /health
    receivers:
      healthcheck:
        collection_interval: 200ms
        checks:
          - {{name: orders-db, type: postgresql, critical: true, timeout: 1s,
              endpoint: "postgresql://postgres@127.0.0.1:{free_port()}/postgres"}}
    exporters:
      debug:
    service:
      extensions: [health_check]
      telemetry: {{metrics: {{level: none}}}}
      pipelines:
        metrics: {{receivers: [healthcheck], exporters: [debug]}}
    """
    async with running_service(text):
        base = f"http://127.0.0.1:{port}/health"
        status, body = await wait_for(
            f"{base}/ready", lambda s, b: "orders-db" in b["dependencies"].get("healthcheck", {})
        )
        assert status == 503
        assert body["ready"] is False and body["live"] is True
        assert any("critical dependency orders-db" in r for r in body["reasons"])
        assert (await get(f"{base}/live"))[0] == 200
        assert (await get(base))[0] == 503


async def test_exporter_failures_make_it_not_ready() -> None:
    post_exporter.register()
    port = free_port()
    text = f"""
    extensions:
      health_check:
        endpoint: 127.0.0.1:{port}
        check_collector_pipeline: {{enabled: true, interval: 1m, exporter_failure_threshold: 3}}
    receivers:
      healthcheck:
        collection_interval: 50ms
        checks: [{{name: host, type: system, thresholds: {{cpu_percent: 1000}}}}]
    exporters:
      test_post:
        url: http://127.0.0.1:{free_port()}/
        retry_on_failure: {{enabled: false}}
    service:
      extensions: [health_check]
      telemetry: {{metrics: {{level: none}}}}
      pipelines:
        metrics: {{receivers: [healthcheck], exporters: [test_post]}}
    """
    async with running_service(text) as service:
        _status, body = await wait_for(
            f"http://127.0.0.1:{port}/ready", lambda s, b: s == 503, within=20
        )
        (label,) = body["exporters"]
        assert label == "exporter test_post (metrics)"
        assert body["exporters"][label]["consecutive_failures"] >= 3
        assert "Cannot connect" in body["exporters"][label]["last_error"]
        assert any("exports failing" in r for r in body["reasons"])
        assert body["live"] is True
        failed = service.telemetry.value(
            "otelcol_exporter_send_failed_metric_points_total", exporter="test_post"
        )
        assert failed > 0


async def test_nearly_full_queue_makes_it_not_ready() -> None:
    post_exporter.register()
    release = asyncio.Event()

    async def stuck(request: web.Request) -> web.Response:
        await request.read()
        await release.wait()
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/", stuck)
    port = free_port()
    async with http_server(app) as url:
        text = f"""
        extensions:
          health_check:
            endpoint: 127.0.0.1:{port}
            exporter_queue_full_ratio: 0.75
            response_body: {{healthy: "I'm OK", unhealthy: "I'm not well"}}
        receivers:
          healthcheck:
            collection_interval: 50ms
            checks: [{{name: host, type: system, thresholds: {{cpu_percent: 1000}}}}]
        exporters:
          test_post:
            url: {url}/
            timeout: 30s
            sending_queue: {{num_consumers: 1, queue_size: 4}}
        service:
          extensions: [health_check]
          shutdown_timeout: 2s
          telemetry: {{metrics: {{level: none}}}}
          pipelines:
            metrics: {{receivers: [healthcheck], exporters: [test_post]}}
        """
        async with running_service(text) as service:
            _, body = await wait_for(
                f"http://127.0.0.1:{port}/ready", lambda s, b: s == 503, within=20
            )
            assert body == "I'm not well"
            node = next(n for n in service.graph.nodes if str(n.id) == "test_post")
            assert node.component.queue_size >= 3
            release.set()
            _status, body = await wait_for(
                f"http://127.0.0.1:{port}/ready", lambda s, b: s == 200, within=20
            )
            assert body == "I'm OK"


async def test_lifecycle_is_safe_before_start_and_twice() -> None:
    from pipeline.component import ComponentID, CreateSettings, Kind
    from pipeline.telemetry import SelfTelemetry, component_logger
    from plugins.healthcheckextension.factory import HealthCheckExtensionFactory

    cid = ComponentID.parse("health_check")
    settings = CreateSettings(
        cid,
        Kind.EXTENSION,
        component_logger(Kind.EXTENSION, cid),
        SelfTelemetry().component(Kind.EXTENSION, cid),
    )
    port = free_port()
    config = HealthCheckExtensionConfig(endpoint=f"127.0.0.1:{port}")
    ext = HealthCheckExtensionFactory().create(settings, config)
    await ext.shutdown()
    await ext.start(None)  # type: ignore[arg-type]
    status, body = await get(f"http://127.0.0.1:{port}/ready")
    # Without a service, nothing is known to be running: not ready, but live.
    assert status == 503 and body["live"] is True
    await ext.shutdown()
    await ext.shutdown()
    with pytest.raises(aiohttp.ClientConnectionError):
        await get(f"http://127.0.0.1:{port}/ready")


async def test_served_over_tls_and_mutual_tls(tmp_path: Any) -> None:
    """``tls``: HTTPS only (a plain HTTP request is not answered); with ``client_ca_file``,
    only clients with a certificate of that CA get an answer."""
    import ssl

    from tests.tls_support import make_pki

    pki = make_pki(tmp_path / "pki")
    plain, mutual = free_port(), free_port()
    files = f"cert_file: '{pki.server_cert}', key_file: '{pki.server_key}'"
    config = f"""
receivers:
  otlp: {{protocols: {{grpc: {{endpoint: "127.0.0.1:{free_port()}"}}}}}}
exporters:
  debug: {{verbosity: basic}}
extensions:
  health_check: {{endpoint: "127.0.0.1:{plain}", tls: {{{files}}}}}
  health_check/mtls:
    endpoint: "127.0.0.1:{mutual}"
    tls: {{{files}, client_ca_file: '{pki.ca}'}}
service:
  extensions: [health_check, health_check/mtls]
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces: {{receivers: [otlp], exporters: [debug]}}
"""
    server_only = ssl.create_default_context(cafile=str(pki.ca))
    with_cert = ssl.create_default_context(cafile=str(pki.ca))
    with_cert.load_cert_chain(pki.client_cert, pki.client_key)
    rogue = ssl.create_default_context(cafile=str(pki.ca))
    rogue.load_cert_chain(pki.rogue_cert, pki.rogue_key)

    async def status(url: str, ctx: Any) -> int:
        async with aiohttp.ClientSession() as s, s.get(url, ssl=ctx) as resp:
            return resp.status

    async with running_service(config, tmp_path):
        assert await status(f"https://localhost:{plain}/live", server_only) == 200
        assert await status(f"https://localhost:{mutual}/live", with_cert) == 200
        for url, ctx in (
            (f"http://127.0.0.1:{plain}/live", None),
            (f"https://localhost:{mutual}/live", server_only),
            (f"https://localhost:{mutual}/live", rogue),
        ):
            with pytest.raises(aiohttp.ClientError):
                await status(url, ctx)
