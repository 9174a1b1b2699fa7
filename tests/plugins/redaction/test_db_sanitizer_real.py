"""``db_sanitizer`` and ``url_sanitizer`` on what real instrumentations send: the
OpenTelemetry Python SDK's asyncpg and redis instrumentations against the machine's
PostgreSQL and Redis, and its requests instrumentation calling a local server
(``db_sources.py``). One gateway pipeline passes the spans as they came, one sanitizes
them; on the exported bytes no literal survives, every sanitized attribute is counted by
rule and in the summary, and everything else is untouched."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

from tests.plugins.redaction import db_sources as src
from tests.plugins.redaction.test_genai import run_gateway

DB_KEYS = ("db.statement", "db.query.text", "http.url", "url.full")  # the sanitized keys


def _reachable(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


pytestmark = pytest.mark.skipif(
    not (_reachable(5432) and _reachable(6379)),
    reason="needs the machine's PostgreSQL (5432) and Redis (6379)",
)


SANITIZER = """summary: debug
    url_sanitizer: {enabled: true, attributes: [http.url, url.full]}
    db_sanitizer:
      sql: {enabled: true, attributes: [db.statement, db.query.text]}
      redis: {enabled: true, attributes: [db.statement, db.query.text]}"""


def _attrs(span: Any) -> dict[str, Any]:
    return {kv.key: kv.value for kv in span.attributes}


def _system(span: Any) -> str:
    a = _attrs(span)
    v = a.get("db.system.name") or a.get("db.system")
    return v.string_value if v is not None else ""


async def test_no_literal_survives_real_instrumentations(tmp_path: Path) -> None:
    raw, redacted, counts = await run_gateway(
        SANITIZER,
        ["tests.plugins.redaction.db_sources"],
        ["db_sanitizer.sql", "db_sanitizer.redis", "url_sanitizer"],
        tmp_path,
    )
    assert raw.span_count() == redacted.span_count() > 0
    raw_bytes = b"".join(r.SerializeToString() for r in raw.traces)
    out_bytes = b"".join(r.SerializeToString() for r in redacted.traces)
    for name, secret in src.SECRETS.items():
        assert secret.encode() in raw_bytes, name  # the instrumentation exported it
        assert secret.encode() not in out_bytes, name
    pg = [s for s in raw.spans if _system(s) == "postgresql"]
    rd = [s for s in raw.spans if _system(s) == "redis"]
    assert len(pg) >= len(src.STATEMENTS) and rd

    by_id = {bytes(s.span_id): s for s in redacted.spans}
    sanitized = {"db": 0, "url": 0}
    for span in raw.spans:
        out = by_id[bytes(span.span_id)]
        before, after = _attrs(span), _attrs(out)
        changed = sorted(k for k in DB_KEYS if k in before and before[k] != after[k])
        for k in changed:
            sanitized["db" if k.startswith("db.") else "url"] += 1
        # everything but the statements is untouched; the summary names what changed
        rest = {k: v for k, v in after.items() if k not in DB_KEYS}
        summary = {k: rest.pop(k) for k in list(rest) if k.startswith("redaction.")}
        assert rest == {k: v for k, v in before.items() if k not in DB_KEYS}
        if changed:
            assert summary["redaction.masked.keys"].string_value == ",".join(changed)
            assert summary["redaction.masked.count"].int_value == len(changed)
        else:
            assert not summary
        for k in DB_KEYS:
            if k in after:
                assert "'" not in after[k].string_value, after[k].string_value
    # the statements keep their shape
    texts = {_attrs(by_id[bytes(s.span_id)])["db.statement"].string_value for s in pg}
    assert "SELECT id FROM zx_users WHERE id = $1" in texts
    assert "SELECT ? AS q, ?::bit( ? ) AS b" in texts
    assert (
        "INSERT INTO zx_users (id, name, email, score, blob) "
        "VALUES (?, ?, ?, ?, ?::bytea), (?, ?, ?, ?, NULL)" in texts
    )
    assert "SELECT id, name FROM zx_users WHERE email = ? AND id IN ( ? )" in texts, texts
    # the redis instrumentation writes its commands already sanitized (``SET ? ? ?``):
    # left as they are, nothing counted
    for span in rd:
        assert _attrs(by_id[bytes(span.span_id)]) == _attrs(span)
    assert counts["db_sanitizer.redis"] == 0
    assert counts["db_sanitizer.sql"] == sanitized["db"] > 0
    # the HTTP client span: ids in the path replaced, the query dropped, both URL keys
    (http,) = [s for s in redacted.spans if "url.full" in _attrs(s)]
    url = _attrs(http)["url.full"].string_value
    assert url.endswith("/api/v1/users/*/orders/*") and url.startswith("http://127.0.0.1:")
    # the instrumentations name their client spans by operation (SELECT, HSET EXPIRE, GET):
    # sanitize_span_name (on by default) and url_sanitizer find nothing to change in them
    assert all(by_id[bytes(s.span_id)].name == s.name for s in raw.spans)
    assert {s.name for s in pg} >= {"SELECT", "INSERT", "UPDATE"}
    assert _attrs(http)["http.url"].string_value == url
    assert counts["url_sanitizer"] == sanitized["url"] == 2


async def test_log_bodies_of_sqlite_statement_trace(tmp_path: Path) -> None:
    """``db_sanitizer.sql`` enabled without ``attributes`` (the Collector's: log bodies
    only): SQLite's statement trace logged through the OpenTelemetry SDK's logging handler
    arrives with every bound value written in; the exported bodies keep the statements'
    shape and carry none of them, each sanitized body counted once and summarized."""
    raw, redacted, counts = await run_gateway(
        "summary: debug\n    db_sanitizer: {sql: {enabled: true}}",
        ["tests.plugins.redaction.db_sources"],
        ["db_sanitizer.sql"],
        tmp_path,
        args=["logs"],
    )
    raw_records = [r for req in raw.logs for rl in req.resource_logs for sl in rl.scope_logs
                   for r in sl.log_records]  # fmt: skip
    out_records = [r for req in redacted.logs for rl in req.resource_logs
                   for sl in rl.scope_logs for r in sl.log_records]  # fmt: skip
    assert len(raw_records) == len(out_records) >= len(src.SQLITE_STATEMENTS)
    raw_bytes = b"".join(r.SerializeToString() for r in raw.logs)
    out_bytes = b"".join(r.SerializeToString() for r in redacted.logs)
    for name in ("string", "email", "number", "decimal"):
        assert src.SECRETS[name].encode() in raw_bytes, name  # SQLite wrote it in
        assert src.SECRETS[name].encode() not in out_bytes, name
    bodies = [r.body.string_value for r in out_records]
    assert "INSERT INTO zx_users VALUES ( ? )" in bodies, bodies
    assert "SELECT id, name FROM zx_users WHERE email = ? AND id IN ( ? )" in bodies
    assert "UPDATE zx_users SET name = ? WHERE score > ?" in bodies
    changed = [
        (a, b) for a, b in zip(raw_records, out_records, strict=True)
        if a.body.string_value != b.body.string_value
    ]  # fmt: skip
    assert counts["db_sanitizer.sql"] == len(changed) >= 3
    for _, out in changed:
        summary = {kv.key: kv.value for kv in out.attributes}
        assert summary["redaction.body.masked.keys"].string_value == "body"
