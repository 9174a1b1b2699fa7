"""The lifecycle contract on the agent components' factories."""

from __future__ import annotations

import pytest

from pipeline.testing import check_factory
from plugins.agentmetricsconnector import AgentMetricsConnectorFactory
from plugins.spanmetricsconnector import SpanMetricsConnectorFactory
from plugins.workflowprocessor import WorkflowProcessorFactory


@pytest.mark.parametrize(
    "factory",
    [WorkflowProcessorFactory(), AgentMetricsConnectorFactory(), SpanMetricsConnectorFactory()],
    ids=lambda f: f.type,
)
async def test_contract(factory: object) -> None:
    await check_factory(factory)  # type: ignore[arg-type]
