"""Authentication on the ``otlp`` receiver, on both gRPC servers (native and grpcio) and on
HTTP, with real peers: the OpenTelemetry SDK's OTLP exporters (gRPC and HTTP) with a bearer
token, a Basic user (from a file written by Apache's ``htpasswd``) and a client certificate get
through and are recorded in ``ClientInfo.auth``; wrong or missing credentials get gRPC
``UNAUTHENTICATED`` / HTTP ``401`` with ``WWW-Authenticate``, counted, before the body is read."""

from __future__ import annotations

import asyncio
import base64
import logging
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from google.rpc import status_pb2
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from pipeline import current_client
from pipeline.service import Service
from plugins.otlpreceiver.receiver import OTLPReceiver
from tests.otlp_support import Rotel, rotel_binary
from tests.plugins._native_support import both_paths
from tests.plugins.otlpreceiver.test_grpc_native import RawClient, framed
from tests.plugins.otlpreceiver.test_grpc_server import GRPC_HEADERS, TRACE_EXPORT, request
from tests.support import free_port, require_program, running_service, wait_until
from tests.tls_support import PKI, make_pki

server = both_paths("_h2server", disable=lambda mp: mp.setenv("PIPELINE_GRPC_SERVER", "grpcio"))

PASSWORD = "s3cret pass"  # a space: the password is the whole rest after the first ':'


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def htpasswd_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Users written by Apache's htpasswd: bcrypt (slow: checked off the loop) and SHA-1."""
    tool = require_program("htpasswd", "apt-get install -y apache2-utils")
    path = tmp_path_factory.mktemp("htpasswd") / ".htpasswd"
    subprocess.run([tool, "-cbB", str(path), "agent-7", PASSWORD], check=True, capture_output=True)
    subprocess.run([tool, "-bs", str(path), "legacy", "old-pw"], check=True, capture_output=True)
    return path


class Ports:
    def __init__(self) -> None:
        self.bearer_grpc, self.bearer_http = free_port(), free_port()
        self.basic_grpc, self.basic_http = free_port(), free_port()
        self.mtls_grpc, self.mtls_http = free_port(), free_port()


def gateway_config(ports: Ports, pki: PKI, htpasswd: Path) -> str:
    mtls = (
        f"tls: {{cert_file: '{pki.server_cert}', key_file: '{pki.server_key}', "
        f"client_ca_file: '{pki.ca}'}}"
    )
    return f"""
extensions:
  bearertokenauth: {{tokens: [token-a, token-b]}}
  basicauth/server: {{htpasswd: {{file: '{htpasswd}'}}}}
receivers:
  otlp/bearer:
    protocols:
      grpc: {{endpoint: "127.0.0.1:{ports.bearer_grpc}", auth: {{authenticator: bearertokenauth}}}}
      http: {{endpoint: "127.0.0.1:{ports.bearer_http}", auth: {{authenticator: bearertokenauth}}}}
  otlp/basic:
    protocols:
      grpc:
        endpoint: "127.0.0.1:{ports.basic_grpc}"
        auth: {{authenticator: basicauth/server}}
      http:
        endpoint: "127.0.0.1:{ports.basic_http}"
        auth: {{authenticator: basicauth/server}}
  otlp/mtls:
    protocols:
      grpc: {{endpoint: "127.0.0.1:{ports.mtls_grpc}", {mtls}}}
      http: {{endpoint: "127.0.0.1:{ports.mtls_http}", {mtls}}}
exporters:
  debug: {{verbosity: basic}}
service:
  extensions: [bearertokenauth, basicauth/server]
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces: {{receivers: [otlp/bearer, otlp/basic, otlp/mtls], exporters: [debug]}}
"""


class Gateway:
    def __init__(self, service: Service, ports: Ports, seen: list[tuple[str, Any]]) -> None:
        self.service, self.ports, self.seen = service, ports, seen

    def accepted(self, receiver: str) -> float:
        value = self.service.telemetry.value(
            "otelcol_receiver_accepted_spans_total", receiver=receiver
        )
        return float(value or 0)

    def unauthenticated(self, receiver: str, transport: str) -> float:
        value = self.service.telemetry.value(
            "otelcol_receiver_refused_requests_total",
            receiver=receiver,
            transport=transport,
            reason="unauthenticated",
        )
        return float(value or 0)


@pytest.fixture
async def gateway(
    pki: PKI, htpasswd_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Gateway]:
    seen: list[tuple[str, Any]] = []  # (receiver, ClientInfo) of every payload let in
    original = OTLPReceiver.push_payload

    async def recording(self: OTLPReceiver, signal: Any, payload: Any) -> int:
        client = current_client()
        seen.append((self.settings.name, client))
        return await original(self, signal, payload)

    monkeypatch.setattr(OTLPReceiver, "push_payload", recording)
    # requests would use these bundles over the SDK's certificate_file
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    ports = Ports()
    async with running_service(gateway_config(ports, pki, htpasswd_file), tmp_path) as service:
        yield Gateway(service, ports, seen)


def sdk_export(exporter: SpanExporter, n: int = 3) -> SpanExportResult:
    """Spans recorded by the SDK and sent with ``exporter`` (blocking: run in a thread)."""
    tracer = TracerProvider().get_tracer("auth-test")
    spans = []
    for i in range(n):
        span = tracer.start_span(f"agent-step-{i}")
        span.end()
        spans.append(span)
    try:
        return exporter.export(spans)  # type: ignore[arg-type]
    finally:
        exporter.shutdown()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


# -- bearer token -----------------------------------------------------------------------------
async def test_sdk_with_the_right_bearer_token_gets_through(gateway: Gateway) -> None:
    p = gateway.ports
    for token in ("token-a", "token-b"):  # any of the configured tokens
        grpc_exporter = GrpcSpanExporter(
            endpoint=f"127.0.0.1:{p.bearer_grpc}",
            insecure=True,
            headers={"authorization": f"Bearer {token}"},
        )
        assert await asyncio.to_thread(sdk_export, grpc_exporter) == SpanExportResult.SUCCESS
        http_exporter = HttpSpanExporter(
            endpoint=f"http://127.0.0.1:{p.bearer_http}/v1/traces",
            headers={"Authorization": f"Bearer {token}"},
        )
        assert await asyncio.to_thread(sdk_export, http_exporter) == SpanExportResult.SUCCESS
    await wait_until(lambda: gateway.accepted("otlp/bearer") == 12)
    assert len(gateway.seen) == 4
    for receiver, client in gateway.seen:
        assert receiver == "otlp/bearer"
        assert client.auth == {"authenticator": "bearertokenauth"}
    assert {c.transport for _, c in gateway.seen} == {"grpc", "http"}


async def test_wrong_or_missing_bearer_token_is_unauthenticated_on_grpc(
    gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    address = f"127.0.0.1:{gateway.ports.bearer_grpc}"
    async with grpc.aio.insecure_channel(address) as channel:
        export = channel.unary_unary(TRACE_EXPORT)
        cases = [
            (None, "missing or empty authorization header: Authorization"),
            ((("authorization", "Bearer token-c"),), "scheme or token does not match"),
            ((("authorization", "token-a"),), "scheme or token does not match"),  # no scheme
            ((("authorization", "Basic token-a"),), "scheme or token does not match"),
        ]
        for metadata, message in cases:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await export(request(2), metadata=metadata)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert err.value.details() == message
            assert "token-c" not in (err.value.details() or "")  # never echoed
        # the same connection still serves a good call
        assert await export(request(2), metadata=(("authorization", "Bearer token-b"),)) == b""
    sdk = GrpcSpanExporter(endpoint=address, insecure=True, headers={"authorization": "Bearer no"})
    assert await asyncio.to_thread(sdk_export, sdk) == SpanExportResult.FAILURE
    # refusals are logged at most once a second per receiver
    lines = [r for r in caplog.records if "refused an unauthenticated request" in r.message]
    assert 1 <= len(lines) <= 2
    await wait_until(lambda: gateway.accepted("otlp/bearer") == 2)
    assert gateway.unauthenticated("otlp/bearer", "grpc") == 5
    assert [r for r, _ in gateway.seen] == ["otlp/bearer"]  # refused calls never got in


async def test_wrong_or_missing_bearer_token_is_401_on_http(gateway: Gateway) -> None:
    url = f"http://127.0.0.1:{gateway.ports.bearer_http}/v1/traces"
    async with aiohttp.ClientSession() as session:
        for headers in ({}, {"Authorization": "Bearer token-c"}, {"authorization": ""}):
            async with session.post(
                url,
                data=request(2),
                headers={"Content-Type": "application/x-protobuf", **headers},
            ) as resp:
                assert resp.status == 401
                assert resp.headers["WWW-Authenticate"] == 'Bearer realm="pipeline"'
                status = status_pb2.Status.FromString(await resp.read())
                assert status.code == 16  # UNAUTHENTICATED
                assert "authorization" in status.message or "does not match" in status.message
        async with session.post(
            url, data=b"{}", headers={"Content-Type": "application/json"}
        ) as resp:  # the error in the request's encoding
            assert resp.status == 401 and resp.content_type == "application/json"
            assert (await resp.json())["code"] == 16
        async with session.post(  # a wrong method is refused as unauthenticated first
            url, headers={"Authorization": "Bearer x"}, data=b""
        ) as resp:
            assert resp.status == 401
    sdk = HttpSpanExporter(endpoint=url, headers={"Authorization": "Bearer nope"})
    assert await asyncio.to_thread(sdk_export, sdk) == SpanExportResult.FAILURE
    assert gateway.unauthenticated("otlp/bearer", "http") == 6
    assert gateway.accepted("otlp/bearer") == 0 and gateway.seen == []


# -- basic authentication (htpasswd) ----------------------------------------------------------
async def test_sdk_with_a_basic_user_gets_through_and_is_recorded(gateway: Gateway) -> None:
    p = gateway.ports
    for user, password in (("agent-7", PASSWORD), ("legacy", "old-pw")):
        sdk = GrpcSpanExporter(
            endpoint=f"127.0.0.1:{p.basic_grpc}",
            insecure=True,
            headers={"authorization": basic(user, password)},
        )
        assert await asyncio.to_thread(sdk_export, sdk) == SpanExportResult.SUCCESS
        http_sdk = HttpSpanExporter(
            endpoint=f"http://127.0.0.1:{p.basic_http}/v1/traces",
            headers={"Authorization": basic(user, password)},
        )
        assert await asyncio.to_thread(sdk_export, http_sdk) == SpanExportResult.SUCCESS
    await wait_until(lambda: gateway.accepted("otlp/basic") == 12)
    users = [c.auth.get("username") for _, c in gateway.seen]
    assert users == ["agent-7", "agent-7", "legacy", "legacy"]
    assert all(c.auth["authenticator"] == "basicauth/server" for _, c in gateway.seen)


async def test_wrong_basic_credentials_are_refused(gateway: Gateway) -> None:
    p = gateway.ports
    async with grpc.aio.insecure_channel(f"127.0.0.1:{p.basic_grpc}") as channel:
        export = channel.unary_unary(TRACE_EXPORT)
        for metadata, message in [
            (None, "no basic auth provided"),
            ((("authorization", basic("agent-7", "wrong")),), "invalid credentials"),
            ((("authorization", basic("agent-7", "wrong")),), "invalid credentials"),  # cached
            ((("authorization", basic("nobody", PASSWORD)),), "invalid credentials"),
            ((("authorization", "Bearer x"),), "invalid authorization scheme prefix"),
            ((("authorization", "Basic %%%"),), "invalid authorization format"),
        ]:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await export(request(1), metadata=metadata)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert err.value.details() == message
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"http://127.0.0.1:{p.basic_http}/v1/traces",
            data=request(1),
            headers={
                "Content-Type": "application/x-protobuf",
                "Authorization": basic("agent-7", "wrong"),
            },
        ) as resp,
    ):
        assert resp.status == 401
        assert resp.headers["WWW-Authenticate"] == 'Basic realm="pipeline", charset="UTF-8"'
    assert gateway.unauthenticated("otlp/basic", "grpc") == 6
    assert gateway.unauthenticated("otlp/basic", "http") == 1
    assert gateway.accepted("otlp/basic") == 0


# -- mutual TLS -------------------------------------------------------------------------------
def grpc_credentials(pki: PKI, cert: Path | None, key: Path | None) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=pki.ca.read_bytes(),
        private_key=key.read_bytes() if key else None,
        certificate_chain=cert.read_bytes() if cert else None,
    )


async def test_sdk_with_a_client_certificate_gets_through(gateway: Gateway, pki: PKI) -> None:
    p = gateway.ports
    sdk = GrpcSpanExporter(
        endpoint=f"localhost:{p.mtls_grpc}",
        credentials=grpc_credentials(pki, pki.client_cert, pki.client_key),
    )
    assert await asyncio.to_thread(sdk_export, sdk) == SpanExportResult.SUCCESS
    http_sdk = HttpSpanExporter(
        endpoint=f"https://localhost:{p.mtls_http}/v1/traces",
        certificate_file=str(pki.ca),
        client_certificate_file=str(pki.client_cert),
        client_key_file=str(pki.client_key),
    )
    assert await asyncio.to_thread(sdk_export, http_sdk) == SpanExportResult.SUCCESS
    await wait_until(lambda: gateway.accepted("otlp/mtls") == 6)


async def test_without_a_trusted_client_certificate_the_handshake_fails(
    gateway: Gateway, pki: PKI
) -> None:
    p = gateway.ports
    for cert, key in ((None, None), (pki.rogue_cert, pki.rogue_key)):
        async with grpc.aio.secure_channel(
            f"localhost:{p.mtls_grpc}", grpc_credentials(pki, cert, key)
        ) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await channel.unary_unary(TRACE_EXPORT)(request(1), timeout=5)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        http_sdk = HttpSpanExporter(
            endpoint=f"https://localhost:{p.mtls_http}/v1/traces",
            certificate_file=str(pki.ca),
            client_certificate_file=str(cert) if cert else None,
            client_key_file=str(key) if key else None,
            timeout=5,
        )
        assert await asyncio.to_thread(sdk_export, http_sdk) == SpanExportResult.FAILURE
    assert gateway.accepted("otlp/mtls") == 0


# -- refused before the body ------------------------------------------------------------------
async def test_grpc_refusal_comes_before_the_body(gateway: Gateway) -> None:
    """The client sends its headers and a first part of a large message, then waits: the
    answer comes without the rest (native: at the headers; grpcio: the call is served as a
    stream, authenticated before its message is read)."""
    client = await RawClient.open(gateway.ports.bearer_grpc)
    try:
        sid = client.start()
        part = framed(b"x" * 500_000)
        client.conn.send_data(sid, part[:16_000])
        client.conn.send_data(sid, part[16_000:30_000])
        await client.flush()
        await client.read_until(lambda: client.ended(sid))
        assert client.headers(sid)["grpc-status"] == "16"
        # a good call on the same connection afterwards
        sid2 = int(client.conn.get_next_available_stream_id())
        client.conn.send_headers(sid2, [*GRPC_HEADERS, ("authorization", "Bearer token-a")])
        client.conn.send_data(sid2, framed(request(2)), end_stream=True)
        await client.flush()
        await client.read_until(lambda: client.ended(sid2))
        assert client.headers(sid2)["grpc-status"] == "0"
    finally:
        await client.close()
    assert gateway.unauthenticated("otlp/bearer", "grpc") == 1


async def test_http_refusal_comes_before_the_body(gateway: Gateway) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.ports.bearer_http)
    try:
        writer.write(
            b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
            b"Content-Length: 10000000\r\n\r\n" + b"\x0a" * 1000
        )
        await writer.drain()
        async with asyncio.timeout(5):
            head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 401")
        assert b'WWW-Authenticate: Bearer realm="pipeline"' in head
    finally:
        writer.close()
    assert gateway.unauthenticated("otlp/bearer", "http") == 1


@pytest.mark.parametrize("protocol", ["grpc", "http"])
async def test_rotel_sending_a_bearer_token_gets_through(gateway: Gateway, protocol: str) -> None:
    """rotel's OTLP exporter (Rust: tonic / hyper) with the token as a custom header; with a
    wrong one its requests are refused and counted."""
    rotel_binary()
    p = gateway.ports
    target = p.bearer_grpc if protocol == "grpc" else p.bearer_http
    for token, through in (("token-a", True), ("wrong", False)):
        rotel = Rotel(
            "--exporter", "otlp",
            "--otlp-exporter-protocol", protocol,
            "--otlp-exporter-endpoint", f"http://127.0.0.1:{target}",
            "--otlp-exporter-custom-headers", f"authorization=Bearer {token}",
            "--batch-timeout", "50ms",
        )  # fmt: skip
        try:
            await rotel.wait_ready()
            sdk = HttpSpanExporter(endpoint=f"http://127.0.0.1:{rotel.http_port}/v1/traces")
            assert await asyncio.to_thread(sdk_export, sdk) == SpanExportResult.SUCCESS
            if through:
                await wait_until(lambda: gateway.accepted("otlp/bearer") == 3, within=15)
            else:
                await wait_until(
                    lambda: gateway.unauthenticated("otlp/bearer", protocol) >= 1, within=15
                )
        finally:
            await asyncio.to_thread(rotel.stop)
    assert gateway.accepted("otlp/bearer") == 3
