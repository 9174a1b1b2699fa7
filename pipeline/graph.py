"""The pipeline graph: from a validated config to running components wired together.

Nodes are created once per running instance: a receiver per (ID, signal) shared by every
pipeline naming it, processors per pipeline, an exporter per (ID, signal), a connector per
(ID, from-signal, to-signal). Edges follow the data; the service starts nodes against the flow
(exporters first) and shuts them down with it (receivers first), so everything in flight drains
into the exporters.
"""

from __future__ import annotations

import asyncio
import graphlib
import itertools
import logging
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

from pipeline import workers
from pipeline.auth import auth_references
from pipeline.component import ComponentID, CreateSettings, Kind
from pipeline.config import Config, PipelineConfig, PipelineID
from pipeline.configtypes import ComponentConfig
from pipeline.confmap import RawConfig
from pipeline.consumer import Consumer, IsolatedConsumer, fan_out
from pipeline.durability import WriteAheadLog, carry_current, current_holder
from pipeline.errors import ConfigError, ConsumeError, RetryableError
from pipeline.factory import ConnectorFactory
from pipeline.pdata import Payload, Signal
from pipeline.tasks import in_a_task
from pipeline.telemetry import (
    LOGGER_NAME,
    ComponentTelemetry,
    LoopValue,
    SelfTelemetry,
    component_logger,
)

GATE_WAIT = 30.0  # how long data waits for an exporter being replaced by a reload to start


def check_cycles(
    pipelines: dict[PipelineID, PipelineConfig],
    components: dict[Kind, dict[ComponentID, ComponentConfig]],
    raw: RawConfig,
) -> list[ConfigError]:
    """Connectors that make data flow in a circle between pipelines."""
    edges: dict[PipelineID, set[PipelineID]] = {p: set() for p in pipelines}
    via: dict[tuple[PipelineID, PipelineID], ComponentID] = {}
    for a in pipelines.values():
        for cid in a.exporters:
            if cid not in components[Kind.CONNECTOR]:
                continue
            for b in pipelines.values():
                if cid in b.receivers:
                    edges[a.id].add(b.id)
                    via[(a.id, b.id)] = cid
    sorter = graphlib.TopologicalSorter({b: {a for a in edges if b in edges[a]} for b in edges})
    try:
        sorter.prepare()
    except graphlib.CycleError as exc:
        cycle: list[Any] = exc.args[1]
        steps = []
        for a, b in itertools.pairwise(cycle):
            steps.append(f"pipeline {a} -> connector {via.get((a, b), via.get((b, a)))}")
        first = cycle[0]
        pipe = pipelines[first]
        nxt = cycle[1] if len(cycle) > 1 else first
        link = via.get((first, nxt)) or via.get((nxt, first))
        idx = pipe.exporters.index(link) if link in pipe.exporters else 0
        path = ("service", "pipelines", str(first), "exporters", idx)
        return [
            raw.error(
                path, "connectors form a cycle: " + " -> ".join(steps) + f" -> pipeline {cycle[-1]}"
            )
        ]
    return []


class ObservedConsumer:
    """Counts what a receiver pushes into its pipelines: accepted or refused. Its ``inner`` is
    re-pointed when a config reload changes the pipelines a kept receiver feeds."""

    mutates_data = False

    def __init__(self, inner: Consumer, telemetry: ComponentTelemetry) -> None:
        self.inner = inner
        self.telemetry = telemetry
        # the accepted items of the signal counted last (a receiver's node serves one)
        self._signal: Signal | None = None
        self._accepted: LoopValue | None = None

    def retarget(self, inner: Consumer) -> None:
        self.inner = inner

    async def consume(self, data: Payload) -> None:
        n = data.item_count()
        try:
            await self.inner.consume(data)
        except ConsumeError:
            self.telemetry.refused(data.signal, n)
            self.telemetry.accepted(data.signal, 0)
            raise
        accepted = self._accepted
        if accepted is None or data.signal is not self._signal:
            # As the Collector does: both series exist from the first request, so rates and
            # refused/accepted ratios work before anything was refused.
            self._signal = data.signal
            accepted = self._accepted = self.telemetry.receiver_values(data.signal)[0]
        accepted.value += n


class _CountingConsumer:
    """Counts the items a processor passes on (``otelcol_processor_outgoing_items``): the
    processor's next consumer, re-pointed when a reload changes what follows it."""

    mutates_data = False

    def __init__(self, inner: Consumer, telemetry: ComponentTelemetry) -> None:
        self.inner = inner
        self.telemetry = telemetry
        self.mutates_data = inner.mutates_data
        self._signal: Signal | None = None
        self._outgoing: LoopValue | None = None

    def retarget(self, inner: Consumer) -> None:
        self.inner = inner
        self.mutates_data = inner.mutates_data

    def passing(self, data: Payload) -> Payload:
        """``data`` counted as passed on, with the tokens of the payload being consumed
        (what :meth:`consume` gives its inner consumer)."""
        outgoing = self._outgoing
        if outgoing is None or data.signal is not self._signal:
            self._signal = data.signal
            outgoing = self._outgoing = self.telemetry.items_value("outgoing", data.signal)
        n = data._count  # (item_count() without its call when the count is known)
        outgoing.value += n if n is not None else data.item_count()
        # a payload the processor built during its consume call carries the input's tokens
        # (carry_current, without its call)
        if not data.ack_tokens:
            holder = current_holder()
            if holder:
                data.carry_acks(holder[0])
        return data

    async def consume(self, data: Payload) -> None:
        await self.inner.consume(self.passing(data))


class _ConnectorOutput(_CountingConsumer):
    """What a connector passes into its pipelines (``otelcol_connector_outgoing_items``)."""

    def __init__(
        self, inner: Consumer, telemetry: ComponentTelemetry, source: Signal, target: Signal
    ) -> None:
        super().__init__(inner, telemetry)
        self.source = source
        self.target = target

    async def consume(self, data: Payload) -> None:
        outgoing = self._outgoing
        if outgoing is None:
            outgoing = self._outgoing = self.telemetry.connector_value(
                "outgoing", self.source, self.target
            )
        outgoing.value += data.item_count()
        await self.inner.consume(carry_current(data))


class _ProcessorEntry:
    """Counts the items a processor takes in, then hands them to it (isolated per payload).

    Without coroutines where the processor does not suspend (:meth:`consume_now`): a
    processor that passes its input on unchanged after a check (``admit``, see
    :class:`~pipeline.component.Component`) is checked here and its next consumer called from
    here; one that can take a payload synchronously (``consume_now``) is called so. The
    agent pipeline's entrance (memory_limiter -> workflow) is then one coroutine a consume
    instead of five."""

    def __init__(self, processor: Consumer, settings: CreateSettings, output: Any = None) -> None:
        self.processor = IsolatedConsumer(processor, settings)
        self.component = processor
        self.telemetry = settings.telemetry
        self.mutates_data = processor.mutates_data
        self._signal: Signal | None = None
        self._incoming: LoopValue | None = None
        # the processor's check when it passes its input on unchanged to `output` (its next
        # consumer, a _CountingConsumer), else None
        admit = getattr(processor, "admit", None)
        self._admit = admit if isinstance(output, _CountingConsumer) else None
        self._output = output
        self._now = getattr(processor, "consume_now", None)
        # the output's consumer last called and its consume_now (looked up once, not a consume)
        self._next: Any = None
        self._next_now: Any = None

    async def consume(self, data: Payload) -> None:
        rest = self.consume_now(data)
        if rest is not None:
            await rest

    def consume_now(self, data: Payload) -> Awaitable[None] | None:
        """Takes ``data`` as :meth:`consume` does, synchronously as far as the processor (and
        those after it) allow: ``None`` once taken, else what finishes the consume (to be
        awaited). A refusal raises here or from what is returned."""
        incoming = self._incoming
        if incoming is None or data.signal is not self._signal:
            self._signal = data.signal
            incoming = self._incoming = self.telemetry.items_value("incoming", data.signal)
        n = data._count  # (item_count() without its call when the count is known)
        incoming.value += n if n is not None else data.item_count()
        if data.ack_tokens:
            return self.processor.consume(data)
        # IsolatedConsumer.consume without its own coroutine: its caught() and finish()
        try:
            admit = self._admit
            if admit is not None:
                admit(data)  # (raises a ConsumeError to refuse)
                out = self._output
                inner = out.inner
                passed = out.passing(data)
                if inner is not self._next:  # (re-pointed by a reload)
                    self._next = inner
                    self._next_now = getattr(inner, "consume_now", None)
                now = self._next_now
                rest = now(passed) if now is not None else inner.consume(passed)
            elif self._now is not None:
                rest = self._now(data)
            else:
                rest = self.component.consume(data)
        except Exception as exc:
            return self.processor.caught(data, exc)
        if rest is None:
            return None
        return self.processor.finish(rest, data)


class _Incoming:
    """Counts the items an exporter takes in (``otelcol_exporter_incoming_items``), or a
    connector (``otelcol_connector_incoming_items``), then hands them over isolated. An
    exporter created by a config reload that must wait for the one it replaces has a gate:
    data waits for it to start (at most ``GATE_WAIT``, then the sender is asked to retry)."""

    def __init__(self, inner: IsolatedConsumer, node: Node) -> None:
        self.inner = inner
        self.telemetry = inner.settings.telemetry
        self.mutates_data = inner.mutates_data
        self.source, _, target = node.signal.partition(" -> ")
        self.target = target
        self.gate = node.gate
        self.label = node.label
        self._signal: Signal | None = None
        self._incoming: LoopValue | None = None

    async def _wait_for_gate(self, gate: asyncio.Event) -> None:
        try:
            async with asyncio.timeout(GATE_WAIT):
                await gate.wait()
        except TimeoutError:
            raise RetryableError(
                f"{self.label} is being replaced by a config reload", retry_after=1.0
            ) from None

    async def consume(self, data: Payload) -> None:
        gate = self.gate
        if gate is not None and not gate.is_set():
            # (in a task: a worker takes a sibling's part outside any task, and
            # asyncio.timeout needs one)
            await in_a_task(self._wait_for_gate(gate))
        incoming = self._incoming
        if incoming is None or data.signal is not self._signal:
            self._signal = data.signal
            incoming = self._incoming = (
                self.telemetry.connector_value("incoming", self.source, self.target)
                if self.target
                else self.telemetry.items_value("incoming", data.signal)
            )
        incoming.value += data.item_count()
        await self.inner.consume(data)


_PRIMARY_ONLY = logging.getLogger(f"{LOGGER_NAME}.workers")


class Inert:
    """What stands for a component that runs in another worker process (see
    :mod:`pipeline.workers`): starts and stops, takes no data."""

    mutates_data = False

    async def start(self, host: Any) -> None:
        return None

    async def shutdown(self) -> None:
        return None

    async def consume(self, data: Payload) -> None:
        return None


@dataclass(eq=False)
class Node:
    """One running instance in the graph."""

    kind: Kind
    id: ComponentID
    label: str  # "receiver otlp (traces)"
    component: Any = None
    downstream: list[Node] = field(default_factory=list)
    settings: CreateSettings | None = None
    signal: str = ""  # "traces"; "traces -> metrics" for a connector; "" for an extension
    pipelines: list[PipelineID] = field(default_factory=list)
    config: ComponentConfig | None = None
    output: Any = None  # the link it passes data to (retarget() on a reload)
    reused: bool = False  # taken over from the graph a reload replaced
    gate: asyncio.Event | None = None  # an exporter a reload created: set once it may take data

    def consumer(self) -> Consumer:
        """The component as its upstream sees it: behind the engine's failure isolation,
        its incoming items counted."""
        assert self.settings is not None
        return _Incoming(IsolatedConsumer(self.component, self.settings), self)


class Graph:
    """Builds every component of a config and orders them for start and shutdown.

    With ``previous`` (a config reload), an instance whose config did not change is taken over
    from the previous graph instead of being created again (``Node.reused``); what it passes
    data to is re-pointed by :meth:`rewire`, once the new components have started. A component
    is created again when its config changed, when an extension its options name is created
    again, or (a receiver) when the signals it serves changed.
    """

    def __init__(
        self,
        config: Config,
        telemetry: SelfTelemetry,
        previous: Graph | None = None,
    ) -> None:
        self.config = config
        self.telemetry = telemetry
        self.previous = previous
        self.nodes: list[Node] = []
        self._exporters: dict[tuple[ComponentID, Signal], Node] = {}
        self._connectors: dict[tuple[ComponentID, Signal, Signal], Node] = {}
        self._entries: dict[PipelineID, tuple[Consumer, list[Node]]] = {}
        self.extensions: dict[ComponentID, Node] = {}
        self._by_key: dict[tuple[Any, ...], Node] = {}
        self._rewiring: list[tuple[Any, Consumer]] = []
        durability = config.service.durability
        self.wal: WriteAheadLog | None = None
        if previous is not None:
            self.wal = previous.wal
        elif durability is not None:
            self.wal = WriteAheadLog(
                ComponentID.parse(durability.storage),
                None
                if durability.receivers is None
                else [ComponentID.parse(r) for r in durability.receivers],
            )

    def _settings(self, kind: Kind, cid: ComponentID, instance: str = "") -> CreateSettings:
        return CreateSettings(
            id=cid,
            kind=kind,
            logger=component_logger(kind, cid),
            telemetry=self.telemetry.component(kind, cid),
            instance=instance,
        )

    def _add(self, node: Node) -> Node:
        self.nodes.append(node)
        return node

    # -- taking instances over on a reload ----------------------------------------------------
    def _previous(self, key: tuple[Any, ...], cfg: ComponentConfig) -> Node | None:
        """The previous graph's instance for ``key`` if it can be kept as it is."""
        prev = self.previous
        if prev is None:
            return None
        old = prev._by_key.get(key)
        if old is None or old.config != cfg or type(old.config) is not type(cfg):
            return None
        for ref in _extension_ids(cfg):
            ext = self.extensions.get(ref)
            if ext is None or not ext.reused:
                return None  # it would keep using the extension being replaced
        return old

    def _take_over(self, node: Node, old: Node) -> Node:
        node.component = old.component
        node.settings = old.settings
        node.output = old.output
        node.reused = True
        return node

    def rewire(self) -> None:
        """Point the kept instances at what follows them in this graph (synchronous: no data
        moves while it runs)."""
        for link, inner in self._rewiring:
            link.retarget(inner)
        self._rewiring.clear()

    # -- building -------------------------------------------------------------------------------
    def build(self) -> None:
        """Create every component, wired to its consumers."""
        cfg = self.config
        built: dict[ComponentID, Node] = {}
        # extensions naming no other extension first: whether those that name one (an
        # authenticator) are kept depends on them
        ordered = sorted(
            cfg.extensions,
            key=lambda c: bool(_extension_ids(cfg.components[Kind.EXTENSION][c])),
        )
        for cid in ordered:
            label = f"extension {cid}"
            ext_cfg = cfg.components[Kind.EXTENSION][cid]
            node = Node(Kind.EXTENSION, cid, label, config=ext_cfg)
            old = self._previous(("extension", cid), ext_cfg)
            if old is not None:
                self._take_over(node, old)
            else:
                factory = cfg.factory(Kind.EXTENSION, cid)
                node.settings = self._settings(Kind.EXTENSION, cid, label)
                ctx = workers.current()
                if ctx is not None and not ctx.runs_here("extension", ext_cfg, factory):
                    node.component = Inert()
                    _PRIMARY_ONLY.info(
                        "runs in the primary worker only", extra={"component": label}
                    )
                else:
                    node.component = factory.create(  # type: ignore[attr-defined]
                        node.settings, ext_cfg
                    )
            built[cid] = self.extensions[cid] = node
            self._by_key[("extension", cid)] = node
        self.extensions = {cid: built[cid] for cid in cfg.extensions}  # started in this order
        receivers: dict[tuple[ComponentID, Signal], list[PipelineID]] = {}
        for pid, pipe in cfg.pipelines.items():
            for rid in pipe.receivers:
                if rid in cfg.components[Kind.RECEIVER]:
                    receivers.setdefault((rid, pid.signal), []).append(pid)
        for (rid, signal), pids in receivers.items():
            rcfg = cfg.components[Kind.RECEIVER][rid]
            node = self._add(
                Node(
                    Kind.RECEIVER,
                    rid,
                    f"receiver {rid} ({signal})",
                    signal=str(signal),
                    pipelines=list(pids),
                    config=rcfg,
                )
            )
            consumers = []
            for pid in pids:
                entry, first_nodes = self._pipeline_entry(pid)
                consumers.append(entry)
                node.downstream.extend(first_nodes)
            old = self._previous(("receiver", rid, signal), rcfg)
            if old is not None and self._signals_of(rid) != self._signals_of(rid, self.previous):
                old = None  # a receiver serves its signals together: created again
            settings = old.settings if old is not None else None
            if settings is None:
                settings = self._settings(Kind.RECEIVER, rid, node.label)
            inner = fan_out(consumers)
            ctx = workers.current()
            if ctx is not None:  # spans of a trace, series of a resource: to their worker
                inner = ctx.router(signal, pids, inner, self.telemetry)
            if self.wal is not None and self.wal.covers(rid):
                # durable acknowledgements: the request is logged before the receiver answers
                inner = self.wal.entry(rid, signal, inner, settings.telemetry, node.label)
            if old is not None:
                self._take_over(node, old)
                self._rewiring.append((old.output, inner))
            else:
                node.settings = settings
                node.output = ObservedConsumer(inner, settings.telemetry)
                factory = cfg.factory(Kind.RECEIVER, rid)
                if ctx is not None and not ctx.runs_here("receiver", rcfg, factory):
                    node.component = Inert()  # a pull receiver
                    _PRIMARY_ONLY.info(
                        "runs in the primary worker only", extra={"component": node.label}
                    )
                else:
                    node.component = factory.create(  # type: ignore[attr-defined]
                        signal, settings, rcfg, node.output
                    )
            self._by_key[("receiver", rid, signal)] = node

    def pipeline_consumer(self, pipeline: str) -> Consumer:
        """The consumer at the start of a pipeline (``"traces/agent"``) that a receiver of
        this graph feeds (``KeyError`` for any other)."""
        for pid, (consumer, _) in self._entries.items():
            if str(pid) == pipeline:
                return consumer
        raise KeyError(pipeline)

    def _signals_of(self, rid: ComponentID, graph: Graph | None = None) -> set[Signal]:
        config = (graph or self).config
        return {pid.signal for pid, pipe in config.pipelines.items() if rid in pipe.receivers}

    def _pipeline_entry(self, pid: PipelineID) -> tuple[Consumer, list[Node]]:
        """The consumer that receives a pipeline's data, and the node(s) it enters."""
        if pid in self._entries:
            return self._entries[pid]
        cfg = self.config
        pipe = cfg.pipelines[pid]
        signal = pid.signal
        tail_nodes: list[Node] = []
        tail_consumers: list[Consumer] = []
        for eid in pipe.exporters:
            if eid in cfg.components[Kind.EXPORTER]:
                node = self._exporter(eid, signal)
                node.pipelines.append(pid)
                tail_nodes.append(node)
                tail_consumers.append(node.consumer())
            else:
                for node in self._connector_nodes(eid, signal):
                    node.pipelines.append(pid)
                    tail_nodes.append(node)
                    tail_consumers.append(node.consumer())
        next_consumer: Consumer = fan_out(tail_consumers)
        next_nodes = tail_nodes
        for proc_id in reversed(pipe.processors):
            label = f"processor {proc_id} (pipeline {pid})"
            pcfg = cfg.components[Kind.PROCESSOR][proc_id]
            node = Node(
                Kind.PROCESSOR,
                proc_id,
                label,
                downstream=list(next_nodes),
                signal=str(signal),
                pipelines=[pid],
                config=pcfg,
            )
            old = self._previous(("processor", pid, proc_id), pcfg)
            if old is not None:
                self._take_over(node, old)
                self._rewiring.append((old.output, next_consumer))
            else:
                node.settings = self._settings(Kind.PROCESSOR, proc_id, label)
                node.output = _CountingConsumer(next_consumer, node.settings.telemetry)
                factory = cfg.factory(Kind.PROCESSOR, proc_id)
                node.component = factory.create(  # type: ignore[attr-defined]
                    signal, node.settings, pcfg, node.output
                )
            assert node.settings is not None
            self._add(node)
            self._by_key[("processor", pid, proc_id)] = node
            next_consumer = _ProcessorEntry(node.component, node.settings, node.output)
            next_nodes = [node]
        self._entries[pid] = (next_consumer, next_nodes)
        return self._entries[pid]

    def _exporter(self, eid: ComponentID, signal: Signal) -> Node:
        key = (eid, signal)
        if key not in self._exporters:
            label = f"exporter {eid} ({signal})"
            ecfg = self.config.components[Kind.EXPORTER][eid]
            node = Node(Kind.EXPORTER, eid, label, signal=str(signal), config=ecfg)
            old = self._previous(("exporter", eid, signal), ecfg)
            if old is not None:
                self._take_over(node, old)
            else:
                if self.previous is not None:
                    node.gate = asyncio.Event()
                    node.gate.set()
                factory = self.config.factory(Kind.EXPORTER, eid)
                node.settings = self._settings(Kind.EXPORTER, eid, label)
                node.component = factory.create(  # type: ignore[attr-defined]
                    signal, node.settings, ecfg
                )
            self._exporters[key] = self._add(node)
            self._by_key[("exporter", eid, signal)] = node
        return self._exporters[key]

    def _connector_nodes(self, cid: ComponentID, from_signal: Signal) -> list[Node]:
        cfg = self.config
        factory = cfg.factory(Kind.CONNECTOR, cid)
        assert isinstance(factory, ConnectorFactory)
        by_signal: dict[Signal, list[PipelineID]] = {}
        for pid, pipe in cfg.pipelines.items():
            if cid in pipe.receivers:
                by_signal.setdefault(pid.signal, []).append(pid)
        nodes = []
        for to_signal, pids in by_signal.items():
            if not factory.supports(from_signal, to_signal):
                continue
            key = (cid, from_signal, to_signal)
            if key not in self._connectors:
                label = f"connector {cid} ({from_signal} -> {to_signal})"
                ccfg = cfg.components[Kind.CONNECTOR][cid]
                node = Node(
                    Kind.CONNECTOR, cid, label, signal=f"{from_signal} -> {to_signal}", config=ccfg
                )
                # registered before its pipelines are built: they cannot lead back to it
                self._connectors[key] = node
                consumers = []
                for pid in pids:
                    entry, first = self._pipeline_entry(pid)
                    consumers.append(entry)
                    node.downstream.extend(first)
                old = self._previous(("connector", *key), ccfg)
                if old is not None:
                    self._take_over(node, old)
                    self._rewiring.append((old.output, fan_out(consumers)))
                else:
                    node.settings = self._settings(Kind.CONNECTOR, cid, label)
                    node.output = _ConnectorOutput(
                        fan_out(consumers), node.settings.telemetry, from_signal, to_signal
                    )
                    node.component = factory.create(
                        from_signal, to_signal, node.settings, ccfg, node.output
                    )
                self._add(node)
                self._by_key[("connector", *key)] = node
            nodes.append(self._connectors[key])
        return nodes

    def flow_order(self) -> list[Node]:
        """Nodes in the order data flows (receivers first); shared instances appear once."""
        sorter: graphlib.TopologicalSorter[Node] = graphlib.TopologicalSorter()
        for node in self.nodes:
            sorter.add(node)
            for d in node.downstream:
                sorter.add(d, node)
        ordered = list(sorter.static_order())
        seen: set[int] = set()
        out = []
        for node in ordered:
            if id(node.component) in seen:
                continue
            seen.add(id(node.component))
            out.append(node)
        return out


def _extension_ids(cfg: ComponentConfig) -> list[ComponentID]:
    """The extensions a component's options name (authenticators, storage)."""
    out = [auth.component_id for _, auth in auth_references(cfg)]
    for _path, ext, _what in cfg.extension_references():
        try:
            out.append(ComponentID.parse(ext))
        except ValueError:
            continue
    return out
