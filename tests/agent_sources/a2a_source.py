"""``a2a-sdk`` client and server with the SDK's own telemetry (``a2a-sdk[telemetry]``): spans
named after its Python functions, without attributes; it does not carry the trace context
from client to server, so the two sides are separate traces.

Scenarios: ``success`` (the agent answers), ``failed_run`` (the agent raises), ``slow_tool``
(the agent takes 0.2 s).
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.agent_sources._otel import global_capture, merge, read_span_file, to_request
from tests.agent_sources.mcp_source import server_env, wait_http
from tests.support import free_port

SCENARIOS = ("success", "failed_run", "slow_tool")
TEXT = {"success": "hello", "failed_run": "fail", "slow_tool": "slow"}


async def run(scenario: str) -> ExportTraceServiceRequest:
    from a2a.client.client_factory import create_client
    from a2a.helpers.proto_helpers import new_text_message
    from a2a.types.a2a_pb2 import Role, SendMessageRequest

    exporter = global_capture("a2a-planner-app")
    with tempfile.TemporaryDirectory() as tmp:
        spans_file = os.path.join(tmp, "server.spans")
        port = free_port()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.agent_sources.a2a_server", str(port),
            env=server_env(spans_file), stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        try:
            url = f"http://127.0.0.1:{port}"
            await wait_http(f"{url}/.well-known/agent-card.json")
            client = await create_client(url)
            request = SendMessageRequest(
                message=new_text_message(TEXT[scenario], role=Role.ROLE_USER)
            )
            try:
                async for _ in client.send_message(request):
                    pass
            except Exception:
                pass  # the failing scenario: recorded as is
            await client.close()
        finally:
            proc.terminate()
            await proc.wait()
        return merge([to_request(exporter.get_finished_spans()), *read_span_file(spans_file)])
