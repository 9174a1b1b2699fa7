"""The ``loadbalancing`` exporter at run time.

Each request is split at byte level (:mod:`plugins._otlproute`) by its routing key and every
part goes to the backend the hash ring gives for its key. Per backend: a sending queue
(``protocol.otlp.sending_queue``: ``queue_size`` requests, ``num_consumers`` senders) in this
exporter, and an ``otlp`` exporter created through the host from ``protocol.otlp`` (its own
queue turned off: it sends each part with its ``retry_on_failure`` and ``timeout``).

When the resolver drops a backend, what waits in its queue and what is being sent to it
(retries included) is taken back, split again on the new ring and queued for the backends
that own it now (counted in ``otelcol_loadbalancer_rerouted_<items>``): nothing in flight is
lost (a send cancelled while the backend had already received it reaches the new owner
too: at least once). A new backend takes only the keys of its arcs of the ring.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import deque
from typing import Any

from pipeline import (
    Component,
    ComponentID,
    ConsumeError,
    CreateSettings,
    Host,
    Kind,
    MalformedDataError,
    Payload,
    PermanentError,
    RetryableError,
    Signal,
)
from pipeline.pdata import payload_type
from pipeline.ratelimit import LogLimiter
from pipeline.status import ExporterState, ExporterStateProvider
from plugins._otlproute import DEFAULT_KEY, split
from plugins.loadbalancingexporter.backends import DNSResolver, HashRing, with_port
from plugins.loadbalancingexporter.config import LoadBalancingConfig


class _Waiter:
    """Completion of one ``consume`` when the backends' queues are off: done when every part
    of it (re-routed parts included) was sent or dropped."""

    __slots__ = ("error", "future", "remaining")

    def __init__(self, parts: int) -> None:
        self.remaining = parts
        self.error: BaseException | None = None
        self.future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def done(self, error: BaseException | None = None) -> None:
        self.remaining -= 1
        if error is not None and self.error is None:
            self.error = error
        if self.remaining <= 0 and not self.future.done():
            self.future.set_result(None)


class _Item:
    __slots__ = ("payload", "waiter")

    def __init__(self, payload: Payload, waiter: _Waiter | None) -> None:
        self.payload = payload
        self.waiter = waiter


class _Backend:
    def __init__(self, endpoint: str, exporter: Any) -> None:
        self.endpoint = endpoint
        self.exporter = exporter
        self.queue: deque[_Item] = deque()
        self.wake = asyncio.Event()
        self.workers: list[asyncio.Task[None]] = []
        self.current: dict[asyncio.Task[Any], _Item] = {}
        self.removed = False


class LoadBalancingExporter(Component, ExporterStateProvider):
    """Offered to the host as an :class:`ExporterStateProvider`: its queues (summed over the
    backends) and failures show in the console and the snapshot."""

    mutates_data = False

    def __init__(self, settings: CreateSettings, config: LoadBalancingConfig, signal: Signal):
        self.settings = settings
        self.config = config
        self.signal = signal
        self.routing_key = config.routing_key or DEFAULT_KEY[signal]
        otlp = dict(config.protocol.otlp)
        queue = dict(otlp.get("sending_queue") or {})
        self.queue_enabled = bool(queue.get("enabled", True))
        self.queue_size = int(queue.get("queue_size", 1000))
        self.num_consumers = int(queue.get("num_consumers", 10)) if self.queue_enabled else 64
        # each backend's otlp exporter sends synchronously: the queue is this exporter's
        otlp["sending_queue"] = {**queue, "enabled": False}
        self._otlp_options = otlp
        self.backends: dict[str, _Backend] = {}
        self.ring = HashRing([])
        self._host: Host | None = None
        self._factory: Any = None
        self._resolver_task: asyncio.Task[None] | None = None
        self._update_lock = asyncio.Lock()
        self._closing = False
        self.rerouted = 0  # items routed again (also otelcol_loadbalancer_rerouted_<items>)
        self._closing_tasks: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._make = payload_type(signal)
        self.consecutive_failures = 0
        self.last_error: str | None = None
        self.last_error_time: float | None = None
        settings.provide(self)
        tel = settings.telemetry.service
        name = settings.name
        self._num_backends = tel.gauge(
            "otelcol_loadbalancer_num_backends",
            "Backends the load-balancing exporter currently routes to.",
            ("exporter", "data_type"),
        ).labels(name, str(signal))
        self._resolutions = tel.counter(
            "otelcol_loadbalancer_num_resolutions",
            "Resolutions of the backends, by resolver and success.",
            ("exporter", "resolver", "success"),
        )
        self._outcome = tel.counter(
            "otelcol_loadbalancer_backend_outcome",
            "Parts sent to a backend, by endpoint and success.",
            ("exporter", "endpoint", "success"),
        )
        self._rerouted = tel.counter(
            f"otelcol_loadbalancer_rerouted_{signal.item_name}",
            "Items taken back from a backend that left (queued or being sent) and routed "
            "again to the backends that own them now.",
            ("exporter", "data_type"),
        ).labels(name, str(signal))
        self._queue_gauge = tel.gauge(
            "otelcol_loadbalancer_queue_size",
            "Parts waiting in the per-backend sending queues.",
            ("exporter", "data_type"),
        ).labels(name, str(signal))

    def exporter_state(self) -> ExporterState:
        return ExporterState(
            str(self.signal),
            sum(len(b.queue) for b in self.backends.values()),
            self.queue_size * len(self.backends) if self.queue_enabled else 0,
            self.consecutive_failures,
            self.last_error,
            self.last_error_time,
        )

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self, host: Host) -> None:
        self._host = host
        get_factory = getattr(host, "get_factory", None)
        self._factory = get_factory(Kind.EXPORTER, "otlp") if get_factory else None
        if self._factory is None:
            from pipeline.pluginmanager import default_registry

            self._factory = default_registry().get(Kind.EXPORTER, "otlp")
        if self._factory is None:
            raise PermanentError("the loadbalancing exporter needs the otlp exporter")
        resolver = self.config.resolver
        if resolver.static is not None:
            self._resolutions.labels(self.settings.name, "static", "true").inc()
            await self.set_endpoints([with_port(h) for h in resolver.static.hostnames])
            return
        assert resolver.dns is not None
        dns = resolver.dns
        self.dns = DNSResolver(dns.hostname, dns.port, dns.interval, dns.timeout)
        await self._resolve_once()
        self._resolver_task = asyncio.create_task(self._resolve_loop())

    async def _resolve_once(self) -> None:
        try:
            endpoints = await self.dns.resolve()
        except (OSError, TimeoutError) as exc:
            self._resolutions.labels(self.settings.name, "dns", "false").inc()
            self.settings.log_limited(
                logging.WARNING,
                "cannot resolve %s, keeping the %d backends known: %s",
                self.dns.hostname,
                len(self.backends),
                exc,
                key="dns",
            )
            return
        self._resolutions.labels(self.settings.name, "dns", "true").inc()
        await self.set_endpoints(endpoints)

    async def _resolve_loop(self) -> None:
        while True:
            await asyncio.sleep(self.dns.interval)
            try:
                await self._resolve_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # never let the resolver die
                self.settings.logger.error("resolving the backends failed: %s", exc)

    async def shutdown(self) -> None:
        self._closing = True
        if self._resolver_task is not None:
            self._resolver_task.cancel()
            await asyncio.gather(self._resolver_task, return_exceptions=True)
            self._resolver_task = None
        try:
            while any(b.queue or b.current for b in self.backends.values()):
                self._idle.clear()
                await self._idle.wait()
        except asyncio.CancelledError:
            self._drop_all("the shutdown deadline passed")
            raise
        finally:
            backends = list(self.backends.values())
            self.backends.clear()
            for b in backends:
                for w in b.workers:
                    w.cancel()
            await asyncio.gather(*(w for b in backends for w in b.workers), return_exceptions=True)
            self._drop(backends, "the exporter shut down")
            await asyncio.gather(*(b.exporter.shutdown() for b in backends), return_exceptions=True)

    def _drop_all(self, reason: str) -> None:
        self._drop(list(self.backends.values()), reason)

    def _drop(self, backends: list[_Backend], reason: str) -> None:
        items = [i for b in backends for i in (*b.queue, *b.current.values())]
        for b in backends:
            b.queue.clear()
            b.current.clear()
        n = sum(i.payload.item_count() for i in items)
        if n:
            self.settings.telemetry.send_failed(self.signal, n)
            self.settings.logger.error(
                "dropping queued data: %s", reason, extra={"dropped_items": n}
            )
        for i in items:
            if i.waiter is not None:
                i.waiter.done(RetryableError(reason))
        self._update_queue_gauge()

    # -- membership -------------------------------------------------------------------------
    async def set_endpoints(self, endpoints: list[str]) -> None:
        """Make ``endpoints`` the backends: new ones are created and started, the ring
        rebuilt, and what was queued for or being sent to a backend that left is routed
        again."""
        async with self._update_lock:
            wanted = sorted(set(endpoints))
            if wanted == self.ring.endpoints:
                return
            for ep in wanted:
                if ep not in self.backends:
                    self.backends[ep] = await self._create_backend(ep)
            gone = [self.backends.pop(ep) for ep in list(self.backends) if ep not in wanted]
            self.ring = HashRing(wanted)
            self._num_backends.set(len(wanted))
            self.settings.logger.info(
                "backends changed",
                extra={"backends": wanted, "removed": [b.endpoint for b in gone]},
            )
            if not gone:
                return
            taken: list[_Item] = []
            for b in gone:
                b.removed = True
                taken.extend(b.queue)
                taken.extend(b.current.values())
                b.queue.clear()
                b.current.clear()
                for w in b.workers:
                    w.cancel()
            # counted with the ring swap, before the first await: whoever sees the new ring
            # sees the count of what it took back
            n = sum(i.payload.item_count() for i in taken)
            if n:
                self.rerouted += n
                self._rerouted.inc(n)
                self.settings.logger.info(
                    "routing again what the backends that left held",
                    extra={"items": n, "parts": len(taken)},
                )
            for b in gone:
                await asyncio.gather(*b.workers, return_exceptions=True)
            for item in taken:
                self._route(item.payload, item.waiter, force=True)
            for b in gone:
                task = asyncio.create_task(self._close_backend(b))
                self._closing_tasks.add(task)
                task.add_done_callback(self._closing_tasks.discard)

    async def _close_backend(self, backend: _Backend) -> None:
        try:
            await backend.exporter.shutdown()
        except Exception as exc:
            self.settings.logger.warning(
                "closing the exporter of backend %s failed: %s", backend.endpoint, exc
            )

    async def _create_backend(self, endpoint: str) -> _Backend:
        assert self._host is not None
        config = self._factory.config_class.model_validate(
            {**self._otlp_options, "endpoint": endpoint}
        )
        settings = dataclasses.replace(
            self.settings,
            id=ComponentID(self.settings.id.type, self.settings.id.name),
            instance=f"{self.settings.instance} backend {endpoint}",
            providers=[],
            log_limiter=LogLimiter(),
            extra={**self.settings.extra, "endpoint": endpoint},
        )
        exporter = self._factory.create(self.signal, settings, config)
        await exporter.start(self._host)
        backend = _Backend(endpoint, exporter)
        backend.workers = [
            asyncio.create_task(self._worker(backend)) for _ in range(self.num_consumers)
        ]
        return backend

    # -- routing ----------------------------------------------------------------------------
    def _route(self, payload: Payload, waiter: _Waiter | None, force: bool) -> int:
        """Split ``payload`` on the ring and queue its parts; returns the number of parts.
        Unless ``force``, refuses (RetryableError, nothing queued) when a queue is full."""
        ring = self.ring
        if not len(ring):
            raise RetryableError("the loadbalancing exporter has no backends", retry_after=1.0)
        if len(ring) == 1:
            parts = {ring.endpoints[0]: payload}
        else:
            try:
                split_parts = split(
                    self.signal, payload.to_bytes(), self.routing_key, ring.endpoint_for
                )
            except MalformedDataError as exc:
                raise PermanentError(f"cannot route the request: {exc}") from exc
            parts = {
                ep: self._make(raw, item_count=count).carry_acks(payload.ack_tokens)
                for ep, (raw, count) in split_parts.items()
            }
        if not force and self.queue_enabled:
            for ep in parts:
                if len(self.backends[ep].queue) >= self.queue_size:
                    self.settings.telemetry.enqueue_failed(self.signal, payload.item_count())
                    raise RetryableError(
                        f"sending queue of backend {ep} is full ({self.queue_size} requests)",
                        retry_after=1.0,
                        resource_exhausted=True,
                    )
        if waiter is not None:
            waiter.remaining += len(parts) - 1
        for ep, part in parts.items():
            backend = self.backends[ep]
            backend.queue.append(_Item(part, waiter))
            backend.wake.set()
        self._idle.clear()
        self._update_queue_gauge()
        return len(parts)

    def _update_queue_gauge(self) -> None:
        self._queue_gauge.set(sum(len(b.queue) for b in self.backends.values()))

    async def consume(self, data: Payload) -> None:
        if data.item_count() == 0:
            return
        if self._closing:
            raise RetryableError("the loadbalancing exporter is shutting down", retry_after=1.0)
        if self.queue_enabled:
            self._route(data, None, force=False)
            return
        waiter = _Waiter(1)
        self._route(data, waiter, force=False)
        await asyncio.shield(waiter.future)
        if waiter.error is not None:
            raise waiter.error

    async def _worker(self, backend: _Backend) -> None:
        task = asyncio.current_task()
        assert task is not None
        while True:
            while not backend.queue:
                backend.wake.clear()
                if not any(b.queue or b.current for b in self.backends.values()):
                    self._idle.set()
                await backend.wake.wait()
            item = backend.queue.popleft()
            self._update_queue_gauge()
            backend.current[task] = item
            error: BaseException | None = None
            try:
                await backend.exporter.consume(item.payload)
            except ConsumeError as exc:  # dropped after its retries (counted by the sender)
                error = exc
            except asyncio.CancelledError:
                # the backend left: set_endpoints took the item to route it again
                raise
            except Exception as exc:
                error = exc
                self.settings.logger.error("sending to %s failed: %s", backend.endpoint, exc)
            if backend.current.pop(task, None) is None:
                continue  # taken back meanwhile
            if error is None:
                self.consecutive_failures = 0
            else:
                self.consecutive_failures += 1
                self.last_error = f"{backend.endpoint}: {error}"
                self.last_error_time = time.time()
            self._outcome.labels(
                self.settings.name, backend.endpoint, "false" if error else "true"
            ).inc()
            if item.waiter is not None:
                item.waiter.done(error)
