"""The ``prometheus`` exporter's own writer (``render``, with its per-series caches) writes
byte for byte what ``prometheus_client``'s writers write for the same state, in both formats,
through changes, unchanged re-sends, resets, deletions and expiry."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.metrics.v1 import metrics_pb2

from plugins.prometheusexporter.accumulator import Accumulator
from plugins.prometheusexporter.exporter import serialize
from plugins.prometheusexporter.render import render

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


def _request(rng: random.Random, t: int, series: int) -> ExportMetricsServiceRequest:
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    rm.resource.attributes.extend(
        [_kv("service.name", "planner"), _kv("service.instance.id", "p-1"), _kv("host.name", "h")]
    )
    sm = rm.scope_metrics.add()
    sm.scope.name = "agentmetrics"
    sm.scope.version = "1.0"

    def attrs(i: int) -> list[KeyValue]:
        out = [_kv("workflow.type", f"wf{i % 3}"), _kv("agent", ODD[i % len(ODD)])]
        if i % 4 == 0:
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
    for i in range(series):
        dp = calls.sum.data_points.add(start_time_unix_nano=1, time_unix_nano=t)
        dp.as_int = rng.choice([0, 1, 2, 7])
        dp.attributes.extend(attrs(i))
        if rng.random() < 0.5:
            exemplar(dp, dp.as_int)
    hits = sm.metrics.add(name="tool.hits", description="delta hits")
    hits.sum.is_monotonic = True
    hits.sum.aggregation_temporality = DELTA
    for i in range(series):
        dp = hits.sum.data_points.add(start_time_unix_nano=t - 1, time_unix_nano=t)
        dp.as_double = rng.choice([0.0, 0.5, 3.0])
        dp.attributes.extend(attrs(i))
    gauge = sm.metrics.add(name="budget.remaining", unit="%", description="")
    for i in range(series):
        dp = gauge.gauge.data_points.add(time_unix_nano=t)
        dp.as_double = rng.choice([0.25, math.nan, math.inf, -math.inf, 1e21, -3.5, 0.0])
        dp.attributes.extend(attrs(i))
        if i == series - 1 and rng.random() < 0.3:
            dp.flags = metrics_pb2.DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK
    updown = sm.metrics.add(name="queue.depth", unit="{items}")
    updown.sum.is_monotonic = False
    updown.sum.aggregation_temporality = CUMULATIVE
    updown.sum.data_points.add(time_unix_nano=t, as_int=rng.randrange(-3, 3))
    for name, temporality in (("workflow.duration", CUMULATIVE), ("token.usage", DELTA)):
        hist = sm.metrics.add(name=name, unit="s", description=f"{name}\\help")
        hist.histogram.aggregation_temporality = temporality
        for i in range(series):
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
        dp.attributes.extend([*attrs(i), _kv("quantile", "own")])
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
