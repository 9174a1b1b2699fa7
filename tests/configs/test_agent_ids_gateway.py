"""End to end on the unmodified default config (``configs/gateway.yaml``): the agent a
workflow execution is counted for (``agent_workflow_executions_total{agent_id}``) when the
agent is named by ``gen_ai.agent.id``: the benchmark's workload (``workflow.<type>`` roots
naming their agent by ``gen_ai.agent.id`` alone: each execution its agent's, none
``unknown``), and a real library that writes ``gen_ai.agent.id`` (OpenLLMetry's LangChain
instrumentation: the LangGraph run's UUID, never a label) below workflow roots of the
application's (a logical ``gen_ai.agent.id``, a UUID one, none)."""

from __future__ import annotations

import collections
import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from benchmarks.agent_pipeline import Filler, Load, build_template, marker_offsets
from plugins._agentdialects import looks_like_run_id
from tests.configs.test_agent_executions_gateway import gateway_env, scrape, series
from tests.support import ROOT, GatewayProcess

pytestmark = pytest.mark.slow

Series = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def executions(port: int) -> dict[tuple[str, str], float]:
    """(workflow_type, agent_id) -> executions counted, over outcomes and tiers."""
    out: dict[tuple[str, str], float] = collections.defaultdict(float)
    for (_, labels), value in series(scrape(port), "agent_workflow_executions_total").items():
        d = dict(labels)
        out[(d["workflow_type"], d["agent_id"])] += value
    return dict(out)


def wait_for(port: int, total: float) -> dict[tuple[str, str], float]:
    deadline = time.monotonic() + 45  # wait_duration 2 s + the 15 s flush, twice at most
    got = executions(port)
    while sum(got.values()) < total and time.monotonic() < deadline:
        time.sleep(0.5)
        got = executions(port)
    return got


def post(port: int, body: bytes) -> None:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/traces",
        data=body,
        headers={"Content-Type": "application/x-protobuf"},
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 200


def test_the_benchmark_workloads_executions_are_their_agents() -> None:
    load = Load(traces_per_request=20)
    requests = 8  # one of each variant: 160 workflows, 5 agents, 4 types
    ports, env = gateway_env()
    with GatewayProcess(ROOT / "configs" / "gateway.yaml", env=env) as gw:
        gw.wait_ready()
        expected: dict[tuple[str, str], float] = collections.defaultdict(float)
        for variant in range(requests):
            template = build_template(load, variant)
            filler = Filler(
                template, marker_offsets(template, load.traces_per_request), load.traces_per_request
            )
            ids = [(variant * 100 + k + 1).to_bytes(16, "big") for k in range(20)]
            post(ports["http"], filler.fill(ids))
            for k in range(load.traces_per_request):
                n = variant * load.traces_per_request + k
                expected[(f"type{n % load.workflow_types}", f"agent-{n % load.agents}")] += 1
        got = wait_for(ports["prom"], float(requests * load.traces_per_request))
        assert got == expected
        assert gw.stop() == 0


# run in a process of its own: the LangChain instrumentation patches LangChain globally
LANGGRAPH_APP = """
import asyncio, json, sys, uuid
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.agent_sources.langgraph_source import _instrument, build_agent

tp = TracerProvider(resource=Resource.create({"service.name": "calc-app"}))
tp.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=sys.argv[1], timeout=10)))
memory = InMemorySpanExporter()
tp.add_span_processor(SimpleSpanProcessor(memory))
trace.set_tracer_provider(tp)
_instrument("langgraph_openllmetry", tp)
tracer = tp.get_tracer("calc-app")
run_id = str(uuid.uuid4())


async def main():
    for root in ({"gen_ai.agent.id": "research-agent"}, {"gen_ai.agent.id": run_id}, {}):
        agent = build_agent("success")
        with tracer.start_as_current_span("workflow.calc", attributes={"workflow.name": "calc",
                                                                       **root}):
            await agent.ainvoke({"messages": [("user", "compute")]})


asyncio.run(main())
tp.shutdown()
ids = [s.attributes.get("gen_ai.agent.id") for s in memory.get_finished_spans()
       if s.parent is not None and "gen_ai.agent.id" in s.attributes]
print(json.dumps({"run_id": run_id, "library_agent_ids": ids}))
"""


def test_a_real_library_writing_gen_ai_agent_id(tmp_path: Path) -> None:
    ports, env = gateway_env()
    with GatewayProcess(ROOT / "configs" / "gateway.yaml", env=env) as gw:
        gw.wait_ready()
        done = subprocess.run(
            [sys.executable, "-c", LANGGRAPH_APP, f"http://127.0.0.1:{ports['http']}/v1/traces"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        sent = json.loads(done.stdout.strip().splitlines()[-1])
        # the library wrote gen_ai.agent.id on its spans: the LangGraph run's UUID
        assert len(sent["library_agent_ids"]) == 3
        assert all(looks_like_run_id(v) for v in sent["library_agent_ids"])
        got = wait_for(ports["prom"], 3.0)
        # the root's logical id; then, the root's being a run id or absent, the library's
        # gen_ai.agent.name (its span also carries the UUID gen_ai.agent.id: a run id, no name)
        assert got == {("calc", "research-agent"): 1.0, ("calc", "calc_agent"): 2.0}
        for _, lbl in series(scrape(ports["prom"]), "agent_workflow"):
            assert not any(looks_like_run_id(v) for _, v in lbl), lbl
        assert gw.stop() == 0
