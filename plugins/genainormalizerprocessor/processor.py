"""The ``gen_ai_normalizer`` processor instance."""

from __future__ import annotations

from typing import Any

from pipeline import Component, Consumer, CreateSettings, Payload
from plugins._agentdialects import (
    SEMCONV_SCHEMA_URL,
    Dialects,
    Role,
    SpanFacts,
    first_exception_type,
    load_dialects,
)

# label -> the conventions' attribute
TARGETS: dict[str, str] = {
    "agent_name": "gen_ai.agent.name",
    "tool_name": "gen_ai.tool.name",
    "tool_call_id": "gen_ai.tool.call.id",
    "tool_type": "gen_ai.tool.type",
    "jsonrpc_request_id": "jsonrpc.request.id",
    "mcp_method": "mcp.method.name",
    "mcp_session_id": "mcp.session.id",
    "server_address": "server.address",
    "server_port": "server.port",
    "error_type": "error.type",
    "model": "gen_ai.request.model",
    "provider": "gen_ai.provider.name",
    "a2a_message_type": "a2a.method",
    "input_tokens": "gen_ai.usage.input_tokens",
    "output_tokens": "gen_ai.usage.output_tokens",
}
INTEGER_TARGETS = frozenset({"server.port", "gen_ai.usage.input_tokens",
                             "gen_ai.usage.output_tokens"})  # fmt: skip
OPERATIONS = {
    Role.WORKFLOW: "invoke_workflow",
    Role.AGENT_RUN: "invoke_agent",
    Role.CREATE_AGENT: "create_agent",
    Role.TOOL_CALL: "execute_tool",
    Role.INFERENCE: "chat",
}
INFERENCE_OPERATIONS = frozenset(
    {"chat", "text_completion", "generate_content", "embeddings", "retrieval"}
)


class GenAINormalizerProcessor(Component):
    """Adds the conventions' attributes to every span of a normalized dialect (an attribute
    the span already has is kept as it is), and drops the originals when told to."""

    mutates_data = True

    def __init__(self, settings: CreateSettings, config: Any, nxt: Consumer) -> None:
        self.settings = settings
        self.next = nxt
        self.dialects: Dialects = load_dialects(config.dialects)
        self.sources: dict[str, bool] = config.source_options()
        self.overwrite_schema_url: bool = config.overwrite_schema_url
        self.needles = self.dialects.needles
        self.normalized = 0

    async def consume(self, data: Payload) -> None:
        if data.item_count() and self._may_hold_agent_spans(data):
            self.process(data)
        await self.next.consume(data)

    def _may_hold_agent_spans(self, data: Payload) -> bool:
        """A request none of whose bytes name what starts a dialect's detection passes unread."""
        if self.needles is None:
            return True
        raw = data.to_bytes()
        return any(n in raw for n in self.needles)

    def process(self, data: Payload) -> None:
        msg = data.mutable_message()
        dialects, sources = self.dialects, self.sources
        for rs in msg.resource_spans:
            service = ""
            for kv in rs.resource.attributes:
                if kv.key == "service.name":
                    service = kv.value.string_value
            for ss in rs.scope_spans:
                scope = ss.scope.name
                changed = False
                for span in ss.spans:
                    attrs = {kv.key: kv.value for kv in span.attributes}
                    facts, read_from = dialects.explain(
                        span.name,
                        span.kind,
                        attrs,
                        scope=scope,
                        root=not span.parent_span_id,
                        status_code=span.status.code,
                        exception_type=first_exception_type(span),
                        service=service,
                    )
                    if facts.dialect not in sources or facts.role is Role.NONE:
                        continue
                    self._normalize(span, attrs, facts, read_from, sources[facts.dialect])
                    changed = True
                    self.normalized += 1
                if changed and self.overwrite_schema_url:
                    ss.schema_url = SEMCONV_SCHEMA_URL

    @staticmethod
    def _normalize(
        span: Any,
        attrs: dict[str, Any],
        facts: SpanFacts,
        read_from: dict[str, str],
        remove_originals: bool,
    ) -> None:
        new: dict[str, str | int] = {}
        operation = OPERATIONS.get(facts.role)
        if facts.role is Role.INFERENCE:
            given = facts.label("operation")
            operation = given if given in INFERENCE_OPERATIONS else "chat"
        if operation and "gen_ai.operation.name" not in attrs:
            new["gen_ai.operation.name"] = operation
        if facts.role is Role.WORKFLOW and facts.label("workflow_type"):
            new["gen_ai.workflow.name"] = facts.label("workflow_type")
        for label, target in TARGETS.items():
            if target in attrs or target in new:
                continue
            if label == "input_tokens":
                value: str | int | None = facts.input_tokens
            elif label == "output_tokens":
                value = facts.output_tokens
            else:
                value = facts.labels.get(label) or None
            if value is None:
                continue
            if target in INTEGER_TARGETS:
                try:
                    new[target] = int(value)
                except ValueError:
                    continue
            else:
                new[target] = str(value)
        if remove_originals:
            drop = {k for k in read_from.values() if k not in new and k not in _CONVENTIONS}
            if drop:
                kept = [kv for kv in span.attributes if kv.key not in drop]
                del span.attributes[:]
                span.attributes.extend(kept)
        for key, v in new.items():
            kv = span.attributes.add()
            kv.key = key
            if isinstance(v, int):
                kv.value.int_value = v
            else:
                kv.value.string_value = v


# attributes that are already the conventions' names: never dropped as "originals"
_CONVENTIONS = frozenset({*TARGETS.values(), "gen_ai.operation.name", "gen_ai.workflow.name",
                          "gen_ai.usage.prompt_tokens", "gen_ai.usage.completion_tokens",
                          "gen_ai.response.model", "gen_ai.system", "gen_ai.agent.id",
                          "gen_ai.conversation.id"})  # fmt: skip
