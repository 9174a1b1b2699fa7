"""The real libraries, installed in the test environment (the ``test`` extra) and driven
offline by tests/agent_sources/, still emit what the recorded corpus says: each source runs
live (in its own process: the instrumentations patch libraries globally) and its spans read
through the dialect tables exactly as the corpus's do (tests/plugins/agentdialects/
test_corpus.py's expectations)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.plugins.agentdialects.test_corpus import EXPECTED

LIVE = {
    "pydantic_ai": ["success", "tool_error", "tool_timeout", "model_retry", "failed_run",
                    "slow_tool"],
    "pydantic_ai_mcp": ["success", "tool_error", "model_retry"],
    "mcp_stdio": ["success", "tool_error"],
    "mcp_http": ["success", "tool_timeout"],
    "mcp_openinference": ["success"],
    "langgraph_openinference": ["success", "tool_error", "failed_run"],
    "langgraph_openllmetry": ["success", "tool_timeout", "failed_run"],
    "a2a_sdk": ["success", "failed_run"],
    "pydantic_ai_http": ["success", "failed_run"],
}  # fmt: skip


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize("source", sorted(LIVE))
def test_live_source_matches_the_corpus(source: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tests.agent_sources.record", "--summary", source, *LIVE[source]],
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    for scenario in LIVE[source]:
        rows = [tuple(r) for r in got[scenario]]
        assert rows == sorted(EXPECTED[source, scenario]), scenario
