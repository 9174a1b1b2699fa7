"""The ``jaeger`` receiver instance: Thrift over HTTP (the collector's ``/api/traces``) and
over UDP (the agent's compact and binary ports), translated to OTLP."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable
from typing import Any

from aiohttp import web

from pipeline import (
    AuthenticationError,
    Component,
    Consumer,
    CreateSettings,
    Host,
    Payload,
    PermanentError,
    RetryableError,
    ServerAuth,
    Traces,
    netedge,
    server_ssl_context,
    split_endpoint,
)
from pipeline.client import ClientInfo, peer_address, set_client
from pipeline.httpserver import Serving, body_read, serve
from pipeline.tasks import supervise
from plugins._jaegerthrift.model import (
    Protocol,
    ThriftBudgetError,
    ThriftDecodeError,
    decode_batch,
    decode_emit_batch,
)
from plugins._jaegerthrift.translate import batch_to_request
from plugins._offload import decode_off_loop
from plugins.jaegerreceiver.config import JaegerReceiverConfig, ThriftHTTPConfig, ThriftUDPConfig

# Content types the collector's HTTP endpoint takes, and the Thrift protocol of each.
HTTP_CONTENT_TYPES: dict[str, Protocol] = {
    "application/x-thrift": "binary",
    "application/vnd.apache.thrift.binary": "binary",
    "application/vnd.apache.thrift.compact": "compact",
}
DEFAULT_RETRY_AFTER = 5


# Thrift bodies and datagrams up to this size are decoded on the event loop, larger ones in a
# decode thread. The worst case in place is a batch of tags of only their required fields
# (5 bytes each in the compact protocol, ~0.85 µs per byte decoded and translated): ~3.5 ms
# at this size, within the 5 ms the loop may wait for the GIL while a thread decodes; a
# typical batch (agent spans of ~400 bytes, ~0.13 µs per byte) takes 0.5 ms.
INLINE_DECODE = 4 * 1024


def decode_traces(
    data: bytes, kind: Protocol, datagram: bool, max_items: int
) -> tuple[Payload | None, int]:
    """A Thrift ``Batch`` (or, for ``datagram``, an agent's ``emitBatch`` message) as an OTLP
    payload, and its span count (``None`` when it holds no span).

    Raises :class:`ThriftDecodeError` saying what is wrong, :class:`ThriftBudgetError` when
    it holds more than ``max_items`` structs."""
    try:
        if datagram:
            batch = decode_emit_batch(data, kind, max_items)
        else:
            batch = decode_batch(data, kind, max_items)
    except ThriftBudgetError:
        raise
    except ThriftDecodeError as exc:
        raise ThriftDecodeError(f"cannot decode the Thrift Batch: {exc}") from exc
    try:
        request, n = batch_to_request(batch)
    except ValueError as exc:  # a value OTLP cannot hold
        raise ThriftDecodeError(
            f"cannot translate the Thrift Batch: malformed Batch: {exc}"
        ) from exc
    if not n:
        return None, 0
    # The translation makes valid OTLP by construction (ids of 16 and 8 bytes, strings that
    # Thrift's decoder made UTF-8, replacing what was not); the encoding is checked all the
    # same, as a receiver of OTLP checks it (Payload.validate), so no later stage can get a
    # request it cannot decode.
    payload = Traces(request.SerializeToString(), message=request)
    try:
        payload.validate()
    except PermanentError as exc:
        raise ThriftDecodeError(f"cannot translate the Thrift Batch: as OTLP, {exc}") from exc
    return payload, n


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
        service = settings.telemetry.service
        self._malformed = service.counter(
            "otelcol_receiver_malformed_requests",
            "Requests refused because they could not be decoded.",
            ("receiver", "otel_signal"),
        ).labels(settings.name, "traces")

    def set_consumer(self, consumer: Consumer) -> None:
        self.consumer = consumer

    # -- shared by the servers ------------------------------------------------------------
    def refuse(self, transport: str, reason: str, message: str, **fields: Any) -> None:
        """Count a request refused before the pipeline, and log it (rate-limited)."""
        self.settings.telemetry.refused_request(transport, reason)
        if reason == "malformed":
            self._malformed.inc()
        self.settings.log_limited(
            logging.WARNING,
            "refused Jaeger data: %s",
            message,
            key=f"{transport}/{reason}",
            extra={"transport": transport, "reason": reason, **fields},
        )

    async def decode(
        self, data: bytes, kind: Protocol, datagram: bool, max_items: int
    ) -> tuple[Payload | None, int]:
        """:func:`decode_traces`, in a decode thread when ``data`` is large."""
        return await decode_off_loop(
            len(data), INLINE_DECODE, decode_traces, data, kind, datagram, max_items
        )

    async def push(self, traces: Payload | None) -> None:
        """Pass decoded spans on. Raises what the pipeline raises (``RetryableError`` when it
        pushes back)."""
        if traces is not None and self.consumer is not None:
            await self.consumer.consume(traces)

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self, host: Host) -> None:
        if self._started:
            return
        self._started = True
        protocols = self.config.protocols
        try:
            if protocols.thrift_http is not None:
                auth = ServerAuth.from_config(self.settings, host, protocols.thrift_http.auth)
                http = ThriftHTTPServer(self, protocols.thrift_http, auth)
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
    or chunked), as the Jaeger collector serves it; with ``auth``, authenticated from the
    headers before the body is read (``401`` with ``WWW-Authenticate`` when refused)."""

    def __init__(
        self, receiver: JaegerReceiver, config: ThriftHTTPConfig, auth: ServerAuth | None = None
    ) -> None:
        self.receiver = receiver
        self.config = config
        self.auth = auth
        self._runner: Serving | None = None

    async def handle(self, request: web.Request) -> web.Response:
        rcv = self.receiver
        peer = peer_address(request.remote)
        auth: Any = {}
        if self.auth is not None:
            try:
                auth = await self.auth.check(request.headers, "http", peer)
            except AuthenticationError as exc:
                return web.Response(
                    status=401,
                    text=f"unauthenticated: {exc}",
                    headers={"WWW-Authenticate": self.auth.www_authenticate},
                )
        set_client(ClientInfo(peer, rcv.settings.name, "http", auth))  # a task per request
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
            body_read(request)
        except ConnectionError as exc:  # the client went away, or the edge cut it off
            # the exception stays in the request's payload and its traceback holds the partial
            # body: a cycle only the cyclic GC would free
            exc.__traceback__ = None
            rcv.refuse("http", "client_disconnected", f"while reading the body: {exc}")
            return web.Response(status=400, text="the request body did not arrive")
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
            traces, _ = await rcv.decode(body, kind, False, self.config.max_batch_items)
        except ThriftBudgetError as exc:
            rcv.refuse("http", "too_large", str(exc), bytes=len(body))
            return web.Response(status=413, text=str(exc))
        except ThriftDecodeError as exc:
            rcv.refuse("http", "malformed", str(exc), bytes=len(body))
            return web.Response(status=400, text=str(exc))
        try:
            await rcv.push(traces)
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
            rcv.settings.log_limited(
                logging.ERROR,
                "unexpected error while receiving Jaeger spans",
                key="unexpected",
                exc_info=exc,
            )
            return web.Response(status=500, text=f"internal error: {exc}")
        return web.Response(status=202)

    async def start(self) -> None:
        app = web.Application(client_max_size=self.config.max_request_body_size)
        app.router.add_post("/api/traces", self.handle)
        tls = self.config.tls
        self._runner = await serve(
            app,
            self.config.endpoint,
            server_ssl_context(tls) if tls is not None else None,
            limits=self.config,
            settings=self.receiver.settings,
        )
        self.receiver.settings.logger.info(
            "Jaeger Thrift/HTTP listening", extra={"endpoint": self.config.endpoint}
        )

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()


# How often the kernel's drop counter of each UDP socket is read.
KERNEL_DROPS_INTERVAL = 1.0


def kernel_drops(family: int, inode: int) -> int | None:
    """The datagrams the kernel dropped for the UDP socket ``inode`` (receive buffer full,
    checksum errors...): the ``drops`` column of ``/proc/net/udp`` or ``udp6`` (Linux; the
    count lives as long as the socket). ``None`` where it cannot be read."""
    path = "/proc/net/udp6" if family == socket.AF_INET6 else "/proc/net/udp"
    key = str(inode)
    try:
        with open(path, encoding="ascii") as f:
            next(f)  # the header
            for line in f:
                fields = line.split()
                # sl local rem st tx:rx tr:tm retrnsmt uid timeout inode ref pointer drops
                if len(fields) >= 13 and fields[9] == key:
                    return int(fields[12])
    except (OSError, ValueError, StopIteration):
        return None
    return None


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
        self._socket_id: tuple[int, int] | None = None  # (family, inode) for kernel_drops
        self._kernel_dropped = 0  # the kernel's count, as last read

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
                    traces, n = await rcv.decode(data, self.kind, True, self.config.max_batch_items)
                except ThriftBudgetError as exc:
                    rcv.refuse(self.name, "too_large", str(exc), bytes=len(data))
                    continue
                except ThriftDecodeError as exc:
                    rcv.refuse(self.name, "malformed", str(exc), bytes=len(data))
                    continue
                try:
                    await rcv.push(traces)
                except (RetryableError, PermanentError) as exc:
                    # UDP cannot push back: the pipeline counted the refusal; say so here.
                    rcv.refuse(
                        self.name,
                        "pipeline",
                        f"the pipeline refused {n} span(s): {exc}",
                    )
                except Exception as exc:
                    rcv.settings.log_limited(
                        logging.ERROR,
                        "unexpected error while receiving Jaeger spans",
                        key="unexpected",
                        exc_info=exc,
                    )
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
            if netedge.REUSE_PORT:  # workers share the port (pipeline.workers)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
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
            supervise(self.receiver.settings, None, f"{self.name} worker", self._worker)
            for _ in range(self.config.workers)
        ]
        inode = os.fstat(sock.fileno()).st_ino
        if kernel_drops(family, inode) is not None:
            self._socket_id = (family, inode)
            self._workers.append(
                supervise(
                    self.receiver.settings, None, f"{self.name} kernel drops", self._watch_drops
                )
            )
        self.receiver.settings.logger.info(
            "Jaeger Thrift/UDP listening",
            extra={"endpoint": self.config.endpoint, "protocol": self.name},
        )

    async def _watch_drops(self) -> None:
        while True:
            await asyncio.sleep(KERNEL_DROPS_INTERVAL)
            await self.count_kernel_drops()

    async def count_kernel_drops(self) -> None:
        """Count the datagrams the kernel dropped since the last reading (the socket's
        receive buffer was full: the workers did not keep up, or ``socket_buffer_size`` is
        too small for the bursts)."""
        if self._socket_id is None:
            return
        now = await asyncio.to_thread(kernel_drops, *self._socket_id)
        if now is None or now <= self._kernel_dropped:
            return
        new, self._kernel_dropped = now - self._kernel_dropped, now
        self.receiver.settings.telemetry.refused_request(self.name, "kernel_dropped", new)
        self.receiver.settings.log_limited(
            logging.WARNING,
            "the kernel dropped %d Jaeger datagram(s): the socket's receive buffer was full "
            "(raise socket_buffer_size or workers)",
            new,
            key=f"{self.name}/kernel_dropped",
            extra={"transport": self.name, "reason": "kernel_dropped"},
        )

    async def stop(self) -> None:
        if self._transport is not None:
            await self.count_kernel_drops()  # the last reading, while the socket exists
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
