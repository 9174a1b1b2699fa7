"""The one-pass scans of ``plugins/_native/_tailscan.c`` against their Python twins:
``trace_facts`` (tail_sampling's facts of a trace) against
``plugins.tailsamplingprocessor.scan.trace_facts_python`` and against protobuf's decoding of the
same spans; ``find_patterns`` (redaction's prefilter) against
``plugins.redactionprocessor.prefilter.find_patterns_python`` and against ``re``. Random,
hand-encoded, corrupt and irregular inputs; the same answers, ``None`` included."""

from __future__ import annotations

import random
import re

import pytest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from plugins.redactionprocessor.prefilter import (
    Prefilter,
    compile_table,
    find_patterns_python,
    leading_classes,
)
from plugins.tailsamplingprocessor.scan import Facts, trace_facts_python
from tests.plugins._native_support import ld, require_native, varint, vf

native = require_native("_tailscan")

KEYS = (b"workflow.outcome", b"workflow.id", b"workflow.type")
ERROR_KEY = b"error.type"


def fixed64(number: int, value: int) -> bytes:
    return varint(number << 3 | 1) + value.to_bytes(8, "little")


def kv(key: bytes, value: bytes | None) -> bytes:
    return ld(1, key) + (b"" if value is None else ld(2, value))


def random_span(rng: random.Random) -> bytes:
    parts = [ld(1, rng.randbytes(16)), ld(2, rng.randbytes(8))]
    if rng.random() < 0.6:
        parts.append(ld(4, rng.randbytes(rng.choice((0, 8)))))
    parts.append(ld(5, b"op"))
    if rng.random() < 0.9:
        parts.append(fixed64(7, rng.randrange(1 << 64)))
    if rng.random() < 0.9:
        parts.append(fixed64(8, rng.randrange(1 << 64)))
    for _ in range(rng.randrange(5)):
        key = rng.choice([*KEYS, ERROR_KEY, b"other", b""])
        value = rng.choice([None, b"", ld(1, b"failed"), vf(3, 7), ld(1, b"\xff")])
        parts.insert(rng.randrange(len(parts) + 1), ld(9, kv(key, value)))
    if rng.random() < 0.5:
        code = rng.choice([0, 1, 2, 3, -1, 2 + (1 << 32)])
        parts.append(ld(15, ld(2, b"msg") + vf(3, code)))
    if rng.random() < 0.05:  # irregular: a field with another wire type, a status twice
        parts.append(rng.choice([vf(7, 1), ld(15, b""), vf(4, 0), ld(9, vf(1, 1))]))
    return b"".join(parts)


def corrupt(rng: random.Random, data: bytes) -> bytes:
    if not data:
        return data
    b = bytearray(data)
    for _ in range(rng.randrange(1, 4)):
        op = rng.randrange(3)
        if op == 0:
            b[rng.randrange(len(b))] = rng.randrange(256)
        elif op == 1:
            del b[rng.randrange(len(b)) :]
            if not b:
                break
        else:
            b.insert(rng.randrange(len(b) + 1), rng.randrange(256))
    return bytes(b)


def test_facts_of_random_and_corrupt_spans_are_the_twins() -> None:
    rng = random.Random(15)
    nones = 0
    for _ in range(3000):
        spans = [random_span(rng) for _ in range(rng.randrange(6))]
        if rng.random() < 0.3 and spans:
            i = rng.randrange(len(spans))
            spans[i] = corrupt(rng, spans[i])
        c = native.trace_facts(spans, KEYS, ERROR_KEY)
        p = trace_facts_python(spans, KEYS, ERROR_KEY)
        assert (None if c is None else Facts._make(c)) == p, spans
        nones += c is None
    assert 0 < nones < 3000


def test_facts_say_what_protobuf_decodes() -> None:
    rng = random.Random(7)
    checked = 0
    for _ in range(1000):
        spans = [random_span(rng) for _ in range(1 + rng.randrange(5))]
        facts = trace_facts_python(spans, KEYS, ERROR_KEY)
        try:
            decoded = [Span.FromString(s) for s in spans]
        except Exception:
            continue
        if facts is None:
            continue
        checked += 1
        codes = {s.status.code & 0xFFFFFFFF for s in decoded}
        mask = 0
        for c in codes:
            mask |= 1 << (c if c <= 2 else 3)
        assert facts.status_mask == mask
        assert facts.start_min == min(s.start_time_unix_nano for s in decoded)
        assert facts.end_max == max(s.end_time_unix_nano for s in decoded)
        assert facts.roots == [
            (i, s.start_time_unix_nano, s.end_time_unix_nano)
            for i, s in enumerate(decoded)
            if not s.parent_span_id
        ]
        assert facts.failed == [
            i
            for i, s in enumerate(decoded)
            if s.status.code == 2 or any(a.key == "error.type" for a in s.attributes)
        ]
        for k, key in enumerate(KEYS):
            first = next(
                (a.value for s in decoded for a in s.attributes if a.key == key.decode()), None
            )
            got = facts.values[k]
            assert (got is None) == (first is None)
            if got is not None:
                assert AnyValue.FromString(got) == first
    assert checked > 300


def test_irregular_and_malformed_spans_give_none() -> None:
    good = ld(1, b"t" * 16) + fixed64(7, 5) + fixed64(8, 9)
    for bad in (
        good + ld(15, vf(3, 2)) + ld(15, vf(3, 0)),  # a status twice
        good + vf(7, 1),  # start time as a varint
        good + ld(9, ld(1, b"a") + ld(1, b"b")),  # a key written twice
        good + ld(9, ld(1, b"a") + ld(2, b"") + ld(2, b"")),  # a value written twice
        good + ld(15, ld(3, b"")),  # a status code that is not a varint
        good + b"\x0b",  # a group (refused by the walk)
        good[:-3],  # truncated
    ):
        assert native.trace_facts([good, bad], KEYS, ERROR_KEY) is None
        assert trace_facts_python([good, bad], KEYS, ERROR_KEY) is None
    assert native.trace_facts([], KEYS, ERROR_KEY) == (0, 0, 0, [], (None, None, None), [])
    with pytest.raises(ValueError):
        native.trace_facts([], tuple(b"k%d" % i for i in range(33)), ERROR_KEY)
    with pytest.raises(TypeError):
        native.trace_facts(["not bytes"], KEYS, ERROR_KEY)


# -- find_patterns -------------------------------------------------------------------------------
PATTERNS = [
    rb"4[0-9]{12}(?:[0-9]{3})?",
    rb"llm\.input_messages\.",
    rb"ab+c",
    rb"[^a-z]x",
    rb"(?:foo|bar)",  # no leading class: always searched
    rb"q",
]


def random_bytes(rng: random.Random) -> bytes:
    alphabet = b"4012345678x9abcqgen_ai.\x12\x05\x80llm.input_messages"
    return bytes(rng.choice(alphabet) for _ in range(rng.randrange(60)))


def test_find_patterns_is_its_twin_and_never_misses_a_match() -> None:
    rng = random.Random(3)
    compiled = [re.compile(p) for p in PATTERNS]
    literals = [b"gen_ai.input.messages", b"abc", b"x"]
    prefixes = [b"gen_ai."]
    pf = Prefilter.build(literals, prefixes, compiled)
    assert pf is not None
    entries = [([1 << b for b in lit], 0) for lit in literals]
    entries += [([1 << b for b in prefixes[0]], 1)]
    entries += [(leading_classes(p), 0) for p in PATTERNS if leading_classes(p)]
    table = compile_table(entries)
    for _ in range(4000):
        data = random_bytes(rng)
        if rng.random() < 0.2:
            data += b"\x12\x07gen_ai.x" if rng.random() < 0.5 else b"\x0a\x07gen_ai.x"
        mask = native.find_patterns(data, table)
        assert mask == find_patterns_python(data, table), data
        truth = (
            any(lit in data for lit in literals)
            or re.search(rb"\x12[\x01-\x7f]gen_ai\.|\x12[\x80-\xff][\x01-\x7f]gen_ai\.", data)
            is not None
            or any(r.search(data) for r in compiled)
        )
        assert pf.may_match(data) == truth, data


def test_find_patterns_skipping_windows_is_its_twin() -> None:
    """Data of 4 KiB and more with patterns of 3 bytes and more is scanned by windows (the C
    scan's skip table): the same masks as the twin, matches at the first and the last position
    a pattern fits included; a table whose pairs would overflow the skip table's budget (a
    run of negated classes) is scanned byte by byte, with the same masks."""
    rng = random.Random(7)
    literals = [b"gen_ai.input.messages", b"tool_arguments", b"events", b"abc"]
    prefixes = [b"gen_ai."]
    card = leading_classes(rb"4[0-9]{12}(?:[0-9]{3})?")
    entries = [([1 << b for b in lit], 0) for lit in literals]
    entries += [([1 << b for b in prefixes[0]], 1), (card, 0)]
    not_q = ((1 << 256) - 1) & ~(1 << 0x71)
    wide = [*entries, ([1 << 0x71, not_q, not_q, 1 << 0x72], 0)]  # q[^q][^q]r
    alphabet = b"4012345678x9abcqrgen_ai.\x12\x05\x80tool_argumentsevn"
    for table in (compile_table(entries), compile_table(wide)):
        for _ in range(300):
            data = bytearray(rng.choice(alphabet) for _ in range(rng.randrange(4096, 6000)))
            for _ in range(rng.randrange(3)):
                lit = rng.choice([*literals, b"\x12\x07gen_ai.x", b"4111111111111", b"qzzr"])
                at = rng.choice([0, len(data) - len(lit), rng.randrange(len(data) - len(lit))])
                data[at : at + len(lit)] = lit
            raw = bytes(data)
            assert native.find_patterns(raw, table) == find_patterns_python(raw, table), raw


def test_leading_classes_and_bad_tables() -> None:
    assert leading_classes(rb"4[0-9]{2}x?") == [
        1 << 0x34,
        *[sum(1 << b for b in range(48, 58))] * 2,
    ]
    assert leading_classes(rb"(?i)abc") == []
    assert leading_classes(rb"a|b") == [1 << 97 | 1 << 98]  # the parser makes it a class
    assert leading_classes(rb"ab|cd") == []
    assert len(leading_classes(rb"a{100}")) == 32
    for table in (
        b"",
        b"\0" * 8191,
        b"\0" * 8192 + b"\x00\x00",
        b"\0" * 8192 + b"\x02\x00" + b"\0" * 32,
    ):
        with pytest.raises(ValueError):
            native.find_patterns(b"data", table)
        with pytest.raises(ValueError):
            find_patterns_python(b"data", table)
    assert native.find_patterns(b"data", b"\0" * 8192) == 0
