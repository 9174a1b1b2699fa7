"""The shared test helpers (tests/support.py) that tests rely on for their isolation."""

from __future__ import annotations

import aiohttp

from tests.support import CLIENT_TIMEOUT, free_port, running_service

_CONFIG = """
receivers:
  otlp: {{protocols: {{http: {{endpoint: "127.0.0.1:{port}"}}}}}}
exporters:
  debug: {{}}
service:
  pipelines:
    traces: {{receivers: [otlp], exporters: [debug]}}
"""


async def test_a_gateway_started_by_a_test_serves_its_metrics_off_the_default_port() -> None:
    """A config that does not say where the gateway's own metrics go gets a free port, not
    8888: a gateway left running by a test that hung kept 8888 and every later test that
    started a gateway failed with "address already in use"."""
    async with running_service(_CONFIG.format(port=free_port())) as service:
        address = service.config.service.telemetry.metrics.address
        host, port = address.rsplit(":", 1)
        assert host == "127.0.0.1" and int(port) != 8888
        async with (
            aiohttp.ClientSession(timeout=CLIENT_TIMEOUT) as session,
            session.get(f"http://{address}/metrics") as resp,
        ):
            assert resp.status == 200
            assert "otelcol_process_uptime" in await resp.text()


async def test_an_address_the_config_gives_is_kept() -> None:
    telemetry_port = free_port()
    text = _CONFIG.format(port=free_port()) + (
        f'  telemetry: {{metrics: {{address: "127.0.0.1:{telemetry_port}"}}}}\n'
    )
    async with running_service(text) as service:
        metrics = service.config.service.telemetry.metrics
        assert metrics.address == f"127.0.0.1:{telemetry_port}"
