"""OTLP/JSON decoding under hostile input: every malformed body is an ``OTLPJSONError`` naming
what is wrong, and a body of tiny values is refused before it is parsed."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from google.protobuf.message import Message
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from plugins.otlpreceiver import otlpjson
from plugins.otlpreceiver.otlpjson import OTLPJSONBudgetError, OTLPJSONError, count_values
from tests.hostile import cost

REQUESTS: list[type[Message]] = [ExportTraceServiceRequest, ExportMetricsServiceRequest]


def spans(*items: Any) -> bytes:
    return json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": list(items)}]}]}).encode()


def refusal(data: bytes, request: type[Message] = ExportTraceServiceRequest, **kw: Any) -> str:
    with pytest.raises(OTLPJSONError) as info:
        otlpjson.parse(data, request(), **kw)
    return str(info.value)


@pytest.mark.parametrize("request_class", REQUESTS)
@pytest.mark.parametrize(
    ("body", "text"),
    [
        pytest.param(b"[" * 100_000, "nested too deeply", id="100k-deep-arrays"),
        pytest.param(b'{"a":' * 100_000, "nested too deeply", id="100k-deep-objects"),
        pytest.param(b'{"resourceSpans": [', "malformed JSON", id="truncated"),
        pytest.param(b"\xff\xfe{}", "malformed JSON", id="not-utf8"),
        pytest.param(b"", "malformed JSON", id="empty"),
        pytest.param(b"[1, 2]", "expected a JSON object, got list", id="not-an-object"),
        pytest.param(b'"x"', "expected a JSON object, got str", id="a-string"),
        pytest.param(b'{"resourceSpans": 5, "resourceMetrics": 5}', "", id="not-a-list"),
        pytest.param(
            b'{"resourceSpans": [[[]]], "resourceMetrics": [[[]]]}', "", id="lists-for-messages"
        ),
    ],
)
def test_malformed_bodies_raise_otlpjson_error(
    request_class: type[Message], body: bytes, text: str
) -> None:
    assert text in refusal(body, request_class)


@pytest.mark.parametrize(
    ("span", "text"),
    [
        ({"startTimeUnixNano": {}}, "startTimeUnixNano"),
        ({"startTimeUnixNano": "1" * 5000}, "startTimeUnixNano"),
        ({"kind": 1e400}, "infinity"),
        ({"name": 5}, "name"),
        ({"name": "\ud800"}, "name"),
        ({"attributes": {"key": "a"}}, "attributes"),
        ({"attributes": [{"key": 1, "value": {"kvlistValue": {"values": 7}}}]}, "attributes"),
        ({"events": [{"timeUnixNano": -1}]}, "events"),
    ],
)
def test_values_of_the_wrong_type_raise_otlpjson_error(span: dict[str, Any], text: str) -> None:
    assert text in refusal(spans(span))


def test_bad_ids_outside_spans_refuse_the_request() -> None:
    body = json.dumps(
        {
            "resourceMetrics": [
                {
                    "scopeMetrics": [
                        {
                            "metrics": [
                                {
                                    "gauge": {
                                        "dataPoints": [
                                            {"exemplars": [{"traceId": "zz", "spanId": "00"}]}
                                        ]
                                    }
                                }
                            ]
                        }
                    ]
                }
            ]
        }
    ).encode()
    assert "dataPoints[0].exemplars[0].traceId: 'zz' is not an id of 32 hex digits" in refusal(
        body, ExportMetricsServiceRequest
    )


def test_deep_nesting_costs_nothing() -> None:
    """100,000 nested arrays used to escape as RecursionError (a 500)."""
    data = b"[" * 100_000
    cpu, peak = cost(lambda: refusal(data))
    assert cpu < 0.05 and peak < 256 * 1024, (cpu, peak)


def test_attribute_values_nested_past_protobufs_limit_are_refused() -> None:
    value: dict[str, Any] = {"stringValue": "x"}
    for _ in range(120):
        value = {"arrayValue": {"values": [value]}}
    text = refusal(spans({"attributes": [{"key": "k", "value": value}]}))
    assert "Message too deep" in text


def test_a_body_of_tiny_values_is_refused_before_it_is_parsed() -> None:
    """17 MiB of empty arrays in a field the request does not know used to cost 2.6 s of CPU
    and 443 MB (json.loads builds each); they are counted at memory speed and refused."""
    n = 6_000_000
    data = b'{"resourceSpans":[],"x":[' + b"[]," * n + b"[]]}"
    with pytest.raises(OTLPJSONBudgetError, match="max_json_values"):
        otlpjson.parse(data, ExportTraceServiceRequest())
    cpu, peak = cost(lambda: refusal(data))
    assert cpu < 0.1 and peak < 64 * 1024, (cpu, peak)


def test_the_budget_counts_values() -> None:
    body = spans(*({"name": f"s{i}"} for i in range(100)))
    n = count_values(body)
    assert 100 * 2 <= n <= 100 * 2 + 10
    message = otlpjson.parse(body, ExportTraceServiceRequest(), max_values=n)
    assert len(message.resource_spans[0].scope_spans[0].spans) == 100
    with pytest.raises(OTLPJSONBudgetError):
        otlpjson.parse(body, ExportTraceServiceRequest(), max_values=n - 1)


def _values(node: Any) -> int:
    if isinstance(node, dict):
        return 1 + sum(_values(v) for v in node.values())
    if isinstance(node, list):
        return 1 + sum(_values(v) for v in node)
    return 1


def _random_json(rnd: random.Random, depth: int = 0) -> Any:
    kind = rnd.randrange(7 if depth < 5 else 5)
    if kind == 0:
        return rnd.randrange(-1000, 1000)
    if kind == 1:
        return rnd.choice(["", "a", "a,b", "[{", "x" * rnd.randrange(10)])
    if kind == 2:
        return rnd.random()
    if kind == 3:
        return rnd.choice([True, False, None])
    if kind == 4:
        return "s"
    if kind == 5:
        return [_random_json(rnd, depth + 1) for _ in range(rnd.randrange(4))]
    return {f"k{i}": _random_json(rnd, depth + 1) for i in range(rnd.randrange(4))}


@pytest.mark.parametrize("separators", [(",", ":"), (", ", ": ")])
def test_count_values_is_an_upper_bound(separators: tuple[str, str]) -> None:
    rnd = random.Random(3)
    for _ in range(500):
        doc = _random_json(rnd)
        data = json.dumps(doc, separators=separators).encode()
        assert count_values(data) >= _values(doc), data
