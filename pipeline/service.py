"""The running service: start in order, run until told to stop, drain on shutdown."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal as signal_module
import time
from collections import deque
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from pipeline import ownrender, workers
from pipeline.component import ComponentID, Kind
from pipeline.config import Config
from pipeline.configtls import server_ssl_context
from pipeline.configtypes import check_bindable, split_endpoint
from pipeline.errors import ConfigError, ConfigErrors
from pipeline.graph import Graph, Node
from pipeline.metricsserver import MetricsServer
from pipeline.netedge import BUDGET, FDS, HANDOVER
from pipeline.status import (
    ComponentSnapshot,
    ExporterStateProvider,
    PipelineSnapshot,
    ProviderEntry,
    ReloadRecord,
    ServiceSnapshot,
    StatusEvent,
    StatusWatcher,
)
from pipeline.telemetry import LOGGER_NAME, SelfTelemetry

log = logging.getLogger(f"{LOGGER_NAME}.service")

RELOAD_HISTORY = 50  # config reloads remembered for the snapshot (the console shows them)
# how long a component whose shutdown was cancelled (its shutdown_timeout passed) may take to
# end; one that lost or swallowed the cancellation is left behind after it
SHUTDOWN_GRACE = 5.0


def check_endpoints(
    config: Config, held: frozenset[tuple[str, int, str]] = frozenset()
) -> list[ConfigError]:
    """Every endpoint the config will listen on, tried before anything starts (``held``: the
    addresses the running gateway listens on already, not tried on a reload)."""
    errors: list[ConfigError] = []
    seen: dict[tuple[str, int, str], str] = {}
    used: set[tuple[Kind, ComponentID]] = set((Kind.EXTENSION, cid) for cid in config.extensions)
    for pipe in config.pipelines.values():
        for cid in pipe.receivers:
            used.add(
                (Kind.RECEIVER, cid)
                if cid in config.components[Kind.RECEIVER]
                else (Kind.CONNECTOR, cid)
            )
        for cid in pipe.exporters:
            used.add(
                (Kind.EXPORTER, cid)
                if cid in config.components[Kind.EXPORTER]
                else (Kind.CONNECTOR, cid)
            )
        for cid in pipe.processors:
            used.add((Kind.PROCESSOR, cid))
    targets: list[tuple[tuple[str | int, ...], str, str]] = []
    for kind, cid in sorted(used):
        cfg = config.components[kind][cid]
        for ep in cfg.listen_endpoints():
            targets.append(
                ((kind.section, str(cid), *ep.path.split(".")), ep.endpoint, ep.transport)
            )
    metrics = config.service.telemetry.metrics
    if metrics.level != "none":
        for index, address in metrics.pull_addresses():
            path: tuple[str | int, ...] = (
                ("service", "telemetry", "metrics", "address")
                if index < 0
                else ("service", "telemetry", "metrics", "readers", index, "pull")
            )
            targets.append((path, address, "tcp"))
    for path, endpoint, transport in targets:
        host, port = split_endpoint(endpoint)
        key = (host, port, transport)
        if port != 0 and key in seen:
            errors.append(
                config.raw.error(path, f"endpoint {endpoint} is also used by {seen[key]}")
            )
            continue
        seen[key] = ".".join(str(p) for p in path)
        if key in held:
            continue
        reason = check_bindable(endpoint, transport)
        if reason is not None:
            errors.append(
                config.raw.error(path, f"cannot listen on {endpoint} ({transport}): {reason}")
            )
    return errors


ComponentStatus = StatusEvent  # the name before pipeline.status existed


# gc thresholds of a serving ``pipeline run`` process (CPython's defaults: 700, 10, 10). At
# 100,000 spans/s through the agent pipeline, (50,000, 50, 50) took 7.63 to 6.31 CPU-s per 1M
# spans and peak RSS 210 to 181 MiB (benchmarks/results/agent-pipeline.md, Update 13).
GC_THRESHOLDS = (50_000, 50, 50)


class Service:
    """Runs the graph of a validated config; the :class:`pipeline.Host` of its components."""

    def __init__(self, config: Config, telemetry: SelfTelemetry | None = None) -> None:
        self.config = config
        self.telemetry = telemetry or SelfTelemetry()
        self.graph = Graph(config, self.telemetry)
        self.statuses: dict[str, StatusEvent] = {}
        self.reloads: deque[ReloadRecord] = deque(maxlen=RELOAD_HISTORY)
        self.generation = 1
        self._running: set[int] = set()  # the components started and not stopped (by id)
        self.config_files: list[str] | None = None  # what a reload reads (pipeline run's)
        self.config_fingerprint: Any = None  # those files when they were read (the watcher's)
        self._reload_lock = asyncio.Lock()
        self._reload_tasks: set[asyncio.Task[Any]] = set()
        self._next_graph: Graph | None = None  # while a reload starts its new components
        self._reloads_counter = self.telemetry.counter(
            "otelcol_service_config_reloads",
            "Config reloads (SIGHUP, --watch-config), by result: applied, unchanged, invalid "
            "(the running config stays), failed.",
            ("result",),
        )
        self._abandoned_counter = self.telemetry.counter(
            "otelcol_service_components_abandoned",
            "Components left behind at shutdown: their shutdown, cancelled after the timeout, "
            "did not end within a grace period.",
            ("kind", "component"),
        )
        self._fatal: asyncio.Future[BaseException] | None = None
        self._telemetry_servers: list[MetricsServer] = []
        self._telemetry_exports: Any = None
        self._stopped = False
        self._ready = False  # everything started (a reload may run)
        self.start_time = time.time()

    # -- Host ------------------------------------------------------------------------------
    def get_extension(self, component_id: ComponentID) -> Any | None:
        graph = self._next_graph or self.graph
        node = graph.extensions.get(component_id)
        return node.component if node else None

    def report_status(
        self, component: str, status: str, error: BaseException | None = None
    ) -> None:
        event = StatusEvent(str(status), str(error) if error else None, time.time())
        self.statuses[component] = event
        for node in self.graph.extensions.values():
            watcher = node.component
            if isinstance(watcher, StatusWatcher):
                try:
                    watcher.component_status_changed(component, event)
                except Exception as exc:
                    log.error(
                        "a status watcher failed: %s",
                        exc,
                        exc_info=exc,
                        extra={"component": str(node.id)},
                    )

    def report_fatal_error(self, error: BaseException) -> None:
        log.error("fatal error reported by a component: %s", error)
        if self._fatal is not None and not self._fatal.done():
            self._fatal.set_result(error)

    def providers(self, interface: type) -> list[ProviderEntry]:
        out = []
        for node in [*self.graph.extensions.values(), *self.graph.nodes]:
            if node.settings is None:
                continue
            for provider in node.settings.providers:
                if isinstance(provider, interface):
                    out.append(ProviderEntry(node.label, str(node.kind), str(node.id), provider))
        return out

    def get_factory(self, kind: Kind, type_: str) -> Any | None:
        return self.config.registry.get(kind, type_)

    def snapshot(self, counters: bool = True) -> ServiceSnapshot:
        graph = self.graph
        samples = self.telemetry.component_samples() if counters else {}
        components = []
        for node in [*graph.extensions.values(), *graph.nodes]:
            values: dict[str, float] = {}
            if counters:
                kind, cid = str(node.kind), str(node.id)
                keys = [(kind, cid, ""), (kind, cid, node.signal)]
                if " -> " in node.signal:
                    keys.insert(1, (kind, cid, node.signal.split(" -> ")[0]))
                for key in keys:
                    for name, value in samples.get(key, {}).items():
                        values[name] = values.get(name, 0.0) + value
            exporters = tuple(
                p.exporter_state()
                for p in (node.settings.providers if node.settings else ())
                if isinstance(p, ExporterStateProvider)
            )
            components.append(
                ComponentSnapshot(
                    node.label,
                    str(node.kind),
                    str(node.id),
                    node.id.type,
                    node.signal,
                    tuple(str(p) for p in node.pipelines),
                    tuple(d.label for d in node.downstream),
                    self.statuses.get(node.label),
                    values,
                    exporters,
                )
            )
        pipelines = []
        connectors = [n for n in graph.nodes if n.kind == Kind.CONNECTOR]

        def side(cid: ComponentID, kind: Kind, signal: str, receiving: bool) -> list[str]:
            if kind != Kind.CONNECTOR:
                return [f"{kind} {cid} ({signal})"]
            index = 1 if receiving else 0
            return [
                n.label
                for n in connectors
                if n.id == cid and n.signal.split(" -> ")[index] == signal
            ]

        components_of = self.config.components
        for pid, pipe in self.config.pipelines.items():
            signal = str(pid.signal)
            receivers: list[str] = []
            for rid in pipe.receivers:
                kind = Kind.RECEIVER if rid in components_of[Kind.RECEIVER] else Kind.CONNECTOR
                receivers += side(rid, kind, signal, True)
            tails: list[str] = []
            for eid in pipe.exporters:
                kind = Kind.EXPORTER if eid in components_of[Kind.EXPORTER] else Kind.CONNECTOR
                tails += side(eid, kind, signal, False)
            pipelines.append(
                PipelineSnapshot(
                    str(pid),
                    signal,
                    tuple(receivers),
                    tuple(f"processor {p} (pipeline {pid})" for p in pipe.processors),
                    tuple(tails),
                )
            )
        return ServiceSnapshot(
            time.time(),
            self.start_time,
            self.generation,
            tuple(pipelines),
            tuple(components),
            tuple(self.reloads),
        )

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        """Build and start everything: extensions, then exporters ... receivers last.

        Raises ``ConfigErrors`` when an endpoint cannot be bound; on any start failure the
        components already started are shut down before the error propagates.
        """
        self._fatal = asyncio.get_running_loop().create_future()
        ctx = workers.current()
        # the primary worker checks the endpoints; the others share its data endpoints (and a
        # restarted primary its siblings': they hold them, SO_REUSEPORT, and would be "in use")
        check = ctx is None or (ctx.primary and not ctx.restarted)
        errors = check_endpoints(self.config) if check else []
        if errors:
            raise ConfigErrors(errors)
        limits = self.config.service.limits
        BUDGET.max_bytes = limits.max_unfinished_request_bytes
        FDS.configure(limits.reserved_file_descriptors)
        self.graph.build()
        flow = list(reversed(self.graph.flow_order()))
        wal = self.graph.wal
        try:
            await self._start_telemetry()
            await self._start_nodes(list(self.graph.extensions.values()))
            if wal is not None:
                try:
                    waiting = await asyncio.to_thread(wal.open, self)
                except Exception as exc:
                    log.error("cannot open the write-ahead log: %s", exc)
                    raise
                log.info(
                    "write-ahead log open",
                    extra={"storage": str(wal.storage), "records_to_replay": waiting},
                )
            # receivers last: what the write-ahead log holds is replayed before new data
            await self._start_nodes([n for n in flow if n.kind != Kind.RECEIVER])
            if wal is not None:
                # bounded: a replay the pipeline pushes back on goes on in the background
                await wal.replay_at_start(self.telemetry)
            await self._start_nodes([n for n in flow if n.kind == Kind.RECEIVER])
        except BaseException:
            await self.shutdown()
            raise
        self._ready = True
        log.info("everything is ready; serving", extra={"pipelines": len(self.config.pipelines)})
        if ctx is not None:
            ctx.service = self
            ctx.ready()

    def _report_all(self, node: Node, status: str, error: BaseException | None = None) -> None:
        """The status of every instance run by ``node``'s component (a receiver serving
        several signals is one component with one instance name per signal)."""
        if node.kind == Kind.RECEIVER:
            for other in (self._next_graph or self.graph).nodes:
                if other.component is node.component and other is not node:
                    self.report_status(other.label, status, error)
        self.report_status(node.label, status, error)

    async def _start_nodes(self, nodes: list[Node]) -> None:
        for node in nodes:
            self._report_all(node, "starting")
            try:
                await node.component.start(self)
            except Exception as exc:
                self._report_all(node, "permanent_error", exc)
                log.error(
                    "component failed to start: %s",
                    exc,
                    extra={"kind": str(node.kind), "component": str(node.id)},
                )
                raise
            self._running.add(id(node.component))
            self._report_all(node, "ok")
            log.info(
                "component started",
                extra={"kind": str(node.kind), "component": str(node.id), "instance": node.label},
            )

    async def _start_telemetry(self) -> None:
        from pipeline.telemetryexport import start_exports

        telemetry = self.config.service.telemetry
        self._telemetry_exports = await start_exports(telemetry, self.telemetry.registry)
        metrics = telemetry.metrics
        if metrics.level == "none":
            return
        registry = self.telemetry.registry
        ctx = workers.current()
        if ctx is not None:
            # one endpoint, in the primary worker: every worker's own metrics merged, from
            # each one's share of the lines (pipeline.ownrender); its families for the cases
            # only merge_families merges
            lines = ownrender.Shares()
            ctx.expose("telemetry", lambda: list(registry.collect()))
            ctx.expose("telemetry-lines", lambda: lines.share(registry.collect()))
            if not ctx.primary:
                return
        restart_lines, renderer = ownrender.Shares(), ownrender.Renderer()

        async def collect() -> tuple[bytes, str]:
            # Collecting reads /proc (process metrics): done in a worker thread.
            if ctx is None:
                return await asyncio.to_thread(generate_latest, registry), CONTENT_TYPE_LATEST
            text = renderer.render(await ctx.gather("telemetry-lines"))
            if text is not None:
                restarts = workers.restart_families(ctx.run_dir, ctx.count)
                tail = renderer.render([restart_lines.share(restarts)])
                if tail is not None:
                    return text + tail, CONTENT_TYPE_LATEST
            shares = await ctx.gather("telemetry")
            families = workers.merge_families(shares, gauges="sum")
            families += workers.restart_families(ctx.run_dir, ctx.count)
            text = await asyncio.to_thread(
                generate_latest,
                workers.FamiliesCollector(families),
            )
            return text, CONTENT_TYPE_LATEST

        refused = self.telemetry.counter(
            "otelcol_service_refused_requests",
            "Requests or connections the gateway's own metrics endpoint refused.",
            ("transport", "reason"),
        )
        self.telemetry.gauge(
            "otelcol_server_unfinished_request_bytes",
            "Request data held by all connections while their requests are incomplete "
            "(bounded by service.limits.max_unfinished_request_bytes).",
            (),
        ).set_function(lambda: BUDGET.used)
        tls = metrics.tls
        for _, address in metrics.pull_addresses():
            server = MetricsServer("/metrics", collect, lambda r: refused.labels("http", r).inc())
            await server.start(address, server_ssl_context(tls) if tls is not None else None)
            self._telemetry_servers.append(server)
            log.info("own telemetry served", extra={"address": address})

    async def shutdown(self) -> None:
        """Receivers stop taking data first; everything in flight drains to the exporters,
        bounded by ``service.shutdown_timeout``. Safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.service.shutdown_timeout
        running = self._running
        flow = [n for n in self.graph.flow_order() if id(n.component) in running]
        extensions = [n for n in self.graph.extensions.values() if id(n.component) in running]
        wal = self.graph.wal
        if wal is not None:
            # a replay under way stops first (it feeds the pipelines, as a receiver): what it
            # did not replay stays in the log for the next start
            await wal.stop_replay(min(self.config.service.shutdown_timeout, SHUTDOWN_GRACE))
        ctx = workers.current()
        for node in [*flow, None, *reversed(extensions)]:
            if ctx is not None and (node is None or node.kind != Kind.RECEIVER):
                # the receivers stopped: what this worker holds for its siblings is
                # delivered, and theirs taken, before the pipelines stop (handover)
                await ctx.drain(max(deadline - loop.time(), 0.0))
                ctx = None
            if node is None:
                # everything that delivers has stopped: what is still held is replayed at
                # the next start (cyclic garbage first, so dead payloads release their tokens)
                if wal is not None:
                    gc.collect()
                    wal.close()
                continue
            remaining = max(deadline - loop.time(), 0.0)
            if remaining <= 0 and wal is not None:
                wal.freeze()
            await self._stop_node(node, remaining, report=True, wal=wal)
        for server in self._telemetry_servers:
            await server.close()
        self._telemetry_servers = []
        if self._telemetry_exports is not None:
            await self._telemetry_exports.close()
            self._telemetry_exports = None

    async def _stop_node(self, node: Node, remaining: float, report: bool, wal: Any = None) -> None:
        """Shut one component down within ``remaining`` seconds (after the deadline it still
        gets a moment to close its sockets and count what it drops); with a write-ahead log
        (``wal``), a component cut off stops it from marking records done first."""
        budget = remaining if remaining > 0 else 1.0
        if report:
            self._report_all(node, "stopping")
        task = asyncio.ensure_future(node.component.shutdown())
        try:
            done, _ = await asyncio.wait({task}, timeout=budget)
        except asyncio.CancelledError:
            task.cancel()
            raise
        if not done:
            # data dropped from now on is not delivered: with a write-ahead log, it stays
            # there for the next start instead of being marked done
            if wal is not None:
                wal.freeze()
            task.cancel()
            # bounded: a component that loses (or swallows) the cancellation must not keep
            # the gateway from stopping; it is left behind and the others stop
            ended, _ = await asyncio.wait({task}, timeout=min(budget, SHUTDOWN_GRACE))
            if ended:
                if not task.cancelled():
                    task.exception()  # retrieved (a late error is not this shutdown's)
                log.error(
                    "component did not finish shutting down in time",
                    extra={"kind": str(node.kind), "component": str(node.id)},
                )
            else:
                task.add_done_callback(lambda t: t.cancelled() or t.exception())
                self._abandoned_counter.labels(str(node.kind), str(node.id)).inc()
                log.error(
                    "component did not end after its shutdown was cancelled; left behind",
                    extra={"kind": str(node.kind), "component": str(node.id)},
                )
        elif (exc := task.exception()) is not None:
            log.error(
                "component failed to shut down: %s",
                exc,
                extra={"kind": str(node.kind), "component": str(node.id)},
            )
        self._running.discard(id(node.component))
        if report:
            self._report_all(node, "stopped")
        log.info(
            "component stopped",
            extra={"kind": str(node.kind), "component": str(node.id), "instance": node.label},
        )

    # -- config reload -----------------------------------------------------------------------
    async def reload(self, trigger: str = "api", files: list[str] | None = None) -> ReloadRecord:
        """Apply the config in ``files`` (default: those the gateway was started with) to the
        running gateway (see :mod:`pipeline.reload`). Returns what happened, also kept in the
        snapshot's reload history and counted in ``otelcol_service_config_reloads``."""
        async with self._reload_lock:
            began = time.monotonic()
            record = await self._reload(trigger, files or self.config_files or [], began)
            self.reloads.append(record)
            self._reloads_counter.labels(record.result).inc()
            return record

    def _reload_record(
        self, trigger: str, result: str, began: float, errors: list[str] | None = None, **kw: Any
    ) -> ReloadRecord:
        return ReloadRecord(
            time.time(),
            trigger,
            result,
            tuple(errors or ()),
            duration=time.monotonic() - began,
            generation=self.generation,
            **kw,
        )

    async def _reload(self, trigger: str, files: list[str], began: float) -> ReloadRecord:
        from pipeline.config import load_config
        from pipeline.reload import blockers, endpoints, restart_needed

        if self._stopped or not self._ready:
            return self._reload_record(
                trigger, "failed", began, ["the gateway is not running (starting or stopping)"]
            )
        if not files:
            return self._reload_record(
                trigger, "failed", began, ["the gateway was not started from config files"]
            )
        log.info("reloading the configuration", extra={"trigger": trigger})
        try:
            config = await asyncio.to_thread(load_config, files, self.config.registry)
        except ConfigErrors as exc:
            return self._invalid(trigger, began, [str(e) for e in exc.errors])
        problems = restart_needed(self.config, config)
        if config.service.workers != self.config.service.workers:
            problems.append(
                "service.workers cannot change on a reload (restart the gateway to change it)"
            )
        held = (
            frozenset(key for node in self._all_nodes(self.graph) for key in endpoints(node))
            | self._telemetry_endpoint()
        )
        ctx = workers.current()
        if ctx is None or ctx.primary:  # the other workers share the primary's endpoints
            problems += [str(e) for e in check_endpoints(config, held)]
        if problems:
            return self._invalid(trigger, began, problems)
        for warning in config.warnings:
            log.warning("%s", warning)
        wal = self.graph.wal
        if wal is not None:
            # a write-ahead log that failed takes writes again (the storage may work again):
            # a reload is how an operator restarts it without a restart of the gateway
            try:
                if await wal.restart_if_failed():
                    log.warning("reload: the write-ahead log had failed; it takes writes again")
            except Exception as exc:
                log.error("reload: the write-ahead log cannot start again: %s", exc)
                return self._reload_record(
                    trigger, "failed", began, [f"the write-ahead log cannot start again: {exc}"]
                )
        old = self.graph
        graph = Graph(config, self.telemetry, previous=old)
        try:
            graph.build()
        except Exception as exc:
            log.error("reload: a component cannot be created: %s", exc, exc_info=exc)
            return self._reload_record(trigger, "failed", began, [f"{type(exc).__name__}: {exc}"])
        new_nodes = self._all_nodes(graph)
        kept = {id(n.component) for n in new_nodes if n.reused}
        removed = [n for n in self._all_nodes(old) if id(n.component) not in kept]
        added = [n for n in new_nodes if not n.reused]
        if (
            not added
            and not removed
            and (
                config.pipelines == self.config.pipelines and config.service == self.config.service
            )
        ):
            log.info("reload: the configuration did not change")
            return self._reload_record(trigger, "unchanged", began, kept=len(kept))
        waits = {id(n): blockers(n, removed) for n in added}
        for node in added:
            if waits[id(node)] and node.gate is not None:
                node.gate.clear()  # data for it waits until its predecessor has stopped
        HANDOVER.begin()
        self._next_graph = graph
        statuses = dict(self.statuses)
        started: list[Node] = []
        try:
            now = [n for n in added if not waits[id(n)]]
            order = [n for n in graph.extensions.values() if n in now]
            flow = list(reversed(graph.flow_order()))
            order += [n for n in flow if n in now and n.kind != Kind.RECEIVER]
            order += [n for n in flow if n in now and n.kind == Kind.RECEIVER]
            for node in order:
                await self._start_nodes([node])
                started.append(node)
        except Exception as exc:
            # nothing was switched yet: the running graph stays as it was
            self._next_graph = None
            for node in reversed(started):
                await self._stop_node(node, self.config.service.shutdown_timeout, report=False)
            self.statuses = statuses  # the running components' statuses as they were
            HANDOVER.end()
            failed = next((n for n in order if n not in started), None)
            where = f"{failed.label}: " if failed is not None else ""
            return self._reload_record(trigger, "failed", began, [f"{where}{exc}"])
        # the switch: kept components pass data to their new successors from now on
        graph.rewire()
        previous_config = self.config
        self.graph = graph
        self.config = config
        self._next_graph = None
        self.generation += 1
        self._apply_service(previous_config)
        errors: list[str] = []
        try:
            await self._restart_telemetry(previous_config)
        except OSError as exc:
            errors.append(f"service.telemetry.metrics: {exc}")
        # the old components leave in flow order (what they hold drains through them), the
        # new ones that waited for them start as soon as they are gone
        waiting = [n for n in added if waits[id(n)]]
        stopped: set[int] = set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + config.service.shutdown_timeout
        running = self._running
        old_flow = [n for n in old.flow_order() if n in removed and id(n.component) in running]
        old_ext = [
            n for n in old.extensions.values() if n in removed and id(n.component) in running
        ]
        for node in [*old_flow, *reversed(old_ext)]:
            await self._stop_node(node, max(deadline - loop.time(), 0.0), report=False)
            stopped.add(id(node))
            for new in list(waiting):
                if all(id(b) in stopped for b in waits[id(new)]):
                    waiting.remove(new)
                    try:
                        await self._start_nodes([new])
                    except Exception as exc:
                        errors.append(f"{new.label}: {exc}")
                        continue
                    if new.gate is not None:
                        new.gate.set()
        for new in waiting:  # what it waited for was not running
            try:
                await self._start_nodes([new])
            except Exception as exc:
                errors.append(f"{new.label}: {exc}")
                continue
            if new.gate is not None:
                new.gate.set()
        HANDOVER.end()
        # every instance (a receiver serving several signals is one component, several
        # instances): those of new components, those of the components that left
        old_all = [*old.extensions.values(), *old.nodes]
        new_all = [*graph.extensions.values(), *graph.nodes]
        labels = {n.label for n in new_all}
        gone = {id(n.component) for n in removed}
        new_labels = {n.label for n in new_all if not n.reused}
        old_labels = {n.label for n in old_all if id(n.component) in gone}
        for node in old_all:
            if node.label not in labels:
                self.statuses.pop(node.label, None)
        record = self._reload_record(
            trigger,
            "failed" if errors else "applied",
            began,
            errors,
            added=tuple(sorted(new_labels - old_labels)),
            removed=tuple(sorted(old_labels - labels)),
            replaced=tuple(sorted(new_labels & old_labels)),
            kept=len(kept),
        )
        log.info(
            "configuration reloaded",
            extra={
                "generation": self.generation,
                "added": len(record.added),
                "removed": len(record.removed),
                "replaced": len(record.replaced),
                "kept": record.kept,
                "errors": len(errors),
            },
        )
        return record

    def _invalid(self, trigger: str, began: float, errors: list[str]) -> ReloadRecord:
        # as `pipeline validate` prints them
        log.error(
            "invalid configuration (%d error%s); the running configuration stays",
            len(errors),
            "s" if len(errors) != 1 else "",
            extra={"trigger": trigger},
        )
        for err in errors:
            log.error("  error: %s", err)
        return self._reload_record(trigger, "invalid", began, errors)

    @staticmethod
    def _all_nodes(graph: Graph) -> list[Node]:
        """Extensions and the flow, one node per component."""
        seen: set[int] = set()
        out = []
        for node in [*graph.extensions.values(), *graph.flow_order()]:
            if id(node.component) not in seen:
                seen.add(id(node.component))
                out.append(node)
        return out

    def _telemetry_endpoint(self) -> frozenset[tuple[str, int, str]]:
        metrics = self.config.service.telemetry.metrics
        if metrics.level == "none" or not self._telemetry_servers:
            return frozenset()
        out = set()
        for _, address in metrics.pull_addresses():
            host, port = split_endpoint(address)
            out.add((host, port, "tcp"))
        return frozenset(out)

    def _apply_service(self, previous: Config) -> None:
        limits = self.config.service.limits
        if limits != previous.service.limits:
            BUDGET.max_bytes = limits.max_unfinished_request_bytes
            FDS.configure(limits.reserved_file_descriptors)

    async def _restart_telemetry(self, previous: Config) -> None:
        now, before = self.config.service.telemetry, previous.service.telemetry
        if (now.metrics, now.resource) == (before.metrics, before.resource):
            return
        servers, self._telemetry_servers = self._telemetry_servers, []
        exports, self._telemetry_exports = self._telemetry_exports, None
        HANDOVER.begin()
        try:
            for server in servers:
                await server.close()
            if exports is not None:
                await exports.close()
            await self._start_telemetry()
        finally:
            HANDOVER.end()

    def _on_sighup(self) -> None:
        log.info("signal received; reloading the configuration", extra={"signal": "SIGHUP"})
        task = asyncio.get_running_loop().create_task(self.reload("SIGHUP"))
        self._reload_tasks.add(task)
        task.add_done_callback(self._reload_tasks.discard)

    @staticmethod
    def _on_signal(sig: signal_module.Signals, stop: asyncio.Event) -> None:
        log.info("signal received; shutting down", extra={"signal": sig.name})
        stop.set()

    async def run(
        self,
        stop: asyncio.Event | None = None,
        install_signal_handlers: bool = True,
        freeze_gc: bool = False,
        watch_config: bool = False,
    ) -> int:
        """Start, serve until SIGTERM/SIGINT (or ``stop``), then shut down. Returns an exit code.

        With ``freeze_gc`` (the ``pipeline run`` process), the objects alive once everything
        has started (modules, classes, configs, component state: several hundred thousand) are
        moved out of the cyclic garbage collector's reach (``gc.freeze``), so its periodic full
        collections scan only what was created while serving: those scans were ~10 % of the
        forward path's CPU at 10,000 spans/s. The collector's thresholds are then raised
        (:data:`GC_THRESHOLDS`): what the pipeline allocates is freed by reference counting,
        and the state the agent components hold (a join window of tool calls) made the
        default young-generation collections a sixth of the agent pipeline's CPU at 100,000
        spans/s.

        With :attr:`config_files` set, SIGHUP reloads them (:meth:`reload`); with
        ``watch_config`` as well, so does a change of their content."""
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        if install_signal_handlers:
            for sig in (signal_module.SIGTERM, signal_module.SIGINT):
                loop.add_signal_handler(sig, self._on_signal, sig, stop)
            if self.config_files:
                loop.add_signal_handler(signal_module.SIGHUP, self._on_sighup)
        # a start that waits (a replay the pipeline pushes back on) still ends on a signal
        starting = asyncio.ensure_future(self.start())
        stop_early = asyncio.ensure_future(stop.wait())
        await asyncio.wait({starting, stop_early}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            starting.cancel()
            await asyncio.gather(starting, return_exceptions=True)
            await self.shutdown()
            if install_signal_handlers:
                for sig in (signal_module.SIGTERM, signal_module.SIGINT):
                    loop.remove_signal_handler(sig)
            return 0
        stop_early.cancel()
        starting.result()
        if freeze_gc:
            gc.collect()
            gc.freeze()
            gc.set_threshold(*GC_THRESHOLDS)
        watcher: asyncio.Task[None] | None = None
        if watch_config and self.config_files:
            from pipeline.reload import ConfigWatcher

            files = self.config_files
            watcher = loop.create_task(
                ConfigWatcher(
                    files, lambda: self.reload("watch"), initial=self.config_fingerprint
                ).run(),
                name="config-watcher",
            )
        assert self._fatal is not None
        stop_task: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
        fatal: asyncio.Future[Any] = self._fatal
        done, _ = await asyncio.wait({stop_task, fatal}, return_when=asyncio.FIRST_COMPLETED)
        stop_task.cancel()
        code = 1 if fatal in done else 0
        if watcher is not None:
            watcher.cancel()
        for task in list(self._reload_tasks):
            task.cancel()
        async with self._reload_lock:  # a reload under way finishes first
            await self.shutdown()
        if install_signal_handlers:
            for sig in (signal_module.SIGTERM, signal_module.SIGINT):
                loop.remove_signal_handler(sig)
            if self.config_files:
                loop.remove_signal_handler(signal_module.SIGHUP)
        log.info("shutdown complete")
        return code
