"""The ``gen_ai_normalizer`` processor: every recorded span of every dialect, once normalized,
reads the same (roles, labels, tokens) to a classifier that knows only the GenAI conventions;
options; hostile attribute values; through a running gateway."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from pydantic import ValidationError

from pipeline import Kind, Signal
from pipeline.pdata import Traces
from pipeline.testing import SinkConsumer, check_factory, create_settings
from plugins._agentdialects import (
    SEMCONV_SCHEMA_URL,
    Dialects,
    Role,
    builtin_tables,
    default_dialects,
)
from plugins.genainormalizerprocessor import (
    GenAINormalizerConfig,
    GenAINormalizerProcessorFactory,
)
from tests.agent_sources._otel import CORPUS, read_corpus
from tests.plugins.ottl.support import through_gateway, traces

GENAI_ONLY = Dialects([t for t in builtin_tables() if t.name == "genai"])
COMPARED = ("agent_name", "tool_name", "tool_call_id", "jsonrpc_request_id", "mcp_method",
            "error_type", "a2a_message_type")  # fmt: skip
CORPUS_FILES = sorted(
    (p.parent.name, p.stem) for p in CORPUS.glob("*/*.json") if p.parent.name != "pydantic_ai"
)


async def normalize(request: ExportTraceServiceRequest, **options: Any) -> Any:
    factory = GenAINormalizerProcessorFactory()
    config = GenAINormalizerConfig.model_validate(options)
    sink = SinkConsumer()
    processor = factory.create_traces(
        create_settings(Kind.PROCESSOR, "gen_ai_normalizer"), config, sink
    )
    await processor.consume(Traces.from_message(request))
    return sink.received[0].message()


def facts(request: Any, dialects: Dialects) -> list[Any]:
    out = []
    for rs in request.resource_spans:
        for ss in rs.scope_spans:
            for span in ss.spans:
                out.append((span, dialects.classify_span(span, ss.scope.name)))
    return out


async def test_factory_contract() -> None:
    await check_factory(GenAINormalizerProcessorFactory())


@pytest.mark.parametrize(("source", "scenario"), CORPUS_FILES)
async def test_normalized_spans_read_the_same_in_the_conventions(
    source: str, scenario: str
) -> None:
    before = facts(read_corpus(CORPUS / source / f"{scenario}.json"), default_dialects())
    after = facts(await normalize(read_corpus(CORPUS / source / f"{scenario}.json")), GENAI_ONLY)
    assert len(before) == len(after)
    for (span, was), (_, now) in zip(before, after, strict=True):
        if was.role is Role.NONE:
            continue
        assert now.role is was.role, (span.name, was, now)
        for label in COMPARED:
            assert now.label(label) == was.label(label), (span.name, label, was, now)
        assert (now.input_tokens, now.output_tokens) == (was.input_tokens, was.output_tokens)
        assert now.failed == was.failed


async def test_openinference_attributes_renamed_and_originals_removed() -> None:
    request = read_corpus(CORPUS / "langgraph_openinference" / "success.json")
    kept = await normalize(request)
    removed = await normalize(
        read_corpus(CORPUS / "langgraph_openinference" / "success.json"),
        sources=[{"name": "openinference", "remove_originals": True}],
    )

    def tool(req: Any) -> dict[str, Any]:
        span = next(
            s for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans
            if s.name == "add"
        )  # fmt: skip
        return {kv.key: kv.value for kv in span.attributes}

    assert tool(kept)["gen_ai.tool.name"].string_value == "add"
    assert tool(kept)["gen_ai.operation.name"].string_value == "execute_tool"
    assert "tool.name" in tool(kept)
    assert "tool.name" not in tool(removed) and tool(removed)["gen_ai.tool.name"].string_value
    # the marker that says which dialect a span came from is not a mapped original
    assert "openinference.span.kind" in tool(removed)


async def test_only_the_listed_sources_and_schema_url() -> None:
    request = read_corpus(CORPUS / "langgraph_openllmetry" / "success.json")
    out = await normalize(request, sources=[{"name": "openinference"}], overwrite_schema_url=True)
    assert all(ss.schema_url != SEMCONV_SCHEMA_URL
               for rs in out.resource_spans for ss in rs.scope_spans)  # fmt: skip
    out = await normalize(
        read_corpus(CORPUS / "langgraph_openllmetry" / "success.json"),
        overwrite_schema_url=True,
    )
    assert any(ss.schema_url == SEMCONV_SCHEMA_URL
               for rs in out.resource_spans for ss in rs.scope_spans)  # fmt: skip


async def test_existing_convention_attributes_are_not_overwritten() -> None:
    payload = traces(
        [
            {
                "name": "t",
                "attributes": {
                    "openinference.span.kind": "TOOL",
                    "tool.name": "a",
                    "gen_ai.tool.name": "b",
                },
            }
        ]
    )
    out = await normalize(payload.message())
    span = out.resource_spans[0].scope_spans[0].spans[0]
    names = [kv.value.string_value for kv in span.attributes if kv.key == "gen_ai.tool.name"]
    assert names == ["b"]


@pytest.mark.parametrize(
    "attributes",
    [
        {"openinference.span.kind": "LLM", "llm.token_count.prompt": "not a number",
         "llm.token_count.completion": -5},
        {"openinference.span.kind": "TOOL", "tool.name": "x" * 100_000},
        {"openinference.span.kind": "TOOL", "tool.name": 12.5},
        {"traceloop.span.kind": "tool", "traceloop.entity.name": ""},
        {"openinference.span.kind": 7},
        {"mcp.method.name": "tools/call", "server.port": "not-a-port"},
    ],
)  # fmt: skip
async def test_hostile_attribute_values(attributes: dict[str, Any]) -> None:
    payload = traces([{"name": "tools/call x", "kind": 3, "attributes": attributes}])
    out = await normalize(payload.message())
    span = out.resource_spans[0].scope_spans[0].spans[0]
    assert span.name == "tools/call x"
    for kv in span.attributes:
        if kv.key in ("gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens"):
            assert kv.value.int_value >= 0


def test_config_refuses_unknown_sources_and_duplicates() -> None:
    with pytest.raises(ValidationError, match="unknown dialects"):
        GenAINormalizerConfig.model_validate({"sources": [{"name": "nope"}]})
    with pytest.raises(ValidationError, match="twice"):
        GenAINormalizerConfig.model_validate(
            {"sources": [{"name": "openllmetry"}, {"name": "openllmetry"}]}
        )
    with pytest.raises(ValidationError):
        GenAINormalizerConfig.model_validate({"sources": [{"name": "openllmetry", "x": 1}]})


def test_default_sources_are_every_dialect_but_the_conventions() -> None:
    options = GenAINormalizerConfig().source_options()
    assert "genai" not in options and {"openllmetry", "openinference", "mcp_sdk"} <= set(options)
    assert not any(options.values())


async def test_through_a_running_gateway() -> None:
    request = read_corpus(CORPUS / "langgraph_openinference" / "success.json")
    got = await through_gateway(
        {"gen_ai_normalizer": {"sources": [{"name": "openinference"}]}},
        Signal.TRACES,
        Traces.from_message(request),
    )
    tools = [s for s in got if s["name"] == "add"]
    assert tools and tools[0]["attributes"]["gen_ai.tool.name"] == "add"


async def test_requests_without_agent_spans_pass_unread() -> None:
    payload = traces([{"name": "GET /", "attributes": {"http.request.method": "GET"}}])
    encoded = payload.to_bytes()
    factory = GenAINormalizerProcessorFactory()
    sink = SinkConsumer()
    processor = factory.create_traces(
        create_settings(Kind.PROCESSOR, "gen_ai_normalizer"), GenAINormalizerConfig(), sink
    )
    fresh = Traces(encoded)
    await processor.consume(fresh)
    assert sink.received[0] is fresh and fresh.to_bytes() == encoded
    assert default_dialects().needles and b"gen_ai.operation.name" in default_dialects().needles
