"""The healthcheck receiver against the real PostgreSQL, Redis and an MCP server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp import web

from pipeline import ConfigError, ConfigErrors, Payload
from pipeline.component import ComponentID, CreateSettings, Kind
from pipeline.telemetry import SelfTelemetry, component_logger
from plugins.healthcheckreceiver.checks import (
    BODY_MATCH_MAX_BYTES,
    CheckResult,
    Cleanup,
    Status,
    make_check,
)
from plugins.healthcheckreceiver.config import CheckConfig, HealthCheckReceiverConfig
from plugins.healthcheckreceiver.receiver import HealthCheckReceiver
from tests.plugins.helpers.peers import http_server, mcp_server, silent_port
from tests.support import config_from_text, free_port, wait_until

PG = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS = "redis://127.0.0.1:6379/0"


async def run(**options: Any) -> CheckResult:
    options.setdefault("name", "dep")
    check = make_check(CheckConfig.model_validate(options))
    await check.open()
    try:
        return await check.run()
    finally:
        await check.close()


class Collect:
    mutates_data = False

    def __init__(self) -> None:
        self.payloads: list[Payload] = []

    async def consume(self, data: Payload) -> None:
        self.payloads.append(data)


def settings(telemetry: SelfTelemetry) -> CreateSettings:
    cid = ComponentID.parse("healthcheck")
    return CreateSettings(
        cid,
        Kind.RECEIVER,
        component_logger(Kind.RECEIVER, cid),
        telemetry.component(Kind.RECEIVER, cid),
    )


def gauges(payload: Payload) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for rm in payload.message().resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                for dp in m.gauge.data_points:
                    labels = tuple(sorted((kv.key, kv.value.string_value) for kv in dp.attributes))
                    v = dp.as_int if dp.WhichOneof("value") == "as_int" else dp.as_double
                    out[(m.name, labels)] = v
    return out


# -- config -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("checks", "message"),
    [
        ("[{name: a, type: postgresql}]", "needs an endpoint"),
        ("[{name: a, type: redis, endpoint: 'http://x'}]", "must start with redis://"),
        (
            "[{name: a, type: redis, endpoint: 'redis://x', thresholds: {active_connections: 3}}]",
            "do not apply to a redis check",
        ),
        ("[{name: a, type: system}, {name: a, type: system}]", "names must be unique"),
        ("[{name: a, type: http, endpoint: 'http://x', query: 'SELECT 1'}]", "'query'"),
        ("[{name: a, type: mcp, endpoint: 'http://x', timeout: soon}]", "duration"),
        ("[]", "at least 1"),
        ("[{name: a, type: mongodb, endpoint: 'x'}]", "type"),
    ],
)
def test_config_errors(checks: str, message: str) -> None:
    text = f"""
    receivers:
      healthcheck:
        checks: {checks}
    exporters:
      debug:
    service:
      pipelines:
        metrics: {{receivers: [healthcheck], exporters: [debug]}}
    """
    with pytest.raises((ConfigErrors, ConfigError)) as info:
        config_from_text(text)
    assert message in str(info.value)
    assert "receivers.healthcheck" in str(info.value)


def test_issue_example_config() -> None:
    cfg = HealthCheckReceiverConfig.model_validate(
        {
            "collection_interval": "10s",
            "checks": [
                {
                    "name": "orders-db",
                    "type": "postgresql",
                    "endpoint": PG,
                    "critical": True,
                    "timeout": "5s",
                },
                {"name": "cache", "type": "redis", "endpoint": REDIS, "timeout": "3s"},
                {
                    "name": "tools",
                    "type": "mcp",
                    "endpoint": "http://127.0.0.1:8000/mcp",
                    "critical": False,
                    "timeout": "10s",
                },
            ],
        }
    )
    assert [c.timeout for c in cfg.checks] == [5, 3, 10]
    assert cfg.checks[0].response_time_threshold() == 1.0
    assert cfg.checks[1].response_time_threshold() == 0.5


# -- postgresql ------------------------------------------------------------------------------
async def test_postgresql_healthy() -> None:
    result = await run(type="postgresql", endpoint=PG)
    assert result.status == Status.HEALTHY, result.message
    assert result.details["active_connections"] >= 1
    assert result.details["database_size_bytes"] > 1_000_000
    assert 0 < result.response_time < 1.0


async def test_postgresql_slow_is_degraded() -> None:
    result = await run(type="postgresql", endpoint=PG, query="SELECT pg_sleep(1.1)")
    assert result.status == Status.DEGRADED
    assert "slowly" in result.message
    assert result.response_time > 1.0


async def test_postgresql_too_many_connections_is_degraded() -> None:
    result = await run(type="postgresql", endpoint=PG, thresholds={"active_connections": 0})
    assert result.status == Status.DEGRADED
    assert "connection count" in result.message


async def test_postgresql_closed_port_is_unhealthy() -> None:
    started = time.monotonic()
    result = await run(
        type="postgresql",
        endpoint=f"postgresql://postgres@127.0.0.1:{free_port()}/postgres",
        timeout="2s",
    )
    assert result.status == Status.UNHEALTHY
    assert "refused" in result.message.lower() or "connect" in result.message.lower()
    assert time.monotonic() - started < 2.0


async def test_postgresql_silent_server_is_unhealthy_within_the_timeout() -> None:
    with silent_port() as port:
        started = time.monotonic()
        result = await run(
            type="postgresql",
            endpoint=f"postgresql://postgres@127.0.0.1:{port}/postgres",
            timeout="700ms",
        )
        elapsed = time.monotonic() - started
    assert result.status == Status.UNHEALTHY
    assert 0.6 < elapsed < 1.5
    assert "timeout" in result.message


async def test_postgresql_statement_left_behind_is_cancelled_by_the_server() -> None:
    import asyncpg

    result = await run(
        name="stuck", type="postgresql", endpoint=PG, query="SELECT pg_sleep(20)", timeout="1s"
    )
    assert result.status == Status.UNHEALTHY
    conn = await asyncpg.connect(PG)
    try:
        for _ in range(50):
            n = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE application_name = 'pipeline-healthcheck stuck'"
            )
            if n == 0:
                break
            await asyncio.sleep(0.1)
        assert n == 0
    finally:
        await conn.close()


# -- redis -----------------------------------------------------------------------------------
async def test_redis_healthy_and_leaves_no_key() -> None:
    result = await run(name="cache-probe", type="redis", endpoint=REDIS)
    assert result.status == Status.HEALTHY, result.message
    assert result.details["cluster_enabled"] == 0
    client = aioredis.from_url(REDIS)
    try:
        assert await client.keys("pipeline:health_check:cache-probe:*") == []
    finally:
        await client.aclose()


async def block_redis(seconds: float) -> None:
    """Keep the Redis server busy from a second connection: DEBUG SLEEP where allowed, else a
    busy Lua script (Redis refuses DEBUG unless enable-debug-command is set)."""
    client = aioredis.from_url(REDIS, socket_timeout=seconds + 5)
    try:
        try:
            await client.execute_command("DEBUG", "SLEEP", seconds)
        except aioredis.ResponseError as exc:
            if "DEBUG command not allowed" not in str(exc):
                raise
            script = (
                "local t = redis.call('TIME'); local s = t[1] * 1000000 + t[2]; "
                "while true do local n = redis.call('TIME'); "
                f"if n[1] * 1000000 + n[2] - s > {int(seconds * 1_000_000)} then break end end "
                "return 1"
            )
            await client.eval(script, 0)
    finally:
        await client.aclose()


async def test_redis_slow_is_degraded() -> None:
    blocker = asyncio.create_task(block_redis(1.5))
    await asyncio.sleep(0.3)  # the server is now busy
    result = await run(type="redis", endpoint=REDIS)
    await blocker
    assert result.status == Status.DEGRADED, result.message
    assert result.response_time > 0.5


async def test_redis_closed_port_is_unhealthy() -> None:
    started = time.monotonic()
    result = await run(type="redis", endpoint=f"redis://127.0.0.1:{free_port()}/0", timeout="2s")
    assert result.status == Status.UNHEALTHY
    assert time.monotonic() - started < 2.0


async def test_redis_silent_server_is_unhealthy_within_the_timeout() -> None:
    with silent_port() as port:
        started = time.monotonic()
        result = await run(type="redis", endpoint=f"redis://127.0.0.1:{port}/0", timeout="500ms")
        elapsed = time.monotonic() - started
    assert result.status == Status.UNHEALTHY
    assert elapsed < 1.5


def test_failed_cluster_nodes_are_counted() -> None:
    from plugins.healthcheckreceiver.checks import _count_failed_nodes

    text = (
        "07c3 127.0.0.1:30004@31004 slave e7d1 0 1426238317239 4 connected\n"
        "67ed 127.0.0.1:30002@31002 master,fail - 1426238316232 1426238316232 2 disconnected\n"
        "292f 127.0.0.1:30003@31003 master - 0 1426238318243 3 connected 10923-16383\n"
    )
    assert _count_failed_nodes(text) == 1
    assert _count_failed_nodes({"a": {"flags": "master,fail?"}, "b": {"flags": "myself"}}) == 1
    from plugins.healthcheckreceiver.checks import _count_nodes

    assert _count_nodes(text) == 3
    assert _count_nodes({"a": {}, "b": {}}) == 2


async def test_redis_cluster_nodes_family() -> None:
    """redis_cluster_nodes{status} (configs/alerts' RedisClusterNodeDown) from a real check;
    the standalone test server counts as one healthy node."""
    cfg = HealthCheckReceiverConfig.model_validate(
        {"checks": [{"name": "cache", "type": "redis", "endpoint": REDIS}]}
    )
    receiver = HealthCheckReceiver(settings(SelfTelemetry()), cfg, Collect())
    result = await run(name="cache", type="redis", endpoint=REDIS)
    got = gauges(receiver.metrics_of(result))
    assert got[("redis_cluster_nodes", (("check", "cache"), ("status", "ok")))] == 1
    assert got[("redis_cluster_nodes", (("check", "cache"), ("status", "fail")))] == 0
    result.details.update(cluster_enabled=1, cluster_known_nodes=6, cluster_failed_nodes=2)
    got = gauges(receiver.metrics_of(result))
    assert got[("redis_cluster_nodes", (("check", "cache"), ("status", "ok")))] == 4
    assert got[("redis_cluster_nodes", (("check", "cache"), ("status", "fail")))] == 2


# -- http ------------------------------------------------------------------------------------
async def test_http_checks() -> None:
    async def ok(_: web.Request) -> web.Response:
        return web.Response(text='{"status": "up"}')

    async def broken(_: web.Request) -> web.Response:
        return web.Response(status=500, text="boom")

    async def slow(_: web.Request) -> web.Response:
        await asyncio.sleep(0.3)
        return web.Response(text="late")

    app = web.Application()
    app.router.add_get("/ok", ok)
    app.router.add_get("/broken", broken)
    app.router.add_get("/slow", slow)
    async with http_server(app) as base:
        good = await run(type="http", endpoint=f"{base}/ok", body_match='"status": "up"')
        assert good.status == Status.HEALTHY and good.details["http_status_code"] == 200
        mismatch = await run(type="http", endpoint=f"{base}/ok", body_match="down")
        assert mismatch.status == Status.UNHEALTHY and "does not match" in mismatch.message
        bad = await run(type="http", endpoint=f"{base}/broken")
        assert bad.status == Status.UNHEALTHY and bad.details["http_status_code"] == 500
        expected = await run(type="http", endpoint=f"{base}/broken", expected_status=[500])
        assert expected.status == Status.HEALTHY
        late = await run(
            type="http", endpoint=f"{base}/slow", thresholds={"response_time": "100ms"}
        )
        assert late.status == Status.DEGRADED
        timed_out = await run(type="http", endpoint=f"{base}/slow", timeout="100ms")
        assert timed_out.status == Status.UNHEALTHY and "timeout" in timed_out.message


async def test_http_body_match_streams_in_a_bounded_window() -> None:
    """``body_match`` reads the body as it streams: a match split between two writes of the
    server (inside a multi-byte character, after 200 KB) is found; a match after 8 MiB is found
    with a few hundred KB of memory (before, the whole body and its text were held: 16 MB
    and more); a body larger than the cap without a match in it fails with a clear message,
    having read no more than the cap."""
    filler = b"x" * (1 << 16)
    match = '"status": "up\u20ac"'.encode()  # the euro sign: 3 bytes in UTF-8
    cut = match.index(b"\xe2") + 1  # inside the character

    async def split(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
        await resp.prepare(request)
        for _ in range(3):
            await resp.write(filler)
        await resp.write(match[:cut])
        await asyncio.sleep(0.2)  # the client has read what came so far: another chunk
        await resp.write(match[cut:] + b"y" * 1000)
        await resp.write_eof()
        return resp

    sent: dict[str, int] = {}

    def big(name: str, chunks: int) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handler(request: web.Request) -> web.StreamResponse:
            resp = web.StreamResponse()
            await resp.prepare(request)
            sent[name] = 0
            with contextlib.suppress(ConnectionError):
                for _ in range(chunks):
                    await resp.write(filler)
                    sent[name] += len(filler)
                await resp.write(match)
                await resp.write_eof()
            return resp

        return handler

    app = web.Application()
    app.router.add_get("/split", split)
    app.router.add_get("/big", big("big", 128))  # 8 MiB, then the match
    app.router.add_get("/huge", big("huge", 1024))  # 64 MiB, then the match
    pattern = '"status": "up\u20ac"'
    async with http_server(app) as base:
        found = await run(type="http", endpoint=f"{base}/split", body_match=pattern)
        assert found.status == Status.HEALTHY, found.message
        tracemalloc.start()
        try:
            found = await run(
                type="http", endpoint=f"{base}/big", body_match=pattern, timeout="30s"
            )
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert found.status == Status.HEALTHY, found.message
        assert peak < 2 << 20, peak
        huge = await run(type="http", endpoint=f"{base}/huge", body_match=pattern, timeout="30s")
        assert huge.status == Status.UNHEALTHY
        assert f"in its first {BODY_MATCH_MAX_BYTES} bytes" in huge.message, huge.message
        await asyncio.sleep(0.3)
        assert sent["huge"] < 1024 * len(filler)  # it stopped reading at the cap


# -- mcp -------------------------------------------------------------------------------------
async def test_mcp_server_healthy_then_stopped() -> None:
    with mcp_server() as (url, proc):
        result = await run(type="mcp", endpoint=url, timeout="10s")
        assert result.status == Status.HEALTHY, result.message
        assert result.details["tools_count"] == 2
        assert result.details["server_name"] == "health-test-tools"
        proc.kill()
        proc.wait()
        stopped = await run(type="mcp", endpoint=url, timeout="3s")
    assert stopped.status == Status.UNHEALTHY
    assert stopped.consecutive_failures == 0  # counted by the receiver, not the check


def sse(message: Any) -> str:
    return f"event: message\ndata: {json.dumps(message)}\n\n"


async def test_mcp_protocol_errors_are_unhealthy() -> None:
    init_ok = {
        "jsonrpc": "2.0",
        "id": 1,
        "result": {
            "protocolVersion": "2025-06-18",
            "serverInfo": {"name": "x"},
            "capabilities": {},
        },
    }

    async def not_json(_: web.Request) -> web.Response:
        return web.Response(text="{this is not json", content_type="application/json")

    async def wrong_version(_: web.Request) -> web.Response:
        return web.json_response({"jsonrpc": "1.0", "id": 1, "result": {}})

    async def error(_: web.Request) -> web.Response:
        return web.json_response(
            {"jsonrpc": "2.0", "id": 1, "error": {"code": -32601, "message": "no"}}
        )

    async def sse_garbage(_: web.Request) -> web.Response:
        return web.Response(text="event: message\ndata: {{{\n\n", content_type="text/event-stream")

    async def sse_no_tools(request: web.Request) -> web.Response:
        body = await request.json()
        if body.get("method") == "initialize":
            return web.Response(
                text=sse(init_ok),
                content_type="text/event-stream",
                headers={"mcp-session-id": "abc"},
            )
        if "id" not in body:
            return web.Response(status=202)
        assert request.headers.get("mcp-session-id") == "abc"
        return web.Response(
            text=sse({"jsonrpc": "2.0", "id": body["id"], "result": {}}),
            content_type="text/event-stream",
        )

    async def html(_: web.Request) -> web.Response:
        return web.Response(text="<html></html>", content_type="text/html")

    async def deep(_: web.Request) -> web.Response:
        return web.Response(text="[" * 200_000, content_type="application/json")

    async def huge(_: web.Request) -> web.Response:
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "result": {"pad": "x" * (4 << 20)}})
        return web.Response(text=body, content_type="application/json")

    async def sse_endless(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        line = b"data: " + b"x" * 1000 + b"\n"
        for _ in range(4096):  # 4 MB of one event that never ends
            await resp.write(line)
        await resp.write_eof()
        return resp

    app = web.Application()
    for name, handler in [
        ("not_json", not_json),
        ("wrong_version", wrong_version),
        ("error", error),
        ("sse_garbage", sse_garbage),
        ("sse_no_tools", sse_no_tools),
        ("html", html),
        ("deep", deep),
        ("huge", huge),
        ("sse_endless", sse_endless),
    ]:
        app.router.add_post(f"/{name}", handler)
    async with http_server(app) as base:
        for name, expected in [
            ("not_json", "not JSON"),
            ("wrong_version", "not a JSON-RPC 2.0"),
            ("error", "JSON-RPC error -32601"),
            ("sse_garbage", "not JSON"),
            ("sse_no_tools", "no tools list"),
            ("html", "unexpected content type"),
            ("deep", "not JSON"),
            ("huge", "larger than"),
            ("sse_endless", "larger than"),
        ]:
            result = await run(type="mcp", endpoint=f"{base}/{name}", timeout="3s")
            assert result.status == Status.UNHEALTHY, name
            assert expected in result.message, (name, result.message)


# -- system ----------------------------------------------------------------------------------
async def test_system_check() -> None:
    fine = await run(
        type="system", thresholds={"cpu_percent": 1000, "memory_percent": 100, "disk_percent": 100}
    )
    assert fine.status == Status.HEALTHY
    assert 0 < fine.details["memory_percent"] < 100
    pressed = await run(type="system", thresholds={"memory_percent": 0})
    assert pressed.status == Status.DEGRADED
    assert "memory_percent" in pressed.message


# -- the receiver ----------------------------------------------------------------------------
async def test_an_empty_endpoint_disables_the_check(caplog: pytest.LogCaptureFixture) -> None:
    """``endpoint: ${env:X:-}`` with X unset: that check is off (logged at start), the others
    run; a check without an endpoint key stays a config error (test_config_errors)."""
    text = (
        """
    receivers:
      healthcheck:
        trace_checks: false
        collection_interval: 1h
        checks:
          - {name: db, type: postgresql, endpoint: "${env:HC_TEST_UNSET_PG:-}", critical: true}
          - {name: cache, type: redis, endpoint: ""}
          - {name: tools, type: mcp, endpoint: }
          - {name: orders-db, type: postgresql, endpoint: "PG_DSN"}
    exporters:
      debug:
    service:
      pipelines:
        metrics: {receivers: [healthcheck], exporters: [debug]}
    """
    ).replace("PG_DSN", PG)
    config = config_from_text(text)
    cfg = next(iter(config.components[Kind.RECEIVER].values()))
    assert isinstance(cfg, HealthCheckReceiverConfig)
    assert [c.disabled for c in cfg.checks] == [True, True, True, False]
    sink = Collect()
    receiver = HealthCheckReceiver(settings(SelfTelemetry()), cfg, sink)
    assert [c.config.name for c in receiver.checks] == ["orders-db"]
    # caplog's handler on the gateway's logger itself: a service started in-process by an
    # earlier test (configure_logging) stops that logger's propagation to the root
    gateway_logger = logging.getLogger("pipeline")
    own = not gateway_logger.propagate
    if own:
        gateway_logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO, logger="pipeline"):
            await receiver.start(None)  # type: ignore[arg-type]
    finally:
        if own:
            gateway_logger.removeHandler(caplog.handler)
    try:
        await wait_until(lambda: "orders-db" in receiver.results, within=15)
    finally:
        await receiver.shutdown()
    disabled = [r for r in caplog.records if getattr(r, "status", None) == "disabled"]
    assert [r.check for r in disabled] == ["db", "cache", "tools"]  # type: ignore[attr-defined]
    assert "endpoint is empty" in disabled[0].getMessage()
    assert set(receiver.results) == {"orders-db"}
    checked = {dict(lb)["check"] for p in sink.payloads for (_, lb) in gauges(p) if lb}
    assert checked == {"orders-db"}


async def test_receiver_metrics_consecutive_failures_and_per_check_interval() -> None:
    telemetry = SelfTelemetry()
    sink = Collect()
    closed = free_port()
    cfg = HealthCheckReceiverConfig.model_validate(
        {
            "collection_interval": "1h",
            "trace_checks": False,
            "checks": [
                {"name": "orders-db", "type": "postgresql", "endpoint": PG, "critical": True},
                {
                    "name": "gone",
                    "type": "redis",
                    "endpoint": f"redis://127.0.0.1:{closed}/0",
                    "interval": "100ms",
                    "timeout": "1s",
                },
            ],
        }
    )
    receiver = HealthCheckReceiver(settings(telemetry), cfg, sink)
    await receiver.start(None)  # type: ignore[arg-type]
    try:
        await wait_until(
            lambda: (
                "orders-db" in receiver.results
                and receiver.results.get("gone") is not None
                and receiver.results["gone"].consecutive_failures >= 3
            ),
            within=15,
        )
    finally:
        await receiver.shutdown()
        await receiver.shutdown()
    # The postgres check ran once (1h interval), the redis one every 100ms.
    per_check: dict[str, int] = {}
    for p in sink.payloads:
        for (name, labels), _ in gauges(p).items():
            if name == "health_check_status":
                check = dict(labels)["check"]
                per_check[check] = per_check.get(check, 0) + 1
    assert per_check["orders-db"] == 1
    assert per_check["gone"] >= 3
    last_gone = next(
        gauges(p)
        for p in reversed(sink.payloads)
        if any(dict(lb).get("check") == "gone" for (_, lb) in gauges(p))
    )
    labels = (("check", "gone"), ("type", "redis"))
    assert (
        last_gone[
            ("health_check_status", (("check", "gone"), ("critical", "false"), ("type", "redis")))
        ]
        == 0.0
    )
    assert last_gone[("health_check_consecutive_failures", labels)] == (
        receiver.results["gone"].consecutive_failures
    )
    db = next(
        gauges(p)
        for p in sink.payloads
        if any(dict(lb).get("check") == "orders-db" for (_, lb) in gauges(p))
    )
    db_labels = (("check", "orders-db"), ("type", "postgresql"))
    assert (
        db[
            (
                "health_check_status",
                (("check", "orders-db"), ("critical", "true"), ("type", "postgresql")),
            )
        ]
        == 1.0
    )
    assert db[("health_check_response_time_seconds", db_labels)] == pytest.approx(
        receiver.results["orders-db"].response_time
    )
    assert db[("health_check_consecutive_failures", db_labels)] == 0
    detail = tuple(sorted((*db_labels, ("detail", "active_connections"))))
    assert db[("health_check_detail", detail)] >= 1
    # the reference's family for DatabaseConnectionPoolExhausted
    assert db[("database_connection_pool_active", (("check", "orders-db"),))] >= 1
    snapshot = receiver.snapshot()
    assert snapshot["gone"]["status"] == "unhealthy"
    assert snapshot["orders-db"]["critical"] is True


async def test_checks_are_traced() -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    assert isinstance(trace.get_tracer_provider(), TracerProvider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    cfg = HealthCheckReceiverConfig.model_validate(
        {
            "collection_interval": "1h",
            "checks": [{"name": "orders-db", "type": "postgresql", "endpoint": PG}],
        }
    )
    receiver = HealthCheckReceiver(settings(SelfTelemetry()), cfg, Collect())
    await receiver.start(None)  # type: ignore[arg-type]
    try:
        await wait_until(lambda: "orders-db" in receiver.results, within=10)
    finally:
        await receiver.shutdown()
    spans = exporter.get_finished_spans()
    (root,) = [s for s in spans if s.name == "health_check orders-db"]
    assert root.attributes is not None and root.attributes["health_check.status"] == "healthy"
    children = [
        s for s in spans if s.parent is not None and s.parent.span_id == root.context.span_id
    ]
    statements = {str((s.attributes or {}).get("db.statement", "")) for s in children}
    assert "SELECT 1" in statements, [s.name for s in spans]


async def test_a_check_cancelled_as_its_client_finishes_closing_stops() -> None:
    """The receiver's shutdown cancels a check in the loop turn in which a client its probe
    opened finishes closing: the check stops there (the closers after it are not awaited).
    Before, ``asyncio.wait_for`` (Python 3.11) answered the close instead of the
    cancellation: the check went on and returned its result, the receiver's loop ran the
    next check, and its shutdown, which waits for that loop, did not end."""
    gate = asyncio.Event()
    closed: list[str] = []

    async def close(name: str) -> None:
        closed.append(name)
        await gate.wait()

    cleanup = Cleanup()
    cleanup.add(lambda: close("second"))
    cleanup.add(lambda: close("first"))  # (closed first: in reverse)
    cleanup.clean = True
    task = asyncio.ensure_future(cleanup.run())
    await wait_until(lambda: closed == ["first"])
    gate.set()  # the close ends ...
    task.cancel()  # ... in the turn in which the shutdown cancels the check
    try:
        done, _ = await asyncio.wait({task}, timeout=5)  # a guard against the hang only
        assert done
    finally:
        task.cancel()
    assert task.cancelled(), "the check went on after it was cancelled"
    assert closed == ["first"]
