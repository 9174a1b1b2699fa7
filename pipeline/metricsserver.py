"""The HTTP endpoint of the gateway's own metrics (``service.telemetry.metrics``).

It serves one resource (``GET``/``HEAD`` on ``/metrics``), so it is a small HTTP/1.1 server on
asyncio streams instead of an aiohttp application: a gateway whose components need no HTTP
(an OTLP/gRPC-only pipeline) then never imports aiohttp, about 10 MiB of RSS. It binds like
aiohttp's ``TCPSite`` (``loop.create_server``: an empty host listens on every interface), keeps
connections alive as HTTP/1.1 allows, and answers as aiohttp's router did: 404 for other paths,
405 for other methods, 400 (and closes) for what it cannot parse or an HTTP/1.1 request
without ``Host``. Reads are bounded (request
head size, body size, an idle timeout), so a slow or hostile client costs one small coroutine;
connections are accepted by a :class:`pipeline.netedge.Listener` (64 at most, a request head
within 10 s, the response written within 30 s) that may use the descriptors data endpoints
leave free, so the endpoint stays reachable when they are flooded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable
from email.utils import formatdate
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote, urlsplit

from pipeline.configtypes import Seconds
from pipeline.netedge import ControlHTTPServerLimits, Listener, http_edge, serve_http
from pipeline.ratelimit import LogLimiter
from pipeline.telemetry import LOGGER_NAME

log = logging.getLogger(f"{LOGGER_NAME}.telemetry")

# the request line and headers together (aiohttp allows 8190 bytes per line)
MAX_HEAD_BYTES = 32 * 1024
MAX_BODY_BYTES = 64 * 1024  # a scrape has no body; a small one is read and ignored
IDLE_TIMEOUT = 75.0  # seconds a request may take to arrive, or a response to be read: aiohttp's

# () -> (body, content type)
Handler = Callable[[], Awaitable[tuple[bytes, str]]]


class _BadRequest(Exception):
    def __init__(self, status: HTTPStatus) -> None:
        super().__init__(status.phrase)
        self.status = status


class MetricsServer:
    """Serves ``handler()`` at ``path``; ``await start(endpoint)``, ``await close()``."""

    def __init__(
        self,
        path: str,
        handler: Handler,
        refused: Any = None,
        limits: ControlHTTPServerLimits | None = None,
    ) -> None:
        self.path = path
        self.handler = handler
        self.refused = refused or (lambda reason: None)
        self.limits = limits or ControlHTTPServerLimits(idle_timeout=Seconds(IDLE_TIMEOUT))
        self._server: Listener | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._limiter = LogLimiter()

    def _log_limited(self, level: int, msg: str, *args: object, **kw: Any) -> bool:
        return self._limiter.log(log, level, msg, *args, **kw)

    async def start(self, endpoint: str, ssl_context: ssl.SSLContext | None = None) -> None:
        """Listen on ``host:port`` (HTTPS with ``ssl_context``); a bind failure raises
        ``OSError`` and leaves nothing open."""

        def protocol() -> asyncio.Protocol:
            reader = asyncio.StreamReader(limit=MAX_HEAD_BYTES)
            return asyncio.StreamReaderProtocol(reader, self._serve)

        self._server = await serve_http(
            endpoint,
            protocol,
            self.limits,
            refused=self.refused,
            log_limited=self._log_limited,
            ssl=ssl_context,
            reserved=True,
        )

    @property
    def sockets(self) -> list[tuple[str, int]]:
        """The bound addresses (host, port)."""
        if self._server is None:
            return []
        return [s.getsockname()[:2] for s in self._server.sockets]

    async def close(self) -> None:
        """Stop listening and close every open connection. Safe to call twice."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            while await self._one_request(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        except asyncio.CancelledError:
            pass  # the server is closing
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await writer.wait_closed()

    async def _one_request(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Answer one request; ``True`` to keep the connection for the next."""
        try:
            # (asyncio.timeout, not wait_for: on Python 3.11 wait_for answers the read instead
            # of a cancellation that arrives in the turn the read ends in; close() cancels the
            # connection and waited for it while it served a keep-alive client on)
            async with asyncio.timeout(IDLE_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if exc.partial.strip():
                await self._respond(writer, HTTPStatus.BAD_REQUEST, keep_alive=False)
            return False
        except asyncio.LimitOverrunError:
            await self._respond(
                writer, HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, keep_alive=False
            )
            return False
        edge = http_edge(writer.transport, self._server)
        if edge is not None:
            edge.started()
        try:
            return await self._answer(reader, writer, head)
        finally:
            if edge is not None:
                edge.ended()

    async def _answer(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes
    ) -> bool:
        try:
            method, target, version, headers = _parse_head(head)
            length = _content_length(headers)
        except _BadRequest as exc:
            await self._respond(writer, exc.status, keep_alive=False)
            return False
        if length:
            async with asyncio.timeout(IDLE_TIMEOUT):
                await reader.readexactly(length)
        connection = headers.get("connection", "").lower()
        if version == "HTTP/1.1":
            keep_alive = "close" not in connection
        else:
            keep_alive = "keep-alive" in connection
        if unquote(urlsplit(target).path) != self.path:
            await self._respond(writer, HTTPStatus.NOT_FOUND, keep_alive=keep_alive)
        elif method not in ("GET", "HEAD"):
            await self._respond(
                writer,
                HTTPStatus.METHOD_NOT_ALLOWED,
                keep_alive=keep_alive,
                extra={"Allow": "GET,HEAD"},
            )
        else:
            try:
                body, content_type = await self.handler()
            except Exception:
                log.exception("collecting the gateway's own metrics failed")
                await self._respond(writer, HTTPStatus.INTERNAL_SERVER_ERROR, keep_alive=False)
                return False
            await self._respond(
                writer,
                HTTPStatus.OK,
                keep_alive=keep_alive,
                body=body,
                content_type=content_type,
                send_body=method != "HEAD",
            )
        return keep_alive

    @staticmethod
    async def _respond(
        writer: asyncio.StreamWriter,
        status: HTTPStatus,
        *,
        keep_alive: bool,
        body: bytes | None = None,
        content_type: str = "text/plain; charset=utf-8",
        send_body: bool = True,
        extra: dict[str, str] | None = None,
    ) -> None:
        if body is None:
            body = f"{status.value}: {status.phrase}".encode()
        lines = [
            f"HTTP/1.1 {status.value} {status.phrase}",
            f"Content-Type: {content_type}",
            f"Content-Length: {len(body)}",
            f"Date: {formatdate(usegmt=True)}",
            "Connection: keep-alive" if keep_alive else "Connection: close",
        ]
        lines.extend(f"{k}: {v}" for k, v in (extra or {}).items())
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        if send_body:
            writer.write(body)
        async with asyncio.timeout(IDLE_TIMEOUT):  # a client that never reads
            await writer.drain()


def _parse_head(head: bytes) -> tuple[str, str, str, dict[str, str]]:
    """``(method, target, version, headers)`` of a request head (headers lower-cased)."""
    lines = head.lstrip(b"\r\n").split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3:
        raise _BadRequest(HTTPStatus.BAD_REQUEST)
    method, target, version = (p.decode("latin-1") for p in parts)
    if version not in ("HTTP/1.0", "HTTP/1.1") or not method.isalpha() or not target:
        raise _BadRequest(HTTPStatus.BAD_REQUEST)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(b":")
        if not sep or not name or name != name.strip():
            raise _BadRequest(HTTPStatus.BAD_REQUEST)
        key = name.decode("latin-1").lower()
        text = value.strip().decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    if version == "HTTP/1.1" and "host" not in headers:  # RFC 9112 3.2 (aiohttp's answer too)
        raise _BadRequest(HTTPStatus.BAD_REQUEST)
    return method, target, version, headers


def _content_length(headers: dict[str, str]) -> int:
    if "transfer-encoding" in headers:  # a chunked request body: nothing here takes one
        raise _BadRequest(HTTPStatus.NOT_IMPLEMENTED)
    raw = headers.get("content-length")
    if raw is None:
        return 0
    if not raw.isdigit():
        raise _BadRequest(HTTPStatus.BAD_REQUEST)
    length = int(raw)
    if length > MAX_BODY_BYTES:
        raise _BadRequest(HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
    return length
