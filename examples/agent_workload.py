"""An example agent workload: agents running workflows, traced with the OpenTelemetry SDK.

Each workflow is a trace::

    workflow.<type>                (root: workflow.id, workflow.name, gen_ai.agent.name)
      invoke_agent <agent>         (gen_ai.operation.name = invoke_agent)
        execute_tool <tool>  x N   (CLIENT; MCP: mcp.method.name = tools/call, mcp.server.name)
        chat <model>               (CLIENT; gen_ai.operation.name = chat)
        a2a send <type>            (PRODUCER) -> a2a receive <type> (CONSUMER, child)
        SELECT ...                 (real asyncpg call to PostgreSQL, instrumented)
        GET / SET                  (with --redis: a real cache lookup in Redis, instrumented;
                                    the response hook marks hits and misses)
        GET /api/items/{id}        (real requests call, instrumented) -> SERVER span of the
                                    local HTTP endpoint this program starts

Workflow, tool and message timings are simulated (span start/end times are set, nothing
sleeps unless ``--realtime``); database and HTTP calls are real. Failures are exact shares, not
random draws: with ``--workflows 50 --failure-rate 0.2`` exactly 10 workflows fail (their first
tool call fails with "connection refused"); ``--timeout-rate`` workflows end in a TimeoutError.
Latencies cycle through the given lists. At the end a JSON summary of what was generated is
printed on standard output (the expected metrics).

    python examples/agent_workload.py --endpoint 127.0.0.1:4317 --workflows 100 --rate 20
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import random
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import asyncpg
import requests
from opentelemetry import propagate, trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode


@dataclass
class WorkloadConfig:
    """What to simulate."""

    endpoint: str = "127.0.0.1:4317"
    workflows: int = 20
    rate: float = 0.0  # workflows per second; 0 = as fast as possible
    concurrency: int = 4
    agents: int = 3
    types: Sequence[str] = ("research", "support")
    tools_per_workflow: int = 2
    tool_servers: Sequence[str] = ("docs-server", "web-server")
    tool_latencies: Sequence[float] = (0.02, 0.08, 0.3, 1.5)
    workflow_durations: Sequence[float] = (0.4, 1.5, 4.0)
    a2a_latencies: Sequence[float] = (0.003, 0.02)
    failure_rate: float = 0.2
    timeout_rate: float = 0.0
    http_error_every: int = 0  # every n-th HTTP call answers 503 (0: never)
    db: bool = True
    db_dsn: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    redis: bool = False
    redis_url: str = "redis://127.0.0.1:6379/0"
    http: bool = True
    realtime: bool = False
    late_a2a_delay: float = 0.0  # end the A2A receive span this long after the root (late span)
    max_export_batch_size: int = 512
    seed: int = 1
    service_name: str = "agent-workload"


@dataclass
class Summary:
    """What was generated: the metrics a gateway should derive."""

    spans: int = 0
    workflows: collections.Counter[str] = field(default_factory=collections.Counter)
    tool_calls: collections.Counter[str] = field(default_factory=collections.Counter)
    tool_latencies: list[float] = field(default_factory=list)
    workflow_durations: dict[str, list[float]] = field(
        default_factory=lambda: collections.defaultdict(list)
    )
    a2a_sent: int = 0
    a2a_latencies: list[float] = field(default_factory=list)
    http_server: collections.Counter[str] = field(default_factory=collections.Counter)
    db_calls: int = 0
    cache_hits: int = 0
    cache_misses: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "spans": self.spans,
            "workflows": dict(self.workflows),
            "tool_calls": dict(self.tool_calls),
            "tool_latencies": self.tool_latencies,
            "workflow_durations": dict(self.workflow_durations),
            "a2a_sent": self.a2a_sent,
            "a2a_latencies": self.a2a_latencies,
            "http_server": dict(self.http_server),
            "db_calls": self.db_calls,
            "cache_hits": self.cache_hits,
            "cache_misses": self.cache_misses,
        }


class _CountSpans(SpanProcessor):
    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    def on_end(self, span: ReadableSpan) -> None:
        with self._lock:
            self.count += 1


def _serve_http(provider: TracerProvider, cfg: WorkloadConfig) -> ThreadingHTTPServer:
    """A local HTTP endpoint that records SERVER spans (context from the traceparent)."""
    tracer = provider.get_tracer("agent_workload.http_server")
    calls = {"n": 0}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            with lock:
                calls["n"] += 1
                n = calls["n"]
            status = 503 if cfg.http_error_every and n % cfg.http_error_every == 0 else 200
            ctx = propagate.extract(dict(self.headers.items()))
            with tracer.start_as_current_span(
                "GET /api/items/{id}",
                context=ctx,
                kind=SpanKind.SERVER,
                attributes={
                    "http.request.method": "GET",
                    "http.route": "/api/items/{id}",
                    "url.path": self.path,
                    "http.response.status_code": status,
                },
            ) as span:
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))
                body = b'{"ok": true}' if status == 200 else b'{"ok": false}'
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True, name="workload-http").start()
    return server


def _cache_result(span: Any, instance: Any, response: Any) -> None:
    """The redis instrumentation's response hook: whether a GET found its key, as the
    semantic conventions' ``db.response.returned_rows`` (what a gateway counts hits by)."""
    if span.is_recording() and span.name == "GET":
        span.set_attribute("db.response.returned_rows", 0 if response is None else 1)


def _exact_plan(n: int, rate: float, rng: random.Random) -> list[bool]:
    k = round(n * rate)
    plan = [True] * k + [False] * (n - k)
    rng.shuffle(plan)
    return plan


class Workload:
    """Runs the configured workflows."""

    def __init__(self, cfg: WorkloadConfig) -> None:
        self.cfg = cfg
        self.summary = Summary()
        self.counter = _CountSpans()
        resource = Resource.create({"service.name": cfg.service_name})
        self.provider = TracerProvider(resource=resource)
        self.provider.add_span_processor(self.counter)
        self.provider.add_span_processor(
            BatchSpanProcessor(
                OTLPSpanExporter(endpoint=cfg.endpoint, insecure=True),
                max_export_batch_size=cfg.max_export_batch_size,
                schedule_delay_millis=200,
            )
        )
        self.tracer = self.provider.get_tracer("agent_workload", "1.0")
        rng = random.Random(cfg.seed)
        self.failures = _exact_plan(cfg.workflows, cfg.failure_rate, rng)
        # timeouts only among the workflows that do not fail otherwise
        ok = [i for i, f in enumerate(self.failures) if not f]
        rng.shuffle(ok)
        self.timeouts = set(ok[: round(cfg.workflows * cfg.timeout_rate)])
        self._tool_i = 0
        self._a2a_i = 0
        self.http_url = ""
        self._server: ThreadingHTTPServer | None = None
        self._pool: Any = None
        self._redis: Any = None
        self._late: list[asyncio.Task[None]] = []

    async def run(self) -> Summary:
        cfg = self.cfg
        if cfg.db:
            AsyncPGInstrumentor().instrument(tracer_provider=self.provider)
            self._pool = await asyncpg.create_pool(cfg.db_dsn, min_size=1, max_size=cfg.concurrency)
        if cfg.redis:
            import redis.asyncio as aioredis
            from opentelemetry.instrumentation.redis import RedisInstrumentor

            RedisInstrumentor().instrument(
                tracer_provider=self.provider, response_hook=_cache_result
            )
            self._redis = aioredis.from_url(cfg.redis_url)
            await self._redis.delete(*(f"agent-workload:{cfg.seed}:item:{k}" for k in range(4)))
        if cfg.http:
            RequestsInstrumentor().instrument(tracer_provider=self.provider)
            self._server = _serve_http(self.provider, cfg)
            self.http_url = f"http://127.0.0.1:{self._server.server_address[1]}/api/items/"
        try:
            sem = asyncio.Semaphore(cfg.concurrency)
            loop = asyncio.get_running_loop()
            start = loop.time()
            tasks = []
            for i in range(cfg.workflows):
                if cfg.rate > 0:
                    delay = start + i / cfg.rate - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                await sem.acquire()
                task = asyncio.create_task(self._workflow(i))
                task.add_done_callback(lambda _t: sem.release())
                tasks.append(task)
            await asyncio.gather(*tasks)
            await asyncio.gather(*self._late)
        finally:
            if self._pool is not None:
                await self._pool.close()
                AsyncPGInstrumentor().uninstrument()
            if self._redis is not None:
                from opentelemetry.instrumentation.redis import RedisInstrumentor

                await self._redis.aclose()
                RedisInstrumentor().uninstrument()
            if self._server is not None:
                self._server.shutdown()
                RequestsInstrumentor().uninstrument()
            self.provider.force_flush()
            self.provider.shutdown()
        self.summary.spans = self.counter.count
        return self.summary

    async def _end_late(self, span: Any, end_time: int) -> None:
        await asyncio.sleep(self.cfg.late_a2a_delay)
        span.end(end_time=end_time)

    async def _workflow(self, i: int) -> None:
        cfg = self.cfg
        tracer = self.tracer
        wf_type = cfg.types[i % len(cfg.types)]
        agent = f"agent-{i % cfg.agents}"
        failed = self.failures[i]
        timed_out = i in self.timeouts
        duration = cfg.workflow_durations[i % len(cfg.workflow_durations)]
        t0 = time.time_ns()
        root = tracer.start_span(
            f"workflow.{wf_type}",
            start_time=t0,
            attributes={
                "workflow.id": f"wf-{i:06d}",
                "workflow.name": wf_type,
                "gen_ai.agent.id": agent,
                "gen_ai.agent.name": f"{wf_type}-agent",
            },
        )
        root_ctx = trace.set_span_in_context(root)
        agent_span = tracer.start_span(
            f"invoke_agent {wf_type}-agent",
            context=root_ctx,
            start_time=t0 + 1_000,
            attributes={"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.id": agent},
        )
        agent_ctx = trace.set_span_in_context(agent_span)
        offset = 2_000
        for k in range(cfg.tools_per_workflow):
            latency = cfg.tool_latencies[self._tool_i % len(cfg.tool_latencies)]
            self._tool_i += 1
            server = cfg.tool_servers[k % len(cfg.tool_servers)]
            tool = f"tool_{k}"
            fail_tool = failed and k == 0
            if cfg.realtime:
                await asyncio.sleep(latency)
            span = tracer.start_span(
                f"execute_tool {tool}",
                context=agent_ctx,
                kind=SpanKind.CLIENT,
                start_time=t0 + offset,
                attributes={
                    "gen_ai.operation.name": "execute_tool",
                    "gen_ai.tool.name": tool,
                    "mcp.method.name": "tools/call",
                    "mcp.server.name": server,
                },
            )
            if fail_tool:
                span.set_status(Status(StatusCode.ERROR, "connection refused"))
            span.end(end_time=t0 + offset + int(latency * 1e9))
            offset += 1_000
            status = "error" if fail_tool else "success"
            error_type = "connection" if fail_tool else "none"
            self.summary.tool_calls[f"{server}|{tool}|{status}|{error_type}"] += 1
            self.summary.tool_latencies.append(latency)
        chat = tracer.start_span(
            "chat gpt-x",
            context=agent_ctx,
            kind=SpanKind.CLIENT,
            start_time=t0 + offset,
            attributes={"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-x"},
        )
        chat.end(end_time=t0 + offset + 50_000_000)
        a2a_latency = cfg.a2a_latencies[self._a2a_i % len(cfg.a2a_latencies)]
        self._a2a_i += 1
        send = tracer.start_span(
            "a2a send task_delegation",
            context=agent_ctx,
            kind=SpanKind.PRODUCER,
            start_time=t0 + offset,
            attributes={
                "a2a.message.type": "task_delegation",
                "a2a.recipient.type": "worker_agent",
                "a2a.priority": "high" if i % 2 else "normal",
            },
        )
        receive = tracer.start_span(
            "a2a receive task_delegation",
            context=trace.set_span_in_context(send),
            kind=SpanKind.CONSUMER,
            start_time=t0 + offset + int(a2a_latency * 1e9),
            attributes={
                "a2a.message.type": "task_delegation",
                "a2a.sender.type": "planner_agent",
                "a2a.processing.status": "processed",
            },
        )
        receive_end = t0 + offset + int(a2a_latency * 1e9) + 1_000_000
        if not cfg.late_a2a_delay:
            receive.end(end_time=receive_end)
        send.end(end_time=t0 + offset + 500_000)
        self.summary.a2a_sent += 1
        self.summary.a2a_latencies.append(a2a_latency)
        with trace.use_span(agent_span, end_on_exit=False):
            if self._pool is not None:
                async with self._pool.acquire() as conn:
                    await conn.fetchval("SELECT $1::int + 1", i)
                self.summary.db_calls += 1
            if self._redis is not None:
                # a cache lookup (4 keys: the first use of each is a miss, then hits)
                key = f"agent-workload:{cfg.seed}:item:{i % 4}"
                if await self._redis.get(key) is None:
                    self.summary.cache_misses += 1
                    await self._redis.set(key, "cached", ex=60)
                else:
                    self.summary.cache_hits += 1
            if self.http_url:
                response = await asyncio.to_thread(requests.get, f"{self.http_url}{i}", timeout=10)
                self.summary.http_server[
                    f"GET|/api/items/{{id}}|{response.status_code // 100}xx"
                ] += 1
        end = t0 + int(duration * 1e9)
        agent_span.end(end_time=max(end - 1_000, time.time_ns()))
        if failed:
            root.set_status(Status(StatusCode.ERROR, "tool chain failed"))
            outcome = "failed"
        elif timed_out:
            exc = TimeoutError("workflow deadline exceeded")
            root.record_exception(exc)
            root.set_status(Status(StatusCode.ERROR, "TimeoutError: workflow deadline exceeded"))
            outcome = "timeout"
        else:
            root.set_status(Status(StatusCode.OK))
            outcome = "success"
        root.end(end_time=end)
        if cfg.late_a2a_delay:
            # the receiving agent finishes after the workflow returned: exported later
            self._late.append(asyncio.create_task(self._end_late(receive, receive_end)))
        self.summary.workflows[f"{wf_type}|{wf_type}-agent|{outcome}"] += 1  # agent_id: the name
        self.summary.workflow_durations[wf_type].append(duration)


def parse_args(argv: Sequence[str] | None = None) -> WorkloadConfig:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    d = WorkloadConfig()

    def floats(text: str) -> list[float]:
        return [float(x) for x in text.split(",") if x]

    p.add_argument("--endpoint", default=d.endpoint, help="gateway OTLP/gRPC host:port")
    p.add_argument("--workflows", type=int, default=d.workflows)
    p.add_argument("--rate", type=float, default=d.rate, help="workflows/s (0: unlimited)")
    p.add_argument("--concurrency", type=int, default=d.concurrency)
    p.add_argument("--agents", type=int, default=d.agents)
    p.add_argument("--types", default=",".join(d.types))
    p.add_argument("--tools-per-workflow", type=int, default=d.tools_per_workflow)
    p.add_argument("--tool-latencies", type=floats, default=list(d.tool_latencies))
    p.add_argument("--workflow-durations", type=floats, default=list(d.workflow_durations))
    p.add_argument("--a2a-latencies", type=floats, default=list(d.a2a_latencies))
    p.add_argument("--failure-rate", type=float, default=d.failure_rate)
    p.add_argument("--timeout-rate", type=float, default=d.timeout_rate)
    p.add_argument("--http-error-every", type=int, default=d.http_error_every)
    p.add_argument("--no-db", action="store_true")
    p.add_argument("--db-dsn", default=d.db_dsn)
    p.add_argument("--no-http", action="store_true")
    p.add_argument("--redis", action="store_true", help="a cache lookup in Redis per workflow")
    p.add_argument("--redis-url", default=d.redis_url)
    p.add_argument("--realtime", action="store_true", help="sleep for tool latencies")
    p.add_argument("--late-a2a-delay", type=float, default=d.late_a2a_delay)
    p.add_argument("--max-export-batch-size", type=int, default=d.max_export_batch_size)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--service-name", default=d.service_name)
    a = p.parse_args(argv)
    return WorkloadConfig(
        endpoint=a.endpoint,
        workflows=a.workflows,
        rate=a.rate,
        concurrency=a.concurrency,
        agents=a.agents,
        types=[t for t in a.types.split(",") if t],
        tools_per_workflow=a.tools_per_workflow,
        tool_latencies=a.tool_latencies,
        workflow_durations=a.workflow_durations,
        a2a_latencies=a.a2a_latencies,
        failure_rate=a.failure_rate,
        timeout_rate=a.timeout_rate,
        http_error_every=a.http_error_every,
        db=not a.no_db,
        db_dsn=a.db_dsn,
        http=not a.no_http,
        redis=a.redis,
        redis_url=a.redis_url,
        realtime=a.realtime,
        late_a2a_delay=a.late_a2a_delay,
        max_export_batch_size=a.max_export_batch_size,
        seed=a.seed,
        service_name=a.service_name,
    )


def main(argv: Sequence[str] | None = None) -> int:
    cfg = parse_args(argv)
    summary = asyncio.run(Workload(cfg).run())
    json.dump(summary.as_json(), sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
