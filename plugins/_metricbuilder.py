"""Building OTLP metrics from values the gateway measures itself (host metrics, health checks).

Receivers that produce metrics (rather than relay them) assemble an
``ExportMetricsServiceRequest`` with these helpers: one :class:`ScopeWriter` per
(resource, instrumentation scope), gauges and sums added point by point. Integer values are
written as ``as_int``, floats as ``as_double``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    AGGREGATION_TEMPORALITY_CUMULATIVE,
    Metric,
    NumberDataPoint,
)

from pipeline import __version__

Attributes = Mapping[str, str | int | float | bool]
Point = tuple[int | float, Attributes]


def set_attributes(target: Any, attributes: Attributes) -> None:
    """Append ``attributes`` to a repeated ``KeyValue`` field."""
    for key, value in attributes.items():
        kv: KeyValue = target.add()
        kv.key = key
        if isinstance(value, bool):
            kv.value.bool_value = value
        elif isinstance(value, int):
            kv.value.int_value = value
        elif isinstance(value, float):
            kv.value.double_value = value
        else:
            kv.value.string_value = str(value)


def _fill_point(
    dp: NumberDataPoint, value: int | float, attrs: Attributes, start_ns: int, time_ns: int
) -> None:
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, int):
        dp.as_int = value
    else:
        dp.as_double = float(value)
    set_attributes(dp.attributes, attrs)
    if start_ns:
        dp.start_time_unix_nano = start_ns
    dp.time_unix_nano = time_ns


class ScopeWriter:
    """Adds metrics to one ``ScopeMetrics`` of one ``ResourceMetrics``."""

    def __init__(self, scope_metrics: Any, time_ns: int) -> None:
        self._scope_metrics = scope_metrics
        self.time_ns = time_ns

    def _metric(self, name: str, unit: str, description: str) -> Metric:
        metric: Metric = self._scope_metrics.metrics.add()
        metric.name = name
        metric.unit = unit
        metric.description = description
        return metric

    def gauge(
        self,
        name: str,
        unit: str,
        description: str,
        points: Iterable[Point],
        start_ns: int = 0,
    ) -> int:
        """A gauge with one data point per ``(value, attributes)``; returns the point count."""
        points = list(points)
        if not points:
            return 0
        metric = self._metric(name, unit, description)
        for value, attrs in points:
            _fill_point(metric.gauge.data_points.add(), value, attrs, start_ns, self.time_ns)
        return len(points)

    def sum(
        self,
        name: str,
        unit: str,
        description: str,
        points: Iterable[Point],
        *,
        monotonic: bool,
        start_ns: int,
    ) -> int:
        """A cumulative sum (``monotonic`` for counters); returns the point count."""
        points = list(points)
        if not points:
            return 0
        metric = self._metric(name, unit, description)
        metric.sum.aggregation_temporality = AGGREGATION_TEMPORALITY_CUMULATIVE
        metric.sum.is_monotonic = monotonic
        for value, attrs in points:
            _fill_point(metric.sum.data_points.add(), value, attrs, start_ns, self.time_ns)
        return len(points)


class RequestBuilder:
    """Assembles one ``ExportMetricsServiceRequest``."""

    def __init__(self) -> None:
        self.request = ExportMetricsServiceRequest()

    def scope(
        self,
        scope_name: str,
        time_ns: int,
        resource: Attributes | None = None,
        version: str = __version__,
    ) -> ScopeWriter:
        """A writer for a new resource (with ``resource`` attributes) and scope."""
        rm = self.request.resource_metrics.add()
        set_attributes(rm.resource.attributes, resource or {})
        sm = rm.scope_metrics.add()
        sm.scope.name = scope_name
        sm.scope.version = version
        return ScopeWriter(sm, time_ns)

    def point_count(self) -> int:
        """Data points written so far."""
        total = 0
        for rm in self.request.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    kind = m.WhichOneof("data")
                    if kind is not None:
                        total += len(getattr(m, kind).data_points)
        return total

    def prune(self) -> None:
        """Drop resources that ended up with no metric."""
        keep = [
            rm
            for rm in self.request.resource_metrics
            if any(len(sm.metrics) for sm in rm.scope_metrics)
        ]
        if len(keep) != len(self.request.resource_metrics):
            copies = [type(rm)() for rm in keep]
            for c, rm in zip(copies, keep, strict=True):
                c.CopyFrom(rm)
            del self.request.resource_metrics[:]
            self.request.resource_metrics.extend(copies)
