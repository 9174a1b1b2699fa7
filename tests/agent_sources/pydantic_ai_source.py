"""pydantic-ai with its built-in GenAI instrumentation, the model scripted by ``FunctionModel``.

Agent ``calculator``; tools ``add`` (succeeds), ``divide`` (raises ``ZeroDivisionError``),
``lookup`` (its backend call times out: ``TimeoutError``), ``flaky`` (raises ``ModelRetry``
once), ``slow`` (sleeps ``SLOW_SECONDS``, succeeds). Each scenario makes the model call one
tool, then answer.
"""

from __future__ import annotations

import asyncio
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.agent_sources._otel import capture, merge, to_request

SCENARIOS = ("success", "tool_error", "tool_timeout", "model_retry", "failed_run", "slow_tool")
AGENT = "calculator"
SLOW_SECONDS = 0.2
TOOL_OF = {
    "success": ("add", {"a": 1, "b": 2}),
    "tool_error": ("divide", {"a": 1, "b": 0}),
    "tool_timeout": ("lookup", {"key": "k"}),
    "model_retry": ("flaky", {"x": 1}),
    "failed_run": None,
    "slow_tool": ("slow", {"x": 1}),
}
CALLS = {"model_retry": 2}  # tool calls the model makes (the retried tool is called again)


def build_agent(tp: Any, scenario: str, toolsets: list[Any] | None = None) -> Any:
    from pydantic_ai import Agent, ModelRetry
    from pydantic_ai.capabilities.instrumentation import Instrumentation
    from pydantic_ai.messages import ModelResponse, TextPart, ToolCallPart, ToolReturnPart
    from pydantic_ai.models.function import AgentInfo, FunctionModel
    from pydantic_ai.models.instrumented import InstrumentationSettings

    call = TOOL_OF[scenario]

    def model(messages: list[Any], info: AgentInfo) -> ModelResponse:
        if call is None:
            raise RuntimeError("model backend unavailable")
        calls = sum(isinstance(p, ToolCallPart) for m in messages for p in getattr(m, "parts", ()))
        if calls < CALLS.get(scenario, 1):
            return ModelResponse(parts=[ToolCallPart(call[0], dict(call[1]))])
        returned = [
            p for m in messages for p in getattr(m, "parts", ()) if isinstance(p, ToolReturnPart)
        ]
        return ModelResponse(parts=[TextPart(f"done: {returned[-1].content if returned else ''}")])

    agent = Agent(
        FunctionModel(model),
        name=AGENT,
        capabilities=[Instrumentation(settings=InstrumentationSettings(tracer_provider=tp))],
        toolsets=toolsets or [],
        retries=2,
    )
    if toolsets:
        return agent
    tries = {"flaky": 0}

    @agent.tool_plain
    def add(a: int, b: int) -> int:
        """Adds."""
        return a + b

    @agent.tool_plain
    def divide(a: int, b: int) -> float:
        """Divides."""
        return a / b

    @agent.tool_plain
    async def lookup(key: str) -> str:
        """Looks a key up in a backend that does not answer in time."""
        await asyncio.wait_for(asyncio.sleep(2), timeout=0.05)
        return key

    @agent.tool_plain
    def flaky(x: int) -> int:
        """Asks the model to retry once."""
        tries["flaky"] += 1
        if tries["flaky"] == 1:
            raise ModelRetry("try again with the same x")
        return x

    @agent.tool_plain
    async def slow(x: int) -> int:
        """Takes its time."""
        await asyncio.sleep(SLOW_SECONDS)
        return x

    return agent


async def run(scenario: str) -> ExportTraceServiceRequest:
    with capture("pydantic-ai-app") as (tp, exporter):
        agent = build_agent(tp, scenario)
        try:
            await agent.run("compute")
        except Exception:
            pass  # the failing scenarios fail the run: that is what is recorded
        return merge([to_request(exporter.get_finished_spans())])


def main_check() -> None:  # pragma: no cover - a manual look
    for s in SCENARIOS:
        req = asyncio.run(run(s))
        print(s, [sp.name for rs in req.resource_spans for ss in rs.scope_spans for sp in ss.spans])


if __name__ == "__main__":  # pragma: no cover
    main_check()
