"""A stand-in for ``plugins._agentdialects`` (issue 12, built on another branch) until it is
merged: the same ``classify(...) -> SpanFacts`` shape for the OpenTelemetry GenAI / MCP
conventions, the ``mcp`` SDK's and pydantic-ai's spans. Replaced by the shared tables."""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from plugins._spanview import cached_str


class Role(enum.Enum):
    NONE = "none"
    WORKFLOW = "workflow"
    AGENT_RUN = "agent_run"
    CREATE_AGENT = "create_agent"
    TOOL_CALL = "tool_call"
    INFERENCE = "inference"
    MCP_CLIENT = "mcp_client"
    MCP_SERVER = "mcp_server"
    A2A_CLIENT = "a2a_client"
    A2A_SERVER = "a2a_server"


INFERENCE_OPS = frozenset(
    {"chat", "text_completion", "generate_content", "embeddings", "retrieval"}
)
RETRY_TYPES = frozenset({"ModelRetry", "ToolRetryError"})
_TOOL_NAME = re.compile(r"^(?:execute_tool |tools/call |MCP send tools/call )(\S+)$")
_AGENT_NAME = re.compile(r"^invoke_agent (.+)$")


@dataclass(frozen=True, slots=True)
class SpanFacts:
    role: Role
    dialect: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    run_id: str = ""
    input_tokens: int | None = None
    output_tokens: int | None = None
    failed: bool = False
    exception_type: str = ""
    model_retry: bool = False

    def label(self, name: str, default: str = "") -> str:
        return self.labels.get(name, default)

    @property
    def mcp_method(self) -> str:
        return self.labels.get("mcp_method", "")

    @property
    def is_tool_layer(self) -> bool:
        if self.role is Role.TOOL_CALL:
            return True
        return self.role in (Role.MCP_CLIENT, Role.MCP_SERVER) and self.mcp_method == "tools/call"

    @property
    def server(self) -> str:
        address = self.labels.get("server_address", "")
        port = self.labels.get("server_port", "")
        return f"{address}:{port}" if address and port else address


DETECT_KEYS = (
    "gen_ai.operation.name",
    "mcp.method.name",
    "mcp.server.name",
    "a2a.method",
    "a2a.method.name",
    "a2a.task.id",
)
DETECT_NAME_PREFIXES = ("a2a.client.", "a2a.server.")
DETECT_SCOPE_PREFIXES = ("a2a-python-sdk",)


def _int(raw: bytes | None) -> int | None:
    if raw is None:
        return None
    text = cached_str(raw)
    return int(text) if text.isdigit() and len(text) < 19 else None


def classify(
    name: str,
    kind: int,
    attrs: Mapping[str, Any],
    *,
    scope: str = "",
    root: bool = False,
    status_code: int = 0,
    exception_type: str = "",
) -> SpanFacts:
    """``attrs``: ``{key: encoded AnyValue}`` (a span view's attribute map)."""

    def get(key: str) -> str:
        raw = attrs.get(key)
        return cached_str(raw) if raw is not None else ""

    op = get("gen_ai.operation.name")
    method = get("mcp.method.name")
    role = Role.NONE
    if method and kind == 3:
        role = Role.MCP_CLIENT
    elif method and kind == 2:
        role = Role.MCP_SERVER
    elif op == "invoke_agent":
        role = Role.AGENT_RUN
    elif op == "invoke_workflow":
        role = Role.WORKFLOW
    elif op == "create_agent":
        role = Role.CREATE_AGENT
    elif op == "execute_tool":
        role = Role.TOOL_CALL
    elif op in INFERENCE_OPS:
        role = Role.INFERENCE
    elif method:
        role = Role.MCP_CLIENT
    elif get("a2a.method") or get("a2a.method.name") or get("a2a.task.id"):
        role = Role.A2A_CLIENT if kind in (3, 4) else Role.A2A_SERVER if kind in (2, 5) else role
    labels: dict[str, str] = {}
    tool = get("gen_ai.tool.name")
    if not tool:
        m = _TOOL_NAME.match(name)
        tool = m.group(1) if m else ""
    agent = get("gen_ai.agent.name")
    if not agent:
        m = _AGENT_NAME.match(name)
        agent = m.group(1) if m else ""
    for label, value in (
        ("tool_name", tool),
        ("agent_name", agent),
        ("tool_call_id", get("gen_ai.tool.call.id")),
        ("tool_type", get("gen_ai.tool.type")),
        ("jsonrpc_request_id", get("jsonrpc.request.id")),
        ("mcp_method", method),
        ("mcp_session_id", get("mcp.session.id")),
        ("server_address", get("mcp.server.name") or get("server.address")),
        ("server_port", get("server.port") if not get("mcp.server.name") else ""),
        ("error_type", get("error.type")),
        ("model", get("gen_ai.response.model") or get("gen_ai.request.model")),
        ("provider", get("gen_ai.provider.name") or get("gen_ai.system")),
        ("operation", op),
        ("a2a_message_type", get("a2a.method") or get("a2a.method.name")),
    ):
        if value:
            labels[label] = value
    if role is Role.TOOL_CALL and get("mcp.server.name"):
        labels.setdefault("mcp_method", "tools/call")
    input_tokens = _int(attrs.get("gen_ai.usage.input_tokens"))
    output_tokens = _int(attrs.get("gen_ai.usage.output_tokens"))
    return SpanFacts(
        role=role,
        dialect="genai",
        labels=labels,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        failed=status_code == 2 or bool(labels.get("error_type")),
        exception_type=exception_type,
        model_retry=bool(exception_type) and exception_type.rsplit(".", 1)[-1] in RETRY_TYPES,
    )
