"""The schema of a dialect table (what a table may say), validated with pydantic.

A *dialect* is how one instrumentation library spells agent telemetry. Its table says

* ``detect``: a cheap test that a span may be in this dialect (one of these attribute keys
  present, a span-name prefix, an instrumentation scope prefix); a span failing it skips the
  dialect's rules;
* ``rules``: in order, the first whose ``match`` holds gives the span's :class:`Role`; each
  ``match`` is a list of alternatives (OR), each alternative a set of conditions (AND);
* ``labels``: for each label (:data:`LABELS`), the attributes to read in order (a plain string
  is an attribute key; ``{name_regex: ...}`` takes the first group of a regular expression
  matched against the span name); a rule's own ``labels`` come before the dialect's;
* ``run_ids``: attributes holding per-run ids (a UUID in ``gen_ai.agent.id``, a conversation
  id): they go to :attr:`SpanFacts.run_id`, never to a label;
* ``retry_exception_types``: exception types that mean "the model is asked to retry" (not a
  tool failure);
* ``peer_error_types``: exception types that mean "the remote peer answered with an error"
  when a CLIENT span records them (a2a-sdk's ``a2a.utils.errors.*``, raised from a JSON-RPC
  error response): the failure arose at the peer, which counts it; the client's spans carry it
  up without counting it again. An entry matches the whole type or its last dotted part; an
  entry ending with ``.`` matches every type it prefixes (a module's errors).

Tables are data: the built-in ones are ``builtin.yaml`` beside this module; config and plugins
add more of the same shape (see ``docs/agent-conventions.md``).
"""

from __future__ import annotations

import enum
import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from pipeline import ConfigModel


class Role(enum.Enum):
    """What a span is, in agent terms."""

    NONE = "none"
    WORKFLOW = "workflow"  # a workflow run (invoke_workflow, traceloop workflow, workflow.* root)
    AGENT_RUN = "agent_run"  # an agent invocation (invoke_agent)
    CREATE_AGENT = "create_agent"  # an agent being created: not an execution
    TOOL_CALL = "tool_call"  # a framework's tool execution (execute_tool)
    INFERENCE = "inference"  # a model call (chat, text_completion, embeddings, ...)
    MCP_CLIENT = "mcp_client"  # an MCP request sent (any method; tools/call is a tool layer)
    MCP_SERVER = "mcp_server"  # an MCP request handled by a server
    A2A_CLIENT = "a2a_client"  # an agent-to-agent message sent
    A2A_SERVER = "a2a_server"  # an agent-to-agent message received / handled


ROLE_NAMES = tuple(r.value for r in Role)

# The labels a table can fill, in the order of the compiled (C-friendly) tables.
LABELS: tuple[str, ...] = (
    "workflow_type",
    "agent_name",
    "tool_name",
    "tool_call_id",
    "tool_type",
    "jsonrpc_request_id",
    "mcp_method",
    "mcp_session_id",
    "server_address",
    "server_port",
    "error_type",
    "model",
    "provider",
    "operation",
    "a2a_message_type",
    "input_tokens",
    "output_tokens",
)
TOKEN_LABELS = frozenset({"input_tokens", "output_tokens"})

_TOOL = ("tool_name", "tool_call_id", "tool_type", "jsonrpc_request_id", "mcp_method",
         "mcp_session_id", "server_address", "server_port")  # fmt: skip
ROLE_LABELS: dict[Role, frozenset[str]] = {
    Role.NONE: frozenset({"error_type", "operation"}),
    Role.WORKFLOW: frozenset({"workflow_type", "agent_name", "error_type", "operation"}),
    Role.AGENT_RUN: frozenset(
        {"workflow_type", "agent_name", "error_type", "operation", "model", "provider"}
    ),
    Role.CREATE_AGENT: frozenset({"agent_name", "operation", "model", "provider"}),
    Role.TOOL_CALL: frozenset({*_TOOL, "agent_name", "error_type", "operation"}),
    Role.INFERENCE: frozenset(
        {
            "model",
            "provider",
            "operation",
            "input_tokens",
            "output_tokens",
            "agent_name",
            "error_type",
            "server_address",
            "server_port",
        }
    ),
    Role.MCP_CLIENT: frozenset({*_TOOL, "agent_name", "error_type", "operation"}),
    Role.MCP_SERVER: frozenset({*_TOOL, "agent_name", "error_type", "operation"}),
    Role.A2A_CLIENT: frozenset(
        {
            "a2a_message_type",
            "agent_name",
            "server_address",
            "server_port",
            "error_type",
            "operation",
        }
    ),
    Role.A2A_SERVER: frozenset(
        {
            "a2a_message_type",
            "agent_name",
            "server_address",
            "server_port",
            "error_type",
            "operation",
        }
    ),
}
"""The labels a dialect's shared ``labels`` give to a span of each role (a rule's own
``labels`` and ``values`` always apply): no tool name on an agent run, no token counts on an
agent run (they are counted on its inference spans)."""

SPAN_KINDS = {"UNSPECIFIED": 0, "INTERNAL": 1, "SERVER": 2, "CLIENT": 3, "PRODUCER": 4,
              "CONSUMER": 5}  # fmt: skip
SpanKindName = Literal["UNSPECIFIED", "INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER"]


class NameRegex(ConfigModel):
    """A label taken from the span name: the first group of ``name_regex`` (or the whole match
    when it has no group)."""

    name_regex: str

    @field_validator("name_regex")
    @classmethod
    def _compiles(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as exc:
            raise ValueError(f"bad regular expression {v!r}: {exc}") from None
        return v


LabelSource = str | NameRegex


class Match(ConfigModel):
    """Conditions that must all hold (an empty match holds for every span)."""

    attributes: dict[str, list[str]] = Field(default_factory=dict)
    """``key: [values]``: the attribute's value (as a string) is one of these."""
    present: list[str] = Field(default_factory=list)
    """Attributes that must be present (any value)."""
    absent: list[str] = Field(default_factory=list)
    """Attributes that must not be present."""
    name_prefix: list[str] = Field(default_factory=list)
    """The span name starts with one of these."""
    name_equals: list[str] = Field(default_factory=list)
    """The span name is one of these."""
    name_regex: str | None = None
    """The span name matches this regular expression (``re.search``)."""
    kind: list[SpanKindName] = Field(default_factory=list)
    """The span kind is one of these."""
    scope_prefix: list[str] = Field(default_factory=list)
    """The instrumentation scope name starts with one of these."""
    root: bool | None = None
    """``true``: only a span without a parent; ``false``: only a span with one."""

    @field_validator("name_regex")
    @classmethod
    def _compiles(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as exc:
                raise ValueError(f"bad regular expression {v!r}: {exc}") from None
        return v


class Rule(ConfigModel):
    """The span has ``role`` when any of ``match`` holds."""

    role: Role
    match: list[Match] = Field(min_length=1)
    labels: dict[str, list[LabelSource]] = Field(default_factory=dict)
    """Label sources for spans of this rule, tried before the dialect's."""
    values: dict[str, str] = Field(default_factory=dict)
    """Constant labels for spans of this rule (when no source gives one), e.g.
    ``mcp_method: tools/call`` for a tool span of an MCP instrumentation."""
    reports_status: bool = False
    """Spans of this rule report the status of an answer another span gives (OpenTelemetry's
    ASGI ``http send`` span, set ERROR for a 5xx response): when one fails without recording
    an exception of its own, the failure is not its own and not counted there (the server
    span it reports for says the request failed; what failed below that, where it arose)."""

    @field_validator("role", mode="before")
    @classmethod
    def _role(cls, v: Any) -> Any:
        if isinstance(v, str) and v not in ROLE_NAMES:
            raise ValueError(f"unknown role {v!r}; one of {', '.join(ROLE_NAMES[1:])}")
        return v

    @model_validator(mode="after")
    def _labels_known(self) -> Rule:
        _check_labels(self.labels)
        _check_labels(self.values)
        return self


class DialectTable(ConfigModel):
    """One dialect (see the module docstring)."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$")
    description: str = ""
    detect: list[Match] = Field(default_factory=list)
    """Alternatives; empty: every span is tried against the rules."""
    rules: list[Rule] = Field(default_factory=list)
    labels: dict[str, list[LabelSource]] = Field(default_factory=dict)
    run_ids: list[str] = Field(default_factory=list)
    retry_exception_types: list[str] = Field(default_factory=list)
    peer_error_types: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _labels_known(self) -> DialectTable:
        _check_labels(self.labels)
        return self


def _check_labels(labels: dict[str, Any]) -> None:
    for key in labels:
        if key not in LABELS:
            raise ValueError(f"unknown label {key!r}; one of {', '.join(LABELS)}")


class DialectsConfig(ConfigModel):
    """The ``dialects:`` option of the agent components: which dialects to recognise.

    Built-in dialects and those registered by plugins are on unless named in ``disable``;
    ``tables`` adds dialects written inline, ``files`` adds YAML files each holding one table
    or a list of tables. Added tables are tried before the built-in ones (in the order given),
    so a table named like a built-in one replaces it.
    """

    disable: list[str] = Field(default_factory=list)
    tables: list[DialectTable] = Field(default_factory=list)
    files: list[str] = Field(default_factory=list)
