"""A merged batch goes to the wire without being joined first (``Payload.chunks``): each
sender (the native gRPC client, grpcio's, otlphttp) with each compression delivers exactly the
bytes of the joined request, for hostile ways of cutting it (no pieces, empty pieces, one piece,
thousands of one-byte pieces, pieces above the thresholds for compressing in a worker thread),
to real servers that inflate what they get themselves."""

from __future__ import annotations

import logging
from typing import Any

import aiohttp.web
import pytest

from pipeline import ClientAuthenticator, Kind, Signal, Traces
from pipeline.compression import Chunks
from pipeline.testing import create_settings
from plugins import _otlpjson as otlpjson
from plugins.otlpexporter.config import OTLPExporterConfig
from plugins.otlpexporter.exporter import OTLPExporter
from plugins.otlpexporter.sender import OTLPGrpcSender
from plugins.otlphttpexporter.config import OTLPHTTPExporterConfig
from plugins.otlphttpexporter.sender import OTLPHttpSender
from tests.plugins._native_support import require_native
from tests.plugins.otlpexporter.test_native_sender import Recorder
from tests.plugins.otlpreceiver.test_grpc_server import request
from tests.support import free_port


@pytest.fixture
def grpc_client() -> str:
    """Each test here names its client (it replaces the package's two-client fixture)."""
    return "explicit"


def cases() -> dict[str, Chunks]:
    tiny = [Traces(request(1, f"t{i}-")) for i in range(300)]
    huge = [Traces(request(12_000, f"h{i}-")) for i in range(3)]  # ~0.4 MB each
    one = request(20)
    return {
        "bytes": request(3),
        "empty bytes": b"",
        "no pieces": (),
        "empty pieces": (b"", b""),
        "one piece": (request(3),),
        "tiny parts": Traces.merge(tiny).encoded_parts(),
        "one-byte pieces": tuple(one[i : i + 1] for i in range(len(one))),
        "huge parts": Traces.merge(huge).encoded_parts(),
        "empty between huge": (b"", huge[0].to_bytes(), b"", huge[1].to_bytes(), b""),
    }


def joined(data: Chunks) -> bytes:
    return data if isinstance(data, bytes) else b"".join(data)


class HttpRecorder:
    """An HTTP server keeping each request's body (inflated by aiohttp) and encoding."""

    def __init__(self) -> None:
        self.calls: list[tuple[bytes, str | None]] = []
        self.port = free_port()
        self.runner: aiohttp.web.AppRunner | None = None

    async def __aenter__(self) -> HttpRecorder:
        async def handle(req: aiohttp.web.Request) -> aiohttp.web.Response:
            self.calls.append((await req.read(), req.headers.get("Content-Encoding")))
            return aiohttp.web.Response(body=b"", content_type="application/x-protobuf")

        app = aiohttp.web.Application(client_max_size=64 << 20)
        app.router.add_post("/v1/traces", handle)
        self.runner = aiohttp.web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await aiohttp.web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.runner is not None
        await self.runner.cleanup()


@pytest.mark.parametrize("compression", ["gzip", "none"])
@pytest.mark.parametrize("client", ["native", "grpcio"])
async def test_grpc_senders_deliver_the_joined_request(client: str, compression: str) -> None:
    data = cases()
    async with Recorder() as backend:
        cfg = OTLPExporterConfig(
            endpoint=f"127.0.0.1:{backend.port}", tls={"insecure": True}, compression=compression
        )
        sender: Any
        if client == "native":
            from plugins.otlpexporter.native_sender import NativeGrpcSender

            sender = NativeGrpcSender(
                cfg, logging.getLogger("test"), None, require_native("_h2server")
            )
        else:
            sender = OTLPGrpcSender(cfg, logging.getLogger("test"), None)
        for chunks in data.values():
            await sender.send(Signal.TRACES, chunks)
        await sender.close()
    assert [c[0] for c in backend.calls] == [joined(c) for c in data.values()]


@pytest.mark.parametrize("compression", ["gzip", "none"])
@pytest.mark.parametrize("encoding", ["proto", "json"])
async def test_otlphttp_delivers_the_joined_request(compression: str, encoding: str) -> None:
    data = cases()
    if encoding == "json":  # the JSON body is made from the decoded request
        data = {k: v for k, v in data.items() if "huge" not in k}
    async with HttpRecorder() as backend:
        cfg = OTLPHTTPExporterConfig(
            endpoint=f"http://127.0.0.1:{backend.port}", compression=compression, encoding=encoding
        )
        sender = OTLPHttpSender(cfg, logging.getLogger("test"), None)
        for chunks in data.values():
            await sender.send(Signal.TRACES, chunks)
        await sender.close()
    assert [enc for _, enc in backend.calls] == ["gzip" if compression == "gzip" else None] * len(
        data
    )
    if encoding == "proto":
        want = [joined(c) for c in data.values()]
    else:
        want = [otlpjson.dumps(Traces(joined(c)).message()) for c in data.values()]
    assert [body for body, _ in backend.calls] == want


async def test_the_exporter_hands_a_merged_batch_over_in_its_parts() -> None:
    sent: list[Chunks] = []

    class Capture:
        authenticator: ClientAuthenticator | None = None
        plaintext = True

        async def start(self) -> None:
            pass

        async def send(self, signal: Signal, data: Chunks) -> None:
            sent.append(data)

        async def close(self) -> None:
            pass

    parts = [Traces(request(5, f"p{i}-")) for i in range(4)]
    merged = Traces.merge(parts)
    settings = create_settings(Kind.EXPORTER, "otlp")
    exporter = OTLPExporter(
        settings, OTLPExporterConfig(endpoint="127.0.0.1:1"), Signal.TRACES, Capture()
    )
    await exporter._send(merged)
    assert sent == [tuple(p.to_bytes() for p in parts)]
    assert merged._parts is not None  # never joined
