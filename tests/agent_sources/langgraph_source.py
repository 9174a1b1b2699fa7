"""A LangGraph ReAct agent (``create_react_agent``) with a scripted fake chat model, under
OpenInference's (``langgraph_openinference``) or OpenLLMetry's (``langgraph_openllmetry``)
LangChain instrumentation. The instrumentations patch LangChain globally: one source per
process (``record.py`` runs each in its own).

Agent ``calc_agent``; scenarios: ``success`` (add), ``tool_error`` (divide raises; the error
propagates out of LangGraph's ToolNode and fails the run), ``tool_timeout`` (lookup raises
``TimeoutError``), ``failed_run`` (the model raises), ``slow_tool`` (sleeps 0.2 s).
"""

from __future__ import annotations

import asyncio
import os
import warnings
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.agent_sources._otel import global_capture, merge, to_request

SOURCES = ("langgraph_openinference", "langgraph_openllmetry")
SCENARIOS = ("success", "tool_error", "tool_timeout", "failed_run", "slow_tool")
AGENT = "calc_agent"
SLOW_SECONDS = 0.2
CALLS: dict[str, tuple[str, dict[str, Any]] | None] = {
    "success": ("add", {"a": 1, "b": 2}),
    "tool_error": ("divide", {"a": 1, "b": 0}),
    "tool_timeout": ("lookup", {"key": "k"}),
    "failed_run": None,
    "slow_tool": ("slow", {"x": 1}),
}
_instrumented: dict[str, Any] = {}


def _instrument(source: str, tp: Any) -> None:
    if source in _instrumented:
        return
    if source == "langgraph_openinference":
        from openinference.instrumentation.langchain import LangChainInstrumentor

        inst: Any = LangChainInstrumentor()
    else:
        from opentelemetry.instrumentation.langchain import LangchainInstrumentor

        inst = LangchainInstrumentor()
    inst.instrument(tracer_provider=tp)
    _instrumented[source] = inst


def build_agent(scenario: str) -> Any:
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage
    from langchain_core.tools import tool
    from langgraph.prebuilt import create_react_agent

    call = CALLS[scenario]

    class ScriptedModel(GenericFakeChatModel):
        def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
            return self

    class BrokenModel(ScriptedModel):
        def _generate(self, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("model backend unavailable")

    usage = {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15}
    messages = []
    if call is not None:
        messages.append(
            AIMessage(
                content="",
                tool_calls=[{"name": call[0], "args": call[1], "id": "call_1"}],
                usage_metadata=usage,  # type: ignore[arg-type]
            )
        )
    messages.append(AIMessage(content="done", usage_metadata=usage))  # type: ignore[arg-type]

    @tool
    def add(a: int, b: int) -> int:
        """Adds two numbers."""
        return a + b

    @tool
    def divide(a: int, b: int) -> float:
        """Divides a by b."""
        return a / b

    @tool
    async def lookup(key: str) -> str:
        """Looks a key up in a backend that does not answer in time."""
        await asyncio.wait_for(asyncio.sleep(2), timeout=0.05)
        return key

    @tool
    async def slow(x: int) -> int:
        """Takes its time."""
        await asyncio.sleep(SLOW_SECONDS)
        return x

    model_class = BrokenModel if call is None else ScriptedModel
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return create_react_agent(
            model_class(messages=iter(messages)), [add, divide, lookup, slow], name=AGENT
        )


async def run_source(source: str, scenario: str) -> ExportTraceServiceRequest:
    from opentelemetry import trace

    if _instrumented and source not in _instrumented:
        raise RuntimeError("one LangGraph source per process (the instrumentations are global)")
    exporter = global_capture(f"{source.replace('_', '-')}-app")
    _instrument(source, trace.get_tracer_provider())
    try:
        agent = build_agent(scenario)
        await agent.ainvoke({"messages": [("user", "compute")]})
    except Exception:
        pass  # the failing scenarios fail the run: that is what is recorded
    return merge([to_request(exporter.get_finished_spans())])


async def run(scenario: str) -> ExportTraceServiceRequest:
    return await run_source(os.environ.get("AGENT_SOURCE", SOURCES[0]), scenario)
