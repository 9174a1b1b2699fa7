"""The Collector's own test vectors for ``probabilistic_sampler``: decisions and the tracestate
written, for each mode; the FNV hash against known FNV-1a values."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from pipeline import Signal, Traces
from pipeline.component import Kind
from pipeline.testing import create_settings
from plugins.probabilisticsamplerprocessor import ProbabilisticSamplerConfig
from plugins.probabilisticsamplerprocessor import sampling as s
from plugins.probabilisticsamplerprocessor.processor import ProbabilisticSamplerProcessor

DEFAULT_TID = bytes.fromhex("fefefefefefefefefe80000000000000")


def test_fnv1a_32_known_values() -> None:
    # FNV-1a 32 of the empty string is the offset basis; "a" -> 0xe40c292c (reference values)
    h = s._FNV32_OFFSET
    assert h == 0x811C9DC5

    # with seed 0 the four zero bytes come first: check against a direct computation
    def direct(data: bytes) -> int:
        x = 0x811C9DC5
        for b in data:
            x = ((x ^ b) * 0x01000193) % 2**32
        return x

    assert direct(b"a") == 0xE40C292C
    assert s.fnv1a_32(b"a", 0) == direct(b"\0\0\0\0a")
    assert s.fnv1a_32(b"xyz", 0x01020304) == direct(b"\x04\x03\x02\x01xyz")


@pytest.mark.parametrize(
    ("pct", "tv"),
    [(100, "0"), (75, "4"), (50, "8"), (25, "c"), (10, "e668"), (100.0 / 3, "aaac")],
)
def test_hash_seed_thresholds(pct: float, tv: str) -> None:
    assert s.tvalue(s.hash_seed_threshold(pct)) == tv


def test_precision_rounding() -> None:
    assert s.tvalue(s.probability_to_threshold(0.01, 0) or 0) == "fd70a3d70a3d71"
    assert s.tvalue(s.probability_to_threshold(0.01, 4) or 0) == "fd70a"
    assert s.tvalue(s.probability_to_threshold(0.01, 3) or 0) == "fd71"
    assert s.tvalue(s.probability_to_threshold(0.4, 3) or 0) == "99a"
    assert s.tvalue(s.probability_to_threshold(0.4 * 0.5, 6) or 0) == "cccccd"
    assert s.probability_to_threshold(2**-60, 4) is None


class _Sink:
    mutates_data = False

    def __init__(self) -> None:
        self.got: list[Any] = []

    async def consume(self, data: Any) -> None:
        self.got.append(data)


def _one_span(tid: bytes, ts: str, key: str = "", value: Any = None) -> Traces:
    req = ExportTraceServiceRequest()
    span = req.resource_spans.add().scope_spans.add().spans.add()
    span.trace_id = tid
    span.span_id = bytes.fromhex("00000000fefefefe")
    span.name = "s"
    span.trace_state = ts
    if key:
        kv = span.attributes.add(key=key)
        if isinstance(value, int):
            kv.value.int_value = value
    return Traces(req.SerializeToString())


async def _run(config: dict[str, Any], payload: Traces) -> tuple[bool, str]:
    cfg = ProbabilisticSamplerConfig.model_validate(config)
    sink = _Sink()
    proc = ProbabilisticSamplerProcessor(
        create_settings(Kind.PROCESSOR, "probabilistic_sampler"), cfg, Signal.TRACES, sink
    )
    await proc.consume(payload)
    if not sink.got:
        return False, ""
    (out,) = sink.got
    (span,) = [
        sp for rs in out.message().resource_spans for ss in rs.scope_spans for sp in ss.spans
    ]
    return True, span.trace_state


# (name, config, trace id, tracestate, {mode: (sampled, tracestate)}); "*" means both modes
VECTORS: list[tuple[str, dict[str, Any], bytes, str, dict[str, tuple[bool, str]]]] = [
    ("1% sampled with rvalue full precision", {"sampling_percentage": 1, "sampling_precision": 14},
     DEFAULT_TID, "ot=rv:FD70A3D70A3D71", {"*": (True, "ot=rv:FD70A3D70A3D71;th:fd70a3d70a3d71")}),
    ("1% sampled with rvalue precision 4", {"sampling_percentage": 1, "sampling_precision": 4},
     DEFAULT_TID, "ot=rv:FD70A3D70A3D71", {"*": (True, "ot=rv:FD70A3D70A3D71;th:fd70a")}),
    ("1% precision 3", {"sampling_percentage": 1, "sampling_precision": 3},
     DEFAULT_TID, "ot=rv:FD70A3D70A3D71", {"*": (False, "")}),
    ("1% not sampled with rvalue", {"sampling_percentage": 1},
     DEFAULT_TID, "ot=rv:FD70A3D70A3D70", {"*": (False, "")}),
    ("49% not sampled with default tid", {"sampling_percentage": 49},
     DEFAULT_TID, "", {"*": (False, "")}),
    ("1% sampled with tid", {"sampling_percentage": 1, "sampling_precision": 4},
     bytes.fromhex("a0a0a0a0a0a0a0a0a0fe000000000000"), "", {"*": (True, "ot=th:fd70a")}),
    ("incoming 50% with rvalue", {"sampling_percentage": 50},
     DEFAULT_TID, "ot=rv:90000000000000;th:80000000000000",
     {"equalizing": (True, "ot=rv:90000000000000;th:8"), "proportional": (False, "")}),
    ("incoming 50% at 25% not sampled", {"sampling_percentage": 25},
     DEFAULT_TID, "ot=th:8", {"*": (False, "")}),
    ("incoming 50% at 25% sampled", {"sampling_percentage": 25},
     bytes.fromhex("ff" * 16), "ot=th:8",
     {"equalizing": (True, "ot=th:c"), "proportional": (True, "ot=th:e")}),
    ("equalizing vs proportional", {"sampling_percentage": 50},
     DEFAULT_TID, "ot=rv:c0000000000000;th:8",
     {"equalizing": (True, "ot=rv:c0000000000000;th:8"),
      "proportional": (True, "ot=rv:c0000000000000;th:c")}),
    ("inconsistent arriving threshold, fail open", {"sampling_percentage": 100,
                                                    "fail_closed": False},
     DEFAULT_TID, "ot=rv:40000000000000;th:8", {"*": (True, "ot=rv:40000000000000;th:0")}),
    ("inconsistent arriving threshold, fail closed", {"sampling_percentage": 1},
     DEFAULT_TID, "ot=rv:40000000000000;th:8", {"*": (False, "")}),
    ("40% precision 3 with rvalue", {"sampling_percentage": 40, "sampling_precision": 3},
     DEFAULT_TID, "ot=rv:a0000000000000", {"*": (True, "ot=rv:a0000000000000;th:99a")}),
    ("arriving 50% at 40% precision 6", {"sampling_percentage": 40, "sampling_precision": 6},
     bytes.fromhex("a0a0a0a0a0a0a0a0a0d0000000000000"), "ot=th:8",
     {"proportional": (True, "ot=th:cccccd"), "equalizing": (True, "ot=th:99999a")}),
    ("arriving 50% at 40% partly sampled", {"sampling_percentage": 40, "sampling_precision": 3},
     bytes.fromhex("a0a0a0a0a0a0a0a0a0b0000000000000"), "ot=th:8",
     {"proportional": (False, ""), "equalizing": (True, "ot=th:99a")}),
    ("arriving 50% at 40% not sampled", {"sampling_percentage": 40, "sampling_precision": 3},
     bytes.fromhex("a0a0a0a0a0a0a0a0a080000000000000"), "ot=th:8", {"*": (False, "")}),
    ("200% equals 100%", {"sampling_percentage": 200}, DEFAULT_TID, "", {"*": (True, "ot=th:0")}),
    ("invalid r-value fails closed", {"sampling_percentage": 100},
     DEFAULT_TID, "ot=rv:abababababababab", {"*": (False, "")}),
    ("missing randomness fails closed", {"sampling_percentage": 100},
     bytes(16), "", {"*": (False, "")}),
    ("vendor members kept after ot", {"sampling_percentage": 100},
     DEFAULT_TID, "congo=t61rcWkgMzE,ot=rv:c0000000000000",
     {"*": (True, "ot=rv:c0000000000000;th:0,congo=t61rcWkgMzE")}),
]  # fmt: skip


@pytest.mark.parametrize("mode", ["equalizing", "proportional"])
@pytest.mark.parametrize(
    ("name", "config", "tid", "ts", "expect"), VECTORS, ids=[v[0] for v in VECTORS]
)
async def test_collector_vectors(
    name: str, config: dict[str, Any], tid: bytes, ts: str, expect: dict[str, Any], mode: str
) -> None:
    want = expect.get(mode, expect.get("*"))
    assert want is not None
    # the Go tests build Config{} without the factory's defaults: precision 0 (all 14 digits)
    got = await _run({"sampling_precision": 14, **config, "mode": mode}, _one_span(tid, ts))
    assert got == want, name


async def test_sampling_priority() -> None:
    kept = await _run(
        {"sampling_percentage": 1}, _one_span(DEFAULT_TID, "", "sampling.priority", 2)
    )
    assert kept == (True, "ot=th:0")
    dropped = await _run({"sampling_percentage": 99},
                         _one_span(DEFAULT_TID, "", "sampling.priority", 0))  # fmt: skip
    assert dropped == (False, "")


async def test_hash_seed_mode_writes_rv_and_th() -> None:
    """hash_seed: the decision is ``fnv1a(seed, tid) & 0x3fff < uint32(pct * 163.84)`` and what
    is kept carries ``ot=rv:<derived>;th:<threshold>`` (as the Collector writes)."""
    import random

    rng = random.Random(7)
    seed = 22
    kept = 0
    for _ in range(400):
        tid = rng.randbytes(16)
        bucket = s.fnv1a_32(tid, seed) & 0x3FFF
        expect = bucket < s.hash_seed_scaled_rate(10)
        sampled, ts = await _run({"sampling_percentage": 10, "hash_seed": seed},
                                 _one_span(tid, ""))  # fmt: skip
        assert sampled == expect
        if sampled:
            kept += 1
            rv = s.rvalue(s.randomness_from_bytes(tid, seed))
            assert ts == f"ot=rv:{rv};th:e668"
            assert s.parse_rvalue(rv) >= s.parse_tvalue("e668")
    assert 20 < kept < 65
