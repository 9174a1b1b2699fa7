"""The C scanner of the ``spanmetrics`` connector (``plugins/_native/_spanscan.c``) against the
connector's pure-Python path: the same requests give the same series (keys, counts, bucket
counts, sums up to float rounding, exemplars); malformed input is refused with ``ValueError``
(the connector then runs the Python path, which reports it) and never crashes."""

from __future__ import annotations

import random
import struct
import time
from typing import Any

import pytest
from google.protobuf.message import DecodeError
from opentelemetry.proto.common.v1.common_pb2 import (
    AnyValue,
    ArrayValue,
    KeyValue,
    KeyValueList,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from pipeline import Kind, Traces
from plugins._spanview import TracesView, value_str
from plugins.spanmetricsconnector.config import SpanMetricsConfig
from plugins.spanmetricsconnector.connector import SpanMetricsConnector
from tests.plugins._agent_support import Capture, settings, sid, tid
from tests.plugins._native_support import ld, require_native, varint, vf

native = require_native("_spanscan")

T0 = 1_700_000_000_000_000_000


# -- hand encoding (so the requests can hold what protobuf's classes would not write) -----------
def raw_value(rng: random.Random) -> bytes:
    """An encoded AnyValue of any kind, including the odd ones."""
    pick = rng.randrange(14)
    if pick < 4:
        word = rng.choice(["GET", "POST", "", "eu-west", "ünï", "x" * 200, "日本"])
        return AnyValue(string_value=word).SerializeToString()
    if pick == 4:
        return AnyValue(int_value=rng.choice([0, 5, -1, 1 << 40, -(1 << 63)])).SerializeToString()
    if pick == 5:
        return AnyValue(bool_value=rng.random() < 0.5).SerializeToString()
    if pick == 6:
        d = rng.choice([0.5, 1e-7, 123456789.0, float("inf"), -0.0, float("nan"), 2.0])
        return AnyValue(double_value=d).SerializeToString()
    if pick == 7:
        return AnyValue(bytes_value=b"\x00\xff").SerializeToString()
    if pick == 8:
        arr = ArrayValue(values=[AnyValue(string_value="a"), AnyValue(int_value=1)])
        return AnyValue(array_value=arr).SerializeToString()
    if pick == 9:
        kvl = KeyValueList(values=[KeyValue(key="k", value=AnyValue(bool_value=True))])
        return AnyValue(kvlist_value=kvl).SerializeToString()
    if pick == 10:
        return b""  # no value at all
    if pick == 11:  # a string, then an int: the fast path of value_str takes the string
        return ld(1, b"ab") + vf(3, 7)
    if pick == 12:  # an int, then a string
        return vf(3, 7) + ld(1, b"cd")
    return ld(1, "é".encode() * 70)  # a string with a two-byte length


def entry(key: str, value: bytes) -> bytes:
    """A span attribute (field 9) with an encoded value."""
    return ld(9, ld(1, key.encode()) + ld(2, value))


DIM_KEYS = ["http.method", "region", "attr.any", "padding.a", "padding.b"]
NAMES = ["GET /a", "GET /b", "q", "", "ünïcødé span", "日本"]


def random_span(rng: random.Random, n: int) -> bytes:
    kind = rng.choice([0, 1, 2, 3, 4, 5, 6, 9, -1, 2**31 - 1])
    start = T0 + n * 1_000_000
    end = start + rng.choice([0, 1, 999_999, 3_000_000, 45_500_000, 2_000_000_000, -5_000])
    trace = tid(n % 7 + 1) if rng.random() < 0.9 else b""
    s = Span(trace_id=trace, span_id=sid(n), name=rng.choice(NAMES))
    raw = s.SerializeToString()
    if rng.random() < 0.05:  # a name that is not UTF-8 (a bytes field in the view)
        raw += ld(5, b"bad \xff\xfe name")
    raw += vf(6, kind) + varint(7 << 3 | 1) + struct.pack("<Q", start)
    raw += varint(8 << 3 | 1) + struct.pack("<Q", end)
    for key in rng.sample(DIM_KEYS, rng.randrange(0, len(DIM_KEYS) + 1)):
        raw += entry(key, raw_value(rng))
    if rng.random() < 0.15:  # a duplicate key: the last one wins
        raw += entry(rng.choice(DIM_KEYS[:3]), raw_value(rng))
    pick = rng.random()
    if pick < 0.3:
        code = rng.choice([0, 1, 2, 2, 3, 7, -3])
        message = rng.choice(["", "boom", "délai dépassé"])
        raw += ld(15, ld(2, message.encode()) + vf(3, code))
    elif pick < 0.4:
        raw += ld(15, Status(code=Status.STATUS_CODE_OK).SerializeToString())
    if rng.random() < 0.1:  # fields the view does not name, and events
        raw += ld(11, b"\x0a\x03exc") + vf(16, 257)
    return raw


SERVICES = ["frontend", "backend", "ünï-svc"]


def random_resource(rng: random.Random) -> bytes:
    res = Resource()
    pick = rng.random()
    if pick < 0.8:
        res.attributes.add(key="service.name", value=AnyValue(string_value=rng.choice(SERVICES)))
    elif pick < 0.9:
        res.attributes.add(key="service.name", value=AnyValue(int_value=42))
    if rng.random() < 0.5:
        res.attributes.add(key="region", value=AnyValue(string_value=rng.choice(["eu", "us"])))
    if rng.random() < 0.2:
        res.attributes.add(key="http.method", value=AnyValue(bool_value=True))
    if rng.random() < 0.1:  # a duplicate: the last one wins
        res.attributes.add(key="region", value=AnyValue(string_value="ap"))
    return res.SerializeToString()


def random_request(rng: random.Random, first: int, spans: int) -> bytes:
    out = b""
    n = first
    for _ in range(rng.randrange(1, 5)):
        resource = random_resource(rng)
        scopes = b""
        for _ in range(rng.randrange(1, 3)):
            body = ld(1, b"\x0a\x05scope")
            for _ in range(spans):
                body += ld(2, random_span(rng, n))
                n += 1
            scopes += ld(2, body)
        rs = ld(1, resource) + scopes if rng.random() < 0.8 else scopes + ld(1, resource)
        out += ld(1, rs)
    return out


def requests(seed: int, count: int = 12, spans: int = 25) -> list[bytes]:
    rng = random.Random(seed)
    return [random_request(rng, 1 + r * 1000, spans) for r in range(count)]


# -- the two paths ---------------------------------------------------------------------------
CONFIGS: dict[str, dict[str, Any]] = {
    "default": {},
    "dimensions+exemplars+seconds": {
        "dimensions": [
            {"name": "http.method", "default": "NONE"},
            {"name": "region"},
            {"name": "attr.any", "default": "-"},
        ],
        "exemplars": {"enabled": True, "max_per_data_point": 3},
        "histogram": {"unit": "s", "explicit": {"buckets": ["1ms", "10ms", "100ms", "1s"]}},
    },
    "excluded+no-histogram": {
        "exclude_dimensions": ["span.name", "status.code"],
        "dimensions": [{"name": "region", "default": "nowhere"}, {"name": "attr.any"}],
        "histogram": {"disable": True},
    },
    "excluded+exemplars": {
        "exclude_dimensions": ["service.name", "span.kind"],
        "dimensions": [{"name": "attr.any"}],
        "exemplars": {"enabled": True},
        "aggregation_temporality": "AGGREGATION_TEMPORALITY_DELTA",
    },
    "cardinality-limit": {
        "dimensions": [{"name": "region"}],
        "aggregation_cardinality_limit": 25,
    },
}


def connector(monkeypatch: pytest.MonkeyPatch, mode: str, options: dict[str, Any]) -> Any:
    monkeypatch.setenv("PIPELINE_NATIVE", mode)
    cfg = SpanMetricsConfig.model_validate({"metrics_flush_interval": "0s", **options})
    conn = SpanMetricsConnector(settings(Kind.CONNECTOR, "spanmetrics"), cfg, Capture())
    assert (conn._scanner is not None) == (mode == "1")
    return conn


def state(conn: SpanMetricsConnector) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for m in conn.aggregator.metrics:
        out[m.name] = {
            key: (s.count, list(s.buckets), list(s.exemplars), s.exemplar_next)
            for key, s in m.series.items()
        }
        out[m.name + "/sums"] = {key: s.sum for key, s in m.series.items()}
        out[m.name + "/order"] = list(m.series)
        out[m.name + "/overflowed"] = m.overflowed
    return out


def assert_same(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        if name.endswith("/sums"):
            assert a[name].keys() == b[name].keys(), name
            for key, total in a[name].items():
                assert total == pytest.approx(b[name][key], rel=1e-9, abs=1e-9), (name, key)
        else:
            assert a[name] == b[name], name


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("seed", range(4))
async def test_same_series_as_the_python_path(
    monkeypatch: pytest.MonkeyPatch, config: str, seed: int
) -> None:
    monkeypatch.setattr(time, "time_ns", lambda: T0)  # exemplars and series carry the clock
    fast = connector(monkeypatch, "1", CONFIGS[config])
    slow = connector(monkeypatch, "0", CONFIGS[config])
    reqs = requests(seed)
    for raw in reqs:
        # the scanner does accept every one of them (no silent fallback to Python)
        assert fast._scanner.scan(raw)
    for raw in reqs:
        await fast.consume(Traces(raw))
        await slow.consume(Traces(raw))
    a, b = state(fast), state(slow)
    assert_same(a, b)
    assert len(a[fast.calls.name]) > 10  # the load covered a lot
    if config == "cardinality-limit":
        assert fast.calls.overflowed > 0


def scanner(**overrides: Any) -> tuple[Any, list[bytes]]:
    resources: list[bytes] = []
    fallbacks = (None, "fallback")[: len(overrides.get("dimensions", "12"))]

    def resolve(raw: bytes) -> tuple[bytes, str, tuple[str | None, ...]]:
        resources.append(raw)
        return b"key:" + raw, "svc", fallbacks

    options: dict[str, Any] = {
        "dimensions": ("d1", "d2"),
        "included": (True, True, True, True),
        "kind_pairs": tuple(("span.kind", f"K{i}") for i in range(7)),
        "status_pairs": tuple(("status.code", f"S{i}") for i in range(4)),
        "bounds": (1.0, 10.0),
        "divisor": 1e6,
        "max_exemplars": 2,
        "resolve": resolve,
    }
    options.update(overrides)
    return native.Scanner(**options), resources


def test_scan_result() -> None:
    def span(n: int, name: str, ms: float, *attrs: bytes, kind: int = 2) -> bytes:
        raw = Span(
            trace_id=tid(1),
            span_id=sid(n),
            name=name,
            kind=kind,  # type: ignore[arg-type]
            start_time_unix_nano=T0,
            end_time_unix_nano=T0 + int(ms * 1e6),
        ).SerializeToString()
        return raw + b"".join(attrs)

    s1 = span(1, "a", 0.5, entry("d1", AnyValue(int_value=7).SerializeToString()))
    # the same attribute set reached by another encoding: one series, exemplars in order
    s2 = span(2, "a", 5, entry("d1", AnyValue(string_value="7").SerializeToString()))
    s3 = span(3, "a", 50, entry("d1", b"\x18\x07"), entry("d2", b"\x0a\x01x"))
    s4 = span(4, "b", 1, entry("d1", b"\x10\x01"), entry("d1", b"\x0a\x01z"), kind=42)
    body = b"".join(ld(2, s) for s in (s1, s2, s3, s4))
    raw = ld(1, ld(2, body) + ld(1, b"R"))
    scan, resources = scanner()
    result = scan.scan(raw)
    assert resources == [b"R"]
    base = (("service.name", "svc"), ("span.name", "a"), ("span.kind", "K2"), ("status.code", "S0"))
    assert result == [
        (
            b"key:R",
            [
                (
                    (*base, ("d1", "7"), ("d2", "fallback")),
                    2,
                    5.5,
                    [1, 1, 0],
                    [(0.5, tid(1), sid(1)), (5.0, tid(1), sid(2))],
                    2,
                ),
                (
                    (*base, ("d1", "7"), ("d2", "x")),
                    1,
                    50.0,
                    [0, 0, 1],
                    [(50.0, tid(1), sid(3))],
                    1,
                ),
                (
                    (
                        ("service.name", "svc"),
                        ("span.name", "b"),
                        ("span.kind", "K6"),
                        ("status.code", "S0"),
                        ("d1", "z"),
                        ("d2", "fallback"),
                    ),
                    1,
                    1.0,
                    [1, 0, 0],
                    [(1.0, tid(1), sid(4))],
                    1,
                ),
            ],
        )
    ]
    # the last two exemplars, oldest first; nothing but counts without a histogram
    many = ld(1, ld(2, b"".join(ld(2, span(n, "a", n)) for n in range(1, 6))))
    ((_, [(_, count, _, _, exemplars, seen)]),) = scan.scan(many)
    assert count == seen == 5 and [e[2] for e in exemplars] == [sid(4), sid(5)]
    plain, _ = scanner(bounds=None, dimensions=(), included=(False, True, False, False))
    assert plain.scan(many) == [(b"key:", [((("span.name", "a"),), 5, 0.0, None, [], 0)])]


def test_value_strings_match_value_str() -> None:
    rng = random.Random(7)
    scan, _ = scanner(dimensions=("d", "e"), included=(False,) * 4, bounds=None)
    for _ in range(300):
        value = raw_value(rng)
        raw = ld(1, ld(2, ld(2, entry("d", value))))
        ((_, [(attrs, *_)]),) = scan.scan(raw)
        assert attrs == (("d", value_str(value)), ("e", "fallback")), value


def test_refuses_what_the_python_path_refuses() -> None:
    scan, _ = scanner()
    ok = Span(trace_id=tid(1), span_id=sid(1), name="a").SerializeToString()

    def request(span: bytes) -> bytes:
        return ld(1, ld(2, ld(2, span)))

    refused = [
        ok + ld(9, ld(1, b"k\xff")),  # an attribute key that is not UTF-8
        ok + ld(15, ld(2, b"\xc3\x28")),  # a status message that is not UTF-8
        ok + entry("d1", vf(3, 1) + ld(1, b"\xff")),  # a string value that is not UTF-8
        ok + entry("d1", ld(5, ld(1, ld(1, b"\xed\xa0\x80")))),  # a surrogate, nested
        ok + b"\x0b\x0c\x08\x01\x0c",  # a group that never ends
        ok + b"\x00\x01",  # field number 0
        ok + b"\x0a\x10",  # a length past the end
        ok + b"\x0a\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",  # an overlong varint
    ]
    for span in refused:
        with pytest.raises(ValueError):
            scan.scan(request(span))
        with pytest.raises(DecodeError):  # and so does protobuf
            view = TracesView.FromString(request(span))
            for rs in view.resource_spans:
                for ss in rs.scope_spans:
                    for sp in ss.spans:
                        Status.FromString(sp.status)
                        for v in sp.attributes.values():
                            AnyValue.FromString(v)
    assert scan.scan(request(ok))


async def test_what_the_scanner_leaves_to_python_is_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A group (a deprecated wire type protobuf still reads) is refused by the scanner: the
    connector then counts the request through the Python path."""
    ok = Span(trace_id=tid(1), span_id=sid(1), name="a", kind=Span.SPAN_KIND_SERVER)
    raw = ld(1, ld(2, ld(2, ok.SerializeToString() + b"\x0b\x0c")))
    fast = connector(monkeypatch, "1", {})
    with pytest.raises(ValueError):
        fast._scanner.scan(raw)
    await fast.consume(Traces(raw))
    ((key, attrs),) = fast.calls.series
    assert fast.calls.series[key, attrs].count == 1
    assert ("span.kind", "SPAN_KIND_SERVER") in attrs


@pytest.mark.parametrize("seed", range(3))
async def test_malformed_input_gives_what_the_python_path_gives(
    monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    """Fuzzed requests: the scanner raises ValueError or DecodeError (from the resource) and
    never crashes; through the connector both paths end the same (the same error, or the
    same series)."""
    monkeypatch.setattr(time, "time_ns", lambda: T0)
    options = CONFIGS["dimensions+exemplars+seconds"]
    rng = random.Random(seed)
    raw = random_request(rng, 1, 8)
    refused = 0
    for _ in range(300):
        data = bytearray(raw)
        if rng.random() < 0.4:
            data = data[: rng.randrange(len(data))]  # truncated
        else:
            for _ in range(rng.randrange(1, 4)):  # flipped bytes
                data[rng.randrange(len(data))] = rng.randrange(256)
        fast = connector(monkeypatch, "1", options)
        slow = connector(monkeypatch, "0", options)
        try:
            fast._scanner.scan(bytes(data))
        except (ValueError, DecodeError):
            refused += 1
        outcomes = []
        for conn in (fast, slow):
            try:
                await conn.consume(Traces(bytes(data)))
                outcomes.append(None)
            except Exception as exc:  # the Python path's error, whatever it is
                outcomes.append(type(exc))
        assert outcomes[0] == outcomes[1]
        assert_same(state(fast), state(slow))
    assert refused > 50


def test_a_dropped_connector_is_collected(monkeypatch: pytest.MonkeyPatch) -> None:
    """The scanner holds the connector's resolve method (a cycle): the collector frees both."""
    import gc
    import weakref

    conn = connector(monkeypatch, "1", {})
    ref = weakref.ref(conn)
    del conn
    gc.collect()
    assert ref() is None
