"""The aggregation core shared by the ``agentmetrics`` and ``spanmetrics`` connectors.

A :class:`Metric` holds keyed series (a resource key and a tuple of attributes) of one
instrument: a monotonic sum (counter), an explicit-bucket histogram or a gauge. Each metric has
a cardinality limit: once reached, new attribute sets are recorded in one overflow series whose
only attribute is ``otel.metric.overflow = true`` (as the OpenTelemetry SDKs and the Collector
do), and every measurement routed there is counted. Histograms keep a few exemplars (trace and
span ids) per series. :class:`Aggregator` turns the metrics into an
``ExportMetricsServiceRequest`` in cumulative (default) or delta temporality and expires series
that stopped receiving data; :class:`FlushingConnector` runs the periodic flush.

The module name starts with ``_``: it is not a plugin.
"""

from __future__ import annotations

import asyncio
import bisect
import enum
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, MutableSet, Sequence
from typing import Any

from google.protobuf.internal.containers import RepeatedCompositeFieldContainer
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from pipeline import (
    Component,
    ConsumeError,
    Consumer,
    CreateSettings,
    Host,
    Metrics,
    Payload,
    Signal,
)
from pipeline.tasks import supervise
from plugins._labelbound import (
    MAX_LABEL_VALUE_CHARS,
    Attrs,
    CutCounter,
    cut_attrs,
    cut_resource,
    log_cut,
)

OVERFLOW_ATTRS: tuple[tuple[str, Any], ...] = (("otel.metric.overflow", True),)
OVERFLOW_RESOURCE = b""

SeriesKey = tuple[bytes, Attrs]


class Temporality(enum.IntEnum):
    """OTLP ``AggregationTemporality`` values."""

    DELTA = 1
    CUMULATIVE = 2


class Kind(enum.StrEnum):
    """The instrument a metric aggregates."""

    COUNTER = "counter"
    HISTOGRAM = "histogram"
    EXPONENTIAL_HISTOGRAM = "exponential_histogram"
    GAUGE = "gauge"


# exponential histograms (OpenTelemetry data model): bucket ``i`` at scale ``s`` holds the
# values in (2**(i / 2**s), 2**((i + 1) / 2**s)]
MAX_SCALE = 20
MIN_SCALE = -10
DEFAULT_MAX_SIZE = 160
_MIN_NORMAL = 2.0**-1022
_LOG2E = 1 / math.log(2)


def exponential_index(value: float, scale: int) -> int:
    """The index of the bucket holding ``value`` (finite, > 0) at ``scale``. Exact for powers
    of two (they close the bucket below: 1 is the upper bound of bucket -1) and for every value
    at scales <= 0 (from the binary exponent, ``math.frexp``); above scale 0 from the natural
    logarithm, as the OpenTelemetry specification describes. Values below the smallest normal
    double share its bucket; the index is capped at the last one a double can reach."""
    if value < _MIN_NORMAL:
        value = _MIN_NORMAL
    mantissa, exp = math.frexp(value)  # value = mantissa * 2**exp, 0.5 <= mantissa < 1
    power_of_two = mantissa == 0.5
    if scale <= 0:
        # value in [2**(exp-1), 2**exp): bucket exp-1 at scale 0, less one at a power of two
        return (exp - 1 - power_of_two) >> -scale
    if power_of_two:
        return ((exp - 1) << scale) - 1
    index = math.floor(math.log(value) * math.ldexp(_LOG2E, scale))
    return min(index, (1024 << scale) - 1)


class Series:
    """One series' state; a plain slotted object (one per attribute set, not per span)."""

    __slots__ = (
        "buckets",
        "count",
        "exemplar_next",
        "exemplars",
        "last_ns",
        "max",
        "min",
        "offset",
        "scale",
        "start_ns",
        "sum",
        "zero_count",
    )

    def __init__(self, start_ns: int, nbuckets: int) -> None:
        self.start_ns = start_ns
        self.last_ns = start_ns
        self.count: float = 0  # counter/gauge value, or histogram count
        self.sum = 0.0
        # explicit: per bucket; exponential: the positive buckets from index ``offset``
        self.buckets = [0] * nbuckets if nbuckets else []
        self.exemplars: list[tuple[int, float, bytes, bytes]] = []
        self.exemplar_next = 0
        # exponential histograms only
        self.scale = MAX_SCALE
        self.offset = 0
        self.zero_count = 0
        self.min = math.inf
        self.max = -math.inf

    def observe_exponential(self, value: float, max_size: int) -> None:
        """Record ``value`` (finite, >= 0) in an exponential histogram of at most ``max_size``
        buckets: zero in the zero bucket; otherwise, when its index and the buckets held span
        more than ``max_size`` indexes, first lower the scale (each step merges pairs of
        buckets) until they fit, as the Collector's histogram (go-expohisto) does."""
        if not value >= 0 or value == math.inf:
            raise ValueError(f"an exponential histogram records finite values >= 0, got {value}")
        self.count += 1
        self.sum += value
        if value < self.min:
            self.min = value
        if value > self.max:
            self.max = value
        if value == 0:
            self.zero_count += 1
            return
        index = exponential_index(value, self.scale)
        buckets = self.buckets
        if not buckets:
            self.offset = index
            buckets.append(1)
            return
        low = min(index, self.offset)
        high = max(index, self.offset + len(buckets) - 1)
        if high - low >= max_size:
            change = 0
            while high - low >= max_size:
                high >>= 1
                low >>= 1
                change += 1
            self._downscale(change)
            index = exponential_index(value, self.scale)
            buckets = self.buckets
        if index < self.offset:
            buckets[0:0] = [0] * (self.offset - index)
            self.offset = index
        elif index >= self.offset + len(buckets):
            buckets.extend([0] * (index - self.offset - len(buckets) + 1))
        buckets[index - self.offset] += 1

    def _downscale(self, change: int) -> None:
        """Lower the scale by ``change``: bucket ``i`` becomes bucket ``i >> change``."""
        self.scale -= change
        old, offset = self.buckets, self.offset
        new_offset = offset >> change
        merged = [0] * (((offset + len(old) - 1) >> change) - new_offset + 1)
        for i, n in enumerate(old):
            if n:
                merged[((offset + i) >> change) - new_offset] += n
        self.buckets = merged
        self.offset = new_offset

    def keep_exemplar(self, ex: tuple[int, float, bytes, bytes], max_exemplars: int) -> None:
        """Keep ``ex`` (time, value, trace id, span id): the latest ``max_exemplars`` stay."""
        if len(self.exemplars) < max_exemplars:
            self.exemplars.append(ex)
        else:
            self.exemplars[self.exemplar_next] = ex
            self.exemplar_next = (self.exemplar_next + 1) % max_exemplars


def _any_value(value: Any) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    return AnyValue(string_value=str(value))


class Metric:
    """Keyed series of one instrument, bounded by ``cardinality_limit`` (0: no limit)."""

    def __init__(
        self,
        name: str,
        kind: Kind,
        *,
        description: str = "",
        unit: str = "",
        bounds: Sequence[float] = (),
        cardinality_limit: int = 0,
        max_exemplars: int = 0,
        on_overflow: Callable[[str, int], None] | None = None,
        max_size: int = DEFAULT_MAX_SIZE,
    ) -> None:
        if max_size < 2:
            raise ValueError(f"max_size must be at least 2, got {max_size}")
        self.name = name
        self.kind = kind
        self.description = description
        self.unit = unit
        self.bounds = list(bounds)
        self.nbuckets = len(self.bounds) + 1 if kind is Kind.HISTOGRAM else 0
        self.exponential = kind is Kind.EXPONENTIAL_HISTOGRAM
        self.max_size = max_size  # exponential histograms: most buckets per data point
        self.cardinality_limit = cardinality_limit
        self.max_exemplars = max_exemplars
        self.series: dict[SeriesKey, Series] = {}
        self.overflowed = 0  # measurements recorded in the overflow series, ever
        self.truncated = 0  # measurements whose attribute values were cut, ever
        self._on_overflow = on_overflow
        self._touched: set[SeriesKey] = set()
        self.track_touched = True  # only needed for delta temporality (set by Aggregator)
        # the OTLP attributes of an attribute set, built once, not at every export (bounded:
        # rebuilt with the exported sets only when it holds far more)
        self._kvs: dict[Attrs, list[KeyValue]] = {}
        self._previous: dict[SeriesKey, Series] = {}  # a gauge's series before renew()

    def __len__(self) -> int:
        return len(self.series)

    def _series(self, key: SeriesKey, now_ns: int, n: int = 1) -> Series:
        """The series of ``key`` (created if new), or the overflow series if the limit is
        reached (``n``: how many measurements are about to be recorded in it)."""
        s = self.series.get(key)
        if s is not None:
            return s
        cut = cut_attrs(key[1])
        if cut is not None:  # recorded in the series of the values cut short
            self.truncated += n
            log_cut(f"metric {self.name}", n)
            key = (key[0], cut)
            if self.track_touched:
                self._touched.add(key)
            s = self.series.get(key)
            if s is not None:
                return s
        limit = self.cardinality_limit
        if limit and len(self.series) - ((OVERFLOW_RESOURCE, OVERFLOW_ATTRS) in self.series) >= (
            limit
        ):
            self.overflowed += n
            if self._on_overflow is not None:
                self._on_overflow(self.name, n)
            key = (OVERFLOW_RESOURCE, OVERFLOW_ATTRS)
            s = self.series.get(key)
            if s is not None:
                return s
        s = Series(now_ns, self.nbuckets)
        self.series[key] = s
        return s

    def add(self, resource: bytes, attrs: Attrs, value: float, now_ns: int) -> None:
        """Add to a counter."""
        key = (resource, attrs)
        s = self.series.get(key)
        if s is None:
            s = self._series(key, now_ns)
        s.count += value
        s.last_ns = now_ns
        if self.track_touched:
            self._touched.add(key)

    def add_count(self, resource: bytes, attrs: Attrs, n: int, now_ns: int) -> None:
        """Add ``n`` measurements of 1 to a counter at once (as ``n`` calls of :meth:`add`)."""
        key = (resource, attrs)
        s = self.series.get(key)
        if s is None:
            s = self._series(key, now_ns, n)
        s.count += n
        s.last_ns = now_ns
        if self.track_touched:
            self._touched.add(key)

    def observe_many(
        self, resource: bytes, attrs: Attrs, values: Sequence[float], now_ns: int
    ) -> None:
        """Record several histogram measurements without exemplars (as many calls of
        :meth:`observe` without ids)."""
        key = (resource, attrs)
        s = self.series.get(key)
        if s is None:
            s = self._series(key, now_ns, len(values))
        if self.exponential:
            for value in values:
                s.observe_exponential(value, self.max_size)
            s.last_ns = now_ns
            if self.track_touched:
                self._touched.add(key)
            return
        s.count += len(values)
        total = s.sum  # added one by one, as observe() does (same rounding)
        buckets = s.buckets
        bounds = self.bounds
        for value in values:
            total += value
            buckets[bisect.bisect_left(bounds, value)] += 1
        s.sum = total
        s.last_ns = now_ns
        if self.track_touched:
            self._touched.add(key)

    def set(self, resource: bytes, attrs: Attrs, value: float, now_ns: int) -> None:
        """Set a gauge."""
        key = (resource, attrs)
        s = self.series.get(key)
        if s is None:
            s = self._previous.pop(key, None)
            limit = self.cardinality_limit
            if s is not None and (
                not limit
                or len(self.series) - ((OVERFLOW_RESOURCE, OVERFLOW_ATTRS) in self.series) < limit
            ):
                # the object of the series before renew(), as _series would make it afresh
                s.start_ns = now_ns
                self.series[key] = s
            else:
                s = self._series(key, now_ns)
        s.count = value
        s.last_ns = now_ns
        self._touched.add(key)

    def observe(
        self,
        resource: bytes,
        attrs: Attrs,
        value: float,
        now_ns: int,
        trace_id: bytes = b"",
        span_id: bytes = b"",
    ) -> None:
        """Record a histogram measurement (with an exemplar when ids are given)."""
        key = (resource, attrs)
        s = self.series.get(key)
        if s is None:
            s = self._series(key, now_ns)
        if self.exponential:
            s.observe_exponential(value, self.max_size)
        else:
            s.count += 1
            s.sum += value
            s.buckets[bisect.bisect_left(self.bounds, value)] += 1
        s.last_ns = now_ns
        if self.max_exemplars and trace_id:
            s.keep_exemplar((now_ns, value, trace_id, span_id), self.max_exemplars)
        if self.track_touched:
            self._touched.add(key)

    def merge(
        self,
        resource: bytes,
        attrs: Attrs,
        count: int,
        total: float,
        buckets: Sequence[int],
        exemplars: Sequence[tuple[Any, ...]],
        now_ns: int,
        exemplars_seen: int = 0,
    ) -> None:
        """Record ``count`` histogram measurements aggregated elsewhere (their sum ``total``,
        per-bucket counts over this metric's bounds, and the latest exemplars as
        ``(value, trace_id, span_id)``, oldest first, any further items ignored), as that many
        :meth:`observe` calls would. ``exemplars_seen``: how many of the measurements had an
        exemplar (when more than given, at least ``max_exemplars`` are given: the ring of
        exemplars then ends as that many calls leave it, position included; 0: as many as
        given)."""
        if self.exponential:
            raise TypeError("merge() takes explicit-bucket counts, not an exponential histogram")
        key = (resource, attrs)
        s = self.series.get(key)
        if s is None:
            s = self._series(key, now_ns, count)
        s.count += count
        s.sum += total
        mine = s.buckets
        for i, n in enumerate(buckets):
            if n:
                mine[i] += n
        s.last_ns = now_ns
        if self.max_exemplars:
            skipped = exemplars_seen - sum(1 for e in exemplars if e[1])
            if skipped > 0:
                # the writes of the exemplars not given: later writes overwrite every slot
                # they would have filled, only the ring's size and position remain
                room = min(skipped, self.max_exemplars - len(s.exemplars))
                s.exemplars.extend([(now_ns, 0.0, b"", b"")] * room)
                s.exemplar_next = (s.exemplar_next + skipped - room) % self.max_exemplars
            for value, trace_id, span_id, *_ in exemplars:  # (and what the caller keeps)
                if trace_id:
                    s.keep_exemplar((now_ns, value, trace_id, span_id), self.max_exemplars)
        if self.track_touched:
            self._touched.add(key)

    def clear(self) -> None:
        self.series.clear()
        self._previous = {}
        self._touched.clear()

    def renew(self) -> None:
        """As :meth:`clear`, for a gauge about to be set again: the series are forgotten (the
        next export holds those set from now on, in their order), their objects reused by
        :meth:`set` (not made again at every flush)."""
        self._previous = self.series
        self.series = {}
        self._touched.clear()

    def expire(self, cutoff_ns: int) -> int:
        """Forget series not updated since ``cutoff_ns``; returns how many."""
        stale = [k for k, s in self.series.items() if s.last_ns < cutoff_ns]
        for k in stale:
            del self.series[k]
        return len(stale)

    # -- export ----------------------------------------------------------------------------------
    def export(
        self,
        now_ns: int,
        temporality: Temporality,
        out: Callable[[bytes], RepeatedCompositeFieldContainer[metrics_pb2.Metric]],
        last_flush: dict[SeriesKey, int] | None = None,
        exported: MutableSet[SeriesKey] | None = None,
    ) -> int:
        """Add this metric's data points, per resource key, to the repeated ``Metric`` field
        ``out(resource key)`` returns (built in place); returns the number of points. In delta
        temporality only series touched since the last export are written, then forgotten; a
        point starts at ``last_flush[key]`` when there is one (the time of the series' previous
        point), else when the series got its first measurement, and the keys written are added
        to ``exported``."""
        if self.kind is Kind.GAUGE or temporality is Temporality.CUMULATIVE:
            keys: Iterable[SeriesKey] = list(self.series)
        else:
            keys = [k for k in self.series if k in self._touched]
        by_resource: dict[bytes, metrics_pb2.Metric] = {}
        points = 0
        delta = temporality is Temporality.DELTA and self.kind is not Kind.GAUGE
        kv_cache = self._kvs
        for key in keys:
            s = self.series[key]
            resource, attrs = key
            start_ns = s.start_ns
            if delta:
                if last_flush is not None:
                    start_ns = last_flush.get(key, start_ns)
                if exported is not None:
                    exported.add(key)
            m = by_resource.get(resource)
            if m is None:
                made: metrics_pb2.Metric = out(resource).add(
                    name=self.name, description=self.description, unit=self.unit
                )
                m = made
                if self.kind is Kind.COUNTER:
                    m.sum.is_monotonic = True
                    m.sum.aggregation_temporality = temporality  # type: ignore[assignment]
                elif self.kind is Kind.HISTOGRAM:
                    m.histogram.aggregation_temporality = temporality  # type: ignore[assignment]
                elif self.exponential:
                    m.exponential_histogram.aggregation_temporality = temporality  # type: ignore[assignment]
                else:
                    m.gauge.SetInParent()
                by_resource[resource] = m
            kvs = kv_cache.get(attrs)
            if kvs is None:
                kvs = kv_cache[attrs] = [KeyValue(key=k, value=_any_value(v)) for k, v in attrs]
            if self.kind is Kind.HISTOGRAM:
                dp = m.histogram.data_points.add(
                    start_time_unix_nano=start_ns,
                    time_unix_nano=now_ns,
                    count=int(s.count),
                    sum=s.sum,
                    bucket_counts=s.buckets,
                    explicit_bounds=self.bounds,
                    attributes=kvs,
                )
                for t, v, trace_id, span_id in s.exemplars:
                    dp.exemplars.add(
                        time_unix_nano=t, as_double=v, trace_id=trace_id, span_id=span_id
                    )
            elif self.exponential:
                count = int(s.count)
                edp = m.exponential_histogram.data_points.add(
                    start_time_unix_nano=start_ns,
                    time_unix_nano=now_ns,
                    count=count,
                    sum=s.sum,
                    # only zeros: any scale would do, 0 (as the Collector)
                    scale=s.scale if count != s.zero_count else 0,
                    zero_count=s.zero_count,
                    attributes=kvs,
                )
                edp.positive.offset = s.offset
                edp.positive.bucket_counts.extend(s.buckets)
                edp.negative.SetInParent()
                if count:
                    edp.min = s.min
                    edp.max = s.max
                for t, v, trace_id, span_id in s.exemplars:
                    edp.exemplars.add(
                        time_unix_nano=t, as_double=v, trace_id=trace_id, span_id=span_id
                    )
            elif self.kind is Kind.COUNTER:
                ndp = m.sum.data_points.add(
                    start_time_unix_nano=start_ns, time_unix_nano=now_ns, attributes=kvs
                )
                if isinstance(s.count, int):
                    ndp.as_int = s.count
                else:
                    ndp.as_double = s.count
            else:
                m.gauge.data_points.add(time_unix_nano=now_ns, as_double=s.count, attributes=kvs)
            points += 1
        if len(kv_cache) > 2 * points + 1024:
            live = {k[1] for k in keys}
            self._kvs = {a: kvs for a, kvs in kv_cache.items() if a in live}
        if delta:
            for key in keys:
                del self.series[key]
        self._touched.clear()
        return points


class Aggregator:
    """A set of metrics and the resources their series belong to."""

    def __init__(
        self,
        scope_name: str,
        temporality: Temporality = Temporality.CUMULATIVE,
        expiration_s: float = 0.0,
        resource_key_attributes: Sequence[str] = (),
        delta_start_cache_size: int = 0,
    ) -> None:
        self.scope_name = scope_name
        self.temporality = temporality
        self.expiration_ns = int(expiration_s * 1e9)
        self.metrics: list[Metric] = []
        self.resources: dict[bytes, Resource] = {OVERFLOW_RESOURCE: Resource()}
        # only these resource attributes identify a resource (empty: all of them)
        self.resource_key_attributes = frozenset(resource_key_attributes)
        # delta: series key -> time of its last point (the start of its next one), the
        # least recently written evicted first; 0 entries: points start at their first
        # measurement
        self.delta_start_cache_size = delta_start_cache_size
        self._last_flush: OrderedDict[SeriesKey, int] = OrderedDict()
        self.delta_start_evictions = 0
        self.truncated = 0  # resource attribute values cut, ever

    def add_metric(self, metric: Metric) -> Metric:
        metric.track_touched = self.temporality is Temporality.DELTA
        self.metrics.append(metric)
        return metric

    def resource_key(self, resource: Any) -> bytes:
        """A key for a resource message, remembered for export: its encoding, or with
        ``resource_key_attributes`` the encoding of just those attributes (sorted by name), so
        resources differing only in other attributes (``process.pid``...) share their series.
        The resource exported for a key is the first one seen with it (whole), as the
        Collector's spanmetrics connector does; in delta temporality the first one seen since
        the last flush (see :meth:`keep_resource`)."""
        copy: Resource | None = None
        if resource.ByteSize() > MAX_LABEL_VALUE_CHARS:
            # perhaps a long value: the key and the resource kept are those of the values cut
            # short (resources differing only past the bound share their series)
            copy = Resource()
            copy.CopyFrom(resource)
            n = cut_resource(copy)
            if n:
                self._count_cut(n)
                resource = copy
        keep = self.resource_key_attributes
        if keep:
            kept = sorted(
                (kv for kv in resource.attributes if kv.key in keep), key=lambda kv: kv.key
            )
            key = bytes(Resource(attributes=kept).SerializeToString(deterministic=True))
        else:
            key = bytes(resource.SerializeToString(deterministic=True))
        if key not in self.resources:
            if copy is None:
                copy = Resource()
                copy.CopyFrom(resource)
            self.resources[key] = copy
        return key

    def _count_cut(self, n: int) -> None:
        self.truncated += n
        log_cut(f"resource of {self.scope_name or 'a connector'}", n)

    def keep_resource(self, key: bytes, raw: bytes) -> None:
        """Remember the encoded resource ``raw`` for ``key`` (from :meth:`resource_key`) unless
        one is remembered already: for callers that cache keys, since a flush or expiry may
        forget the resources that no series refers to any more."""
        if key not in self.resources:
            resource = Resource.FromString(raw)
            n = cut_resource(resource)
            if n:
                self._count_cut(n)
            self.resources[key] = resource

    def _remember_flush(self, keys: Iterable[SeriesKey], now_ns: int) -> None:
        """The next points of ``keys`` start at ``now_ns`` (as the Collector's spanmetrics
        connector: an uninterrupted delta series is (T1, T2), (T2, T3)...); beyond the cache
        size the least recently written series are forgotten (their next point starts at its
        first measurement: a reset for a delta-to-cumulative converter)."""
        cache = self._last_flush
        for key in keys:
            cache[key] = now_ns
            cache.move_to_end(key)
        while len(cache) > self.delta_start_cache_size:
            cache.popitem(last=False)
            self.delta_start_evictions += 1

    def _forget_unused_resources(self) -> None:
        live = {OVERFLOW_RESOURCE}
        for m in self.metrics:
            live.update(k[0] for k in m.series)
        for key in [k for k in self.resources if k not in live]:
            del self.resources[key]

    def expire(self, now_ns: int) -> int:
        """Forget series (and resources) that stopped receiving data."""
        if not self.expiration_ns:
            return 0
        cutoff = now_ns - self.expiration_ns
        n = sum(m.expire(cutoff) for m in self.metrics if m.kind is not Kind.GAUGE)
        if n:
            self._forget_unused_resources()
        return n

    def build(self, now_ns: int | None = None) -> tuple[ExportMetricsServiceRequest, int]:
        """The request holding every metric's points (and the number of points)."""
        now_ns = now_ns or time.time_ns()
        self.expire(now_ns)
        track = self.temporality is Temporality.DELTA and self.delta_start_cache_size > 0
        last_flush = self._last_flush if track else None
        exported: set[SeriesKey] | None = set() if track else None
        req = ExportMetricsServiceRequest()
        resource_metrics = req.resource_metrics
        containers: dict[bytes, RepeatedCompositeFieldContainer[metrics_pb2.Metric]] = {}

        def container(key: bytes) -> RepeatedCompositeFieldContainer[metrics_pb2.Metric]:
            """The metrics of resource ``key`` (a resource is added where its first metric
            is: the metrics are built in place, not copied in)."""
            got = containers.get(key)
            if got is None:
                rm = resource_metrics.add()
                rm.resource.CopyFrom(self.resources.get(key, Resource()))
                sm = rm.scope_metrics.add()
                sm.scope.name = self.scope_name
                got = containers[key] = sm.metrics
            return got

        points = sum(
            m.export(now_ns, self.temporality, container, last_flush, exported)
            for m in self.metrics
        )
        if exported:
            self._remember_flush(exported, now_ns)
        if self.temporality is Temporality.DELTA and self.resource_key_attributes:
            # the next interval's resource of a key is the first one seen in it (as the
            # Collector, which starts afresh after each delta flush)
            self._forget_unused_resources()
        return req, points


class FlushingConnector(Component):
    """Base of a traces-to-metrics connector: aggregates in ``consume``; every
    ``flush_interval`` (and at shutdown) sends the aggregator's metrics to the next consumer.

    Subclasses implement ``consume`` and may override :meth:`before_flush` (to set gauges).
    Self-telemetry: ``otelcol_connector_aggregation_series{connector, metric}`` (live series),
    ``otelcol_connector_aggregation_overflow_measurements_total{connector, metric}`` (measurements
    recorded in an overflow series because the metric's cardinality limit was reached), and
    ``otelcol_connector_dropped_items_total`` for data points a flush could not deliver,
    ``otelcol_label_values_truncated_total{kind="connector", component}`` for attribute and
    resource values cut to :data:`plugins._labelbound.MAX_LABEL_VALUE_CHARS` (counted at each
    flush).
    """

    mutates_data = False

    def __init__(
        self,
        settings: CreateSettings,
        next_consumer: Consumer,
        aggregator: Aggregator,
        flush_interval: float,
    ) -> None:
        self.settings = settings
        self.next = next_consumer
        self.aggregator = aggregator
        self.flush_interval = flush_interval
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._done = False
        service = settings.telemetry.service
        self._overflow_counter = service.counter(
            "otelcol_connector_aggregation_overflow_measurements",
            "Measurements recorded in a metric's overflow series (otel.metric.overflow=true) "
            "because its cardinality limit was reached.",
            ("connector", "metric"),
        )
        self._series_gauge = service.gauge(
            "otelcol_connector_aggregation_series",
            "Live series per metric of an aggregating connector.",
            ("connector", "metric"),
        )
        self._flushes = service.counter(
            "otelcol_connector_aggregation_flushes",
            "Flushes of an aggregating connector, by result.",
            ("connector", "result"),
        )
        # attribute and resource values cut to the label bound (logged where they are cut,
        # counted here at each flush)
        self._cuts = CutCounter(service, "connector", settings.name)
        self._cuts_counted = 0

    def count_overflow(self, metric: str, n: int) -> None:
        """Passed to :class:`Metric` as ``on_overflow``."""
        self._overflow_counter.labels(self.settings.name, metric).inc(n)

    async def consume(self, data: Payload) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def before_flush(self, now_ns: int) -> None:
        """Hook to compute derived gauges right before a flush."""

    async def prepare_flush(self, now_ns: int) -> None:
        """Like :meth:`before_flush` (which it calls), for a hook that must wait (for the
        state of the other worker processes: ``pipeline.workers``)."""
        self.before_flush(now_ns)

    async def flush(self) -> int:
        """Build and send the metrics now; returns the number of data points sent."""
        now_ns = time.time_ns()
        await self.prepare_flush(now_ns)
        req, points = self.aggregator.build(now_ns)
        for m in self.aggregator.metrics:
            self._series_gauge.labels(self.settings.name, m.name).set(len(m))
        cuts = self.aggregator.truncated + sum(m.truncated for m in self.aggregator.metrics)
        if cuts > self._cuts_counted:
            self._cuts(cuts - self._cuts_counted, log=False)
            self._cuts_counted = cuts
        if not points:
            return 0
        try:
            await self.next.consume(Metrics.from_message(req, item_count=points))
        except ConsumeError as exc:
            self._flushes.labels(self.settings.name, "refused").inc()
            self.settings.telemetry.dropped(Signal.METRICS, points, "refused")
            self.settings.logger.warning(
                "the next component refused a metrics flush: %s (cumulative series are sent "
                "again at the next flush)",
                exc,
                extra={"data_points": points},
            )
            return 0
        self._flushes.labels(self.settings.name, "ok").inc()
        return points

    async def _run(self) -> None:
        while not self._stop.is_set():
            try:
                async with asyncio.timeout(self.flush_interval):
                    await self._stop.wait()
            except TimeoutError:
                await self.flush()

    async def start(self, host: Host) -> None:
        if self._task is None and self.flush_interval > 0:
            self._task = supervise(self.settings, host, "flush", self._run)

    async def shutdown(self) -> None:
        """Stops the timer and flushes once more."""
        if self._done:
            return
        if self._task is None:
            await self.flush()  # never started: send what there is, stay startable
            return
        self._done = True
        self._stop.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        await self.flush()
