"""The ``mcp`` SDK (2.x) client and server with the SDK's own tracing, over stdio and over
streamable HTTP; ``openinference`` adds OpenInference's MCP instrumentation to both sides.

Sources: ``mcp_stdio``, ``mcp_http``, ``mcp_openinference`` (stdio), ``mcp_openllmetry``
(stdio, OpenLLMetry's ``opentelemetry-instrumentation-mcp``, which works with ``mcp`` 1.x only:
recorded from a separate environment with ``mcp<2``, not run live by the tests; ``mcp`` 1.x
itself emits no spans). The server runs in a
subprocess (``mcp_server.py``) writing its spans to a file; the recorded request holds the
client's and the server's spans (one trace: the SDK carries the context in ``_meta``).
Scenarios: ``success`` (add), ``tool_error`` (divide by 0), ``tool_timeout`` (lookup),
``slow_tool`` (slow), ``unknown_tool`` (a tool the server does not have).
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from typing import Any

import httpx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.agent_sources._otel import (
    SPANS_FILE_ENV,
    global_capture,
    merge,
    read_span_file,
    to_request,
)
from tests.support import free_port

SOURCES = ("mcp_stdio", "mcp_http", "mcp_openinference", "mcp_openllmetry")
SCENARIOS = ("success", "tool_error", "tool_timeout", "slow_tool", "unknown_tool")
CALLS: dict[str, tuple[str, dict[str, Any]]] = {
    "success": ("add", {"a": 1, "b": 2}),
    "tool_error": ("divide", {"a": 1, "b": 0}),
    "tool_timeout": ("lookup", {"key": "k"}),
    "slow_tool": ("slow", {"x": 1}),
    "unknown_tool": ("nope", {}),
}
CLIENT_SERVICE = "mcp-client-app"
_instrumented = False


def server_env(spans_file: str, instrument: str = "") -> dict[str, str]:
    env = dict(os.environ)
    env[SPANS_FILE_ENV] = spans_file
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    if instrument:
        env["AGENT_SOURCES_INSTRUMENT"] = instrument
    return env


def _instrument_client(tp: Any, instrument: str) -> None:
    global _instrumented
    if not _instrumented:
        if instrument == "openllmetry":
            from opentelemetry.instrumentation.mcp import McpInstrumentor

            McpInstrumentor().instrument(tracer_provider=tp)
        else:
            from openinference.instrumentation.mcp import MCPInstrumentor

            MCPInstrumentor().instrument(tracer_provider=tp)
        _instrumented = True


async def _calls(session: Any, scenario: str) -> None:
    await session.initialize()
    name, args = CALLS[scenario]
    try:
        await session.call_tool(name, args)
    except Exception:
        pass  # an unknown tool is a JSON-RPC error: recorded as is


async def run_stdio(scenario: str, instrument: str = "") -> ExportTraceServiceRequest:
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client
    from opentelemetry import trace

    exporter = global_capture(CLIENT_SERVICE)
    if instrument:
        _instrument_client(trace.get_tracer_provider(), instrument)
    with tempfile.TemporaryDirectory() as tmp:
        spans_file = os.path.join(tmp, "server.spans")
        params = StdioServerParameters(
            command=sys.executable,
            args=["-m", "tests.agent_sources.mcp_server", "stdio"],
            env=server_env(spans_file, instrument),
        )
        with open(os.devnull, "w") as errlog:  # noqa: ASYNC230 (opening /dev/null)
            async with stdio_client(params, errlog=errlog) as (r, w), ClientSession(r, w) as s:
                await _calls(s, scenario)
        await asyncio.sleep(0.2)  # the server flushes its last span as stdin closes
        return merge([to_request(exporter.get_finished_spans()), *read_span_file(spans_file)])


async def run_http(scenario: str) -> ExportTraceServiceRequest:
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    exporter = global_capture(CLIENT_SERVICE)
    with tempfile.TemporaryDirectory() as tmp:
        spans_file = os.path.join(tmp, "server.spans")
        port = free_port()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.agent_sources.mcp_server", "streamable-http", str(port),
            env=server_env(spans_file), stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        try:
            await wait_http(f"http://127.0.0.1:{port}/mcp")
            async with (
                streamable_http_client(f"http://127.0.0.1:{port}/mcp") as (r, w, *_),
                ClientSession(r, w) as session,
            ):
                await _calls(session, scenario)
        finally:
            proc.terminate()
            await proc.wait()
        return merge([to_request(exporter.get_finished_spans()), *read_span_file(spans_file)])


async def wait_http(url: str, within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    async with httpx.AsyncClient() as client:
        while True:
            try:
                await client.get(url, timeout=1.0)
                return
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)


async def run_source(source: str, scenario: str) -> ExportTraceServiceRequest:
    if source == "mcp_stdio":
        return await run_stdio(scenario)
    if source == "mcp_openinference":
        return await run_stdio(scenario, instrument="openinference")
    if source == "mcp_openllmetry":
        return await run_stdio(scenario, instrument="openllmetry")
    if source == "mcp_http":
        return await run_http(scenario)
    raise ValueError(source)


async def run(scenario: str) -> ExportTraceServiceRequest:
    return await run_source(os.environ.get("AGENT_SOURCE", "mcp_stdio"), scenario)
