"""The aggregation core: series, buckets, overflow, temporality, expiry, exemplars."""

from __future__ import annotations

from typing import Any

from plugins._metricsagg import OVERFLOW_ATTRS, Aggregator, Kind, Metric, Temporality


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
