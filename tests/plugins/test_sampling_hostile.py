"""Hostile input for ``probabilistic_sampler``, ``tail_sampling`` and ``redaction``: garbage
and huge tracestates, all-zero and odd-length-looking ids, traces of thousands of spans,
spans ending before they start, deeply nested and huge GenAI content. Nothing raises; every
item is decided or redacted; the corrupt-but-framing-valid corpus is in tests/test_isolation.py."""

from __future__ import annotations

import random
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from pipeline import Kind, Signal, Traces
from pipeline.testing import create_settings
from plugins.probabilisticsamplerprocessor import ProbabilisticSamplerConfig
from plugins.probabilisticsamplerprocessor.processor import ProbabilisticSamplerProcessor
from plugins.redactionprocessor.config import RedactionConfig
from plugins.redactionprocessor.processor import RedactionProcessor
from plugins.tailsamplingprocessor.config import TailSamplingConfig
from plugins.tailsamplingprocessor.processor import TailSamplingProcessor


class Sink:
    mutates_data = False

    def __init__(self) -> None:
        self.got: list[Any] = []

    async def consume(self, data: Any) -> None:
        self.got.append(data)

    def spans(self) -> list[Any]:
        return [s for p in self.got for rs in p.message().resource_spans
                for ss in rs.scope_spans for s in ss.spans]  # fmt: skip


TRACESTATES = [
    "",
    "ot=",
    "ot=rv:zz;th:-1",
    "ot=th:" + "f" * 15,
    "ot=rv:" + "0" * 13,
    ",,,=,ot",
    "a" * 10_000,
    "ot=th:8" + ",x=y" * 500,
    "ot=th:8;;;",
    "\u00e9=\u00e9",
]


async def test_probabilistic_sampler_with_garbage_tracestates() -> None:
    rng = random.Random(3)
    req = ExportTraceServiceRequest()
    ss = req.resource_spans.add().scope_spans.add()
    for i, ts in enumerate(TRACESTATES * 20):
        tid = bytes(16) if i % 7 == 0 else rng.randbytes(16)
        ss.spans.add(trace_id=tid, span_id=rng.randbytes(8), name="s", trace_state=ts)
    for fail_closed in (True, False):
        for mode in ("proportional", "equalizing", "hash_seed"):
            sink = Sink()
            cfg = ProbabilisticSamplerConfig.model_validate(
                {"sampling_percentage": 50, "mode": mode, "fail_closed": fail_closed}
            )
            proc = ProbabilisticSamplerProcessor(
                create_settings(Kind.PROCESSOR, "probabilistic_sampler"), cfg, Signal.TRACES, sink
            )
            await proc.consume(Traces(req.SerializeToString()))
            kept = len(sink.spans())
            assert 0 < kept < len(TRACESTATES) * 20
            tel = proc.settings.telemetry.service
            decided = sum(
                tel.value(
                    "otelcol_processor_probabilistic_sampler_count_traces_sampled_total",
                    processor="probabilistic_sampler", policy=policy, sampled=flag,
                )
                for policy in ("trace_id_hash", "trace_id_w3c", "sampling_randomness",
                               "missing_randomness")
                for flag in ("true", "false")
            )  # fmt: skip
            assert decided == len(TRACESTATES) * 20


async def test_tail_sampling_with_huge_and_odd_traces() -> None:
    sink = Sink()
    cfg = TailSamplingConfig.model_validate({"decision_wait": "30s", "num_traces": 3, "policies": [
        {"name": "slow", "type": "latency", "latency": {"threshold_ms": 1}},
        {"name": "sla", "type": "workflow_sla", "workflow_sla": {"default": "1s"}},
        {"name": "out", "type": "workflow_outcome"},
        {"name": "usage", "type": "workflow_usage", "workflow_usage": {"min_tokens": 5}},
        {"name": "tools", "type": "tool_call_failed"},
        {"name": "state", "type": "trace_state", "trace_state": {"key": "k", "values": ["v"]}},
    ]})  # fmt: skip
    proc = TailSamplingProcessor(create_settings(Kind.PROCESSOR, "tail_sampling"), cfg, sink)
    req = ExportTraceServiceRequest()
    ss = req.resource_spans.add().scope_spans.add()
    big = b"B" * 16
    for i in range(5000):  # one trace of 5,000 spans, every one a "root"
        sp = ss.spans.add(trace_id=big, span_id=i.to_bytes(8, "big"), name="workflow.x",
                          start_time_unix_nano=10**18, end_time_unix_nano=1,  # ends first
                          trace_state="\u00e9" * 50)  # fmt: skip
        kv = sp.attributes.add(key="gen_ai.usage.input_tokens")
        kv.value.string_value = "not a number"
    for n in range(10):  # all-zero and repeated ids, no spans' attributes at all
        ss.spans.add(trace_id=bytes(16) if n % 2 else n.to_bytes(16, "big"), name="")
    whole = Traces(req.SerializeToString())
    await proc.consume(whole)  # held: 7 traces, 3 allowed, 4 decided early
    assert len(proc._held) == 3
    await proc.shutdown()  # the rest decided with what they have
    assert len(proc._held) == 0
    whole.whole_traces = True
    proc2 = TailSamplingProcessor(create_settings(Kind.PROCESSOR, "tail_sampling"), cfg, Sink())
    await proc2.consume(whole)  # decided at once, nothing held
    assert len(proc2._held) == 0


async def test_redaction_of_deep_and_huge_content() -> None:
    req = ExportTraceServiceRequest()
    span = req.resource_spans.add().scope_spans.add().spans.add(name="chat", trace_id=b"t" * 16)
    value = span.attributes.add(key="gen_ai.input.messages").value
    for _ in range(28):  # nested as deep as the decoder allows (3 levels each, limit 100)
        inner = value.kvlist_value.values.add(key="content").value
        value = inner
    value.string_value = "deep ann@example.com"
    huge = " ".join(f"user{i}@example.com 4111 1111 1111 1111" for i in range(20_000))
    span.attributes.add(key="gen_ai.output.messages").value.string_value = huge
    sink = Sink()
    proc = RedactionProcessor(
        create_settings(Kind.PROCESSOR, "redaction"),
        RedactionConfig.model_validate({"allow_all_keys": True, "genai_content": {}}),
        Signal.TRACES,
        sink,
    )
    await proc.consume(Traces(req.SerializeToString()))
    out = sink.got[0].to_bytes()
    assert b"@example.com" not in out and b"4111 1111" not in out
    tel = proc.settings.telemetry.service
    assert tel.value("otelcol_processor_redaction_redactions_total", processor="redaction",
                     rule="genai_content.pattern.email") == 20_001  # fmt: skip
    assert tel.value("otelcol_processor_redaction_redactions_total", processor="redaction",
                     rule="genai_content.pattern.card_number") == 20_000  # fmt: skip
