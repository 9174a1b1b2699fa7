"""What the agent metrics must say about the spans of the real-library scenarios."""

from __future__ import annotations

# pydantic_mcp_app.py: (tool, status, error_type) -> calls, MCP tools and function tools
EXPECTED_MCP = {
    ("search", "success", "none"): 1,
    ("broken", "error", "tool_error"): 1,
    ("slow", "success", "none"): 1,
}
EXPECTED_FUNCTION = {
    ("local_add", "success", "none"): 1,
    ("picky", "retry", "none"): 1,
    ("wait", "error", "timeout"): 1,
    ("explode", "error", "RuntimeError"): 1,
}
