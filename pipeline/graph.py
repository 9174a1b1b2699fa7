"""The pipeline graph: from a validated config to running components wired together.

Nodes are created once per running instance: a receiver per (ID, signal) shared by every
pipeline naming it, processors per pipeline, an exporter per (ID, signal), a connector per
(ID, from-signal, to-signal). Edges follow the data; the service starts nodes against the flow
(exporters first) and shuts them down with it (receivers first), so everything in flight drains
into the exporters.
"""

from __future__ import annotations

import graphlib
import itertools
from dataclasses import dataclass, field
from typing import Any

from pipeline.component import ComponentID, CreateSettings, Kind
from pipeline.config import Config, PipelineConfig, PipelineID
from pipeline.configtypes import ComponentConfig
from pipeline.confmap import RawConfig
from pipeline.consumer import Consumer, IsolatedConsumer, fan_out
from pipeline.durability import WriteAheadLog, carry_current
from pipeline.errors import ConfigError, ConsumeError
from pipeline.factory import ConnectorFactory
from pipeline.pdata import Payload, Signal
from pipeline.telemetry import ComponentTelemetry, SelfTelemetry, component_logger


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
    """Counts what a receiver pushes into its pipelines: accepted or refused."""

    mutates_data = False

    def __init__(self, inner: Consumer, telemetry: ComponentTelemetry) -> None:
        self.inner = inner
        self.telemetry = telemetry

    async def consume(self, data: Payload) -> None:
        n = data.item_count()
        try:
            await self.inner.consume(data)
        except ConsumeError:
            self.telemetry.refused(data.signal, n)
            self.telemetry.accepted(data.signal, 0)
            raise
        self.telemetry.accepted(data.signal, n)
        # As the Collector does: both series exist from the first request, so rates and
        # refused/accepted ratios work before anything was refused.
        self.telemetry.refused(data.signal, 0)


class _CountingConsumer:
    """Counts the items a processor passes on (``otelcol_processor_outgoing_items``)."""

    mutates_data = False

    def __init__(self, inner: Consumer, telemetry: ComponentTelemetry) -> None:
        self.inner = inner
        self.telemetry = telemetry
        self.mutates_data = inner.mutates_data

    async def consume(self, data: Payload) -> None:
        self.telemetry.outgoing(data.signal, data.item_count())
        # a payload the processor built during its consume call carries the input's tokens
        await self.inner.consume(carry_current(data))


class _ProcessorEntry:
    """Counts the items a processor takes in, then hands them to it (isolated per payload)."""

    def __init__(self, processor: Consumer, settings: CreateSettings) -> None:
        self.processor = IsolatedConsumer(processor, settings)
        self.telemetry = settings.telemetry
        self.mutates_data = processor.mutates_data

    async def consume(self, data: Payload) -> None:
        self.telemetry.incoming(data.signal, data.item_count())
        await self.processor.consume(data)


@dataclass(eq=False)
class Node:
    """One running instance in the graph."""

    kind: Kind
    id: ComponentID
    label: str  # "receiver otlp (traces)"
    component: Any = None
    downstream: list[Node] = field(default_factory=list)
    settings: CreateSettings | None = None

    def consumer(self) -> Consumer:
        """The component as its upstream sees it: behind the engine's failure isolation."""
        assert self.settings is not None
        return IsolatedConsumer(self.component, self.settings)


class Graph:
    """Builds every component of a config and orders them for start and shutdown."""

    def __init__(self, config: Config, telemetry: SelfTelemetry) -> None:
        self.config = config
        self.telemetry = telemetry
        self.nodes: list[Node] = []
        self._exporters: dict[tuple[ComponentID, Signal], Node] = {}
        self._connectors: dict[tuple[ComponentID, Signal, Signal], Node] = {}
        self._entries: dict[PipelineID, tuple[Consumer, list[Node]]] = {}
        self.extensions: dict[ComponentID, Node] = {}
        durability = config.service.durability
        self.wal: WriteAheadLog | None = None
        if durability is not None:
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

    def build(self) -> None:
        """Create every component, wired to its consumers."""
        cfg = self.config
        for cid in cfg.extensions:
            factory = cfg.factory(Kind.EXTENSION, cid)
            label = f"extension {cid}"
            settings = self._settings(Kind.EXTENSION, cid, label)
            comp = factory.create(  # type: ignore[attr-defined]
                settings, cfg.components[Kind.EXTENSION][cid]
            )
            self.extensions[cid] = Node(Kind.EXTENSION, cid, label, comp, settings=settings)
        receivers: dict[tuple[ComponentID, Signal], list[PipelineID]] = {}
        for pid, pipe in cfg.pipelines.items():
            for rid in pipe.receivers:
                if rid in cfg.components[Kind.RECEIVER]:
                    receivers.setdefault((rid, pid.signal), []).append(pid)
        for (rid, signal), pids in receivers.items():
            node = self._add(Node(Kind.RECEIVER, rid, f"receiver {rid} ({signal})"))
            consumers = []
            for pid in pids:
                entry, first_nodes = self._pipeline_entry(pid)
                consumers.append(entry)
                node.downstream.extend(first_nodes)
            settings = node.settings = self._settings(Kind.RECEIVER, rid, node.label)
            inner = fan_out(consumers)
            if self.wal is not None and self.wal.covers(rid):
                # durable acknowledgements: the request is logged before the receiver answers
                inner = self.wal.entry(rid, signal, inner, settings.telemetry)
            consumer = ObservedConsumer(inner, settings.telemetry)
            factory = cfg.factory(Kind.RECEIVER, rid)
            node.component = factory.create(  # type: ignore[attr-defined]
                signal, settings, cfg.components[Kind.RECEIVER][rid], consumer
            )

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
                tail_nodes.append(node)
                tail_consumers.append(node.consumer())
            else:
                for node in self._connector_nodes(eid, signal):
                    tail_nodes.append(node)
                    tail_consumers.append(node.consumer())
        next_consumer: Consumer = fan_out(tail_consumers)
        next_nodes = tail_nodes
        for proc_id in reversed(pipe.processors):
            label = f"processor {proc_id} (pipeline {pid})"
            settings = self._settings(Kind.PROCESSOR, proc_id, label)
            factory = cfg.factory(Kind.PROCESSOR, proc_id)
            proc = factory.create(  # type: ignore[attr-defined]
                signal,
                settings,
                cfg.components[Kind.PROCESSOR][proc_id],
                _CountingConsumer(next_consumer, settings.telemetry),
            )
            node = self._add(
                Node(Kind.PROCESSOR, proc_id, label, proc, list(next_nodes), settings=settings)
            )
            next_consumer = _ProcessorEntry(proc, settings)
            next_nodes = [node]
        self._entries[pid] = (next_consumer, next_nodes)
        return self._entries[pid]

    def _exporter(self, eid: ComponentID, signal: Signal) -> Node:
        key = (eid, signal)
        if key not in self._exporters:
            factory = self.config.factory(Kind.EXPORTER, eid)
            label = f"exporter {eid} ({signal})"
            settings = self._settings(Kind.EXPORTER, eid, label)
            comp = factory.create(  # type: ignore[attr-defined]
                signal, settings, self.config.components[Kind.EXPORTER][eid]
            )
            self._exporters[key] = self._add(
                Node(Kind.EXPORTER, eid, label, comp, settings=settings)
            )
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
                node = Node(Kind.CONNECTOR, cid, label)
                node.settings = self._settings(Kind.CONNECTOR, cid, label)
                consumers = []
                for pid in pids:
                    entry, first = self._pipeline_entry(pid)
                    consumers.append(entry)
                    node.downstream.extend(first)
                node.component = factory.create(
                    from_signal,
                    to_signal,
                    node.settings,
                    cfg.components[Kind.CONNECTOR][cid],
                    fan_out(consumers),
                )
                self._connectors[key] = self._add(node)
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
