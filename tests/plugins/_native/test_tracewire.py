"""The workflow processor's C accelerator (``plugins._native._tracewire``) against the
pure-Python path: same inputs, byte-identical outputs, malformed input rejected."""

from __future__ import annotations

import asyncio
import collections
import gc
import random
import sys
from typing import Any

import pytest
from google.protobuf.message import DecodeError
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from pipeline import Kind
from pipeline._wire import ShallowTraces, SkeletonTraces
from pipeline.telemetry import SelfTelemetry
from plugins.workflowprocessor import native as native_module
from plugins.workflowprocessor import processor as processor_module
from plugins.workflowprocessor import rules as rules_module
from plugins.workflowprocessor import store as store_module
from plugins.workflowprocessor import wire as wire_module
from plugins.workflowprocessor.config import WorkflowConfig
from plugins.workflowprocessor.processor import WorkflowProcessor
from plugins.workflowprocessor.rules import max_depth as _max_depth
from plugins.workflowprocessor.wire import assemble_groups, key_marker
from tests.plugins._agent_support import Capture, settings, span
from tests.plugins._native_support import ld, require_native, varint

require_native("_tracewire")
tw: Any = processor_module._tracewire  # the module the processor uses

TOOL_A, TOOL_B = b"execute_tool", b"tools/call"
AGENT = key_marker("gen_ai.agent.name")


def raw_span(trace: bytes, span_id: bytes, parent: bytes = b"", extra: bytes = b"") -> bytes:
    out = b""
    if trace:
        out += ld(1, trace)
    if span_id:
        out += ld(2, span_id)
    if parent:
        out += ld(4, parent)
    return out + ld(5, b"op") + extra


def scope_spans(
    spans: list[bytes], scope: bytes = b"", url: bytes = b"", extra: bytes = b""
) -> bytes:
    out = ld(1, scope) if scope else b""
    out += b"".join(ld(2, s) for s in spans)
    return out + (ld(3, url) if url else b"") + extra


def resource_spans(scopes: list[bytes], resource: bytes = b"", url: bytes = b"") -> bytes:
    out = ld(1, resource) if resource else b""
    out += b"".join(ld(2, s) for s in scopes)
    return out + (ld(3, url) if url else b"")


def request(resources: list[bytes], extra: bytes = b"") -> bytes:
    return b"".join(ld(1, r) for r in resources) + extra


# unknown fields of every wire type, a group with a nested group among them
UNKNOWN = (
    varint(99 << 3 | 0)
    + varint(300)
    + varint(98 << 3 | 1)
    + b"\x01" * 8
    + varint(97 << 3 | 5)
    + b"\x02" * 4
    + ld(96, b"unknown")
    + varint(95 << 3 | 3)
    + varint(94 << 3 | 3)
    + varint(1 << 3 | 0)
    + b"\x05"
    + varint(94 << 3 | 4)
    + varint(95 << 3 | 4)
)


# -- ingest: against the upb views the Python path uses -----------------------------------------
def reference_ingest(raw: bytes) -> list[tuple[Any, ...]]:
    """What ``ingest`` must return, computed with the Python path's parsers."""
    shallow = ShallowTraces.FromString(raw)
    skeleton = SkeletonTraces.FromString(raw)
    out: dict[bytes, list[Any]] = {}
    for rs_sh, rs_sk in zip(shallow.resource_spans, skeleton.resource_spans, strict=True):
        for ss_sh, ss_sk in zip(rs_sh.scope_spans, rs_sk.scope_spans, strict=True):
            group = (rs_sh.resource, rs_sh.schema_url, ss_sh.scope, ss_sh.schema_url)
            for span_raw, sk in zip(ss_sh.spans, ss_sk.spans, strict=True):
                e = out.setdefault(sk.trace_id, [sk.trace_id, [], [], [], [], 0, None])
                flags = 0 if sk.parent_span_id else 1
                if TOOL_A in span_raw or TOOL_B in span_raw:
                    flags |= 2
                if sk.parent_span_id and AGENT in span_raw:
                    flags |= 4
                if flags:
                    if e[6] is None:
                        e[6] = []
                    e[6].append((len(e[1]), flags))
                e[1].append(span_raw)
                e[2].append(group)
                e[3].append(sk.span_id)
                e[4].append(sk.parent_span_id)
                e[5] += len(span_raw)
    return [tuple(e) for e in out.values()]


def native_ingest(raw: bytes, interned: dict[Any, Any] | None = None) -> list[tuple[Any, ...]]:
    return list(tw.ingest(raw, {} if interned is None else interned, TOOL_A, TOOL_B, AGENT))


T1, T2, T3 = b"\x01" * 16, b"\x02" * 16, b"\x03" * 16


@pytest.fixture
def same_accounting(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both paths count held bytes with the same constants (the C path's own are smaller: see
    test_the_held_bytes_each_path_counts), so their held state compares equal."""
    monkeypatch.setattr(native_module, "NATIVE_SPAN_OVERHEAD", store_module.SPAN_OVERHEAD)
    monkeypatch.setattr(native_module, "NATIVE_CHUNK_OVERHEAD", 0)
    monkeypatch.setattr(native_module, "NATIVE_TRACE_OVERHEAD", store_module.TRACE_OVERHEAD)


INGEST_CASES = {
    "empty request": b"",
    "empty resource spans": request([b""]),
    "empty scope spans": request([resource_spans([b""])]),
    "one span, no fields": request([resource_spans([scope_spans([b""])])]),
    "interleaved traces": request(
        [
            resource_spans(
                [
                    scope_spans(
                        [
                            raw_span(T1, b"a" * 8),
                            raw_span(T2, b"b" * 8),
                            raw_span(T1, b"c" * 8, b"a" * 8, ld(9, b"execute_tool")),
                            raw_span(T3, b"d" * 8, b"x" * 8, ld(9, AGENT + b"x")),
                            raw_span(T2, b"e" * 8, b"b" * 8, ld(9, b"tools/call")),
                        ],
                        b"scope-1",
                        b"https://scope",
                    )
                ],
                b"res-1",
                b"https://res",
            )
        ]
    ),
    "several resources and scopes, trace across them": request(
        [
            resource_spans(
                [
                    scope_spans([raw_span(T1, b"a" * 8)], b"s1"),
                    scope_spans([raw_span(T1, b"b" * 8, b"a" * 8)], b"s2", b"u2"),
                ],
                b"r1",
            ),
            resource_spans([scope_spans([raw_span(T1, b"c" * 8, b"a" * 8)], b"s1")], b"r2", b"u"),
            resource_spans([scope_spans([raw_span(T2, b"d" * 8)], b"s1")], b"r1"),
        ]
    ),
    "unknown fields everywhere": request(
        [
            resource_spans(
                [scope_spans([raw_span(T1, b"a" * 8, b"", UNKNOWN)], b"s", extra=UNKNOWN)]
            )
            + UNKNOWN
        ],
        UNKNOWN,
    ),
    "known fields with other wire types are unknown": request(
        [
            resource_spans([scope_spans([raw_span(T1, b"a" * 8) + varint(1 << 3 | 0) + b"\x07"])])
            + varint(1 << 3 | 5)
            + b"abcd"
        ]
    ),
    "repeated singular fields: the last wins": request(
        [ld(1, b"first") + ld(2, scope_spans([raw_span(T1, b"a" * 8) + ld(1, T2)])) + ld(1, b"r")]
    ),
    "fields out of order": request(
        [ld(3, b"url") + ld(2, ld(3, b"su") + ld(2, ld(2, b"i" * 8) + ld(1, T1)) + ld(1, b"s"))]
    ),
    "spans over 16 KiB": request(
        [
            resource_spans(
                [
                    scope_spans(
                        [
                            raw_span(T1, b"a" * 8, b"", ld(9, b"x" * 20_000)),
                            raw_span(T1, b"b" * 8, b"a" * 8, ld(9, b"y" * 200_000)),
                        ]
                    )
                ],
                b"r" * 17_000,
            )
        ]
    ),
    "empty trace id": request([resource_spans([scope_spans([raw_span(b"", b"a" * 8, b"p")])])]),
}


@pytest.mark.parametrize("raw", INGEST_CASES.values(), ids=INGEST_CASES.keys())
def test_ingest_matches_the_python_parsers(raw: bytes) -> None:
    assert native_ingest(raw) == reference_ingest(raw)


def test_marker_search_matches_python_at_every_offset_and_length() -> None:
    """The substring tests (16 positions at a time where SSE2 is available): markers of every
    length, planted at every offset, near misses (first and last byte match), at the ends."""
    rng = random.Random(7)
    for n in (1, 2, 3, 5, 12, 16, 17, 31, 40):
        marker = bytes(rng.randrange(1, 256) for _ in range(n))
        near = marker[:1] + bytes(b ^ 1 for b in marker[1:-1]) + marker[-1:] if n > 2 else b"\0"
        for size in range(0, 70, 3):
            for at in sorted({0, size // 2, size} | {rng.randrange(size + 1) for _ in range(3)}):
                filler = bytes(rng.choice(b"ab" + marker[:1] + marker[-1:]) for _ in range(size))
                body = filler[:at] + (marker if rng.random() < 0.5 else near) + filler[at:]
                spans = [raw_span(T1, b"a" * 8, b"p" * 8, ld(9, body)), raw_span(T1, b"b" * 8)]
                raw = request([resource_spans([scope_spans(spans)])])
                got = tw.ingest(raw, {}, marker, b"\xff" * 50, marker)[0][6]
                expected = [(0, 2 | 4)] if marker in spans[0] else []
                expected += [(1, 1 | (2 if marker in spans[1] else 0))]
                assert got == expected, (n, size, at)


def test_marker_search_at_every_offset_of_long_spans() -> None:
    """The wide substring tests (32 positions at a time with AVX2, 16 with SSE2; the last block
    overlapping the one before): a marker planted at every offset of spans of every length up
    to a few blocks, and near misses (its middle byte changed)."""
    rng = random.Random(11)
    for n in (2, 3, 9, 17, 33):
        marker = bytes(rng.randrange(1, 256) for _ in range(n))
        near = bytearray(marker)
        near[n // 2] ^= 1
        for size in range(0, 140, 7):
            filler = bytes(rng.choice(b"ab" + marker[:1] + marker[-1:]) for _ in range(size))
            for at in range(size + 1):
                for planted in (marker, bytes(near)):
                    body = filler[:at] + planted + filler[at:]
                    span = raw_span(T1, b"a" * 8, b"p" * 8, ld(9, body))
                    raw = request([resource_spans([scope_spans([span])])])
                    got = tw.ingest(raw, {}, marker, b"\xff" * 50, b"\xfe" * 50)[0][6]
                    assert got == ([(0, 2)] if marker in span else None), (n, size, at)


def test_the_markers_looked_for_together_match_python() -> None:
    """The two tool markers and the agent marker looked for in one pass (with AVX2): markers
    of different lengths (one longer than the others ends its range earlier), each planted or
    not at random offsets, near misses, spans shorter and longer than a block past them."""
    rng = random.Random(13)
    for k in range(3000):
        markers = [bytes(rng.randrange(1, 256) for _ in range(rng.choice((1, 2, 3, 9, 17, 40))))
                   for _ in range(3)]  # fmt: skip
        size = rng.choice((0, 5, 30, 64, 100, 200, 400))
        filler = bytearray(rng.choice(b"ab" + bytes(m[0] for m in markers)) for _ in range(size))
        for m in markers:
            if rng.random() < 0.4:
                at = rng.randint(0, len(filler))
                planted = bytearray(m)
                if rng.random() < 0.3 and len(m) > 2:
                    planted[len(m) // 2] ^= 1  # a near miss
                filler[at:at] = planted
        spans = [raw_span(T1, b"a" * 8, b"p" * 8, ld(9, bytes(filler))), raw_span(T1, b"r" * 8)]
        raw = request([resource_spans([scope_spans(spans)])])
        got = tw.ingest(raw, {}, *markers)[0][6]
        tool = markers[0] in spans[0] or markers[1] in spans[0]
        flags = (2 if tool else 0) | (4 if markers[2] in spans[0] else 0)
        expected = [(0, flags)] if flags else []
        root_tool = markers[0] in spans[1] or markers[1] in spans[1]
        expected.append((1, 1 | (2 if root_tool else 0)))
        assert got == expected, (k, markers, size)


def test_tool_markers_sharing_a_part_match_python() -> None:
    """Tool markers with a common part (looked for first: a span without it has neither):
    spans holding the common part only, one marker, both, a marker cut at its common part,
    or nothing; the flags as Python's substring tests give them."""
    rng = random.Random(17)
    for k in range(2000):
        common = bytes(rng.choice(b"tolx") for _ in range(rng.choice((3, 4, 5, 8))))
        tool_a = bytes(rng.choice(b"abc") for _ in range(rng.randint(0, 6))) + common
        tool_b = common + bytes(rng.choice(b"cde") for _ in range(rng.randint(0, 6)))
        pieces = [common, tool_a, tool_b, tool_a[:-1], tool_b[1:], b"x" * rng.randint(0, 80)]
        filler = b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 6)))
        spans = [raw_span(T1, b"a" * 8, b"p" * 8, ld(9, filler))]
        raw = request([resource_spans([scope_spans(spans)])])
        got = tw.ingest(raw, {}, tool_a, tool_b, b"\xfe" * 20)[0][6]
        tool = tool_a in spans[0] or tool_b in spans[0]
        assert got == ([(0, 2)] if tool else None), (k, tool_a, tool_b, filler)


@pytest.mark.parametrize(
    ("tool_a", "tool_b"),
    [
        (b"zzq\x12tail", b"head zzq\x12"),  # common part b"zzq\x12"
        (b"\x0a\x10\x01\x01\x01", b"zz\x0a\x10\x01\x01"),  # b"\x0a\x10\x01\x01": a span's start
    ],
)
def test_tool_markers_across_the_spans_of_a_scope_match_python(
    tool_a: bytes, tool_b: bytes
) -> None:
    """The common part of the tool markers, looked for once along a ScopeSpans' spans (not in
    each span): several spans, several scopes and resources, the part zero to three times in
    a span, at a span's start (the second pair: every span's first bytes) and end, and across
    the end of a span (a span ending in its first bytes, the next span's framing, the tag
    0x12, ending it: not in either span)."""
    rng = random.Random(19)
    pieces = [b"zzq", b"\x12", b"zzq\x12", tool_a, tool_b, b"q", b"x" * 40, b"y" * 3]
    for k in range(1500):
        scopes: list[list[bytes]] = []
        for _ in range(rng.randint(1, 3)):
            spans = []
            for _ in range(rng.randint(1, 6)):
                body = b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 5)))
                end = rng.choice((b"", b"zzq", b"zz", tool_a, b"zzq\x12"))
                # the span's last bytes are `end` (its last field's)
                spans.append(raw_span(T1, b"a" * 8, b"p" * 8, ld(9, body + end)))
            scopes.append(spans)
        raw = request(
            [resource_spans([scope_spans(spans, b"s")]) for spans in scopes[:1]]
            + [resource_spans([scope_spans(spans) for spans in scopes[1:]], b"r")]
        )
        got = tw.ingest(raw, {}, tool_a, tool_b, b"\xfe" * 20)
        every = [span for spans in scopes for span in spans]
        expected = [(i, 2) for i, span in enumerate(every) if tool_a in span or tool_b in span]
        assert got[0][6] == (expected or None), (k, scopes)


def _span_field(rng: random.Random) -> bytes:
    """One top-level field of a span of any shape the span walk reads: the ids and other
    length-delimited fields with one- and two-byte lengths, varints of one and more bytes,
    fixed widths under one- and two-byte tags, other wire types on the ids' numbers, a group."""
    kind = rng.randrange(9)
    if kind == 0:  # an id (trace, span, parent), any length: the last of each wins
        return ld(rng.choice((1, 2, 4)), bytes(rng.randrange(256) for _ in range(
            rng.choice((0, 8, 16, 127, 128, 200)))))  # fmt: skip
    if kind == 1:  # another length-delimited field: name, attributes, events, status
        n = rng.choice((0, 5, 127, 128, 300, 16_383, 16_384))  # lengths of 1, 2 and 3 bytes
        return ld(rng.choice((3, 5, 9, 11, 15, 17)), b"v" * n)
    if kind == 2:  # a varint: kind (6), dropped counts, or on an id's number
        return varint(rng.choice((6, 10, 1, 2, 4)) << 3) + varint(rng.choice((0, 1, 127, 128, 300)))
    if kind == 3:  # fixed64: start and end times, or on an id's number
        return varint(rng.choice((7, 8, 1, 4)) << 3 | 1) + bytes(range(8))
    if kind == 4:  # fixed32: flags (a two-byte tag), or under a one-byte tag
        return varint(rng.choice((16, 13, 2)) << 3 | 5) + b"\x01\x02\x03\x04"
    if kind == 5:  # a group
        return varint(14 << 3 | 3) + varint(1 << 3 | 0) + b"\x05" + varint(14 << 3 | 4)
    if kind == 6:  # an id under a two-byte tag (not the shortest encoding)
        return bytes([rng.choice((1, 2, 4)) << 3 | 2 | 0x80, 0]) + varint(8) + b"i" * 8
    if kind == 7:  # a field number above 15 (two-byte tag), length-delimited
        return ld(rng.choice((16, 20, 300)), b"w" * rng.choice((0, 9)))
    return ld(9, ld(1, b"gen_ai.operation.name") + ld(2, ld(1, b"chat")))


def test_the_span_walk_reads_every_field_shape_as_python() -> None:
    """The span walk (the ids read in one loop for the usual fields, anything else field by
    field as before): spans of random fields of every shape, the first cut at every length
    for some (inside its framing: the span's own fields truncated), give the ids, groups and
    flags the upb parsers give, or are rejected by both."""
    rng = random.Random(23)
    for k in range(1500):
        spans = [b"".join(_span_field(rng) for _ in range(rng.randint(0, 8))) for _ in range(3)]
        firsts = [spans[0]]
        if k % 10 == 0 and len(spans[0]) < 2000:
            firsts = [spans[0][:n] for n in range(len(spans[0]) + 1)]
        for first in firsts:
            cut = request([resource_spans([scope_spans([first, *spans[1:]], b"s")], b"r")])
            try:
                expected: Any = reference_ingest(cut)
            except DecodeError:
                with pytest.raises(ValueError):
                    native_ingest(cut)
                continue
            assert native_ingest(cut) == expected, (k, first, spans[1:])


def test_ingest_interns_groups() -> None:
    raw = INGEST_CASES["several resources and scopes, trace across them"]
    interned: dict[Any, Any] = {}
    first = native_ingest(raw, interned)
    again = native_ingest(raw, interned)
    assert len(interned) == 3
    for a, b in zip(first[0][2] + first[1][2], again[0][2] + again[1][2], strict=True):
        assert a is b and interned[a] is a


MALFORMED = {
    "truncated length": request([resource_spans([scope_spans([raw_span(T1, b"a" * 8)])])])[:-3],
    "length beyond the end": b"\x0a\x05abc",
    "truncated varint": b"\x08\x80",
    "varint too long": b"\x08" + b"\xff" * 10 + b"\x01",
    "bad wire type": b"\x0f\x00",
    "field number 0": b"\x02\x00",
    "unterminated group": b"\x0b\x08\x01",
    "unexpected end of group": b"\x0c",
    "bad span": request([resource_spans([scope_spans([b"\x0a\x10" + b"x" * 4])])]),
    "bad span field": request([resource_spans([scope_spans([raw_span(T1, b"a" * 8) + b"\x31"])])]),
    "bad scope spans": request([resource_spans([b"\x12\x7f"])]),
}


@pytest.mark.parametrize("raw", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_input_raises_value_error(raw: bytes) -> None:
    with pytest.raises(ValueError):
        native_ingest(raw)
    with pytest.raises(DecodeError):  # the Python path rejects it too
        ShallowTraces.FromString(raw)
        SkeletonTraces.FromString(raw)


def test_every_truncation_is_rejected_or_parsed_without_reading_past_the_end() -> None:
    raw = INGEST_CASES["unknown fields everywhere"] + INGEST_CASES["interleaved traces"]
    for n in range(len(raw)):
        cut = raw[:n]
        try:
            expected: Any = reference_ingest(cut)
        except DecodeError:
            expected = ValueError
        if expected is ValueError:
            with pytest.raises(ValueError):
                native_ingest(cut)
        else:
            assert native_ingest(cut) == expected


# -- assemble ------------------------------------------------------------------------------------
def test_assemble_matches_assemble_groups() -> None:
    g1 = (b"res", b"", b"scope", b"url")
    g2 = (b"", b"rurl", b"", b"")
    g3 = (b"r" * 20_000, b"u" * 200, b"s" * 300, b"")
    spans = [raw_span(T1, bytes([i]) * 8, b"", b"z" * (i * 997)) for i in range(40)]
    by_group = {g1: spans[:10], g2: spans[10:12], g3: spans[12:]}
    expected = assemble_groups(by_group)
    items = [(spans[:10], g1, b"", None), (spans[10:12], [g2, g2], b"", None)]
    items.append((spans[12:], [g3] * 28, b"", None))
    assert tw.assemble(items, (), None) == expected
    # per-span groups, interleaved: the spans of each group keep their order
    mixed = [(s, g) for i, s in enumerate(spans) for g in ((g1, g2, g3)[i % 3],)]
    per_group: dict[Any, list[bytes]] = {}
    for s, g in mixed:
        per_group.setdefault(g, []).append(s)
    got = tw.assemble([([s for s, _ in mixed], [g for _, g in mixed], b"", None)], (), None)
    assert got == assemble_groups(per_group)
    assert tw.assemble([], (), None) == b""


def test_assemble_appends_suffixes_and_asks_for_marked_spans() -> None:
    group = (b"res", b"", b"", b"")
    spans = [b"plain-1", b"has MARK", b"plain-2"]
    asked: list[tuple[bytes, object]] = []

    def suffix_for(span_raw: bytes, stamp: object) -> bytes:
        asked.append((span_raw, stamp))
        return b"!own"

    stamp = object()
    got = tw.assemble([(spans, group, b"+sfx", stamp)], (b"MARK",), suffix_for)
    expected = assemble_groups({group: [b"plain-1+sfx", b"has MARK!own", b"plain-2+sfx"]})
    assert got == expected
    assert asked == [(b"has MARK", stamp)]
    # without a stamp, nothing is looked for
    assert tw.assemble([(spans, group, b"", None)], (b"MARK",), suffix_for) == (
        assemble_groups({group: spans})
    )
    assert len(asked) == 1


def test_assemble_asks_exactly_for_the_spans_holding_a_marker() -> None:
    """The marker tests of assemble (the common part first, then each marker), at every
    offset, with near misses, in spans shorter and longer than 16 bytes."""
    rng = random.Random(11)
    markers = (key_marker("workflow.id"), key_marker("workflow.type"), b"\x0a\x02zz")
    near = [m[:-1] + bytes([m[-1] ^ 1]) for m in markers] + [b"workflow.", b"\x0a\x0bworkflow"]
    group = (b"r", b"", b"", b"")
    spans = []
    for size in range(0, 60, 2):
        for planted in (*markers, *near):
            at = rng.randrange(size + 1)
            filler = bytes(rng.choice(b"\x0aworkflz.") for _ in range(size))
            spans.append(filler[:at] + planted + filler[at:])
    for looked_for in (markers[:2], markers):  # with a common part "workflow.", without
        asked: list[bytes] = []

        def suffix_for(span_raw: bytes, stamp: object) -> bytes:
            asked.append(span_raw)  # noqa: B023
            return b"!"

        got = tw.assemble([(spans, group, b"+", "stamp")], looked_for, suffix_for)
        marked = [s for s in spans if any(m in s for m in looked_for)]
        assert asked == marked and 0 < len(marked) < len(spans)
        expected = [s + (b"!" if any(m in s for m in looked_for) else b"+") for s in spans]
        assert got == assemble_groups({group: expected})


def test_assemble_rejects_bad_entries() -> None:
    with pytest.raises(TypeError):
        tw.assemble([([b"s"], (b"", b""), b"", None)], (), None)
    with pytest.raises(ValueError):
        tw.assemble([([b"s", b"t"], [(b"", b"", b"", b"")], b"", None)], (), None)
    with pytest.raises(TypeError):
        tw.assemble([([1], (b"", b"", b"", b""), b"", None)], (), None)


# -- max_depth -----------------------------------------------------------------------------------
class Id(bytes):
    """Not exactly bytes: still compared by value."""


def test_max_depth_matches_python() -> None:
    rng = random.Random(7)
    for k in range(600):
        n = rng.randint(0, 30) if k % 3 else rng.randint(50, 120)  # small and large traces
        ids = [bytes([rng.randint(0, n + 2)]) * rng.randint(1, 2) for _ in range(n)]
        parents = [rng.choice([b"", b"\xff", *ids]) if ids else b"" for _ in range(n)]
        if k % 7 == 0:
            ids = [Id(i) for i in ids]
        for cap in (0, 1, 2, 5):
            assert tw.max_depth(ids, parents, cap) == _max_depth(ids, parents, cap)
    chain = [bytes([i]) for i in range(50)]
    assert tw.max_depth(chain, [b"", *chain[:-1]], 0) == 50
    assert tw.max_depth(chain, [b"", *chain[:-1]], 7) == 7


def test_the_depth_release_reads_from_a_trace_matches_python() -> None:
    """The depth of a held trace's tree, as release reads it for the complexity tier (small
    traces of short ids: compared as integers, tables on the stack): one tier per depth, so
    the tier released names it."""
    rng = random.Random(5)
    cap = 9
    tiers = tuple(native_module.Tier(f"d{d}", 1 << 62, 1 << 62, d) for d in range(cap))
    cfg: Any = None
    for k in range(1500):
        n = rng.randint(0, 70) if k % 4 else rng.randint(1, 8)
        width = rng.choice((1, 2, 8, 8, 9, 16))  # 9, 16: ids kept apart from the record
        pool = [bytes([rng.randint(0, n + 2)]) * width for _ in range(n + 1)]
        ids = [rng.choice(pool) for _ in range(n)] if k % 5 == 0 else pool[:n]
        if k % 3 == 0:  # a chain: deep trees
            parents = [b"", *ids[:-1]][:n]
        else:
            parents = [rng.choice([b"", b"\xff" * width, b"\0" * width, *ids]) for _ in range(n)]
        trace = tw.Trace(0.0, 0.0, 0.0, 400)
        spans = [raw_span(T1, i, p) for i, p in zip(ids, parents, strict=True)]
        half = rng.randint(0, n)  # one or two chunks
        for part in (slice(0, half), slice(half, n)):
            trace.add(spans[part], [(b"", b"", b"", b"")] * len(spans[part]), ids[part],
                      parents[part])  # fmt: skip
        trace.root = (True, "wf", "t", "success", ())
        args = release_args([(T1, trace, "wait")])
        cfg = cfg or args[1]._replace(tiers=tiers, depth_cap=cap + 1)
        args[1] = cfg
        tw.release(*args)
        expected = _max_depth(ids, parents, cap + 1)
        assert args[5][T1][0][4] == (f"d{expected}" if expected < cap else cfg.top_tier), k


def workflow_counts(telemetry: SelfTelemetry) -> list[tuple[str, tuple[Any, ...], float]]:
    """The workflow processor's own counters and gauges, sorted (for comparing two paths)."""
    return sorted(
        (sample.name, tuple(sorted(sample.labels.items())), sample.value)
        for metric in telemetry.registry.collect()
        if metric.name.startswith("otelcol_processor_workflow")
        for sample in metric.samples
        if not sample.name.endswith("_created")
    )


# -- the processor, both paths -------------------------------------------------------------------
def workload(seed: int) -> list[bytes]:
    """Requests of workflow traces spread over requests, resources and scopes: roots, tool
    calls (some failed, without error.type), agents, spans already carrying stamp attributes,
    non-workflow traces, unknown fields, large spans."""
    rng = random.Random(seed)
    reqs: list[list[tuple[str, Span]]] = [[] for _ in range(6)]
    for t in range(1, 40):
        workflow = t % 5 != 0
        root_attrs: dict[str, Any] = {"workflow.name": "support"} if workflow else {}
        if t % 3 == 0:
            root_attrs["workflow.id"] = f"wf-{t}"
        if t % 7 == 0:
            root_attrs["gen_ai.agent.name"] = "root-agent"
        spans = [span(t, 1, None, "workflow.support" if workflow else "GET /", attrs=root_attrs)]
        for i in range(2, rng.randint(2, 12)):
            attrs: dict[str, Any] = {}
            kind = rng.random()
            if kind < 0.3:
                attrs = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "t"}
            elif kind < 0.4:
                attrs = {"mcp.method.name": "tools/call"}
            elif kind < 0.5:
                attrs = {"gen_ai.agent.name": f"agent-{t}"}
            elif kind < 0.55:
                attrs = {"workflow.type": "preset"}
            elif kind < 0.6:
                attrs = {"big": "x" * 17_000}
            error = "boom: timed out" if kind < 0.4 and rng.random() < 0.3 else None
            spans.append(span(t, i, rng.randint(1, i - 1), f"op{i}", attrs=attrs, error=error))
        for s in spans:
            service = rng.choice(["a", "b"])
            reqs[rng.randrange(len(reqs))].append((service, s))
    out = []
    for items in reqs:
        rng.shuffle(items)
        by_service: dict[str, list[bytes]] = {}
        for service, s in items:
            raw = s.SerializeToString()
            if rng.random() < 0.1:
                raw += UNKNOWN
            by_service.setdefault(service, []).append(raw)
        out.append(
            request(
                [
                    resource_spans(
                        [scope_spans(spans[::2], b"scope"), scope_spans(spans[1::2])],
                        ld(1, ld(1, b"service.name") + ld(2, ld(1, service.encode()))),
                    )
                    for service, spans in by_service.items()
                ]
            )
        )
    return out


async def run(native: bool, reqs: list[bytes], late: list[bytes]) -> tuple[list[bytes], Any]:
    telemetry = SelfTelemetry()
    cfg = WorkflowConfig.model_validate({"wait_duration": "10s"})
    capture = Capture()
    proc = WorkflowProcessor(
        settings(Kind.PROCESSOR, "workflow", telemetry), cfg, capture, native=native
    )
    out: list[bytes] = []
    for raw in reqs:
        proc._ingest(raw, 0.0)
    state = (
        proc.store.held_bytes,
        proc.store.held_spans,
        [
            (tid, [*t.spans], [*t.groups], [*t.ids], [*t.parents], t.nbytes, t.root_index)
            for tid, t in proc.store.held.items()
        ],
        [(t.agent_id, t.tool_calls, t.root_present, t.root) for t in proc.store.held.values()],
    )
    proc._release_all("shutdown")
    for raw in late:
        proc._ingest(raw, 0.0)
    while proc._outbox:
        payload, _, _ = proc._outbox.popleft()
        out.append(payload.to_bytes())
    counts = workflow_counts(telemetry)
    return out, (state, counts)


@pytest.mark.usefixtures("same_accounting")
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_processor_gives_identical_bytes_on_both_paths(seed: int) -> None:
    reqs = workload(seed)
    late = workload(seed + 100)[:2]  # the same trace ids: late spans of released traces
    native_out, native_state = asyncio.run(run(True, reqs, late))
    python_out, python_state = asyncio.run(run(False, reqs, late))
    assert native_out == python_out
    assert native_state == python_state
    assert len(native_out) == 3 and all(native_out)


@pytest.mark.usefixtures("same_accounting")
@pytest.mark.parametrize("scenario", ["success", "failed_run", "slow_tool"])
def test_a_root_above_the_execution_gives_identical_bytes_on_both_paths(scenario: str) -> None:
    """Recorded pydantic-ai under an HTTP server span: the root carries the execution's
    ``workflow.duration`` after its stamp (``Trace.root_extra`` in C), whole, one span per
    request, and with the root arriving after the release (from the late-root memory)."""
    from tests.plugins.test_workflowprocessor_executions import load, one_span_per_request

    req = load("pydantic_ai_http", scenario)
    parts = one_span_per_request(req, seed=5)
    root = next(p for p in parts if b"POST /compute" in p and b"http send" not in p)
    for reqs, late in (
        ([req.SerializeToString()], []),
        (parts, []),
        ([p for p in parts if p is not root], [root]),
    ):
        native_out, native_state = asyncio.run(run(True, reqs, late))
        python_out, python_state = asyncio.run(run(False, reqs, late))
        assert native_out == python_out
        assert native_state == python_state
        assert sum(o.count(b"workflow.duration") for o in native_out) == 1


# -- facts: tool calls, roots and agents decided in C -------------------------------------------
def kv(key: bytes, value: bytes) -> bytes:
    """``Span.attributes`` entry with an already encoded ``AnyValue``."""
    return ld(9, ld(1, key) + ld(2, value))


def s_(text: bytes) -> bytes:
    return ld(1, text)


VALUES = [
    s_(b"execute_tool"),
    s_(b"tools/call"),
    s_(b"other"),
    s_(b""),
    b"",  # an empty AnyValue
    s_(b"x" * 200),  # a long string: not the short-string fast path
    varint(2 << 3) + b"\x01",  # bool
    varint(3 << 3) + varint(42),  # int
    varint(4 << 3 | 1) + b"\x00\x00\x00\x00\x00\x00\xf8\x3f",  # double 1.5
    s_(b"execute_tool") + s_(b"other"),  # two string values: the fast path reads the first
    s_("caf\u00e9".encode()),  # non-ASCII
]
KEYS = [
    b"gen_ai.operation.name",
    b"mcp.method.name",
    b"error.type",
    b"gen_ai.agent.name",
    b"workflow.name",
    b"workflow.id",
    b"workflow.type",
    b"workflow.outcome",
    b"workflow.agent.id",
    b"workflow.complexity_tier",
    b"other.key",
]
STATUSES = [
    b"",
    ld(15, b""),
    ld(15, varint(3 << 3) + b"\x02"),  # error
    ld(15, varint(3 << 3) + b"\x02" + ld(2, b"call timed out")),
    ld(15, varint(3 << 3) + b"\x01"),  # ok
    ld(15, ld(2, b"cancelled by user") + varint(3 << 3) + b"\x02"),
    ld(15, varint(3 << 3) + b"\x82\x80\x80\x80\x10"),  # code 2 in a long varint
]
EVENTS = [
    b"",
    ld(11, ld(2, b"exception") + ld(3, ld(1, b"exception.type") + ld(2, s_(b"TimeoutError")))),
    ld(11, ld(2, b"exception") + ld(3, ld(1, b"exception.message") + ld(2, s_(b"cancel")))),
    ld(11, ld(2, b"log")) + ld(11, ld(2, b"exception")),
]


def random_attrs(rng: random.Random, n: int) -> bytes:
    """Attributes drawn from the keys the processor reads (duplicates included)."""
    return b"".join(kv(rng.choice(KEYS), rng.choice(VALUES)) for _ in range(n))


def facts_workload(seed: int) -> list[bytes]:
    rng = random.Random(seed)
    reqs: list[list[bytes]] = [[] for _ in range(4)]
    for t in range(1, 80):
        trace_id = t.to_bytes(16, "big")
        names = [b"workflow.support", b"workflow.", b"GET /", "\u00e9t\u00e9".encode()]
        for i in range(1, rng.randint(2, 10)):
            parent = b"" if i == 1 or rng.random() < 0.05 else rng.randint(1, i - 1).to_bytes(8)
            extra = random_attrs(rng, rng.randint(0, 6))
            extra += rng.choice(STATUSES) + (rng.choice(EVENTS) if rng.random() < 0.3 else b"")
            name = rng.choice(names) if not parent else b"op"
            body = ld(1, trace_id) + ld(2, i.to_bytes(8)) + (ld(4, parent) if parent else b"")
            reqs[rng.randrange(len(reqs))].append(body + ld(5, name) + extra)
    return [request([resource_spans([scope_spans(spans)])]) for spans in reqs]


@pytest.mark.usefixtures("same_accounting")
@pytest.mark.parametrize("seed", range(8))
def test_facts_give_identical_results_on_both_paths(seed: int) -> None:
    """Duplicate keys, non-string and long values, statuses, exception events, odd names."""
    reqs = facts_workload(seed)
    native_out, native_state = asyncio.run(run(True, reqs, []))
    python_out, python_state = asyncio.run(run(False, reqs, []))
    assert native_out == python_out
    assert native_state == python_state


@pytest.mark.usefixtures("same_accounting")
def test_agents_and_types_read_again_give_what_decoding_gives() -> None:
    """The agents and workflow types a root names are taken from those interned before when
    their bytes are one's ASCII, not decoded again: names of one length a byte apart, a name
    and its prefix, non-ASCII and invalid UTF-8 (decoded with replacement), more names than
    are kept (the oldest replaced), each read again in later requests and within one; on
    both paths, the same stamps, agents and root facts."""
    rng = random.Random(29)
    names = [b"alpha", b"alphb", b"alph", b"alphaa", b"bravo", "\u00e9t\u00e9".encode(),
             b"\xff\xfeab", b"caf\xc3", b"delta", b"echo1", b"echo2", b"echo3", b"fox"]  # fmt: skip
    reqs = []
    for r in range(6):
        spans = []
        for t in range(12):
            trace_id = (r * 100 + t + 1).to_bytes(16, "big")
            agent, kind = rng.choice(names), rng.choice(names)
            attrs = kv(b"gen_ai.agent.name", s_(agent))
            if rng.random() < 0.5:
                attrs += kv(b"workflow.type", s_(kind))
            name = b"workflow." + rng.choice(names)
            spans.append(ld(1, trace_id) + ld(2, b"r" * 8) + ld(5, name) + attrs)
            child = kv(b"gen_ai.agent.name", s_(rng.choice(names)))
            spans.append(ld(1, trace_id) + ld(2, b"c" * 8) + ld(4, b"q" * 8) + ld(5, b"op") + child)
        reqs.append(request([resource_spans([scope_spans(spans)])]))
    native_out, native_state = asyncio.run(run(True, reqs, []))
    python_out, python_state = asyncio.run(run(False, reqs, []))
    assert native_out == python_out
    assert native_state == python_state


def facts_cfg() -> tuple[bytes, ...]:
    cfg = WorkflowConfig.model_validate({})
    proc = WorkflowProcessor(settings(Kind.PROCESSOR, "workflow"), cfg, Capture())
    return proc.store.native.facts  # type: ignore[attr-defined,no-any-return]


def test_facts_are_decided_in_c() -> None:
    root = raw_span(T1, b"r" * 8, b"", kv(b"workflow.id", s_(b"wf-1")))
    root += kv(b"gen_ai.agent.name", s_(b"a1")) + ld(15, varint(3 << 3) + b"\x02" + ld(2, b"m"))
    tool = raw_span(T1, b"t" * 8, b"r" * 8, kv(b"gen_ai.operation.name", s_(b"execute_tool")))
    failed = tool + ld(15, varint(3 << 3) + b"\x02")
    mcp = raw_span(
        T1,
        b"m" * 8,
        b"r" * 8,
        kv(b"mcp.method.name", s_(b"tools/call")) + kv(b"mcp.method.name", s_(b"x")),
    )  # the last duplicate wins: not a tool call
    agent = raw_span(T1, b"a" * 8, b"r" * 8, kv(b"gen_ai.agent.name", s_(b"a2")))
    raw = request([resource_spans([scope_spans([agent, tool, failed, mcp, root])])])
    (entry,) = tw.ingest(raw, {}, TOOL_A, TOOL_B, AGENT, facts_cfg())
    _, _, _, _, _, _, errs, tools, facts, agent_set, agent_default = entry
    assert (errs, tools, agent_set, agent_default) == ([2], 2, "a1", None)
    assert facts == (4, "a1", True, "wf-1", "op", "", "", "", 2, "m", 1)
    # a value that is not a short string: the trace is left to the Python path
    odd = raw_span(T1, b"o" * 8, b"r" * 8, kv(b"gen_ai.operation.name", varint(3 << 3) + b"\x01"))
    odd += kv(b"other", s_(b"execute_tool"))  # the marker, elsewhere
    raw = request([resource_spans([scope_spans([odd])])])
    assert tw.ingest(raw, {}, TOOL_A, TOOL_B, AGENT, facts_cfg())[0][7] == -1


MALFORMED_SPECIALS = {
    "truncated attribute": raw_span(T1, b"a" * 8, b"", ld(9, b"\x0a\x05ab")),
    "non-UTF-8 key": raw_span(T1, b"a" * 8, b"", kv(b"\xff", s_(b"execute_tool"))),
    "bad status message": raw_span(
        T1, b"a" * 8, b"", kv(b"workflow.id", s_(b"w")) + ld(15, ld(2, b"\xff"))
    ),
    "bad tool value": raw_span(
        T1, b"a" * 8, b"p" * 8, kv(b"gen_ai.operation.name", b"\x0a\xff\x01execute_tool")
    ),
}


@pytest.mark.parametrize("span_raw", MALFORMED_SPECIALS.values(), ids=MALFORMED_SPECIALS.keys())
def test_malformed_special_spans_are_rejected_on_both_paths(span_raw: bytes) -> None:
    raw = request([resource_spans([scope_spans([span_raw])])])
    for native in (True, False):
        with pytest.raises((ValueError, DecodeError)):
            asyncio.run(run(native, [raw], []))


def test_facts_reject_a_bad_configuration_tuple() -> None:
    with pytest.raises(TypeError):
        tw.ingest(b"", {}, TOOL_A, TOOL_B, AGENT, (b"x",))


# -- the held traces in C (Trace, ingest's apply mode, release), both paths -----------------------
LIMITS = {
    "expiry": {"wait_duration": "2s", "max_wait_duration": "3s"},
    "max_traces": {"wait_duration": "2s", "max_traces": 7, "late_span_cache_size": 5},
    "max_bytes": {"wait_duration": "5s", "max_bytes": 30_000, "late_span_cache_size": 3},
    "no_cache": {"wait_duration": "1s", "late_span_cache_size": 0},
    "tiers": {
        "wait_duration": "2s",
        "complexity_tiers": [
            {"name": "tiny", "max_spans": 3, "max_tool_calls": 0, "max_depth": 2},
            {"name": "deep", "max_spans": 20, "max_tool_calls": 3, "max_depth": 4},
            {"name": "wide", "max_spans": 12, "max_tool_calls": 9, "max_depth": 1},
        ],
    },
}


def held_state(proc: WorkflowProcessor) -> tuple[Any, ...]:
    return (
        proc.store.held_bytes,
        proc.store.held_spans,
        [
            (
                tid,
                list(t.spans),  # copies: the Python path's lists change later
                list(t.groups),
                list(t.ids),
                list(t.parents),
                t.nbytes,
                t.root_index,
                t.agent_id,
                t.tool_calls,
                t.root_present,
                t.root,
                t.last_seen,
                t.queued_at,
                t.queued_first,
            )
            for tid, t in proc.store.held.items()
        ],
        list(proc.store.released.items()),
    )


async def run_timed(native: bool, reqs: list[bytes], cfg: dict[str, Any]) -> tuple[Any, ...]:
    """Requests one second apart, the limits enforced after each, the expired traces released
    every other request (traces spread over requests are released early, their later spans
    are late spans), the rest at shutdown."""
    telemetry = SelfTelemetry()
    config = WorkflowConfig.model_validate(cfg)
    proc = WorkflowProcessor(
        settings(Kind.PROCESSOR, "workflow", telemetry), config, Capture(), native=native
    )
    states = []
    now = 0.0
    for i, raw in enumerate(reqs):
        now += 1.0
        proc._ingest(raw, now)
        proc._emit(proc.store.enforce_limits())  # the limits, as consume enforces them
        if i % 2:
            proc._release_expired(now)
        states.append(held_state(proc))
    proc._release_all("shutdown")
    states.append(held_state(proc))
    out = []
    while proc._outbox:
        payload, count, nbytes = proc._outbox.popleft()
        out.append((payload.to_bytes(), count, nbytes))
    counts = workflow_counts(telemetry)
    return out, states, counts


@pytest.mark.usefixtures("same_accounting")
@pytest.mark.parametrize("limits", LIMITS.keys())
@pytest.mark.parametrize("seed", [1, 2])
def test_limits_expiry_and_late_spans_are_identical_on_both_paths(limits: str, seed: int) -> None:
    reqs = workload(seed) + workload(seed + 100)[:3] + facts_workload(seed)
    native = asyncio.run(run_timed(True, reqs, LIMITS[limits]))
    python = asyncio.run(run_timed(False, reqs, LIMITS[limits]))
    assert native[0] == python[0]
    assert native[1] == python[1]
    assert native[2] == python[2]
    assert any(b"workflow.complexity_tier" in raw for raw, _, _ in native[0])


def test_held_traces_are_c_objects_on_the_native_path() -> None:
    proc = WorkflowProcessor(
        settings(Kind.PROCESSOR, "workflow"), WorkflowConfig.model_validate({}), Capture()
    )
    proc._ingest(workload(1)[0], 5.0)
    trace = next(iter(proc.store.held.values()))
    assert type(trace) is tw.Trace
    assert (trace.last_seen, trace.queued_at, trace.queued_first) == (5.0, 5.0, 5.0)
    # held data is left out of the cyclic garbage collector (it cannot form cycles)
    roots = [t.root for t in proc.store.held.values() if t.root is not None]
    assert roots and not any(gc.is_tracked(r) for r in roots)
    assert not gc.is_tracked(trace)
    fresh = tw.Trace(1.0, 2.0, 3.0, store_module.TRACE_OVERHEAD)
    assert (fresh.spans, fresh.groups, fresh.ids, fresh.parents) == ([], [], [], [])
    assert len(fresh) == 0
    assert (fresh.nbytes, fresh.root_index, fresh.tool_calls) == (400, -1, 0)
    assert (fresh.root, fresh.root_present, fresh.agent_id) == (None, (), "")


def apply_args(held: dict[Any, Any], released: Any = None, classify: Any = None) -> tuple[Any, ...]:
    return (
        held,
        {} if released is None else released,
        1.0,
        rules_module.outcome,
        [()] * 32,
        (False, "", "", "", ()),
        160,
        50,
        400,
        classify or (lambda span_raw, message: span_raw + b"E"),
    )


def test_apply_mode_rejects_bad_arguments_and_leaves_held_unchanged() -> None:
    raw = request([resource_spans([scope_spans([raw_span(T1, b"a" * 8)])])])
    cfg = facts_cfg()
    with pytest.raises(TypeError):
        tw.ingest(raw, {}, TOOL_A, TOOL_B, AGENT, None, apply_args({}))  # apply without facts
    with pytest.raises(TypeError):
        tw.ingest(raw, {}, TOOL_A, TOOL_B, AGENT, cfg, (1, 2))
    with pytest.raises(TypeError):  # a held trace that is not a Trace
        tw.ingest(raw, {}, TOOL_A, TOOL_B, AGENT, cfg, apply_args({T1: object()}))
    broken = tw.Trace(0.0, 0.0, 0.0)
    broken.root_present = "not a tuple"
    with pytest.raises(TypeError):
        tw.ingest(raw, {}, TOOL_A, TOOL_B, AGENT, cfg, apply_args({T1: broken}))
    held: dict[Any, Any] = {}
    for bad in (raw[:-1], raw + b"\xff"):
        with pytest.raises(ValueError):
            tw.ingest(bad, {}, TOOL_A, TOOL_B, AGENT, cfg, apply_args(held))
    assert held == {}
    # a trace already released: nothing applied, the caller takes the Python path
    assert tw.ingest(raw, {}, TOOL_A, TOOL_B, AGENT, cfg, apply_args(held, {T1: None})) is None
    assert held == {}
    leftovers, added_bytes, added_spans = tw.ingest(
        raw, {}, TOOL_A, TOOL_B, AGENT, cfg, apply_args(held)
    )
    assert (leftovers, added_spans) == ([], 1)
    assert added_bytes == 400 + 160 + 50 + len(held[T1].spans[0])
    assert held[T1].root == (False, "", "", "", ())


def release_args(batch: list[Any], **changes: Any) -> list[Any]:
    proc = WorkflowProcessor(
        settings(Kind.PROCESSOR, "workflow"), WorkflowConfig.model_validate({}), Capture()
    )
    store: Any = proc.store
    args = {
        "batch": batch,
        "cfg": store.native.stamp,
        "tails": {},
        "pending": {},
        "outcomes": {},
        "lru": {},
        "lru_size": 10,
        "markers": store.native.markers,
        "suffix_for": store.suffix_for,
    }
    args.update(changes)
    return list(args.values())


def test_release_stamps_counts_and_remembers() -> None:
    trace = tw.Trace(0.0, 0.0, 0.0, 400)
    trace.add([raw_span(T1, b"r" * 8)], [(b"", b"", b"", b"")], [b"r" * 8], [b""])
    trace.root = (True, "wf-1", "support", "success", ())
    trace.root_index = 0
    args = release_args([(T1, trace, "wait")])
    encoded, count, nbytes = tw.release(*args)
    assert (count, nbytes) == (1, 400)
    pending, outcomes, lru = args[3], args[4], args[5]
    assert pending == {"wait": [1, 1]} and outcomes == {"success": 1}
    values, suffix = lru[T1]
    assert values == ("wf-1", "support", "unknown", "success", "simple")
    assert encoded.endswith(suffix)
    keys = ("workflow.id", "workflow.type", "workflow.agent.id", "workflow.outcome")
    for key, value in zip((*keys, "workflow.complexity_tier"), values, strict=True):
        assert wire_module.encode_attribute_uncached(key, value) in suffix


def test_release_rejects_bad_input() -> None:
    good = tw.Trace(0.0, 0.0, 0.0)
    broken = tw.Trace(0.0, 0.0, 0.0)
    broken.root = (True,)
    cases = [
        release_args([(T1, object(), "wait")]),
        release_args([(T1, good)]),
        release_args([("not bytes", good, "wait")]),
        release_args([(T1, broken, "wait")]),
        release_args([], cfg=(1, 2)),
        release_args([], markers=("str",)),
        release_args([(T1, good, "wait")], pending={"wait": "x"}),
    ]
    for args in cases:
        with pytest.raises(TypeError):
            tw.release(*args)
    bad_root = tw.Trace(0.0, 0.0, 0.0)
    bad_root.root = (True, "wf", "t", 5, ())  # an outcome that is not a str
    with pytest.raises(TypeError):
        tw.release(*release_args([(T1, bad_root, "wait")]))
    bad_group = tw.Trace(0.0, 0.0, 0.0)
    bad_group.root = (False, "", "", "", ())
    with pytest.raises(AttributeError):  # read-only: spans are added with add()
        bad_group.spans = [b"x"]


def test_apply_mode_has_failed_tool_calls_classified() -> None:
    failed = raw_span(T1, b"t" * 8, b"r" * 8, kv(b"gen_ai.operation.name", s_(b"execute_tool")))
    failed += ld(15, varint(3 << 3) + b"\x02")
    raw = request([resource_spans([scope_spans([failed])])])
    held: dict[Any, Any] = {}
    leftovers, added_bytes, _ = tw.ingest(
        raw, {}, TOOL_A, TOOL_B, AGENT, facts_cfg(), apply_args(held)
    )
    assert leftovers == [] and held[T1].spans == [failed + b"E"]
    assert held[T1].tool_calls == 1 and added_bytes == 400 + 160 + 50 + len(failed) + 1
    # the appended error.type names the agent: the special spans are left to the caller
    held = {}
    named = apply_args(held, classify=lambda span_raw, message: span_raw + AGENT)
    (left,), _, _ = tw.ingest(raw, {}, TOOL_A, TOOL_B, AGENT, facts_cfg(), named)
    assert left[1] == [failed + AGENT] and left[5] == len(failed + AGENT) and left[7] == -1
    assert held[T1].spans == []
    for classify in (lambda span_raw, message: "not bytes", lambda span_raw, message: 1 / 0):
        with pytest.raises((TypeError, ZeroDivisionError)):
            tw.ingest(raw, {}, TOOL_A, TOOL_B, AGENT, facts_cfg(), apply_args({}, None, classify))


def test_classify_gets_the_status_message_when_it_alone_decides() -> None:
    """C passes the status message of a failed tool call without events (the workflow
    processor remembers the error.type per message); None when the span has events, or
    its status is not plainly ERROR (the Python classifier then reads the whole span)."""
    tool = kv(b"gen_ai.operation.name", s_(b"execute_tool"))
    plain = raw_span(T1, b"a" * 8, b"r" * 8, tool) + ld(
        15, ld(2, b"boom") + varint(3 << 3) + b"\x02"
    )
    with_event = raw_span(T1, b"b" * 8, b"r" * 8, tool) + ld(11, ld(3, b"exception"))
    with_event += ld(15, ld(2, b"boom") + varint(3 << 3) + b"\x02")
    no_message = raw_span(T1, b"c" * 8, b"r" * 8, tool) + ld(15, varint(3 << 3) + b"\x02")
    seen: list[tuple[bytes, bytes | None]] = []

    def classify(span_raw: bytes, message: bytes | None) -> bytes:
        seen.append((span_raw[:20], message))
        return span_raw

    raw = request([resource_spans([scope_spans([plain, with_event, no_message])])])
    tw.ingest(raw, {}, TOOL_A, TOOL_B, AGENT, facts_cfg(), apply_args({}, None, classify))
    assert [m for _, m in seen] == [b"boom", None, b""]


def test_expire_takes_due_traces_and_requeues_the_others() -> None:
    held: collections.OrderedDict[bytes, Any] = collections.OrderedDict()
    for name, (last_seen, queued_at, queued_first) in {
        b"a": (1.0, 1.0, 1.0),  # due (wait)
        b"b": (9.0, 2.0, 2.0),  # spans since queued: queued again
        b"c": (9.5, 3.0, 0.5),  # held longer than max_wait
        b"d": (9.0, 9.0, 9.0),  # not due: the walk ends here
        b"e": (1.0, 1.0, 1.0),
    }.items():
        held[name] = tw.Trace(last_seen, queued_at, queued_first)
    b_trace = held[b"b"]
    out = tw.expire(held, 10.0, 2.0, 9.0)
    assert [(tid, reason) for tid, _, reason in out] == [(b"a", "wait"), (b"c", "max_wait")]
    assert list(held) == [b"d", b"e", b"b"] and b_trace.queued_at == 9.0
    assert tw.expire(held, 10.0, 2.0, 0.0) == []
    assert [tid for tid, _, _ in tw.expire(held, 20.0, 2.0, 0.0)] == [b"d", b"e", b"b"]
    assert not held
    with pytest.raises(TypeError):
        tw.expire(collections.OrderedDict({b"x": object()}), 0.0, 1.0, 0.0)


@pytest.mark.parametrize("seed", range(4))
def test_expire_in_parts_cuts_as_rules_parts(seed: int) -> None:
    """expire with max_spans: the due traces in the parts rules.parts makes of them."""
    rng = random.Random(seed)
    for _ in range(50):
        sizes = [rng.randint(0, 9) for _ in range(rng.randint(0, 12))]
        max_spans = rng.choice([0, 1, 5, 10, 30])
        held: list[collections.OrderedDict[bytes, Any]] = [collections.OrderedDict() for _ in "ab"]
        for k, n in enumerate(sizes):
            for h in held:
                trace = h[bytes([k])] = tw.Trace(1.0, 1.0, 1.0)
                ids = [bytes([k, j]) for j in range(n)]
                trace.add([b"s"] * n, [(b"", b"", b"", b"")] * n, ids, [b""] * n)
        got = tw.expire(held[0], 10.0, 2.0, 0.0, max_spans)
        whole = tw.expire(held[1], 10.0, 2.0, 0.0)
        expected = list(rules_module.parts(whole, lambda entry: len(entry[1]), max_spans))
        assert [[(tid, len(t), r) for tid, t, r in part] for part in got] == [
            [(tid, len(t), r) for tid, t, r in part] for part in expected
        ]


def test_assemble_survives_a_callback_changing_the_lists() -> None:
    group = (b"r", b"", b"s", b"")
    spans = [b"a MARK", b"b MARK", b"c"]
    groups = [group] * 3

    def clear(span_raw: bytes, stamp: object) -> bytes:
        spans.clear()
        return b"+"

    got = tw.assemble([(spans, group, b"", object())], (b"MARK",), clear)
    assert got == tw.assemble([([b"a MARK"], group, b"+", None)], (), clear)
    spans[:] = [b"a MARK", b"b MARK", b"c"]
    with pytest.raises(ValueError):  # the groups no longer match the spans
        tw.assemble([(spans, groups, b"", object())], (b"MARK",), clear)


# -- the spans of a held trace, in C --------------------------------------------------------------
def test_trace_add_keeps_spans_ids_and_groups_in_order() -> None:
    """Spans added in several calls (one chunk each): ids of every length (longer than 8
    bytes: found in the span's encoding, or copied when they are not there), groups repeated,
    interleaved and more distinct ones than the table is searched for."""
    rng = random.Random(3)
    groups = [(b"r%d" % i, b"", b"s", b"u") for i in range(40)]
    expected: tuple[list[Any], ...] = ([], [], [], [])
    trace = tw.Trace(0.0, 0.0, 0.0)
    sizes = [sys.getsizeof(trace)]
    for call in range(12):
        batch: tuple[list[Any], ...] = ([], [], [], [])
        for _ in range(rng.randint(0, 30)):
            span_id = bytes(rng.randrange(256) for _ in range(rng.choice([0, 1, 8, 8, 9, 16, 300])))
            parent = rng.choice([b"", span_id, b"p" * 9, b"q" * 12, b"\x00" * 8])
            inside = rng.random() < 0.7  # the ids in the encoding, as ingested spans have them
            body = raw_span(T1, span_id, parent) if inside else b"x" * rng.randint(0, 40)
            for part, value in zip(batch, (body, rng.choice(groups), span_id, parent), strict=True):
                part.append(value)
        trace.add(*batch)
        for part, more in zip(expected, batch, strict=True):
            part.extend(more)
        assert (trace.spans, trace.groups, trace.ids, trace.parents) == expected, call
        assert len(trace) == len(expected[0])
        sizes.append(sys.getsizeof(trace))
    assert sizes == sorted(sizes) and sizes[-1] > sum(len(s) for s in expected[0])
    # empty and bad additions change nothing
    for bad, error in (
        (([b"s"], [], [], []), ValueError),
        (([1], [groups[0]], [b""], [b""]), TypeError),
        (([b"s"], [groups[0]], [b""], ["p"]), TypeError),
        (([b"s"], [(b"", b"", b"")], [b""], [b""]), TypeError),
        (([b"s"], [(b"", b"", b"", "u")], [b""], [b""]), TypeError),
        (((b"s",), [groups[0]], [b""], [b""]), TypeError),
    ):
        with pytest.raises(error):
            trace.add(*bad)
    trace.add([], [], [], [])
    assert (trace.spans, trace.groups, trace.ids, trace.parents) == expected
    for name in ("spans", "groups", "ids", "parents"):
        with pytest.raises(AttributeError):
            setattr(trace, name, [])


def test_release_reads_the_chunks_even_while_a_callback_adds_to_the_trace() -> None:
    """suffix_for (Python) adding spans to the trace being released: the spans released are
    those the trace had; nothing read moved."""
    markers = WorkflowProcessor(
        settings(Kind.PROCESSOR, "workflow"), WorkflowConfig.model_validate({}), Capture()
    ).store.config.stamp_markers
    marked = raw_span(T1, b"m" * 8, b"r" * 8, kv(b"workflow.type", s_(b"preset")))
    root = raw_span(T1, b"r" * 8)
    group = (b"res", b"", b"scope", b"")
    trace = tw.Trace(0.0, 0.0, 0.0, 400)
    trace.add(
        [root, marked, marked],
        [group] * 3,
        [b"r" * 8, b"m" * 8, b"m" * 8],
        [b"", b"r" * 8, b"r" * 8],
    )
    trace.root = (True, "wf-1", "support", "success", ())
    trace.root_index = 0
    calls = []

    def suffix_for(span_raw: bytes, stamp: Any) -> bytes:
        calls.append(span_raw)
        for _ in range(50):  # grows the chunk table and the group table
            trace.add([b"late"], [(b"r%d" % len(calls), b"", b"", b"")], [b"i"], [b""])
        return b"+"

    encoded, count, _ = tw.release(*release_args([(T1, trace, "wait")], suffix_for=suffix_for))
    assert calls == [marked, marked] and count == 3 and len(trace) == 103
    assert encoded.count(b"late") == 0 and encoded.count(marked + b"+") == 2
    assert markers  # the stamp keys are the markers searched for


def test_release_searches_a_chunk_once_and_asks_for_exactly_the_marked_spans() -> None:
    """A chunk of several spans is searched for the markers' common part once (without the
    root given its own suffix, whose bytes hold a stamp key) before span by span: suffix_for
    is asked for exactly the spans holding a marker, wherever the root and they are in the
    chunk, the marker at a span's first or last bytes, in a first or a second chunk."""
    marker = kv(b"workflow.type", s_(b"preset"))
    group = (b"res", b"", b"scope", b"")
    for n in (2, 3, 5):
        for root_at in range(n):
            for marked_at in [None, *range(n)]:
                for present in ((), ("workflow.type",)):
                    for second_chunk in (False, True):
                        spans = []
                        for i in range(n):
                            sid = bytes([65 + i]) * 8
                            parent = b"" if i == root_at else bytes([65 + root_at]) * 8
                            extra = marker if i in (root_at, marked_at) else b""
                            if i == marked_at and i % 2:  # the marker at the span's start
                                spans.append(marker + raw_span(T1, sid, parent))
                            else:
                                spans.append(raw_span(T1, sid, parent, extra))
                        trace = tw.Trace(0.0, 0.0, 0.0, 400)
                        ids = [bytes([65 + i]) * 8 for i in range(n)]
                        parents = [b"" if i == root_at else ids[root_at] for i in range(n)]
                        if second_chunk:  # a first chunk without a marker before them
                            trace.add([raw_span(T1, b"z" * 8, ids[root_at])] * 2, [group] * 2,
                                      [b"z" * 8] * 2, [ids[root_at]] * 2)  # fmt: skip
                        trace.add(spans, [group] * n, ids, parents)
                        trace.root = (True, "wf-1", "support", "success", ())
                        trace.root_index = root_at + (2 if second_chunk else 0)
                        trace.root_present = present
                        asked: list[bytes] = []

                        def suffix_for(span_raw: bytes, stamp: Any, asked: list = asked) -> bytes:
                            asked.append(span_raw)
                            return b"+"

                        tw.release(*release_args([(T1, trace, "wait")], suffix_for=suffix_for))
                        # the root (holding the marker) is searched when it gets no suffix
                        # of its own, and only then
                        want = [
                            spans[i]
                            for i in range(n)
                            if (i == root_at and not present) or (i != root_at and i == marked_at)
                        ]
                        assert asked == want, (n, root_at, marked_at, present, second_chunk)


def big_workload(seed: int) -> list[bytes]:
    """Traces of 65 to 150 spans (the depth is computed through a hash table), span and parent
    ids of odd lengths (duplicates and cycles among them), each trace over three requests and
    more resources than a trace's group table is searched through."""
    rng = random.Random(seed)
    reqs: list[list[bytes]] = [[] for _ in range(3)]
    for t in range(1, 6):
        trace_id = (1000 + t).to_bytes(16, "big")
        n = rng.randint(65, 150)
        ids = [
            rng.choice([i.to_bytes(8, "big"), i.to_bytes(12, "big"), bytes([i % 7]), b""])
            for i in range(n)
        ]
        for i in range(n):
            root = i == 0
            known = [x for x in ids[:i] if x]  # (an empty parent would make another root)
            parent = b"" if root else rng.choice([*known, *known, b"\xff" * 9, ids[-1] or b"z"])
            name = b"workflow.support" if root else b"op"
            attrs = kv(b"gen_ai.operation.name", s_(b"execute_tool")) if i % 9 == 4 else b""
            body = ld(1, trace_id) + (ld(2, ids[i]) if ids[i] else b"")
            body += (ld(4, parent) if parent else b"") + ld(5, name) + attrs
            reqs[rng.randrange(3)].append(body)
    out = []
    for spans in reqs:
        resources = [resource_spans([scope_spans(spans[k::45])], b"r%d" % k) for k in range(45)]
        out.append(request(resources))
    return out


def big_spans(seed: int) -> list[list[bytes]]:
    return [
        [
            s
            for rs in ShallowTraces.FromString(r).resource_spans
            for ss in rs.scope_spans
            for s in ss.spans
        ]
        for r in big_workload(seed)
    ]


@pytest.mark.usefixtures("same_accounting")
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_large_traces_with_odd_ids_are_identical_on_both_paths(seed: int) -> None:
    cfg = {
        "wait_duration": "10s",
        "complexity_tiers": [
            {"name": "flat", "max_spans": 1000, "max_tool_calls": 1000, "max_depth": 3},
            {"name": "mid", "max_spans": 1000, "max_tool_calls": 1000, "max_depth": 6},
        ],
    }
    reqs = big_workload(seed)
    native = asyncio.run(run_timed(True, reqs, cfg))
    python = asyncio.run(run_timed(False, reqs, cfg))
    assert native == python
    out = b"".join(raw for raw, _, _ in native[0])
    assert out.count(b"workflow.complexity_tier") == sum(len(r) for r in big_spans(seed))


def test_the_held_bytes_each_path_counts() -> None:
    """Each path counts its own constants; the C path's count covers what its traces really
    allocate, even when every span comes in a request of its own."""
    P, N = store_module, native_module
    for native in (True, False):
        proc = WorkflowProcessor(
            settings(Kind.PROCESSOR, "workflow"),
            WorkflowConfig.model_validate({}),
            Capture(),
            native=native,
        )
        chunks: collections.Counter[bytes] = collections.Counter()  # requests with its spans
        for raw in workload(4) + facts_workload(4):
            proc._ingest(raw, 1.0)
            chunks.update(tid for tid, *_ in reference_ingest(raw))
        for tid, trace in proc.store.held.items():
            spans = trace.spans
            if native:
                expected = N.NATIVE_TRACE_OVERHEAD + N.NATIVE_CHUNK_OVERHEAD * chunks[tid]
                expected += sum(len(s) + N.NATIVE_SPAN_OVERHEAD for s in spans)
                assert sys.getsizeof(trace) - type(trace).__basicsize__ <= (
                    trace.nbytes - N.NATIVE_TRACE_OVERHEAD
                )
            else:
                expected = P.TRACE_OVERHEAD + sum(len(s) + P.SPAN_OVERHEAD for s in spans)
            assert trace.nbytes == expected
        assert proc.store.held_bytes == sum(t.nbytes for t in proc.store.held.values())
    # the worst case: one span per chunk, in a trace of many groups
    trace = tw.Trace(0.0, 0.0, 0.0)
    counted = 0
    for i in range(300):
        body = raw_span(T1, i.to_bytes(8, "big"), b"", b"x" * (i % 50))
        trace.add([body], [(b"r%d" % i, b"", b"", b"")], [i.to_bytes(8, "big")], [b""])
        counted += len(body) + N.NATIVE_SPAN_OVERHEAD + N.NATIVE_CHUNK_OVERHEAD
        assert sys.getsizeof(trace) - type(trace).__basicsize__ <= counted


# -- IngestConfig: ingest's configuration read once ------------------------------------------------
def test_ingest_config_gives_what_the_positional_form_gives() -> None:
    cfg = facts_cfg()
    execs = (b"\x0a\x0cinvoke_agent", b"workflow.")
    agent_run = raw_span(T2, b"i" * 8, b"h" * 8, kv(b"gen_ai.operation.name", s_(b"invoke_agent")))
    reqs = workload(5) + facts_workload(5)
    reqs.append(request([resource_spans([scope_spans([raw_span(T2, b"h" * 8), agent_run])])]))
    config = tw.IngestConfig(TOOL_A, TOOL_B, AGENT, cfg, execs)
    for raw in reqs:
        held_a: dict[Any, Any] = {}
        held_b: dict[Any, Any] = {}
        a = tw.ingest(raw, {}, TOOL_A, TOOL_B, AGENT, cfg, apply_args(held_a), execs)
        b = tw.ingest(raw, {}, config, apply_args(held_b))
        assert a == b
        assert [(k, t.spans, t.root, t.agent_id) for k, t in held_a.items()] == [
            (k, t.spans, t.root, t.agent_id) for k, t in held_b.items()
        ]
    *_, found = tw.ingest(reqs[-1], {}, config, apply_args({}))
    assert found == [(T2, 1)]  # the agent run below an HTTP-like root, by its index
    # without execution markers: the three-item result
    plain = tw.IngestConfig(TOOL_A, TOOL_B, AGENT, cfg)
    assert len(tw.ingest(reqs[-1], {}, plain, apply_args({}))) == 3


def test_ingest_config_rejects_bad_arguments() -> None:
    cfg = facts_cfg()
    for args in (
        (TOOL_A, TOOL_B, AGENT, (b"x",)),
        (TOOL_A, TOOL_B, AGENT, cfg, (b"a",) * 33),
        (TOOL_A, TOOL_B, AGENT, cfg, ("str",)),
        ("str", TOOL_B, AGENT, cfg),
    ):
        with pytest.raises(TypeError):
            tw.IngestConfig(*args)
    config = tw.IngestConfig(TOOL_A, TOOL_B, AGENT, cfg)
    with pytest.raises(TypeError):
        tw.ingest(b"", {}, config, None)  # apply is required with a config
    with pytest.raises(TypeError):
        tw.ingest(b"", {}, TOOL_A, TOOL_B, AGENT, cfg, None, (b"x",))  # markers need apply
    with pytest.raises(ValueError):
        tw.ingest(b"\xff", {}, config, apply_args({}))


def test_ingest_config_reads_other_argument_types_as_exact_ones() -> None:
    """ingest with a config reads exact bytes, dict, float and ints without PyArg_ParseTuple;
    any other accepted type (a buffer, a float-convertible now, subclasses) goes through it
    and gives the same result, and a malformed apply is refused as before."""
    cfg = facts_cfg()
    config = tw.IngestConfig(TOOL_A, TOOL_B, AGENT, cfg, (b"workflow.",))

    class Args(tuple):  # type: ignore[type-arg]
        pass

    for raw in workload(3) + facts_workload(3):
        held_a: dict[Any, Any] = {}
        expected = tw.ingest(raw, {}, config, apply_args(held_a))
        for form in ("buffer", "int now", "tuple subclass"):
            held_b: dict[Any, Any] = {}
            apply = list(apply_args(held_b))
            arg: Any = raw
            if form == "buffer":
                arg = memoryview(bytearray(raw))
            elif form == "int now":
                apply[2] = int(apply[2])
            got = tw.ingest(arg, {}, config, Args(apply) if form != "int now" else tuple(apply))
            assert got == expected, form
            assert [(k, t.spans, t.root) for k, t in held_b.items()] == [
                (k, t.spans, t.root) for k, t in held_a.items()
            ]
    raw = workload(1)[0]
    short = apply_args({})[:9]
    with pytest.raises(TypeError, match="apply"):
        tw.ingest(raw, {}, config, short)
    huge = list(apply_args({}))
    huge[6] = 1 << 80  # span_overhead beyond Py_ssize_t: PyArg_ParseTuple's OverflowError
    with pytest.raises(OverflowError):
        tw.ingest(raw, {}, config, tuple(huge))
    with pytest.raises(TypeError):
        tw.ingest(raw, [], config, apply_args({}))  # interned: a dict


def test_ingest_config_takes_now_apart_from_apply() -> None:
    """``ingest(raw, interned, config, apply, now)``: the ``now`` given stands for apply's
    (the workflow processor builds apply once); the result is otherwise the same."""
    cfg = facts_cfg()
    config = tw.IngestConfig(TOOL_A, TOOL_B, AGENT, cfg, (b"workflow.",))
    for raw in workload(2) + facts_workload(2):
        held_a: dict[Any, Any] = {}
        apply_a = list(apply_args(held_a))
        apply_a[2] = 7.5
        expected = tw.ingest(raw, {}, config, tuple(apply_a))
        held_b: dict[Any, Any] = {}
        got = tw.ingest(raw, {}, config, apply_args(held_b), 7.5)  # apply's now: 1.0
        assert got == expected
        assert [(k, t.spans, t.root, t.queued_first, t.last_seen) for k, t in held_b.items()] == [
            (k, t.spans, t.root, t.queued_first, t.last_seen) for k, t in held_a.items()
        ]
        assert {t.queued_first for t in held_b.values()} == {7.5}
        held_c: dict[Any, Any] = {}  # through PyArg_ParseTuple (a buffer): the same
        got = tw.ingest(memoryview(raw), {}, config, apply_args(held_c), 7.5)
        assert got == expected
        assert {t.queued_first for t in held_c.values()} == {7.5}
    raw = workload(1)[0]
    for now in ("7.5", 7, None):
        with pytest.raises(TypeError):
            tw.ingest(raw, {}, config, apply_args({}), now)


def test_ingest_config_reuses_the_last_group_only_while_interned() -> None:
    """The configuration remembers the group it interned last; a request with the same
    resource and scope gets that very object, but only while ``interned`` maps it to itself:
    after the dict is cleared (or for another dict) the group is interned there afresh."""
    cfg = facts_cfg()
    config = tw.IngestConfig(TOOL_A, TOOL_B, AGENT, cfg)

    def req(trace: bytes, span_id: bytes, scope: bytes = b"sc") -> bytes:
        return request([resource_spans([scope_spans([raw_span(trace, span_id)], scope)], b"res")])

    interned: dict[Any, Any] = {}
    held: dict[Any, Any] = {}
    tw.ingest(req(T1, b"a" * 8), interned, config, apply_args(held), 1.0)
    (group,) = interned
    tw.ingest(req(T1, b"b" * 8), interned, config, apply_args(held), 1.0)
    assert held[T1].groups == [group, group]
    assert all(g is group for g in held[T1].groups)
    assert len(interned) == 1
    interned.clear()  # (the store clears it beyond MAX_GROUPS)
    tw.ingest(req(T2, b"c" * 8), interned, config, apply_args(held), 1.0)
    (fresh,) = interned
    assert fresh == group and fresh is not group
    assert held[T2].groups[0] is fresh
    other: dict[Any, Any] = {}  # another dict, then a dict that maps the group elsewhere
    tw.ingest(req(T2, b"d" * 8), other, config, apply_args(held), 1.0)
    assert held[T2].groups[1] is next(iter(other)) and next(iter(other)) is not fresh
    decoy = (b"res", b"", b"sc", b"")
    tw.ingest(req(T2, b"e" * 8), {fresh: decoy}, config, apply_args(held), 1.0)
    assert held[T2].groups[2] is decoy
    tw.ingest(req(T2, b"f" * 8, b"other scope"), interned, config, apply_args(held), 1.0)
    assert held[T2].groups[3] == (b"res", b"", b"other scope", b"")
    assert len(interned) == 2


@pytest.mark.parametrize("seed", range(6))
def test_late_memory_matches_a_trimmed_ordered_dict(seed: int) -> None:
    """The C store's late-span memory (``LateMemory``) against the Python store's (an
    ``OrderedDict`` trimmed after each release): released traces remembered in the same
    order with the same stamps, moved to the end alike, the oldest dropped alike, read
    alike."""
    rng = random.Random(seed)
    size = rng.choice([1, 2, 3, 5, 8, 40])
    late = tw.LateMemory(size)
    model: collections.OrderedDict[bytes, Any] = collections.OrderedDict()
    pool = [bytes([k]) * rng.choice([1, 8, 16]) for k in range(1, 60)]
    for _ in range(150):
        batch = []
        for tid in rng.sample(pool, rng.randint(0, 12)):
            trace = tw.Trace(0.0, 0.0, 0.0)
            roll = rng.random()
            if roll < 0.4:
                trace.root = (True, f"wf-{tid.hex()}", "support", "success", ())
            elif roll < 0.8:
                trace.root = (False, "", "", "", ())
            batch.append((tid, trace, "wait"))  # (without a root: not remembered)
        tw.release(*release_args(list(batch), lru=late, lru_size=size))
        tw.release(*release_args(list(batch), lru=model, lru_size=size))
        for tid in rng.sample(pool, 3):
            if tid in model:
                model.move_to_end(tid)
                late.move_to_end(tid)
            else:
                with pytest.raises(KeyError):
                    late.move_to_end(tid)
                with pytest.raises(KeyError):
                    late[tid]
            assert (tid in late) == (tid in model)
            assert late.get(tid) == model.get(tid)
            assert late.get(tid, "x") == model.get(tid, "x")
        assert late.items() == list(model.items())
        assert list(late) == list(model)
        assert len(late) == len(model) <= size
    assert "not bytes" not in late and late.get(1) is None
    assert sys.getsizeof(late) > 0


def test_late_memory_rules() -> None:
    late = tw.LateMemory(0)  # nothing remembered
    trace = tw.Trace(0.0, 0.0, 0.0)
    trace.root = (False, "", "", "", ())
    tw.release(*release_args([(T1, trace, "wait")], lru=late, lru_size=0))
    assert len(late) == 0 and T1 not in late
    with pytest.raises(ValueError, match="lru_size"):
        tw.release(*release_args([], lru=tw.LateMemory(3), lru_size=4))
    with pytest.raises(TypeError):
        tw.release(*release_args([], lru=[]))
    # ingest reads it as it reads a dict: a span of a remembered trace is a late span
    raw = request([resource_spans([scope_spans([raw_span(T1, b"a" * 8)])])])
    late = tw.LateMemory(2)
    tw.release(*release_args([(T1, trace, "wait")], lru=late, lru_size=2))
    held: dict[Any, Any] = {}
    assert tw.ingest(raw, {}, TOOL_A, TOOL_B, AGENT, facts_cfg(), apply_args(held, late)) is None
    assert held == {}
    with pytest.raises(TypeError):
        tw.ingest(raw, {}, TOOL_A, TOOL_B, AGENT, facts_cfg(), (held, [T1], *apply_args({})[2:]))
