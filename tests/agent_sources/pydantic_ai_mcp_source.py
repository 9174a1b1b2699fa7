"""pydantic-ai calling the scenarios' MCP server over stdio (``MCPToolset``): the multi-layer
case. One tool call is traced by pydantic-ai's ``execute_tool`` span, the mcp SDK's client
span (``MCP send tools/call``) and, in the server process, the SDK's server span.

Scenarios as in ``pydantic_ai_source``; MCP tool errors propagate (``tool_error_behavior=
"error"``) except in ``model_retry``, where the server's first failure becomes a
``ModelRetry`` (``"retry"``, pydantic-ai's default) and the model calls the tool again.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from pathlib import Path

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.agent_sources import pydantic_ai_source
from tests.agent_sources._otel import global_capture, merge, read_span_file, to_request
from tests.agent_sources.mcp_source import server_env

SCENARIOS = pydantic_ai_source.SCENARIOS


async def run(scenario: str) -> ExportTraceServiceRequest:
    from fastmcp.client.transports import StdioTransport
    from opentelemetry import trace
    from pydantic_ai.mcp import MCPToolset

    exporter = global_capture("pydantic-ai-mcp-app")
    with tempfile.TemporaryDirectory() as tmp:
        spans_file = os.path.join(tmp, "server.spans")
        transport = StdioTransport(
            command=sys.executable,
            args=["-m", "tests.agent_sources.mcp_server", "stdio"],
            env=server_env(spans_file),
            log_file=Path(tmp) / "server.log",
        )
        toolset = MCPToolset(
            transport,
            tool_error_behavior="retry" if scenario == "model_retry" else "error",
        )
        agent = pydantic_ai_source.build_agent(
            trace.get_tracer_provider(), scenario, toolsets=[toolset]
        )
        try:
            async with agent:
                await agent.run("compute")
        except Exception:
            pass  # the failing scenarios fail the run: that is what is recorded
        await asyncio.sleep(0.2)
        return merge([to_request(exporter.get_finished_spans()), *read_span_file(spans_file)])
