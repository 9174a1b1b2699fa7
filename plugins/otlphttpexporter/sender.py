"""Sending encoded OTLP requests over HTTP (aiohttp), protobuf as is or re-encoded as JSON.

:class:`OTLPHttpSender` is the reusable part. Outcomes follow the OTLP specification: ``429``,
``502``, ``503`` and ``504`` (and connection failures) are retryable, honouring ``Retry-After``
(seconds or an HTTP date); ``413 Payload Too Large`` raises
:class:`~pipeline.RequestTooLargeError` (the exporter helper sends the request in halves); other
non-2xx statuses are permanent, with the server's ``google.rpc.Status`` message when it sent one.
``partial_success`` is counted and logged.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import ssl
import time
from typing import Any

import aiohttp
from google.protobuf.message import DecodeError
from google.rpc import status_pb2

from pipeline import (
    ClientAuthenticator,
    ComponentTelemetry,
    PermanentError,
    RequestTooLargeError,
    RetryableError,
    Signal,
    payload_type,
)
from pipeline.compression import Chunks, gzip_compress, joined, total_size
from plugins import _otlpjson as otlpjson
from plugins.otlpexporter.config import ClientTLSConfig
from plugins.otlpexporter.grpcstatus import parse_partial_success, record_partial_success
from plugins.otlphttpexporter.config import OTLPHTTPExporterConfig

RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})
# the count of ``partialSuccess`` in each signal's OTLP/JSON response
REJECTED_JSON_KEYS = {
    Signal.TRACES: "rejectedSpans",
    Signal.METRICS: "rejectedDataPoints",
    Signal.LOGS: "rejectedLogRecords",
}
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
# Compress large bodies off the event loop (ISA-L and zlib release the GIL).
THREAD_COMPRESS_ABOVE = 256 << 10


def client_ssl_context(tls: ClientTLSConfig) -> ssl.SSLContext:
    """An SSL context from the ``tls`` section."""
    ctx = ssl.create_default_context(cafile=tls.ca_file)
    if tls.cert_file and tls.key_file:
        ctx.load_cert_chain(tls.cert_file, tls.key_file)
    if tls.insecure_skip_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds: a number of seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def error_message(body: bytes, content_type: str) -> str:
    """The message of a ``google.rpc.Status`` body, or the body's text."""
    if content_type == PROTOBUF:
        try:
            return status_pb2.Status.FromString(body).message
        except DecodeError:
            pass
    elif content_type == JSON:
        try:
            doc = json.loads(body)
            if isinstance(doc, dict) and isinstance(doc.get("message"), str):
                return doc["message"]
        except ValueError:
            pass
    return body[:512].decode("utf-8", "replace").strip()


class OTLPHttpSender:
    """Sends encoded ``Export*ServiceRequest`` bytes to OTLP/HTTP endpoints.

    Use: ``await sender.start()`` (in the event loop), ``await sender.send(signal, data)``,
    ``await sender.close()``.
    """

    def __init__(
        self,
        config: OTLPHTTPExporterConfig,
        logger: logging.Logger | logging.LoggerAdapter[logging.Logger],
        telemetry: ComponentTelemetry | None = None,
    ) -> None:
        self.config = config
        self.logger = logger
        self.telemetry = telemetry
        self.authenticator: ClientAuthenticator | None = None
        self.plaintext = any(
            config.url(s).startswith("http://")
            for s in ("traces", "metrics")
            if config.endpoint or getattr(config, f"{s}_endpoint")
        )
        self._session: aiohttp.ClientSession | None = None
        self._content_type = JSON if config.encoding == "json" else PROTOBUF
        self._headers = {**config.headers, "Content-Type": self._content_type}
        if config.compression == "gzip":
            self._headers["Content-Encoding"] = "gzip"

    async def start(self) -> None:
        if self._session is not None:
            return
        ssl_ctx: ssl.SSLContext | bool = False
        tls = self.config.tls
        if not tls.insecure and (tls.ca_file or tls.cert_file or tls.insecure_skip_verify):
            ssl_ctx = client_ssl_context(tls)
        elif not tls.insecure:
            ssl_ctx = True  # https:// URLs verify against the system's CAs
        connector = aiohttp.TCPConnector(limit=self.config.max_idle_conns or 0, ssl=ssl_ctx)
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self.config.timeout or None),
            skip_auto_headers=("User-Agent",),
            headers={"User-Agent": "pipeline-gateway"},
        )

    def _body(self, signal: Signal, data: Chunks) -> Chunks:
        if self.config.encoding == "json":
            return otlpjson.dumps(payload_type(signal)(joined(data)).message())
        return data

    async def send(self, signal: Signal, data: Chunks) -> None:
        """Send one encoded request (whole or in pieces: gzip takes them piece by piece,
        without joining them); raises ``RetryableError`` / ``PermanentError``."""
        if self._session is None:
            await self.start()
        assert self._session is not None
        url = self.config.url(str(signal))
        chunks = self._body(signal, data)
        if self.config.compression == "gzip":
            if total_size(chunks) > THREAD_COMPRESS_ABOVE:
                body = await asyncio.to_thread(gzip_compress, chunks)
            else:
                body = gzip_compress(chunks)
        else:
            body = joined(chunks)
        headers = self._headers
        if self.authenticator is not None:
            headers = {**headers, **await self.authenticator.request_headers()}
        try:
            async with self._session.post(url, data=body, headers=headers) as resp:
                content = await resp.read()
                status = resp.status
                content_type = resp.content_type
                retry_after = resp.headers.get("Retry-After")
        except (aiohttp.ClientError, OSError) as exc:
            raise RetryableError(f"{url}: {type(exc).__name__}: {exc}") from None
        if 200 <= status < 300:
            rejected, message = self._partial_success(signal, content, content_type)
            record_partial_success(signal, rejected, message, self.telemetry, self.logger)
            return
        text = f"{url}: HTTP {status}: {error_message(content, content_type)}"
        if status == 413:
            raise RequestTooLargeError(text)
        if status in RETRYABLE_STATUSES:
            raise RetryableError(
                text, retry_after=parse_retry_after(retry_after), resource_exhausted=status == 429
            )
        raise PermanentError(text)

    def _partial_success(self, signal: Signal, body: bytes, content_type: str) -> tuple[int, str]:
        if not body:
            return 0, ""
        if content_type == JSON:
            try:
                doc: Any = json.loads(body)
                ps = doc.get("partialSuccess") or doc.get("partial_success") or {}
                key = REJECTED_JSON_KEYS[signal]
                return int(ps.get(key, 0) or 0), str(ps.get("errorMessage", "") or "")
            except (ValueError, AttributeError, TypeError):
                return 0, ""
        return parse_partial_success(signal, body)

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()
