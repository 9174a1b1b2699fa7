"""``connectors.dbmetrics``: options."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pipeline import ComponentConfig, Duration, Seconds


class DBMetricsConfig(ComponentConfig):
    """``connectors.dbmetrics``."""

    metrics_flush_interval: Duration = Seconds(15)
    metrics_expiration: Duration = Seconds(600)
    aggregation_temporality: Literal[
        "AGGREGATION_TEMPORALITY_CUMULATIVE", "AGGREGATION_TEMPORALITY_DELTA"
    ] = "AGGREGATION_TEMPORALITY_CUMULATIVE"
    aggregation_cardinality_limit: int = Field(2000, ge=0)
    cache_systems: list[str] = Field(
        default_factory=lambda: ["redis", "valkey", "memcached", "hazelcast", "coherence"]
    )
    """``db.system.name`` values counted as caches (``cache_operations_total``); every other
    system is a database (``database_operations_total``)."""
    read_operations: list[str] = Field(
        default_factory=lambda: [
            "GET", "MGET", "GETEX", "GETDEL", "HGET", "HMGET", "HGETALL", "EXISTS", "GETS",
        ]
    )  # fmt: skip
    """Cache commands that find or miss something: their ``result`` is ``hit`` or ``miss``
    when the span tells (``cache.hit``, or ``db.response.returned_rows``)."""
