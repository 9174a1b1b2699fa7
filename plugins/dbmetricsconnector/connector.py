"""The ``dbmetrics`` connector: the reference's database and cache families from the
OpenTelemetry database client spans (asyncpg, psycopg, SQLAlchemy, redis... instrumentations):

=====================================  =====  ===================================================
OTLP name                              type   labels
=====================================  =====  ===================================================
database_operations (-> ``_total``)    sum    operation, table, query_type
cache_operations (-> ``_total``)       sum    operation, cache_type, result
cache_hit_ratio (unit "")              gauge  cache_type
=====================================  =====  ===================================================

A span is a database client span when it has ``db.system.name`` (or the older ``db.system``).
``operation`` is ``db.operation.name``, else the first word of ``db.query.text`` (or
``db.statement``), upper-cased; ``table`` is ``db.collection.name``, else the table the query
names after FROM / INTO / UPDATE / JOIN / TABLE, else ``unknown``; ``query_type`` is ``read``
(SELECT, SHOW, EXPLAIN...), ``write`` (INSERT, UPDATE, DELETE, MERGE, COPY...), ``ddl``
(CREATE, ALTER, DROP, TRUNCATE...) or ``other``. For caches (``cache_systems``) ``result`` is
``error`` for a failed span; for a read command (``read_operations``) ``hit`` / ``miss`` when
the span carries ``cache.hit`` or ``db.response.returned_rows`` (an instrumentation's response
hook sets it); else ``success``. ``cache_hit_ratio`` = hits / (hits + misses) since start.
"""

from __future__ import annotations

import re
import time
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Status

from pipeline import Consumer, CreateSettings, Payload
from plugins._metricsagg import Aggregator, FlushingConnector, Kind, Metric, Temporality
from plugins._spanview import TracesView, cached_str, value_str
from plugins.dbmetricsconnector.config import DBMetricsConfig

UNKNOWN = "unknown"
NO_RESOURCE = b""
STATUS_ERROR = 2
QUERY_TYPES = {
    "read": frozenset({"SELECT", "SHOW", "EXPLAIN", "DESCRIBE", "VALUES", "FIND", "AGGREGATE",
                       "COUNT", "SCAN", "QUERY", "GET"}),
    "write": frozenset({"INSERT", "UPDATE", "DELETE", "MERGE", "UPSERT", "REPLACE", "COPY",
                        "PUT", "SET"}),
    "ddl": frozenset({"CREATE", "ALTER", "DROP", "TRUNCATE", "RENAME", "COMMENT", "GRANT",
                      "REVOKE"}),
}  # fmt: skip
TABLE = re.compile(
    r"\b(?:FROM|INTO|UPDATE|JOIN|TABLE)\s+(?:ONLY\s+|IF\s+(?:NOT\s+)?EXISTS\s+)?"
    r"([\"`\[]?[A-Za-z_][\w$.\"`\]]*)",
    re.IGNORECASE,
)
QUOTES = re.compile(r'["`\[\]]')
FIRST_WORD = re.compile(r"\s*\(?\s*([A-Za-z]+)")
MAX_QUERY = 2000  # characters of a query text read
MAX_LABEL = 128


def query_type(operation: str) -> str:
    for name, ops in QUERY_TYPES.items():
        if operation in ops:
            return name
    return "other"


def table_of(query: str) -> str:
    m = TABLE.search(query[:MAX_QUERY])
    if m is None:
        return UNKNOWN
    return QUOTES.sub("", m.group(1))[:MAX_LABEL] or UNKNOWN


def operation_of(query: str) -> str:
    m = FIRST_WORD.match(query[:MAX_QUERY])
    return m.group(1).upper()[:MAX_LABEL] if m else UNKNOWN


class DBMetricsConnector(FlushingConnector):
    """See the module docstring."""

    def __init__(
        self, settings: CreateSettings, config: DBMetricsConfig, next_consumer: Consumer
    ) -> None:
        temporality = (
            Temporality.DELTA
            if config.aggregation_temporality == "AGGREGATION_TEMPORALITY_DELTA"
            else Temporality.CUMULATIVE
        )
        agg = Aggregator("", temporality, config.metrics_expiration)
        super().__init__(settings, next_consumer, agg, config.metrics_flush_interval)
        self.config = config
        limit = config.aggregation_cardinality_limit

        def metric(name: str, kind: Kind, description: str, unit: str = "") -> Metric:
            return agg.add_metric(
                Metric(
                    name,
                    kind,
                    description=description,
                    unit=unit,
                    cardinality_limit=limit,
                    on_overflow=self.count_overflow,
                )
            )

        self.db_ops = metric("database_operations", Kind.COUNTER, "Database client operations.")
        self.cache_ops = metric("cache_operations", Kind.COUNTER, "Cache client operations.")
        self.hit_ratio = metric(
            "cache_hit_ratio", Kind.GAUGE, "Cache hits / (hits + misses) since start."
        )
        self.caches = frozenset(s.lower() for s in config.cache_systems)
        self.reads = frozenset(op.upper() for op in config.read_operations)
        self.hits: dict[str, list[int]] = {}  # cache_type -> [hits, misses]

    async def consume(self, data: Payload) -> None:
        raw = data.to_bytes()
        if b"db.system" not in raw:
            # no database client span (db.system.name or db.system) can be in it: most
            # requests of an agent system, not parsed at all (the default config runs this
            # connector on every trace request)
            return
        # checked whole first: a corrupt request changes nothing (consume is atomic)
        ExportTraceServiceRequest.FromString(raw)
        view = TracesView.FromString(raw)
        now_ns = time.time_ns()
        for rs in view.resource_spans:
            for ss in rs.scope_spans:
                for sp in ss.spans:
                    attrs = sp.attributes
                    system_raw = attrs.get("db.system.name") or attrs.get("db.system")
                    if system_raw is None:
                        continue
                    self._span(sp, attrs, cached_str(system_raw).lower()[:MAX_LABEL], now_ns)

    def _span(self, sp: Any, attrs: Any, system: str, now_ns: int) -> None:
        op_raw = attrs.get("db.operation.name")
        query_raw = attrs.get("db.query.text") or attrs.get("db.statement")
        query = value_str(query_raw) if query_raw is not None else ""
        if op_raw is not None:
            operation = cached_str(op_raw).upper()[:MAX_LABEL] or UNKNOWN
        elif query:
            operation = operation_of(query)
        else:
            operation = operation_of(sp.name.decode("utf-8", "replace"))
        failed = bool(sp.status) and Status.FromString(sp.status).code == STATUS_ERROR
        if system in self.caches:
            result = "error" if failed else "success"
            if not failed and operation in self.reads:
                hit = self._hit(attrs)
                if hit is not None:
                    result = "hit" if hit else "miss"
                    counts = self.hits.setdefault(system, [0, 0])
                    counts[0 if hit else 1] += 1
            self.cache_ops.add(
                NO_RESOURCE,
                (("operation", operation), ("cache_type", system), ("result", result)),
                1,
                now_ns,
            )
            return
        coll = attrs.get("db.collection.name")
        table = (cached_str(coll)[:MAX_LABEL] or UNKNOWN) if coll is not None else table_of(query)
        self.db_ops.add(
            NO_RESOURCE,
            (("operation", operation), ("table", table), ("query_type", query_type(operation))),
            1,
            now_ns,
        )

    @staticmethod
    def _hit(attrs: Any) -> bool | None:
        raw = attrs.get("cache.hit")
        if raw is not None:
            text = value_str(raw)
            if text in ("true", "false"):
                return text == "true"
        raw = attrs.get("db.response.returned_rows")
        if raw is not None:
            text = value_str(raw)
            if text.isdigit():
                return int(text) > 0
        return None

    def before_flush(self, now_ns: int) -> None:
        for cache_type, (hits, misses) in self.hits.items():
            if hits + misses:
                self.hit_ratio.set(
                    NO_RESOURCE, (("cache_type", cache_type),), hits / (hits + misses), now_ns
                )
