"""OTLP/gRPC on the event loop: HTTP/2 by libnghttp2 (``plugins/_native/_h2server.c``), the
rest here.

grpcio's server costs a Python receiver about 0.5-0.9 ms of CPU per request in its own threads
and hand-offs, more than rotel's whole forward path at common request sizes (see
``benchmarks/results/agent-pipeline.md``). This server reads and writes the sockets on the
event loop itself: nghttp2 does the HTTP/2 framing, HPACK, flow control, settings and pings;
this module routes the unary ``Export`` calls, decompresses (``grpc-encoding`` gzip, deflate),
enforces ``max_recv_msg_size_mib`` on the message as sent and once decompressed, and answers
with the same statuses as the grpcio server (:mod:`plugins.otlpreceiver.grpc_server`), which
stays the fallback when the C module is not built (or ``PIPELINE_NATIVE=0``).

Answers: ``OK`` with an empty ``Export*ServiceResponse``; ``INVALID_ARGUMENT`` for data that
cannot be decoded; ``UNAVAILABLE`` / ``RESOURCE_EXHAUSTED`` with ``google.rpc.RetryInfo`` when
the pipeline pushes back; ``RESOURCE_EXHAUSTED`` for a message over the size limit;
``UNIMPLEMENTED`` for another method or an unsupported ``grpc-encoding``; ``INTERNAL`` for a
body that is not one gRPC message; HTTP 415 for a request that is not gRPC.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from typing import TYPE_CHECKING, Any

from pipeline import PermanentError, RetryableError, Signal, split_endpoint
from plugins.otlpreceiver.common import (
    RequestError,
    inflate_off_loop,
    retry_status,
    server_ssl_context,
)
from plugins.otlpreceiver.config import GRPCServerConfig

if TYPE_CHECKING:
    from plugins.otlpreceiver.receiver import OTLPReceiver

# gRPC status codes
OK = 0
INVALID_ARGUMENT = 3
RESOURCE_EXHAUSTED = 8
UNIMPLEMENTED = 12
INTERNAL = 13
UNAVAILABLE = 14

PATHS = {
    "/opentelemetry.proto.collector.trace.v1.TraceService/Export": Signal.TRACES,
    "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export": Signal.METRICS,
}
ENCODINGS = {"gzip": 31, "deflate": 15}  # grpc-encoding -> zlib wbits
DEFAULT_RETRY_DELAY = 1.0
# HTTP/2 flow-control windows: a stream may send 1 MiB before the first window update (a
# 200-span request is ~60 KB), a connection 16 MiB
STREAM_WINDOW = 1 << 20
CONNECTION_WINDOW = 16 << 20
DEFAULT_MAX_STREAMS = 250  # concurrent calls per connection when max_concurrent_streams is 0
# unfinished request bytes one connection may hold (at least one largest message): beyond, new
# data is refused with REFUSED_STREAM, which gRPC clients retry
MAX_BUFFERED = 64 << 20


def percent_encode(message: str) -> bytes:
    """``grpc-message``: the UTF-8 bytes, percent-encoded outside printable ASCII (and ``%``)."""
    return b"".join(
        bytes((b,)) if 0x20 <= b <= 0x7E and b != 0x25 else b"%%%02X" % b
        for b in message.encode("utf-8", "replace")
    )


def status_details(code: int, message: str, delay: float | None) -> bytes:
    """``grpc-status-details-bin``: a ``google.rpc.Status`` (with a ``RetryInfo`` when a retry
    delay is given), base64 without padding."""
    return base64.b64encode(retry_status(code, message, delay)).rstrip(b"=")


class _Connection(asyncio.Protocol):
    """One client connection: its HTTP/2 session and the calls in progress on it."""

    def __init__(self, server: NativeGRPCServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.session: Any = None
        self.closed = False
        self._refused = 0  # the session's count of streams refused, as last seen

    # -- asyncio.Protocol ------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        cfg = self.server.config
        try:
            self.session = self.server.native.Session(
                max_message=self.server.max_message,
                max_concurrent_streams=cfg.max_concurrent_streams or DEFAULT_MAX_STREAMS,
                stream_window=STREAM_WINDOW,
                connection_window=CONNECTION_WINDOW,
                max_buffered=max(MAX_BUFFERED, self.server.max_message + 5),
            )
        except Exception:
            self.server.receiver.settings.logger.exception("cannot serve a gRPC connection")
            self.closed = True
            transport.close()
            return
        self.server.connections.add(self)
        if self.server.closing:
            self.session.goaway()
        self.flush()

    def data_received(self, data: bytes) -> None:
        try:
            calls = self.session.feed(data)
        except (ValueError, MemoryError) as exc:
            # a protocol error: nghttp2 may have queued a GOAWAY saying why
            self.server.log_refusal(f"HTTP/2 protocol error from {self._peer()}: {exc}")
            self.flush()
            self.close()
            return
        refused = self.session.refused
        if refused != self._refused:
            for _ in range(refused - self._refused):
                self.server.refused("busy")
            self._refused = refused
        for call in calls:
            self._call(*call)
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)

    def pause_writing(self) -> None:
        # the peer does not read its answers: stop reading its requests until it does
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    # -- calls -----------------------------------------------------------------------------------
    def _call(
        self, stream_id: int, path: str, content_type: str, encoding: str, flag: int, payload: Any
    ) -> None:
        if not content_type.startswith("application/grpc"):
            self.server.refused("not_grpc")
            self.session.respond(stream_id, 0, http_status=415)
            return
        signal = PATHS.get(path)
        if signal is None or signal not in self.server.receiver.consumers:
            self.server.refused("unimplemented")
            self.respond(stream_id, UNIMPLEMENTED, f"unknown method {path}")
            return
        native = self.server.native
        limit = self.server.max_message
        if flag == native.TOO_LARGE:
            self.server.refused("too_large")
            self.respond(
                stream_id,
                RESOURCE_EXHAUSTED,
                f"received message larger than max ({payload - 5} vs. {limit})",
            )
            return
        if flag == native.FRAMING:
            self.server.refused("bad_framing")
            self.respond(stream_id, INTERNAL, "the request body is not one gRPC message")
            return
        if flag:  # compressed
            wbits = ENCODINGS.get(encoding)
            if wbits is None:
                self.server.refused("unsupported_encoding")
                self.respond(
                    stream_id,
                    UNIMPLEMENTED if encoding not in ("", "identity") else INTERNAL,
                    f"grpc-encoding {encoding or 'identity'!r} is not supported for a compressed "
                    "message (supported: gzip, deflate)",
                )
                return
            self.server.spawn(self._export(stream_id, signal, payload, wbits, encoding))
            return
        self.server.spawn(self._export(stream_id, signal, payload))

    async def _export(
        self, stream_id: int, signal: Signal, data: bytes, wbits: int = 0, encoding: str = ""
    ) -> None:
        receiver = self.server.receiver
        if wbits:
            limit = self.server.max_message
            try:
                data = await inflate_off_loop(data, limit, wbits, encoding)
            except RequestError as exc:
                if exc.status == 413:
                    self.server.refused("too_large")
                    message = f"received message larger than max once decompressed (limit {limit})"
                    self.respond(stream_id, RESOURCE_EXHAUSTED, message)
                else:  # data that cannot be decoded
                    receiver.count_malformed(signal)
                    self.respond(
                        stream_id, INTERNAL, f"cannot decompress the message: {exc.message}"
                    )
                return
        try:
            await receiver.push(signal, data, "grpc", self._peer)
        except PermanentError as exc:
            self.respond(stream_id, INVALID_ARGUMENT, str(exc))
        except RetryableError as exc:
            code = RESOURCE_EXHAUSTED if exc.resource_exhausted else UNAVAILABLE
            delay = exc.retry_after if exc.retry_after is not None else DEFAULT_RETRY_DELAY
            self.respond(stream_id, code, str(exc), delay=delay)
        except Exception as exc:  # a bug downstream must not kill the server
            receiver.settings.logger.exception("unexpected error while receiving %s", signal)
            self.respond(stream_id, INTERNAL, f"internal error: {exc}")
        else:
            self.respond(stream_id, OK)

    def respond(
        self, stream_id: int, code: int, message: str = "", delay: float | None = None
    ) -> None:
        """Answer a call: ``OK`` with an empty response message, else a Trailers-Only error
        with the message and a ``google.rpc.Status`` (with ``RetryInfo`` when ``delay``)."""
        if self.closed:
            return  # the client went away; what it sent was taken or refused all the same
        if code == OK:
            self.session.respond(stream_id, OK)
        else:
            self.session.respond(
                stream_id,
                code,
                percent_encode(message),
                None,
                status_details(code, message, delay) if delay is not None else None,
            )
        self.flush()

    # -- io --------------------------------------------------------------------------------------
    def flush(self) -> None:
        """Write what the session has to send; close the connection once it is over."""
        if self.closed or self.transport is None:
            return
        try:
            out = self.session.data_to_send()
        except ValueError as exc:
            self.server.log_refusal(f"HTTP/2 error on {self._peer()}: {exc}")
            self.close()
            return
        if out:
            self.transport.write(out)
        if not self.session.want_io():
            self.close()

    def goaway(self) -> None:
        """Tell the client no new call is taken here (calls received are still answered)."""
        if not self.closed:
            self.session.goaway()
            self.flush()

    @property
    def open_streams(self) -> int:
        return int(self.session.open_streams) if self.session is not None else 0

    def close(self) -> None:
        if not self.closed and self.transport is not None:
            self.closed = True
            self.transport.close()
        self.server.connections.discard(self)

    def _peer(self) -> str:
        peer = self.transport.get_extra_info("peername") if self.transport else None
        return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)


class NativeGRPCServer:
    """The gRPC side of one ``otlp`` receiver, served on the event loop."""

    def __init__(self, receiver: OTLPReceiver, config: GRPCServerConfig, native: Any) -> None:
        self.receiver = receiver
        self.config = config
        self.native = native
        self.max_message = config.max_recv_msg_size_mib << 20
        self.connections: set[_Connection] = set()
        self.closing = False
        self._server: asyncio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # set by start
        self._calls: set[asyncio.Task[None]] = set()
        self._last_log = 0.0
        self._suppressed = 0

    def spawn(self, coro: Any) -> None:
        task = (self._loop or asyncio.get_running_loop()).create_task(coro)
        self._calls.add(task)
        task.add_done_callback(self._calls.discard)

    def refused(self, reason: str) -> None:
        """Count a call refused before it reached the pipeline (``too_large``, ``bad_framing``,
        ``unsupported_encoding``, ``unimplemented``, ``not_grpc``, ``busy``: the connection
        held too much unfinished request data)."""
        self.receiver.settings.telemetry.service.counter(
            "otelcol_receiver_refused_requests",
            "Requests or datagrams a receiver refused before they reached the pipeline.",
            ("receiver", "transport", "reason"),
        ).labels(self.receiver.settings.name, "grpc", reason).inc()

    def log_refusal(self, message: str) -> None:
        """A warning, at most one a second (with the count of those not logged)."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        if now - self._last_log < 1.0:
            self._suppressed += 1
            return
        extra: dict[str, Any] = {}
        if self._suppressed:
            extra["similar_not_logged"] = self._suppressed
        self._suppressed = 0
        self._last_log = now
        self.receiver.settings.logger.warning(message, extra=extra)

    def _ssl(self) -> ssl.SSLContext | None:
        if self.config.tls is None:
            return None
        ctx = server_ssl_context(self.config.tls)
        ctx.set_alpn_protocols(["h2"])  # gRPC clients require HTTP/2 negotiated by ALPN
        return ctx

    async def start(self) -> None:
        host, port = split_endpoint(self.config.endpoint)
        # kept: asyncio.get_running_loop() costs a getpid() system call per request
        loop = self._loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(
                lambda: _Connection(self),
                host or None,
                port,
                ssl=self._ssl(),
                reuse_address=True,
            )
        except OSError as exc:
            raise OSError(f"cannot listen on {self.config.endpoint}: {exc}") from exc
        self.receiver.settings.logger.info(
            "OTLP/gRPC listening", extra={"endpoint": self.config.endpoint, "server": "native"}
        )

    async def stop(self, grace: float = 10.0) -> None:
        """Stop taking calls: a GOAWAY on every connection, the calls in progress answered
        (waiting at most ``grace`` seconds), then the connections closed."""
        if self._server is None:
            return
        server, self._server = self._server, None
        self.closing = True
        server.close()
        for conn in list(self.connections):
            conn.goaway()
        if self._calls:
            await asyncio.wait(set(self._calls), timeout=grace)
        for task in list(self._calls):
            task.cancel()
        if self._calls:
            await asyncio.gather(*self._calls, return_exceptions=True)
        # let the last answers reach the sockets, then close what is left
        for conn in list(self.connections):
            conn.flush()
        await asyncio.sleep(0)
        for conn in list(self.connections):
            conn.close()
        await server.wait_closed()
