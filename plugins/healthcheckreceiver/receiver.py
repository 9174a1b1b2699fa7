"""The ``healthcheck`` receiver instance: runs every check on its own interval, turns each
result into metrics, and keeps the latest results for the ``health_check`` extension."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from typing import Any

from pipeline import Component, ConsumeError, Consumer, CreateSettings, Host, Metrics
from pipeline.status import DependencyProvider
from pipeline.tasks import supervise
from plugins._metricbuilder import Point, RequestBuilder
from plugins.healthcheckreceiver.checks import Check, CheckResult, Status, make_check
from plugins.healthcheckreceiver.config import HealthCheckReceiverConfig

SCOPE = "pipeline/receiver/healthcheckreceiver"
# Details reported as points of health_check_detail (numbers only; a bounded set of keys).
NUMERIC_DETAILS = (
    "active_connections",
    "database_size_bytes",
    "cluster_enabled",
    "cluster_failed_nodes",
    "cluster_known_nodes",
    "http_status_code",
    "tools_count",
    "cpu_percent",
    "memory_percent",
    "disk_percent",
)


def _tracer() -> Any | None:
    """The OpenTelemetry tracer, and asyncpg instrumented, when the packages are present."""
    try:
        from opentelemetry import trace
    except ImportError:
        return None
    try:
        from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
    except ImportError:
        pass
    else:
        instrumentor = AsyncPGInstrumentor()
        if not instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.instrument()
    return trace.get_tracer("pipeline.receiver.healthcheck")


class HealthCheckReceiver(Component, DependencyProvider):
    """Runs the configured checks and emits ``health_check_status``,
    ``health_check_response_time_seconds``, ``health_check_consecutive_failures`` and
    ``health_check_detail``.

    :attr:`results` holds the latest result per check name; it is offered as a
    :class:`pipeline.status.DependencyProvider` (the ``health_check`` extension finds it with
    ``host.providers(DependencyProvider)``).
    """

    def __init__(
        self,
        settings: CreateSettings,
        config: HealthCheckReceiverConfig,
        next_consumer: Consumer,
    ) -> None:
        self.settings = settings
        self.config = config
        self.next_consumer = next_consumer
        self.checks: list[Check] = [make_check(c) for c in config.checks if not c.disabled]
        self.results: dict[str, CheckResult] = {}
        self._failures: dict[str, int] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._tracer: Any | None = None
        self._started = False
        settings.provide(self)

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self, host: Host) -> None:
        if self._started:
            return
        self._started = True
        for c in self.config.checks:
            if c.disabled:
                self.settings.logger.info(
                    "health check %s (%s) is disabled: its endpoint is empty (an unset "
                    "environment variable?)",
                    c.name,
                    c.type,
                    extra={"check": c.name, "type": c.type, "status": "disabled"},
                )
        if self.config.trace_checks and self.checks:
            self._tracer = _tracer()
            if self._tracer is None:
                self.settings.logger.warning(
                    "trace_checks is on but the OpenTelemetry API is not installed; "
                    "checks run untraced (pip install opentelemetry-api "
                    "opentelemetry-instrumentation-asyncpg)"
                )
        for check in self.checks:
            await check.open()
            self._tasks.append(
                supervise(
                    self.settings,
                    host,
                    f"check {check.config.name}",
                    functools.partial(self._loop, check),
                )
            )

    async def shutdown(self) -> None:
        tasks, self._tasks = self._tasks, []
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        for check in self.checks:
            await check.close()

    # -- running checks -------------------------------------------------------------------
    async def _loop(self, check: Check) -> None:
        loop = asyncio.get_running_loop()
        interval = check.config.interval or self.config.collection_interval
        await asyncio.sleep(self.config.initial_delay)
        next_at = loop.time()
        while True:
            try:
                await self.run_check(check)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug: log it, keep the schedule
                self.settings.logger.exception(
                    "health check crashed: %s", exc, extra={"check": check.config.name}
                )
            next_at += interval
            now = loop.time()
            if next_at < now:
                next_at = now + interval
            await asyncio.sleep(next_at - now)

    async def run_check(self, check: Check) -> CheckResult:
        """Run one check once, record and emit its result."""
        if self._tracer is not None:
            from opentelemetry.trace import Status as SpanStatus
            from opentelemetry.trace import StatusCode

            with self._tracer.start_as_current_span(
                f"health_check {check.config.name}",
                attributes={
                    "health_check.name": check.config.name,
                    "health_check.type": check.config.type,
                    "health_check.critical": check.config.critical,
                },
            ) as span:
                result = await check.run()
                span.set_attribute("health_check.status", str(result.status))
                if result.status == Status.UNHEALTHY:
                    span.set_status(SpanStatus(StatusCode.ERROR, result.message))
        else:
            result = await check.run()
        self._record(result)
        await self._emit(result)
        return result

    def _record(self, result: CheckResult) -> None:
        if result.status == Status.UNHEALTHY:
            self._failures[result.name] = self._failures.get(result.name, 0) + 1
        else:
            self._failures[result.name] = 0
        result.consecutive_failures = self._failures[result.name]
        previous = self.results.get(result.name)
        self.results[result.name] = result
        if previous is None or previous.status != result.status:
            log = (
                self.settings.logger.info
                if result.status == Status.HEALTHY
                else self.settings.logger.warning
            )
            log(
                "health check %s is %s: %s",
                result.name,
                result.status,
                result.message,
                extra={
                    "check": result.name,
                    "type": result.type,
                    "status": str(result.status),
                    "response_time_ms": round(result.response_time * 1000, 1),
                },
            )

    def metrics_of(self, result: CheckResult) -> Metrics:
        """The metrics of one result, as an OTLP request."""
        builder = RequestBuilder()
        w = builder.scope(SCOPE, time.time_ns())
        labels = {"check": result.name, "type": result.type}
        w.gauge(
            "health_check_status",
            "",
            "Health of a dependency: 1 healthy, 0.5 degraded, 0 unhealthy.",
            [(result.status.value_number, {**labels, "critical": str(result.critical).lower()})],
        )
        w.gauge(
            "health_check_response_time_seconds",
            "s",
            "How long the last check took.",
            [(float(result.response_time), labels)],
        )
        w.gauge(
            "health_check_consecutive_failures",
            "{failures}",
            "Unhealthy results in a row.",
            [(result.consecutive_failures, labels)],
        )
        details: list[Point] = []
        for key in NUMERIC_DETAILS:
            value = result.details.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                details.append((value, {**labels, "detail": key}))
        w.gauge(
            "health_check_detail",
            "",
            "Numbers a check measured (active connections, database size, tools...).",
            details,
        )
        # The reference's infrastructure families, for configs/alerts' DatabaseConnectionPool-
        # Exhausted and RedisClusterNodeDown (an application's own pool metric of the same
        # name, passed through, is more precise; see docs/anomaly.md).
        d = result.details
        active = d.get("active_connections")
        if result.type == "postgresql" and isinstance(active, int):
            w.gauge(
                "database_connection_pool_active",
                "",
                "Active connections of the database server (pg_stat_activity, state active).",
                [(active, {"check": result.name})],
            )
        if result.type == "redis" and "cluster_enabled" in d:
            failed = int(d.get("cluster_failed_nodes", 0))
            known = int(d.get("cluster_known_nodes", 1)) if d["cluster_enabled"] else 1
            w.gauge(
                "redis_cluster_nodes",
                "",
                "Redis nodes by state (ok, fail); a standalone server counts as one node.",
                [
                    (max(known - failed, 0), {"check": result.name, "status": "ok"}),
                    (failed, {"check": result.name, "status": "fail"}),
                ],
            )
        return Metrics.from_message(builder.request)  # type: ignore[return-value]

    async def _emit(self, result: CheckResult) -> None:
        payload = self.metrics_of(result)
        try:
            await self.next_consumer.consume(payload)
        except ConsumeError as exc:
            # Counted as refused by the engine (otelcol_receiver_refused_metric_points).
            self.settings.logger.warning(
                "the pipeline refused health check metrics: %s",
                exc,
                extra={"check": result.name, "refused_points": payload.item_count()},
            )

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """The latest results as JSON-ready dicts, by check name."""
        return {name: r.to_json() for name, r in sorted(self.results.items())}

    def dependencies(self) -> dict[str, dict[str, Any]]:
        return self.snapshot()
