"""The edge check of OTLP requests in C (``plugins/_native/_otlpvalid.c``) against its
pure-Python twin (``pipeline/_otlpvalid.py``: protobuf's full parse and the ids read from the
decoded request) and protobuf itself: the same verdicts, counts and messages on valid requests
of every shape, on the SDK's own, and on mutated ones; the rules one by one."""

from __future__ import annotations

import random
import re
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from google.protobuf.message import DecodeError

from pipeline import _otlpvalid
from pipeline._otlpvalid import Invalid, check_python, requests, tables, walk
from tests.otlp_corpus import KINDS, corpus, mutate, sdk_requests
from tests.plugins._native_support import ld, require_native, varint, vf

native = require_native("_otlpvalid")

HEADER = Path(__file__).resolve().parents[3] / "plugins/_native/_otlpvalid_tables.h"


# looked up once: a name built per call (f"validate_{kind}") is kept by CPython's type
# attribute cache, which the fuzz corpus's leak check (tests/fuzz/test_corpus.py) would count
C_CHECKS: dict[str, Callable[[bytes], int]] = {k: getattr(native, f"validate_{k}") for k in KINDS}


def c_check(kind: str) -> Callable[[bytes], int]:
    return C_CHECKS[kind]


def verdict(fn: Callable[[bytes], int], data: bytes) -> tuple[str, int | str]:
    try:
        return "ok", fn(data)
    except ValueError as exc:
        return "refused", str(exc)


GROUP_FIELD_0 = re.compile(r"field \d+: field number 0$")


def both(kind: str, data: bytes) -> tuple[str, int | str]:
    """The verdict of the C walk, asserted equal to the twin's and the Python walk's (but for
    the one difference on purpose: a field number 0 inside an unknown group, which the
    installed protobuf skips and the walk refuses)."""
    c = verdict(c_check(kind), data)
    assert verdict(lambda d: walk(kind, d), data) == c
    twin = verdict(lambda d: check_python(kind, d), data)
    if not (c[0] == "refused" and GROUP_FIELD_0.search(str(c[1]))):
        assert twin == c
    return c


def protobuf_accepts(kind: str, data: bytes) -> bool:
    try:
        requests()[kind].FromString(data)
    except DecodeError:
        return False
    return True


@pytest.fixture(scope="module")
def sdk() -> dict[str, list[bytes]]:
    return sdk_requests()


def test_the_tables_header_is_generated_from_the_descriptors() -> None:
    assert HEADER.read_text() == _otlpvalid.c_header(), (
        "regenerate: python -m pipeline._otlpvalid > plugins/_native/_otlpvalid_tables.h"
    )


@pytest.mark.parametrize("kind", KINDS)
def test_valid_requests_are_accepted_with_the_full_parse_s_count(
    kind: str, sdk: dict[str, list[bytes]]
) -> None:
    total = 0
    for data in corpus(kind, 11, 150, sdk[kind]):
        c = both(kind, data)
        assert c[0] == "ok", c
        request = requests()[kind].FromString(data)
        assert c[1] == _otlpvalid._count(request, tables()[kind])
        total += c[1]
    assert total > 100


@pytest.mark.parametrize("kind", KINDS)
def test_mutated_requests_get_the_same_verdicts_counts_and_messages(
    kind: str, sdk: dict[str, list[bytes]]
) -> None:
    """Structured mutations (ids resized, invalid UTF-8, fields duplicated or re-encoded,
    unknown fields and groups, deep nesting, a oneof member replaced, packed data resized)
    and byte-level ones (bit flips, truncation, splices): the C walk, the Python walk and the
    twin agree on every one, messages included; the twin's verdict is protobuf's."""
    seeds = corpus(kind, 3, 30, sdk[kind])
    rng = random.Random(kind)
    refused = 0
    for _ in range(2500):
        data = mutate(kind, rng.choice(seeds), rng, seeds)
        c = both(kind, data)
        if c[0] == "refused":
            refused += 1
            if not re.search(r"bytes, expected", str(c[1])) and not GROUP_FIELD_0.search(str(c[1])):
                assert not protobuf_accepts(kind, data), c
        else:
            assert protobuf_accepts(kind, data)
    assert 500 < refused < 2000  # both kinds of outcome are well represented


def one_span(span: bytes) -> bytes:
    return ld(1, ld(2, ld(2, span)))


IDS = ld(1, bytes(16)) + ld(2, bytes(8))
SPAN_OK = one_span(IDS)


def group(number: int, body: bytes) -> bytes:
    return varint(number << 3 | 3) + body + varint(number << 3 | 4)


# (request, refused with this message or None when accepted) -- as upb parses them
EDGE_CASES: list[tuple[bytes, str | None]] = [
    (b"", None),
    (one_span(IDS + vf(5, 3)), None),  # name (a string) as a varint: an unknown field
    (one_span(IDS + varint(5 << 3 | 5) + b"abcd"), None),  # ... as a fixed32
    (one_span(IDS + ld(6, b"\xff")), None),  # kind (an enum) length-delimited: unknown
    (ld(1, ld(2, group(2, vf(5, 1)))), None),  # a span as a group: unknown, skipped
    (vf(1, 5), None),  # resource_spans as a varint
    (one_span(IDS + ld(5, b"a\x00b")), None),  # NUL is valid UTF-8
    (one_span(IDS + ld(5, "\U0010ffff😀".encode())), None),
    (one_span(IDS + ld(5, b"\xed\xa0\x80")), "spans[0].name: invalid UTF-8"),  # surrogate
    (one_span(IDS + ld(5, b"\xc0\x80")), "spans[0].name: invalid UTF-8"),  # overlong
    (one_span(IDS + ld(5, b"\xe0\x80\x80")), "spans[0].name: invalid UTF-8"),
    (one_span(IDS + ld(5, b"\xf4\x90\x80\x80")), "spans[0].name: invalid UTF-8"),  # > U+10FFFF
    (one_span(IDS + ld(5, b"\xe2\x82")), "spans[0].name: invalid UTF-8"),  # truncated
    (one_span(IDS + ld(100, b"\xff")), None),  # unknown: not checked
    (one_span(IDS + group(100, ld(5, b"\xff"))), None),  # inside an unknown group: neither
    (one_span(IDS + varint(6 << 3) + b"\xff" * 9 + b"\x7f"), None),  # 10 bytes, extra bits
    (one_span(IDS + varint(6 << 3) + b"\xff" * 10 + b"\x01"), "kind: varint longer than 10"),
    (one_span(IDS + b"\xaa\x80\x80\x80\x00\x01a"), None),  # a 5-byte tag
    (one_span(IDS + b"\xaa\x80\x80\x80\x80\x00\x01a"), "spans[0]: invalid tag"),  # 6 bytes
    (one_span(IDS + b"\xaa\x80\x80\x80\x10\x01a"), "spans[0]: invalid tag"),  # over 32 bits
    (one_span(IDS + varint((2**29 - 1) << 3) + b"\x01"), None),  # the highest field number
    (one_span(IDS + b"\x00\x01"), "spans[0]: field number 0"),
    (one_span(IDS + varint(100 << 3 | 6)), "spans[0]: invalid wire type 6"),
    (one_span(IDS + varint(100 << 3 | 7)), "spans[0]: invalid wire type 7"),
    (one_span(IDS + varint(100 << 3 | 4)), "spans[0]: end-group tag without a group"),
    (one_span(IDS + group(100, vf(1, 1))), None),
    (one_span(IDS + varint(100 << 3 | 3) + vf(1, 1) + varint(101 << 3 | 4)), "mismatched"),
    (one_span(IDS + varint(100 << 3 | 3) + vf(1, 1)), "spans[0]: field 100: group not closed"),
    (one_span(IDS + varint(5 << 3 | 2) + b"\x81\x80\x80\x80\x00" + b"a"), None),  # 5-byte len
    (one_span(IDS + varint(5 << 3 | 2) + b"\x81\x80\x80\x80\x80\x00a"), "name: invalid length"),
    (one_span(IDS + varint(5 << 3 | 2) + b"\x81\x80\x80\x80\x10a"), "name: invalid length"),
    (varint(5 << 3 | 2) + varint(2**31 - 1), "field 5: length past the end"),
    (one_span(IDS + varint(7 << 3 | 1) + bytes(3)), "start_time_unix_nano: truncated fixed64"),
    (one_span(IDS + ld(15, vf(3, 2**40))), None),  # an enum out of range: proto3 keeps it
]


@pytest.mark.parametrize(("data", "message"), EDGE_CASES)
@pytest.mark.parametrize("impl", ["native", "python"])
def test_edge_cases_as_upb_decides_them(data: bytes, message: str | None, impl: str) -> None:
    fn = c_check("traces") if impl == "native" else lambda d: check_python("traces", d)
    if message is None:
        assert protobuf_accepts("traces", data)
        expected = _otlpvalid._count(requests()["traces"].FromString(data), tables()["traces"])
        assert fn(data) == expected
    else:
        with pytest.raises(ValueError, match=re.escape(message)):
            fn(data)
        assert not protobuf_accepts("traces", data)


def metric_point(kind_field: int, point: bytes) -> bytes:
    """A metrics request of one metric whose data (gauge 5, sum 7, histogram 9, exponential
    histogram 10, summary 11) holds one data point."""
    return ld(1, ld(2, ld(2, ld(1, b"m") + ld(kind_field, ld(1, point)))))


PACKED_CASES: list[tuple[bytes, str | None]] = [
    (metric_point(9, ld(6, struct.pack("<QQ", 1, 2))), None),  # bucket_counts packed
    (metric_point(9, vf(6, 5)), None),  # a fixed64 as a varint: unknown
    (metric_point(9, varint(6 << 3 | 1) + bytes(8) + varint(6 << 3 | 1) + bytes(8)), None),
    (metric_point(9, ld(6, bytes(12))), "bucket_counts: packed length not a multiple of 8"),
    (metric_point(9, ld(7, bytes(7))), "explicit_bounds: packed length not a multiple of 8"),
    (metric_point(10, ld(8, ld(2, varint(1) + varint(300)))), None),  # varints packed
    (metric_point(10, ld(8, ld(2, varint(1) + b"\x80"))), "bucket_counts: truncated varint"),
    (metric_point(10, ld(8, vf(2, 5) + vf(2, 7))), None),  # unpacked
    (metric_point(10, ld(8, ld(2, b"\xff" * 10 + b"\x01"))), "varint longer than 10 bytes"),
    (metric_point(10, ld(8, ld(2, b""))), None),
    # a varint running past the end of its packed bytes, though not past the buffer
    (metric_point(10, ld(8, varint(2 << 3 | 2) + b"\x02\x01\x80" + b"\x01")), "truncated"),
]


@pytest.mark.parametrize(("data", "message"), PACKED_CASES)
@pytest.mark.parametrize("impl", ["native", "python"])
def test_packed_and_unpacked_repeated_scalars(data: bytes, message: str | None, impl: str) -> None:
    fn = c_check("metrics") if impl == "native" else lambda d: check_python("metrics", d)
    if message is None:
        assert fn(data) == 1
        assert protobuf_accepts("metrics", data)
    else:
        with pytest.raises(ValueError, match=re.escape(message)):
            fn(data)
        assert not protobuf_accepts("metrics", data)


def nested_value(levels: int) -> bytes:
    value = ld(1, b"x")
    for _ in range(levels):
        value = ld(5, ld(1, value))  # AnyValue.array_value -> ArrayValue.values
    return value


def resource_attribute(value: bytes) -> bytes:
    """A request with one span and a resource attribute holding ``value`` (an AnyValue)."""
    return ld(1, ld(1, ld(1, ld(1, b"k") + ld(2, value))) + ld(2, ld(2, IDS)))


@pytest.mark.parametrize("impl", ["native", "python"])
def test_nesting_is_limited_as_protobuf_limits_it(impl: str) -> None:
    fn = c_check("traces") if impl == "native" else lambda d: check_python("traces", d)
    # request 100, ResourceSpans 99, Resource 98, KeyValue 97, AnyValue 96, then 2 per level
    assert fn(resource_attribute(nested_value(48))) == 1
    assert protobuf_accepts("traces", resource_attribute(nested_value(48)))
    with pytest.raises(ValueError, match="nesting deeper than 100 levels") as err:
        fn(resource_attribute(nested_value(49)))
    assert not protobuf_accepts("traces", resource_attribute(nested_value(49)))
    assert str(err.value).startswith("resource_spans[0].resource.attributes[0].value.array_value")
    assert "<" in str(err.value) and len(str(err.value)) < 400  # the middle abbreviated
    # groups count toward the same limit
    groups = b""
    for _ in range(100):
        groups = group(100, groups)
    assert fn(groups) == 0 and protobuf_accepts("traces", groups)
    with pytest.raises(ValueError, match="field 100: nesting deeper than 100 levels"):
        fn(group(100, groups))
    assert not protobuf_accepts("traces", group(100, groups))


def test_very_deep_input_does_not_overflow_the_stack() -> None:
    """200,000 levels of messages, a million of groups: refused at level 100, no recursion past
    it (ASan's stack checks and the default 8 MiB stack would notice)."""
    levels = 100_000  # AnyValue.array_value -> ArrayValue.values: 200,000 messages deep
    tags = [b"\x2a", b"\x0a"] * levels
    sizes = [3]  # the innermost AnyValue: a one-byte string
    for tag in reversed(tags):
        sizes.append(len(tag) + len(varint(sizes[-1])) + sizes[-1])
    sizes.reverse()
    value = b"".join(tag + varint(size) for tag, size in zip(tags, sizes[1:], strict=True))
    deep = resource_attribute(value + b"\x0a\x01x")
    with pytest.raises(ValueError, match="nesting deeper than 100 levels"):
        native.validate_traces(deep)
    groups = b"\x0b" * 1_000_000 + b"\x0c" * 1_000_000
    with pytest.raises(ValueError, match="nesting deeper than 100 levels"):
        native.validate_traces(groups)


def test_utf8_is_checked_as_python_decodes_it() -> None:
    """Every 1- and 2-byte sequence, the boundaries of 3- and 4-byte ones, random bytes."""
    rng = random.Random(5)
    samples = [bytes([a]) for a in range(256)] + [
        bytes([a, b]) for a in range(256) for b in range(256)
    ]
    lead3 = [0xE0, 0xE1, 0xEC, 0xED, 0xEE, 0xEF]
    lead4 = [0xF0, 0xF1, 0xF3, 0xF4, 0xF5]
    edges = [0x00, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0]
    samples += [bytes([a, b, c]) for a in lead3 for b in edges for c in edges]
    samples += [bytes([a, b, c, d]) for a in lead4 for b in edges for c in edges for d in edges]
    samples += [rng.randbytes(rng.randint(1, 40)) for _ in range(20_000)]
    samples += ["é中🙂".encode() * rng.randint(1, 9) + rng.randbytes(1) for _ in range(2000)]
    for s in samples:
        try:
            s.decode("utf-8")
            valid = True
        except UnicodeDecodeError:
            valid = False
        for prefix in (b"", b"abcdefgh"):  # the 8-byte ASCII path and the byte path
            data = one_span(IDS + ld(5, prefix + s))
            assert (verdict(native.validate_traces, data)[0] == "ok") == valid, s


def test_every_string_field_is_checked() -> None:
    """Invalid UTF-8 in each string field of every message type, reached from its request:
    refused by protobuf, by the C walk and by the twin, naming the field."""
    checked = 0
    for kind, root in tables().items():
        paths: dict[str, tuple[list[tuple[int, str]], _otlpvalid.Message]] = {
            root.full_name: ([], root)
        }
        queue = [root]
        while queue:
            m = queue.pop(0)
            for f in m.fields.values():
                if f.sub is not None and f.sub.full_name not in paths:
                    paths[f.sub.full_name] = ([*paths[m.full_name][0], (f.number, f.name)], f.sub)
                    queue.append(f.sub)
        for chain, m in paths.values():
            for f in m.fields.values():
                if f.kind != _otlpvalid.STRING:
                    continue
                data = ld(f.number, b"ok\xff")
                for number, _ in reversed(chain):
                    data = ld(number, data)
                assert not protobuf_accepts(kind, data)
                expected = f"{f.name}" + ("[0]" if f.repeated else "") + ": invalid UTF-8"
                for fn in (c_check(kind), lambda d, k=kind: check_python(k, d)):
                    with pytest.raises(ValueError) as err:
                        fn(data)
                    assert str(err.value).endswith(expected), str(err.value)
                checked += 1
    assert checked > 30


# -- ids -------------------------------------------------------------------------------------------
def span_with(
    trace_id: bytes, span_id: bytes, parent: bytes | None = None, extra: bytes = b""
) -> bytes:
    fields = ld(1, trace_id) + ld(2, span_id) + (ld(4, parent) if parent is not None else b"")
    return one_span(fields + extra)


ID_CASES: list[tuple[bytes, str | None]] = [
    (span_with(bytes(16), bytes(8)), None),
    (span_with(bytes(16), bytes(8), bytes(8)), None),
    (span_with(bytes(16), bytes(8), b""), None),  # a root: no parent
    (span_with(bytes(15), bytes(8)), "spans[0].trace_id: 15 bytes, expected 16"),
    (span_with(bytes(17), bytes(8)), "spans[0].trace_id: 17 bytes, expected 16"),
    (one_span(ld(2, bytes(8))), "spans[0].trace_id: 0 bytes, expected 16"),  # required
    (one_span(ld(1, bytes(16))), "spans[0].span_id: 0 bytes, expected 8"),
    (span_with(bytes(16), bytes(8), bytes(4)), "parent_span_id: 4 bytes, expected 8 (or none)"),
    # the last occurrence counts, as a full parse keeps it
    (span_with(bytes(3), bytes(8), extra=ld(1, bytes(16))), None),
    (span_with(bytes(16), bytes(8), extra=ld(1, bytes(3))), "trace_id: 3 bytes, expected 16"),
    # an id with another wire type is an unknown field: the id stays empty
    (one_span(vf(1, 5) + ld(2, bytes(8))), "trace_id: 0 bytes, expected 16"),
    # links: both ids required
    (span_with(bytes(16), bytes(8), extra=ld(13, ld(1, bytes(16)) + ld(2, bytes(8)))), None),
    (
        span_with(bytes(16), bytes(8), extra=ld(13, ld(1, bytes(16)))),
        "spans[0].links[0].span_id: 0 bytes, expected 8",
    ),
    (
        span_with(bytes(16), bytes(8), extra=ld(13, b"") + ld(13, ld(1, bytes(1)))),
        "spans[0].links[0].trace_id: 0 bytes, expected 16",
    ),
]


@pytest.mark.parametrize(("data", "message"), ID_CASES)
@pytest.mark.parametrize("impl", ["native", "python"])
def test_trace_ids_have_their_lengths(data: bytes, message: str | None, impl: str) -> None:
    fn = c_check("traces") if impl == "native" else lambda d: check_python("traces", d)
    assert protobuf_accepts("traces", data)  # protobuf has no such rule
    if message is None:
        assert fn(data) == 1
    else:
        with pytest.raises(ValueError, match=re.escape(message)):
            fn(data)


def exemplar(trace_id: bytes | None, span_id: bytes | None) -> bytes:
    return (ld(5, trace_id) if trace_id is not None else b"") + (
        ld(4, span_id) if span_id is not None else b""
    )


@pytest.mark.parametrize(
    ("ex", "message"),
    [
        (exemplar(None, None), None),  # optional: both may be missing
        (exemplar(bytes(16), bytes(8)), None),
        (exemplar(bytes(16), None), None),
        (exemplar(bytes(8), bytes(8)), "exemplars[0].trace_id: 8 bytes, expected 16 (or none)"),
        (exemplar(None, bytes(16)), "exemplars[0].span_id: 16 bytes, expected 8 (or none)"),
    ],
)
@pytest.mark.parametrize("impl", ["native", "python"])
def test_exemplar_ids(ex: bytes, message: str | None, impl: str) -> None:
    fn = c_check("metrics") if impl == "native" else lambda d: check_python("metrics", d)
    data = metric_point(5, ld(5, ex))  # a gauge's data point with one exemplar
    if message is None:
        assert fn(data) == 1
    else:
        with pytest.raises(ValueError, match=re.escape(message)) as err:
            fn(data)
        assert str(err.value).startswith("resource_metrics[0].scope_metrics[0].metrics[0].gauge")


@pytest.mark.parametrize("impl", ["native", "python"])
def test_log_record_ids(impl: str) -> None:
    fn = c_check("logs") if impl == "native" else lambda d: check_python("logs", d)

    def logs(record: bytes) -> bytes:
        return ld(1, ld(2, ld(2, record)))

    assert fn(logs(b"")) == 1
    assert fn(logs(ld(9, bytes(16)) + ld(10, bytes(8)))) == 1
    with pytest.raises(ValueError, match=re.escape("log_records[0].span_id: 2 bytes")):
        fn(logs(ld(10, bytes(2))))


@pytest.mark.parametrize("impl", ["native", "python"])
def test_a_replaced_oneof_member_is_neither_counted_nor_checked(impl: str) -> None:
    """A metric's gauge then its sum: a full parse keeps the sum only (its points are the
    metric's; an id error inside the gauge is dropped with it); the same member twice is
    merged (both occurrences' points count)."""
    fn = c_check("metrics") if impl == "native" else lambda d: check_python("metrics", d)
    bad_point = ld(1, ld(5, exemplar(bytes(3), None)))  # a data point with a bad exemplar
    good_points = ld(1, b"") + ld(1, b"")
    metric = ld(1, b"m") + ld(5, bad_point) + ld(7, good_points)
    data = ld(1, ld(2, ld(2, metric)))
    assert protobuf_accepts("metrics", data)
    assert fn(data) == 2
    metric = ld(1, b"m") + ld(7, good_points) + ld(5, bad_point)  # the bad one is kept
    with pytest.raises(ValueError, match=r"metrics\[0\]\.gauge\.data_points\[0\]"):
        fn(ld(1, ld(2, ld(2, metric))))
    merged = ld(1, ld(2, ld(2, ld(7, good_points) + ld(7, good_points) + ld(9, ld(1, b"")))))
    assert fn(merged) == 1  # sum twice, then a histogram of one point replaces it
    merged = ld(1, ld(2, ld(2, ld(7, good_points) + ld(7, good_points))))
    assert fn(merged) == 4
    # an error kept before the member began is not dropped with it
    first = ld(1, b"a") + ld(5, bad_point)
    second = ld(1, b"b") + ld(5, ld(1, b"")) + ld(7, ld(1, b""))
    with pytest.raises(ValueError, match=r"metrics\[0\]\.gauge"):
        fn(ld(1, ld(2, ld(2, first) + ld(2, second))))


@pytest.mark.parametrize("impl", ["native", "python"])
def test_a_parse_error_wins_over_an_earlier_id_error(impl: str) -> None:
    """As a full parse reports it first: the id is checked on the decoded request."""
    fn = c_check("traces") if impl == "native" else lambda d: check_python("traces", d)
    data = span_with(bytes(3), bytes(8)) + ld(1, ld(2, ld(2, IDS + ld(5, b"\xff"))))
    with pytest.raises(ValueError, match=r"resource_spans\[1\].*name: invalid UTF-8"):
        fn(data)


def test_the_message_names_the_field() -> None:
    attrs = ld(1, ld(1, b"a") + ld(2, ld(1, b"x"))) * 2
    attrs += ld(1, ld(1, b"bad") + ld(2, ld(1, b"caf\xe9")))
    data = ld(1, ld(1, attrs) + ld(2, ld(2, IDS)))
    expected = "resource_spans[0].resource.attributes[2].value.string_value: invalid UTF-8"
    for fn in (native.validate_traces, lambda d: check_python("traces", d)):
        with pytest.raises(ValueError) as err:
            fn(data)
        assert str(err.value) == expected


def test_accepts_any_buffer_and_refuses_other_types() -> None:
    data = SPAN_OK
    assert native.validate_traces(memoryview(data)) == native.validate_traces(bytearray(data)) == 1
    with pytest.raises(TypeError):
        native.validate_traces("text")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        native.validate_metrics(None)  # type: ignore[arg-type]


def test_the_twin_refuses_what_protobuf_refuses_even_if_its_walk_would_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The twin's verdict is protobuf's; its walk only names the field. Should the walk ever
    accept what protobuf refuses, the twin still refuses, with protobuf's message."""
    monkeypatch.setattr(_otlpvalid, "walk", lambda kind, data: 0)
    with pytest.raises(Invalid, match="the protobuf wire format is corrupt"):
        check_python("traces", one_span(IDS + ld(5, b"\xff")))
