"""Serving an aiohttp application on a config endpoint (shared by the HTTP components)."""

from __future__ import annotations

import ssl

from aiohttp import web

from pipeline.configtypes import split_endpoint


async def serve(
    app: web.Application, endpoint: str, ssl_context: ssl.SSLContext | None = None
) -> web.AppRunner:
    """Start ``app`` on ``host:port``; returns the runner (``await runner.cleanup()`` to stop).

    Access logs are off (one line per request is not a lifecycle event); a bind failure leaves
    nothing behind and raises ``OSError``.
    """
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    host, port = split_endpoint(endpoint)
    site = web.TCPSite(runner, host or None, port, ssl_context=ssl_context)
    try:
        await site.start()
    except OSError:
        await runner.cleanup()
        raise
    return runner
