"""``connectors.spanmetrics``: the Collector's options (those that apply here)."""

from __future__ import annotations

import itertools
from typing import Literal

from pydantic import Field, model_validator

from pipeline import ComponentConfig, ConfigModel, Duration, Seconds
from plugins._metricsagg import DEFAULT_MAX_SIZE

DEFAULT_TIMESTAMP_CACHE_SIZE = 10_000
DEFAULT_BUCKETS_MS = (2, 4, 6, 8, 10, 50, 100, 200, 400, 800, 1000, 1400, 2000, 5000, 10000, 15000)


class Dimension(ConfigModel):
    """An extra dimension: a span attribute, else a resource attribute, else ``default``
    (omitted when there is no default)."""

    name: str
    default: str | None = None


class ExplicitBuckets(ConfigModel):
    """``histogram.explicit``."""

    buckets: list[Duration] = Field(
        default_factory=lambda: list[float]([Seconds(ms / 1000) for ms in DEFAULT_BUCKETS_MS])
    )


class ExponentialBuckets(ConfigModel):
    """``histogram.exponential``: base-2 exponential buckets, at most ``max_size`` of them (0:
    the default, as in the Collector)."""

    max_size: int = Field(DEFAULT_MAX_SIZE, ge=0, le=16384)

    @model_validator(mode="after")
    def _check(self) -> ExponentialBuckets:
        if self.max_size == 0:
            self.max_size = DEFAULT_MAX_SIZE
        elif self.max_size < 2:
            raise ValueError(f"max_size: at least 2 buckets, got {self.max_size}")
        return self


class HistogramConfig(ConfigModel):
    """``histogram``: ``explicit`` buckets (the default) or ``exponential`` ones."""

    disable: bool = False
    unit: Literal["ms", "s"] = "ms"
    explicit: ExplicitBuckets | None = None
    exponential: ExponentialBuckets | None = None

    @model_validator(mode="after")
    def _check(self) -> HistogramConfig:
        if self.explicit is not None and self.exponential is not None:
            raise ValueError("use either `explicit` or `exponential` buckets histogram, not both")
        return self

    @property
    def buckets(self) -> list[float]:
        """The explicit bucket bounds, in seconds."""
        return (self.explicit or ExplicitBuckets()).buckets


class EventsConfig(ConfigModel):
    """``events``: the ``<namespace>.events`` metric (span events counted)."""

    enabled: bool = False
    # looked up in the span's attributes, then the event's, then the resource's, then default
    dimensions: list[Dimension] = Field(default_factory=list)


class ExemplarsConfig(ConfigModel):
    """``exemplars``."""

    enabled: bool = False
    max_per_data_point: int = Field(5, ge=1)


class DeltaTemporalityConfig(ConfigModel):
    """``delta_temporality``: options of delta temporality only."""

    metric_timestamp_cache_size: int = Field(DEFAULT_TIMESTAMP_CACHE_SIZE, ge=1)


class SpanMetricsConfig(ComponentConfig):
    """``connectors.spanmetrics``."""

    dimensions: list[Dimension] = Field(default_factory=list)
    exclude_dimensions: list[str] = Field(default_factory=list)
    histogram: HistogramConfig = Field(default_factory=HistogramConfig)
    exemplars: ExemplarsConfig = Field(default_factory=ExemplarsConfig)
    events: EventsConfig = Field(default_factory=EventsConfig)
    namespace: str = "traces.span.metrics"
    aggregation_cardinality_limit: int = Field(0, ge=0)
    metrics_flush_interval: Duration = Seconds(60)
    metrics_expiration: Duration = Seconds(0)
    aggregation_temporality: Literal[
        "AGGREGATION_TEMPORALITY_CUMULATIVE", "AGGREGATION_TEMPORALITY_DELTA"
    ] = "AGGREGATION_TEMPORALITY_CUMULATIVE"
    delta_temporality: DeltaTemporalityConfig = Field(default_factory=DeltaTemporalityConfig)
    # the Collector's code reads this key at the top level (its README documents it under
    # delta_temporality): both are accepted
    metric_timestamp_cache_size: int | None = Field(None, ge=1)
    # only these resource attributes identify a resource's series (empty: all of them)
    resource_metrics_key_attributes: list[str] = Field(default_factory=list)
    # Accepted for compatibility with Collector configs; caches are not needed here.
    dimensions_cache_size: int = Field(1000, ge=1)
    resource_metrics_cache_size: int = Field(1000, ge=1)

    @model_validator(mode="after")
    def _check(self) -> SpanMetricsConfig:
        buckets = self.histogram.buckets
        if any(b2 <= b1 for b1, b2 in itertools.pairwise(buckets)):
            raise ValueError("histogram.explicit.buckets must be strictly increasing")
        names = [d.name for d in self.dimensions]
        default = {"service.name", "span.name", "span.kind", "status.code"}
        clash = [n for n in names if n in default and n not in self.exclude_dimensions]
        if len(set(names)) != len(names) or clash:
            raise ValueError(
                f"dimensions: duplicate dimension names {names} (the defaults "
                "service.name, span.name, span.kind, status.code are always present)"
            )
        if self.events.enabled:
            event_names = [d.name for d in self.events.dimensions]
            if not event_names:
                raise ValueError(
                    "events.dimensions: at least one dimension is required when events.enabled"
                )
            clash = [n for n in event_names if n in default and n not in self.exclude_dimensions]
            if len(set(event_names)) != len(event_names) or clash:
                raise ValueError(
                    f"events.dimensions: duplicate dimension names {event_names} (the defaults "
                    "service.name, span.name, span.kind, status.code are always present)"
                )
        nested = self.delta_temporality.metric_timestamp_cache_size
        top = self.metric_timestamp_cache_size
        if (
            top is not None
            and "metric_timestamp_cache_size" in self.delta_temporality.model_fields_set
            and top != nested
        ):
            raise ValueError(
                f"metric_timestamp_cache_size ({top}) and "
                f"delta_temporality.metric_timestamp_cache_size ({nested}) differ: set one"
            )
        return self

    @property
    def timestamp_cache_size(self) -> int:
        """Series whose last delta flush time is remembered (the start of their next point)."""
        if self.metric_timestamp_cache_size is not None:
            return self.metric_timestamp_cache_size
        return self.delta_temporality.metric_timestamp_cache_size
