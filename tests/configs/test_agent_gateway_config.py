"""``configs/agent-gateway.yaml`` is valid and wires otlp -> workflow -> agentmetrics and
spanmetrics."""

from __future__ import annotations

from pipeline.component import ComponentID, Kind
from pipeline.config import load_config
from pipeline.pluginmanager import default_registry
from tests.support import ROOT


def test_agent_gateway_config_is_valid() -> None:
    config = load_config([str(ROOT / "configs" / "agent-gateway.yaml")], default_registry())
    pipelines = {str(pid): p for pid, p in config.pipelines.items()}
    traces = pipelines["traces"]
    assert [str(p) for p in traces.processors] == ["workflow", "batch"]
    assert {str(e) for e in traces.exporters} >= {"agentmetrics", "spanmetrics"}
    assert {str(r) for r in pipelines["metrics/agent"].receivers} == {
        "agentmetrics",
        "spanmetrics",
    }
    workflow = config.components[Kind.PROCESSOR][ComponentID("workflow")]
    assert workflow.max_traces == 10000  # type: ignore[attr-defined]
