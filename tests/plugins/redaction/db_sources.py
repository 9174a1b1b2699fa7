"""Database spans from the OpenTelemetry Python SDK's asyncpg and redis instrumentations,
driven against the machine's real PostgreSQL (127.0.0.1:5432, user postgres) and Redis
(127.0.0.1:6379) and exported over OTLP/gRPC to the port given: ``python -m
tests.plugins.redaction.db_sources PORT``. The statements carry the literals in ``SECRETS``
inline (as applications that build SQL text do), so the raw export holds them in
``db.statement`` and ``db.query.text`` (``OTEL_SEMCONV_STABILITY_OPT_IN=database/dup``)."""

from __future__ import annotations

import asyncio
import os
import sys

# literals the statements carry; none may survive db_sanitizer
SECRETS = {
    "string": "zx-secret-name",
    "email": "alice.zx@example.com",
    "number": "918273645",
    "decimal": "4711.0815",
    "dollar": "zx-dollar-quoted",
    "hex": "DEADBEEF0042",
    "comment": "zx-comment-tenant",
    "escaped": "it''s zx-escaped",
}
STATEMENTS = [
    "CREATE TEMP TABLE zx_users (id bigint, name text, email text, score numeric, blob bytea)",
    f"INSERT INTO zx_users (id, name, email, score, blob) VALUES ({SECRETS['number']}, "
    f"'{SECRETS['string']}', '{SECRETS['email']}', {SECRETS['decimal']}, "
    f"'\\x{SECRETS['hex']}'::bytea), (2, '{SECRETS['escaped']}', E'x\\'y', 1, NULL)",
    f"SELECT id, name FROM zx_users WHERE email = '{SECRETS['email']}' "
    f"AND id IN ({SECRETS['number']}, 2, 3) /* tenant='{SECRETS['comment']}' */",
    f"SELECT $${SECRETS['dollar']}$$ AS q, x'{SECRETS['hex']}'::bit(48) AS b",
    f"UPDATE zx_users SET score = score + {SECRETS['decimal']} -- by {SECRETS['comment']}\n"
    f"WHERE name = '{SECRETS['string']}'",
    "SELECT id FROM zx_users WHERE id = $1",  # a parameter: the value never reaches the text
]


def _provider(port: int):  # type: ignore[no-untyped-def]
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    tp = TracerProvider(resource=Resource.create({"service.name": "db-sanitizer"}))
    tp.add_span_processor(
        SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"127.0.0.1:{port}", insecure=True))
    )
    return tp


async def _postgres() -> None:
    import asyncpg

    conn = await asyncpg.connect(host="127.0.0.1", port=5432, user="postgres")
    try:
        for stmt in STATEMENTS:
            if "$1" in stmt:
                await conn.fetch(stmt, int(SECRETS["number"]))
            else:
                await conn.execute(stmt)
    finally:
        await conn.close()


def _redis() -> None:
    import redis

    client = redis.Redis(host="127.0.0.1", port=6379)
    key = f"zx:{os.getpid()}:user"
    client.set(key, SECRETS["string"], ex=60)
    client.get(key)
    with client.pipeline() as pipe:
        pipe.hset(key + ":h", "email", SECRETS["email"])
        pipe.expire(key + ":h", 60)
        pipe.execute()
    client.delete(key, key + ":h")


def run(port: int) -> None:
    os.environ["OTEL_SEMCONV_STABILITY_OPT_IN"] = "database/dup"
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    tp = _provider(port)
    AsyncPGInstrumentor().instrument(tracer_provider=tp)
    RedisInstrumentor().instrument(tracer_provider=tp)
    asyncio.run(_postgres())
    _redis()
    tp.shutdown()


if __name__ == "__main__":
    run(int(sys.argv[1]))
