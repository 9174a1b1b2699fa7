"""Database spans from the OpenTelemetry Python SDK's asyncpg and redis instrumentations,
driven against the machine's real PostgreSQL (127.0.0.1:5432, user postgres) and Redis
(127.0.0.1:6379), and an HTTP client span of its requests instrumentation (a call to a local
server with ids in the path and a token in the query), exported over OTLP/gRPC to the port
given: ``python -m tests.plugins.redaction.db_sources PORT``. The statements carry the
literals in ``SECRETS`` inline (as applications that build SQL text do), so the raw export
holds them in ``db.statement`` and ``db.query.text``, and the URL's in ``http.url`` and
``url.full`` (``OTEL_SEMCONV_STABILITY_OPT_IN=database/dup,http/dup``).

``python -m tests.plugins.redaction.db_sources PORT logs``: instead, SQLite's statement trace
(``sqlite3``'s trace callback, the statements as SQLite ran them, bound values written in)
logged through Python's ``logging`` and the OpenTelemetry SDK's ``LoggingHandler``: log
records whose string bodies are SQL carrying the literals in ``SECRETS``."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

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
    "token": "zx-url-token",
    "uuid": "7d444840-9dc0-11d1-b245-5ffdce74fad2",
}
URL_PATH = f"/api/v1/users/{SECRETS['number']}/orders/{SECRETS['uuid']}"
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


class _Ok(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _http() -> None:
    import requests

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}{URL_PATH}?token={SECRETS['token']}"
        requests.get(url, timeout=10).raise_for_status()
    finally:
        server.shutdown()


def run(port: int) -> None:
    os.environ["OTEL_SEMCONV_STABILITY_OPT_IN"] = "database/dup,http/dup"
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor
    from opentelemetry.instrumentation.requests import RequestsInstrumentor

    tp = _provider(port)
    AsyncPGInstrumentor().instrument(tracer_provider=tp)
    RedisInstrumentor().instrument(tracer_provider=tp)
    RequestsInstrumentor().instrument(tracer_provider=tp)
    asyncio.run(_postgres())
    _redis()
    _http()
    tp.shutdown()


# the statements run on SQLite, with bound values (SQLite's trace writes them in)
SQLITE_STATEMENTS: list[tuple[str, tuple[Any, ...]]] = [
    ("CREATE TABLE zx_users (id INTEGER, name TEXT, email TEXT, score REAL)", ()),
    ("INSERT INTO zx_users VALUES (?, ?, ?, ?)",
     (int(SECRETS["number"]), SECRETS["string"], SECRETS["email"], float(SECRETS["decimal"]))),
    ("SELECT id, name FROM zx_users WHERE email = ? AND id IN (?, 2, 3)",
     (SECRETS["email"], int(SECRETS["number"]))),
    ("UPDATE zx_users SET name = ? WHERE score > ?", (SECRETS["escaped"], 1.5)),
]  # fmt: skip


def run_logs(port: int) -> None:
    import logging
    import sqlite3

    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
    from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
    from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
    from opentelemetry.sdk.resources import Resource

    lp = LoggerProvider(resource=Resource.create({"service.name": "db-sanitizer-logs"}))
    lp.add_log_record_processor(
        SimpleLogRecordProcessor(OTLPLogExporter(endpoint=f"127.0.0.1:{port}", insecure=True))
    )
    log = logging.getLogger("zx.sqlite")
    log.setLevel(logging.INFO)
    log.propagate = False
    log.addHandler(LoggingHandler(logger_provider=lp))
    conn = sqlite3.connect(":memory:")
    conn.set_trace_callback(log.info)
    for stmt, params in SQLITE_STATEMENTS:
        conn.execute(stmt, params).fetchall()
    conn.commit()
    conn.close()
    lp.shutdown()


if __name__ == "__main__":
    if sys.argv[2:] == ["logs"]:
        run_logs(int(sys.argv[1]))
    else:
        run(int(sys.argv[1]))
