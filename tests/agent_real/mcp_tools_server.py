"""An MCP server over stdio (the ``mcp`` SDK's ``MCPServer``, its built-in tracing on) with
tools of known behaviour: ``search`` succeeds, ``broken`` raises, ``slow`` takes 0.3 s.
"""

from __future__ import annotations

import asyncio

from mcp.server.mcpserver import MCPServer

from tests.agent_real._otel import setup

setup("docs-mcp")
app = MCPServer("docs")


@app.tool()
def search(q: str) -> str:
    return f"found {q}"


@app.tool()
def broken(q: str) -> str:
    raise ValueError("index corrupt")


@app.tool()
async def slow(q: str) -> str:
    await asyncio.sleep(0.3)
    return "slow"


if __name__ == "__main__":
    app.run("stdio")
