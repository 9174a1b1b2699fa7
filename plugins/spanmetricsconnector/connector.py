"""The ``spanmetrics`` connector: ``<namespace>.calls`` (sum) and ``<namespace>.duration``
(histogram, unit ``ms`` or ``s``) per service.name, span.name, span.kind, status.code and the
configured dimensions, with the Collector's attribute values (``SPAN_KIND_SERVER``,
``STATUS_CODE_ERROR``), so Jaeger's monitor tab and existing dashboards work: through the
Prometheus translation they are ``traces_span_metrics_calls_total`` and
``traces_span_metrics_duration_milliseconds``."""

from __future__ import annotations

import time
from typing import Any

from pipeline import Consumer, CreateSettings, Payload
from plugins._agentconv import attr_str
from plugins._metricsagg import Aggregator, FlushingConnector, Kind, Metric, Temporality
from plugins.spanmetricsconnector.config import SpanMetricsConfig

SPAN_KINDS = (
    "SPAN_KIND_UNSPECIFIED",
    "SPAN_KIND_INTERNAL",
    "SPAN_KIND_SERVER",
    "SPAN_KIND_CLIENT",
    "SPAN_KIND_PRODUCER",
    "SPAN_KIND_CONSUMER",
)
STATUS_CODES = ("STATUS_CODE_UNSET", "STATUS_CODE_OK", "STATUS_CODE_ERROR")


class SpanMetricsConnector(FlushingConnector):
    """Aggregates R.E.D. metrics from spans."""

    def __init__(
        self, settings: CreateSettings, config: SpanMetricsConfig, next_consumer: Consumer
    ) -> None:
        temporality = (
            Temporality.DELTA
            if config.aggregation_temporality == "AGGREGATION_TEMPORALITY_DELTA"
            else Temporality.CUMULATIVE
        )
        agg = Aggregator("pipeline.spanmetrics", temporality, config.metrics_expiration)
        super().__init__(settings, next_consumer, agg, config.metrics_flush_interval)
        self.config = config
        prefix = f"{config.namespace}." if config.namespace else ""
        limit = config.aggregation_cardinality_limit
        self.calls = agg.add_metric(
            Metric(
                f"{prefix}calls",
                Kind.COUNTER,
                description="Number of spans, by dimensions (errors have status.code ERROR).",
                cardinality_limit=limit,
                on_overflow=self.count_overflow,
            )
        )
        unit = config.histogram.unit
        scale = 1000.0 if unit == "ms" else 1.0
        self.duration: Metric | None = None
        if not config.histogram.disable:
            self.duration = agg.add_metric(
                Metric(
                    f"{prefix}duration",
                    Kind.HISTOGRAM,
                    description="Span duration, by dimensions.",
                    unit=unit,
                    bounds=[b * scale for b in config.histogram.explicit.buckets],
                    cardinality_limit=limit,
                    max_exemplars=(
                        config.exemplars.max_per_data_point if config.exemplars.enabled else 0
                    ),
                    on_overflow=self.count_overflow,
                )
            )
        self._divisor = 1e6 if unit == "ms" else 1e9
        excluded = set(config.exclude_dimensions)
        self._with = tuple(
            d not in excluded for d in ("service.name", "span.name", "span.kind", "status.code")
        )
        self._dimensions = [(d.name, d.default) for d in config.dimensions]

    async def consume(self, data: Payload) -> None:
        msg = data.message()
        now_ns = time.time_ns()
        agg = self.aggregator
        calls = self.calls
        duration = self.duration
        divisor = self._divisor
        with_service, with_name, with_kind, with_status = self._with
        dimensions = self._dimensions
        exemplars = duration is not None and duration.max_exemplars > 0
        for rs in msg.resource_spans:
            resource_key = agg.resource_key(rs.resource)
            resource_attrs: dict[str, Any] | None = None
            service = ""
            for kv in rs.resource.attributes:
                if kv.key == "service.name":
                    service = kv.value.string_value
                    break
            if dimensions:
                resource_attrs = {kv.key: kv.value for kv in rs.resource.attributes}
            for ss in rs.scope_spans:
                for span in ss.spans:
                    key: list[tuple[str, Any]] = []
                    if with_service:
                        key.append(("service.name", service))
                    if with_name:
                        key.append(("span.name", span.name))
                    if with_kind:
                        key.append(("span.kind", SPAN_KINDS[span.kind] if span.kind < 6 else ""))
                    if with_status:
                        code = span.status.code
                        key.append(("status.code", STATUS_CODES[code] if code < 3 else ""))
                    if dimensions:
                        assert resource_attrs is not None
                        span_attrs = {kv.key: kv.value for kv in span.attributes}
                        for name, default in dimensions:
                            value = span_attrs.get(name)
                            if value is None:
                                value = resource_attrs.get(name)
                            if value is not None:
                                key.append((name, attr_str(value)))
                            elif default is not None:
                                key.append((name, default))
                    attrs = tuple(key)
                    calls.add(resource_key, attrs, 1, now_ns)
                    if duration is not None:
                        value = (span.end_time_unix_nano - span.start_time_unix_nano) / divisor
                        if exemplars:
                            duration.observe(
                                resource_key, attrs, value, now_ns, span.trace_id, span.span_id
                            )
                        else:
                            duration.observe(resource_key, attrs, value, now_ns)
