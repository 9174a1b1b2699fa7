"""The attribute conventions the agent components read, shared by the ``workflow`` processor and
the ``agentmetrics`` connector (see ``docs/agent-conventions.md``).

Every attribute name is an option of :class:`AttributeNames`, so a system that spells them
differently is configured, not patched. The helpers here work on decoded OTLP ``Span`` messages
and on ``{key: AnyValue}`` views of their attributes; they never hold per-span state.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from google.protobuf.message import DecodeError
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from pydantic import Field

from pipeline import ConfigModel
from plugins._agentdialects import looks_like_run_id

SPAN_KIND_SERVER = 2
SPAN_KIND_PRODUCER = 4
SPAN_KIND_CONSUMER = 5
STATUS_OK = 1
STATUS_ERROR = 2

OUTCOMES = ("success", "failed", "timeout", "cancelled")


class AttributeNames(ConfigModel):
    """Names of the attributes the gateway reads and writes; defaults are the conventions."""

    # workflows (read on the root span; written on every span by the workflow processor)
    workflow_span_prefix: str = "workflow."
    workflow_name: str = "workflow.name"
    workflow_id: str = "workflow.id"
    workflow_type: str = "workflow.type"
    workflow_outcome: str = "workflow.outcome"
    workflow_complexity_tier: str = "workflow.complexity_tier"
    workflow_agent_id: str = "workflow.agent.id"
    # the execution's duration in seconds (a double), written by the workflow processor on
    # the trace's root when the execution is a span below it (an HTTP server span above an
    # agent run): the workflow's duration is the execution's, not the root's
    workflow_duration: str = "workflow.duration"
    # written by the workflow processor on the parentless spans of a workflow other than its
    # root (several share a trace id when a process did not propagate the context): a trace
    # is one execution, read on its root; a span carrying it is no workflow root
    workflow_secondary_root: str = "workflow.secondary_root"
    # GenAI agents
    agent_id: str = "gen_ai.agent.id"
    agent_name: str = "gen_ai.agent.name"
    operation_name: str = "gen_ai.operation.name"
    tool_operation: str = "execute_tool"
    tool_name: str = "gen_ai.tool.name"
    # MCP
    mcp_method_name: str = "mcp.method.name"
    mcp_tool_method: str = "tools/call"
    mcp_server_name: str = "mcp.server.name"
    server_address: str = "server.address"
    # errors
    error_type: str = "error.type"
    error_severity: str = "error.severity"
    error_recoverable: str = "error.recoverable"
    # agent-to-agent messages
    a2a_message_type: str = "a2a.message.type"
    a2a_recipient_type: str = "a2a.recipient.type"
    a2a_sender_type: str = "a2a.sender.type"
    a2a_priority: str = "a2a.priority"
    a2a_processing_status: str = "a2a.processing.status"
    # HTTP server spans
    http_method: str = "http.request.method"
    http_route: str = "http.route"
    http_status_code: str = "http.response.status_code"
    # databases (only to name the component of an error)
    db_system: str = "db.system.name"
    db_system_legacy: str = "db.system"


class ErrorRule(ConfigModel):
    """Classifies a failed span lacking ``error.type``: if ``pattern`` (a regular expression,
    case-insensitive) matches the status message or an exception event's type or message, the
    span gets ``error.type = error_type``."""

    pattern: str
    error_type: str = Field(min_length=1)


DEFAULT_ERROR_RULES = [
    ErrorRule(pattern=r"timeout|timed out|deadline exceeded", error_type="timeout"),
    ErrorRule(pattern=r"cancel", error_type="cancelled"),
    ErrorRule(pattern=r"rate.?limit|too many requests|\b429\b", error_type="rate_limited"),
    ErrorRule(pattern=r"connection|refused|unreachable|reset by peer", error_type="connection"),
    ErrorRule(pattern=r"not found|\b404\b", error_type="not_found"),
    ErrorRule(
        pattern=r"unauthori[sz]ed|forbidden|permission|\b401\b|\b403\b",
        error_type="permission_denied",
    ),
    ErrorRule(pattern=r"invalid|validation|bad request|\b400\b", error_type="invalid_input"),
]

FALLBACK_ERROR_TYPE = "_OTHER"  # the semantic conventions' value when nothing better is known


class ErrorClassifier:
    """Applies :class:`ErrorRule` s in order; compiled once."""

    def __init__(self, rules: list[ErrorRule]) -> None:
        self._rules = [(re.compile(r.pattern, re.IGNORECASE), r.error_type) for r in rules]
        # text -> the first matching rule's error type ("" when none): status and exception
        # messages repeat, so each distinct text is matched against the rules once
        self._matched: dict[str, str] = {}

    def match(self, text: str) -> str:
        """The error type of the first rule matching ``text``, or ``""``."""
        found = self._matched.get(text)
        if found is None:
            found = next((t for regex, t in self._rules if regex.search(text)), "")
            if len(self._matched) >= 4096:
                self._matched.clear()
            self._matched[text] = found
        return found

    def classify(self, span: Any) -> str:
        """``error.type`` for a failed span that has none: an exception event's
        ``exception.type`` when present (the SDK's ``record_exception``), else the first rule
        matching the status message, else ``_OTHER``."""
        texts = [span.status.message]
        for ev in span.events:
            if ev.name == "exception":
                for kv in ev.attributes:
                    if kv.key == "exception.type" and kv.value.string_value:
                        return str(kv.value.string_value)
                    if kv.key == "exception.message":
                        texts.append(kv.value.string_value)
        for text in texts:
            if text:
                found = self.match(text)
                if found:
                    return found
        return FALLBACK_ERROR_TYPE


_TIMEOUT_RE = re.compile(r"timeout|timed out|deadline", re.IGNORECASE)
_CANCEL_RE = re.compile(r"cancel", re.IGNORECASE)


def attr_str(value: Any) -> str:
    """An ``AnyValue`` as a label string."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return str(value.string_value)
    if kind == "int_value":
        return str(value.int_value)
    if kind == "bool_value":
        return "true" if value.bool_value else "false"
    if kind == "double_value":
        return f"{value.double_value:g}"
    return ""


def attr_map(span: Any) -> dict[str, Any]:
    """``{key: AnyValue}`` of a span's attributes (one pass)."""
    return {kv.key: kv.value for kv in span.attributes}


def exception_type(span: Any) -> str:
    """``exception.type`` of the span's first exception event, or ``""``."""
    for ev in span.events:
        if ev.name == "exception":
            for kv in ev.attributes:
                if kv.key == "exception.type":
                    return str(kv.value.string_value)
    return ""


def outcome_from(
    given: str, error_text: str, exception: str, status_code: int, status_message: str
) -> str:
    """``success``, ``failed``, ``timeout`` or ``cancelled`` from what a root span says.

    A valid ``workflow.outcome`` (``given``) wins. Otherwise, when the root failed (an ERROR
    status or an ``error.type``): an error type, exception type or status message naming a
    timeout or a cancellation decides, else ``failed``; a root that did not fail is
    ``success``.
    """
    if given in OUTCOMES:
        return given
    failed = status_code == STATUS_ERROR or bool(error_text)
    if not failed:
        return "success"
    evidence = " ".join((error_text, exception, status_message))
    if _TIMEOUT_RE.search(evidence):
        return "timeout"
    if _CANCEL_RE.search(evidence):
        return "cancelled"
    return "failed"


def workflow_outcome(span: Any, attrs: Mapping[str, Any], names: AttributeNames) -> str:
    """:func:`outcome_from` for a decoded root span and its ``{key: AnyValue}``."""
    given = attrs.get(names.workflow_outcome)
    error_type = attrs.get(names.error_type)
    return outcome_from(
        attr_str(given) if given is not None else "",
        attr_str(error_type) if error_type is not None else "",
        exception_type(span),
        span.status.code,
        span.status.message,
    )


def duration_of(value: Any) -> float | None:
    """A ``workflow.duration`` value in seconds (a decoded ``AnyValue`` or its encoding; a
    double, an integer or a numeric string), or ``None`` when it is none of these, negative
    or not finite."""
    if isinstance(value, bytes | bytearray):
        try:
            value = AnyValue.FromString(bytes(value))
        except DecodeError:
            return None
    kind = value.WhichOneof("value")
    if kind == "double_value":
        seconds = float(value.double_value)
    elif kind == "int_value":
        seconds = float(value.int_value)
    elif kind == "string_value":
        try:
            seconds = float(value.string_value)
        except ValueError:
            return None
    else:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def workflow_duration(span: Any, attrs: Mapping[str, Any], names: AttributeNames) -> float:
    """The duration of a workflow root's execution in seconds: ``workflow.duration`` when the
    workflow processor wrote it (the execution is below the root), else the root's own."""
    given = attrs.get(names.workflow_duration)
    if given is not None:
        seconds = duration_of(given)
        if seconds is not None:
            return seconds
    return float((span.end_time_unix_nano - span.start_time_unix_nano) / 1e9)


def is_workflow_root(span: Any, attrs: Mapping[str, Any], names: AttributeNames) -> bool:
    """A root span named ``workflow.<type>`` or carrying ``workflow.name`` / ``workflow.id``,
    unless the workflow processor marked it ``workflow.secondary_root`` (the trace's
    workflow is read on its other root)."""
    return names.workflow_secondary_root not in attrs and (
        span.name.startswith(names.workflow_span_prefix)
        or names.workflow_name in attrs
        or names.workflow_id in attrs
    )


def workflow_type_of(wf_type: str, wf_name: str, span_name: str, prefix: str) -> str:
    """A workflow's type: its ``workflow.type``, else its ``workflow.name``, else its span
    name (less the prefix), else ``unknown``; a value shaped like a per-run id
    (:func:`~plugins._agentdialects.looks_like_run_id`) is skipped, as the dialect tables skip
    it for ``workflow_type``: a UUID-named workflow must not make one label per run. The C
    ingest (``workflow_type_of`` in ``plugins/_native/_tracewire.c``) and the agentmetrics
    connector's C scanner (``workflow_type`` in ``plugins/_native/_agentscan.c``) read the same."""
    for text in (wf_type, wf_name):
        if text and not looks_like_run_id(text):
            return text
    rest = span_name[len(prefix) :] if span_name.startswith(prefix) else span_name
    return rest if rest and not looks_like_run_id(rest) else "unknown"


def workflow_type(span: Any, attrs: Mapping[str, Any], names: AttributeNames) -> str:
    """A decoded root span's workflow type, by :func:`workflow_type_of`'s rule."""

    def get(key: str) -> str:
        value = attrs.get(key)
        return attr_str(value) if value is not None else ""

    return workflow_type_of(
        get(names.workflow_type),
        get(names.workflow_name),
        span.name,
        names.workflow_span_prefix,
    )


def agent_label(name: str | None, agent_id: str | None) -> str:
    """The agent a span names, as the workflow processor reads it (``agent_of`` in
    ``plugins/workflowprocessor/rules.py``, the ``gateway`` dialect's ``agent_name``): its
    ``gen_ai.agent.name`` (``name``), else its ``gen_ai.agent.id`` (``agent_id``), the first
    non-empty one not shaped like a per-run id
    (:func:`~plugins._agentdialects.looks_like_run_id`: a UUID-shaped id is a run's, never a
    label); ``""`` when neither. The agentmetrics connector's C scanner (``workflow_agent`` in
    ``plugins/_native/_agentscan.c``) reads the same. (``agent_of`` keeps its own loop over
    encoded values: see there why.)"""
    for text in (name, agent_id):
        if text and not looks_like_run_id(text):
            return text
    return ""


def is_tool_call(attrs: Mapping[str, Any], names: AttributeNames) -> bool:
    """``gen_ai.operation.name = execute_tool`` or ``mcp.method.name = tools/call``."""
    op = attrs.get(names.operation_name)
    if op is not None and op.string_value == names.tool_operation:
        return True
    method = attrs.get(names.mcp_method_name)
    return method is not None and method.string_value == names.mcp_tool_method


class ComplexityTier(ConfigModel):
    """Upper bounds of one tier; a workflow is in the first tier whose every bound it meets."""

    name: str
    max_spans: int = Field(ge=0)
    max_tool_calls: int = Field(ge=0)
    max_depth: int = Field(ge=0)


DEFAULT_TIERS = [
    ComplexityTier(name="simple", max_spans=10, max_tool_calls=2, max_depth=3),
    ComplexityTier(name="moderate", max_spans=50, max_tool_calls=10, max_depth=6),
]
TOP_TIER = "complex"
