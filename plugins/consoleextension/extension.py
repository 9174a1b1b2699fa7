"""The ``console`` extension: the gateway's live view in a browser, and its JSON API.

Everything shown comes through the host's status interface (:mod:`pipeline.status`): the
snapshot (graph, statuses, counters, sending queues, reload history) and the providers the
components offer (workflows and held traces, agent gauges); the console imports no component.

A sampler task computes the view every ``refresh_interval`` while someone watches (a browser
on ``/api/stream``, or an API call within the last minute): per instance the totals and the
rates since the previous view (items in and out, refused, dropped, failed), queue fill and the
exporters' last errors; the workflows released since the last view; the held traces. Each view
is encoded once and pushed to every open stream (server-sent events); a stream holds at most
a few views, and a client that falls behind gets the whole state again instead of the backlog.
The agent gauges are sampled every ``chart_interval`` whether or not anyone watches, into
rings that cover ``history``. Nobody watching: the sampler reads only those gauges, and the
workflow processor stops recording workflows.

The page (``static/``) is shipped in the package: no CDN, nothing loaded from elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

from aiohttp import web

from pipeline import (
    AuthenticationError,
    Component,
    CreateSettings,
    Host,
    ServerAuth,
    server_ssl_context,
    supervise,
)
from pipeline.httpserver import Serving, response_streams, serve
from pipeline.status import (
    AgentMetricsProvider,
    ComponentSnapshot,
    ServiceSnapshot,
    WorkflowProvider,
    plain,
)
from plugins.consoleextension.config import ConsoleConfig

WATCH_IDLE = 60.0  # seconds after the last API call during which the view is still computed
STREAM_BACKLOG = 8  # views a stream may hold before its client gets the whole state again
KEEPALIVE = 15.0  # a comment line on a quiet stream, so proxies keep it open
MAX_SERIES = 64  # agent gauge series charted at most
HELD_SHOWN = 5  # held traces listed per processor
_KIND_ORDER = {"receiver": 0, "processor": 1, "connector": 2, "exporter": 3, "extension": 4}

ASSETS = {
    "index.html": "text/html",
    "console.js": "text/javascript",
    "console.css": "text/css",
    "favicon.svg": "image/svg+xml",
}
_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
}


def totals_of(kind: str, counters: dict[str, float]) -> dict[str, float]:
    """What the console shows of a component's counters: items in and out, refused,
    dropped, failed (cumulative, as ``/metrics`` has them)."""
    c = counters.get
    if kind == "receiver":
        return {
            "in": c("accepted", 0.0) + c("refused", 0.0),
            "out": c("accepted", 0.0),
            "refused": c("refused", 0.0),
            "dropped": c("dropped", 0.0),
            "failed": 0.0,
        }
    if kind == "exporter":
        return {
            "in": c("incoming", 0.0),
            "out": c("sent", 0.0),
            "refused": c("enqueue_failed", 0.0),
            "dropped": c("dropped", 0.0),
            "failed": c("send_failed", 0.0),
        }
    if kind in ("processor", "connector"):
        return {
            "in": c("incoming", 0.0),
            "out": c("outgoing", 0.0),
            "refused": 0.0,
            "dropped": c("dropped", 0.0),
            "failed": 0.0,
        }
    return {"refused": c("refused_requests", 0.0)}


class _Subscriber:
    __slots__ = ("queue", "resync", "wake")

    def __init__(self) -> None:
        self.queue: deque[bytes] = deque()
        self.resync = False
        self.wake = asyncio.Event()

    def push(self, message: bytes) -> None:
        if len(self.queue) >= STREAM_BACKLOG:
            self.queue.clear()
            self.resync = True
        else:
            self.queue.append(message)
        self.wake.set()


class _Series:
    __slots__ = ("labels", "name", "points", "updated")

    def __init__(self, name: str, labels: dict[str, str], size: int) -> None:
        self.name = name
        self.labels = labels
        self.points: deque[tuple[float, float]] = deque(maxlen=size)
        self.updated = 0.0

    def to_dict(self, key: str, since: float = 0.0) -> dict[str, Any]:
        return {
            "key": key,
            "name": self.name,
            "labels": self.labels,
            "points": [[round(t, 3), v] for t, v in self.points if t > since],
        }


class ConsoleExtension(Component):
    """Serves the console (see the module docstring)."""

    def __init__(self, settings: CreateSettings, config: ConsoleConfig) -> None:
        self.settings = settings
        self.config = config
        self.host: Host | None = None
        self._auth: ServerAuth | None = None
        self._serving: Serving | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._subscribers: set[_Subscriber] = set()
        self._last_api = -math.inf
        self._prev: dict[str, dict[str, float]] = {}
        self._prev_time = 0.0
        self.state: dict[str, Any] | None = None  # the last view computed
        self._state_time = -math.inf
        self.workflows: deque[dict[str, Any]] = deque(maxlen=config.max_workflows)
        self._after: dict[int, tuple[WorkflowProvider, int]] = {}
        self.series: dict[str, _Series] = {}
        self._chart_size = max(int(config.history / config.chart_interval), 2)
        self._next_chart = 0.0
        self._last_chart = 0.0
        self._sent_charts = 0.0
        self._assets: dict[str, bytes] = {}
        # the CPU time the console's own work takes on the event loop (its cost, measured)
        self._busy = settings.telemetry.service.counter(
            "otelcol_extension_busy_seconds",
            "CPU time an extension's own work took on the event loop (the console: computing, "
            "encoding and pushing its views, sampling the charts).",
            ("extension",),
        ).labels(settings.name)

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self, host: Host) -> None:
        if self._serving is not None:
            return
        self.host = host
        self._closing = False
        if self.config.auth is not None and host is not None:
            self._auth = ServerAuth.from_config(self.settings, host, self.config.auth)
        folder = resources.files("plugins.consoleextension") / "static"
        self._assets = {name: (folder / name).read_bytes() for name in ASSETS}
        app = web.Application(middlewares=[self._guard])
        app.router.add_get("/", self._index)
        app.router.add_get("/static/{name}", self._asset)
        app.router.add_get("/api/state", self._api_state)
        app.router.add_get("/api/stream", self._api_stream)
        app.router.add_get("/api/workflows", self._api_workflows)
        app.router.add_get("/api/workflows/{trace_id}", self._api_workflow)
        tls = self.config.tls
        self._serving = await serve(
            app,
            self.config.endpoint,
            server_ssl_context(tls) if tls is not None else None,
            limits=self.config,
            settings=self.settings,
            reserved=True,  # reachable while the data endpoints are flooded
        )
        self._task = supervise(self.settings, host, "sampler", self._sample_loop)
        self.settings.logger.info(
            "console served",
            extra={"endpoint": self.config.endpoint, "auth": self.config.auth is not None},
        )

    async def shutdown(self) -> None:
        self._closing = True
        for sub in list(self._subscribers):
            sub.wake.set()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        serving, self._serving = self._serving, None
        if serving is not None:
            await serving.cleanup()

    # -- sampling -----------------------------------------------------------------------------
    def watched(self) -> bool:
        """Whether a browser or an API client looked recently."""
        return bool(self._subscribers) or time.monotonic() - self._last_api < WATCH_IDLE

    async def _sample_loop(self) -> None:
        interval = self.config.refresh_interval
        while not self._closing:
            now = time.monotonic()
            began = time.thread_time()
            if now >= self._next_chart:
                self._next_chart = now + self.config.chart_interval
                self.sample_charts()
            if self.watched():
                self.refresh()
            self._busy.inc(time.thread_time() - began)
            await asyncio.sleep(interval)

    def sample_charts(self) -> list[dict[str, Any]]:
        """Add the agent gauges' current values to their series; returns the new points."""
        if self.host is None:
            return []
        now = time.time()
        out = []
        for entry in self.host.providers(AgentMetricsProvider):
            for gauge in entry.provider.agent_gauges():
                labels = dict(gauge.labels)
                key = gauge.name + "{" + ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
                key += "}"
                series = self.series.get(key)
                if series is None:
                    if len(self.series) >= MAX_SERIES:
                        continue
                    series = self.series[key] = _Series(gauge.name, labels, self._chart_size)
                value = float(gauge.value)
                if not math.isfinite(value):
                    continue
                series.points.append((now, value))
                series.updated = now
                out.append({"key": key, "name": gauge.name, "labels": labels, "t": now})
        for key in [k for k, s in self.series.items() if s.updated < now - self.config.history]:
            del self.series[key]
        self._last_chart = now
        return out

    def refresh(self) -> dict[str, Any]:
        """Compute the view now, push it to the streams; returns it."""
        if self.host is None:
            raise RuntimeError("the console is not started")
        snap = self.host.snapshot()
        now = time.monotonic()
        new_workflows = self._collect_workflows()
        state = self._view(snap, now)
        self.state = state
        self._state_time = now
        if self._subscribers:
            since = self._sent_charts
            update = {
                "type": "update",
                **state,
                "workflows": new_workflows,
                "series": [
                    s.to_dict(k, since) for k, s in self.series.items() if s.updated > since
                ],
            }
            self._sent_charts = self._last_chart
            message = _sse(update)
            for sub in list(self._subscribers):
                sub.push(message)
        return state

    def full_state(self) -> dict[str, Any]:
        """The whole state: the last view, every workflow kept, the chart series."""
        if self.state is None or time.monotonic() - self._state_time > max(
            2 * self.config.refresh_interval, 1.0
        ):
            self.refresh()
        assert self.state is not None
        return {
            "type": "full",
            **self.state,
            "workflows": list(self.workflows),
            "series": [s.to_dict(k) for k, s in self.series.items()],
        }

    def _collect_workflows(self) -> list[dict[str, Any]]:
        assert self.host is not None
        new: list[dict[str, Any]] = []
        seen: set[int] = set()
        for entry in self.host.providers(WorkflowProvider):
            provider = entry.provider
            key = id(provider)
            seen.add(key)
            known = self._after.get(key)
            after = known[1] if known is not None and known[0] is provider else 0
            listed = provider.recent_workflows(after=after, limit=self.config.max_workflows)
            if listed:
                after = listed[-1].seq
            self._after[key] = (provider, after)
            for wf in listed:
                item = plain(wf)
                item["processor"] = entry.instance
                new.append(item)
        for key in [k for k in self._after if k not in seen]:
            del self._after[key]
        new.sort(key=lambda w: w["released_at"])
        self.workflows.extend(new)
        return new[-self.config.max_workflows :]

    def _view(self, snap: ServiceSnapshot, now: float) -> dict[str, Any]:
        assert self.host is not None
        dt = now - self._prev_time
        fresh = 0 < dt <= max(5 * self.config.refresh_interval, 5.0)
        components = []
        prev_all = self._prev
        self._prev = {}
        counter_rates: dict[str, dict[str, float]] = {}
        for comp in snap.components:
            counters = dict(comp.counters)
            totals = totals_of(comp.kind, counters)
            self._prev[comp.instance] = {**counters, **{f"total:{k}": v for k, v in totals.items()}}
            prev = prev_all.get(comp.instance) if fresh else None
            rates: dict[str, float | None] = {
                k: (max(v - prev.get(f"total:{k}", v), 0.0) / dt if prev is not None else None)
                for k, v in totals.items()
            }
            if prev is not None:
                counter_rates[comp.instance] = {
                    k: max(v - prev.get(k, v), 0.0) / dt for k, v in counters.items()
                }
            components.append(self._component(comp, totals, rates))
        self._prev_time = now
        order = {p.id: i for i, p in enumerate(snap.pipelines)}
        places = {
            name: (order[p.id], i)
            for p in snap.pipelines
            for i, name in enumerate((*p.receivers, *p.processors, *p.exporters))
        }
        # the flow's order (receivers, processors in pipeline order, connectors, exporters),
        # then the extensions in the config's order
        components.sort(
            key=lambda c: (_KIND_ORDER.get(c["kind"], 9), places.get(c["instance"], (99, 0)))
        )
        held = []
        for entry in self.host.providers(WorkflowProvider):
            h = plain(entry.provider.held_traces(HELD_SHOWN))
            h["processor"] = entry.instance
            # workflows released per second: the processor's own counter, when it has one
            per_s = counter_rates.get(entry.instance, {}).get("workflow_workflows")
            h["workflows_per_second"] = per_s
            held.append(h)
        return {
            "time": snap.time,
            "start_time": snap.start_time,
            "generation": snap.generation,
            "refresh_interval": self.config.refresh_interval,
            "pipelines": plain(snap.pipelines),
            "components": components,
            "held": held,
            "reloads": plain(snap.reloads),
        }

    @staticmethod
    def _component(
        comp: ComponentSnapshot, totals: dict[str, float], rates: dict[str, float | None]
    ) -> dict[str, Any]:
        st = comp.status
        queue = None
        failing = False
        last_error = None
        last_error_time = None
        if comp.exporters:
            queue = {
                "size": sum(e.queue_size for e in comp.exporters),
                "capacity": sum(e.queue_capacity for e in comp.exporters),
            }
            for e in comp.exporters:
                failing = failing or e.consecutive_failures > 0
                if e.last_error is not None and (
                    last_error_time is None or (e.last_error_time or 0) >= last_error_time
                ):
                    last_error, last_error_time = e.last_error, e.last_error_time or 0.0
        status = st.status if st is not None else "none"
        health = "ok"
        if status in ("permanent_error", "fatal_error") or failing:
            health = "error"
        elif status == "recoverable_error":
            health = "warning"
        elif status != "ok":
            health = "idle"
        return {
            "instance": comp.instance,
            "kind": comp.kind,
            "id": comp.id,
            "type": comp.type,
            "signal": comp.signal,
            "pipelines": list(comp.pipelines),
            "downstream": list(comp.downstream),
            "status": status,
            "status_error": st.error if st is not None else None,
            "status_time": st.timestamp if st is not None else None,
            "health": health,
            "totals": totals,
            "rates": rates,
            "counters": dict(comp.counters),
            "queue": queue,
            "failing": failing,
            "consecutive_failures": sum(e.consecutive_failures for e in comp.exporters),
            "last_error": last_error,
            "last_error_time": last_error_time,
        }

    # -- HTTP -----------------------------------------------------------------------------------
    @web.middleware
    async def _guard(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        if request.path.startswith("/api/"):
            self._last_api = time.monotonic()
            if self._auth is not None:
                try:
                    await self._auth.check(request.headers, "http", request.remote or "")
                except AuthenticationError as exc:
                    return web.json_response(
                        {"error": str(exc)},
                        status=401,
                        headers={**_HEADERS, "WWW-Authenticate": self._auth.www_authenticate},
                    )
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            exc.headers.update(_HEADERS)
            raise
        if not response.prepared:
            response.headers.update(_HEADERS)
        return response

    async def _index(self, _: web.Request) -> web.Response:
        return web.Response(body=self._assets["index.html"], content_type="text/html")

    async def _asset(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        body = self._assets.get(name)
        if body is None:
            raise web.HTTPNotFound(text="no such file\n")
        return web.Response(body=body, content_type=ASSETS[name])

    async def _api_state(self, _: web.Request) -> web.Response:
        began = time.thread_time()
        try:
            return _json(self.full_state())
        finally:
            self._busy.inc(time.thread_time() - began)

    async def _api_workflows(self, request: web.Request) -> web.Response:
        try:
            after = int(request.query.get("after", "0"))
            limit = min(int(request.query.get("limit", "100")), self.config.max_workflows)
        except ValueError:
            raise web.HTTPBadRequest(text="after and limit are integers\n") from None
        if self.state is None:
            self.full_state()
        items = [w for w in self.workflows if w["seq"] > after] if after else list(self.workflows)
        return _json({"workflows": items[-limit:] if limit > 0 else []})

    async def _api_workflow(self, request: web.Request) -> web.Response:
        trace_id = request.match_info["trace_id"]
        if self.host is None or len(trace_id) != 32:
            raise web.HTTPNotFound(text="no such workflow\n")
        summary = next((w for w in reversed(self.workflows) if w["trace_id"] == trace_id), None)
        for entry in self.host.providers(WorkflowProvider):
            spans = entry.provider.workflow_spans(trace_id)
            if spans is not None:
                return _json(
                    {
                        "trace_id": trace_id,
                        "workflow": summary,
                        "processor": entry.instance,
                        "spans": plain(spans),
                    }
                )
        raise web.HTTPNotFound(text="this workflow is no longer kept\n")

    async def _api_stream(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={
                **_HEADERS,
                "Content-Type": "text/event-stream; charset=utf-8",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)
        response_streams(request)
        sub = _Subscriber()
        self._subscribers.add(sub)
        try:
            sub.resync = True
            while not self._closing:
                if sub.resync:
                    sub.resync = False
                    sub.queue.clear()
                    began = time.thread_time()
                    message = _sse(self.full_state())
                    self._busy.inc(time.thread_time() - began)
                    await response.write(message)
                while sub.queue:
                    await response.write(sub.queue.popleft())
                if sub.resync:
                    continue
                sub.wake.clear()
                try:
                    # (asyncio.timeout: wait_for on Python 3.11 loses a cancellation that
                    # arrives as an event wakes the stream, which then went on streaming)
                    async with asyncio.timeout(KEEPALIVE):
                        await sub.wake.wait()
                except TimeoutError:
                    await response.write(b": keep-alive\n\n")
        except (ConnectionError, RuntimeError):
            pass  # the client went away
        finally:
            self._subscribers.discard(sub)
        return response


def _json(data: Any) -> web.Response:
    return web.Response(
        text=json.dumps(data, separators=(",", ":"), default=str),
        content_type="application/json",
    )


def _sse(data: dict[str, Any]) -> bytes:
    body = json.dumps(data, separators=(",", ":"), default=str)
    return f"event: {data['type']}\ndata: {body}\n\n".encode()
