"""Several worker processes on one machine (``service.workers``, ``pipeline run --workers``).

``pipeline run`` with more than one worker becomes a *supervisor* (:func:`supervise`) that runs
N copies of itself as worker processes and does nothing else: it starts them, restarts one that
dies (counted: ``otelcol_worker_restarts_total``; while it is down its siblings take over its
traces, ``run_dir/deaths``, :meth:`Router._adopt`), forwards SIGHUP, and on SIGTERM/SIGINT asks
every worker to drain and waits for them. Each worker runs the whole config
(:class:`pipeline.service.Service`) with a :class:`WorkerContext` (:func:`current`) that
changes four things:

* push receivers (a receiver that listens) bind their ports with ``SO_REUSEPORT``: the kernel
  spreads connections over the workers;
* the data a receiver takes is routed by owner before it enters the pipelines
  (:class:`Router`): spans by trace id, metrics by resource (:mod:`pipeline._route`), or
  spans and log records by first arrival (``service.worker_routing: first_arrival``: the
  worker that received a trace's first span, through an ownership table the workers share,
  ``run_dir/owners``; ``balanced``: the same table, a busy worker claiming its new traces for
  a less busy sibling, by the event loops' busy fractions on a board they share, ``run_dir/load``,
  :class:`LoadMeter`); the
  parts other workers own travel over a Unix socket to them and enter their pipelines there,
  the receiving worker answering its client once every owner accepted its part (with
  ``service.worker_acknowledge: handover``, once its own part was accepted and the others'
  queued: retained until their owners accepted them, joined over 50 ms);
* what must exist once runs in worker 0, the *primary*: pull receivers (``prometheus``,
  ``hostmetrics``, ``httpcheck``, ``healthcheck``: a receiver that does not listen),
  extensions that listen (``health_check``, ``console``), the gateway's own metrics endpoint
  and the ``prometheus`` exporter's endpoint; elsewhere they are inert placeholders;
* the primary's metrics endpoints merge every worker's state at each scrape
  (:func:`merge_families`): counters, histograms and summaries' counts and sums are added,
  the ``prometheus`` exporter's gauges keep the most recent point, the own telemetry's gauges
  are added (``*uptime*`` takes the largest, ``*start_time*`` the earliest).

See docs/architecture.md ("Workers") for the design and its limits.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import json
import logging
import os
import pickle
import shutil
import signal as signal_module
import socket
import struct
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf.message import DecodeError
from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Sample

from pipeline import _route
from pipeline.consumer import Consumer, fan_out
from pipeline.errors import ConsumeError, MalformedDataError, PermanentError, RetryableError
from pipeline.pdata import Metrics, Payload, Signal, payload_type
from pipeline.ratelimit import LogLimiter

log = logging.getLogger("pipeline.workers")

ENV = "PIPELINE_WORKER"  # "index/count/run_dir", set by the supervisor for its workers
ROUTING_ENV = "PIPELINE_WORKER_ROUTING"  # service.worker_routing, the supervisor's
# set by the supervisor for a worker it starts again: the endpoints are its siblings' already
# (SO_REUSEPORT), so a restarted primary does not check them (they would be "in use")
RESTART_ENV = "PIPELINE_WORKER_RESTART"
# routing by first arrival: the ownership table shared by the workers (run_dir/owners): 8
# traces a bucket (1M traces, 17 MiB), a trace forgotten OWNERS_TTL seconds after its last span
OWNERS_BUCKETS = 1 << 17
OWNERS_TTL = 120
READY_TIMEOUT = 120.0  # how long a worker may take to start before the supervisor gives up
RESTART_BACKOFF_MAX = 10.0
# a dead worker's traces (run_dir/deaths: an epoch, then a state a worker, int64): while the
# supervisor says a worker is dead and ADOPTED, the siblings take over its traces (re-claimed in
# the ownership table, or by trace id a fallback owner) instead of refusing their spans; REFUSED:
# refused as retryable until it serves again (a death within ADOPT_WINDOW seconds of another
# worker's adopted one, or a crash loop: the adopter may have died of what it took over)
DEATH_SERVING, DEATH_ADOPTED, DEATH_REFUSED = 0, 1, 2
ADOPT_WINDOW = 60.0

_OP_CONSUME = 1
_OP_COLLECT = 2
_OK = 0
_RETRY = 1
_PERMANENT = 2
_HEADER = struct.Struct("!IIBH")  # length of the rest, request id, op, key length
_HEADER_REST = struct.Struct("!IBH")
_REPLY = struct.Struct("!IIB")  # length of the rest, request id, status
_REPLY_REST = struct.Struct("!IB")
_MAX_FRAME = 1 << 31
_READ_SIZE = 256 << 10  # the least room a worker's socket is read into
_COALESCE_MAX = 8 << 20  # parts joined into one request to a sibling, at most (bytes)
# the send buffer asked for on a connection to a sibling (the kernel caps it at
# net.core.wmem_max): a hand-over leaves in one write, whole
_SEND_BUFFER = 4 << 20
# consume requests to one sibling awaiting their answer before the next parts wait for one:
# what arrives meanwhile is joined into one request (one write, one wake-up, one answer)
_CONSUME_IN_FLIGHT = 1
# a worker busy with its clients' requests (another in progress as one starts) reads what its
# siblings sent between them, at most this often (seconds), instead of once its event loop
# turned (WorkerContext.poll_siblings); an idle worker leaves it to its loop
_POLL_EVERY = 0.001
# service.worker_acknowledge: handover. The siblings' parts wait in the receiving worker up to
# _HANDOVER_LINGER seconds (or until _HANDOVER_JOIN bytes are waiting) and leave joined, one
# request for many client requests; a sibling holding _HANDOVER_BACKLOG bytes not yet accepted
# makes new client requests with a part for it fail as retryable (backpressure)
_HANDOVER_LINGER = 0.05
_HANDOVER_JOIN = 1 << 20
_HANDOVER_BACKLOG = 64 << 20
_HANDOVER_RETRY_MAX = 1.0  # the longest wait before a refused or undelivered part is sent again
# how long a client request waits for a sibling's backlog to fall below _HANDOVER_BACKLOG
# before it is refused (retryable)
_HANDOVER_BACKLOG_WAIT = 5.0


def resolve_count(value: int) -> int:
    """``service.workers`` / ``--workers``: 0 means one per core."""
    return value if value > 0 else max(1, os.cpu_count() or 1)


def _consume_key(signal: Signal, pipelines: list[str]) -> str:
    """The key of a consume request to a sibling: its signal and pipelines."""
    return f"{signal}|{','.join(pipelines)}"


# -- the worker side ------------------------------------------------------------------------------
@dataclass
class WorkerContext:
    """What a worker process knows about its siblings (``current()`` in a worker)."""

    index: int
    count: int
    run_dir: Path
    service: Any = None  # the running pipeline.service.Service
    # routing by first arrival (service.worker_routing): the shared ownership table
    owners: _route.OwnerTable | None = None
    restarted: bool = False  # started again by the supervisor after a death (RESTART_ENV)
    # service.worker_routing: balanced: this worker's busy fraction on the shared load board,
    # choosing for whom ``owners`` claims new traces (:class:`LoadMeter`)
    meter: LoadMeter | None = None
    # service.worker_acknowledge: "owner" (a client is answered once every owner accepted its
    # part) or "handover" (once this worker took its own part and queued the siblings' parts
    # for delivery: they are retained until their owner accepted them, see _Peer.deliver)
    acknowledge: str = "owner"
    # handover: no hand-over from a sibling is taken any more (the drain is over)
    closed_to_siblings: bool = False
    _inbound: set[_ServerProtocol] = field(default_factory=set)
    _polled: float = 0.0  # when poll_siblings last read the siblings' connections
    # handover: the counter of items handed over and then dropped (permanent refusal, drain)
    _dropped: Any = None
    # the counter of items whose crossing to their owner failed (by signal and reason)
    _failed: Any = None
    # the counter of siblings' missed answers to a gather (scrape) and their last answers
    _missed: Any = None
    _answers: dict[tuple[str, int], Any] = field(default_factory=dict)
    _log_limiter: LogLimiter = field(default_factory=LogLimiter)
    _exposed: dict[str, Callable[[], Any]] = field(default_factory=dict)
    # consume key without its count -> (the graph, the consumer of its pipelines, the payload
    # type): found once per graph
    _targets: dict[str, tuple[Any, Consumer, Any]] = field(default_factory=dict)
    _peers: dict[int, _Peer] = field(default_factory=dict)
    # consume key without its count -> the parts for those pipelines joined under load
    _joiners: dict[str, _Joiner] = field(default_factory=dict)
    _server: asyncio.AbstractServer | None = None
    # the supervisor's word on dead workers (run_dir/deaths, int64: epoch, then a state a
    # worker), the epoch last read and what it said: a byte a worker, 1 = dead and its traces
    # taken over (None: none such); the counter of items taken over
    _deaths: Any = None
    _deaths_epoch: int = -1
    _dead: bytes | None = None
    _adopted: Any = None

    @property
    def primary(self) -> bool:
        """Worker 0 runs what must exist once."""
        return self.index == 0

    def claim_table(self, in_progress: int) -> _route.OwnerTable | None:
        """The view of the ownership table a request's new traces are claimed through: this
        worker's, or with ``balanced`` routing, while another client request is in progress
        here (``in_progress`` > 1: requests queue up), the claimant's its load meter chose."""
        meter = self.meter
        if meter is None or in_progress < 2:
            return self.owners
        return meter.tables[meter.claimant]

    def socket_path(self, index: int) -> str:
        return str(self.run_dir / f"worker-{index}.sock")

    def dead_owners(self) -> bytes | None:
        """The siblings whose traces this worker takes over now (a byte a worker, 1: dead,
        its traces adopted: the supervisor said so, ``run_dir/deaths``), or ``None`` (none):
        one read of the board's epoch a request, the states read again when it changed."""
        board = self._deaths
        if board is None:
            return None
        epoch = board[0]
        if epoch != self._deaths_epoch:
            self._deaths_epoch = epoch
            dead = bytes(
                1 if i != self.index and board[1 + i] == DEATH_ADOPTED else 0
                for i in range(self.count)
            )
            self._dead = dead if any(dead) else None
        return self._dead

    def resplit(
        self, signal: Signal, raw: bytes, dead: bytes
    ) -> dict[int, tuple[bytes, int | None]] | None:
        """A part of ``signal`` split again by owner with the dead workers' (``dead``:
        :meth:`dead_owners`) traces taken over, as :class:`Router` splits a dead owner's part;
        ``None`` for metrics (by resource: their owner's cumulative series wait for it)."""
        owners = self.owners
        now = int(time.time()) if owners is not None else 0
        if signal is Signal.TRACES:
            return _route.split_traces(raw, self.count, owners, now, dead)
        if signal is Signal.LOGS:
            return _route.split_logs(raw, self.count, self.index, owners, now, dead)
        return None

    # -- singletons ----------------------------------------------------------------------------
    def runs_here(self, kind: str, config: Any, factory: Any) -> bool:
        """Whether a receiver or extension runs in this worker: push receivers (those that
        listen, or whose factory says ``every_worker = True``, a Kafka consumer group member)
        run in every worker; other receivers and extensions that listen only in the primary."""
        if self.primary:
            return True
        listens = bool(config.listen_endpoints())
        if kind == "receiver":
            return listens or bool(getattr(factory, "every_worker", False))
        return not listens

    # -- exposition ----------------------------------------------------------------------------
    def expose(self, key: str, collect: Callable[[], Any]) -> None:
        """Make what ``collect`` returns (metric families, or any picklable state) available
        to the sibling workers' :meth:`gather` of ``key``."""
        self._exposed[key] = collect

    def withdraw(self, key: str, collect: Callable[[], Any]) -> None:
        if self._exposed.get(key) == collect:
            del self._exposed[key]

    async def gather(self, key: str, within: float = 5.0) -> list[Any]:
        """The families of ``key`` from every worker: this one's first, then every sibling's.

        A sibling that does not answer ``within`` seconds (busy, or being restarted) is
        represented by its last answer, so a merged counter does not seem to go back (a false
        reset for Prometheus); the miss is counted (``otelcol_worker_scrape_missed``, by
        worker) and logged. A sibling that never answered yet is left out."""
        own = self._exposed.get(key)
        out: list[Any] = [own() if own is not None else []]

        async def one(i: int) -> Any:
            try:
                async with asyncio.timeout(within):  # (not wait_for: see _pump)
                    body = await self._peer(i).call(_OP_COLLECT, key, b"")
            except (ConsumeError, OSError, TimeoutError) as exc:
                last = self._answers.get((key, i))
                if self._missed is not None:
                    self._missed.labels(str(i)).inc()
                self._log_limiter.log(
                    log,
                    logging.WARNING,
                    "a worker did not answer a collection of its metrics or state in time; its "
                    "last answer stands in for it",
                    key=f"scrape|{i}",
                    extra={
                        "worker": i,
                        "key": key,
                        "within_s": within,
                        "error": repr(exc),
                        "last_answer": last is not None,
                    },
                )
                return None if last is None else last
            answer = pickle.loads(body)  # our own workers, through a 0700 directory
            self._answers[(key, i)] = answer
            return answer

        others = await asyncio.gather(*(one(i) for i in range(self.count) if i != self.index))
        out.extend(f for f in others if f is not None)
        return out

    # -- routing -------------------------------------------------------------------------------
    def router(
        self, signal: Signal, pipelines: Sequence[Any], inner: Consumer, telemetry: Any = None
    ) -> Consumer:
        """``inner`` (what a receiver feeds) behind the routing by owner (log records by their
        trace id, those without one kept here). ``telemetry`` (a
        :class:`pipeline.telemetry.SelfTelemetry`) counts the items handed to other
        workers."""
        if self.count <= 1:
            return inner
        counter = None
        if telemetry is not None:
            if self._dropped is None:
                self._dropped = telemetry.counter(
                    "otelcol_worker_handover_dropped_items",
                    "Items handed over to their owner worker (service.worker_acknowledge: "
                    "handover, the client answered already) and then dropped: refused for good "
                    "by the owner, or still undelivered when the drain ended; by signal.",
                    ("signal",),
                )
            if self._missed is None:
                self._missed = telemetry.counter(
                    "otelcol_worker_scrape_missed",
                    "Collections of a sibling worker's metrics or state (a /metrics scrape, the "
                    "SLO windows) it did not answer in time: its last answer stood in for it; "
                    "by worker.",
                    ("worker",),
                )
            if self._failed is None:
                self._failed = telemetry.counter(
                    "otelcol_worker_forward_failed_items",
                    "Items a worker handed to the worker that owns them whose crossing failed, "
                    "by signal and reason: refused (the owner's pipelines refused them), lost "
                    "(the connection to the owner ended before its answer), unreachable (no "
                    "connection to the owner). The client request holding them failed (with "
                    "service.worker_acknowledge: handover they are sent again: each attempt "
                    "counts).",
                    ("signal", "reason"),
                )
            if self._adopted is None:
                self._adopted = telemetry.counter(
                    "otelcol_worker_adopted_items",
                    "Spans and log records of traces owned by a dead worker (killed, crashed; "
                    "until it serves again) that this worker took over instead of refusing "
                    "them: their traces re-claimed for it in the ownership table, or by trace "
                    "id given to a live worker; by signal.",
                    ("signal",),
                )
            counter = telemetry.counter(
                "otelcol_worker_forwarded_items",
                "Items a worker received and handed to the worker that owns them (spans and log "
                "records by trace id, metric points by resource), by signal.",
                ("signal",),
            ).labels(str(signal))
        return Router(self, signal, [str(p) for p in pipelines], inner, counter)

    async def forward(
        self,
        owner: int,
        signal: Signal,
        pipelines: list[str],
        data: bytes,
        items: int | None = None,
    ) -> None:
        """Hand ``data`` (an encoded request of ``signal``; ``items`` spans, points or
        records when known: the owner does not count them again) to worker ``owner``'s
        ``pipelines``; returns once that worker accepted it."""
        await self._peer(owner).call(_OP_CONSUME, _consume_key(signal, pipelines), data, items)

    def hand_over(
        self,
        owner: int,
        signal: Signal,
        pipelines: list[str],
        data: bytes,
        items: int | None = None,
    ) -> tuple[_Peer, asyncio.Future[tuple[int, bytes]] | Coroutine[Any, Any, bytes]]:
        """:meth:`forward` without waiting: the request leaves now when it can (see
        :meth:`_Peer.submit`); what to await (a future of the answer, for
        :meth:`_Peer.result`, or, when the sibling is not connected yet, :meth:`forward`'s
        coroutine)."""
        key = _consume_key(signal, pipelines)
        peer = self._peer(owner)
        fut = peer.submit(_OP_CONSUME, key, data, items)
        if fut is not None:
            return peer, fut
        return peer, peer.call(_OP_CONSUME, key, data, items)

    def _peer(self, index: int) -> _Peer:
        peer = self._peers.get(index)
        if peer is None:
            peer = self._peers[index] = _Peer(self.socket_path(index), index, self)
        return peer

    # -- the socket the siblings call ----------------------------------------------------------
    async def open(self) -> None:
        path = self.socket_path(self.index)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        loop = asyncio.get_running_loop()
        if self.meter is not None:
            self.meter.install(loop)
        self._server = await loop.create_unix_server(lambda: _ServerProtocol(self), path=path)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for peer in self._peers.values():
            peer.close()
        self._peers.clear()

    def ready(self) -> None:
        """Tell the supervisor this worker serves."""
        if self.meter is not None:
            self.meter.alive()
        (self.run_dir / f"ready-{self.index}").write_text(str(os.getpid()))

    async def _handle(
        self, proto: _ServerProtocol, req_id: int, op: int, key: str, body: bytes
    ) -> None:
        status, reply = _OK, b""
        try:
            if op == _OP_CONSUME:
                await self._consume(key, body)
            elif op == _OP_COLLECT:
                collect = self._exposed.get(key)
                reply = pickle.dumps(collect() if collect is not None else [])
            else:
                raise PermanentError(f"unknown operation {op}")
        except Exception as exc:
            status, reply = self._refusal(exc)
        proto.reply(_REPLY.pack(len(reply) + _REPLY.size - 4, req_id, status) + reply)

    def _refusal(self, exc: BaseException) -> tuple[int, bytes]:
        """The answer's status and text for a request that raised ``exc``."""
        if isinstance(exc, RetryableError):
            return _RETRY, str(exc).encode()
        if isinstance(exc, PermanentError):
            return _PERMANENT, str(exc).encode()
        if isinstance(exc, (DecodeError, MalformedDataError)):
            # a part this worker cannot read: it never will (retried, it would come back
            # forever, with the parts the sender joined to it); the sender counts it dropped
            return _PERMANENT, f"cannot read the part: {exc}".encode()
        # a bug: the sender retries, the log says why
        log.error("worker %d failed a request from a sibling", self.index, exc_info=exc)
        return _RETRY, f"{type(exc).__name__}: {exc}".encode()

    def _joined_answer(
        self, proto: _ServerProtocol, req_id: int, exc: BaseException | None
    ) -> None:
        """Answer request ``req_id`` of ``proto``, whose part a :class:`_Joiner` consumed
        (``exc``: what that consume raised)."""
        if isinstance(exc, asyncio.CancelledError):  # as a cancelled request: no answer
            return
        status, reply = (_OK, b"") if exc is None else self._refusal(exc)
        proto.reply(_REPLY.pack(len(reply) + _REPLY.size - 4, req_id, status) + reply)

    async def drain(self, within: float) -> None:
        """With ``acknowledge: handover``, between the receivers' stop and the pipelines'
        (``Service.shutdown``): deliver what this worker still holds for its siblings (the
        clients were answered already), then close its connections to them, which tells
        each sibling that nothing more comes from this worker (and so does
        ``run_dir/drained-N``: a sibling that never connected to it, a restarted one, may
        still have parts for it), and take the siblings' hand-overs until each closed its
        connection to this worker and said so the same way (or went away: its connection
        closed, dead on the supervisor's board); each wait gets half of what is left of
        ``within``. Parts still undelivered then are lost: logged with their count."""
        if self.acknowledge != "handover":
            return
        loop = asyncio.get_running_loop()
        start = loop.time()
        peers = list(self._peers.values())
        for peer in peers:
            peer.hurry()
        while any(not p.idle() for p in peers) and loop.time() < start + within / 2:
            await asyncio.sleep(0.01)
        left = [(key, body, n) for p in peers for key, body, n, _ in p._out]
        if left:
            log.error(
                "parts handed over but not accepted by their worker before the drain ended: "
                "dropped",
                extra={"worker": self.index, "parts": len(left), "items": self.count_dropped(left)},
            )
        for peer in peers:
            peer.close()
        # nothing more comes from this worker: said on the run's board as well as by the
        # closed connections, for a sibling this worker never connected to (a restarted
        # worker's connections are made on its first hand-over: one may still be coming)
        (self.run_dir / f"drained-{self.index}").write_text("")
        end = loop.time() + max(start + within - loop.time(), 0.0) / 2
        while (
            (self._inbound or not self._siblings_drained())
            and self.service is not None
            and loop.time() < end
        ):
            await asyncio.sleep(0.01)
        self.closed_to_siblings = True

    def _siblings_drained(self) -> bool:
        """Whether every sibling said it sends nothing more (:meth:`drain`'s
        ``run_dir/drained-N``) or is dead (the supervisor's board: it sends nothing)."""
        board = self._deaths
        return all(
            i == self.index
            or (board is not None and board[1 + i] != DEATH_SERVING)
            or (self.run_dir / f"drained-{i}").exists()
            for i in range(self.count)
        )

    def count_dropped(self, parts: Iterable[tuple[str, bytes, int]]) -> int:
        """Count the items of handed-over ``parts`` (key, encoded body, items or -1: read
        from the body) as dropped (``otelcol_worker_handover_dropped_items_total``); returns
        how many."""
        total = 0
        for key, body, n in parts:
            signal = Signal(key.split("|", 1)[0])
            if n < 0:
                try:
                    n = payload_type(signal)(body).item_count()
                except Exception:  # what cannot be read is counted as one part
                    n = 1
            total += n
            if self._dropped is not None:
                self._dropped.labels(str(signal)).inc(n)
        return total

    async def _consume(self, key: str, body: bytes) -> None:
        target, count = key.rsplit("|", 1)
        consumer, make = self._target(target)
        items = int(count)
        await consumer.consume(make(body, item_count=items if items >= 0 else None))

    def _target(self, target: str, check: bool = True) -> tuple[Consumer, Any]:
        """The consumer of the pipelines of ``target`` (a consume key without its count) and
        its signal's payload type; a retryable error when this worker does not take
        siblings' parts any more (``check``: :meth:`_serving`)."""
        if check:
            self._serving()
        service = self.service
        if service is None:
            raise RetryableError(f"worker {self.index} is not serving", retry_after=1.0)
        graph = service.graph
        found = self._targets.get(target)
        if found is None or found[0] is not graph:  # first use, or the config was reloaded
            signal_text, names = target.split("|", 1)
            signal = Signal(signal_text)
            try:
                consumer = fan_out([graph.pipeline_consumer(n) for n in names.split(",")])
            except KeyError as exc:  # a sibling's config is ahead of (or behind) this one's
                raise RetryableError(
                    f"worker {self.index} has no pipeline {exc} (a reload under way?)",
                    retry_after=1.0,
                ) from None
            found = self._targets[target] = (graph, consumer, payload_type(signal))
        return found[1], found[2]

    def _serving(self) -> None:
        """Raise a retryable error when this worker takes no part from a sibling any more."""
        service = self.service
        if self.acknowledge == "handover":
            # a sibling may still deliver what its clients were answered for while this
            # worker drains: taken until the drain is over (the pipelines still run)
            refused = service is None or self.closed_to_siblings
        else:
            refused = service is None or getattr(service, "_stopped", False)
        if refused:
            raise RetryableError(f"worker {self.index} is not serving", retry_after=1.0)

    def _take_joined(
        self,
        target: str,
        parts: list[Payload],
        done: list[Callable[[BaseException | None], None]],
        tasks: set[asyncio.Task[None]],
    ) -> None:
        """Consume a sibling's ``parts`` for the pipelines of ``target`` (a consume key
        without its count) at once, as one payload; each ``done`` is called with what that
        consume raised (``None``: accepted), a refusal when this worker takes no part from a
        sibling any more or has no such pipelines."""
        try:
            self._serving()
            consumer, _ = self._target(target, check=False)
        except Exception as exc:
            _settle(done, exc)
            return
        payload = parts[0] if len(parts) == 1 else type(parts[0]).merge(parts)
        _run_now(_consume_joined(consumer, payload, done, parts), tasks)

    def poll_siblings(self) -> None:
        """Read the connections between this worker and its siblings now, as their
        transports would once the event loop turned (at most every ``_POLL_EVERY`` seconds;
        ``Router.consume`` calls it as a client request starts while another for the same
        pipelines is in progress: an idle worker's loop turn is short, and a ``recv`` that
        would block on each connection is all it would get at a low rate): a busy worker's
        loop turn runs many client requests' steps, and a sibling's hand-over read only
        after them keeps that sibling's clients waiting while it may have nothing else to do. A part
        read here is consumed and answered at once (:meth:`_ServerProtocol._take`); an
        answer read here resolves its callers and lets the parts queued behind it leave
        (:meth:`_Peer._answer`); a connection with nothing to read costs one ``recv`` that
        would block."""
        now = time.monotonic()
        if now < self._polled + _POLL_EVERY:
            return
        self._polled = now
        for proto in tuple(self._inbound):
            if not proto.feeding:
                _read_now(proto.transport)
        for peer in tuple(self._peers.values()):  # the answers to this worker's hand-overs
            if peer._proto is not None:  # (reading them runs no consume: no re-entry)
                _read_now(peer._proto.transport)

    def joiner(self, target: str) -> _Joiner:
        """The :class:`_Joiner` of the pipelines of ``target`` (a consume key without its
        count)."""
        joiner = self._joiners.get(target)
        if joiner is None:
            joiner = self._joiners[target] = _Joiner(self, target)
        return joiner


class _Frames:
    """Cuts a byte stream into frames (a 4-byte big-endian length, then that many bytes)."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        buf = self.buf
        if not buf and len(data) >= 4:  # the usual case: whole frames in one read
            n = int.from_bytes(data[:4], "big")
            if len(data) == 4 + n:
                return [data[4:]]
        buf += data
        out = []
        while len(buf) >= 4:
            n = int.from_bytes(buf[:4], "big")
            if n >= _MAX_FRAME:
                raise ValueError("frame too large")
            if len(buf) < 4 + n:
                break
            out.append(bytes(buf[4 : 4 + n]))
            del buf[: 4 + n]
        return out


class _ServerProtocol(asyncio.BufferedProtocol):
    """A sibling's connection to this worker: each frame is a request, handled in a task.

    The socket is read straight into one buffer (``get_buffer``), grown to hold a whole
    frame once its length is known: a part of several megabytes is copied once, into the
    ``bytes`` its payload holds, instead of once per read and again per slice."""

    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx
        self.transport: asyncio.Transport | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.out: list[bytes] = []  # answers waiting for the end of this turn of the loop
        self.feeding = False  # in buffer_updated: the answers leave as it ends
        self.buf = bytearray(_READ_SIZE)
        self.start = 0  # where the first frame not handled yet begins
        self.end = 0  # bytes read so far

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.ctx._inbound.add(self)

    def get_buffer(self, sizehint: int) -> memoryview:
        buf, start, end = self.buf, self.start, self.end
        need = _READ_SIZE
        if end - start >= 4:  # a frame's length is known: room for all of it
            need = max(need, 4 + int.from_bytes(buf[start : start + 4], "big") - (end - start))
        if len(buf) - end < need:
            # move what is not handled yet to the front of a buffer large enough
            grown = bytearray(max(_READ_SIZE, end - start + need))
            grown[: end - start] = memoryview(buf)[start:end]
            self.buf, self.start, self.end = grown, 0, end - start
            buf, end = grown, end - start
        return memoryview(buf)[end:]

    def _run(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a request's handling at once, in a context of its own, as far as it goes
        without waiting (usually to its end: the owner's pipelines take a part without
        waiting): no task, and no loop turn before its answer is written. What waits goes on
        in a task, from where it stopped."""
        _run_now(coro, self.tasks)

    def buffer_updated(self, nbytes: int) -> None:
        self.end += nbytes
        self.feeding = True
        buf, start, end = self.buf, self.start, self.end
        view = memoryview(buf)
        try:
            frames: list[tuple[int, int, str, bytes]] = []
            while end - start >= 4:
                n = int.from_bytes(view[start : start + 4], "big")
                if n >= _MAX_FRAME or n < _HEADER_REST.size:
                    if self.transport is not None:
                        self.transport.close()
                    self.start = self.end = 0
                    return
                if end - start < 4 + n:
                    break
                req_id, op, key_len = _HEADER_REST.unpack_from(buf, start + 4)
                at = start + 4 + _HEADER_REST.size
                # a key that is not UTF-8 names nothing: refused as such, the connection kept
                key = bytes(view[at : at + key_len]).decode(errors="replace")
                body = bytes(view[at + key_len : start + 4 + n])  # the only copy
                frames.append((req_id, op, key, body))
                start += 4 + n
            self._take(frames)
        finally:
            view.release()
            self.feeding = False
            if self.out:  # the answers of the requests finished above: one write
                self._write_out()
        if start == end:  # everything handled: start over at the front (a small buffer)
            start = end = 0
            if len(buf) > _READ_SIZE * 4:
                self.buf = bytearray(_READ_SIZE)
        self.start, self.end = start, end

    def _take(self, frames: list[tuple[int, int, str, bytes]]) -> None:
        """Handle the requests of one read at once, ahead of anything this worker queued
        for itself: the consume requests of one read for one pipeline set are one consume
        (in order), the others handled each; their answers leave as the read ends."""
        ctx = self.ctx
        joined: dict[str, tuple[list[Payload], list[Callable[[BaseException | None], None]]]] = {}
        if len(frames) > 1 and ctx.service is not None:
            rest = []
            for frame in frames:
                req_id, op, key, body = frame
                if op == _OP_CONSUME:
                    target, _, count = key.rpartition("|")
                    payload = _sibling_payload(target, body, count)
                    if payload is not None:  # else a key it cannot read: refused below
                        parts, done = joined.setdefault(target, ([], []))
                        parts.append(payload)
                        done.append(self._answer_later(req_id))
                        continue
                rest.append(frame)
            frames = rest
        for req_id, op, key, body in frames:
            self._run(ctx._handle(self, req_id, op, key, body))
        for target, (parts, done) in joined.items():
            ctx._take_joined(target, parts, done, self.tasks)

    def _answer_later(self, req_id: int) -> Callable[[BaseException | None], None]:
        """What answers request ``req_id`` once the joined consume holding its part ended."""

        def answer(exc: BaseException | None) -> None:
            self.ctx._joined_answer(self, req_id, exc)

        return answer

    def reply(self, frame: bytes) -> None:
        """Answer a request: the answers of one turn of the event loop leave in one write
        (one wake-up of the sibling for all of them)."""
        self.out.append(frame)
        if len(self.out) == 1 and not self.feeding:  # while feeding: written as it ends
            asyncio.get_running_loop().call_soon(self._write_out)

    def _write_out(self) -> None:
        out, self.out = self.out, []
        if not out:  # written already, at the end of a read
            return
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(out[0] if len(out) == 1 else b"".join(out))

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None  # the tasks finish; their answers have nowhere to go
        self.ctx._inbound.discard(self)


class _ClientProtocol(asyncio.Protocol):
    """This worker's connection to a sibling: each answer resolves the request of its id."""

    def __init__(self, peer: _Peer) -> None:
        self.peer = peer
        self.frames = _Frames()
        self.transport: asyncio.Transport | None = None
        self.sock: socket.socket | None = None  # its socket, written directly (_Peer._send)
        self.writable = True  # False while the transport's buffer is above its high mark
        self.pending: dict[int, _Sent] = {}  # the requests written on it, by id
        self.consuming = 0  # of which consume requests

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            frames = self.frames.feed(data)
        except ValueError:
            self.peer._garbled("an answer frame too large")
            if self.transport is not None:
                self.transport.close()
            return
        peer = self.peer
        for frame in frames:
            if len(frame) < _REPLY_REST.size:
                peer._garbled("an answer frame too short")
                if self.transport is not None:
                    self.transport.close()
                return
            req_id, status = _REPLY_REST.unpack_from(frame)
            peer._answer(self, req_id, status, frame[_REPLY_REST.size :])

    def pause_writing(self) -> None:
        self.writable = False

    def resume_writing(self) -> None:
        self.writable = True
        self.peer._resumed()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.sock = None
        self.writable = True
        self.peer._lost(self, exc)


def _widen_send_buffer(proto: _ClientProtocol) -> None:
    """Let the kernel hold a whole hand-over (``_SEND_BUFFER``, as far as
    ``net.core.wmem_max`` allows): a part larger than the socket's buffer (the default,
    ~208 KiB, holds a few client requests' parts) otherwise leaves in pieces, each written
    once the owner read the one before and this worker's loop turned, so a hand-over waited
    for turns of both loops and the parts behind it for the socket to take writes again."""
    transport = proto.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SEND_BUFFER)


# the most buffers one sendmsg takes (IOV_MAX on Linux)
_IOV_MAX = 1024


def _write_frame(
    proto: _ClientProtocol, transport: asyncio.Transport, head: bytes, bodies: list[bytes]
) -> None:
    """Write one frame (``head``, then ``bodies``) in one system call, the sibling woken once
    for all of it: with ``sendmsg`` from the connection's socket, the parts as they are (no
    joined copy of them), when nothing waits in the transport's buffer (the bytes keep their
    order); what the kernel did not take (its buffer full), or everything when the transport
    holds bytes already, goes through the transport (its buffer and flow control), joined.
    An error of the socket is left to the transport's write, which closes the connection
    (its requests fail as lost)."""
    sock = proto.sock
    sent = 0
    if (
        sock is not None
        and len(bodies) < _IOV_MAX
        and not transport.is_closing()
        and transport.get_write_buffer_size() == 0
    ):
        with contextlib.suppress(BlockingIOError, InterruptedError, OSError):
            sent = sock.sendmsg([head, *bodies])
    if sent == 0:
        transport.write(b"".join((head, *bodies)))
        return
    rest: list[bytes | memoryview] = []
    for buf in (head, *bodies):
        n = len(buf)
        if sent >= n:
            sent -= n
            continue
        rest.append(memoryview(buf)[sent:] if sent else buf)
        sent = 0
    if rest:
        transport.write(b"".join(rest))


@dataclass(slots=True)
class _Sent:
    """A request written to a sibling and not answered yet: the futures of its callers (one
    per part joined into it), its consume key (``""`` for another operation) and what it
    carries (item count, ``-1`` unknown; the parts, kept only when a count is unknown, to
    count the items of a failure)."""

    futs: list[asyncio.Future[tuple[int, bytes]]]
    key: str = ""
    items: int = 0
    bodies: list[bytes] | None = None


class _Peer:
    """One connection to a sibling worker, requests multiplexed by id: each answer carries
    the id of its request and resolves that request's callers, whatever the order the
    answers come in. A part handed over while fewer than ``_CONSUME_IN_FLIGHT`` consume
    requests to this sibling await their answer, and the connection takes writes, leaves at
    once (the sibling works on it while this worker goes on); otherwise it is queued, and the
    queued parts of one pipeline set are joined (their encodings concatenated: one valid
    request, up to ``_COALESCE_MAX`` bytes) and sent when an answer comes or the connection
    takes writes again, answered once for all of them. Under load the hand-overs thus grow
    with the rate instead of multiplying: one write, one wake-up of the sibling and one
    answer for many client requests; each caller still returns only once the sibling
    accepted the request holding its part, and every caller whose part was in flight or
    queued when the connection is lost (the sibling died) gets a retryable error. Every
    failure of a crossing is counted (``otelcol_worker_forward_failed_items``) and logged
    (at most a line a second per kind)."""

    def __init__(self, path: str, index: int, ctx: WorkerContext | None = None) -> None:
        self.path = path
        self.index = index
        self.ctx = ctx
        self._proto: _ClientProtocol | None = None
        self._next = 0
        self._connecting: asyncio.Lock = asyncio.Lock()
        # key -> (bodies, futures, item counts: -1 unknown) waiting for the next flush, and
        # their size in bytes
        self._queued: dict[
            str, tuple[list[bytes], list[asyncio.Future[tuple[int, bytes]]], list[int]]
        ] = {}
        self._queued_bytes = 0
        # acknowledge: handover: parts (key, body, items or -1, when queued) retained until
        # this sibling accepted them, their bytes, and the task delivering them
        self._out: collections.deque[tuple[str, bytes, int, float]] = collections.deque()
        self._out_bytes = 0
        self._out_ready = asyncio.Event()
        self._below = asyncio.Event()  # set when the backlog fell below _HANDOVER_BACKLOG
        self._hurry = False
        self._pump_task: asyncio.Task[None] | None = None

    async def _connect(self) -> _ClientProtocol:
        proto = self._proto
        if proto is not None and proto.transport is not None:
            return proto
        async with self._connecting:
            if self._proto is not None and self._proto.transport is not None:
                return self._proto
            loop = asyncio.get_running_loop()
            # the socket is this worker's own (not the transport's wrapper): requests are
            # written with sendmsg from it, their parts unjoined (:meth:`_send`)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                await loop.sock_connect(sock, self.path)
                _, proto = await loop.create_unix_connection(
                    lambda: _ClientProtocol(self), sock=sock
                )
            except OSError as exc:
                sock.close()
                raise RetryableError(
                    f"worker {self.index} is not reachable ({exc.strerror or exc})",
                    retry_after=1.0,
                ) from None
            except BaseException:
                sock.close()
                raise
            proto.sock = sock
            _widen_send_buffer(proto)
            self._proto = proto
            return proto

    def _lost(self, proto: _ClientProtocol, exc: Exception | None = None) -> None:
        """``proto``'s connection ended: the requests written on it fail (retryable), and so
        do the parts queued when it was this peer's connection (none other was made)."""
        pending, proto.pending = proto.pending, {}
        proto.consuming = 0
        failed = list(pending.values())
        if self._proto is proto or self._proto is None:
            self._proto = None
            queued, self._queued = self._queued, {}
            self._queued_bytes = 0
            failed += [
                _Sent(futs, key, -1 if -1 in counts else sum(counts), bodies)
                for key, (bodies, futs, counts) in queued.items()
            ]
        error = RetryableError(f"worker {self.index} went away", retry_after=1.0)
        failed = [sent for sent in failed if sent.futs]
        if not failed:
            return
        self._failure(
            "lost",
            failed,
            "the connection to a worker ended with requests unanswered: they failed (retryable)",
            str(exc) if exc is not None else "closed",
        )
        for sent in failed:
            for fut in sent.futs:
                if not fut.done():
                    fut.set_exception(error)

    def _failure(self, reason: str, failed: list[_Sent], message: str, detail: str) -> None:
        """Count the items of ``failed`` consume requests (or queued parts) as a crossing
        that failed for ``reason``, and log it (at most a line a second per reason)."""
        items = 0
        ctx = self.ctx
        counter = ctx._failed if ctx is not None else None
        for sent in failed:
            if not sent.key:  # not a consume (a scrape): its caller says why
                continue
            signal = sent.key.split("|", 1)[0]
            n = sent.items
            if n < 0:
                n = 0
                for body in sent.bodies or ():
                    try:
                        n += payload_type(Signal(signal))(body).item_count()
                    except Exception:  # what cannot be read counts as one item
                        n += 1
            items += n
            if counter is not None:
                counter.labels(signal, reason).inc(n)
        if ctx is None or not any(sent.key for sent in failed):
            return
        level = logging.WARNING if reason == "refused" else logging.ERROR
        ctx._log_limiter.log(
            log,
            level,
            message,
            key=f"{self.index}|{reason}",
            extra={
                "worker": ctx.index,
                "owner": self.index,
                "requests": len(failed),
                "parts": sum(len(sent.futs) or 1 for sent in failed),
                "items": items,
                "error": detail,
            },
        )

    def _garbled(self, what: str) -> None:
        """The sibling's answers cannot be read any more: the connection is closed (its
        requests fail as lost)."""
        log.error(
            "a worker's answers cannot be read: %s; connection closed",
            what,
            extra={"worker": self.ctx.index if self.ctx is not None else None, "owner": self.index},
        )

    def _answer(self, proto: _ClientProtocol, req_id: int, status: int, reply: bytes) -> None:
        """An answer came on ``proto``: it resolves the callers of request ``req_id``; when
        that was a consume request, what is queued may leave now."""
        sent = proto.pending.pop(req_id, None)
        if sent is None:  # a bug in one worker or the other: nothing waits for it
            self._garbled(f"an answer to request {req_id}, which is not waiting for one")
            return
        answer = (status, reply)
        for fut in sent.futs:
            if not fut.done():
                fut.set_result(answer)
        if not sent.key:
            return
        proto.consuming -= 1
        if status != _OK:
            self._failure(
                "refused",
                [sent],
                "a worker refused parts handed over to it",
                reply.decode(errors="replace"),
            )
        if self._queued and self._may_send():
            self._flush()

    def _resumed(self) -> None:
        """The connection takes writes again: what is queued may leave now."""
        if self._queued and self._may_send():
            self._flush()

    def _may_send(self) -> bool:
        """Whether a consume request may be written now: fewer than ``_CONSUME_IN_FLIGHT``
        await their answer and the connection takes writes."""
        proto = self._proto
        return proto is not None and proto.writable and proto.consuming < _CONSUME_IN_FLIGHT

    async def call(self, op: int, key: str, body: bytes, items: int | None = None) -> bytes:
        fut = self.submit(op, key, body, items)
        if fut is None:  # not connected yet
            try:
                await self._connect()
            except RetryableError as exc:
                if op == _OP_CONSUME:
                    n = -1 if items is None else items
                    self._failure(
                        "unreachable",
                        [_Sent([], key, n, [body] if n < 0 else None)],
                        "a worker cannot be reached: the parts for it failed (retryable)",
                        str(exc),
                    )
                raise
            fut = self.submit(op, key, body, items)
            if fut is None:  # connected, and lost at once
                raise RetryableError(f"worker {self.index} went away", retry_after=1.0)
        return self.result(await fut)

    async def ready(self) -> None:
        """Wait until a request can be submitted: connected."""
        await self._connect()

    def submit(
        self, op: int, key: str, body: bytes, items: int | None = None
    ) -> asyncio.Future[tuple[int, bytes]] | None:
        """Hand ``body`` over without waiting: the future of its answer (``(status, reply)``,
        see :meth:`result`), or ``None`` when not connected (then :meth:`ready` first). A
        consume request leaves at once when fewer than ``_CONSUME_IN_FLIGHT`` others are in
        flight to this sibling and the connection takes writes (the sibling works on it while
        this worker goes on, with its own part of the same request); otherwise it is joined
        with the others queued, and they leave together when an answer comes or the
        connection takes writes again."""
        proto = self._proto
        if proto is None or proto.transport is None:
            return None
        if len(body) + len(key) + 16 >= _MAX_FRAME - _HEADER.size:
            raise PermanentError("request too large to hand to another worker")
        fut: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()
        if op != _OP_CONSUME:
            self._send(op, key.encode(), [body], _Sent([fut]))
            return fut
        if self._queued_bytes + len(body) >= _COALESCE_MAX:
            self._flush()  # a request holds at most _COALESCE_MAX bytes
        bodies, futs, counts = self._queued.setdefault(key, ([], [], []))
        bodies.append(body)
        futs.append(fut)
        counts.append(-1 if items is None else items)
        self._queued_bytes += len(body)
        if self._may_send():
            self._flush()
        return fut

    def result(self, answer: tuple[int, bytes]) -> bytes:
        """The reply of an answer, or the sibling's refusal raised."""
        status, reply = answer
        if status == _OK:
            return reply
        if status == _RETRY:
            raise RetryableError(f"worker {self.index}: {reply.decode(errors='replace')}")
        raise PermanentError(f"worker {self.index}: {reply.decode(errors='replace')}")

    def _flush(self) -> None:
        """Send what was queued: one request per pipeline set."""
        queued, self._queued = self._queued, {}
        self._queued_bytes = 0
        for key, (bodies, futs, counts) in queued.items():
            # the owner is told how many items the joined parts hold (-1: not known)
            total = -1 if -1 in counts else sum(counts)
            sent = _Sent(futs, key, total, bodies if total < 0 else None)
            self._send(_OP_CONSUME, f"{key}|{total}".encode(), bodies, sent)

    def _send(self, op: int, raw_key: bytes, bodies: list[bytes], sent: _Sent) -> bool:
        """Write one request (``bodies`` joined: its body); whether it was written (if not,
        its callers were told: the connection is gone)."""
        proto = self._proto
        transport = proto.transport if proto is not None else None
        if transport is None:
            self._failure(
                "lost",
                [sent],
                "the connection to a worker ended with requests unanswered: they failed "
                "(retryable)",
                "closed",
            )
            for fut in sent.futs:
                if not fut.done():
                    fut.set_exception(
                        RetryableError(f"worker {self.index} went away", retry_after=1.0)
                    )
            return False
        assert proto is not None
        self._next = req_id = (self._next + 1) & 0xFFFFFFFF
        proto.pending[req_id] = sent
        if sent.key:
            proto.consuming += 1
        size = sum(map(len, bodies))
        head = _HEADER.pack(len(raw_key) + size + _HEADER.size - 4, req_id, op, len(raw_key))
        _write_frame(proto, transport, head + raw_key, bodies)
        return True

    def close(self) -> None:
        if self._pump_task is not None:
            self._pump_task.cancel()
            self._pump_task = None
        proto, self._proto = self._proto, None
        if proto is not None and proto.transport is not None:
            proto.transport.close()

    # -- acknowledge: handover -----------------------------------------------------------------
    def backlog_full(self) -> bool:
        """Whether this sibling has more bytes handed over and not accepted yet than it may:
        new client requests with a part for it wait meanwhile (:meth:`below_backlog`)."""
        return self._out_bytes >= _HANDOVER_BACKLOG

    async def below_backlog(self) -> None:
        """Wait until :meth:`backlog_full` is no longer true, at most
        ``_HANDOVER_BACKLOG_WAIT`` seconds (then a retryable error: the client waits as it
        would for the owner's answer, and is refused when the owner does not keep up)."""
        end = time.monotonic() + _HANDOVER_BACKLOG_WAIT
        while self.backlog_full():
            self._below.clear()
            try:
                async with asyncio.timeout(max(end - time.monotonic(), 0.0)):  # (see _pump)
                    await self._below.wait()
            except TimeoutError:
                raise RetryableError(
                    f"worker {self.index} is behind with the parts handed over to it",
                    retry_after=1.0,
                ) from None

    def deliver(self, key: str, body: bytes, items: int | None = None) -> None:
        """Retain ``body`` (an encoded request for the pipelines of ``key``) until this
        sibling accepted it: it leaves joined with the parts queued within
        ``_HANDOVER_LINGER`` seconds (sooner once ``_HANDOVER_JOIN`` bytes wait), and goes
        again, after a pause, when the sibling refused it as retryable, could not be
        reached, or went away before answering (it may arrive twice then: at least once)."""
        self._out.append((key, body, -1 if items is None else items, time.monotonic()))
        self._out_bytes += len(body)
        if self._out_bytes >= _HANDOVER_JOIN:
            self._out_ready.set()
        if self._pump_task is None or self._pump_task.done():
            self._pump_task = asyncio.ensure_future(self._pump())

    def hurry(self) -> None:
        """Deliver what is retained without waiting for the linger (the drain)."""
        self._hurry = True
        self._out_ready.set()

    def idle(self) -> bool:
        """Nothing retained for this sibling."""
        return not self._out

    async def _pump(self) -> None:
        retry = 0.05
        while self._out:
            wait = self._out[0][3] + _HANDOVER_LINGER - time.monotonic()
            if wait > 0 and self._out_bytes < _HANDOVER_JOIN and not self._hurry:
                self._out_ready.clear()
                # (asyncio.timeout: wait_for on Python 3.11 loses a cancellation (close())
                # that arrives as the event is set, and the pump went on without a connection)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._out_ready.wait()
            # the parts of the first one's pipelines, in order, up to _COALESCE_MAX bytes (the
            # parts queued meanwhile are appended behind: these positions stay theirs)
            key = self._out[0][0]
            chosen: list[int] = []
            bodies: list[bytes] = []
            counts: list[int] = []
            size = 0
            for i, (k, body, n, _) in enumerate(self._out):
                if k != key:
                    continue
                if chosen and size + len(body) >= _COALESCE_MAX:
                    break
                chosen.append(i)
                bodies.append(body)
                counts.append(n)
                size += len(body)
            total = None if -1 in counts else sum(counts)
            try:
                await self.call(_OP_CONSUME, key, b"".join(bodies), total)
            except PermanentError as exc:
                items = 0
                if self.ctx is not None:
                    items = self.ctx.count_dropped(
                        (key, self._out[i][1], self._out[i][2]) for i in chosen
                    )
                log.error(
                    "a worker refused parts handed over to it for good: dropped",
                    extra={
                        "worker": self.index,
                        "parts": len(chosen),
                        "items": items,
                        "error": str(exc),
                    },
                )
            except Exception as exc:  # retryable, unreachable, gone, or a bug: again later
                log.debug("hand-over to worker %d failed, sent again: %s", self.index, exc)
                await asyncio.sleep(retry)
                retry = min(retry * 2, _HANDOVER_RETRY_MAX)
                self._take_over()  # (dead meanwhile: to the workers taking its traces over)
                continue
            retry = 0.05
            taken = set(chosen)
            self._out = collections.deque(e for i, e in enumerate(self._out) if i not in taken)
            self._out_bytes -= size
            if self._out_bytes < _HANDOVER_BACKLOG:
                self._below.set()

    def _take_over(self) -> None:
        """When the supervisor says this sibling died and its traces are taken over
        (:meth:`WorkerContext.dead_owners`), the parts retained for it (handed over before
        its death was known: they would reach it late, once it serves again, after the
        worker that took its traces over got their later spans) are split again as a client
        request's are now (:meth:`Router._adopt`) and retained for their new owners, this
        worker's own part through its own socket (its pipelines; retried and counted as a
        sibling's part is); counted (``otelcol_worker_adopted_items``) and logged. Metrics
        stay: their owner's cumulative series wait for it."""
        ctx = self.ctx
        if ctx is None or ctx._deaths is None or not self._out:
            return
        dead = ctx.dead_owners()
        if dead is None or not dead[self.index]:
            return
        kept: collections.deque[tuple[str, bytes, int, float]] = collections.deque()
        items: dict[str, int] = {}
        parts = 0
        to: set[int] = set()
        for entry in self._out:
            key, body, n, _ = entry
            signal = Signal(key.split("|", 1)[0])
            make = payload_type(signal)
            try:
                split = ctx.resplit(signal, body, dead)
                if n < 0:
                    n = make(body).item_count()
            except Exception:  # a part that cannot be read: its owner's refusal counts it
                split = None
            if not split or self.index in split:
                kept.append(entry)
                continue
            for o, (raw, m) in split.items():
                if m is None:
                    m = n if len(split) == 1 else make(raw).item_count()
                ctx._peer(o).deliver(key, raw, m)
                to.add(o)
            items[signal] = items.get(signal, 0) + n
            parts += 1
        if not parts:
            return
        self._out = kept
        self._out_bytes = sum(len(entry[1]) for entry in kept)
        if self._out_bytes < _HANDOVER_BACKLOG:
            self._below.set()
        for name, n in items.items():
            if ctx._adopted is not None:
                ctx._adopted.labels(name).inc(n)
            log.warning(
                "parts handed over to a worker that died before it took them: split again "
                "and handed to the workers taking its traces over",
                extra={
                    "worker": ctx.index,
                    "dead": self.index,
                    "signal": name,
                    "parts": parts,
                    "items": n,
                    "to": ",".join(map(str, sorted(to))),
                },
            )


class Router:
    """A receiver's consumer in a worker: the parts of each payload that other workers own
    go to them, the rest to ``inner``; it returns once every part was accepted, and raises
    what a part raised (retryable before permanent, as a fan-out: the sender retries the whole
    request, the parts already accepted arrive twice: at least once)."""

    def __init__(
        self,
        ctx: WorkerContext,
        signal: Signal,
        pipelines: list[str],
        inner: Consumer,
        counter: Any = None,
    ) -> None:
        self.counter = counter
        self.ctx = ctx
        self.signal = signal
        self.pipelines = pipelines
        self.inner = inner
        self.mutates_data = inner.mutates_data
        self.key = _consume_key(signal, self.pipelines)
        self._joiner: _Joiner | None = None
        self._split: Any = _route.split_traces if signal is Signal.TRACES else _split_metrics
        index = ctx.index
        # client requests in progress here for these pipelines as this one is split (set by
        # consume just before: no await between): balanced routing claims new traces for a
        # sibling only while requests queue up in this worker
        self._in_progress = 1
        owners = ctx.owners
        if signal is Signal.LOGS:
            self._split = lambda raw, count: _route.split_logs(
                raw,
                count,
                index,
                ctx.claim_table(self._in_progress),
                int(time.time()) if owners is not None else 0,
            )
        elif signal is Signal.TRACES and owners is not None:
            self._split = lambda raw, count: _route.split_traces(
                raw, count, ctx.claim_table(self._in_progress), int(time.time())
            )
        # a dead owner's part split again, its traces taken over (:meth:`_adopt`): adopted by
        # this worker in the ownership table, or by trace id given to a live worker; metrics
        # (by resource) are not: their owner's cumulative series would be held twice
        self._resplit: Callable[[bytes, int, bytes], dict[int, tuple[bytes, int | None]]] | None
        if signal is Signal.LOGS:
            self._resplit = lambda raw, count, dead: _route.split_logs(
                raw, count, index, owners, int(time.time()) if owners is not None else 0, dead
            )
        elif signal is Signal.TRACES:
            self._resplit = lambda raw, count, dead: _route.split_traces(
                raw, count, owners, int(time.time()) if owners is not None else 0, dead
            )
        else:
            self._resplit = None

    def retarget(self, inner: Consumer) -> None:
        self.inner = inner
        self.mutates_data = inner.mutates_data

    async def consume(self, data: Payload) -> None:
        ctx = self.ctx
        joiner = None
        if ctx.service is not None:  # not in a bare router (tests)
            joiner = self._joiner
            if joiner is None or joiner.ctx is not ctx:
                joiner = self._joiner = ctx.joiner(self.key)
            joiner.busy += 1
            self._in_progress = joiner.busy
            if joiner.busy > 1:  # only a busy worker's loop turns run long (poll_siblings)
                ctx.poll_siblings()
            else:  # idle: its loop read the siblings' connections as this request came
                ctx._polled = time.monotonic()
        try:
            await self._route(data, joiner)
        finally:
            if joiner is not None:
                joiner.busy -= 1

    async def _local(self, data: Payload, joiner: _Joiner | None) -> None:
        """Consume this worker's part: with the others of this turn when another client
        request for these pipelines is in progress here (:class:`_Joiner`), else at once."""
        if joiner is not None and (joiner.parts or joiner.busy > 1):
            await joiner.consume(data, self.inner)
        else:
            await self.inner.consume(data)

    async def _route(self, data: Payload, joiner: _Joiner | None) -> None:
        ctx = self.ctx
        parts = self._split(data.to_bytes(), ctx.count)
        if ctx._deaths is not None:
            dead = ctx.dead_owners()
            if dead is not None and any(dead[o] for o in parts):
                parts = self._adopt(parts, dead, type(data))
        local = parts.pop(ctx.index, None)
        if not parts:
            if local is not None:
                await self._local(data, joiner)
            return
        if local is None and len(parts) == 1:  # a sibling owns it all: the request's count
            parts = {o: (b, data.item_count() if n is None else n) for o, (b, n) in parts.items()}
        make = type(data)
        if ctx.acknowledge == "handover":
            await self._hand_over(data, parts, local, joiner)
            return
        if self.counter is not None:
            self.counter.inc(
                sum(n if n is not None else make(raw).item_count() for raw, n in parts.values())
            )
        # the parts for the siblings leave first (each sibling works on its part while this
        # worker works on its own: at a low rate the answer is often there before this
        # worker would sleep), without a task per part
        errors: list[BaseException] = []
        waits: list[tuple[Any, asyncio.Future[tuple[int, bytes]] | Coroutine[Any, Any, bytes]]] = []
        for owner, (raw, n) in parts.items():
            try:
                waits.append(ctx.hand_over(owner, self.signal, self.pipelines, raw, n))
            except ConsumeError as exc:
                errors.append(exc)
        done = 0
        try:
            if local is not None:
                raw, n = local
                try:
                    await self._local(make(raw, item_count=n).carry_acks(data.ack_tokens), joiner)
                except ConsumeError as exc:
                    errors.append(exc)
            for peer, wait in waits:
                try:
                    if isinstance(wait, asyncio.Future):
                        peer.result(await wait)
                    else:
                        await wait
                except ConsumeError as exc:
                    errors.append(exc)
                done += 1
        except BaseException:  # cancelled, or a bug: the answers still due are dropped
            for _, wait in waits[done:]:
                if isinstance(wait, asyncio.Future):
                    wait.add_done_callback(_retrieve)
                else:
                    wait.close()
            raise
        if not errors:
            return
        for err in errors:
            if isinstance(err, RetryableError):
                raise err
        raise errors[0]

    def _adopt(
        self, parts: dict[int, tuple[bytes, int | None]], dead: bytes, make: Any
    ) -> dict[int, tuple[bytes, int | None]]:
        """``parts`` with those of dead owners (``dead``: :meth:`WorkerContext.dead_owners`)
        split again, their traces taken over (:attr:`_resplit`), joined to the parts of their
        new owners; counted (``otelcol_worker_adopted_items``) and logged."""
        resplit = self._resplit
        if resplit is None:  # metrics: refused while their owner is down
            return parts
        ctx = self.ctx
        out: dict[int, list[tuple[bytes, int | None]]] = {}
        items = 0
        owners = []
        to: set[int] = set()
        for owner, (raw, n) in parts.items():
            if not dead[owner]:
                out.setdefault(owner, []).append((raw, n))
                continue
            owners.append(owner)
            items += n if n is not None else make(raw).item_count()
            for o, part in resplit(raw, ctx.count, dead).items():
                out.setdefault(o, []).append(part)
                to.add(o)
        if ctx._adopted is not None:
            ctx._adopted.labels(str(self.signal)).inc(items)
        ctx._log_limiter.log(
            log,
            logging.WARNING,
            "a dead worker's traces taken over: their spans or records go to a live worker "
            "instead of being refused",
            key=f"adopt|{self.signal}",
            extra={
                "worker": ctx.index,
                "dead": ",".join(map(str, owners)),
                "signal": str(self.signal),
                "items": items,
                "to": ",".join(map(str, sorted(to))),
            },
        )
        joined: dict[int, tuple[bytes, int | None]] = {}
        for o, got in out.items():
            if len(got) == 1:
                joined[o] = got[0]
                continue
            counts = [n if n is not None else make(raw).item_count() for raw, n in got]
            joined[o] = (b"".join(raw for raw, _ in got), sum(counts))
        return joined

    async def _hand_over(
        self,
        data: Payload,
        parts: dict[int, tuple[bytes, int | None]],
        local: tuple[bytes, int | None] | None,
        joiner: _Joiner | None = None,
    ) -> None:
        """``acknowledge: handover``: this worker's part is consumed, then the siblings'
        parts are queued for delivery (retained until accepted: :meth:`_Peer.deliver`); it
        returns without waiting for the siblings. While a sibling's backlog is full the
        request waits, and is refused (retryable) when it stays full, before anything was
        consumed; a refusal of the local part comes back before anything was handed over."""
        ctx = self.ctx
        peers = {owner: ctx._peer(owner) for owner in parts}
        for peer in peers.values():
            if peer.backlog_full():
                await peer.below_backlog()
        make = type(data)
        if local is not None:
            raw, n = local
            await self._local(make(raw, item_count=n).carry_acks(data.ack_tokens), joiner)
        key = self.key
        for owner, (raw, n) in parts.items():
            peers[owner].deliver(key, raw, n)
        if self.counter is not None:
            self.counter.inc(
                sum(n if n is not None else make(raw).item_count() for raw, n in parts.values())
            )


def _split_metrics(data: bytes, workers: int) -> dict[int, tuple[bytes, int | None]]:
    """:func:`_route.split_metrics` with each part's point count when it splits the request
    (the split copies resources and counts nothing): counted once here, where the count of
    the parts for siblings was read anyway (``otelcol_worker_forwarded_items``), instead of
    again at their owners' and this worker's entrances, and exact in a refusal's or drop's
    count."""
    parts = _route.split_metrics(data, workers)
    if len(parts) < 2:  # the request itself: its count is the request's
        return parts
    return {o: (raw, Metrics(raw).item_count()) for o, (raw, _) in parts.items()}


def _read_now(transport: asyncio.Transport | None) -> None:
    """Let ``transport`` read its socket now, as it does when the event loop finds the socket
    readable (its protocol gets what came, or the end of the connection; nothing when no byte
    is there): for a socket transport of the selector event loop, else nothing."""
    if transport is None or not transport.is_reading():
        return
    read = getattr(transport, "_read_ready", None)
    if read is not None:
        read()


def _run_now(coro: Coroutine[Any, Any, None], tasks: set[asyncio.Task[None]]) -> None:
    """Run ``coro`` at once, in a context of its own, as far as it goes without waiting; what
    waits goes on in a task (kept in ``tasks`` until done), from where it stopped."""
    context = contextvars.copy_context()
    try:
        yielded = context.run(coro.send, None)
    except StopIteration:
        return
    except asyncio.CancelledError:  # as a task cancelled at once: no answer, no error
        return
    except BaseException:
        coro.close()
        raise
    task = asyncio.get_running_loop().create_task(_drive(coro, yielded), context=context)
    tasks.add(task)
    task.add_done_callback(tasks.discard)


class _Joiner:
    """Fewer, larger consumes under load: this worker's own parts for one pipeline set that
    reach it in one turn of its event loop while it is busy (a client request for those
    pipelines in progress in this worker besides the one at hand) are consumed as one
    payload (:meth:`Payload.merge`: OTLP requests of one signal concatenate into one valid
    request) at the next turn, instead of one consume each. Each part's caller is told that
    payload's outcome: accepted, or refused (the refusal refuses exactly the parts it
    covered, each caller gets it). An idle worker (one request at a time) consumes at once,
    as before. Siblings' parts are not joined here: they go first, consumed as they are read
    (:meth:`_ServerProtocol._take`)."""

    def __init__(self, ctx: WorkerContext, target: str) -> None:
        self.ctx = ctx
        self.target = target
        self.busy = 0  # client requests for these pipelines in progress here (Router)
        self.parts: list[Payload] = []
        self.done: list[Callable[[BaseException | None], None]] = []
        self.consumers: list[Consumer] = []
        self.tasks: set[asyncio.Task[None]] = set()

    def join(
        self, payload: Payload, done: Callable[[BaseException | None], None], consumer: Consumer
    ) -> None:
        """Consume ``payload`` with the others of this turn by ``consumer`` (the pipelines of
        the graph of the :class:`Router` that took it); ``done`` is called with what that
        consume raised (``None``: accepted). Consumed while this worker stops, as the part
        of a request its receiver still finishes."""
        self.parts.append(payload)
        self.done.append(done)
        self.consumers.append(consumer)
        if len(self.parts) == 1:
            asyncio.get_running_loop().call_soon(self._flush)

    async def consume(self, payload: Payload, consumer: Consumer) -> None:
        """:meth:`join`, waiting for the outcome (raised when refused)."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def settle(exc: BaseException | None) -> None:
            if fut.done():
                return
            if exc is None:
                fut.set_result(None)
            elif isinstance(exc, asyncio.CancelledError):
                fut.cancel()
            else:
                fut.set_exception(exc)

        self.join(payload, settle, consumer)
        await fut  # cancelled: the part is consumed all the same, its outcome unread

    def _flush(self) -> None:
        parts, done, consumers = self.parts, self.done, self.consumers
        self.parts, self.done, self.consumers = [], [], []
        if not parts:
            return
        # each part is consumed by the graph its router belongs to, as it would have been
        # unjoined: not by the service's graph at this turn (a part joined before a reload
        # switched graphs went to the new graph, refused when it lacks these pipelines; a
        # receiver the reload started before the switch had its parts consumed by the old)
        consumer = consumers[0]
        if any(c is not consumer for c in consumers):  # routers of two graphs: one consume each
            by: dict[int, tuple[Consumer, list[Payload], list[Any]]] = {}
            for part, call, c in zip(parts, done, consumers, strict=True):
                group = by.setdefault(id(c), (c, [], []))
                group[1].append(part)
                group[2].append(call)
            for c, group_parts, group_done in by.values():
                self._consume(c, group_parts, group_done)
            return
        self._consume(consumer, parts, done)

    def _consume(
        self,
        consumer: Consumer,
        parts: list[Payload],
        done: list[Callable[[BaseException | None], None]],
    ) -> None:
        payload = parts[0] if len(parts) == 1 else type(parts[0]).merge(parts)
        _run_now(_consume_joined(consumer, payload, done), self.tasks)


def _sibling_payload(target: str, body: bytes, count: str) -> Payload | None:
    """The payload of a sibling's part for ``target`` (``count``: the items it holds, ``-1``
    unknown); ``None`` when the key cannot be read (unknown signal, count not a number)."""
    try:
        make = payload_type(Signal(target.split("|", 1)[0]))
        items = int(count)
    except (ValueError, KeyError):
        return None
    return make(body, item_count=items if items >= 0 else None)


async def _consume_joined(
    consumer: Consumer,
    payload: Payload,
    done: list[Callable[[BaseException | None], None]],
    parts: list[Payload] | None = None,
) -> None:
    try:
        await consumer.consume(payload)
    except (DecodeError, MalformedDataError) as exc:
        if parts is None or len(parts) < 2:
            _settle(done, exc)
            return
        # a part of the joined ones cannot be read (its count, at the pipelines' entrance,
        # before any component took anything): each part alone, each answered its own
        # outcome, so the good ones are taken and only the unreadable refused (for good)
        for part, call in zip(parts, done, strict=True):
            await _consume_joined(consumer, part, [call])
        return
    except BaseException as exc:
        _settle(done, exc)
        if not isinstance(exc, Exception):
            raise
        return
    _settle(done, None)


def _settle(done: list[Callable[[BaseException | None], None]], exc: BaseException | None) -> None:
    for call in done:
        try:
            call(exc)
        except Exception:  # one caller's bookkeeping does not keep the others waiting
            log.exception("a joined part's answer failed")


async def _drive(coro: Coroutine[Any, Any, None], yielded: Any) -> None:
    """Go on with ``coro``, whose first step ran outside a task (:meth:`_ServerProtocol._run`)
    and yielded ``yielded`` (a future it waits for, or ``None``: it let the loop turn),
    in a task of that step's context, as a task would: resumed once the future is done,
    cancellation thrown into it."""
    while True:
        try:
            if yielded is None:
                await asyncio.sleep(0)
            elif not yielded.done():
                yielded._asyncio_future_blocking = False  # taken, as a task does
                waiter = asyncio.get_running_loop().create_future()
                yielded.add_done_callback(lambda _, w=waiter: w.done() or w.set_result(None))
                await waiter
        except BaseException as exc:  # cancelled: the coroutine gets it where it waits
            if yielded is not None and not yielded.done():
                yielded.cancel()  # what it waited for, as a task's cancel() does
            try:
                yielded = coro.throw(exc)
            except StopIteration:
                return
            continue
        try:
            yielded = coro.send(None)
        except StopIteration:
            return


def _retrieve(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


# -- merging the expositions -------------------------------------------------------------------
_ADDED_SUFFIXES = ("_bucket", "_count", "_sum", "_total", "_created")


def merge_families(workers: Iterable[list[Metric]], gauges: str = "latest") -> list[Metric]:
    """One list of families from every worker's: samples with the same name and labels are
    added, except gauges (and ``unknown`` families): ``latest`` keeps the sample with the most
    recent timestamp (the first worker's when none has one), ``sum`` adds them (``*uptime*``
    the largest, ``*start_time*`` the earliest). Summary quantiles keep the first worker's."""
    merged: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], Sample]] = {}
    for families in workers:
        for fam in families:
            target = merged.get(fam.name)
            if target is None:
                target = merged[fam.name] = Metric(fam.name, fam.documentation, fam.type, fam.unit)
                values[fam.name] = {}
            held = values[fam.name]
            for s in fam.samples:
                labels = s.labels
                key = (
                    s.name,
                    tuple(sorted(labels.items())) if len(labels) > 1 else tuple(labels.items()),
                )
                old = held.get(key)
                if old is None:
                    held[key] = s
                    continue
                held[key] = _combine(fam, old, s, gauges)
    out = []
    for name, fam in merged.items():
        fam.samples = list(values[name].values())
        out.append(fam)
    return out


def _combine(fam: Metric, old: Sample, new: Sample, gauges: str) -> Sample:
    # (Sample(...) rather than old._replace(...): the same tuple, a fraction of the calls)
    if gauges == "sum":  # the gateway's own metrics: one process's clock is not summed
        if "uptime" in fam.name:
            return _with(old, max(old.value, new.value), old.timestamp)
        if "start_time" in fam.name:
            return _with(old, min(old.value, new.value), old.timestamp)
    if fam.type in ("gauge", "unknown", "info", "stateset"):
        if gauges == "latest":
            if _ts(new) > _ts(old):
                return new
            return old
        return _with(old, old.value + new.value, old.timestamp)
    if fam.type == "summary" and "quantile" in old.labels:
        return old
    if new.name.endswith("_created"):
        return _with(old, min(old.value, new.value), old.timestamp)
    ts = new.timestamp if _ts(new) > _ts(old) else old.timestamp
    return _with(old, old.value + new.value, ts)


def _with(old: Sample, value: float, timestamp: Any) -> Sample:
    return Sample(old.name, old.labels, value, timestamp, old.exemplar, old.native_histogram)


def _ts(s: Sample) -> float:
    return 0.0 if s.timestamp is None else float(s.timestamp)


def strip_timestamps(families: list[Metric]) -> list[Metric]:
    for fam in families:
        fam.samples = [s._replace(timestamp=None) for s in fam.samples]
    return families


class FamiliesCollector:
    """Families as a ``prometheus_client`` collector (for ``generate_latest``)."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return iter(self.families)


def restart_families(run_dir: Path, count: int) -> list[Metric]:
    """``otelcol_worker_restarts_total{worker}`` and ``otelcol_workers``, from what the
    supervisor wrote."""
    try:
        restarts = json.loads((run_dir / "restarts.json").read_text())
    except (OSError, ValueError):
        restarts = {}
    counter = Metric(
        "otelcol_worker_restarts",
        "Worker processes that died and were started again by the supervisor, by worker.",
        "counter",
    )
    for i in range(count):
        counter.add_sample(
            "otelcol_worker_restarts_total", {"worker": str(i)}, float(restarts.get(str(i), 0))
        )
    gauge = Metric(
        "otelcol_workers", "Worker processes the gateway runs (service.workers).", "gauge"
    )
    gauge.add_sample("otelcol_workers", {}, float(count))
    return [counter, gauge]


# -- process-wide state ---------------------------------------------------------------------------
_CONTEXT: WorkerContext | None = None


def current() -> WorkerContext | None:
    """This process's :class:`WorkerContext`, or ``None`` when it is the only process."""
    return _CONTEXT


def enter_from_env() -> WorkerContext | None:
    """Become a worker when the supervisor said so (``PIPELINE_WORKER``)."""
    global _CONTEXT
    text = os.environ.get(ENV)
    if not text:
        return None
    index, count, run_dir = text.split("/", 2)
    ctx = WorkerContext(int(index), int(count), Path(run_dir))
    ctx._deaths = _open_deaths(ctx.run_dir, ctx.count)
    ctx.restarted = os.environ.get(RESTART_ENV) == "1"
    routing = os.environ.get(ROUTING_ENV)
    if routing in ("first_arrival", "balanced"):
        ctx.owners = _open_owners(ctx)
        if routing == "balanced" and ctx.owners is not None:
            ctx.meter = LoadMeter(ctx, ctx.owners, _open_board(ctx.run_dir, ctx.count))
    _die_with_parent()
    from pipeline import netedge

    netedge.REUSE_PORT = True
    _CONTEXT = ctx
    return ctx


def _open_owners(ctx: WorkerContext) -> _route.OwnerTable | None:
    """The ownership table the supervisor made (shared by every worker, a restarted one
    included); ``None`` (routing by trace id) without the C module: the Python twin cannot
    claim a trace atomically across processes."""
    if _route.native() is None or ctx.count > 256:
        log.warning(
            "service.worker_routing first_arrival or balanced needs the C module "
            "plugins._native._route "
            "and at most 256 workers; routing by trace id",
            extra={"worker": ctx.index},
        )
        return None
    import mmap

    fd = os.open(ctx.run_dir / "owners", os.O_RDWR)
    try:
        table = mmap.mmap(fd, _route.table_bytes(OWNERS_BUCKETS))
    finally:
        os.close(fd)
    return _route.OwnerTable(table, ctx.index, OWNERS_TTL)


def _deaths_bytes(count: int) -> int:
    return (1 + count) * 8


def _open_deaths(run_dir: Path, count: int) -> Any:
    """The supervisor's board of dead workers (``run_dir/deaths``: an epoch, bumped at every
    change, then a ``DEATH_*`` state a worker; int64), ``None`` when there is none."""
    import mmap

    try:
        fd = os.open(run_dir / "deaths", os.O_RDWR)
    except FileNotFoundError:
        return None
    try:
        board = mmap.mmap(fd, _deaths_bytes(count))
    finally:
        os.close(fd)
    return memoryview(board).cast("q")


def _open_board(run_dir: Path, count: int) -> Any:
    """The load board the supervisor made (``run_dir/load``), as int64 fields."""
    import mmap

    fd = os.open(run_dir / "load", os.O_RDWR)
    try:
        board = mmap.mmap(fd, _route.load_bytes(count))
    finally:
        os.close(fd)
    return _route.load_slots(board, count)


class LoadMeter:
    """``service.worker_routing: balanced``: how busy this worker's event loop is (the time
    outside its selector's wait, over windows of at least ``WINDOW`` seconds, averaged with the
    previous window), published on the load board the workers share (:mod:`pipeline._route`,
    ``load_bytes``); after each publication it chooses for whom new traces are claimed
    (``_route.balanced_claimant``; :meth:`WorkerContext.claim_table` gives that claimant's
    view of the ownership table while client requests queue up in this worker). No timer: it
    publishes when the loop turns (an idle worker, waiting in its selector, is read as idle by
    its siblings from the time it started waiting)."""

    WINDOW = 0.02

    def __init__(self, ctx: WorkerContext, owners: _route.OwnerTable, fields: Any) -> None:
        self.ctx = ctx
        self.fields = fields
        self.base = ctx.index * (_route.LOAD_SLOT_BYTES // 8)
        self.busy = 0.0
        self.claimant = ctx.index
        self.tables = [
            owners if i == ctx.index else _route.OwnerTable(owners.buf, i, owners.ttl)
            for i in range(ctx.count)
        ]
        self._start = time.monotonic()
        self._idle = 0.0

    def alive(self) -> None:
        """Mark this worker on the board as taking traces (when it serves)."""
        f, b = self.fields, self.base
        f[b + 1] = int(self.busy * 1000)
        f[b + 2] = 0
        f[b + 3] = int(time.monotonic() * 1e6)
        f[b + 4] = os.getpid()
        f[b] = 1

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        """Measure ``loop``'s waits: its selector's ``select`` (the selector event loop's)."""
        selector = getattr(loop, "_selector", None)
        if selector is None:
            log.warning(
                "service.worker_routing balanced: the event loop has no selector to measure; "
                "this worker keeps the traces it receives first",
                extra={"worker": self.ctx.index},
            )
            return
        inner = selector.select
        f, b, monotonic = self.fields, self.base, time.monotonic

        def select(timeout: float | None = None) -> Any:
            if timeout is not None and timeout <= 0:  # a poll between callbacks: busy
                try:
                    return inner(timeout)
                finally:
                    t = monotonic()
                    if t - self._start >= self.WINDOW:
                        self.publish(t)
            t0 = monotonic()
            f[b + 2] = int(t0 * 1e6) or 1
            try:
                return inner(timeout)
            finally:
                t1 = monotonic()
                f[b + 2] = 0
                self._idle += t1 - t0
                if t1 - self._start >= self.WINDOW:
                    self.publish(t1)

        selector.select = select

    def publish(self, now: float) -> None:
        wall = now - self._start
        busy = max(0.0, 1.0 - self._idle / wall) if wall > 0 else 1.0
        self.busy = (self.busy + busy) / 2
        self._start, self._idle = now, 0.0
        f, b = self.fields, self.base
        f[b + 1] = int(self.busy * 1000)
        f[b + 3] = int(now * 1e6)
        ctx = self.ctx
        claimant = _route.balanced_claimant(
            f, ctx.count, ctx.index, self.busy, int(now * 1e6), self.claimant
        )
        self.claimant = claimant


def leave() -> None:
    global _CONTEXT
    _CONTEXT = None


class WorkerLogFilter(logging.Filter):
    """Stamps every log record of a worker with ``worker`` (its index)."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index

    def filter(self, record: logging.LogRecord) -> bool:
        record.worker = self.index
        return True


# -- the supervisor -------------------------------------------------------------------------------
def _die_with_parent() -> None:
    """SIGTERM to this worker when the supervisor goes away (even by SIGKILL); a worker whose
    supervisor is already gone leaves."""
    parent = os.getppid()
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal_module.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != parent or parent == 1:
        sys.exit("the supervisor is gone")


@dataclass
class _Slot:
    index: int
    proc: asyncio.subprocess.Process | None = None
    restarts: int = 0
    started: float = 0.0
    failures: int = 0  # consecutive quick deaths (backoff)
    down: bool = False  # dead, not serving again yet
    adopted: bool = True  # its last death's traces were taken over by the others
    adopted_at: float | None = None  # when that death was (monotonic)


class Supervisor:
    """Runs ``count`` workers of ``argv`` (``pipeline run``'s own arguments)."""

    def __init__(
        self, argv: list[str], count: int, shutdown_timeout: float, routing: str = "trace_id"
    ) -> None:
        self.argv = argv
        self.count = count
        self.shutdown_timeout = shutdown_timeout
        self.routing = routing
        self.run_dir = Path(tempfile.mkdtemp(prefix="pipeline-workers-"))
        if routing in ("first_arrival", "balanced"):  # zeros: no trace owned yet (sparse)
            with open(self.run_dir / "owners", "wb") as f:
                f.truncate(_route.table_bytes(OWNERS_BUCKETS))
        self._board: Any = None
        if routing == "balanced":  # zeros: no worker alive yet
            with open(self.run_dir / "load", "wb") as f:
                f.truncate(_route.load_bytes(count))
            self._board = _open_board(self.run_dir, count)
        with open(self.run_dir / "deaths", "wb") as f:  # zeros: every worker serving
            f.truncate(_deaths_bytes(count))
        self._deaths = _open_deaths(self.run_dir, count)
        self.slots = [_Slot(i) for i in range(count)]
        self.stopping = False
        self._stop = asyncio.Event()

    async def _spawn(self, slot: _Slot) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.run_dir / f"ready-{slot.index}").unlink()
        env = {
            **os.environ,
            ENV: f"{slot.index}/{self.count}/{self.run_dir}",
            ROUTING_ENV: self.routing,
            RESTART_ENV: "1" if slot.restarts else "0",
        }
        slot.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "pipeline",
            *self.argv,
            env=env,
        )
        slot.started = time.monotonic()
        log.info("worker started", extra={"worker": slot.index, "pid": slot.proc.pid})

    async def _wait_ready(self, slot: _Slot) -> bool:
        deadline = time.monotonic() + READY_TIMEOUT
        ready = self.run_dir / f"ready-{slot.index}"
        while time.monotonic() < deadline:
            if ready.exists():
                return True
            if slot.proc is None or slot.proc.returncode is not None:
                return False
            await asyncio.sleep(0.02)
        return False

    def _write_restarts(self) -> None:
        tmp = self.run_dir / "restarts.json.tmp"
        tmp.write_text(json.dumps({str(s.index): s.restarts for s in self.slots}))
        tmp.replace(self.run_dir / "restarts.json")

    async def _watch(self, slot: _Slot) -> None:
        while True:
            proc = slot.proc
            assert proc is not None
            code = await proc.wait()
            if self._board is not None:  # balanced: a dead worker takes no new trace
                self._board[slot.index * (_route.LOAD_SLOT_BYTES // 8)] = 0
            if self.stopping:
                return
            slot.restarts += 1
            self._write_restarts()
            quick = time.monotonic() - slot.started < 5.0
            slot.failures = slot.failures + 1 if quick else 0
            delay = min(0.1 * (2**slot.failures), RESTART_BACKOFF_MAX) if quick else 0.0
            refused = self._dead(slot, quick)
            log.error(
                "worker died; starting it again",
                extra={
                    "worker": slot.index,
                    "pid": proc.pid,
                    "exit_code": code,
                    "restarts": slot.restarts,
                    "delay_s": delay,
                    "traces": "refused" if refused else "taken over",
                },
            )
            if refused:
                log.error(
                    "the dead worker's traces are refused (retryable) until it serves again",
                    extra={"worker": slot.index, "reason": refused},
                )
            else:
                log.warning(
                    "the dead worker's traces are taken over by the other workers until it "
                    "serves again",
                    extra={"worker": slot.index},
                )
            if delay:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._stop.wait()
            if self.stopping:
                return
            await self._spawn(slot)
            await self._serving_again(slot)

    def _dead(self, slot: _Slot, quick: bool) -> str | None:
        """Publish that ``slot``'s worker died (``run_dir/deaths``) and whether its traces are
        taken over by the others; the reason when they are not: another worker's traces were
        taken over within ``ADOPT_WINDOW`` seconds (or it is still down) — this worker may be
        the one that took them and died of them (a poison input) — or it crash-loops (died
        within 5 s of its start) after a death whose traces were refused. A poison input thus
        kills its owner and at most one adopter, never every worker."""
        now = time.monotonic()
        reason = None
        for other in self.slots:
            if (
                other is not slot
                and other.adopted
                and other.adopted_at is not None
                and (other.down or now - other.adopted_at < ADOPT_WINDOW)
            ):
                reason = (
                    f"worker {other.index}'s traces were taken over {now - other.adopted_at:.1f} s "
                    f"ago{' and it is still down' if other.down else ''}: not again within "
                    f"{ADOPT_WINDOW:.0f} s (a poison input would spread)"
                )
                break
        if reason is None and quick and not slot.adopted:
            reason = (
                "it keeps dying within 5 s of its start after a death whose traces were refused"
            )
        slot.down = True
        slot.adopted = reason is None
        if reason is None:
            slot.adopted_at = now
        board = self._deaths
        board[1 + slot.index] = DEATH_REFUSED if reason else DEATH_ADOPTED
        board[0] += 1
        return reason

    async def _serving_again(self, slot: _Slot) -> None:
        """Wait until ``slot``'s new worker serves (its ready file), then publish it: the
        others stop taking over its traces (those they took stay theirs in the ownership
        table). Returns at once when it dies first or the gateway stops."""
        ready = self.run_dir / f"ready-{slot.index}"
        proc = slot.proc
        while not self.stopping and proc is not None and proc.returncode is None:
            if ready.exists():
                slot.down = False
                board = self._deaths
                board[1 + slot.index] = DEATH_SERVING
                board[0] += 1
                log.info(
                    "worker serves again; the others stop taking over its traces",
                    extra={"worker": slot.index, "pid": proc.pid},
                )
                return
            await asyncio.sleep(0.02)

    def _signal(self, sig: signal_module.Signals) -> None:
        if sig == signal_module.SIGHUP:
            log.info("signal received; every worker reloads", extra={"signal": "SIGHUP"})
            for slot in self.slots:
                if slot.proc is not None and slot.proc.returncode is None:
                    slot.proc.send_signal(sig)
            return
        log.info("signal received; draining every worker", extra={"signal": sig.name})
        self.stopping = True
        self._stop.set()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal_module.SIGTERM, signal_module.SIGINT, signal_module.SIGHUP):
            loop.add_signal_handler(sig, self._signal, sig)
        self._write_restarts()
        watchers: list[asyncio.Task[None]] = []
        code = 0
        try:
            # the primary first: it checks every endpoint (a config error ends here)
            first = self.slots[0]
            await self._spawn(first)
            if not await self._first_ready(first):
                self.stopping = True
                if self._stop.is_set():
                    return 0  # asked to stop while starting
                return (first.proc.returncode or 1) if first.proc is not None else 1
            for slot in self.slots[1:]:
                await self._spawn(slot)
            for slot in self.slots[1:]:
                if not await self._first_ready(slot):
                    self.stopping = True
                    return 0 if self._stop.is_set() else 1
            log.info(
                "every worker is ready; serving",
                extra={"workers": self.count, "run_dir": str(self.run_dir)},
            )
            watchers = [asyncio.ensure_future(self._watch(s)) for s in self.slots]
            await self._stop.wait()
        finally:
            self.stopping = True
            code = await self._drain()
            for task in watchers:
                task.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)
            for sig in (signal_module.SIGTERM, signal_module.SIGINT, signal_module.SIGHUP):
                loop.remove_signal_handler(sig)
            shutil.rmtree(self.run_dir, ignore_errors=True)
        log.info("every worker stopped", extra={"exit_code": code})
        return code

    async def _first_ready(self, slot: _Slot) -> bool:
        waiting = asyncio.ensure_future(self._wait_ready(slot))
        stop = asyncio.ensure_future(self._stop.wait())
        await asyncio.wait({waiting, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if not waiting.done():
            waiting.cancel()
            return False
        if not waiting.result():
            log.error(
                "worker failed to start",
                extra={
                    "worker": slot.index,
                    "exit_code": slot.proc.returncode if slot.proc is not None else None,
                },
            )
            return False
        return True

    async def _drain(self) -> int:
        live = [s.proc for s in self.slots if s.proc is not None and s.proc.returncode is None]
        for proc in live:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal_module.SIGTERM)
        codes: list[int] = []
        for proc in live:
            try:
                async with asyncio.timeout(self.shutdown_timeout + 10.0):
                    codes.append(await proc.wait())
            except TimeoutError:
                log.error("worker did not stop in time; killed", extra={"pid": proc.pid})
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                codes.append(await proc.wait())
        return max(codes, default=0)


def supervise(
    argv: list[str], count: int, shutdown_timeout: float, routing: str = "trace_id"
) -> int:
    """Run the gateway as ``count`` workers until SIGTERM/SIGINT (``routing``:
    ``service.worker_routing``); the exit code."""
    return asyncio.run(Supervisor(argv, count, shutdown_timeout, routing).run())
