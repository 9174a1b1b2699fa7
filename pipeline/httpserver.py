"""Serving an aiohttp application on a config endpoint (shared by the HTTP components), with
the limits of :mod:`pipeline.netedge` (connections, timeouts, the unfinished-data budget)."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from pipeline.netedge import HTTPServerLimits, Listener, http_edge, serve_http

if TYPE_CHECKING:
    from pipeline.component import CreateSettings

log = logging.getLogger("pipeline.httpserver")

_LISTENER = web.AppKey("pipeline.netedge.listener", list)


class Serving:
    """An application being served: ``await cleanup()`` to stop."""

    def __init__(self, runner: web.AppRunner, listener: Listener) -> None:
        self.runner = runner
        self.listener = listener

    async def cleanup(self) -> None:
        self.listener.close()
        await self.runner.cleanup()


@web.middleware
async def _edge_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    holder = request.app[_LISTENER]
    edge = http_edge(request.transport, holder[0] if holder else None)
    if edge is None:
        return await handler(request)
    edge.started()
    if not request.body_exists:
        edge.read_done()
    try:
        return await handler(request)
    finally:
        edge.ended()


def body_read(request: web.Request) -> None:
    """Tell the edge the request's body has been read (it no longer counts as unfinished data,
    and ``read_timeout`` no longer applies to it)."""
    holder = request.app.get(_LISTENER)
    edge = http_edge(request.transport, holder[0] if holder else None)
    if edge is not None:
        edge.read_done()


def response_streams(request: web.Request) -> None:
    """Tell the edge the handler streams its response (server-sent events): the connection
    stays as long as the client reads; ``write_timeout`` bounds how long a write may wait for
    the client instead of the whole response."""
    holder = request.app.get(_LISTENER)
    edge = http_edge(request.transport, holder[0] if holder else None)
    if edge is not None:
        edge.streaming()


def _log_with(logger: logging.Logger | logging.LoggerAdapter[Any]) -> Callable[..., Any]:
    from pipeline.ratelimit import LogLimiter

    limiter = LogLimiter()

    def log_limited(level: int, msg: str, *args: object, **kw: Any) -> bool:
        return limiter.log(logger, level, msg, *args, **kw)

    return log_limited


async def serve(
    app: web.Application,
    endpoint: str,
    ssl_context: ssl.SSLContext | None = None,
    *,
    limits: HTTPServerLimits | None = None,
    settings: CreateSettings | None = None,
    reserved: bool = False,
) -> Serving:
    """Start ``app`` on ``host:port``; returns what ``await cleanup()`` stops.

    ``limits`` (default :class:`HTTPServerLimits`) bound connections and their timeouts; what
    they refuse is counted in the component's ``refused_request("http", reason)`` and logged
    through its ``log_limited`` (``settings``: the component serving; without it nothing is
    counted); ``reserved`` marks a control endpoint (health, metrics), which may use the descriptors
    data endpoints leave free. Access logs are off (one line per request is not a lifecycle
    event); a bind failure leaves nothing behind and raises ``OSError``.
    """
    limits = limits or HTTPServerLimits()
    holder: list[Listener] = []
    app[_LISTENER] = holder
    app.middlewares.append(_edge_middleware)
    runner = web.AppRunner(
        app,
        access_log=None,
        handle_signals=False,
        keepalive_timeout=limits.idle_timeout or 365 * 86400.0,
    )
    await runner.setup()
    assert runner.server is not None
    try:
        listener = await serve_http(
            endpoint,
            runner.server,
            limits,
            refused=(
                (lambda reason: settings.telemetry.refused_request("http", reason))
                if settings is not None
                else (lambda reason: None)
            ),
            log_limited=settings.log_limited if settings is not None else _log_with(log),
            ssl=ssl_context,
            reserved=reserved,
        )
    except OSError:
        await runner.cleanup()
        raise
    holder.append(listener)
    return Serving(runner, listener)
