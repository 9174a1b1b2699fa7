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

With ``auth``, each call's metadata goes to the authenticator as soon as its HEADERS arrive;
a call it refuses is answered ``UNAUTHENTICATED`` at once and the rest of its body discarded
(the session's headers mode, see ``_h2server.c``).

Answers: ``OK`` with an empty ``Export*ServiceResponse``; ``INVALID_ARGUMENT`` for data that
cannot be decoded; ``UNAVAILABLE`` / ``RESOURCE_EXHAUSTED`` with ``google.rpc.RetryInfo`` when
the pipeline pushes back; ``RESOURCE_EXHAUSTED`` for a message over the size limit;
``UNIMPLEMENTED`` for another method or an unsupported ``grpc-encoding``; ``INTERNAL`` for a
body that is not one gRPC message; HTTP 415 for a request that is not gRPC.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import random
import ssl
from collections.abc import Awaitable, Mapping
from typing import TYPE_CHECKING, Any

from pipeline import (
    AuthenticationError,
    PermanentError,
    RetryableError,
    ServerAuth,
    Signal,
)
from pipeline.client import ClientInfo, peer_address, set_client
from pipeline.netedge import BUDGET, Listener, sweep_tick
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
UNAUTHENTICATED = 16

PATHS = {
    "/opentelemetry.proto.collector.trace.v1.TraceService/Export": Signal.TRACES,
    "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export": Signal.METRICS,
    "/opentelemetry.proto.collector.logs.v1.LogsService/Export": Signal.LOGS,
}
ENCODINGS = {"gzip": 31, "deflate": 15}  # grpc-encoding -> zlib wbits
DEFAULT_RETRY_DELAY = 1.0
# HTTP/2 flow-control windows: a stream may send 1 MiB before the first window update (a
# 200-span request is ~60 KB), a connection 16 MiB
STREAM_WINDOW = 1 << 20
CONNECTION_WINDOW = 16 << 20
DEFAULT_MAX_STREAMS = 250  # concurrent calls per connection when max_concurrent_streams is 0
# unfinished request bytes one connection may hold (at least one largest message): beyond, new
# data is refused with REFUSED_STREAM, which gRPC clients retry. All connections of the process
# together hold at most service.limits.max_unfinished_request_bytes (pipeline.netedge.BUDGET).
MAX_BUFFERED = 64 << 20
READ_SIZE = 256 * 1024  # asyncio's default read size, kept when read_buffer_size is 0
# the session's reasons for GOAWAY ENHANCE_YOUR_CALM (stats[4]) as counted
CALM_REASONS = {1: "too_many_resets", 2: "too_many_pings"}


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
    """One client connection: its HTTP/2 session, the calls in progress on it, and its limits
    (checked by the listener's sweeper, :meth:`edge_check`)."""

    def __init__(self, server: NativeGRPCServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.session: Any = None
        self.closed = False
        self._stats = (0, 0, 0, 0, 0)  # the session's counts, as last seen
        self._notices = 0
        self.held = 0  # unfinished request bytes, as charged to BUDGET
        self._capped = False  # session.max_buffered lowered under BUDGET
        # activity seen by the sweeper: reads and calls since its last look
        self.reads = 0
        self.calls = 0
        self.writes = 0  # writes to the socket (tests: answers of one read leave in one)
        self._flush_due = False  # a flush is scheduled for this turn of the loop
        self._seen = (0, 0)
        self._drain = (0, 0)  # (answers completed, bytes waiting in the transport)
        self.born = 0.0
        self.last_read = 0.0  # loop time of the last read the sweeper noticed
        self.idle_since: float | None = None
        self.stalled_since: float | None = None
        self.ping_sent = 0.0
        self.draining_since: float | None = None  # max_connection_age's GOAWAY was sent
        self.max_age = 0.0
        self.evictable = True  # in the listener's idle set (new connections start there)
        # the sender of this connection's calls without an authenticator's facts (made once)
        self._client: ClientInfo | None = None

    # -- asyncio.Protocol ------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        server = self.server
        cfg = server.config
        try:
            self.session = server.native.Session(
                max_message=server.max_message,
                max_concurrent_streams=cfg.max_concurrent_streams or DEFAULT_MAX_STREAMS,
                stream_window=STREAM_WINDOW,
                connection_window=CONNECTION_WINDOW,
                max_buffered=server.max_buffered,
                max_header_list_size=cfg.max_header_list_size,
                reset_rate=cfg.max_stream_resets_per_second,
                reset_burst=max(2 * cfg.max_stream_resets_per_second, 1.0),
                ping_min_time=server.ping_min_time,
                permit_ping_without_stream=cfg.keepalive.enforcement_policy.permit_without_stream,
                headers=server.auth is not None,
            )
        except Exception:
            server.receiver.settings.logger.exception("cannot serve a gRPC connection")
            self.closed = True
            transport.close()
            return
        loop = server.loop
        self.born = self.last_read = loop.time()
        self.session.clock = int(self.born * 1000)
        age = cfg.keepalive.server_parameters.max_connection_age
        if age:  # +-10 %, so that connections made together do not all go at once
            self.max_age = age * random.uniform(0.9, 1.1)
        if cfg.read_buffer_size:
            transport.max_size = cfg.read_buffer_size  # type: ignore[attr-defined]
        if cfg.write_buffer_size:
            transport.set_write_buffer_limits(high=cfg.write_buffer_size)
        server.connections.add(self)
        if server.listener is not None:
            server.listener.connected(self, transport)
        if server.closing:
            self.session.goaway()
        self.flush()

    def data_received(self, data: bytes) -> None:
        self.reads += 1
        session = self.session
        # the process-wide budget of unfinished request data: this connection may hold what
        # it holds plus the room left (after evicting larger holders when short)
        n = len(data)
        if n > BUDGET.room:
            room = BUDGET.make_room(self, n)
            session.max_buffered = max(0, min(self.server.max_buffered, self.held + room))
            self._capped = True
        elif self._capped:
            session.max_buffered = self.server.max_buffered
            self._capped = False
        try:
            calls = session.feed(data)
        except (ValueError, MemoryError) as exc:
            # a protocol error: nghttp2 may have queued a GOAWAY saying why
            self.server.log_refusal(f"HTTP/2 protocol error from {self._peer()}: {exc}")
            self.flush()
            self.close()
            return
        held = session.buffered
        if held != self.held:
            self.held = held
            BUDGET.update(self, held)
        if session.notices != self._notices:
            self._count()
        if self.server.auth is not None:
            for stream_id, headers in session.take_heads():
                self._authenticate(stream_id, headers)
        for call in calls:
            self._call(*call)
        # after the calls just spawned ran their first step: what this read called for
        # (window updates, acknowledgements) and the answers of those calls that did not wait
        # leave in one write
        self.flush_soon()

    def _count(self) -> None:
        """Count (and log) what the session's limits refused since the last look."""
        session = self.session
        self._notices = session.notices
        stats = session.stats
        refused, cancelled, header, expired, calm = stats
        before = self._stats
        self._stats = stats
        server = self.server
        cfg = server.config
        peer = self._peer()
        for reason, now, then, why in (
            (
                "busy",
                refused,
                before[0],
                "unfinished request data over the connection's bound or "
                "service.limits.max_unfinished_request_bytes: REFUSED_STREAM",
            ),
            ("cancelled", cancelled, before[1], "reset by the client before it was taken"),
            ("read_timeout", expired, before[3], f"request not received in {cfg.read_timeout:g}s"),
            (
                "header_too_large",
                header,
                before[2],
                f"header block over max_header_list_size ({cfg.max_header_list_size} bytes)",
            ),
        ):
            if now > then:
                server.refused(reason, now - then)
                server.log_refusal(f"refused {now - then} call(s) from {peer}: {why}", reason)
        if calm and not before[4] and calm in CALM_REASONS:
            reason = CALM_REASONS[calm]
            server.refused(reason)
            server.log_refusal(
                f"GOAWAY ENHANCE_YOUR_CALM to {peer}: {reason.replace('_', ' ')} "
                + (
                    f"(max_stream_resets_per_second {server.config.max_stream_resets_per_second})"
                    if calm == 1
                    else "(keepalive.enforcement_policy)"
                ),
                reason,
            )

    def budget_evict(self) -> None:
        """The process needs the room: every call of this connection whose request is not
        complete is refused (REFUSED_STREAM, which gRPC clients retry)."""
        if self.session is None or self.closed:
            BUDGET.update(self, 0)
            self.held = 0
            return
        self.session.refuse_unfinished()
        self.held = self.session.buffered
        BUDGET.update(self, self.held)
        self._count()
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)
        if self.server.listener is not None:
            self.server.listener.forget(self, self.transport)
        if self.held:
            self.held = 0
            BUDGET.update(self, 0)

    def pause_writing(self) -> None:
        # the peer does not read its answers: stop reading its requests until it does
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    # -- authentication (with auth: the session hands out each call's headers first) ------------
    def _authenticate(self, stream_id: int, headers: Mapping[str, str]) -> None:
        auth = self.server.auth
        assert auth is not None
        try:
            info = auth.authenticate(headers, "grpc", self._peer())
        except AuthenticationError as exc:
            self.respond(stream_id, UNAUTHENTICATED, str(exc))
            return
        if isinstance(info, Mapping):
            self._admit(stream_id, info)
        else:
            self.server.spawn(self._authenticate_later(stream_id, info))

    async def _authenticate_later(self, stream_id: int, pending: Awaitable[Any]) -> None:
        try:
            await self._authenticate_pending(stream_id, pending)
        finally:
            self.server.ended()

    async def _authenticate_pending(self, stream_id: int, pending: Awaitable[Any]) -> None:
        try:
            info = await pending
        except AuthenticationError as exc:
            self.respond(stream_id, UNAUTHENTICATED, str(exc))
            return
        if not self.closed:
            self._admit(stream_id, info)
            self.flush()

    def _admit(self, stream_id: int, info: Mapping[str, Any]) -> None:
        call = self.session.admit(stream_id, info)
        if call is not None:  # its body had already ended
            self._call(*call)

    # -- calls -----------------------------------------------------------------------------------
    def _call(
        self,
        stream_id: int,
        path: str,
        content_type: str,
        encoding: str,
        flag: int,
        payload: Any,
        auth: Mapping[str, Any] | None = None,
    ) -> None:
        self.calls += 1
        if self.evictable:  # busy now: not to be closed to make room
            self.evictable = False
            listener = self.server.listener
            if listener is not None:
                listener.set_idle(self, False)
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
            self.server.spawn(self._export(stream_id, signal, payload, wbits, encoding, auth))
            return
        self.server.spawn(self._export(stream_id, signal, payload, auth=auth))

    async def _export(
        self,
        stream_id: int,
        signal: Signal,
        data: bytes,
        wbits: int = 0,
        encoding: str = "",
        auth: Mapping[str, Any] | None = None,
    ) -> None:
        try:
            await self._export_call(stream_id, signal, data, wbits, encoding, auth)
        finally:
            self.server.ended()

    async def _export_call(
        self,
        stream_id: int,
        signal: Signal,
        data: bytes,
        wbits: int,
        encoding: str,
        auth: Mapping[str, Any] | None,
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
        if self.closed or not self.session.pending(stream_id):
            # the client reset the call (or went away) before it was taken: not ingested (it
            # will not learn the outcome, and may send it again)
            self.server.refused("cancelled")
            return
        # the call runs in a task of its own (spawn): the sender set here ends with it
        set_client(self._client_info(auth) if auth else self._plain_client())
        try:
            await receiver.push(signal, data, "grpc", self._peer)
        except PermanentError as exc:
            self.respond(stream_id, INVALID_ARGUMENT, str(exc))
        except RetryableError as exc:
            code = RESOURCE_EXHAUSTED if exc.resource_exhausted else UNAVAILABLE
            delay = exc.retry_after if exc.retry_after is not None else DEFAULT_RETRY_DELAY
            self.respond(stream_id, code, str(exc), delay=delay)
        except Exception as exc:  # a bug downstream must not kill the server
            receiver.settings.log_limited(
                logging.ERROR,
                "unexpected error while receiving %s",
                signal,
                key="unexpected",
                exc_info=exc,
                extra={"client": self._peer()},
            )
            self.respond(stream_id, INTERNAL, f"internal error: {exc}")
        else:
            self.respond(stream_id, OK)

    def _client_info(self, auth: Mapping[str, Any]) -> ClientInfo:
        return ClientInfo(self._peer(), self.server.receiver.settings.name, "grpc", auth)

    def _plain_client(self) -> ClientInfo:
        """The sender of a call without an authenticator's facts: the same for every call of
        the connection (its peer does not change), made at its first call."""
        client = self._client
        if client is None:
            client = self._client = self._client_info({})
        return client

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
        self.flush_soon()

    # -- io --------------------------------------------------------------------------------------
    def flush_soon(self) -> None:
        """:meth:`flush` once the callbacks already scheduled on the loop have run: the answers
        of the calls answered in one turn of the loop (the calls of one read, whose tasks
        run one after the other) leave in one write instead of one write (a ``send`` system
        call, and a wake-up of the client) each. Whatever waits for a call's task is woken
        after this flush, which was scheduled first; paths that close the connection flush
        at once."""
        if not self._flush_due:
            self._flush_due = True
            self.server.loop.call_soon(self._flush_scheduled)

    def _flush_scheduled(self) -> None:
        self._flush_due = False
        self.flush()

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
            self.writes += 1
            self.transport.write(out)
        if not self.session.want_io():
            self.close()

    # -- limits (the listener's sweeper) ---------------------------------------------------------
    def edge_check(self, now: float) -> None:
        session = self.session
        transport = self.transport
        if session is None or transport is None or self.closed:
            return
        server = self.server
        cfg = server.config
        session.clock = now_ms = int(now * 1000)
        read = self.reads != self._seen[0]
        called = self.calls != self._seen[1]
        self._seen = (self.reads, self.calls)
        if read:
            self.last_read = now
        if not session.established:
            if cfg.handshake_timeout and now - self.born > cfg.handshake_timeout:
                self._end("handshake_timeout", "no HTTP/2 connection preface in time")
            return
        # a call's headers or request not arrived in time
        header_cut = now_ms - int(cfg.read_header_timeout * 1000) if cfg.read_header_timeout else -1
        request_cut = now_ms - int(cfg.read_timeout * 1000) if cfg.read_timeout else -1
        if session.open_streams and session.expire(header_cut, request_cut):
            self._end("read_header_timeout", "a call's header block did not arrive in time")
            return
        if session.notices != self._notices:
            self._count()
            self.flush()
        # answers that do not drain (the client does not read, or keeps its window shut)
        waiting = transport.get_write_buffer_size()
        if session.responding or waiting:
            drain = (session.answered, waiting)
            progress = drain[0] != self._drain[0] or waiting < self._drain[1]
            self._drain = drain
            if progress or self.stalled_since is None:
                self.stalled_since = now
            elif cfg.write_timeout and now - self.stalled_since > cfg.write_timeout:
                self._end("write_timeout", "its answers made no progress (it does not read)")
                return
        else:
            self.stalled_since = None
        params = cfg.keepalive.server_parameters
        # idle: no call in progress, none since the last look (pings do not count)
        if session.open_streams or called:
            self.idle_since = None
            if self.evictable and server.listener is not None:
                server.listener.set_idle(self, False)
            self.evictable = False
        elif self.idle_since is None:
            self.idle_since = now
            if server.listener is not None:
                server.listener.set_idle(self, True)
            self.evictable = True
        elif params.max_connection_idle and now - self.idle_since > params.max_connection_idle:
            self._close_gracefully("max_connection_idle")
            return
        # max_connection_age (+ grace)
        if self.max_age and now - self.born > self.max_age:
            if self.draining_since is None:
                self.draining_since = now
                self.goaway()
            elif (
                params.max_connection_age_grace
                and now - self.draining_since > params.max_connection_age_grace
            ):
                self.close()
                return
        # keepalive: ping a client silent for `time`, close it when the ping is not answered
        if session.ping_outstanding:
            if now - self.ping_sent > server.ping_timeout:
                self._end("keepalive_timeout", "it did not answer a keepalive ping")
        elif now - self.last_read > server.ping_time and session.ping():
            self.ping_sent = now
            self.flush()

    def edge_evict(self) -> bool:
        """Closed to make room for a new connection (max_connections) when it has no call in
        progress; ``False`` (kept) otherwise."""
        if self.session is not None and self.session.open_streams:
            self.evictable = False
            return False
        self._close_gracefully("max_connections")
        return True

    def _close_gracefully(self, reason: str) -> None:
        if self.session is not None and not self.closed:
            self.session.terminate(reason)
            self.flush()
        self.close()

    def _end(self, reason: str, message: str) -> None:
        """Close the connection because a limit was passed: counted and logged."""
        self.server.refused(reason)
        self.server.log_refusal(f"closed the connection from {self._peer()}: {message}", reason)
        if self.session is not None and not self.closed:
            self.session.terminate(reason)
            self.flush()
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.abort()
        self.server.connections.discard(self)

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
        return peer_address(self.transport.get_extra_info("peername") if self.transport else None)


class NativeGRPCServer:
    """The gRPC side of one ``otlp`` receiver, served on the event loop."""

    def __init__(
        self,
        receiver: OTLPReceiver,
        config: GRPCServerConfig,
        native: Any,
        auth: ServerAuth | None = None,
    ) -> None:
        self.receiver = receiver
        self.config = config
        self.native = native
        self.auth = auth
        self.max_message = config.max_recv_msg_size_mib << 20
        self.max_buffered = max(MAX_BUFFERED, self.max_message + 5)
        keepalive = config.keepalive
        # grpc-go's defaults for durations left at 0
        self.ping_time = keepalive.server_parameters.time or 7200.0
        self.ping_timeout = keepalive.server_parameters.timeout or 20.0
        self.ping_min_time = keepalive.enforcement_policy.min_time or 300.0
        self.connections: set[_Connection] = set()
        self.closing = False
        self.listener: Listener | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # set by start
        self._calls: set[asyncio.Task[None]] = set()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop or asyncio.get_running_loop()

    def spawn(self, coro: Any) -> None:
        """Run a call's coroutine in a task of its own, kept in ``_calls`` until it ends: the
        coroutine calls :meth:`ended` as its last step (a done callback instead would take one
        more turn of the loop a call, an ``epoll_wait`` and a callback, once the answer left)."""
        self._calls.add((self._loop or asyncio.get_running_loop()).create_task(coro))

    def ended(self) -> None:
        """The running call's task is over (the last step of a coroutine given to
        :meth:`spawn`)."""
        self._calls.discard(asyncio.current_task(self.loop))

    def refused(self, reason: str, n: int = 1) -> None:
        """Count a call (or connection) refused before it reached the pipeline:
        ``too_large``, ``bad_framing``, ``unsupported_encoding``, ``unimplemented``,
        ``not_grpc``, ``busy`` (unfinished request data over a bound), ``cancelled`` (reset by
        the client before it was taken), ``header_too_large``, ``read_timeout``,
        ``read_header_timeout``, ``write_timeout``, ``handshake_timeout``,
        ``keepalive_timeout``, ``too_many_resets``, ``too_many_pings``, and the listener's
        ``max_connections``, ``evicted_idle``, ``fd_reserve``, ``fd_exhausted``,
        ``accept_error``, ``handshake``
        (``unauthenticated`` is counted by the :class:`~pipeline.ServerAuth`)."""
        self.receiver.settings.telemetry.refused_request("grpc", reason, n)

    def log_refusal(self, message: str, kind: str = "") -> None:
        """A warning, at most one a second per kind (with the count of those not logged)."""
        self.receiver.settings.log_limited(
            logging.WARNING, "%s", message, key=f"grpc refusal {kind}"
        )

    def _ssl(self) -> ssl.SSLContext | None:
        if self.config.tls is None:
            return None
        # gRPC clients require HTTP/2 negotiated by ALPN
        return server_ssl_context(self.config.tls, alpn=["h2"])

    async def start(self) -> None:
        # kept: asyncio.get_running_loop() costs a getpid() system call per request
        self._loop = asyncio.get_running_loop()
        cfg = self.config
        settings = self.receiver.settings
        listener = Listener(
            cfg.endpoint,
            lambda: _Connection(self),
            refused=self.refused,
            log_limited=lambda level, msg, *args, key=None, extra=None: settings.log_limited(
                level, msg, *args, key=key, extra=extra
            ),
            ssl=self._ssl(),
            max_connections=cfg.max_connections,
            handshake_timeout=cfg.handshake_timeout,
            tick=sweep_tick(
                cfg.handshake_timeout,
                cfg.read_header_timeout,
                cfg.read_timeout,
                cfg.write_timeout,
                cfg.keepalive.server_parameters.max_connection_idle,
                cfg.keepalive.server_parameters.max_connection_age,
                self.ping_timeout,
            ),
        )
        await listener.start()
        self.listener = listener
        settings.logger.info(
            "OTLP/gRPC listening", extra={"endpoint": self.config.endpoint, "server": "native"}
        )

    async def stop(self, grace: float = 10.0) -> None:
        """Stop taking calls: a GOAWAY on every connection, the calls in progress answered
        (waiting at most ``grace`` seconds), then the connections closed."""
        if self.listener is None:
            return
        listener, self.listener = self.listener, None
        self.closing = True
        listener.close()
        for conn in list(self.connections):
            conn.goaway()
        if self._calls:
            await asyncio.wait(set(self._calls), timeout=grace)
        for task in list(self._calls):
            task.cancel()
        if self._calls:
            await asyncio.gather(*self._calls, return_exceptions=True)
            self._calls.clear()  # a task cancelled before its first step never said it ended
        # let the last answers reach the sockets, then close what is left
        for conn in list(self.connections):
            conn.flush()
        await asyncio.sleep(0)
        for conn in list(self.connections):
            conn.close()
