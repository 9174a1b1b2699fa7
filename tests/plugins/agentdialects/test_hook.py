"""A plugin registers a dialect through the ``register_agent_dialects`` hook; every agent
component's classifier then knows it (before the built-in dialects)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from plugins._agentdialects import (
    DialectRegistry,
    Role,
    default_dialects,
    load_dialects,
    plugin_tables,
)
from plugins.genainormalizerprocessor import GenAINormalizerConfig


@pytest.fixture
def acme_plugin(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("PIPELINE_PLUGINS", "tests.plugins.agentdialects.acme_dialect_plugin")
    plugin_tables.cache_clear()
    default_dialects.cache_clear()
    yield
    monkeypatch.delenv("PIPELINE_PLUGINS")
    plugin_tables.cache_clear()
    default_dialects.cache_clear()


def test_plugin_dialect_is_recognised(acme_plugin: None) -> None:
    dialects = default_dialects()
    assert dialects.names.index("acme_agents") < dialects.names.index("genai")
    facts = dialects.classify(
        "run", 1, {"acme.kind": "agent", "acme.agent": "planner", "acme.run_id": "r-1"}
    )
    assert (facts.role, facts.dialect, facts.label("agent_name"), facts.run_id) == (
        Role.AGENT_RUN,
        "acme_agents",
        "planner",
        "r-1",
    )
    # a component's dialects: option can still turn it off, and the normalizer can name it
    assert (
        "acme_agents"
        not in load_dialects(
            GenAINormalizerConfig.model_validate(
                {"dialects": {"disable": ["acme_agents"]}}
            ).dialects
        ).names
    )
    GenAINormalizerConfig.model_validate({"sources": [{"name": "acme_agents"}]})


def test_without_the_plugin_it_is_unknown() -> None:
    assert "acme_agents" not in default_dialects().names


def test_registry_refuses_a_name_twice_and_bad_tables() -> None:
    registry = DialectRegistry()
    registry.add({"name": "a"})
    with pytest.raises(ValueError, match="registered twice"):
        registry.add({"name": "a"})
    with pytest.raises(ValueError):
        registry.add({"name": "b", "rules": [{"role": "boss", "match": [{}]}]})
