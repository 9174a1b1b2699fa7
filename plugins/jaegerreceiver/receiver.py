"""The ``jaeger`` receiver instance: Thrift over HTTP (the collector's ``/api/traces``) and
over UDP (the agent's compact and binary ports), translated to OTLP."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from pipeline import (
    Component,
    Consumer,
    CreateSettings,
    Host,
    PermanentError,
    RetryableError,
    Traces,
    split_endpoint,
)
from pipeline.httpserver import serve
from plugins._jaegerthrift.model import (
    Batch,
    Protocol,
    ThriftDecodeError,
    decode_batch,
    decode_emit_batch,
)
from plugins._jaegerthrift.translate import batch_to_request
from plugins.jaegerreceiver.config import JaegerReceiverConfig, ThriftHTTPConfig, ThriftUDPConfig

# Content types the collector's HTTP endpoint takes, and the Thrift protocol of each.
HTTP_CONTENT_TYPES: dict[str, Protocol] = {
    "application/x-thrift": "binary",
    "application/vnd.apache.thrift.binary": "binary",
    "application/vnd.apache.thrift.compact": "compact",
}
DEFAULT_RETRY_AFTER = 5


class _LogLimiter:
    """At most one log line per reason and second; the lines in between are counted."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def allow(self, reason: str) -> int | None:
        now = time.monotonic()
        if now - self._last.get(reason, -1e9) >= 1.0:
            self._last[reason] = now
            return self._suppressed.pop(reason, 0)
        self._suppressed[reason] = self._suppressed.get(reason, 0) + 1
        return None


class JaegerReceiver(Component):
    """Owns the configured servers; each hands decoded batches to :meth:`push`."""

    def __init__(
        self,
        settings: CreateSettings,
        config: JaegerReceiverConfig,
        on_shutdown: Callable[[JaegerReceiverConfig], None] | None = None,
    ) -> None:
        self.settings = settings
        self.config = config
        self.consumer: Consumer | None = None
        self._servers: list[Any] = []
        self._started = False
        self._on_shutdown = on_shutdown
        self._limiter = _LogLimiter()
        service = settings.telemetry.service
        self._malformed = service.counter(
            "otelcol_receiver_malformed_requests",
            "Requests refused because they could not be decoded.",
            ("receiver", "otel_signal"),
        ).labels(settings.name, "traces")
        self._refused_requests = service.counter(
            "otelcol_receiver_refused_requests",
            "Requests or datagrams a receiver refused before they reached the pipeline.",
            ("receiver", "transport", "reason"),
        )

    def set_consumer(self, consumer: Consumer) -> None:
        self.consumer = consumer

    # -- shared by the servers ------------------------------------------------------------
    def refuse(self, transport: str, reason: str, message: str, **fields: Any) -> None:
        """Count a request refused before the pipeline, and log it (rate-limited)."""
        self._refused_requests.labels(self.settings.name, transport, reason).inc()
        if reason == "malformed":
            self._malformed.inc()
        suppressed = self._limiter.allow(f"{transport}/{reason}")
        if suppressed is not None:
            extra = {"transport": transport, "reason": reason, **fields}
            if suppressed:
                extra["similar_refusals_not_logged"] = suppressed
            self.settings.logger.warning("refused Jaeger data: %s", message, extra=extra)

    async def push(self, batch: Batch) -> int:
        """Translate a batch to OTLP and pass it on; returns the span count. Raises what the
        pipeline raises (``RetryableError`` when it pushes back).

        The translation makes valid OTLP by construction (ids of 16 and 8 bytes, strings that
        Thrift's decoder made UTF-8, replacing what was not); the encoding is checked all the
        same, as a receiver of OTLP checks it (:meth:`pipeline.Payload.validate`), so no later
        stage can get a request it cannot decode."""
        try:
            request, n = batch_to_request(batch)
        except ValueError as exc:  # a value OTLP cannot hold
            raise ThriftDecodeError(f"malformed Batch: {exc}") from exc
        payload = Traces(request.SerializeToString(), message=request)
        try:
            payload.validate()
        except PermanentError as exc:
            raise ThriftDecodeError(f"malformed Batch: as OTLP, {exc}") from exc
        if n and self.consumer is not None:
            await self.consumer.consume(payload)
        return n

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self, host: Host) -> None:
        if self._started:
            return
        self._started = True
        protocols = self.config.protocols
        try:
            if protocols.thrift_http is not None:
                http = ThriftHTTPServer(self, protocols.thrift_http)
                await http.start()
                self._servers.append(http)
            udp_ports: tuple[tuple[str, Protocol], ...] = (
                ("thrift_compact", "compact"),
                ("thrift_binary", "binary"),
            )
            for name, kind in udp_ports:
                cfg = getattr(protocols, name)
                if cfg is not None:
                    udp = ThriftUDPServer(self, name, cfg, kind)
                    await udp.start()
                    self._servers.append(udp)
        except BaseException:
            await self._stop_servers()
            raise

    async def _stop_servers(self) -> None:
        servers, self._servers = self._servers, []
        for server in servers:
            await server.stop()

    async def shutdown(self) -> None:
        """Stop taking data; what is being handled finishes first."""
        await self._stop_servers()
        if self._on_shutdown is not None:
            self._on_shutdown(self.config)


class ThriftHTTPServer:
    """``POST /api/traces`` with one Thrift-encoded ``Batch`` per request (``Content-Length``
    or chunked), as the Jaeger collector serves it."""

    def __init__(self, receiver: JaegerReceiver, config: ThriftHTTPConfig) -> None:
        self.receiver = receiver
        self.config = config
        self._runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        rcv = self.receiver
        content_type = request.content_type.lower()
        kind = HTTP_CONTENT_TYPES.get(content_type)
        if kind is None:
            rcv.refuse("http", "content_type", f"unsupported content type {content_type!r}")
            return web.Response(
                status=415,
                text=f"unsupported content type {content_type!r}: send a Thrift Batch as "
                + " or ".join(sorted(HTTP_CONTENT_TYPES)),
            )
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            rcv.refuse(
                "http",
                "too_large",
                f"request body over max_request_body_size ({self.config.max_request_body_size})",
            )
            return web.Response(
                status=413,
                text=f"request body larger than {self.config.max_request_body_size} bytes",
            )
        try:
            batch = decode_batch(body, kind)
        except ThriftDecodeError as exc:
            rcv.refuse("http", "malformed", str(exc), bytes=len(body))
            return web.Response(status=400, text=f"cannot decode the Thrift Batch: {exc}")
        try:
            await rcv.push(batch)
        except ThriftDecodeError as exc:
            rcv.refuse("http", "malformed", str(exc), bytes=len(body))
            return web.Response(status=400, text=f"cannot translate the Thrift Batch: {exc}")
        except RetryableError as exc:
            delay = exc.retry_after if exc.retry_after is not None else DEFAULT_RETRY_AFTER
            return web.Response(
                status=503,
                text=str(exc),
                headers={"Retry-After": str(max(1, round(delay)))},
            )
        except PermanentError as exc:
            return web.Response(status=400, text=str(exc))
        except Exception as exc:  # a bug downstream must not kill the server
            rcv.settings.logger.exception("unexpected error while receiving Jaeger spans")
            return web.Response(status=500, text=f"internal error: {exc}")
        return web.Response(status=202)

    async def start(self) -> None:
        app = web.Application(client_max_size=self.config.max_request_body_size)
        app.router.add_post("/api/traces", self.handle)
        self._runner = await serve(app, self.config.endpoint)
        self.receiver.settings.logger.info(
            "Jaeger Thrift/HTTP listening", extra={"endpoint": self.config.endpoint}
        )

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()


class _DatagramQueue(asyncio.DatagramProtocol):
    def __init__(self, server: ThriftUDPServer) -> None:
        self.server = server

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.server.received(data)

    def error_received(self, exc: Exception) -> None:
        self.server.receiver.settings.logger.warning("UDP receive error: %s", exc)


class ThriftUDPServer:
    """One agent port: each datagram is one ``emitBatch`` message (compact or binary)."""

    def __init__(
        self, receiver: JaegerReceiver, name: str, config: ThriftUDPConfig, kind: Protocol
    ) -> None:
        self.receiver = receiver
        self.name = name
        self.config = config
        self.kind = kind
        self._queue: asyncio.Queue[bytes] = asyncio.Queue(config.queue_size)
        self._transport: asyncio.DatagramTransport | None = None
        self._workers: list[asyncio.Task[None]] = []
        self.local_address: Any = None

    def received(self, data: bytes) -> None:
        if len(data) > self.config.max_packet_size:
            self.receiver.refuse(
                self.name,
                "too_large",
                f"datagram of {len(data)} bytes is over max_packet_size "
                f"({self.config.max_packet_size})",
                bytes=len(data),
            )
            return
        try:
            self._queue.put_nowait(data)
        except asyncio.QueueFull:
            self.receiver.refuse(
                self.name,
                "queue_full",
                f"{self.config.queue_size} datagrams already wait to be decoded; dropped one",
                bytes=len(data),
            )

    async def _worker(self) -> None:
        rcv = self.receiver
        while True:
            data = await self._queue.get()
            try:
                try:
                    batch = decode_emit_batch(data, self.kind)
                except ThriftDecodeError as exc:
                    rcv.refuse(self.name, "malformed", str(exc), bytes=len(data))
                    continue
                try:
                    await rcv.push(batch)
                except ThriftDecodeError as exc:
                    rcv.refuse(self.name, "malformed", str(exc), bytes=len(data))
                except (RetryableError, PermanentError) as exc:
                    # UDP cannot push back: the pipeline counted the refusal; say so here.
                    rcv.refuse(
                        self.name,
                        "pipeline",
                        f"the pipeline refused {len(batch.spans or ())} span(s): {exc}",
                    )
                except Exception:
                    rcv.settings.logger.exception("unexpected error while receiving Jaeger spans")
            finally:
                self._queue.task_done()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        host, port = split_endpoint(self.config.endpoint)
        infos = await loop.getaddrinfo(
            host or None, port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE
        )
        family, stype, proto, _, addr = infos[0]
        sock = socket.socket(family, stype, proto)
        try:
            if self.config.socket_buffer_size:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.config.socket_buffer_size)
            sock.bind(addr)
        except OSError:
            sock.close()
            raise
        transport, _ = await loop.create_datagram_endpoint(lambda: _DatagramQueue(self), sock=sock)
        self._transport = transport
        self.local_address = sock.getsockname()
        self._workers = [
            asyncio.create_task(self._worker(), name=f"{self.receiver.settings.name}-{self.name}")
            for _ in range(self.config.workers)
        ]
        self.receiver.settings.logger.info(
            "Jaeger Thrift/UDP listening",
            extra={"endpoint": self.config.endpoint, "protocol": self.name},
        )

    async def stop(self) -> None:
        try:
            if self._transport is not None:
                self._transport.close()
                self._transport = None
                # Datagrams already taken in are still handled (until the shutdown deadline).
                await self._queue.join()
        finally:
            for task in self._workers:
                task.cancel()
            await asyncio.gather(*self._workers, return_exceptions=True)
            self._workers = []
            left = self._queue.qsize()
            if left:
                for _ in range(left):
                    self._queue.get_nowait()
                    self._queue.task_done()
                    self.receiver.refuse(
                        self.name, "shutdown", "datagram not handled before the shutdown deadline"
                    )
