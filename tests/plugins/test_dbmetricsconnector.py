"""The ``dbmetrics`` connector on the spans of the real instrumentations (asyncpg against the
local PostgreSQL, redis against the local Redis, through the example workload and the
OpenTelemetry SDK), and on query texts whose answer is known."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from examples.agent_workload import Workload, WorkloadConfig
from pipeline import Kind, Traces
from pipeline.testing import SinkConsumer, check_factory, create_settings
from plugins.dbmetricsconnector.config import DBMetricsConfig
from plugins.dbmetricsconnector.connector import (
    DBMetricsConnector,
    operation_of,
    query_type,
    table_of,
)
from plugins.dbmetricsconnector.factory import DBMetricsConnectorFactory
from tests.otlp_support import recording_backend
from tests.support import free_port, running_service, wait_until


@contextlib.contextmanager
def own_instrumentation() -> Iterator[None]:
    """The workload instruments asyncpg and redis with its own tracer provider; an
    instrumentation another test left in place (the healthcheck receiver instruments asyncpg
    globally) would keep its spans: it is taken off for the workload and put back after."""
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    taken = []
    for inst in (AsyncPGInstrumentor(), RedisInstrumentor()):
        if inst.is_instrumented_by_opentelemetry:
            inst.uninstrument()
            taken.append(inst)
    try:
        yield
    finally:
        for inst in taken:
            inst.instrument()


def points(requests: list[Any]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The latest value of each series."""
    out = {}
    for req in requests:
        for rm in req.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    kind = m.WhichOneof("data")
                    for dp in getattr(m, kind).data_points:
                        labels = tuple(
                            sorted((kv.key, kv.value.string_value) for kv in dp.attributes)
                        )
                        v = dp.as_double if dp.WhichOneof("value") == "as_double" else dp.as_int
                        out[(m.name, labels)] = float(v)
    return out


async def test_database_and_cache_families_from_real_instrumentations() -> None:
    grpc = free_port()
    async with recording_backend() as backend:
        config = {
            "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": f"127.0.0.1:{grpc}"}}}},
            "connectors": {"dbmetrics": {"metrics_flush_interval": "1h"}},
            "exporters": {
                "otlp/out": {
                    "endpoint": f"127.0.0.1:{backend.grpc_port}",
                    "tls": {"insecure": True},
                }
            },
            "service": {
                "pipelines": {
                    "traces": {"receivers": ["otlp"], "exporters": ["dbmetrics"]},
                    "metrics": {"receivers": ["dbmetrics"], "exporters": ["otlp/out"]},
                },
                "telemetry": {"metrics": {"level": "none"}},
            },
        }
        async with running_service(json.dumps(config)) as service:
            cfg = WorkloadConfig(
                endpoint=f"127.0.0.1:{grpc}",
                workflows=12,
                concurrency=1,
                http=False,
                redis=True,
                seed=7,
            )
            # its own event loop in a thread: the SDK's flush blocks, the gateway serves here
            with own_instrumentation():
                summary = await asyncio.to_thread(lambda: asyncio.run(Workload(cfg).run()))
            connector = next(n.component for n in service.graph.nodes if n.id.type == "dbmetrics")
            await connector.flush()
            await wait_until(lambda: bool(backend.metrics))
        got = points(backend.metrics)
    assert summary.db_calls == 12 and summary.cache_misses == 4 and summary.cache_hits == 8
    db = (("operation", "SELECT"), ("query_type", "read"), ("table", "unknown"))
    # each query, and the reset asyncpg's pool runs when the connection goes back to it
    # ("SELECT pg_advisory_unlock_all(); CLOSE ALL; ..."): a real statement, counted
    assert got[("database_operations", db)] == 2 * 12
    cache = ("cache_type", "redis")
    assert got[("cache_operations", (cache, ("operation", "GET"), ("result", "hit")))] == 8
    assert got[("cache_operations", (cache, ("operation", "GET"), ("result", "miss")))] == 4
    assert got[("cache_operations", (cache, ("operation", "SET"), ("result", "success")))] == 4
    # the workload's first call clears its keys (DEL): counted too
    assert got[("cache_operations", (cache, ("operation", "DEL"), ("result", "success")))] == 1
    assert got[("cache_hit_ratio", (cache,))] == pytest.approx(8 / 12)


@pytest.mark.parametrize(
    ("query", "operation", "table", "qtype"),
    [
        ("SELECT id FROM orders WHERE id = $1", "SELECT", "orders", "read"),
        ('select * from "public"."Users" u join items i on true', "SELECT", "public.Users", "read"),
        ("INSERT INTO audit_log (a) VALUES ($1)", "INSERT", "audit_log", "write"),
        ("UPDATE accounts SET x = 1", "UPDATE", "accounts", "write"),
        ("DELETE FROM sessions", "DELETE", "sessions", "write"),
        ("CREATE TABLE IF NOT EXISTS t1 (a int)", "CREATE", "t1", "ddl"),
        ("  (SELECT 1)", "SELECT", "unknown", "read"),
        ("BEGIN", "BEGIN", "unknown", "other"),
        ("", "unknown", "unknown", "other"),
    ],
)
def test_query_text_classification(query: str, operation: str, table: str, qtype: str) -> None:
    op = operation_of(query)
    assert op == operation
    assert table_of(query) == table
    assert query_type(op) == qtype


def _span_request(**attrs: Any) -> Traces:
    req = ExportTraceServiceRequest()
    span = (
        req.resource_spans.add()
        .scope_spans.add()
        .spans.add(name="GET", kind=3, trace_id=b"\x01" * 16, span_id=b"\x02" * 8)
    )
    for k, v in attrs.items():
        value = span.attributes.add(key=k).value
        if isinstance(v, bool):
            value.bool_value = v
        elif isinstance(v, int):
            value.int_value = v
        else:
            value.string_value = v
    return Traces.from_message(req)  # type: ignore[return-value]


async def test_semantic_convention_attributes_win_over_the_query_text() -> None:
    sink = SinkConsumer()
    conn = DBMetricsConnector(create_settings(Kind.CONNECTOR, "dbmetrics"), DBMetricsConfig(), sink)
    await conn.consume(
        _span_request(
            **{
                "db.system.name": "postgresql",
                "db.operation.name": "select",
                "db.collection.name": "orders",
                "db.query.text": "SELECT 1 FROM elsewhere",
            }
        )
    )
    await conn.consume(_span_request(**{"db.system.name": "valkey", "cache.hit": True}))
    await conn.consume(_span_request(**{"db.system": "memcached", "db.statement": "gets k"}))
    await conn.consume(_span_request(**{"http.method": "GET"}))  # not a database span
    await conn.flush()
    got = points([p.message() for p in sink.received])
    assert (
        got[
            (
                "database_operations",
                (("operation", "SELECT"), ("query_type", "read"), ("table", "orders")),
            )
        ]
        == 1
    )
    assert (
        got[
            (
                "cache_operations",
                (("cache_type", "valkey"), ("operation", "GET"), ("result", "hit")),
            )
        ]
        == 1
    )
    assert (
        got[
            (
                "cache_operations",
                (("cache_type", "memcached"), ("operation", "GETS"), ("result", "success")),
            )
        ]
        == 1
    )
    assert got[("cache_hit_ratio", (("cache_type", "valkey"),))] == 1.0
    assert len(got) == 4


async def test_factory_contract() -> None:
    await check_factory(DBMetricsConnectorFactory())
