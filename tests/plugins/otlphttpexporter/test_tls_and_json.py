"""Exporters and receiver over TLS (gRPC and HTTP, CA-verified), and the ``otlphttp``
exporter's JSON encoding read back by the gateway's own OTLP/JSON receiver: IDs, attributes,
status and counts survive the round trips."""

from __future__ import annotations

import subprocess
from pathlib import Path

import aiohttp

from tests.otlp_support import recording_backend
from tests.plugins.otlpreceiver.test_http_server import a_request
from tests.support import free_port, require_program, running_service, wait_until


def make_certs(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 / localhost, made with openssl."""
    openssl = require_program("openssl", "apt-get install -y openssl")
    ca_key, ca, key, csr, cert = (
        directory / n for n in ("ca.key", "ca.pem", "server.key", "server.csr", "server.pem")
    )
    ext = directory / "ext.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run = [openssl]
    subprocess.run(
        [*run, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key),
         "-out", str(ca), "-days", "2", "-subj", "/CN=test-ca"],
        check=True, capture_output=True,
    )  # fmt: skip
    subprocess.run(
        [*run, "req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
         "-subj", "/CN=localhost"],
        check=True, capture_output=True,
    )  # fmt: skip
    subprocess.run(
        [*run, "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
         "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(ext)],
        check=True, capture_output=True,
    )  # fmt: skip
    return ca, cert, key


async def test_tls_both_protocols_and_json_encoding(tmp_path: Path) -> None:
    ca, cert, key = make_certs(tmp_path)
    p_in, p_sg, p_sh, p_json = free_port(), free_port(), free_port(), free_port()
    tls_server = f"tls: {{cert_file: '{cert}', key_file: '{key}'}}"
    async with recording_backend() as backend:
        config = f"""
receivers:
  otlp/in: {{protocols: {{http: {{endpoint: 127.0.0.1:{p_in}}}}}}}
  otlp/secure:
    protocols:
      grpc: {{endpoint: 127.0.0.1:{p_sg}, {tls_server}}}
      http: {{endpoint: 127.0.0.1:{p_sh}, {tls_server}}}
  otlp/json: {{protocols: {{http: {{endpoint: 127.0.0.1:{p_json}}}}}}}
exporters:
  otlp/tls: {{endpoint: '127.0.0.1:{p_sg}', tls: {{ca_file: '{ca}'}}}}
  otlphttp/tls: {{endpoint: 'https://127.0.0.1:{p_sh}', tls: {{ca_file: '{ca}'}}}}
  otlphttp/json: {{endpoint: 'http://127.0.0.1:{p_json}', encoding: json}}
  otlp/sink: {{endpoint: '127.0.0.1:{backend.grpc_port}', tls: {{insecure: true}}}}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces/in: {{receivers: [otlp/in], exporters: [otlp/tls, otlphttp/tls, otlphttp/json]}}
    traces/out: {{receivers: [otlp/secure, otlp/json], exporters: [otlp/sink]}}
"""
        async with running_service(config) as service:
            req = a_request(4)
            span = req.resource_spans[0].scope_spans[0].spans[0]
            span.status.code = 2
            span.status.message = "failed"
            span.attributes.add(key="big", value={"int_value": 2**62})
            async with (
                aiohttp.ClientSession() as s,
                s.post(
                    f"http://127.0.0.1:{p_in}/v1/traces",
                    data=req.SerializeToString(),
                    headers={"Content-Type": "application/x-protobuf"},
                ) as resp,
            ):
                assert resp.status == 200
            await wait_until(lambda: backend.span_count() == 12, within=15)
            tel = service.telemetry
            for exporter in ("otlp/tls", "otlphttp/tls", "otlphttp/json"):
                # counted once the backend's answer is back (after it counted the spans)
                await wait_until(
                    lambda e=exporter: (
                        tel.value("otelcol_exporter_sent_spans_total", exporter=e) == 4
                    )
                )
            expected = req.resource_spans[0].scope_spans[0].spans
            by_request = [r.resource_spans[0].scope_spans[0].spans for r in backend.traces]
            assert len(by_request) == 3
            for spans in by_request:
                assert list(spans) == list(expected)  # identical through TLS and JSON
