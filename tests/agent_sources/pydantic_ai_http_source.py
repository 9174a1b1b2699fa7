"""pydantic-ai served over HTTP: the agent of ``pydantic_ai_source`` run by a Starlette
endpoint, the app traced by OpenTelemetry's Starlette (ASGI) instrumentation and driven offline
by Starlette's ``TestClient``. The HTTP server span (``POST /compute``) is the trace's root and
the agent run (``invoke_agent calculator``) sits below it; the endpoint takes
``SERVER_WORK_SECONDS`` after the run (it formats the answer), so the root lasts visibly longer
than the execution.

Scenarios: ``success``, ``failed_run`` (the model raises: the endpoint answers 500),
``slow_tool`` (the tool sleeps ``SLOW_SECONDS``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.agent_sources._otel import capture, merge, to_request
from tests.agent_sources.pydantic_ai_source import build_agent

SCENARIOS = ("success", "failed_run", "slow_tool")
SERVER_WORK_SECONDS = 0.1
ROUTE = "/compute"


def app_for(tp: Any, scenario: str) -> Any:
    """The Starlette app serving the agent, instrumented with ``tp``."""
    from opentelemetry.instrumentation.starlette import StarletteInstrumentor
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    agent = build_agent(tp, scenario)

    async def compute(request: Request) -> JSONResponse:
        try:
            result = await agent.run("compute")
        except Exception as e:
            return JSONResponse({"error": type(e).__name__}, status_code=500)
        await asyncio.sleep(SERVER_WORK_SECONDS)  # the answer formatted
        return JSONResponse({"answer": str(result.output)})

    app = Starlette(routes=[Route(ROUTE, compute, methods=["POST"])])
    StarletteInstrumentor.instrument_app(app, tracer_provider=tp)
    return app


def drive(tp: Any, scenario: str) -> int:
    """One request to the app, in process; its HTTP status."""
    from starlette.testclient import TestClient

    with TestClient(app_for(tp, scenario), raise_server_exceptions=False) as client:
        return int(client.post(ROUTE, json={"question": "compute"}).status_code)


async def run(scenario: str) -> ExportTraceServiceRequest:
    with capture("calculator-http-app") as (tp, exporter):
        # the TestClient runs the app on its own event loop, in a thread
        await asyncio.to_thread(drive, tp, scenario)
        return merge([to_request(exporter.get_finished_spans())])


if __name__ == "__main__":  # pragma: no cover - a manual look
    for s in SCENARIOS:
        req = asyncio.run(run(s))
        print(s, [sp.name for rs in req.resource_spans for ss in rs.scope_spans for sp in ss.spans])
