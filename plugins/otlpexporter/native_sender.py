"""OTLP/gRPC out on the event loop: HTTP/2 by libnghttp2 (``_h2server.ClientSession``), the
calls here.

The counterpart of the receiver's native server (``plugins/otlpreceiver/grpc_native.py``):
grpcio's client costs a Python process more CPU per call in its own threads and hand-offs
than the rest of a forward pipeline does. :class:`NativeGrpcSender` has the interface and the
outcomes of :class:`plugins.otlpexporter.sender.OTLPGrpcSender` (which stays the fallback, and
is used for ``balancer_name``): retryable codes raise ``RetryableError`` with the server's
``RetryInfo`` delay, oversize refusals ``RequestTooLargeError``, the rest ``PermanentError``;
a connection that cannot be made or is lost is ``UNAVAILABLE`` (retryable), a call past
``timeout`` is cancelled (RST_STREAM) and ``DEADLINE_EXCEEDED``.

One connection per sender, opened on first use and again after it was lost or the server said
GOAWAY; calls share it as HTTP/2 streams. TLS with ALPN ``h2`` (``ca_file``, client
certificate, ``insecure_skip_verify``, ``server_name_override``); ``gzip`` compresses the
message (in a worker thread above 64 KiB).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import ssl
import urllib.parse
from typing import Any

from pipeline import (
    ClientAuthenticator,
    ComponentTelemetry,
    RequestTooLargeError,
    RetryableError,
    Signal,
    split_endpoint,
)
from pipeline.compression import FAST, Chunks, gzip_compress, joined, total_size
from plugins.otlpexporter.config import OTLPExporterConfig
from plugins.otlpexporter.grpcstatus import (
    INTERNAL,
    MAX_MESSAGE,
    METHODS,
    UNAVAILABLE,
    UNKNOWN,
    failure,
    parse_partial_success,
    record_partial_success,
    retry_delay_from_status,
)

STREAM_WINDOW = 1 << 20
CONNECTION_WINDOW = 16 << 20
INLINE_GZIP = 64 * 1024  # larger messages are compressed in a worker thread
GZIP_LEVEL = FAST  # as the otlphttp exporter: several times faster than 6, a little larger
CONNECT_TIMEOUT = 10.0
USER_AGENT = b"pipeline-gateway-otlp-native"
RESET_CODES = {0x7: "REFUSED_STREAM", 0x8: "CANCEL", 0xB: "ENHANCE_YOUR_CALM"}


class _CallError(Exception):
    """A call that ended without a gRPC status: the code to report and why."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def grpc_timeout(seconds: float) -> bytes:
    """``grpc-timeout``: at most 8 digits and a unit."""
    ms = max(1, int(seconds * 1000))
    return f"{ms}m".encode() if ms < 100_000_000 else f"{max(1, int(seconds))}S".encode()


def client_ssl_context(config: OTLPExporterConfig) -> ssl.SSLContext:
    tls = config.tls
    ctx = ssl.create_default_context(cafile=tls.ca_file or None)
    if tls.cert_file and tls.key_file:
        ctx.load_cert_chain(tls.cert_file, tls.key_file)
    if tls.insecure_skip_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"])
    return ctx


class _Connection(asyncio.Protocol):
    """One HTTP/2 connection and the calls waiting for their end on it."""

    def __init__(self, native: Any) -> None:
        self.session = native.ClientSession(
            stream_window=STREAM_WINDOW, connection_window=CONNECTION_WINDOW
        )
        self.transport: asyncio.Transport | None = None
        self.waiting: dict[int, asyncio.Future[tuple[Any, ...]]] = {}
        self.lost: Exception | None = None
        self.retired = False  # replaced by a new connection: closed once its calls ended

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.flush()

    def data_received(self, data: bytes) -> None:
        try:
            ended = self.session.feed(data)
        except (ValueError, MemoryError) as exc:
            self._fail(_CallError(UNAVAILABLE, f"HTTP/2 error from the server: {exc}"))
            return
        self._resolve(ended)
        self.flush()
        if self.lost is None and not self.session.want_io():
            # the session is over (the server's GOAWAY with an error, or a protocol error):
            # nothing more comes for the calls still waiting
            self._fail(_CallError(UNAVAILABLE, "the server ended the HTTP/2 session"))

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(_CallError(UNAVAILABLE, f"connection lost: {exc or 'closed by the server'}"))

    def _resolve(self, ended: list[tuple[Any, ...]]) -> None:
        for result in ended:
            fut = self.waiting.pop(result[0], None)
            if fut is not None and not fut.done():
                fut.set_result(result)
        if self.retired and not self.waiting:
            self.close()

    def _fail(self, error: Exception) -> None:
        if self.lost is None:
            self.lost = error
        waiting, self.waiting = self.waiting, {}
        for fut in waiting.values():
            if not fut.done():
                fut.set_exception(error)
        if self.transport is not None:
            self.transport.close()

    def flush(self) -> None:
        if self.transport is None or self.lost is not None:
            return
        try:
            out = self.session.data_to_send()
        except ValueError as exc:
            self._fail(_CallError(UNAVAILABLE, f"HTTP/2 error: {exc}"))
            return
        if out:
            self.transport.write(out)
        self._resolve(self.session.take_done())

    @property
    def usable(self) -> bool:
        return self.lost is None and self.transport is not None and self.session.usable()

    def call(
        self, headers: list[tuple[bytes, bytes]], message: bytes, compressed: bool
    ) -> tuple[int, asyncio.Future[tuple[Any, ...]]]:
        stream_id = self.session.request(headers, message, compressed)
        fut: asyncio.Future[tuple[Any, ...]] = asyncio.get_running_loop().create_future()
        self.waiting[stream_id] = fut
        self.flush()
        return stream_id, fut

    def cancel(self, stream_id: int) -> None:
        self.waiting.pop(stream_id, None)
        if self.lost is None:
            self.session.cancel(stream_id)
            self.flush()

    def close(self) -> None:
        self._fail(_CallError(UNAVAILABLE, "the exporter is shutting down"))


class NativeGrpcSender:
    """Sends encoded ``Export*ServiceRequest`` bytes to one OTLP/gRPC endpoint (see the module
    docstring); the interface of :class:`~plugins.otlpexporter.sender.OTLPGrpcSender`."""

    def __init__(
        self,
        config: OTLPExporterConfig,
        logger: logging.Logger | logging.LoggerAdapter[logging.Logger],
        telemetry: ComponentTelemetry | None,
        native: Any,
    ) -> None:
        self.config = config
        self.logger = logger
        self.telemetry = telemetry
        self.native = native
        self.authenticator: ClientAuthenticator | None = None
        self.plaintext = config.insecure
        self._conn: _Connection | None = None
        self._connecting: asyncio.Task[_Connection] | None = None
        host, port = split_endpoint(config.target)
        self._host, self._port = host, port
        self._ssl = None if config.insecure else client_ssl_context(config)
        authority = config.authority or (f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
        scheme = b"http" if config.insecure else b"https"
        self._headers = {
            signal: [
                (b":method", b"POST"),
                (b":scheme", scheme),
                (b":path", path.encode()),
                (b":authority", authority.encode()),
                (b"content-type", b"application/grpc"),
                (b"te", b"trailers"),
                (b"user-agent", USER_AGENT),
            ]
            + ([(b"grpc-encoding", b"gzip")] if config.compression == "gzip" else [])
            + [(k.lower().encode(), v.encode()) for k, v in config.headers.items()]
            for signal, path in METHODS.items()
        }

    async def start(self) -> None:
        """Nothing to do: the connection is opened by the first call."""

    async def _connection(self) -> _Connection:
        conn = self._conn
        if conn is not None and conn.usable:
            return conn
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._connect())
        task = self._connecting
        try:
            return await asyncio.shield(task)
        finally:
            if task.done() and self._connecting is task:
                self._connecting = None

    async def _connect(self) -> _Connection:
        old, self._conn = self._conn, None
        if old is not None:  # GOAWAY'd or lost: calls still on it finish there, then it closes
            old.retired = True
            if not old.waiting:
                old.close()
        loop = asyncio.get_running_loop()
        server_hostname = None
        if self._ssl is not None:
            server_hostname = self.config.tls.server_name_override or self._host
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                _, conn = await loop.create_connection(
                    lambda: _Connection(self.native),
                    self._host,
                    self._port,
                    ssl=self._ssl,
                    server_hostname=server_hostname,
                )
        except (OSError, TimeoutError) as exc:
            raise RetryableError(
                f"{self.config.endpoint}: UNAVAILABLE: cannot connect: {exc or 'timed out'}"
            ) from None
        if self._ssl is not None:
            assert conn.transport is not None
            proto = conn.transport.get_extra_info("ssl_object").selected_alpn_protocol()
            if proto != "h2":
                conn.close()
                raise RetryableError(
                    f"{self.config.endpoint}: UNAVAILABLE: the server did not agree to HTTP/2 "
                    f"over TLS (ALPN {proto!r})"
                )
        self._conn = conn
        return conn

    async def send(self, signal: Signal, data: Chunks) -> None:
        """Send one encoded request (whole or in pieces, compressed piece by piece); raises
        ``RetryableError`` / ``PermanentError``."""
        endpoint = self.config.endpoint
        size = total_size(data)
        if size > MAX_MESSAGE:
            raise RequestTooLargeError(
                f"{endpoint}: RESOURCE_EXHAUSTED: sent message larger than max "
                f"({size} vs. {MAX_MESSAGE})"
            )
        compressed = self.config.compression == "gzip"
        if compressed:
            message = (
                gzip_compress(data, GZIP_LEVEL)
                if size <= INLINE_GZIP
                else await asyncio.to_thread(gzip_compress, data, GZIP_LEVEL)
            )
        else:
            message = joined(data)  # the session sends one buffer
        headers = self._headers[signal]
        timeout = self.config.timeout
        if timeout:
            headers = [*headers, (b"grpc-timeout", grpc_timeout(timeout))]
        if self.authenticator is not None:
            extra = await self.authenticator.request_headers()
            headers = [*headers, *((k.lower().encode(), v.encode()) for k, v in extra.items())]
        conn = await self._connection()
        try:
            stream_id, fut = conn.call(headers, message, compressed)
        except ValueError as exc:  # the session takes no new stream
            raise RetryableError(f"{endpoint}: UNAVAILABLE: {exc}") from None
        try:
            async with asyncio.timeout(timeout or None):
                result = await fut
        except TimeoutError:
            conn.cancel(stream_id)
            raise RetryableError(
                f"{endpoint}: DEADLINE_EXCEEDED: no answer within {timeout:g}s"
            ) from None
        except asyncio.CancelledError:
            conn.cancel(stream_id)
            raise
        except _CallError as exc:
            raise self._error(exc.code, exc.message, None) from None
        _, http_status, status, grpc_message, details, body, reset = result
        if status == -1:
            if reset:
                name = RESET_CODES.get(reset, f"0x{reset:x}")
                code = UNAVAILABLE if reset == 0x7 else INTERNAL
                raise self._error(code, f"stream reset by the server ({name})", None)
            code = UNAVAILABLE if http_status in (0, 429, 502, 503, 504) else UNKNOWN
            raise self._error(code, f"HTTP status {http_status} without a gRPC status", None)
        text = urllib.parse.unquote(grpc_message.decode("utf-8", "replace"))
        if status != 0:
            raise self._error(status, text, details)
        response = body[5:] if len(body) >= 5 else b""
        rejected, partial = parse_partial_success(signal, response)
        record_partial_success(signal, rejected, partial, self.telemetry, self.logger)

    def _error(self, code: int, message: str, details: bytes | None) -> Exception:
        """The OTLP specification's retryable/permanent split of a failed call."""
        delay = None
        if details:
            try:
                raw = base64.b64decode(details + b"=" * (-len(details) % 4))
            except ValueError:
                raw = b""
            delay = retry_delay_from_status(raw) if raw else None
        return failure(self.config.endpoint, code, message, delay)

    async def close(self) -> None:
        if self._connecting is not None:
            self._connecting.cancel()
            self._connecting = None
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
