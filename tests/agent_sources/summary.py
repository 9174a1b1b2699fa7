"""What the tests compare: a recorded or live request read through the dialect tables, as
sorted rows ``(role, dialect, ok|failed, error_type, label=value...)`` of the spans that have
a role."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from plugins._agentdialects import Dialects, Role, SpanFacts, default_dialects

KEYS = ("workflow_type", "agent_name", "tool_name", "mcp_method", "a2a_message_type")


def facts(request: Any, dialects: Dialects | None = None) -> Iterator[tuple[Any, SpanFacts]]:
    """``(span, facts)`` of every span of an ``ExportTraceServiceRequest``."""
    dialects = dialects or default_dialects()
    for rs in request.resource_spans:
        service = next(
            (kv.value.string_value for kv in rs.resource.attributes if kv.key == "service.name"),
            "",
        )
        for ss in rs.scope_spans:
            for span in ss.spans:
                yield span, dialects.classify_span(span, ss.scope.name, service)


def summary(request: Any) -> list[tuple[str, ...]]:
    rows = []
    for _, f in facts(request):
        if f.role is Role.NONE:
            continue
        labels = [f"{k}={f.labels[k]}" for k in KEYS if k in f.labels]
        rows.append(
            (f.role.value, f.dialect, "failed" if f.failed else "ok", f.error_type, *labels)
        )
    return sorted(rows)
