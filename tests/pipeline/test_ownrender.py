"""The own metrics of a ``--workers`` gateway written from the workers' shares
(``pipeline.ownrender``): byte for byte what ``merge_families(gauges="sum")`` and
``generate_latest`` wrote for the same workers' families."""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

from prometheus_client import generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    SummaryMetricFamily,
)
from prometheus_client.metrics_core import Metric

from pipeline import ownrender
from pipeline.telemetry import SelfTelemetry
from pipeline.workers import FamiliesCollector, merge_families, restart_families

HOSTILE = ['say "hi"', "back\\slash\\", "two\nlines", "plain"]


class _Extra:
    """Families the own registry could hold beside counters, gauges and histograms: a
    summary with quantiles, an info, a start time, a counter with its _created."""

    def __init__(self, worker: int) -> None:
        self.worker = worker

    def collect(self) -> list[Metric]:
        w = self.worker
        summary = SummaryMetricFamily("otelcol_test_latency", "A summary.", labels=["k"])
        summary.add_metric(["a"], count_value=3 + w, sum_value=1.5 * (w + 1))
        summary.add_sample("otelcol_test_latency", {"k": "a", "quantile": "0.5"}, 0.1 * (w + 1))
        info = InfoMetricFamily("otelcol_test_build", "Build.", value={"version": "1"})
        start = GaugeMetricFamily("otelcol_test_start_time_seconds", "Start.", value=100.0 + w)
        created = CounterMetricFamily("otelcol_test_things", "Things.", labels=["x"])
        created.add_metric(["y"], 2.0 + w, created=1000.0 + w)
        return [summary, info, start, created]


def _worker(i: int, series: int) -> SelfTelemetry:
    tel = SelfTelemetry()
    tel.registry.register(_Extra(i))  # type: ignore[arg-type]
    accepted = tel.counter("otelcol_receiver_accepted_spans", "Accepted.", ("receiver",))
    for n in range(series):
        accepted.labels(f"otlp/{n}").inc(10 * n + i + 0.25)
    tel.counter("otelcol_test_hostile", "Hostile \\ doc\nlines.", ("v",))
    for v in HOSTILE:
        tel.counter("otelcol_test_hostile", "", ("v",)).labels(v).inc(i + 1)
    if i == 0:  # a series only the first worker holds
        tel.gauge("otelcol_test_only_first", "One worker's.", ()).set(7)
    tel.gauge("otelcol_processor_queue", "Queued.", ("processor",)).labels("batch").set(3 * i + 1)
    hist = tel.histogram("otelcol_test_sizes", "Sizes.", ("p",), (1.0, 10.0, 100.0, 1e7))
    for v in (0.5, 5, 50, 5e6 + i, 1e9):
        hist.labels("batch").observe(v * (i + 1))
    return tel


def _both(collected: list[list[Metric]], run_dir: Path, count: int) -> tuple[bytes, bytes]:
    merged = merge_families(collected, gauges="sum")
    merged += restart_families(run_dir, count)
    old = generate_latest(FamiliesCollector(merged))  # type: ignore[arg-type]
    shares = [
        pickle.loads(pickle.dumps(ownrender.Shares().share(families))) for families in collected
    ]
    text = ownrender.render(shares)
    tail = ownrender.render([ownrender.Shares().share(restart_families(run_dir, count))])
    assert text is not None and tail is not None
    return old, text + tail


def test_shares_render_what_merge_families_and_generate_latest_wrote(tmp_path: Path) -> None:
    (tmp_path / "restarts.json").write_text('{"1": 2}')
    for count, series in ((2, 3), (3, 40)):
        workers = [_worker(i, series) for i in range(count)]
        collected = [list(w.registry.collect()) for w in workers]
        old, new = _both(collected, tmp_path, count)
        assert hashlib.sha256(new).hexdigest() == hashlib.sha256(old).hexdigest()
        assert b"otelcol_test_sizes_bucket" in new and b"otelcol_test_things_created" in new
        assert b'otelcol_worker_restarts_total{worker="1"} 2.0' in new


def test_kept_lines_and_layouts_give_the_new_values_and_series() -> None:
    """A worker keeps its lines and its layout's bytes between scrapes, the primary the
    layouts it unpickled: values still change, and a series that comes is written."""
    workers = [_worker(i, 2) for i in range(2)]
    makers = [ownrender.Shares() for _ in workers]
    renderer = ownrender.Renderer()
    for step in range(4):
        for i, w in enumerate(workers):
            counter = w.counter("otelcol_receiver_accepted_spans", "", ("receiver",))
            counter.labels("otlp/0").inc(step + 1)
            if step == i + 2:  # a new series in one worker, then in the other too
                counter.labels("otlp/new").inc(1)
        collected = [list(w.registry.collect()) for w in workers]
        old = generate_latest(
            FamiliesCollector(merge_families(collected, gauges="sum"))  # type: ignore[arg-type]
        )
        shares = [
            pickle.loads(pickle.dumps(m.share(f))) for m, f in zip(makers, collected, strict=True)
        ]
        new = renderer.render(shares)
        assert new == old, step
    assert b'otelcol_receiver_accepted_spans_total{receiver="otlp/new"} 2.0' in new


def test_what_only_merge_families_merges_is_left_to_it() -> None:
    stamped = GaugeMetricFamily("otelcol_test_g", "G.")
    stamped.add_sample("otelcol_test_g", {}, 1.0, timestamp=5.0)
    assert ownrender.render([ownrender.Shares().share([stamped])]) is None
    odd_label = CounterMetricFamily("otelcol_test_c", "C.", labels=["a.b"])
    odd_label.add_metric(["x"], 1.0)
    assert ownrender.render([ownrender.Shares().share([odd_label])]) is None
    as_gauge = GaugeMetricFamily("otelcol_test_c", "C.", value=1.0)
    counter = CounterMetricFamily("otelcol_test_c", "C.", value=2.0)
    shares = [ownrender.Shares().share([as_gauge]), ownrender.Shares().share([counter])]
    assert ownrender.render(shares) is None
    assert ownrender.render([[], ownrender.Shares().share([counter])]) == generate_latest(
        FamiliesCollector([counter])  # type: ignore[arg-type]
    )


def test_a_kept_line_is_written_again_when_its_text_would_differ() -> None:
    """-0.0 equals 0.0 and NaN equals nothing: each is written as generate_latest does."""
    renderer, shares = ownrender.Renderer(), ownrender.Shares()
    for value in (0.0, -0.0, 0.0, float("nan"), float("nan"), 5, 5.0, float("inf"), 1e21):
        gauge = GaugeMetricFamily("otelcol_test_g", "G.", value=value)
        want = generate_latest(FamiliesCollector([gauge]))  # type: ignore[arg-type]
        assert renderer.render([shares.share([gauge])]) == want, value
