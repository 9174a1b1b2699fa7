"""Decode only what is touched: a filter on the span name and a transform setting one attribute
never decode a span (nor the request); a span is decoded only when a statement changes it in a
way bytes cannot (an attribute it already has), and the payload given is never changed."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from pipeline import pdata
from pipeline.ottl import compile_conditions, compile_statements
from pipeline.ottl.runner import Filter, Group, filter_payload, transform
from pipeline.ottl.views import LazySpan
from tests.plugins.ottl.support import plain, traces


@pytest.fixture
def decoded(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    seen: list[str] = []
    real_span = LazySpan.full_class

    class SpySpan:
        @staticmethod
        def FromString(data: bytes) -> Any:
            seen.append("span")
            return real_span.FromString(data)

    def spy_message(self: pdata.Payload) -> Any:
        seen.append("request")
        raise AssertionError("the request was decoded")

    monkeypatch.setattr(LazySpan, "full_class", SpySpan)
    monkeypatch.setattr(pdata.Payload, "message", spy_message)
    return seen


def _run(payload: pdata.Traces, conditions: list[str], statements: list[str]) -> Any:
    ctx, conds = compile_conditions(conditions, "traces")
    kept, dropped = filter_payload(payload, [Filter(ctx, conds, "propagate")], lambda *a: None)
    assert kept is not None
    sctx, stmts = compile_statements(statements, "traces")
    return transform(kept, [Group(sctx, stmts, [], "propagate")], lambda *a: None), dropped


def test_name_filter_and_attribute_set_decode_no_span(decoded: list[str]) -> None:
    spans = [{"name": "health-check" if i % 5 == 0 else f"op-{i}", "attributes": {"a": i}}
             for i in range(20)]  # fmt: skip
    payload = traces(spans)
    before = payload.to_bytes()
    out, dropped = _run(
        payload,
        ['span.name == "health-check"'],
        ['set(span.attributes["env"], "prod")', 'set(span.attributes["n"], 1)'],
    )
    assert decoded == []
    assert dropped == 4 and out.item_count() == 16
    assert payload.to_bytes() == before  # the payload given is untouched
    items = plain(pdata.Signal.TRACES, [ExportTraceServiceRequest.FromString(out.to_bytes())])
    assert [s["name"] for s in items] == [f"op-{i}" for i in range(20) if i % 5]
    assert all(s["attributes"]["env"] == "prod" and s["attributes"]["n"] == 1 for s in items)


def test_where_on_an_attribute_reads_only_spans_that_have_it(decoded: list[str]) -> None:
    payload = traces([{"attributes": {"user.email": "a@b"}}, {"attributes": {"x": 1}}])
    _, stmts = compile_statements(
        ['set(attributes["user.hash"], SHA256(attributes["user.email"])) where '
         'attributes["user.email"] != nil',
         'delete_key(attributes, "user.email") where attributes["user.email"] != nil'],
        "traces", "span",
    )  # fmt: skip
    out = transform(payload, [Group("span", stmts, [], "propagate")], lambda *a: None)
    assert decoded == ["span"]  # only the span whose attribute is deleted
    items = plain(pdata.Signal.TRACES, [ExportTraceServiceRequest.FromString(out.to_bytes())])
    assert set(items[0]["attributes"]) == {"user.hash"} and items[1]["attributes"] == {"x": 1}


def test_replacing_an_existing_attribute_decodes_that_span_only(decoded: list[str]) -> None:
    payload = traces([{"attributes": {"env": "dev"}}, {"attributes": {}}])
    out, _ = _run(payload, ['span.name == "never"'], ['set(span.attributes["env"], "prod")'])
    assert decoded == ["span"]
    items = plain(pdata.Signal.TRACES, [ExportTraceServiceRequest.FromString(out.to_bytes())])
    assert [s["attributes"] for s in items] == [{"env": "prod"}, {"env": "prod"}]


def test_nothing_to_do_passes_the_payload_itself(decoded: list[str]) -> None:
    payload = traces([{"name": "a"}])
    ctx, conds = compile_conditions(['span.name == "health-check"'], "traces")
    kept, dropped = filter_payload(payload, [Filter(ctx, conds, "propagate")], lambda *a: None)
    assert kept is payload and dropped == 0 and decoded == []
