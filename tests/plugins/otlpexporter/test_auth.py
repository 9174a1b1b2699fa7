"""Exporters send the credentials of their ``auth`` extension, and a receiving gateway with
the matching server authenticator takes them: ``otlp`` (both gRPC clients) and ``otlphttp``
with a bearer token over TLS and with a Basic user; the ``jaeger`` exporter over OTLP and over
Thrift/HTTP. Wrong credentials are refused by the receiver and dropped by the exporter as a
permanent failure (not retried), counted."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import aiohttp

from pipeline.service import Service
from tests.otlp_support import recording_backend
from tests.plugins.otlpreceiver.test_http_server import a_request
from tests.support import free_port, require_program, running_service, wait_until
from tests.tls_support import make_server_certs


def sent(service: Service, exporter: str) -> float:
    value = service.telemetry.value("otelcol_exporter_sent_spans_total", exporter=exporter)
    return float(value or 0)


def failed(service: Service, exporter: str) -> float:
    value = service.telemetry.value("otelcol_exporter_send_failed_spans_total", exporter=exporter)
    return float(value or 0)


def unauthenticated(service: Service, receiver: str, transport: str) -> float:
    value = service.telemetry.value(
        "otelcol_receiver_refused_requests_total",
        receiver=receiver,
        transport=transport,
        reason="unauthenticated",
    )
    return float(value or 0)


async def send(port: int, n: int) -> None:
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            f"http://127.0.0.1:{port}/v1/traces",
            data=a_request(n).SerializeToString(),
            headers={"Content-Type": "application/x-protobuf"},
        ) as resp,
    ):
        assert resp.status == 200


async def test_exporters_send_credentials_a_receiving_gateway_accepts(tmp_path: Path) -> None:
    tool = require_program("htpasswd", "apt-get install -y apache2-utils")
    htpasswd = tmp_path / "htpasswd"
    await asyncio.to_thread(
        subprocess.run, [tool, "-cbB", str(htpasswd), "agent-7", "pw:7"], check=True
    )
    ca, cert, key = make_server_certs(tmp_path)
    tls = f"tls: {{cert_file: '{cert}', key_file: '{key}'}}"
    p_in, bg, bh, cg, ch, jh = (free_port() for _ in range(6))
    async with recording_backend() as backend:
        config = f"""
extensions:
  bearertokenauth: {{token: the-token}}
  basicauth/client: {{client_auth: {{username: agent-7, password: "pw:7"}}}}
  basicauth/server: {{htpasswd: {{file: '{htpasswd}'}}}}
receivers:
  otlp/in: {{protocols: {{http: {{endpoint: 127.0.0.1:{p_in}}}}}}}
  otlp/bearer:
    protocols:
      grpc: {{endpoint: 127.0.0.1:{bg}, {tls}, auth: {{authenticator: bearertokenauth}}}}
      http: {{endpoint: 127.0.0.1:{bh}, {tls}, auth: {{authenticator: bearertokenauth}}}}
  otlp/basic:
    protocols:
      grpc: {{endpoint: 127.0.0.1:{cg}, auth: {{authenticator: basicauth/server}}}}
      http: {{endpoint: 127.0.0.1:{ch}, auth: {{authenticator: basicauth/server}}}}
  jaeger:
    protocols:
      thrift_http: {{endpoint: 127.0.0.1:{jh}, auth: {{authenticator: bearertokenauth}}}}
exporters:
  otlp/bearer:
    endpoint: 127.0.0.1:{bg}
    tls: {{ca_file: '{ca}'}}
    auth: {{authenticator: bearertokenauth}}
  otlphttp/bearer:
    endpoint: https://127.0.0.1:{bh}
    tls: {{ca_file: '{ca}'}}
    auth: {{authenticator: bearertokenauth}}
  otlp/basic: {{endpoint: 127.0.0.1:{cg}, tls: {{insecure: true}},
               auth: {{authenticator: basicauth/client}}}}
  otlphttp/basic: {{endpoint: http://127.0.0.1:{ch}, auth: {{authenticator: basicauth/client}}}}
  jaeger/otlp:
    protocol: otlp_grpc
    endpoint: 127.0.0.1:{bg}
    tls: {{ca_file: '{ca}'}}
    auth: {{authenticator: bearertokenauth}}
  jaeger/thrift:
    protocol: thrift_http
    endpoint: http://127.0.0.1:{jh}/api/traces
    auth: {{authenticator: bearertokenauth}}
  otlp/sink: {{endpoint: '127.0.0.1:{backend.grpc_port}', tls: {{insecure: true}}}}
service:
  extensions: [bearertokenauth, basicauth/client, basicauth/server]
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces/in:
      receivers: [otlp/in]
      exporters: [otlp/bearer, otlphttp/bearer, otlp/basic, otlphttp/basic, jaeger/otlp,
                  jaeger/thrift]
    traces/out: {{receivers: [otlp/bearer, otlp/basic, jaeger], exporters: [otlp/sink]}}
"""
        async with running_service(config, tmp_path) as service:
            await send(p_in, 3)
            await wait_until(lambda: backend.span_count() == 18, within=20)
            for exporter in (
                "otlp/bearer",
                "otlphttp/bearer",
                "otlp/basic",
                "otlphttp/basic",
                "jaeger/otlp",
                "jaeger/thrift",
            ):
                await wait_until(lambda e=exporter: sent(service, e) == 3)  # type: ignore[misc]
            for receiver in ("otlp/bearer", "otlp/basic", "jaeger"):
                for transport in ("grpc", "http"):
                    assert unauthenticated(service, receiver, transport) == 0


async def test_wrong_credentials_are_refused_and_dropped_not_retried(tmp_path: Path) -> None:
    p_in, g, h = free_port(), free_port(), free_port()
    config = f"""
extensions:
  bearertokenauth/server: {{token: right}}
  bearertokenauth/client: {{token: wrong}}
receivers:
  otlp/in: {{protocols: {{http: {{endpoint: 127.0.0.1:{p_in}}}}}}}
  otlp/secure:
    protocols:
      grpc: {{endpoint: 127.0.0.1:{g}, auth: {{authenticator: bearertokenauth/server}}}}
      http: {{endpoint: 127.0.0.1:{h}, auth: {{authenticator: bearertokenauth/server}}}}
exporters:
  otlp: {{endpoint: 127.0.0.1:{g}, tls: {{insecure: true}},
         auth: {{authenticator: bearertokenauth/client}},
         retry_on_failure: {{initial_interval: 10ms}}}}
  otlphttp: {{endpoint: http://127.0.0.1:{h}, auth: {{authenticator: bearertokenauth/client}},
             retry_on_failure: {{initial_interval: 10ms}}}}
  debug: {{verbosity: basic}}
service:
  extensions: [bearertokenauth/server, bearertokenauth/client]
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces/in: {{receivers: [otlp/in], exporters: [otlp, otlphttp]}}
    traces/out: {{receivers: [otlp/secure], exporters: [debug]}}
"""
    async with running_service(config, tmp_path) as service:
        await send(p_in, 2)
        await wait_until(lambda: failed(service, "otlp") == 2 and failed(service, "otlphttp") == 2)
        # one attempt each: UNAUTHENTICATED and 401 are permanent (the OTLP specification)
        assert unauthenticated(service, "otlp/secure", "grpc") == 1
        assert unauthenticated(service, "otlp/secure", "http") == 1
        assert sent(service, "otlp") == 0 and sent(service, "otlphttp") == 0
