"""Prometheus metric families (as ``prometheus_client``'s parsers return them) → OTLP.

What the Collector's ``prometheus`` receiver does, for the supported subset:

* one resource per ``job``/``instance`` pair: ``service.name`` = job, ``service.instance.id``
  = instance, plus ``server.address``, ``server.port`` and ``url.scheme``; the other labels
  become data point attributes;
* counters → cumulative monotonic sums (the sample's own name, ``_total`` included); gauges,
  untyped, info and stateset metrics → gauges; histograms → cumulative histograms (bucket
  counts de-accumulated, bounds from ``le``); summaries → summaries;
* start times: a series' ``_created`` sample when exposed, else the time it was first seen,
  moved to the current sample's time when a counter, histogram count or summary count goes
  down (a reset);
* target labels (``job``, ``instance``, ``static_configs`` labels) are added to every series;
  a scraped label with the same name is renamed ``exported_<name>`` unless ``honor_labels``;
* OpenMetrics exemplars become OTLP exemplars (``trace_id``/``span_id`` decoded).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.metrics.v1 import metrics_pb2

from pipeline import __version__
from plugins.prometheusreceiver.config import ScrapeLimits

SCOPE_NAME = "pipeline/receiver/prometheusreceiver"
CUMULATIVE = metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE
GAUGE_TYPES = {"gauge", "unknown", "untyped", "info", "stateset"}
# the drop reason of a family with a sample OTLP cannot hold (see check_family)
INVALID_SAMPLES = "invalid sample values"

LabelKey = tuple[tuple[str, str], ...]


@dataclass
class Target:
    """One scrape target: its URL and the labels Prometheus gives its series."""

    job: str
    instance: str
    url: str
    scheme: str
    labels: dict[str, str]  # job, instance and the static_configs labels

    @property
    def host_port(self) -> tuple[str, str]:
        host, _, port = self.instance.rpartition(":")
        return host.strip("[]"), port


_U64 = 1 << 64  # OTLP's times and counts are fixed64


def _ns(timestamp: Any, default: int) -> int:
    """Seconds (a float or an OpenMetrics ``Timestamp``) as OTLP nanoseconds; ``ValueError``
    for a time OTLP cannot hold (not finite, before 1970, after 2554)."""
    if timestamp is None:
        return default
    if hasattr(timestamp, "sec"):
        ns = int(timestamp.sec) * 1_000_000_000 + int(timestamp.nsec)
    else:
        seconds = float(timestamp)
        if not math.isfinite(seconds):
            raise ValueError(f"time {timestamp!r}")
        # Through the decimal text: float seconds times 1e9 would lose the last digits.
        ns = int(Decimal(repr(seconds)) * 1_000_000_000)
    if not 0 <= ns < _U64:
        raise ValueError(f"time {timestamp!r}")
    return ns


def check_family(family: Any, honor_timestamps: bool) -> None:
    """Raises ``ValueError`` naming the first sample of a family that OTLP cannot represent: a
    time out of range, a count that is not a whole number below 2^64, an ``le`` or ``quantile``
    label that is not a number. Such a family is dropped whole (and counted)."""
    kind = family.type
    counts = {"histogram": ("_bucket", "_count"), "summary": ("_count",)}.get(kind, ())
    for s in family.samples:
        suffix = s.name[len(family.name) :]
        if honor_timestamps:
            _ns(s.timestamp, 0)
        if suffix == "_created" and kind in ("counter", "histogram", "summary"):
            _ns(s.value, 0)
        if suffix in counts and not 0 <= s.value < _U64:
            raise ValueError(f"{s.name}: count {s.value!r}")
        if kind == "histogram" and suffix == "_bucket":
            float(s.labels.get("le", "+Inf"))
        if kind == "summary" and "quantile" in s.labels:
            float(s.labels["quantile"])
        if s.exemplar is not None:
            float(s.exemplar.value)
            _ns(s.exemplar.timestamp, 0)


@dataclass
class _Resource:
    rm: Any
    sm: Any
    metrics: dict[str, Any] = field(default_factory=dict)


class ScrapeError(ValueError):
    """A scrape that cannot be taken: its exposition does not parse, or it is over one of
    the scrape limits (Prometheus's message, naming the limit). The scrape fails as a whole
    (``up`` = 0) and nothing of it is sent. The one exception the receiver's decoding
    (:func:`plugins.prometheusreceiver.receiver.decode_scrape`) raises for bad input.

    ``reason`` names the limit (``sample_limit``, ``label_limit``...) or ``malformed``;
    ``samples`` is the scrape's sample count when it is known."""

    def __init__(self, message: str, reason: str = "malformed", samples: int = 0) -> None:
        super().__init__(message)
        self.reason = reason
        self.samples = samples


class Converter:
    """Converts one target's scrapes, remembering each series' start time between them."""

    def __init__(
        self,
        target: Target,
        honor_labels: bool,
        honor_timestamps: bool,
        limits: ScrapeLimits | None = None,
    ) -> None:
        self.target = target
        self.honor_labels = honor_labels
        self.honor_timestamps = honor_timestamps
        self.limits = limits or ScrapeLimits()
        # (metric name, labels) -> (start time, last value used for reset detection)
        self._starts: dict[tuple[str, LabelKey], tuple[int, float]] = {}
        # the same for the scrape being converted; it replaces _starts once the scrape is
        # taken (a failed scrape leaves no trace, and series it lacks are forgotten)
        self._next: dict[tuple[str, LabelKey], tuple[int, float]] = {}
        self.dropped: dict[str, int] = {}
        self.invalid = ""  # why the last scrape's first dropped family was invalid

    # -- labels and resources ------------------------------------------------------------
    def _final_labels(self, scraped: dict[str, str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for k, v in scraped.items():
            if k in self.target.labels and not self.honor_labels:
                out[f"exported_{k}"] = v
            else:
                out[k] = v
        for k, v in self.target.labels.items():
            if self.honor_labels and k in scraped:
                continue
            out[k] = v
        return {k: v for k, v in out.items() if v != ""}

    def _resource(
        self, request: Any, resources: dict[tuple[str, str], _Resource], job: str, instance: str
    ) -> _Resource:
        key = (job, instance)
        res = resources.get(key)
        if res is None:
            rm = request.resource_metrics.add()
            attrs = [("service.name", job), ("service.instance.id", instance)]
            if instance == self.target.instance:
                host, port = self.target.host_port
                attrs += [("server.address", host), ("server.port", port)]
                attrs.append(("url.scheme", self.target.scheme))
            for k, v in attrs:
                if v:
                    rm.resource.attributes.add(key=k).value.string_value = v
            sm = rm.scope_metrics.add()
            sm.scope.name = SCOPE_NAME
            sm.scope.version = __version__
            res = _Resource(rm, sm)
            resources[key] = res
        return res

    def _metric(self, res: _Resource, name: str, kind: str, help_: str, unit: str) -> Any:
        metric = res.metrics.get(name)
        if metric is None:
            metric = res.sm.metrics.add(name=name, description=help_, unit=unit)
            if kind == "sum":
                metric.sum.aggregation_temporality = CUMULATIVE
                metric.sum.is_monotonic = True
            elif kind == "histogram":
                metric.histogram.aggregation_temporality = CUMULATIVE
            elif kind == "gauge":
                metric.gauge.SetInParent()
            else:
                metric.summary.SetInParent()
            res.metrics[name] = metric
        return metric

    def _start(self, name: str, key: LabelKey, ts: int, value: float, created: int | None) -> int:
        if created is not None:
            self._next[(name, key)] = (created, value)
            return created
        held = self._next.get((name, key)) or self._starts.get((name, key))
        start = ts if held is None or value < held[1] else held[0]
        self._next[(name, key)] = (start, value)
        return start

    # -- conversion ------------------------------------------------------------------------
    def convert(
        self,
        families: Iterable[Any],
        scrape_ns: int,
        *,
        up: bool,
        duration: float,
        samples_scraped: int,
    ) -> ExportMetricsServiceRequest:
        """One request holding a scrape's families and the target's ``up`` and friends
        (raises :class:`ScrapeError` when a limit is exceeded)."""
        request, _ = self.convert_scrape(families, scrape_ns) if up else self.empty()
        self.finish(request, scrape_ns, up=up, duration=duration, samples_scraped=samples_scraped)
        return request

    def empty(self) -> tuple[ExportMetricsServiceRequest, int]:
        """The request of a failed scrape, before :meth:`finish`."""
        self.dropped = {}
        self.invalid = ""
        return ExportMetricsServiceRequest(), 0

    def convert_scrape(
        self, families: Iterable[Any], scrape_ns: int
    ) -> tuple[ExportMetricsServiceRequest, int]:
        """A successful scrape's families as a request (to :meth:`finish`), and its sample
        count. ``families`` may be a generator: they are converted as they are parsed, so
        the parsed exposition is never held whole. Raises :class:`ScrapeError` as soon as
        the scrape is over ``sample_limit`` or a label limit; the series' start times are
        then as before it."""
        request = ExportMetricsServiceRequest()
        resources: dict[tuple[str, str], _Resource] = {}
        self.dropped = {}
        self._next = {}
        self.invalid = ""
        samples = 0
        limit = self.limits.sample_limit
        try:
            for family in families:
                samples += len(family.samples)
                if limit and samples > limit:
                    raise ScrapeError(
                        f"sample limit exceeded (more than {limit} samples: sample_limit)",
                        reason="sample_limit",
                    )
                try:
                    check_family(family, self.honor_timestamps)
                except ValueError as exc:
                    self._drop(INVALID_SAMPLES, len(family.samples))
                    self.invalid = self.invalid or f"family {family.name!r}: {exc}"
                    continue
                self._family(request, resources, family, scrape_ns)
        except BaseException:
            self._next = {}
            raise
        # Series gone from the target are forgotten: if they come back, they start anew.
        self._starts, self._next = self._next, {}
        return request, samples

    def finish(
        self,
        request: ExportMetricsServiceRequest,
        scrape_ns: int,
        *,
        up: bool,
        duration: float,
        samples_scraped: int,
    ) -> None:
        """Add the target's ``up``, ``scrape_duration_seconds`` and
        ``scrape_samples_scraped``."""
        own = None
        for rm in request.resource_metrics:
            attrs = {kv.key: kv.value.string_value for kv in rm.resource.attributes}
            if (attrs.get("service.name", ""), attrs.get("service.instance.id", "")) == (
                self.target.job,
                self.target.instance,
            ):
                own = _Resource(rm, rm.scope_metrics[0])
                own.metrics = {m.name: m for m in own.sm.metrics}
                break
        if own is None:
            own = self._resource(request, {}, self.target.job, self.target.instance)
        for name, value, unit, help_ in (
            ("up", 1.0 if up else 0.0, "", "The scraping was successful"),
            ("scrape_duration_seconds", duration, "s", "Duration of the scrape"),
            (
                "scrape_samples_scraped",
                float(samples_scraped),
                "",
                "The number of samples the target exposed",
            ),
        ):
            dp = self._metric(own, name, "gauge", help_, unit).gauge.data_points.add()
            dp.time_unix_nano = scrape_ns
            dp.as_double = value

    def _check_labels(self, family: Any, samples: list[Any], labels: dict[str, str]) -> None:
        """Prometheus's label limits on each sample's final label set (its scraped labels,
        the target's, ``__name__``, and ``le`` / ``quantile``)."""
        lim = self.limits
        if not (lim.label_limit or lim.label_name_length_limit or lim.label_value_length_limit):
            return
        for s in samples:
            lset = {**labels, "__name__": s.name}
            for extra in ("le", "quantile"):
                if extra in s.labels:
                    lset[extra] = s.labels[extra]
            if lim.label_limit and len(lset) > lim.label_limit:
                raise ScrapeError(
                    f"label_limit exceeded (metric: {s.name:.50s}, number of labels: "
                    f"{len(lset)}, limit: {lim.label_limit})",
                    "label_limit",
                )
            for name, value in lset.items():
                if lim.label_name_length_limit and len(name) > lim.label_name_length_limit:
                    raise ScrapeError(
                        f"label_name_length_limit exceeded (metric: {s.name:.50s}, label "
                        f"name: {name:.50s}, length: {len(name)}, "
                        f"limit: {lim.label_name_length_limit})",
                        "label_name_length_limit",
                    )
                if lim.label_value_length_limit and len(value) > lim.label_value_length_limit:
                    raise ScrapeError(
                        f"label_value_length_limit exceeded (metric: {s.name:.50s}, label "
                        f"name: {name:.50s}, value: {value[:50]!r}, length: {len(value)}, "
                        f"limit: {lim.label_value_length_limit})",
                        "label_value_length_limit",
                    )

    def _drop(self, reason: str, n: int) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + n

    def _groups(self, family: Any) -> dict[LabelKey, list[Any]]:
        groups: dict[LabelKey, list[Any]] = {}
        for s in family.samples:
            labels = {k: v for k, v in s.labels.items() if k not in ("le", "quantile")}
            groups.setdefault(tuple(sorted(labels.items())), []).append(s)
        return groups

    def _family(
        self, request: Any, resources: dict[tuple[str, str], _Resource], family: Any, now: int
    ) -> None:
        ftype = family.type
        if ftype == "gaugehistogram":
            for scraped_key, samples in self._groups(family).items():
                self._check_labels(family, samples, self._final_labels(dict(scraped_key)))
            self._drop("gauge histograms are not supported", len(family.samples))
            return
        for scraped_key, samples in self._groups(family).items():
            labels = self._final_labels(dict(scraped_key))
            self._check_labels(family, samples, labels)
            job = labels.pop("job", "")
            instance = labels.pop("instance", "")
            res = self._resource(request, resources, job, instance)
            key = tuple(sorted(labels.items()))
            if ftype == "counter":
                self._counter(res, family, samples, labels, key, now)
            elif ftype == "histogram":
                self._histogram(res, family, samples, labels, key, now)
            elif ftype == "summary":
                self._summary(res, family, samples, labels, key, now)
            else:
                for s in samples:
                    metric = self._metric(res, s.name, "gauge", family.documentation, family.unit)
                    dp = metric.gauge.data_points.add(time_unix_nano=self._ts(s, now))
                    dp.as_double = s.value
                    _attributes(dp, labels)

    def _ts(self, sample: Any, now: int) -> int:
        return _ns(sample.timestamp, now) if self.honor_timestamps else now

    def _counter(
        self,
        res: _Resource,
        family: Any,
        samples: list[Any],
        labels: dict[str, str],
        key: LabelKey,
        now: int,
    ) -> None:
        created = next((s for s in samples if s.name == family.name + "_created"), None)
        for s in samples:
            if s is created:
                continue
            ts = self._ts(s, now)
            start = self._start(
                s.name, key, ts, s.value, _ns(created.value, 0) if created is not None else None
            )
            metric = self._metric(res, s.name, "sum", family.documentation, family.unit)
            dp = metric.sum.data_points.add(
                start_time_unix_nano=start, time_unix_nano=ts, as_double=s.value
            )
            _attributes(dp, labels)
            if s.exemplar is not None:
                _exemplar(dp.exemplars.add(), s.exemplar, ts)

    def _histogram(
        self,
        res: _Resource,
        family: Any,
        samples: list[Any],
        labels: dict[str, str],
        key: LabelKey,
        now: int,
    ) -> None:
        buckets: list[tuple[float, float, Any]] = []
        total = hsum = None
        created: int | None = None
        ts = now
        for s in samples:
            suffix = s.name[len(family.name) :]
            ts = self._ts(s, now)
            if suffix == "_bucket":
                buckets.append((float(s.labels.get("le", "+Inf")), s.value, s.exemplar))
            elif suffix == "_count":
                total = s.value
            elif suffix == "_sum":
                hsum = s.value
            elif suffix == "_created":
                created = _ns(s.value, 0)
        buckets.sort(key=lambda b: b[0])
        if total is None:
            total = buckets[-1][1] if buckets else 0.0
        metric = self._metric(res, family.name, "histogram", family.documentation, family.unit)
        dp = metric.histogram.data_points.add(time_unix_nano=ts, count=int(total))
        if hsum is not None:
            dp.sum = hsum
        previous = 0.0
        for bound, cumulative, exemplar in buckets:
            if not math.isinf(bound):
                dp.explicit_bounds.append(bound)
            dp.bucket_counts.append(int(max(cumulative - previous, 0)))
            previous = cumulative
            if exemplar is not None:
                _exemplar(dp.exemplars.add(), exemplar, ts)
        if not buckets or not math.isinf(buckets[-1][0]):
            dp.bucket_counts.append(int(max(total - previous, 0)))
        dp.start_time_unix_nano = self._start(family.name, key, ts, total, created)
        _attributes(dp, labels)

    def _summary(
        self,
        res: _Resource,
        family: Any,
        samples: list[Any],
        labels: dict[str, str],
        key: LabelKey,
        now: int,
    ) -> None:
        metric = self._metric(res, family.name, "summary", family.documentation, family.unit)
        dp = metric.summary.data_points.add()
        created: int | None = None
        for s in samples:
            suffix = s.name[len(family.name) :]
            dp.time_unix_nano = self._ts(s, now)
            if suffix == "_count":
                dp.count = int(s.value)
            elif suffix == "_sum":
                dp.sum = s.value
            elif suffix == "_created":
                created = _ns(s.value, 0)
            elif "quantile" in s.labels:
                dp.quantile_values.add(quantile=float(s.labels["quantile"]), value=s.value)
        dp.start_time_unix_nano = self._start(
            family.name, key, dp.time_unix_nano, dp.count, created
        )
        _attributes(dp, labels)


def _attributes(dp: Any, labels: dict[str, str]) -> None:
    for k, v in labels.items():
        dp.attributes.add(key=k).value.string_value = v


def _exemplar(out: Any, exemplar: Any, default_ns: int) -> None:
    out.as_double = float(exemplar.value)
    out.time_unix_nano = _ns(exemplar.timestamp, default_ns)
    for k, v in exemplar.labels.items():
        if k in ("trace_id", "span_id"):
            try:
                raw = bytes.fromhex(v)
            except ValueError:
                raw = b""
            if len(raw) == (16 if k == "trace_id" else 8):
                setattr(out, k, raw)
                continue
        out.filtered_attributes.add(key=k).value.string_value = v
