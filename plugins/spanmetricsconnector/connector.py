"""The ``spanmetrics`` connector: ``<namespace>.calls`` (sum) and ``<namespace>.duration``
(histogram, unit ``ms`` or ``s``) per service.name, span.name, span.kind, status.code and the
configured dimensions, with the Collector's attribute values (``SPAN_KIND_SERVER``,
``STATUS_CODE_ERROR``), so Jaeger's monitor tab and existing dashboards work: through the
Prometheus translation they are ``traces_span_metrics_calls_total`` and
``traces_span_metrics_duration_milliseconds``."""

from __future__ import annotations

import time
from typing import Any

from google.protobuf.message import DecodeError
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from pipeline import Consumer, CreateSettings, Payload
from plugins._agentconv import attr_str
from plugins._metricsagg import (
    DEFAULT_MAX_SIZE,
    Aggregator,
    FlushingConnector,
    Kind,
    Metric,
    Temporality,
)
from plugins._native import load
from plugins._spanview import TracesView, cached_str
from plugins.spanmetricsconnector.config import SpanMetricsConfig

# the cache of decoded resources: at most this many, holding at most this many bytes (each
# entry's encoded resource, its dict key, plus its series key and its attributes' text)
RESOURCE_CACHE_ENTRIES = 1000
RESOURCE_CACHE_BYTES = 16 << 20

SPAN_KINDS = (
    "SPAN_KIND_UNSPECIFIED",
    "SPAN_KIND_INTERNAL",
    "SPAN_KIND_SERVER",
    "SPAN_KIND_CLIENT",
    "SPAN_KIND_PRODUCER",
    "SPAN_KIND_CONSUMER",
)
KIND_PAIRS = tuple(("span.kind", k) for k in SPAN_KINDS)
STATUS_CODES = ("STATUS_CODE_UNSET", "STATUS_CODE_OK", "STATUS_CODE_ERROR")
STATUS_PAIRS = tuple(("status.code", c) for c in STATUS_CODES)


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
        agg = Aggregator(
            "pipeline.spanmetrics",
            temporality,
            config.metrics_expiration,
            resource_key_attributes=config.resource_metrics_key_attributes,
            delta_start_cache_size=config.timestamp_cache_size,
        )
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
        exponential = config.histogram.exponential
        if not config.histogram.disable:
            self.duration = agg.add_metric(
                Metric(
                    f"{prefix}duration",
                    Kind.EXPONENTIAL_HISTOGRAM if exponential else Kind.HISTOGRAM,
                    description="Span duration, by dimensions.",
                    unit=unit,
                    bounds=[] if exponential else [b * scale for b in config.histogram.buckets],
                    max_size=exponential.max_size if exponential else DEFAULT_MAX_SIZE,
                    cardinality_limit=limit,
                    max_exemplars=(
                        config.exemplars.max_per_data_point if config.exemplars.enabled else 0
                    ),
                    on_overflow=self.count_overflow,
                )
            )
        self.events: Metric | None = None
        if config.events.enabled:
            self.events = agg.add_metric(
                Metric(
                    f"{prefix}events",
                    Kind.COUNTER,
                    description="Number of span events, by dimensions.",
                    cardinality_limit=limit,
                    on_overflow=self.count_overflow,
                )
            )
        self._divisor = 1e6 if unit == "ms" else 1e9
        excluded = set(config.exclude_dimensions)
        self._with = tuple(
            d not in excluded for d in ("service.name", "span.name", "span.kind", "status.code")
        )
        self._dimensions = [(d.name, d.default) for d in config.dimensions]
        # the events metric: the span dimensions, then the event dimensions (a name in both
        # appears once, where the span dimension is, with the event dimension's default)
        event_dims = dict(self._dimensions)
        event_dims.update((d.name, d.default) for d in config.events.dimensions)
        self._event_dimensions = list(event_dims.items())
        self._common = sum(self._with)
        self._names: dict[bytes, tuple[str, str]] = {}
        self._statuses: dict[bytes, tuple[str, str]] = {}
        self._resources: dict[bytes, tuple[bytes, str, dict[str, str]]] = {}
        self._resources_bytes = 0  # what the cached entries hold (see RESOURCE_CACHE_BYTES)
        self._keys: dict[tuple[bytes, bytes, int, bytes], tuple[tuple[str, Any], ...]] = {}
        self._scanner = self._native_scanner()

    def _native_scanner(self) -> Any:
        """The C scanner (``plugins/_native/_spanscan.c``) for this config, or ``None`` (not
        built, disabled, or a config beyond its limits)."""
        if self.events is not None or (self.duration is not None and self.duration.exponential):
            return None  # events and exponential histograms are on the Python path only
        native = load("_spanscan")
        duration = self.duration
        max_exemplars = duration.max_exemplars if duration is not None else 0
        if (
            native is None
            or len(self._dimensions) > native.MAX_DIMS
            or max_exemplars > native.MAX_EXEMPLARS
        ):
            return None
        return native.Scanner(
            tuple(name for name, _ in self._dimensions),
            self._with,
            (*KIND_PAIRS, ("span.kind", "")),
            (*STATUS_PAIRS, ("status.code", "")),
            duration.bounds if duration is not None else None,
            self._divisor,
            max_exemplars,
            self._native_resource,
        )

    def _native_resource(self, raw: bytes) -> tuple[bytes, str, tuple[str | None, ...]]:
        """For the C scanner, once per ``ResourceSpans``: the resource key, service.name and
        each dimension's value when a span lacks the attribute (the resource attribute, else
        the default, else ``None``: omitted)."""
        key, service, attrs = self._resource(raw)
        return (
            key,
            service,
            tuple(attrs.get(d, default) for d, default in self._dimensions),
        )

    async def consume(self, data: Payload) -> None:
        """With the C scanner, the request is walked once in C and its spans arrive aggregated
        per series (the resource is read here, once per ``ResourceSpans``). Otherwise (and
        when the scanner refuses the request: the Python path then reports the error; and
        always with ``events`` or exponential histograms, which the scanner lacks) it is
        read through :data:`plugins._spanview.TracesView`: resource, status and attributes stay
        encoded; the attribute set of a span is built once per distinct (resource, name, kind,
        status) when no dimension is configured (small caches), and the series are updated
        once per distinct attribute set of a request (without exemplars)."""
        raw = data.to_bytes()
        now_ns = time.time_ns()
        calls = self.calls
        duration = self.duration
        events = self.events
        if self._scanner is not None:
            try:
                resources = self._scanner.scan(raw)
            except (ValueError, DecodeError):
                pass
            else:
                for resource_key, series in resources:
                    for attrs, count, total, buckets, exemplars, seen in series:
                        calls.add_count(resource_key, attrs, count, now_ns)
                        if duration is not None:
                            duration.merge(
                                resource_key, attrs, count, total, buckets, exemplars, now_ns, seen
                            )
                return
        view = TracesView.FromString(raw)
        divisor = self._divisor
        exemplars = duration is not None and duration.max_exemplars > 0
        # an exponential histogram takes no negative value: a span ending before it started
        # lasted 0 (as in the Collector)
        clamp = duration is not None and duration.exponential
        plain = not self._dimensions
        if len(self._names) > 10_000:
            self._names.clear()
        if len(self._keys) > 10_000:
            self._keys.clear()
        keys = self._keys
        # Everything is read first and the series are updated only once the whole request
        # was read: a request that fails to decode half-way changes nothing (consume is atomic).
        observed: list[tuple[bytes, dict[Any, list[float]], list[tuple[Any, ...]]]] = []
        event_keys: list[tuple[bytes, tuple[tuple[str, Any], ...]]] = []
        for rs in view.resource_spans:
            resource = self._resource(rs.resource)
            resource_key = resource[0]
            # attribute set -> durations of the spans of this request (in order of arrival)
            pending: dict[tuple[tuple[str, Any], ...], list[float]] = {}
            singles: list[tuple[Any, ...]] = []  # with exemplars: one observation per span
            for ss in rs.scope_spans:
                for span in ss.spans:
                    if plain:
                        cache_key = (resource_key, span.name, span.kind, span.status)
                        attrs = keys.get(cache_key)
                        if attrs is None:
                            attrs = keys[cache_key] = self._attrs(span, resource)
                    else:
                        attrs = self._attrs(span, resource)
                    if events is not None and span.events:
                        event_keys.extend(self._event_keys(span, resource, attrs))
                    value = (span.end_time_unix_nano - span.start_time_unix_nano) / divisor
                    if clamp and value < 0:
                        value = 0.0
                    if exemplars:
                        singles.append((attrs, value, span.trace_id, span.span_id))
                        continue
                    values = pending.get(attrs)
                    if values is None:
                        pending[attrs] = [value]
                    else:
                        values.append(value)
            observed.append((resource_key, pending, singles))
        for resource_key, pending, singles in observed:
            for attrs, value, trace_id, span_id in singles:
                assert duration is not None
                calls.add(resource_key, attrs, 1, now_ns)
                duration.observe(resource_key, attrs, value, now_ns, trace_id, span_id)
            for attrs, values in pending.items():
                calls.add_count(resource_key, attrs, len(values), now_ns)
                if duration is not None:
                    duration.observe_many(resource_key, attrs, values, now_ns)
        if events is not None:
            for resource_key, key in event_keys:
                events.add_count(resource_key, key, 1, now_ns)

    def _attrs(
        self, span: Any, resource: tuple[bytes, str, dict[str, str]]
    ) -> tuple[tuple[str, Any], ...]:
        """The attribute set of a span's series."""
        with_service, with_name, with_kind, with_status = self._with
        key: list[tuple[str, Any]] = []
        if with_service:
            key.append(("service.name", resource[1]))
        if with_name:
            raw_name = span.name
            name_pair = self._names.get(raw_name)
            if name_pair is None:
                name_pair = ("span.name", raw_name.decode("utf-8", "replace"))
                self._names[raw_name] = name_pair
            key.append(name_pair)
        if with_kind:
            kind = span.kind
            key.append(KIND_PAIRS[kind] if 0 <= kind < 6 else ("span.kind", ""))
        if with_status:
            raw_status = span.status
            status_pair = self._statuses.get(raw_status)
            if status_pair is None:
                code = Status.FromString(raw_status).code
                status_pair = ("status.code", STATUS_CODES[code] if 0 <= code < 3 else "")
                if len(self._statuses) < 1000:
                    self._statuses[raw_status] = status_pair
            key.append(status_pair)
        if self._dimensions:
            span_attrs = span.attributes
            resource_attrs = resource[2]
            for dim, default in self._dimensions:
                value = span_attrs.get(dim)
                if value is not None:
                    key.append((dim, cached_str(value)))
                elif dim in resource_attrs:
                    key.append((dim, resource_attrs[dim]))
                elif default is not None:
                    key.append((dim, default))
        return tuple(key)

    def _event_keys(
        self,
        span: Any,
        resource: tuple[bytes, str, dict[str, str]],
        attrs: tuple[tuple[str, Any], ...],
    ) -> list[tuple[bytes, tuple[tuple[str, Any], ...]]]:
        """The events metric's series of each event of ``span``: the span's common dimensions,
        then each span and event dimension looked up in the span's attributes, the event's,
        the resource's, else its default (omitted without one), as the Collector does."""
        common = attrs[: self._common]
        span_attrs = span.attributes
        resource_attrs = resource[2]
        out = []
        for raw_event in span.events:
            event_attrs = {
                kv.key: attr_str(kv.value) for kv in Span.Event.FromString(raw_event).attributes
            }
            key = list(common)
            for dim, default in self._event_dimensions:
                value = span_attrs.get(dim)
                if value is not None:
                    key.append((dim, cached_str(value)))
                elif dim in event_attrs:
                    key.append((dim, event_attrs[dim]))
                elif dim in resource_attrs:
                    key.append((dim, resource_attrs[dim]))
                elif default is not None:
                    key.append((dim, default))
            out.append((resource[0], tuple(key)))
        return out

    def _resource(self, raw: bytes) -> tuple[bytes, str, dict[str, str]]:
        """(key, service.name, attributes as strings) of an encoded resource, cached."""
        # keyed by the bytes themselves (a dict's hash of them, not a digest computed on each
        # lookup), counted in the byte bound: hostile large resources are held once, boundedly
        cached = self._resources.get(raw)
        if cached is None:
            resource = Resource.FromString(raw)
            key = self.aggregator.resource_key(resource)
            attrs = {kv.key: attr_str(kv.value) for kv in resource.attributes}
            cached = (key, attrs.get("service.name", ""), attrs)
            cost = len(raw) + len(key) + sum(len(k) + len(v) for k, v in attrs.items())
            if (
                len(self._resources) >= RESOURCE_CACHE_ENTRIES
                or self._resources_bytes + cost > RESOURCE_CACHE_BYTES
            ):
                self._resources.clear()
                self._resources_bytes = 0
            if cost <= RESOURCE_CACHE_BYTES:
                self._resources[bytes(raw)] = cached
                self._resources_bytes += cost
        else:
            # the aggregator forgets resources no series refers to (expiry, delta flushes)
            self.aggregator.keep_resource(cached[0], raw)
        return cached
