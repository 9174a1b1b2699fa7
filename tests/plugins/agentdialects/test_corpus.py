"""Every recorded span of every real source (tests/data/agent_sources/, written by
tests/agent_sources/record.py from the real libraries) classified as expected: exact roles,
dialects, outcomes and labels, no per-run id in a label, token counts where the source
records them. Runs without the libraries."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from plugins._agentdialects import Role, SpanFacts, looks_like_run_id
from tests.agent_sources._otel import CORPUS, read_corpus
from tests.agent_sources.summary import KEYS, facts, summary

MANIFEST = json.loads((CORPUS / "MANIFEST.json").read_text())


def facts_of(source: str, scenario: str) -> Iterator[tuple[Any, SpanFacts]]:
    return facts(read_corpus(CORPUS / source / f"{scenario}.json"))


EXPECTED: dict[tuple[str, str], list[tuple[str, ...]]] = {
    ("a2a_sdk", "failed_run"): [
        (
            "a2a_client",
            "a2a_sdk",
            "failed",
            "a2a.utils.errors.InternalError",
            "a2a_message_type=message/send",
        ),
        ("a2a_server", "a2a_sdk", "failed", "RuntimeError", "a2a_message_type=message/send"),
    ],
    ("a2a_sdk", "slow_tool"): [
        ("a2a_client", "a2a_sdk", "ok", "", "a2a_message_type=message/send"),
        ("a2a_server", "a2a_sdk", "ok", "", "a2a_message_type=message/send"),
    ],
    ("a2a_sdk", "success"): [
        ("a2a_client", "a2a_sdk", "ok", "", "a2a_message_type=message/send"),
        ("a2a_server", "a2a_sdk", "ok", "", "a2a_message_type=message/send"),
    ],
    ("langgraph_openinference", "failed_run"): [
        (
            "agent_run",
            "openinference",
            "failed",
            "RuntimeError",
            "workflow_type=calc_agent",
            "agent_name=calc_agent",
        ),
        ("inference", "openinference", "failed", "RuntimeError"),
    ],
    ("langgraph_openinference", "slow_tool"): [
        (
            "agent_run",
            "openinference",
            "ok",
            "",
            "workflow_type=calc_agent",
            "agent_name=calc_agent",
        ),
        ("inference", "openinference", "ok", ""),
        ("inference", "openinference", "ok", ""),
        ("tool_call", "openinference", "ok", "", "tool_name=slow"),
    ],
    ("langgraph_openinference", "success"): [
        (
            "agent_run",
            "openinference",
            "ok",
            "",
            "workflow_type=calc_agent",
            "agent_name=calc_agent",
        ),
        ("inference", "openinference", "ok", ""),
        ("inference", "openinference", "ok", ""),
        ("tool_call", "openinference", "ok", "", "tool_name=add"),
    ],
    ("langgraph_openinference", "tool_error"): [
        (
            "agent_run",
            "openinference",
            "failed",
            "ZeroDivisionError",
            "workflow_type=calc_agent",
            "agent_name=calc_agent",
        ),
        ("inference", "openinference", "ok", ""),
        ("tool_call", "openinference", "failed", "ZeroDivisionError", "tool_name=divide"),
    ],
    ("langgraph_openinference", "tool_timeout"): [
        (
            "agent_run",
            "openinference",
            "failed",
            "TimeoutError",
            "workflow_type=calc_agent",
            "agent_name=calc_agent",
        ),
        ("inference", "openinference", "ok", ""),
        ("tool_call", "openinference", "failed", "TimeoutError", "tool_name=lookup"),
    ],
    ("langgraph_openllmetry", "failed_run"): [
        (
            "agent_run",
            "genai",
            "failed",
            "RuntimeError",
            "workflow_type=calc_agent",
            "agent_name=calc_agent",
        ),
        (
            "agent_run",
            "genai",
            "failed",
            "RuntimeError",
            "workflow_type=calc_agent",
            "agent_name=calc_agent",
        ),
        ("create_agent", "genai", "ok", "", "agent_name=calc_agent"),
        ("inference", "genai", "failed", "RuntimeError"),
    ],
    ("langgraph_openllmetry", "slow_tool"): [
        ("agent_run", "genai", "ok", "", "workflow_type=calc_agent", "agent_name=calc_agent"),
        ("agent_run", "genai", "ok", "", "workflow_type=calc_agent", "agent_name=calc_agent"),
        ("create_agent", "genai", "ok", "", "agent_name=calc_agent"),
        ("inference", "genai", "ok", ""),
        ("inference", "genai", "ok", ""),
        ("tool_call", "openllmetry", "ok", "", "tool_name=slow"),
    ],
    ("langgraph_openllmetry", "success"): [
        ("agent_run", "genai", "ok", "", "workflow_type=calc_agent", "agent_name=calc_agent"),
        ("agent_run", "genai", "ok", "", "workflow_type=calc_agent", "agent_name=calc_agent"),
        ("create_agent", "genai", "ok", "", "agent_name=calc_agent"),
        ("inference", "genai", "ok", ""),
        ("inference", "genai", "ok", ""),
        ("tool_call", "openllmetry", "ok", "", "tool_name=add"),
    ],
    ("langgraph_openllmetry", "tool_error"): [
        (
            "agent_run",
            "genai",
            "failed",
            "ZeroDivisionError",
            "workflow_type=calc_agent",
            "agent_name=calc_agent",
        ),
        (
            "agent_run",
            "genai",
            "failed",
            "ZeroDivisionError",
            "workflow_type=calc_agent",
            "agent_name=calc_agent",
        ),
        ("create_agent", "genai", "ok", "", "agent_name=calc_agent"),
        ("inference", "genai", "ok", ""),
        ("tool_call", "openllmetry", "failed", "ZeroDivisionError", "tool_name=divide"),
    ],
    ("langgraph_openllmetry", "tool_timeout"): [
        (
            "agent_run",
            "genai",
            "failed",
            "TimeoutError",
            "workflow_type=calc_agent",
            "agent_name=calc_agent",
        ),
        (
            "agent_run",
            "genai",
            "failed",
            "TimeoutError",
            "workflow_type=calc_agent",
            "agent_name=calc_agent",
        ),
        ("create_agent", "genai", "ok", "", "agent_name=calc_agent"),
        ("inference", "genai", "ok", ""),
        ("tool_call", "openllmetry", "failed", "TimeoutError", "tool_name=lookup"),
    ],
    ("mcp_http", "slow_tool"): [
        ("mcp_client", "mcp_sdk", "ok", "", "mcp_method=initialize"),
        ("mcp_client", "mcp_sdk", "ok", "", "mcp_method=tools/list"),
        ("mcp_client", "mcp_sdk", "ok", "", "tool_name=slow", "mcp_method=tools/call"),
        ("mcp_server", "mcp_sdk", "ok", "", "mcp_method=initialize"),
        ("mcp_server", "mcp_sdk", "ok", "", "mcp_method=notifications/initialized"),
        ("mcp_server", "mcp_sdk", "ok", "", "mcp_method=tools/list"),
        ("mcp_server", "mcp_sdk", "ok", "", "tool_name=slow", "mcp_method=tools/call"),
    ],
    ("mcp_http", "success"): [
        ("mcp_client", "mcp_sdk", "ok", "", "mcp_method=initialize"),
        ("mcp_client", "mcp_sdk", "ok", "", "mcp_method=tools/list"),
        ("mcp_client", "mcp_sdk", "ok", "", "tool_name=add", "mcp_method=tools/call"),
        ("mcp_server", "mcp_sdk", "ok", "", "mcp_method=initialize"),
        ("mcp_server", "mcp_sdk", "ok", "", "mcp_method=notifications/initialized"),
        ("mcp_server", "mcp_sdk", "ok", "", "mcp_method=tools/list"),
        ("mcp_server", "mcp_sdk", "ok", "", "tool_name=add", "mcp_method=tools/call"),
    ],
    ("mcp_http", "tool_error"): [
        ("mcp_client", "mcp_sdk", "ok", "", "mcp_method=initialize"),
        ("mcp_client", "mcp_sdk", "ok", "", "tool_name=divide", "mcp_method=tools/call"),
        (
            "mcp_server",
            "mcp_sdk",
            "failed",
            "tool_error",
            "tool_name=divide",
            "mcp_method=tools/call",
        ),
        ("mcp_server", "mcp_sdk", "ok", "", "mcp_method=initialize"),
        ("mcp_server", "mcp_sdk", "ok", "", "mcp_method=notifications/initialized"),
    ],
    ("mcp_http", "tool_timeout"): [
        ("mcp_client", "mcp_sdk", "ok", "", "mcp_method=initialize"),
        ("mcp_client", "mcp_sdk", "ok", "", "tool_name=lookup", "mcp_method=tools/call"),
        (
            "mcp_server",
            "mcp_sdk",
            "failed",
            "tool_error",
            "tool_name=lookup",
            "mcp_method=tools/call",
        ),
        ("mcp_server", "mcp_sdk", "ok", "", "mcp_method=initialize"),
        ("mcp_server", "mcp_sdk", "ok", "", "mcp_method=notifications/initialized"),
    ],
    ("mcp_http", "unknown_tool"): [
        ("mcp_client", "mcp_sdk", "ok", "", "mcp_method=initialize"),
        ("mcp_client", "mcp_sdk", "ok", "", "tool_name=nope", "mcp_method=tools/call"),
        (
            "mcp_server",
            "mcp_sdk",
            "failed",
            "tool_error",
            "tool_name=nope",
            "mcp_method=tools/call",
        ),
        ("mcp_server", "mcp_sdk", "ok", "", "mcp_method=initialize"),
        ("mcp_server", "mcp_sdk", "ok", "", "mcp_method=notifications/initialized"),
    ],
    ("mcp_openinference", "slow_tool"): [
        ("mcp_client", "mcp_sdk", "ok", "", "mcp_method=initialize"),
        ("mcp_client", "mcp_sdk", "ok", "", "mcp_method=tools/list"),
        ("mcp_client", "mcp_sdk", "ok", "", "tool_name=slow", "mcp_method=tools/call"),
        ("mcp_server", "mcp_sdk", "ok", "", "mcp_method=initialize"),
        ("mcp_server", "mcp_sdk", "ok", "", "mcp_method=notifications/initialized"),
        ("mcp_server", "mcp_sdk", "ok", "", "mcp_method=tools/list"),
        ("mcp_server", "mcp_sdk", "ok", "", "tool_name=slow", "mcp_method=tools/call"),
    ],
    ("mcp_openinference", "success"): [
        ("mcp_client", "mcp_sdk", "ok", "", "mcp_method=initialize"),
        ("mcp_client", "mcp_sdk", "ok", "", "mcp_method=tools/list"),
        ("mcp_client", "mcp_sdk", "ok", "", "tool_name=add", "mcp_method=tools/call"),
        ("mcp_server", "mcp_sdk", "ok", "", "mcp_method=initialize"),
        ("mcp_server", "mcp_sdk", "ok", "", "mcp_method=notifications/initialized"),
        ("mcp_server", "mcp_sdk", "ok", "", "mcp_method=tools/list"),
        ("mcp_server", "mcp_sdk", "ok", "", "tool_name=add", "mcp_method=tools/call"),
    ],
    ("mcp_openinference", "tool_error"): [
        ("mcp_client", "mcp_sdk", "ok", "", "mcp_method=initialize"),
        ("mcp_client", "mcp_sdk", "ok", "", "tool_name=divide", "mcp_method=tools/call"),
        (
            "mcp_server",
            "mcp_sdk",
            "failed",
            "tool_error",
            "tool_name=divide",
            "mcp_method=tools/call",
        ),
        ("mcp_server", "mcp_sdk", "ok", "", "mcp_method=initialize"),
        ("mcp_server", "mcp_sdk", "ok", "", "mcp_method=notifications/initialized"),
    ],
    ("mcp_openinference", "tool_timeout"): [
        ("mcp_client", "mcp_sdk", "ok", "", "mcp_method=initialize"),
        ("mcp_client", "mcp_sdk", "ok", "", "tool_name=lookup", "mcp_method=tools/call"),
        (
            "mcp_server",
            "mcp_sdk",
            "failed",
            "tool_error",
            "tool_name=lookup",
            "mcp_method=tools/call",
        ),
        ("mcp_server", "mcp_sdk", "ok", "", "mcp_method=initialize"),
        ("mcp_server", "mcp_sdk", "ok", "", "mcp_method=notifications/initialized"),
    ],
    ("mcp_openinference", "unknown_tool"): [
        ("mcp_client", "mcp_sdk", "ok", "", "mcp_method=initialize"),
        ("mcp_client", "mcp_sdk", "ok", "", "tool_name=nope", "mcp_method=tools/call"),
        (
            "mcp_server",
            "mcp_sdk",
            "failed",
            "tool_error",
            "tool_name=nope",
            "mcp_method=tools/call",
        ),
        ("mcp_server", "mcp_sdk", "ok", "", "mcp_method=initialize"),
        ("mcp_server", "mcp_sdk", "ok", "", "mcp_method=notifications/initialized"),
    ],
    ("mcp_openllmetry", "slow_tool"): [
        ("mcp_client", "openllmetry", "ok", "", "mcp_method=initialize"),
        ("mcp_client", "openllmetry", "ok", "", "mcp_method=tools/list"),
        ("mcp_client", "openllmetry", "ok", "", "tool_name=slow", "mcp_method=tools/call"),
    ],
    ("mcp_openllmetry", "success"): [
        ("mcp_client", "openllmetry", "ok", "", "mcp_method=initialize"),
        ("mcp_client", "openllmetry", "ok", "", "mcp_method=tools/list"),
        ("mcp_client", "openllmetry", "ok", "", "tool_name=add", "mcp_method=tools/call"),
    ],
    ("mcp_openllmetry", "tool_error"): [
        (
            "mcp_client",
            "openllmetry",
            "failed",
            "tool_error",
            "tool_name=divide",
            "mcp_method=tools/call",
        ),
        ("mcp_client", "openllmetry", "ok", "", "mcp_method=initialize"),
    ],
    ("mcp_openllmetry", "tool_timeout"): [
        (
            "mcp_client",
            "openllmetry",
            "failed",
            "tool_error",
            "tool_name=lookup",
            "mcp_method=tools/call",
        ),
        ("mcp_client", "openllmetry", "ok", "", "mcp_method=initialize"),
    ],
    ("mcp_openllmetry", "unknown_tool"): [
        (
            "mcp_client",
            "openllmetry",
            "failed",
            "tool_error",
            "tool_name=nope",
            "mcp_method=tools/call",
        ),
        ("mcp_client", "openllmetry", "ok", "", "mcp_method=initialize"),
    ],
    ("mcp_stdio", "slow_tool"): [
        ("mcp_client", "mcp_sdk", "ok", "", "mcp_method=initialize"),
        ("mcp_client", "mcp_sdk", "ok", "", "mcp_method=tools/list"),
        ("mcp_client", "mcp_sdk", "ok", "", "tool_name=slow", "mcp_method=tools/call"),
        ("mcp_server", "mcp_sdk", "ok", "", "mcp_method=initialize"),
        ("mcp_server", "mcp_sdk", "ok", "", "mcp_method=notifications/initialized"),
        ("mcp_server", "mcp_sdk", "ok", "", "mcp_method=tools/list"),
        ("mcp_server", "mcp_sdk", "ok", "", "tool_name=slow", "mcp_method=tools/call"),
    ],
    ("mcp_stdio", "success"): [
        ("mcp_client", "mcp_sdk", "ok", "", "mcp_method=initialize"),
        ("mcp_client", "mcp_sdk", "ok", "", "mcp_method=tools/list"),
        ("mcp_client", "mcp_sdk", "ok", "", "tool_name=add", "mcp_method=tools/call"),
        ("mcp_server", "mcp_sdk", "ok", "", "mcp_method=initialize"),
        ("mcp_server", "mcp_sdk", "ok", "", "mcp_method=notifications/initialized"),
        ("mcp_server", "mcp_sdk", "ok", "", "mcp_method=tools/list"),
        ("mcp_server", "mcp_sdk", "ok", "", "tool_name=add", "mcp_method=tools/call"),
    ],
    ("mcp_stdio", "tool_error"): [
        ("mcp_client", "mcp_sdk", "ok", "", "mcp_method=initialize"),
        ("mcp_client", "mcp_sdk", "ok", "", "tool_name=divide", "mcp_method=tools/call"),
        (
            "mcp_server",
            "mcp_sdk",
            "failed",
            "tool_error",
            "tool_name=divide",
            "mcp_method=tools/call",
        ),
        ("mcp_server", "mcp_sdk", "ok", "", "mcp_method=initialize"),
        ("mcp_server", "mcp_sdk", "ok", "", "mcp_method=notifications/initialized"),
    ],
    ("mcp_stdio", "tool_timeout"): [
        ("mcp_client", "mcp_sdk", "ok", "", "mcp_method=initialize"),
        ("mcp_client", "mcp_sdk", "ok", "", "tool_name=lookup", "mcp_method=tools/call"),
        (
            "mcp_server",
            "mcp_sdk",
            "failed",
            "tool_error",
            "tool_name=lookup",
            "mcp_method=tools/call",
        ),
        ("mcp_server", "mcp_sdk", "ok", "", "mcp_method=initialize"),
        ("mcp_server", "mcp_sdk", "ok", "", "mcp_method=notifications/initialized"),
    ],
    ("mcp_stdio", "unknown_tool"): [
        ("mcp_client", "mcp_sdk", "ok", "", "mcp_method=initialize"),
        ("mcp_client", "mcp_sdk", "ok", "", "tool_name=nope", "mcp_method=tools/call"),
        (
            "mcp_server",
            "mcp_sdk",
            "failed",
            "tool_error",
            "tool_name=nope",
            "mcp_method=tools/call",
        ),
        ("mcp_server", "mcp_sdk", "ok", "", "mcp_method=initialize"),
        ("mcp_server", "mcp_sdk", "ok", "", "mcp_method=notifications/initialized"),
    ],
    ("pydantic_ai", "failed_run"): [
        (
            "agent_run",
            "genai",
            "failed",
            "RuntimeError",
            "workflow_type=calculator",
            "agent_name=calculator",
        ),
        ("inference", "genai", "failed", "RuntimeError", "agent_name=calculator"),
    ],
    ("pydantic_ai", "model_retry"): [
        ("agent_run", "genai", "ok", "", "workflow_type=calculator", "agent_name=calculator"),
        ("inference", "genai", "ok", "", "agent_name=calculator"),
        ("inference", "genai", "ok", "", "agent_name=calculator"),
        ("inference", "genai", "ok", "", "agent_name=calculator"),
        (
            "tool_call",
            "genai",
            "failed",
            "pydantic_ai.exceptions.ToolRetryError",
            "agent_name=calculator",
            "tool_name=flaky",
        ),
        ("tool_call", "genai", "ok", "", "agent_name=calculator", "tool_name=flaky"),
    ],
    ("pydantic_ai", "slow_tool"): [
        ("agent_run", "genai", "ok", "", "workflow_type=calculator", "agent_name=calculator"),
        ("inference", "genai", "ok", "", "agent_name=calculator"),
        ("inference", "genai", "ok", "", "agent_name=calculator"),
        ("tool_call", "genai", "ok", "", "agent_name=calculator", "tool_name=slow"),
    ],
    ("pydantic_ai", "success"): [
        ("agent_run", "genai", "ok", "", "workflow_type=calculator", "agent_name=calculator"),
        ("inference", "genai", "ok", "", "agent_name=calculator"),
        ("inference", "genai", "ok", "", "agent_name=calculator"),
        ("tool_call", "genai", "ok", "", "agent_name=calculator", "tool_name=add"),
    ],
    ("pydantic_ai", "tool_error"): [
        (
            "agent_run",
            "genai",
            "failed",
            "ZeroDivisionError",
            "workflow_type=calculator",
            "agent_name=calculator",
        ),
        ("inference", "genai", "ok", "", "agent_name=calculator"),
        (
            "tool_call",
            "genai",
            "failed",
            "ZeroDivisionError",
            "agent_name=calculator",
            "tool_name=divide",
        ),
    ],
    ("pydantic_ai", "tool_timeout"): [
        (
            "agent_run",
            "genai",
            "failed",
            "TimeoutError",
            "workflow_type=calculator",
            "agent_name=calculator",
        ),
        ("inference", "genai", "ok", "", "agent_name=calculator"),
        (
            "tool_call",
            "genai",
            "failed",
            "TimeoutError",
            "agent_name=calculator",
            "tool_name=lookup",
        ),
    ],
    ("pydantic_ai_mcp", "failed_run"): [
        (
            "agent_run",
            "genai",
            "failed",
            "RuntimeError",
            "workflow_type=calculator",
            "agent_name=calculator",
        ),
        ("inference", "genai", "failed", "RuntimeError", "agent_name=calculator"),
        ("mcp_client", "genai", "ok", "", "mcp_method=tools/list"),
        ("mcp_client", "mcp_sdk", "ok", "", "mcp_method=server/discover"),
        ("mcp_client", "mcp_sdk", "ok", "", "mcp_method=tools/list"),
        ("mcp_server", "mcp_sdk", "ok", "", "mcp_method=server/discover"),
        ("mcp_server", "mcp_sdk", "ok", "", "mcp_method=tools/list"),
    ],
    ("pydantic_ai_mcp", "model_retry"): [
        ("agent_run", "genai", "ok", "", "workflow_type=calculator", "agent_name=calculator"),
        ("inference", "genai", "ok", "", "agent_name=calculator"),
        ("inference", "genai", "ok", "", "agent_name=calculator"),
        ("inference", "genai", "ok", "", "agent_name=calculator"),
        ("mcp_client", "genai", "failed", "tool_error", "tool_name=flaky", "mcp_method=tools/call"),
        ("mcp_client", "genai", "ok", "", "mcp_method=tools/list"),
        ("mcp_client", "genai", "ok", "", "tool_name=flaky", "mcp_method=tools/call"),
        ("mcp_client", "mcp_sdk", "ok", "", "mcp_method=server/discover"),
        ("mcp_client", "mcp_sdk", "ok", "", "mcp_method=tools/list"),
        ("mcp_client", "mcp_sdk", "ok", "", "tool_name=flaky", "mcp_method=tools/call"),
        ("mcp_client", "mcp_sdk", "ok", "", "tool_name=flaky", "mcp_method=tools/call"),
        (
            "mcp_server",
            "mcp_sdk",
            "failed",
            "tool_error",
            "tool_name=flaky",
            "mcp_method=tools/call",
        ),
        ("mcp_server", "mcp_sdk", "ok", "", "mcp_method=server/discover"),
        ("mcp_server", "mcp_sdk", "ok", "", "mcp_method=tools/list"),
        ("mcp_server", "mcp_sdk", "ok", "", "tool_name=flaky", "mcp_method=tools/call"),
        (
            "tool_call",
            "genai",
            "failed",
            "pydantic_ai.exceptions.ToolRetryError",
            "agent_name=calculator",
            "tool_name=flaky",
        ),
        ("tool_call", "genai", "ok", "", "agent_name=calculator", "tool_name=flaky"),
    ],
    ("pydantic_ai_mcp", "slow_tool"): [
        ("agent_run", "genai", "ok", "", "workflow_type=calculator", "agent_name=calculator"),
        ("inference", "genai", "ok", "", "agent_name=calculator"),
        ("inference", "genai", "ok", "", "agent_name=calculator"),
        ("mcp_client", "genai", "ok", "", "mcp_method=tools/list"),
        ("mcp_client", "genai", "ok", "", "tool_name=slow", "mcp_method=tools/call"),
        ("mcp_client", "mcp_sdk", "ok", "", "mcp_method=server/discover"),
        ("mcp_client", "mcp_sdk", "ok", "", "mcp_method=tools/list"),
        ("mcp_client", "mcp_sdk", "ok", "", "tool_name=slow", "mcp_method=tools/call"),
        ("mcp_server", "mcp_sdk", "ok", "", "mcp_method=server/discover"),
        ("mcp_server", "mcp_sdk", "ok", "", "mcp_method=tools/list"),
        ("mcp_server", "mcp_sdk", "ok", "", "tool_name=slow", "mcp_method=tools/call"),
        ("tool_call", "genai", "ok", "", "agent_name=calculator", "tool_name=slow"),
    ],
    ("pydantic_ai_mcp", "success"): [
        ("agent_run", "genai", "ok", "", "workflow_type=calculator", "agent_name=calculator"),
        ("inference", "genai", "ok", "", "agent_name=calculator"),
        ("inference", "genai", "ok", "", "agent_name=calculator"),
        ("mcp_client", "genai", "ok", "", "mcp_method=tools/list"),
        ("mcp_client", "genai", "ok", "", "tool_name=add", "mcp_method=tools/call"),
        ("mcp_client", "mcp_sdk", "ok", "", "mcp_method=server/discover"),
        ("mcp_client", "mcp_sdk", "ok", "", "mcp_method=tools/list"),
        ("mcp_client", "mcp_sdk", "ok", "", "tool_name=add", "mcp_method=tools/call"),
        ("mcp_server", "mcp_sdk", "ok", "", "mcp_method=server/discover"),
        ("mcp_server", "mcp_sdk", "ok", "", "mcp_method=tools/list"),
        ("mcp_server", "mcp_sdk", "ok", "", "tool_name=add", "mcp_method=tools/call"),
        ("tool_call", "genai", "ok", "", "agent_name=calculator", "tool_name=add"),
    ],
    ("pydantic_ai_mcp", "tool_error"): [
        (
            "agent_run",
            "genai",
            "failed",
            "fastmcp.exceptions.ToolError",
            "workflow_type=calculator",
            "agent_name=calculator",
        ),
        ("inference", "genai", "ok", "", "agent_name=calculator"),
        (
            "mcp_client",
            "genai",
            "failed",
            "tool_error",
            "tool_name=divide",
            "mcp_method=tools/call",
        ),
        ("mcp_client", "genai", "ok", "", "mcp_method=tools/list"),
        ("mcp_client", "mcp_sdk", "ok", "", "mcp_method=server/discover"),
        ("mcp_client", "mcp_sdk", "ok", "", "mcp_method=tools/list"),
        ("mcp_client", "mcp_sdk", "ok", "", "tool_name=divide", "mcp_method=tools/call"),
        (
            "mcp_server",
            "mcp_sdk",
            "failed",
            "tool_error",
            "tool_name=divide",
            "mcp_method=tools/call",
        ),
        ("mcp_server", "mcp_sdk", "ok", "", "mcp_method=server/discover"),
        ("mcp_server", "mcp_sdk", "ok", "", "mcp_method=tools/list"),
        (
            "tool_call",
            "genai",
            "failed",
            "fastmcp.exceptions.ToolError",
            "agent_name=calculator",
            "tool_name=divide",
        ),
    ],
    ("pydantic_ai_mcp", "tool_timeout"): [
        (
            "agent_run",
            "genai",
            "failed",
            "fastmcp.exceptions.ToolError",
            "workflow_type=calculator",
            "agent_name=calculator",
        ),
        ("inference", "genai", "ok", "", "agent_name=calculator"),
        (
            "mcp_client",
            "genai",
            "failed",
            "tool_error",
            "tool_name=lookup",
            "mcp_method=tools/call",
        ),
        ("mcp_client", "genai", "ok", "", "mcp_method=tools/list"),
        ("mcp_client", "mcp_sdk", "ok", "", "mcp_method=server/discover"),
        ("mcp_client", "mcp_sdk", "ok", "", "mcp_method=tools/list"),
        ("mcp_client", "mcp_sdk", "ok", "", "tool_name=lookup", "mcp_method=tools/call"),
        (
            "mcp_server",
            "mcp_sdk",
            "failed",
            "tool_error",
            "tool_name=lookup",
            "mcp_method=tools/call",
        ),
        ("mcp_server", "mcp_sdk", "ok", "", "mcp_method=server/discover"),
        ("mcp_server", "mcp_sdk", "ok", "", "mcp_method=tools/list"),
        (
            "tool_call",
            "genai",
            "failed",
            "fastmcp.exceptions.ToolError",
            "agent_name=calculator",
            "tool_name=lookup",
        ),
    ],
}

# pydantic-ai served over HTTP (Starlette, OpenTelemetry's ASGI instrumentation): the same
# agent spans below an HTTP server span, which no dialect claims
for _scenario in ("success", "failed_run", "slow_tool"):
    EXPECTED["pydantic_ai_http", _scenario] = EXPECTED["pydantic_ai", _scenario]


def test_every_recorded_scenario_is_expected() -> None:
    recorded = {(s, sc) for s, m in MANIFEST.items() for sc in m["scenarios"]}
    assert recorded == set(EXPECTED)
    for source in MANIFEST:
        files = {p.stem for p in (CORPUS / source).glob("*.json")}
        assert files == set(MANIFEST[source]["scenarios"]), source


@pytest.mark.parametrize(("source", "scenario"), sorted(EXPECTED))
def test_recorded_spans_classified_as_expected(source: str, scenario: str) -> None:
    request = read_corpus(CORPUS / source / f"{scenario}.json")
    assert summary(request) == sorted(EXPECTED[source, scenario])


@pytest.mark.parametrize(("source", "scenario"), sorted(EXPECTED))
def test_no_per_run_id_in_labels(source: str, scenario: str) -> None:
    for _, f in facts_of(source, scenario):
        for key in KEYS:
            assert not looks_like_run_id(f.label(key)), (key, f.label(key))


def test_pydantic_ai_run_ids_and_tokens() -> None:
    spans = list(facts_of("pydantic_ai", "success"))
    run_ids = {f.run_id for _, f in spans}
    assert len(run_ids) == 1 and looks_like_run_id(run_ids.pop())  # gen_ai.conversation.id
    chats = [f for _, f in spans if f.role is Role.INFERENCE]
    assert all(f.input_tokens and f.output_tokens for f in chats)
    assert [f.label("model") for f in chats] == ["function:model:"] * 2
    tool = next(f for _, f in spans if f.role is Role.TOOL_CALL)
    assert tool.label("tool_call_id").startswith("pyd_ai_")


def test_model_retry_flagged_only_on_the_retried_call() -> None:
    tools = [f for _, f in facts_of("pydantic_ai", "model_retry") if f.role is Role.TOOL_CALL]
    assert [f.model_retry for f in tools] == [True, False] or [f.model_retry for f in tools] == [
        False,
        True,
    ]
    for scenario in ("tool_error", "tool_timeout"):
        assert not any(f.model_retry for _, f in facts_of("pydantic_ai", scenario))


@pytest.mark.parametrize("source", ["langgraph_openinference", "langgraph_openllmetry"])
def test_langgraph_tokens(source: str) -> None:
    chats = [f for _, f in facts_of(source, "success") if f.role is Role.INFERENCE]
    assert [(f.input_tokens, f.output_tokens) for f in chats] == [(10, 5), (10, 5)]


@pytest.mark.parametrize("source", ["mcp_stdio", "mcp_http", "mcp_openinference"])
def test_mcp_layers_join_by_jsonrpc_id_and_name_the_server(source: str) -> None:
    spans = list(facts_of(source, "success"))
    client = next(f for _, f in spans if f.role is Role.MCP_CLIENT and f.is_tool_layer)
    server = next(f for _, f in spans if f.role is Role.MCP_SERVER and f.is_tool_layer)
    assert client.label("jsonrpc_request_id") == server.label("jsonrpc_request_id") != ""
    assert server.server == "mcp-calc-server"  # the server's service.name
    # both sides in one trace: the SDK carries the context
    client_span = next(s for s, f in spans if f is client)
    server_span = next(s for s, f in spans if f is server)
    assert client_span.trace_id == server_span.trace_id
    assert server_span.parent_span_id == client_span.span_id


def test_pydantic_ai_mcp_four_layers_of_one_call() -> None:
    layers = [f for _, f in facts_of("pydantic_ai_mcp", "success") if f.is_tool_layer]
    assert sorted((f.role.value, f.dialect) for f in layers) == [
        ("mcp_client", "genai"),  # fastmcp's client span
        ("mcp_client", "mcp_sdk"),  # the mcp SDK's client span
        ("mcp_server", "mcp_sdk"),  # the server process
        ("tool_call", "genai"),  # pydantic-ai's execute_tool
    ]
    assert {f.label("tool_name") for f in layers} == {"add"}


def test_openllmetry_mcp_client_spans() -> None:
    """OpenLLMetry's MCP instrumentation (mcp 1.x): the client's "<tool>.tool" span is the
    client side of an MCP tool call, its "<method>.mcp" spans other requests."""
    layers = [f for _, f in facts_of("mcp_openllmetry", "tool_error") if f.is_tool_layer]
    assert [(f.role, f.label("tool_name"), f.error_type) for f in layers] == [
        (Role.MCP_CLIENT, "divide", "tool_error")
    ]


@pytest.mark.parametrize(
    ("source", "role"),
    [
        ("pydantic_ai", Role.TOOL_CALL),
        ("pydantic_ai_mcp", Role.MCP_SERVER),
        ("mcp_http", Role.MCP_SERVER),
        ("langgraph_openinference", Role.TOOL_CALL),
        ("langgraph_openllmetry", Role.TOOL_CALL),
    ],
)
def test_slow_tool_takes_its_time(source: str, role: Role) -> None:
    """The recordings are real runs: the slow tool's span lasts its 0.2 s sleep."""
    spans = [s for s, f in facts_of(source, "slow_tool") if f.role is role and f.is_tool_layer]
    assert spans
    for span in spans:
        assert span.end_time_unix_nano - span.start_time_unix_nano >= 200_000_000
