"""pydantic-ai (its built-in OpenTelemetry instrumentation) with a scripted ``FunctionModel``,
calling the MCP server of ``mcp_tools_server.py`` over stdio through its ``MCPToolset`` (FastMCP's
client, on the ``mcp`` SDK, both traced): the multi-layer case, where one tool call is traced by
pydantic-ai's ``execute_tool`` span, FastMCP's ``tools/call`` span, the SDK's ``MCP send
tools/call`` span and the server's ``tools/call`` span in the server process.

Two agent runs of the agent ``helper``:

1. calls, in order: ``search`` (MCP, succeeds), ``broken`` (MCP, the tool raises), ``slow``
   (MCP, 0.3 s), ``local_add`` (a function tool), ``picky`` (a function tool raising
   ``ModelRetry`` the first time: a model-requested retry), ``wait`` (a function tool with a
   0.2 s timeout that takes 1 s), then answers: the run succeeds;
2. calls ``explode`` (a function tool raising ``RuntimeError``): the run fails.

``expected.py`` says what the agent metrics must say about these spans.

    OTLP_ENDPOINT=http://127.0.0.1:4318 python -m tests.agent_real.pydantic_mcp_app
    SPANS_OUT=agent.json SERVER_SPANS_OUT=server.json python -m tests.agent_real.pydantic_mcp_app
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

from tests.agent_real._otel import setup
from tests.support import ROOT

setup("agent-app")

from fastmcp.client.transports import StdioTransport  # noqa: E402
from pydantic_ai import Agent, ModelRetry  # noqa: E402
from pydantic_ai.mcp import MCPToolset  # noqa: E402
from pydantic_ai.messages import ModelResponse, TextPart, ToolCallPart  # noqa: E402
from pydantic_ai.models.function import AgentInfo, FunctionModel  # noqa: E402

CALLS = [
    ("search", {"q": "x"}),
    ("broken", {"q": "y"}),
    ("slow", {"q": "z"}),
    ("local_add", {"a": 1, "b": 2}),
    ("picky", {"n": 1}),
    ("wait", {"s": 1.0}),
]


def model(messages: list[Any], info: AgentInfo) -> ModelResponse:
    step = sum(1 for m in messages if m.kind == "response")
    first = messages[0].parts[0].content if messages and messages[0].parts else ""
    if first == "explode":
        if step == 0:
            return ModelResponse(parts=[ToolCallPart("explode", {}, tool_call_id="call_x")])
        return ModelResponse(parts=[TextPart("unreachable")])
    if step < len(CALLS):
        name, args = CALLS[step]
        return ModelResponse(parts=[ToolCallPart(name, args, tool_call_id=f"call_{step}")])
    return ModelResponse(parts=[TextPart("done")])


def build() -> Agent[None, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if os.environ.get("SERVER_SPANS_OUT"):
        env["SPANS_OUT"] = os.environ["SERVER_SPANS_OUT"]
    else:
        env.pop("SPANS_OUT", None)
    transport = StdioTransport(
        command=sys.executable,
        args=["-m", "tests.agent_real.mcp_tools_server"],
        env=env,
        cwd=str(ROOT),
    )
    agent = Agent(FunctionModel(model), toolsets=[MCPToolset(transport)], name="helper")
    retried = [0]

    @agent.tool_plain
    def local_add(a: int, b: int) -> int:
        return a + b

    @agent.tool_plain
    def picky(n: int) -> str:
        retried[0] += 1
        if retried[0] == 1:
            raise ModelRetry("try again with n=2")
        return "ok"

    @agent.tool_plain(timeout=0.2)
    async def wait(s: float) -> str:
        await asyncio.sleep(s)
        return "waited"

    @agent.tool_plain
    def explode() -> str:
        raise RuntimeError("tool exploded")

    return agent


async def main() -> None:
    Agent.instrument_all()
    agent = build()
    async with agent:
        result = await agent.run("go")
        print("run 1:", result.output)
        try:
            await agent.run("explode")
        except RuntimeError as exc:
            print("run 2 failed:", exc)


if __name__ == "__main__":
    asyncio.run(main())
