"""What the ``prometheus`` exporter holds between scrapes: the latest state of every series.

OTLP data points are folded in as they arrive: gauges and cumulative points replace the
stored value, delta sums and delta histograms are added to it (so Prometheus always sees
cumulative series), points older than what is held are dropped. Series not updated for
``metric_expiration`` disappear at the next scrape. :meth:`Accumulator.families` builds the
``prometheus_client`` metric families a scrape serializes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.metrics.v1 import metrics_pb2
from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Exemplar
from prometheus_client.utils import floatToGoString

from plugins._labelbound import cut_labels
from plugins.prometheustranslator import (
    MetricKind,
    attributes_to_labels,
    job_and_instance,
    metric_kind,
    metric_name,
    resource_strings,
    resource_target_info_labels,
    unit_name,
)

DELTA = metrics_pb2.AGGREGATION_TEMPORALITY_DELTA
NO_RECORDED_VALUE = metrics_pb2.DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK
EXEMPLAR_LABELS_MAX_CHARS = 128  # the OpenMetrics limit on an exemplar's label set

LabelKey = tuple[tuple[str, str], ...]
DropFunc = Callable[[int, str], None]
CutFunc = Callable[[int], None]


@dataclass(slots=True)
class Series:
    """One series' state (the fields used depend on the family's kind)."""

    labels: dict[str, str]
    start_ns: int = 0
    time_ns: int = 0
    updated: float = 0.0
    value: float = 0.0
    bounds: tuple[float, ...] = ()
    counts: list[int] = field(default_factory=list)
    sum: float = 0.0
    count: int = 0
    quantiles: list[tuple[float, float]] = field(default_factory=list)
    exemplars: list[Any] = field(default_factory=list)
    # plugins.prometheusexporter.render's caches: the escaped label set, and the lines per
    # format (None whenever a fold changes what they show)
    rendered_labels: Any = None
    rendered_lines: dict[Any, Any] | None = None


@dataclass(slots=True)
class Family:
    """A metric family: its Prometheus name, type, help, unit and series."""

    name: str
    kind: MetricKind
    help: str
    unit: str
    series: dict[LabelKey, Series] = field(default_factory=dict)
    rendered: Any = None  # plugins.prometheusexporter.render's header cache


def _number(dp: Any) -> float:
    return float(dp.as_int) if dp.WhichOneof("value") == "as_int" else float(dp.as_double)


class Accumulator:
    """The exporter's store of series, keyed by family name and label set."""

    def __init__(
        self,
        *,
        namespace: str = "",
        const_labels: dict[str, str] | None = None,
        add_metric_suffixes: bool = True,
        resource_to_telemetry: bool = False,
        metric_expiration: float = 300.0,
        on_drop: DropFunc | None = None,
        on_cut: CutFunc | None = None,
        on_update: Callable[[Family | None, Series], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.namespace = namespace
        self.const_labels = dict(const_labels or {})
        self.add_metric_suffixes = add_metric_suffixes
        self.resource_to_telemetry = resource_to_telemetry
        self.metric_expiration = metric_expiration
        self._on_drop = on_drop or (lambda n, reason: None)
        # called with the number of label values cut to plugins._labelbound's bound
        self._on_cut = on_cut or (lambda n: None)
        # Called with each series as a point updates it (family None for target_info): the
        # remote-write exporter turns these into samples.
        self._on_update = on_update
        self._clock = clock
        self.families: dict[str, Family] = {}
        self.target_info: dict[LabelKey, Series] = {}
        self._names: dict[tuple[str, str, MetricKind], str] = {}
        self._last_expire = clock()

    # -- folding data in ---------------------------------------------------------------------
    def add(self, request: Any) -> int:
        """Fold an ``ExportMetricsServiceRequest`` in; returns the points accepted."""
        accepted = 0
        now = self._clock()
        # Expire here too, not only on scrapes: an exporter nobody scrapes must not grow forever.
        if now - self._last_expire > min(60.0, self.metric_expiration / 10):
            self.expire()
        for rm in request.resource_metrics:
            attrs = resource_strings(rm.resource)
            job, instance = job_and_instance(attrs)
            base: dict[str, str] = {}
            if self.resource_to_telemetry:
                base.update(attributes_to_labels(rm.resource.attributes))
            info_labels = resource_target_info_labels(rm.resource)
            if info_labels:
                info_labels = {**info_labels}
                if job:
                    info_labels["job"] = job
                if instance:
                    info_labels["instance"] = instance
                cut = cut_labels(info_labels)
                if cut:
                    self._on_cut(cut)
                key = tuple(sorted(info_labels.items()))
                info = Series(info_labels, updated=now, value=1.0)
                self.target_info[key] = info
                if self._on_update is not None:
                    self._on_update(None, info)
            for sm in rm.scope_metrics:
                scope: dict[str, str] = {}
                if sm.scope.name:
                    scope["otel_scope_name"] = sm.scope.name
                if sm.scope.version:
                    scope["otel_scope_version"] = sm.scope.version
                for metric in sm.metrics:
                    accepted += self._add_metric(metric, base, scope, job, instance, now)
        return accepted

    def _family(self, metric: Any, kind: MetricKind, points: int) -> Family | None:
        key = (metric.name, metric.unit, kind)
        name = self._names.get(key)
        if name is None:
            name = metric_name(
                metric.name, metric.unit, kind, self.namespace, self.add_metric_suffixes
            )
            self._names[key] = name
        if not name:
            self._on_drop(points, f"metric name {metric.name!r} has no valid character")
            return None
        family = self.families.get(name)
        if family is None:
            unit = unit_name(metric.unit) if self.add_metric_suffixes else ""
            family = Family(name, kind, metric.description, unit)
            self.families[name] = family
        elif family.kind is not kind and {family.kind, kind} != {
            MetricKind.GAUGE,
            MetricKind.UPDOWN,
        }:
            self._on_drop(
                points,
                f"metric {name!r} arrived as a {kind.value} but is held as a {family.kind.value}",
            )
            return None
        if metric.description and not family.help:
            family.help = metric.description
        return family

    def _labels(
        self, dp: Any, base: dict[str, str], scope: dict[str, str], job: str, instance: str
    ) -> dict[str, str]:
        labels = dict(base)
        labels.update(attributes_to_labels(dp.attributes))
        for k, v in scope.items():
            labels.setdefault(k, v)
        if job:
            labels["job"] = job
        if instance:
            labels["instance"] = instance
        for k, v in self.const_labels.items():
            labels.setdefault(k, v)
        cut = cut_labels(labels)  # resource (job, instance, resource_to_telemetry) and point
        if cut:
            self._on_cut(cut)
        return labels

    def _add_metric(
        self,
        metric: Any,
        base: dict[str, str],
        scope: dict[str, str],
        job: str,
        instance: str,
        now: float,
    ) -> int:
        kind = metric_kind(metric)
        if kind is None:
            return 0
        data = getattr(metric, metric.WhichOneof("data"))
        points = data.data_points
        if kind is MetricKind.EXPONENTIAL_HISTOGRAM:
            self._on_drop(
                len(points),
                f"exponential histogram {metric.name!r}: not representable in the text formats",
            )
            return 0
        family = self._family(metric, kind, len(points))
        if family is None:
            return 0
        delta = getattr(data, "aggregation_temporality", 0) == DELTA
        accepted = 0
        stale = 0
        for dp in points:
            labels = self._labels(dp, base, scope, job, instance)
            key = tuple(sorted(labels.items()))
            if dp.flags & NO_RECORDED_VALUE:
                family.series.pop(key, None)
                continue
            held = family.series.get(key)
            if held is not None and dp.time_unix_nano < held.time_ns:
                stale += 1
                continue
            if held is not None and delta and dp.time_unix_nano == held.time_ns:
                stale += 1  # the same delta point again: adding it would count it twice
                continue
            if kind is MetricKind.HISTOGRAM:
                self._fold_histogram(family, key, held, labels, dp, delta, now)
            elif kind is MetricKind.SUMMARY:
                s = held or Series(labels)
                quantiles = [(q.quantile, q.value) for q in dp.quantile_values]
                if s.quantiles != quantiles or s.sum != dp.sum or s.count != dp.count:
                    s.quantiles = quantiles
                    s.sum, s.count = dp.sum, dp.count
                    s.rendered_lines = None
                self._stamp(family, key, s, dp, now)
            else:
                value = _number(dp)
                s = held or Series(labels)
                old = s.value
                if delta and held is not None:
                    s.value += value
                else:
                    s.value = value
                    s.start_ns = dp.start_time_unix_nano
                if s.value != old:  # (NaN: changed)
                    s.rendered_lines = None
                if dp.exemplars:
                    exemplar = dp.exemplars[-1]
                    if not s.exemplars or s.exemplars[0] != exemplar:
                        s.exemplars = [exemplar]
                        s.rendered_lines = None
                self._stamp(family, key, s, dp, now)
            accepted += 1
        if stale:
            self._on_drop(stale, "out-of-order data point (older than the one held)")
        return accepted

    def _fold_histogram(
        self,
        family: Family,
        key: LabelKey,
        held: Series | None,
        labels: dict[str, str],
        dp: Any,
        delta: bool,
        now: float,
    ) -> None:
        bounds = tuple(dp.explicit_bounds)
        counts = list(dp.bucket_counts) or [0] * (len(bounds) + 1)
        if len(counts) != len(bounds) + 1:
            counts = (counts + [0] * (len(bounds) + 1))[: len(bounds) + 1]
        s = held or Series(labels)
        if delta and held is not None and held.bounds == bounds:
            s.counts = [a + b for a, b in zip(s.counts, counts, strict=True)]
            s.sum += dp.sum
            s.count += dp.count
            s.rendered_lines = None
        else:
            if s.bounds != bounds or s.counts != counts or s.sum != dp.sum or s.count != dp.count:
                s.rendered_lines = None  # (a NaN sum: changed)
            s.bounds, s.counts, s.sum, s.count = bounds, counts, dp.sum, dp.count
            s.start_ns = dp.start_time_unix_nano
        if dp.exemplars:
            exemplars = list(dp.exemplars)
            if s.exemplars != exemplars:
                s.exemplars = exemplars
                s.rendered_lines = None
        self._stamp(family, key, s, dp, now)

    def _stamp(self, family: Family, key: LabelKey, s: Series, dp: Any, now: float) -> None:
        s.time_ns = dp.time_unix_nano
        s.updated = now
        family.series[key] = s
        if self._on_update is not None:
            self._on_update(family, s)

    # -- expiry ------------------------------------------------------------------------------
    def expire(self) -> int:
        """Forget series not updated for ``metric_expiration``; returns how many."""
        self._last_expire = self._clock()
        cutoff = self._last_expire - self.metric_expiration
        removed = 0
        for name in list(self.families):
            family = self.families[name]
            for key in [k for k, s in family.series.items() if s.updated < cutoff]:
                del family.series[key]
                removed += 1
            if not family.series:
                del self.families[name]
        for key in [k for k, s in self.target_info.items() if s.updated < cutoff]:
            del self.target_info[key]
        return removed

    # -- exposition --------------------------------------------------------------------------
    def collect(self, send_timestamps: bool = False) -> Iterator[Metric]:
        """``prometheus_client`` metric families for every held series."""
        self.expire()
        if self.target_info:
            # A gauge, as the Collector exposes it (OpenMetrics' "info" type trips older parsers)
            info = Metric("target_info", "Target metadata", "gauge")
            for s in self.target_info.values():
                info.add_sample("target_info", s.labels, 1.0)
            yield info
        for family in self.families.values():
            yield self._family_metric(family, send_timestamps)

    @staticmethod
    def family_head(family: Family) -> Metric:
        """The family's ``prometheus_client`` metric without samples (its name, help, type
        and unit as written)."""
        kind = family.kind
        name = family.name
        unit = family.unit if family.unit and name.endswith("_" + family.unit) else ""
        if kind is MetricKind.COUNTER and name.endswith("_total"):
            base = name[: -len("_total")]
            unit = unit if unit and base.endswith("_" + unit) else ""
            return Metric(base, family.help, "counter", unit)
        if kind in (MetricKind.GAUGE, MetricKind.UPDOWN, MetricKind.COUNTER):
            # A counter without "_total" (add_metric_suffixes: false) cannot be typed counter.
            return Metric(
                name, family.help, "gauge" if kind is not MetricKind.COUNTER else "unknown", unit
            )
        if kind is MetricKind.HISTOGRAM:
            return Metric(name, family.help, "histogram", unit)
        return Metric(name, family.help, "summary", unit)

    def _family_metric(self, family: Family, send_timestamps: bool) -> Metric:
        kind = family.kind
        name = family.name
        m = self.family_head(family)
        if kind is MetricKind.COUNTER and name.endswith("_total"):
            for s in family.series.values():
                m.add_sample(name, s.labels, s.value, _ts(s, send_timestamps), _exemplar(s))
            return m
        if kind in (MetricKind.GAUGE, MetricKind.UPDOWN, MetricKind.COUNTER):
            for s in family.series.values():
                m.add_sample(name, s.labels, s.value, _ts(s, send_timestamps))
            return m
        if kind is MetricKind.HISTOGRAM:
            for s in family.series.values():
                ts = _ts(s, send_timestamps)
                cumulative = 0
                exemplars = _bucket_exemplars(s)
                for i, bound in enumerate((*s.bounds, math.inf)):
                    cumulative += s.counts[i] if i < len(s.counts) else 0
                    le = floatToGoString(bound)
                    m.add_sample(
                        name + "_bucket", {**s.labels, "le": le}, cumulative, ts, exemplars.get(i)
                    )
                m.add_sample(name + "_count", s.labels, s.count, ts)
                m.add_sample(name + "_sum", s.labels, s.sum, ts)
            return m
        for s in family.series.values():
            ts = _ts(s, send_timestamps)
            for q, v in s.quantiles:
                m.add_sample(name, {**s.labels, "quantile": floatToGoString(q)}, v, ts)
            m.add_sample(name + "_count", s.labels, s.count, ts)
            m.add_sample(name + "_sum", s.labels, s.sum, ts)
        return m


def _ts(s: Series, send_timestamps: bool) -> float | None:
    return s.time_ns / 1e9 if send_timestamps and s.time_ns else None


def _to_exemplar(e: Any) -> Exemplar:
    labels: dict[str, str] = {}
    if e.trace_id:
        labels["trace_id"] = e.trace_id.hex()
    if e.span_id:
        labels["span_id"] = e.span_id.hex()
    size = sum(len(k) + len(v) for k, v in labels.items())
    for k, v in attributes_to_labels(e.filtered_attributes).items():
        if size + len(k) + len(v) > EXEMPLAR_LABELS_MAX_CHARS:
            break
        labels[k] = v
        size += len(k) + len(v)
    ts = e.time_unix_nano / 1e9 if e.time_unix_nano else None
    return Exemplar(labels, _number(e), ts)


def _exemplar(s: Series) -> Exemplar | None:
    return _to_exemplar(s.exemplars[-1]) if s.exemplars else None


def _bucket_exemplars(s: Series) -> dict[int, Exemplar]:
    """The last exemplar falling in each bucket, by bucket index."""
    return {bucket_index(s, e): _to_exemplar(e) for e in s.exemplars}


def bucket_index(s: Series, e: Any) -> int:
    """The index of the bucket of ``s`` an exemplar falls in."""
    value = _number(e)
    for i, bound in enumerate(s.bounds):
        if value <= bound:
            return i
    return len(s.bounds)
