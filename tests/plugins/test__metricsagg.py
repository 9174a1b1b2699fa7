"""The aggregation core: series, buckets, overflow, temporality, expiry, exemplars."""

from __future__ import annotations

import math
import random
from decimal import Decimal, localcontext
from typing import Any

import pytest

from plugins._labelbound import MAX_LABEL_VALUE_CHARS
from plugins._metricsagg import (
    OVERFLOW_ATTRS,
    Aggregator,
    Kind,
    Metric,
    Series,
    Temporality,
    exponential_index,
)


def points(req: Any, name: str) -> list[Any]:
    out = []
    for rm in req.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                if m.name == name:
                    out.extend(getattr(m, m.WhichOneof("data")).data_points)
    return out


def labels(dp: Any) -> dict[str, Any]:
    return {kv.key: getattr(kv.value, kv.value.WhichOneof("value")) for kv in dp.attributes}


def test_histogram_buckets_are_upper_inclusive_and_exemplars_kept() -> None:
    agg = Aggregator("t")
    h = agg.add_metric(Metric("h", Kind.HISTOGRAM, unit="s", bounds=[0.1, 1.0], max_exemplars=2))
    for i, v in enumerate([0.05, 0.1, 0.5, 1.0, 3.0]):
        h.observe(b"", (("a", "x"),), v, 1000 + i, b"T" * 16, bytes([i]) * 8)
    req, n = agg.build(2000)
    assert n == 1
    (dp,) = points(req, "h")
    assert list(dp.bucket_counts) == [2, 2, 1]
    assert list(dp.explicit_bounds) == [0.1, 1.0]
    assert dp.count == 5 and abs(dp.sum - 4.65) < 1e-9
    assert len(dp.exemplars) == 2
    assert {e.span_id for e in dp.exemplars} == {bytes([3]) * 8, bytes([4]) * 8}
    assert req.resource_metrics[0].scope_metrics[0].metrics[0].unit == "s"


def test_cardinality_limit_routes_to_one_overflow_series_and_counts() -> None:
    overflowed: list[int] = []
    agg = Aggregator("t")
    c = agg.add_metric(
        Metric(
            "c", Kind.COUNTER, cardinality_limit=3, on_overflow=lambda _m, n: overflowed.append(n)
        )
    )
    for i in range(10):
        c.add(b"", (("k", str(i)),), 1, 1)
    c.add(b"", (("k", "0"),), 1, 1)  # existing series still counted normally
    req, _ = agg.build(5)
    got = {tuple(sorted(labels(dp).items())): dp.as_int for dp in points(req, "c")}
    assert got[(("k", "0"),)] == 2
    assert got[(("otel.metric.overflow", True),)] == 7
    assert len(got) == 4
    assert sum(overflowed) == 7 and c.overflowed == 7
    assert (b"", OVERFLOW_ATTRS) in c.series


def test_delta_emits_only_new_data_and_resets() -> None:
    agg = Aggregator("t", Temporality.DELTA)
    c = agg.add_metric(Metric("c", Kind.COUNTER))
    c.add(b"", (("k", "a"),), 1, 1)
    c.add(b"", (("k", "a"),), 1, 1)
    req, _ = agg.build(10)
    (dp,) = points(req, "c")
    assert dp.as_int == 2
    assert req.resource_metrics[0].scope_metrics[0].metrics[0].sum.aggregation_temporality == 1
    req, n = agg.build(20)
    assert n == 0
    c.add(b"", (("k", "a"),), 1, 30)
    req, _ = agg.build(40)
    assert points(req, "c")[0].as_int == 1


def test_cumulative_keeps_counting_and_expires_idle_series() -> None:
    agg = Aggregator("t", Temporality.CUMULATIVE, expiration_s=1.0)
    c = agg.add_metric(Metric("c", Kind.COUNTER))
    c.add(b"", (("k", "old"),), 1, 0)
    c.add(b"", (("k", "new"),), 1, int(1.5e9))
    req, _ = agg.build(int(1.6e9))
    assert [labels(dp)["k"] for dp in points(req, "c")] == ["new"]
    c.add(b"", (("k", "new"),), 1, int(1.7e9))
    req, _ = agg.build(int(1.8e9))
    (dp,) = points(req, "c")
    assert dp.as_int == 2 and dp.start_time_unix_nano == int(1.5e9)


def test_merge_leaves_the_exemplar_ring_as_observe_does() -> None:
    """``merge`` with the last exemplars and how many there were ends with the same ring
    (content, order and position) as one ``observe`` per measurement."""
    for before in range(5):
        for seen in range(9):
            observed = Metric("d", Kind.HISTOGRAM, bounds=[1.0], max_exemplars=3)
            merged = Metric("d", Kind.HISTOGRAM, bounds=[1.0], max_exemplars=3)
            for m in (observed, merged):
                for i in range(before):
                    m.observe(b"", (), 0.5, 1, b"t", bytes([i]))
            values = [(float(i), b"t", bytes([100 + i])) for i in range(seen)]
            for value, trace_id, span_id in values:
                observed.observe(b"", (), value, 1, trace_id, span_id)
            total = sum(v[0] for v in values)
            buckets = [sum(v[0] <= 1.0 for v in values), sum(v[0] > 1.0 for v in values)]
            merged.merge(b"", (), seen, total, buckets, values[-3:], 1, seen)
            if not before and not seen:
                continue
            a, b = observed.series[b"", ()], merged.series[b"", ()]
            assert (a.exemplars, a.exemplar_next) == (b.exemplars, b.exemplar_next), (before, seen)
            assert (a.count, a.sum, a.buckets) == (b.count, b.sum, b.buckets)


def test_delta_points_start_at_the_series_previous_point_until_evicted() -> None:
    """(T1, T2), (T2, T3)...: a delta point starts where the series' previous one ended, even
    across flushes without data; a series the bounded cache forgot starts at its first
    measurement again."""
    agg = Aggregator("t", Temporality.DELTA, delta_start_cache_size=2)
    c = agg.add_metric(Metric("c", Kind.COUNTER))
    h = agg.add_metric(Metric("h", Kind.HISTOGRAM, bounds=[1.0]))

    def starts(req: Any) -> dict[tuple[str, str], int]:
        return {
            (name, labels(dp)["k"]): dp.start_time_unix_nano
            for name in ("c", "h")
            for dp in points(req, name)
        }

    c.add(b"", (("k", "a"),), 1, 5)
    h.observe(b"", (("k", "a"),), 0.5, 6)
    req, _ = agg.build(10)
    assert starts(req) == {("c", "a"): 5, ("h", "a"): 6}
    c.add(b"", (("k", "a"),), 1, 15)
    h.observe(b"", (("k", "a"),), 0.5, 15)
    req, _ = agg.build(20)
    assert starts(req) == {("c", "a"): 10, ("h", "a"): 10}
    assert agg.build(30)[1] == 0
    c.add(b"", (("k", "a"),), 1, 35)
    c.add(b"", (("k", "b"),), 1, 36)
    req, _ = agg.build(40)
    assert starts(req) == {("c", "a"): 20, ("c", "b"): 36}
    c.add(b"", (("k", "c"),), 1, 45)  # a third series: "a" and "b" were written at 40
    c.add(b"", (("k", "b"),), 1, 46)  # "b" more recently than "a"
    agg.build(50)
    assert agg.delta_start_evictions == 1
    c.add(b"", (("k", "a"),), 1, 55)
    c.add(b"", (("k", "b"),), 1, 56)
    req, _ = agg.build(60)
    assert starts(req) == {("c", "a"): 55, ("c", "b"): 50}


def test_delta_without_a_start_cache_starts_points_at_the_first_measurement() -> None:
    agg = Aggregator("t", Temporality.DELTA)
    c = agg.add_metric(Metric("c", Kind.COUNTER))
    c.add(b"", (), 1, 5)
    agg.build(10)
    c.add(b"", (), 1, 15)
    req, _ = agg.build(20)
    assert points(req, "c")[0].start_time_unix_nano == 15


def exact_index(value: float, scale: int) -> int:
    """The bucket of ``value`` at ``scale`` from a 60-digit logarithm (ceil(log2(v) * 2**s) - 1:
    buckets are upper-inclusive)."""
    with localcontext() as ctx:
        ctx.prec = 60
        x = Decimal(value).ln() / Decimal(2).ln() * (Decimal(2) ** scale)
        return math.ceil(x) - 1


def test_exponential_index_by_hand() -> None:
    # scale 0: bucket i is (2**i, 2**(i+1)]; powers of two close the bucket below
    assert [exponential_index(v, 0) for v in (1.0, 1.5, 2.0, 3.0, 4.0, 4.5)] == [-1, 0, 0, 1, 1, 2]
    assert [exponential_index(v, 0) for v in (0.5, 0.75, 0.25)] == [-2, -1, -3]
    # scale -1: (1, 4], (4, 16]...; scale -2: (1, 16]
    assert [exponential_index(v, -1) for v in (4.0, 5.0, 16.0, 17.0, 0.5)] == [0, 1, 1, 2, -1]
    assert [exponential_index(v, -2) for v in (16.0, 17.0, 1.0)] == [0, 1, -1]
    # scale 1: (1, 2**0.5], (2**0.5, 2]...
    assert [exponential_index(v, 1) for v in (1.4, 1.5, 2.0, 2.8, 2.9)] == [0, 1, 1, 2, 3]
    # scale 20: exact at powers of two
    assert exponential_index(1.0, 20) == -1
    assert exponential_index(2.0, 20) == 2**20 - 1
    assert exponential_index(0.001, 20) == exact_index(0.001, 20)
    # tiny (subnormal) values share the bucket of the smallest normal double
    assert exponential_index(5e-324, 0) == exponential_index(2.0**-1022, 0) == -1023
    assert exponential_index(5e-324, 20) == (-1022 << 20) - 1
    # the largest double: the last bucket
    assert exponential_index(1.7976931348623157e308, 0) == 1023
    assert exponential_index(1.7976931348623157e308, 20) == (1024 << 20) - 1
    assert exponential_index(1.7976931348623157e308, -10) == 0


def test_exponential_index_matches_a_precise_logarithm() -> None:
    rng = random.Random(7)
    for _ in range(300):
        value = math.ldexp(rng.uniform(0.5, 1.0), rng.randint(-40, 40))
        for scale in (1, 3, 8, 20):
            assert exponential_index(value, scale) == exact_index(value, scale), (value, scale)
        for scale in (0, -1, -4):
            assert exponential_index(value, scale) == exact_index(value, 0) >> -scale


def test_exponential_histogram_downscales_to_fit_max_size() -> None:
    s = Series(0, 0)
    s.observe_exponential(1.0, 4)
    assert (s.scale, s.offset, s.buckets) == (20, -1, [1])
    # -1 and 2**20 - 1 fit in 4 buckets once shifted by 19: scale 1, indexes -1 and 1
    s.observe_exponential(2.0, 4)
    assert (s.scale, s.offset, s.buckets) == (1, -1, [1, 0, 1])
    # 4 at scale 1 is index 3: -1..3 is 5 > 4 buckets, so scale 0: -1, 0, 1
    s.observe_exponential(4.0, 4)
    assert (s.scale, s.offset, s.buckets) == (0, -1, [1, 1, 1])
    s.observe_exponential(1.5, 4)  # (1, 2] at scale 0: no change of scale
    s.observe_exponential(0.0, 4)
    assert (s.scale, s.offset, s.buckets, s.zero_count) == (0, -1, [1, 2, 1], 1)
    assert (s.count, s.sum, s.min, s.max) == (5, 8.5, 0.0, 4.0)
    # a value below the held range grows the buckets at the front (merging to stay within 4)
    s.observe_exponential(0.1, 4)  # index -4 at scale 0: -4..1 is 6 buckets, scale -1: -2..0
    assert (s.scale, s.offset, s.buckets) == (-1, -2, [1, 1, 3])
    with pytest.raises(ValueError):
        s.observe_exponential(-1.0, 4)
    with pytest.raises(ValueError):
        s.observe_exponential(math.nan, 4)


def test_exponential_histogram_export_cumulative_and_delta() -> None:
    for temporality in (Temporality.CUMULATIVE, Temporality.DELTA):
        agg = Aggregator("t", temporality)
        h = agg.add_metric(
            Metric("h", Kind.EXPONENTIAL_HISTOGRAM, unit="ms", max_size=160, max_exemplars=2)
        )
        h.observe_many(b"", (("k", "a"),), [0.0], 5)
        req, _ = agg.build(10)
        (dp,) = points(req, "h")
        assert (dp.count, dp.zero_count, dp.scale, dp.min, dp.max) == (1, 1, 0, 0.0, 0.0)
        assert not dp.positive.bucket_counts
        m = req.resource_metrics[0].scope_metrics[0].metrics[0]
        assert m.exponential_histogram.aggregation_temporality == temporality
        h.observe(b"", (("k", "a"),), 2.0, 15, b"T" * 16, b"S" * 8)
        req, _ = agg.build(20)
        (dp,) = points(req, "h")
        if temporality is Temporality.CUMULATIVE:
            assert (dp.count, dp.zero_count, dp.sum, dp.min) == (2, 1, 2.0, 0.0)
        else:
            assert (dp.count, dp.zero_count, dp.sum, dp.min) == (1, 0, 2.0, 2.0)
        assert (dp.scale, dp.positive.offset, list(dp.positive.bucket_counts)) == (
            20,
            2**20 - 1,
            [1],
        )
        assert dp.exemplars[0].span_id == b"S" * 8


@pytest.mark.parametrize("temporality", [Temporality.CUMULATIVE, Temporality.DELTA])
def test_long_attribute_values_are_cut_to_one_series_each(temporality: Temporality) -> None:
    """A string attribute longer than MAX_LABEL_VALUE_CHARS is cut to that length when its series
    is created: values that differ only past it share one series, the measurements are all
    counted (``truncated`` too), short values are untouched, and a delta flush sends it."""
    agg = Aggregator("t", temporality)
    c = agg.add_metric(Metric("c", Kind.COUNTER))
    h = agg.add_metric(Metric("h", Kind.HISTOGRAM, bounds=[1.0]))
    head = "a" * MAX_LABEL_VALUE_CHARS
    for tail in ("x", "y" * 1_000_000, "z"):
        c.add(b"", (("agent", head + tail), ("n", 1)), 1, 1)
        h.observe_many(b"", (("tool", head + tail),), [0.5, 2.0], 1)
    c.add(b"", (("agent", "short"), ("n", 1)), 1, 1)
    assert max(len(v) for key in c.series for _, v in key[1] if isinstance(v, str)) == len(head)
    req, _ = agg.build(10)
    got = {tuple(sorted(labels(dp).items())): dp.as_int for dp in points(req, "c")}
    assert got == {(("agent", head), ("n", 1)): 3, (("agent", "short"), ("n", 1)): 1}
    (dp,) = points(req, "h")
    assert labels(dp) == {"tool": head} and dp.count == 6
    assert c.truncated == 3 and h.truncated == 6


def test_a_renewed_gauge_exports_as_a_cleared_one() -> None:
    """renew() then set: the points, their order and the cardinality limit of clear() then
    set, with the series objects of the previous flush reused."""

    def flushes(renew: bool) -> tuple[list[bytes], list[Series]]:
        agg = Aggregator("t")
        g = agg.add_metric(Metric("g", Kind.GAUGE, cardinality_limit=3))
        out, objects = [], []
        for n, order in enumerate([["a", "b", "c"], ["c", "a", "d", "b"], ["b", "e"], ["a"]]):
            if renew:
                g.renew()
            else:
                g.clear()
            for i, k in enumerate(order):
                g.set(b"", (("k", k),), float(n * 10 + i), n)
            objects.extend(g.series.values())
            out.append(agg.build(100 + n)[0].SerializeToString())
        return out, objects

    renewed, reused = flushes(True)
    cleared, made = flushes(False)
    assert renewed == cleared
    assert len({id(s) for s in reused}) < len({id(s) for s in made})


def test_exported_attributes_are_kept_for_live_attribute_sets_only() -> None:
    agg = Aggregator("t", Temporality.DELTA)
    c = agg.add_metric(Metric("c", Kind.COUNTER))
    for i in range(3000):
        c.add(b"", (("k", str(i)),), 1, 1)
        if i % 500 == 499:
            agg.build(10 + i)
    c.add(b"", (("k", "x"), ("n", 2)), 1, 2)
    req, _ = agg.build(9999)
    assert labels(points(req, "c")[0]) == {"k": "x", "n": 2}
    assert len(c._kvs) <= 2 * 500 + 1024
