"""The MCP server of the scenarios (``mcp`` 2.x ``MCPServer``, 1.x ``FastMCP``), run as a
subprocess:
``python -m tests.agent_sources.mcp_server stdio`` or ``... streamable-http PORT``.

Its spans go to the file named by ``AGENT_SOURCES_SPANS_FILE`` (the mcp SDK traces itself
through the global tracer provider); ``AGENT_SOURCES_INSTRUMENT=openinference`` (or
``openllmetry``) also installs OpenInference's (OpenLLMetry's) MCP instrumentation. Tools:
``add``, ``divide`` (raises on b=0), ``lookup`` (its backend times out), ``flaky`` (fails on
its first call), ``slow`` (sleeps 0.2 s).
"""

from __future__ import annotations

import asyncio
import os
import sys

from tests.agent_sources._otel import install_file_tracing

SERVICE = "mcp-calc-server"
SLOW_SECONDS = 0.2


def main() -> None:
    tp = install_file_tracing(SERVICE)
    instrument = os.environ.get("AGENT_SOURCES_INSTRUMENT", "")
    if tp is not None and instrument == "openinference":
        from openinference.instrumentation.mcp import MCPInstrumentor

        MCPInstrumentor().instrument(tracer_provider=tp)
    if tp is not None and instrument == "openllmetry":
        from opentelemetry.instrumentation.mcp import McpInstrumentor

        McpInstrumentor().instrument(tracer_provider=tp)
    try:
        from mcp.server.mcpserver import MCPServer
    except ImportError:  # mcp 1.x (for OpenLLMetry's MCP instrumentation, recorded apart)
        from mcp.server.fastmcp import FastMCP as MCPServer  # type: ignore[no-redef]

    transport = sys.argv[1] if len(sys.argv) > 1 else "stdio"
    port = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    app = MCPServer("calc")
    calls = {"flaky": 0}

    @app.tool()
    def add(a: int, b: int) -> int:
        """Adds two numbers."""
        return a + b

    @app.tool()
    def divide(a: int, b: int) -> float:
        """Divides a by b."""
        return a / b

    @app.tool()
    async def lookup(key: str) -> str:
        """Looks a key up in a backend that does not answer in time."""
        await asyncio.wait_for(asyncio.sleep(2), timeout=0.05)
        return key

    @app.tool()
    def flaky(x: int) -> int:
        """Fails on its first call."""
        calls["flaky"] += 1
        if calls["flaky"] == 1:
            raise ValueError("flaky backend, try again")
        return x

    @app.tool()
    async def slow(x: int) -> int:
        """Takes its time."""
        await asyncio.sleep(SLOW_SECONDS)
        return x

    try:
        if transport == "stdio":
            app.run()
        else:
            app.run(transport="streamable-http", host="127.0.0.1", port=port)
    finally:
        if tp is not None:
            tp.shutdown()


if __name__ == "__main__":
    main()
