"""The A2A agent of the scenarios (``a2a-sdk`` 1.x, JSON-RPC over HTTP), run as a subprocess:
``python -m tests.agent_sources.a2a_server PORT``. Its spans go to the file named by
``AGENT_SOURCES_SPANS_FILE`` (a2a-sdk traces through the global tracer provider).

The agent answers ``ok``; a message ``fail`` makes it raise, ``slow`` makes it take 0.2 s.
"""

from __future__ import annotations

import asyncio
import sys

from tests.agent_sources._otel import install_file_tracing

SERVICE = "a2a-research-agent"
SLOW_SECONDS = 0.2


def main() -> None:
    tp = install_file_tracing(SERVICE)
    import uvicorn
    from a2a.helpers.proto_helpers import get_message_text, new_text_message
    from a2a.server.agent_execution.agent_executor import AgentExecutor
    from a2a.server.request_handlers import DefaultRequestHandlerV2
    from a2a.server.routes.agent_card_routes import create_agent_card_routes
    from a2a.server.routes.jsonrpc_routes import create_jsonrpc_routes
    from a2a.server.tasks.inmemory_task_store import InMemoryTaskStore
    from a2a.types.a2a_pb2 import AgentCapabilities, AgentCard, AgentInterface, AgentSkill
    from starlette.applications import Starlette

    port = int(sys.argv[1])

    class ResearchAgent(AgentExecutor):
        async def execute(self, context, event_queue):  # type: ignore[no-untyped-def]
            text = get_message_text(context.message) if context.message else ""
            if text == "fail":
                raise RuntimeError("research backend unavailable")
            if text == "slow":
                await asyncio.sleep(SLOW_SECONDS)
            await event_queue.enqueue_event(
                new_text_message("ok", context_id=context.context_id, task_id=context.task_id)
            )

        async def cancel(self, context, event_queue):  # type: ignore[no-untyped-def]
            raise NotImplementedError

    card = AgentCard(
        name="research_agent",
        description="answers research questions",
        version="1.0.0",
        supported_interfaces=[
            AgentInterface(url=f"http://127.0.0.1:{port}/", protocol_binding="JSONRPC")
        ],
        capabilities=AgentCapabilities(streaming=False),
        default_input_modes=["text/plain"],
        default_output_modes=["text/plain"],
        skills=[AgentSkill(id="research", name="research", description="research", tags=["r"])],
    )
    handler = DefaultRequestHandlerV2(ResearchAgent(), InMemoryTaskStore(), card)
    app = Starlette(
        routes=[*create_agent_card_routes(card), *create_jsonrpc_routes(handler, rpc_url="/")]
    )
    try:
        uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
    finally:
        if tp is not None:
            tp.shutdown()


if __name__ == "__main__":
    main()
