"""``redaction``: a request that may redact has only the spans (log records) whose bytes may
redact decoded and re-encoded, spliced between the others' bytes. Checked against the whole
request path (decoded whole, every item walked) on the recorded GenAI telemetry, on requests
where none, one, some or all spans match, on logs, and on truncated and corrupted requests:
the same decoded output, the same counts per rule, the same errors."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from pipeline import Kind, Logs, Signal, Traces
from pipeline.testing import create_settings
from plugins.redactionprocessor.config import RedactionConfig
from plugins.redactionprocessor.processor import RedactionProcessor

CORPUS = Path(__file__).parents[2] / "fuzz" / "corpus"
CARD = r"4[0-9]{12}(?:[0-9]{3})?"

CONFIGS: list[dict[str, Any]] = [
    {"allow_all_keys": True, "blocked_values": [CARD]},
    {"allow_all_keys": True, "blocked_values": [CARD], "summary": "debug",
     "ignored_keys": ["note"], "hash_function": "sha256"},
    {"allow_all_keys": True, "blocked_values": [CARD], "summary": "info",
     "blocked_key_patterns": ["secret"], "genai_content": {"action": "mask"}},
    {"allow_all_keys": True, "genai_content": {"action": "drop"}},
    {"allow_all_keys": True, "genai_content": {"action": "hash"}, "summary": "debug"},
    {"allow_all_keys": True, "genai_content": {"action": "truncate", "truncate_length": 5}},
    {"allow_all_keys": True, "blocked_values": [CARD],
     "db_sanitizer": {"sql": {"enabled": True, "attributes": ["db.query.text"]}}},
]  # fmt: skip


def processor(config: dict[str, Any], signal: Signal, by_item: bool) -> RedactionProcessor:
    proc = RedactionProcessor(
        create_settings(Kind.PROCESSOR, "redaction"),
        RedactionConfig.model_validate(config),
        signal,
        None,  # type: ignore[arg-type]  # process() only
    )
    if not by_item:
        proc._by_item = False
    return proc


def outcome(config: dict[str, Any], signal: Signal, raw: bytes, by_item: bool) -> Any:
    """What ``process`` gives: the decoded output and the counts, or the error."""
    proc = processor(config, signal, by_item)
    payload = (Traces if signal is Signal.TRACES else Logs)(raw)
    try:
        out = proc.process(payload)
        msg = out.message()
    except Exception as exc:
        return type(exc), str(exc)
    assert out.item_count() == type(out)(out.to_bytes()).item_count()
    return msg, dict(proc.rules.counts)


def same(config: dict[str, Any], signal: Signal, raw: bytes) -> Any:
    spliced = outcome(config, signal, raw, True)
    whole = outcome(config, signal, raw, False)
    assert spliced == whole
    return spliced


def corpus(signal: Signal) -> list[bytes]:
    kind = ExportTraceServiceRequest if signal is Signal.TRACES else ExportLogsServiceRequest
    out: dict[bytes, None] = {}
    for path in sorted(CORPUS.glob("*/*.pb")):
        raw = path.read_bytes()
        try:
            req = kind.FromString(raw)
        except Exception:
            continue
        items = (
            [s for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]
            if signal is Signal.TRACES
            else [r for rl in req.resource_logs for sl in rl.scope_logs for r in sl.log_records]
        )
        if items and req.SerializeToString() == raw:
            out[raw] = None
    return list(out)


def spans(n: int, matching: set[int], resource: str = "svc") -> bytes:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.add(key="service.name").value.string_value = resource
    rs.schema_url = "https://opentelemetry.io/schemas/1.27.0"
    ss = rs.scope_spans.add()
    ss.scope.name = "agent"
    ss.scope.attributes.add(key="scope.kind").value.string_value = "lib"
    for i in range(n):
        span = ss.spans.add(name=f"tool {i}", trace_id=bytes(16), span_id=i.to_bytes(8, "big"))
        span.attributes.add(key="gen_ai.request.model").value.string_value = "gpt-4o-mini"
        span.attributes.add(key="note").value.string_value = f"step {i}"
        card = "4111111111111111" if i in matching else "41111"
        span.attributes.add(key="payment").value.string_value = f"card {card} ok"
        ev = span.events.add(name="gen_ai.choice" if i in matching else "log")
        ev.attributes.add(key="message").value.string_value = f"paid {card}"
    return req.SerializeToString()


def records(n: int, matching: set[int]) -> bytes:
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    rl.resource.attributes.add(key="service.name").value.string_value = "svc"
    sl = rl.scope_logs.add()
    for i in range(n):
        rec = sl.log_records.add(time_unix_nano=i, span_id=i.to_bytes(8, "big"))
        card = "4111111111111111" if i in matching else "41111"
        rec.body.string_value = f"user {i} paid {card}"
        if i in matching and i % 2:
            rec.event_name = "gen_ai.user.message"
            rec.body.Clear()
            rec.body.kvlist_value.values.add(key="content").value.string_value = f"card {card}"
        rec.attributes.add(key="note").value.string_value = "x"
    return req.SerializeToString()


@pytest.mark.parametrize("config", CONFIGS)
def test_recorded_genai_telemetry(config: dict[str, Any]) -> None:
    traces, logs = corpus(Signal.TRACES), corpus(Signal.LOGS)
    assert len(traces) >= 5 and logs
    for raw in traces:
        msg, _ = same(config, Signal.TRACES, raw)
        assert isinstance(msg, ExportTraceServiceRequest)
    for raw in logs:
        msg, _ = same(config, Signal.LOGS, raw)
        assert isinstance(msg, ExportLogsServiceRequest)


@pytest.mark.parametrize("config", CONFIGS)
def test_none_one_some_all_spans_match(config: dict[str, Any]) -> None:
    n = 40
    for matching in (set(), {7}, {0, 13, 39}, set(range(0, n, 3)), set(range(n))):
        raw = spans(n, matching)
        # the first three spans may redact (every span has the ignored key "note"): whole
        whole = len(matching) == n or "ignored_keys" in config
        assert (processor(config, Signal.TRACES, True)._spliced(raw) is None) == whole
        _msg, counts = same(config, Signal.TRACES, raw)
        if matching and "blocked_values" in config and "genai_content" not in config:
            assert counts["blocked_values"] == 2 * len(matching)
        _msg, _counts = same(config, Signal.LOGS, records(n, matching))


def test_only_the_matching_spans_are_rewritten() -> None:
    """The spliced path is taken: the other spans' bytes are the input's, in place."""
    config = CONFIGS[0]
    raw = spans(30, {4})
    proc = processor(config, Signal.TRACES, True)
    out = proc._spliced(raw)
    assert out is not None and out != raw
    before = ExportTraceServiceRequest.FromString(raw).resource_spans[0].scope_spans[0].spans
    after = ExportTraceServiceRequest.FromString(out).resource_spans[0].scope_spans[0].spans
    for i, (a, b) in enumerate(zip(before, after, strict=True)):
        if i != 4:
            assert a.SerializeToString() in out
            assert a == b
    assert b"4111111111111111" not in out
    assert proc.rules.counts == {"blocked_values": 2}


def test_resource_or_scope_to_redact_goes_whole() -> None:
    config = CONFIGS[1]
    raw = spans(10, {3}, resource="svc 4111111111111111")
    proc = processor(config, Signal.TRACES, True)
    assert proc._spliced(raw) is None
    msg, counts = same(config, Signal.TRACES, raw)
    assert counts["blocked_values"] == 3
    got = msg.resource_spans[0].resource.attributes
    assert [kv.key for kv in got][-2:] == ["redaction.masked.keys", "redaction.masked.count"]
    # the resource to redact comes after a group whose spans were already done: counted once
    raw = spans(4, {1}) + spans(4, {2}, resource="svc 4111111111111111")
    assert processor(config, Signal.TRACES, True)._spliced(raw) is None
    msg, counts = same(config, Signal.TRACES, raw)
    assert counts["blocked_values"] == 5
    # a scope to redact
    req = ExportTraceServiceRequest.FromString(spans(4, {1}))
    req.resource_spans[0].scope_spans[0].scope.version = "4111111111111111"
    raw = spans(4, {0}) + req.SerializeToString()
    assert processor(config, Signal.TRACES, True)._spliced(raw) is None
    same(config, Signal.TRACES, raw)


def test_unknown_fields_and_repeated_resources_are_kept() -> None:
    """Fields the processor does not know (at any of the three levels) and a resource given
    twice (merged by a parse) reach the output as the whole path has them."""
    raw = spans(5, {2})
    unknown = b"\xa0\x06\x07"  # field 100, varint 7
    extra_resource = b"\x0a\x0a" + b"\x0a\x08" + b"\x0a\x01k" + b"\x12\x03\x0a\x01v"
    inner = ExportTraceServiceRequest.FromString(raw).resource_spans[0].SerializeToString()
    group = extra_resource + inner + unknown
    req = b"\x0a" + bytes([len(group) & 0x7F | 0x80, len(group) >> 7]) + group + unknown
    assert len(group) < 1 << 14
    msg, counts = same(CONFIGS[1], Signal.TRACES, req)
    assert [kv.key for kv in msg.resource_spans[0].resource.attributes][:1] == ["k"]
    assert counts["blocked_values"] == 2


def test_hostile_requests_behave_as_the_whole_path() -> None:
    rng = random.Random(15)
    bases = [spans(12, {1, 5}), records(12, {1, 5}), *corpus(Signal.TRACES)[:3]]
    for base in bases:
        signal = Signal.TRACES if base is not bases[1] else Signal.LOGS
        cuts = sorted(rng.sample(range(1, len(base)), min(60, len(base) - 1)))
        cases = [base[:c] for c in cuts]
        for _ in range(60):
            bad = bytearray(base)
            for _ in range(rng.randint(1, 4)):
                bad[rng.randrange(len(bad))] = rng.randrange(256)
            cases.append(bytes(bad))
        for raw in cases:
            same(CONFIGS[2], signal, raw)
    # nesting inside a matching span's attribute value (within and past protobuf's limit
    # of 100 levels: a clear error in both paths), and a huge value
    for depth, error in ((25, False), (40, True)):  # three message levels each
        req = ExportTraceServiceRequest.FromString(spans(3, {1}))
        span = req.resource_spans[0].scope_spans[0].spans[1]
        value = span.attributes.add(key="deep").value
        for _ in range(depth):
            value = value.kvlist_value.values.add(key="k").value
        value.string_value = "4111111111111111"
        span.attributes.add(key="huge").value.string_value = "4111111111111111 " * 20000
        got = same(CONFIGS[2], Signal.TRACES, req.SerializeToString())
        if error:
            assert got[0].__name__ == "MalformedDataError" and "cannot decode" in got[1]
        else:
            msg, counts = got
            assert counts["blocked_values"] == 2  # payment, huge (the event's is content)
            attrs = msg.resource_spans[0].scope_spans[0].spans[1].attributes
            huge = {kv.key: kv.value.string_value for kv in attrs}["huge"]
            assert huge == "**** " * 20000
