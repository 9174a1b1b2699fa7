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

from pipeline.component import ComponentID, Kind
from pipeline.config import Config
from pipeline.configtls import server_ssl_context
from pipeline.configtypes import check_bindable, split_endpoint
from pipeline.errors import ConfigError, ConfigErrors
from pipeline.graph import Graph, Node
from pipeline.metricsserver import MetricsServer
from pipeline.netedge import BUDGET, FDS
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


def check_endpoints(config: Config) -> list[ConfigError]:
    """Every endpoint the config will listen on, tried before anything starts."""
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
        targets.append((("service", "telemetry", "metrics", "address"), metrics.address, "tcp"))
    for path, endpoint, transport in targets:
        host, port = split_endpoint(endpoint)
        key = (host, port, transport)
        if port != 0 and key in seen:
            errors.append(
                config.raw.error(path, f"endpoint {endpoint} is also used by {seen[key]}")
            )
            continue
        seen[key] = ".".join(str(p) for p in path)
        reason = check_bindable(endpoint, transport)
        if reason is not None:
            errors.append(
                config.raw.error(path, f"cannot listen on {endpoint} ({transport}): {reason}")
            )
    return errors


ComponentStatus = StatusEvent  # the name before pipeline.status existed


class Service:
    """Runs the graph of a validated config; the :class:`pipeline.Host` of its components."""

    def __init__(self, config: Config, telemetry: SelfTelemetry | None = None) -> None:
        self.config = config
        self.telemetry = telemetry or SelfTelemetry()
        self.graph = Graph(config, self.telemetry)
        self.statuses: dict[str, StatusEvent] = {}
        self.reloads: deque[ReloadRecord] = deque(maxlen=RELOAD_HISTORY)
        self.generation = 1
        self._started: list[Node] = []
        self._fatal: asyncio.Future[BaseException] | None = None
        self._telemetry_server: MetricsServer | None = None
        self._stopped = False
        self.start_time = time.time()

    # -- Host ------------------------------------------------------------------------------
    def get_extension(self, component_id: ComponentID) -> Any | None:
        node = self.graph.extensions.get(component_id)
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
        errors = check_endpoints(self.config)
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
                await wal.replay()
            await self._start_nodes([n for n in flow if n.kind == Kind.RECEIVER])
        except BaseException:
            await self.shutdown()
            raise
        log.info("everything is ready; serving", extra={"pipelines": len(self.config.pipelines)})

    def _report_all(self, node: Node, status: str, error: BaseException | None = None) -> None:
        """The status of every instance run by ``node``'s component (a receiver serving
        several signals is one component with one instance name per signal)."""
        if node.kind == Kind.RECEIVER:
            for other in self.graph.nodes:
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
            self._started.append(node)
            self._report_all(node, "ok")
            log.info(
                "component started",
                extra={"kind": str(node.kind), "component": str(node.id), "instance": node.label},
            )

    async def _start_telemetry(self) -> None:
        metrics = self.config.service.telemetry.metrics
        if metrics.level == "none":
            return
        registry = self.telemetry.registry

        async def collect() -> tuple[bytes, str]:
            # Collecting reads /proc (process metrics): done in a worker thread.
            return await asyncio.to_thread(generate_latest, registry), CONTENT_TYPE_LATEST

        refused = self.telemetry.counter(
            "otelcol_service_refused_requests",
            "Requests or connections the gateway's own metrics endpoint refused.",
            ("transport", "reason"),
        )
        server = MetricsServer("/metrics", collect, lambda r: refused.labels("http", r).inc())
        self.telemetry.gauge(
            "otelcol_server_unfinished_request_bytes",
            "Request data held by all connections while their requests are incomplete "
            "(bounded by service.limits.max_unfinished_request_bytes).",
            (),
        ).set_function(lambda: BUDGET.used)
        tls = metrics.tls
        await server.start(metrics.address, server_ssl_context(tls) if tls is not None else None)
        self._telemetry_server = server
        log.info("own telemetry served", extra={"address": metrics.address})

    async def shutdown(self) -> None:
        """Receivers stop taking data first; everything in flight drains to the exporters,
        bounded by ``service.shutdown_timeout``. Safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.service.shutdown_timeout
        started = {id(n) for n in self._started}
        flow = [n for n in self.graph.flow_order() if id(n) in started]
        extensions = [n for n in self._started if n.kind == Kind.EXTENSION]
        wal = self.graph.wal
        for node in [*flow, None, *reversed(extensions)]:
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
            # After the deadline each component still gets a moment to close its sockets and
            # count what it drops.
            budget = remaining if remaining > 0 else 1.0
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
                await asyncio.gather(task, return_exceptions=True)
                log.error(
                    "component did not finish shutting down in time",
                    extra={"kind": str(node.kind), "component": str(node.id)},
                )
            elif (exc := task.exception()) is not None:
                log.error(
                    "component failed to shut down: %s",
                    exc,
                    extra={"kind": str(node.kind), "component": str(node.id)},
                )
            self._report_all(node, "stopped")
            log.info(
                "component stopped",
                extra={"kind": str(node.kind), "component": str(node.id), "instance": node.label},
            )
        if self._telemetry_server is not None:
            await self._telemetry_server.close()
            self._telemetry_server = None

    @staticmethod
    def _on_signal(sig: signal_module.Signals, stop: asyncio.Event) -> None:
        log.info("signal received; shutting down", extra={"signal": sig.name})
        stop.set()

    async def run(
        self,
        stop: asyncio.Event | None = None,
        install_signal_handlers: bool = True,
        freeze_gc: bool = False,
    ) -> int:
        """Start, serve until SIGTERM/SIGINT (or ``stop``), then shut down. Returns an exit code.

        With ``freeze_gc`` (the ``pipeline run`` process), the objects alive once everything
        has started (modules, classes, configs, component state: several hundred thousand) are
        moved out of the cyclic garbage collector's reach (``gc.freeze``), so its periodic full
        collections scan only what was created while serving: those scans were ~10 % of the
        forward path's CPU at 10,000 spans/s."""
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        if install_signal_handlers:
            for sig in (signal_module.SIGTERM, signal_module.SIGINT):
                loop.add_signal_handler(sig, self._on_signal, sig, stop)
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
        assert self._fatal is not None
        stop_task: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
        fatal: asyncio.Future[Any] = self._fatal
        done, _ = await asyncio.wait({stop_task, fatal}, return_when=asyncio.FIRST_COMPLETED)
        stop_task.cancel()
        code = 1 if fatal in done else 0
        await self.shutdown()
        if install_signal_handlers:
            for sig in (signal_module.SIGTERM, signal_module.SIGINT):
                loop.remove_signal_handler(sig)
        log.info("shutdown complete")
        return code
