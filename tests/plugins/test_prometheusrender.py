"""The ``prometheus`` exporter's own writer (``render``, with its per-series caches) writes
byte for byte what ``prometheus_client``'s writers write for the same state, in both formats,
through changes, unchanged re-sends, resets, deletions and expiry."""

from __future__ import annotations

import math
import pickle
import random
from typing import Any

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.metrics.v1 import metrics_pb2

from pipeline import workers
from plugins.prometheusexporter.accumulator import Accumulator
from plugins.prometheusexporter.exporter import serialize
from plugins.prometheusexporter.render import render, render_merged, share

DELTA = metrics_pb2.AGGREGATION_TEMPORALITY_DELTA
CUMULATIVE = metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE
# label values and help texts the writers escape or must keep as they are
ODD = ["plain", 'a "quoted" one', "back\\slash", "new\nline", "ünïcödé ✓", "", "x" * 40]


def _kv(key: str, value: Any) -> KeyValue:
    kv = KeyValue(key=key)
    if isinstance(value, bool):
        kv.value.bool_value = value
    elif isinstance(value, int):
        kv.value.int_value = value
    elif isinstance(value, float):
        kv.value.double_value = value
    else:
        kv.value.string_value = value
    return kv


def _request(
    rng: random.Random,
    t: int,
    series: int,
    own_le: bool = True,
    host: str = "h",
    first: int = 0,
) -> ExportMetricsServiceRequest:
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    rm.resource.attributes.extend(
        [_kv("service.name", "planner"), _kv("service.instance.id", "p-1"), _kv("host.name", host)]
    )
    sm = rm.scope_metrics.add()
    sm.scope.name = "agentmetrics"
    sm.scope.version = "1.0"

    def attrs(i: int) -> list[KeyValue]:
        out = [_kv("workflow.type", f"wf{i % 3}"), _kv("agent", ODD[i % len(ODD)])]
        if i % 4 == 0 and own_le:
            out.append(_kv("le", "own le"))  # an attribute named as the bucket label
        if i % 5 == 0:
            out.append(_kv("a.b-c", i))
        return out

    def exemplar(dp: Any, value: float) -> None:
        ex = dp.exemplars.add(as_double=value, time_unix_nano=t - 5)
        ex.trace_id = bytes(range(16))
        ex.span_id = bytes(range(8))
        ex.filtered_attributes.append(_kv("tool", ODD[rng.randrange(len(ODD))]))

    calls = sm.metrics.add(name="agent.calls", unit="1", description='calls "made"\\ \n')
    calls.sum.is_monotonic = True
    calls.sum.aggregation_temporality = CUMULATIVE
    for i in range(first, first + series):
        dp = calls.sum.data_points.add(start_time_unix_nano=1, time_unix_nano=t)
        dp.as_int = rng.choice([0, 1, 2, 7])
        dp.attributes.extend(attrs(i))
        if rng.random() < 0.5:
            exemplar(dp, dp.as_int)
    hits = sm.metrics.add(name="tool.hits", description="delta hits")
    hits.sum.is_monotonic = True
    hits.sum.aggregation_temporality = DELTA
    for i in range(first, first + series):
        dp = hits.sum.data_points.add(start_time_unix_nano=t - 1, time_unix_nano=t)
        dp.as_double = rng.choice([0.0, 0.5, 3.0])
        dp.attributes.extend(attrs(i))
    gauge = sm.metrics.add(name="budget.remaining", unit="%", description="")
    for i in range(first, first + series):
        dp = gauge.gauge.data_points.add(time_unix_nano=t)
        dp.as_double = rng.choice([0.25, math.nan, math.inf, -math.inf, 1e21, -3.5, 0.0])
        dp.attributes.extend(attrs(i))
        if i == first + series - 1 and rng.random() < 0.3:
            dp.flags = metrics_pb2.DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK
    updown = sm.metrics.add(name="queue.depth", unit="{items}")
    updown.sum.is_monotonic = False
    updown.sum.aggregation_temporality = CUMULATIVE
    updown.sum.data_points.add(time_unix_nano=t, as_int=rng.randrange(-3, 3))
    for name, temporality in (("workflow.duration", CUMULATIVE), ("token.usage", DELTA)):
        hist = sm.metrics.add(name=name, unit="s", description=f"{name}\\help")
        hist.histogram.aggregation_temporality = temporality
        for i in range(first, first + series):
            bounds = [0.005, 0.1, 1.0, 2.5, 10.0, 1e7]
            counts = [rng.choice([0, 0, 1, 3]) for _ in range(len(bounds) + 1)]
            dp = hist.histogram.data_points.add(
                start_time_unix_nano=1 if temporality == CUMULATIVE else t - 1,
                time_unix_nano=t,
                explicit_bounds=bounds,
                bucket_counts=counts,
                count=sum(counts),
                sum=rng.choice([0.0, 1.5, 12.25, math.nan]),
            )
            dp.attributes.extend(attrs(i))
            if rng.random() < 0.5:
                exemplar(dp, rng.choice([0.001, 0.5, 3.0, 1e9]))
                exemplar(dp, rng.choice([0.05, 5.0]))
    summary = sm.metrics.add(name="latency.summary", unit="ms")
    for i in range(2):
        dp = summary.summary.data_points.add(time_unix_nano=t, count=3, sum=rng.random())
        dp.attributes.extend([*attrs(i), *([_kv("quantile", "own")] if own_le else [])])
        for q in (0.5, 0.99):
            dp.quantile_values.add(quantile=q, value=rng.choice([1.0, 2.0]))
    return req


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"namespace": "ns", "const_labels": {"zone": 'a"b'}, "resource_to_telemetry": True},
        {"add_metric_suffixes": False},
    ],
)
@pytest.mark.parametrize("send_timestamps", [False, True])
def test_render_is_what_prometheus_client_writes(
    options: dict[str, Any], send_timestamps: bool
) -> None:
    rng = random.Random(14)
    now = [1000.0]
    acc = Accumulator(metric_expiration=60, clock=lambda: now[0], **options)
    t = 1_700_000_000_123_456_789
    for step in range(12):
        if step % 3 != 2:  # every third step: the same state again (cached lines served)
            t += 5_000_000_000 + step
            acc.add(_request(rng, t, series=3 + step % 4))
        if step == 8:
            now[0] += 61  # everything expires
        elif step == 9:
            t += 1  # a reset: cumulative series start again
        for om in (False, True):
            assert (
                render(acc, om, send_timestamps)
                == (serialize(list(acc.collect(send_timestamps)), om)[0])
            ), (step, om)
        now[0] += 1


def test_a_changed_value_is_written_again() -> None:
    acc = Accumulator()
    t = 10

    def counter(value: int) -> ExportMetricsServiceRequest:
        req = ExportMetricsServiceRequest()
        m = req.resource_metrics.add().scope_metrics.add().metrics.add(name="hits")
        m.sum.is_monotonic = True
        m.sum.aggregation_temporality = CUMULATIVE
        m.sum.data_points.add(as_int=value, start_time_unix_nano=1, time_unix_nano=t)
        return req

    acc.add(counter(2))
    assert b"hits_total 2.0\n" in render(acc, False, False)
    t += 1
    acc.add(counter(2))  # unchanged: served from the cache
    assert b"hits_total 2.0\n" in render(acc, False, False)
    t += 1
    acc.add(counter(5))
    assert b"hits_total 5.0\n" in render(acc, False, False)
    assert b"hits_total 5.0 12000\n" not in render(acc, False, False)
    assert b"hits_total 5.0 1.2e-08\n" in render(acc, True, True)


def _merged_before(accs: list[Accumulator], om: bool, send_timestamps: bool) -> bytes:
    """What the exporter served with workers before render_merged: every worker's
    prometheus_client families, merged, written by prometheus_client."""
    shares = [list(accs[0].collect(True))]
    shares += [pickle.loads(pickle.dumps(list(a.collect(True)))) for a in accs[1:]]
    families = workers.merge_families(shares, gauges="latest")
    if not send_timestamps:
        families = workers.strip_timestamps(families)
    return serialize(families, om)[0]


def _merged_now(
    accs: list[Accumulator], om: bool, send_timestamps: bool, kept: Any = None
) -> bytes | None:
    shares = [share(accs[0], om, send_timestamps)]
    shares += [pickle.loads(pickle.dumps(share(a, om, send_timestamps))) for a in accs[1:]]
    return render_merged(shares, om, send_timestamps, kept)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"namespace": "ns", "const_labels": {"zone": 'a"b'}, "resource_to_telemetry": True},
        {"add_metric_suffixes": False},
    ],
)
@pytest.mark.parametrize("send_timestamps", [False, True])
def test_merged_render_is_what_merge_families_and_prometheus_client_write(
    options: dict[str, Any], send_timestamps: bool
) -> None:
    """Three workers' accumulators, their series partly the same (a connector's series with
    the same labels in every worker, added up or the latest gauge kept), partly their own,
    hostile label values (quotes, backslashes, newlines, 40 KiB): the merged exposition of
    their shares is byte for byte what merge_families and prometheus_client's writers make
    of their families, through changes, re-sends, ties of timestamps and expiry."""
    rng = random.Random(7)
    now = [1000.0]
    accs = [Accumulator(metric_expiration=60, clock=lambda: now[0], **options) for _ in range(3)]
    t = 1_700_000_000_123_456_789
    merged_fast = 0
    kept: dict[bool, Any] = {False: {}, True: {}}  # the merged lines kept between scrapes
    for step in range(14):
        if step % 3 != 2:
            t += 5_000_000_000 + step
            for w, acc in enumerate(accs):
                # worker 0 and 1 hold series 0.. (shared), worker 2 series 2.. (partly)
                first = 2 if w == 2 else 0
                tw = t + (0 if step % 2 else w * 1000)  # ties of timestamps, or not
                acc.add(
                    _request(rng, tw, 3 + step % 4, own_le=False, host=f"h{w % 2}", first=first)
                )
        if step == 5:
            # a huge label value and one worker alone holding a series
            req = _request(rng, t, 1, own_le=False, first=100)
            for m in req.resource_metrics[0].scope_metrics[0].metrics:
                pts = m.WhichOneof("data")
                for dp in getattr(m, pts).data_points:
                    dp.attributes.append(_kv("huge", 'x"\\\n' * 10_000))
            accs[1].add(req)
        if step == 9:
            now[0] += 61  # everything expires
        for om in (False, True):
            got = _merged_now(accs, om, send_timestamps, kept[om])
            assert got is not None, (step, om)
            assert got == _merged_before(accs, om, send_timestamps), (step, om)
            merged_fast += 1
        now[0] += 1
    assert merged_fast == 28


def test_merged_render_leaves_to_merge_families_what_it_cannot_merge_by_series() -> None:
    """A histogram series labelled ``le``, a summary's ``quantile`` label, a +Inf bound
    (the merge adds such lines to other lines), bounds that differ between workers: the
    share says so (or render_merged sees it) and the caller merges as before."""
    rng = random.Random(3)
    t = 1_700_000_000_000_000_000
    a, b = Accumulator(), Accumulator()
    a.add(_request(rng, t, 5, own_le=True))
    b.add(_request(rng, t, 5, own_le=True))
    assert _merged_now([a, b], False, False) is None
    a, b = Accumulator(), Accumulator()
    a.add(_request(rng, t, 5, own_le=False))
    b.add(_request(rng, t, 5, own_le=False))
    assert _merged_now([a, b], False, False) == _merged_before([a, b], False, False)
    req = _request(rng, t + 1, 5, own_le=False)
    for m in req.resource_metrics[0].scope_metrics[0].metrics:
        if m.WhichOneof("data") == "histogram":
            for dp in m.histogram.data_points:
                dp.explicit_bounds[-1] = 1e8
    b.add(req)  # other bounds for the same series in b
    assert _merged_now([a, b], False, False) is None
    req = _request(rng, t + 2, 5, own_le=False)
    for m in req.resource_metrics[0].scope_metrics[0].metrics:
        if m.WhichOneof("data") == "histogram":
            for dp in m.histogram.data_points:
                dp.explicit_bounds[-1] = math.inf
    a.add(req)
    assert _merged_now([a], False, False) is None


def test_numbers_are_written_as_prometheus_client_writes_them() -> None:
    """render's shortcut for numbers under a million (repr, "<n>.0") is floatToGoString."""
    from prometheus_client.utils import floatToGoString

    from plugins.prometheusexporter.render import _number

    rng = random.Random(5)
    values: list[Any] = [0, 1, 999_999, 1_000_000, 10**20, -1, -(10**17), True]
    values += [0.0, -0.0, 1e-5, 123456.5, 999_999.99, 1e6, -1e6, -999_999.5, 1e21, -1e-300]
    values += [math.nan, math.inf, -math.inf, 5e-324]
    for _ in range(20_000):
        e = rng.randrange(-12, 25)
        values.append(rng.choice([1, -1]) * rng.random() * 10.0**e)
        values.append(rng.randrange(0, 10 ** rng.randrange(1, 20)))
    for v in values:
        assert _number(v) == floatToGoString(v), v


def test_a_bound_of_minus_zero_is_written_as_such() -> None:
    """Bucket lines kept by bounds (-0.0 == 0.0 as a key): each histogram's own bounds."""
    for bound in (0.0, -0.0, 0.0):
        acc = Accumulator()
        req = ExportMetricsServiceRequest()
        m = req.resource_metrics.add().scope_metrics.add().metrics.add(name="h")
        m.histogram.aggregation_temporality = CUMULATIVE
        m.histogram.data_points.add(
            time_unix_nano=1, explicit_bounds=[bound, 1.0], bucket_counts=[1, 2, 3], count=6
        )
        acc.add(req)
        assert render(acc, False, False) == serialize(list(acc.collect(False)), False)[0]


def test_a_worker_without_the_exporter_yet_adds_nothing() -> None:
    """A sibling whose exporter has not started (or is being reloaded) answers a gather with
    ``[]``: the merge is the other workers', as merge_families makes it."""
    acc = Accumulator()
    acc.add(_request(random.Random(1), 1_700_000_000_000_000_000, 3, own_le=False))
    for om in (False, True):
        assert render_merged([share(acc, om, False), []], om, False) == render(acc, om, False)
        assert render_merged([[], share(acc, om, False)], om, False) == render(acc, om, False)
