"""The ``health_check`` extension: liveness and readiness of the gateway over HTTP.

It reads the running service through the host's status interface (:mod:`pipeline.status`):
each component's last reported status (:meth:`pipeline.Host.snapshot`), the sending queues and
failures of the exporters (their :class:`pipeline.status.ExporterStateProvider`, which every
:class:`pipeline.ExporterHelper` is), and the latest dependency results of the components
offering a :class:`pipeline.status.DependencyProvider` (the ``healthcheck`` receivers).
``<path>`` answers the overall state, ``<path>/live`` and ``<path>/ready`` liveness and
readiness: HTTP 200 when good, 503 otherwise, a JSON report either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from pipeline import Component, CreateSettings, Host, server_ssl_context
from pipeline.httpserver import Serving, serve
from pipeline.status import FAILED_STATUSES, DependencyProvider, ExporterStateProvider
from plugins.healthcheckextension.config import HealthCheckExtensionConfig

# Component statuses (Host.report_status) that mean the gateway cannot go on.
FATAL_STATUSES = {str(s) for s in FAILED_STATUSES}


def _format_uptime(seconds: float) -> str:
    return f"{seconds:.3f}s"


@dataclass
class _FailureWindow:
    """Export failures seen in a sliding window, from an exporter's consecutive-failure
    count sampled over time."""

    last_seen: int = 0
    events: deque[tuple[float, int]] = field(default_factory=deque)

    def observe(self, consecutive: int, now: float, window: float) -> int:
        if consecutive > self.last_seen:
            self.events.append((now, consecutive - self.last_seen))
        elif consecutive < self.last_seen and consecutive > 0:
            self.events.append((now, consecutive))  # reset by a success, then failed again
        self.last_seen = consecutive
        while self.events and self.events[0][0] < now - window:
            self.events.popleft()
        return sum(n for _, n in self.events)


class HealthCheckExtension(Component):
    """Serves the gateway's health over HTTP (see the module docstring)."""

    def __init__(self, settings: CreateSettings, config: HealthCheckExtensionConfig) -> None:
        self.settings = settings
        self.config = config
        self.host: Host | None = None
        self._runner: Serving | None = None
        self._sampler: asyncio.Task[None] | None = None
        self._windows: dict[str, _FailureWindow] = {}
        self.up_since = time.time()

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self, host: Host) -> None:
        if self._runner is not None:
            return
        self.host = host
        self.up_since = time.time()
        base = self.config.path.rstrip("/")
        app = web.Application()
        app.router.add_get(self.config.path, self._overall)
        app.router.add_get(f"{base}/live", self._live)
        app.router.add_get(f"{base}/ready", self._ready)
        tls = self.config.tls
        self._runner = await serve(
            app,
            self.config.endpoint,
            server_ssl_context(tls) if tls is not None else None,
            limits=self.config,
            settings=self.settings,
            reserved=True,  # reachable when the data endpoints are flooded
        )
        if self.config.check_collector_pipeline.enabled:
            self._sampler = asyncio.create_task(self._sample_loop(), name="health_check-sampler")
        self.settings.logger.info(
            "health check served", extra={"endpoint": self.config.endpoint, "path": base or "/"}
        )

    async def shutdown(self) -> None:
        sampler, self._sampler = self._sampler, None
        if sampler is not None:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _sample_loop(self) -> None:
        period = min(max(self.config.check_collector_pipeline.interval / 60, 0.05), 1.0)
        while True:
            self._exporters(time.monotonic())
            await asyncio.sleep(period)

    # -- evaluation -----------------------------------------------------------------------
    def _components(self) -> dict[str, dict[str, Any]]:
        if self.host is None:
            return {}
        out = {}
        snapshot = self.host.snapshot(counters=False)
        for comp in sorted(snapshot.components, key=lambda c: c.instance):
            st = comp.status
            if st is None:
                continue
            entry: dict[str, Any] = {"status": st.status}
            if st.error:
                entry["error"] = st.error
            if st.timestamp:
                entry["timestamp"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(st.timestamp))
            out[comp.instance] = entry
        return out

    def _exporters(self, now: float) -> dict[str, dict[str, Any]]:
        ccp = self.config.check_collector_pipeline
        out: dict[str, dict[str, Any]] = {}
        if self.host is None:
            return out
        seen: dict[str, int] = {}
        for entry in self.host.providers(ExporterStateProvider):
            if entry.kind != "exporter":
                continue
            i = seen[entry.instance] = seen.get(entry.instance, -1) + 1
            label = entry.instance if i == 0 else f"{entry.instance} #{i}"
            state = entry.provider.exporter_state()
            window = self._windows.setdefault(label, _FailureWindow())
            recent = window.observe(state.consecutive_failures, now, ccp.interval)
            out[label] = {
                "queue_size": state.queue_size,
                "queue_capacity": state.queue_capacity,
                "consecutive_failures": state.consecutive_failures,
                "recent_failures": recent,
                "last_error": state.last_error,
            }
        return out

    def _dependencies(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        if self.host is None:
            return out
        for entry in self.host.providers(DependencyProvider):
            checks = out.setdefault(entry.id, {})
            checks.update({k: dict(v) for k, v in entry.provider.dependencies().items()})
        return out

    def evaluate(self) -> dict[str, Any]:
        """The full report: ``live``, ``ready``, the reasons when not, and what was read."""
        now = time.time()
        components = self._components()
        reasons: list[str] = []
        live = True
        for label, st in components.items():
            if st["status"] in FATAL_STATUSES:
                live = False
                reasons.append(
                    f"{label}: {st['status']}" + (f" ({st['error']})" if st.get("error") else "")
                )
        ready = live
        for label, st in components.items():
            if st["status"] != "ok" and st["status"] not in FATAL_STATUSES:
                ready = False
                reasons.append(f"{label}: {st['status']}")
        if not components:
            ready = False
            reasons.append("the service has not started any component yet")
        exporters = self._exporters(time.monotonic())
        ccp = self.config.check_collector_pipeline
        for label, ex in exporters.items():
            capacity = ex["queue_capacity"]
            if capacity and ex["queue_size"] >= self.config.exporter_queue_full_ratio * capacity:
                ready = False
                reasons.append(
                    f"{label}: sending queue nearly full ({ex['queue_size']}/{capacity})"
                )
            if ccp.enabled and (
                ex["consecutive_failures"] >= ccp.exporter_failure_threshold
                or ex["recent_failures"] >= ccp.exporter_failure_threshold
            ):
                ready = False
                reasons.append(
                    f"{label}: exports failing ({ex['recent_failures']} failed attempts in "
                    f"{ccp.interval:g}s, {ex['consecutive_failures']} in a row; last error: "
                    f"{ex['last_error']})"
                )
        report: dict[str, Any] = {}
        if self.config.include_dependencies:
            dependencies = self._dependencies()
            report_deps: dict[str, Any] = dependencies
            for receiver, checks in dependencies.items():
                for name, result in checks.items():
                    if result["critical"] and result["status"] == "unhealthy":
                        ready = False
                        reasons.append(
                            f"critical dependency {name} ({receiver}) is unhealthy: "
                            f"{result['message']}"
                        )
            report["dependencies"] = report_deps
        return {
            "status": "Server available" if ready else "Server not available",
            "upSince": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.up_since)),
            "uptime": _format_uptime(now - self.up_since),
            "live": live,
            "ready": ready,
            "reasons": reasons,
            "components": components,
            "exporters": exporters,
            **report,
        }

    # -- HTTP -----------------------------------------------------------------------------
    def _answer(self, report: dict[str, Any], good: bool) -> web.Response:
        status = 200 if good else 503
        body = self.config.response_body
        if body is not None:
            return web.Response(status=status, text=body.healthy if good else body.unhealthy)
        return web.Response(
            status=status,
            text=json.dumps(report, indent=None, default=str),
            content_type="application/json",
        )

    async def _overall(self, _: web.Request) -> web.Response:
        report = self.evaluate()
        return self._answer(report, report["ready"])

    async def _live(self, _: web.Request) -> web.Response:
        report = self.evaluate()
        return self._answer(report, report["live"])

    async def _ready(self, _: web.Request) -> web.Response:
        report = self.evaluate()
        return self._answer(report, report["ready"])
