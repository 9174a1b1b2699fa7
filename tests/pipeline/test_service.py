"""The graph and the service: instances, wiring, order of start and shutdown, draining."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any, ClassVar

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from pipeline import (
    Component,
    ComponentConfig,
    Consumer,
    CreateSettings,
    ExporterFactory,
    Host,
    Payload,
    ProcessorFactory,
    ReceiverFactory,
    Signal,
    Stability,
    Traces,
)
from pipeline.config import load_config
from pipeline.pluginmanager import build_registry
from pipeline.registry import Registry
from pipeline.service import Service
from pipeline.telemetry import SelfTelemetry
from tests.support import write_config

EVENTS: list[str] = []


class NameConfig(ComponentConfig):
    fail_start: bool = False
    swallow_cancel: bool = False  # its shutdown waits for release and ignores cancellation


class Injector(Component):
    """A receiver the test drives by hand."""

    instances: ClassVar[dict[str, Injector]] = {}

    def __init__(self, settings: CreateSettings, config: NameConfig) -> None:
        self.name = settings.name
        self.config = config
        self.consumers: dict[Signal, Consumer] = {}

    async def start(self, host: Host) -> None:
        EVENTS.append(f"start receiver {self.name}")

    async def shutdown(self) -> None:
        EVENTS.append(f"shutdown receiver {self.name}")

    async def push(self, payload: Payload) -> None:
        await self.consumers[payload.signal].consume(payload)


class InjectorFactory(ReceiverFactory):
    type = "inject"
    config_class = NameConfig
    stability: ClassVar[Any] = {
        Signal.TRACES: Stability.DEVELOPMENT,
        Signal.METRICS: Stability.DEVELOPMENT,
    }
    creations = 0

    def _make(
        self, settings: CreateSettings, config: NameConfig, signal: Signal, consumer: Consumer
    ) -> Injector:
        InjectorFactory.creations += 1
        inj = Injector.instances.setdefault(settings.name, Injector(settings, config))
        inj.consumers[signal] = consumer
        return inj

    def create_traces(
        self, settings: CreateSettings, config: NameConfig, next_consumer: Consumer
    ) -> Injector:
        return self._make(settings, config, Signal.TRACES, next_consumer)

    def create_metrics(
        self, settings: CreateSettings, config: NameConfig, next_consumer: Consumer
    ) -> Injector:
        return self._make(settings, config, Signal.METRICS, next_consumer)


class Renamer(Component):
    mutates_data = True

    def __init__(self, settings: CreateSettings, next_consumer: Consumer) -> None:
        self.name = settings.name
        self.next = next_consumer

    async def start(self, host: Host) -> None:
        EVENTS.append(f"start processor {self.name}")

    async def shutdown(self) -> None:
        EVENTS.append(f"shutdown processor {self.name}")

    async def consume(self, data: Payload) -> None:
        for rs in data.mutable_message().resource_spans:
            for ss in rs.scope_spans:
                for span in ss.spans:
                    span.name = "renamed:" + span.name
        await self.next.consume(data)


class RenamerFactory(ProcessorFactory):
    type = "rename"
    config_class = NameConfig
    stability: ClassVar[Any] = {Signal.TRACES: Stability.DEVELOPMENT}

    def create_traces(
        self, settings: CreateSettings, config: NameConfig, next_consumer: Consumer
    ) -> Renamer:
        return Renamer(settings, next_consumer)


class Recorder(Component):
    mutates_data = False
    instances: ClassVar[list[Recorder]] = []

    def __init__(self, settings: CreateSettings, config: NameConfig) -> None:
        self.name = settings.name
        self.config = config
        self.received: list[Payload] = []
        self.release = asyncio.Event()
        Recorder.instances.append(self)

    async def start(self, host: Host) -> None:
        if self.config.fail_start:
            raise RuntimeError(f"{self.name} cannot start")
        EVENTS.append(f"start exporter {self.name}")

    async def shutdown(self) -> None:
        EVENTS.append(f"shutdown exporter {self.name}")
        while self.config.swallow_cancel and not self.release.is_set():
            try:
                await self.release.wait()
            except asyncio.CancelledError:
                EVENTS.append(f"swallowed cancellation {self.name}")

    async def consume(self, data: Payload) -> None:
        self.received.append(data)

    def span_names(self) -> list[str]:
        return [
            s.name
            for p in self.received
            for rs in p.message().resource_spans
            for ss in rs.scope_spans
            for s in ss.spans
        ]


class RecorderFactory(ExporterFactory):
    type = "record"
    config_class = NameConfig
    stability: ClassVar[Any] = {
        Signal.TRACES: Stability.DEVELOPMENT,
        Signal.METRICS: Stability.DEVELOPMENT,
    }

    def create_traces(self, settings: CreateSettings, config: NameConfig) -> Recorder:
        return Recorder(settings, config)

    def create_metrics(self, settings: CreateSettings, config: NameConfig) -> Recorder:
        return Recorder(settings, config)


@pytest.fixture
def registry() -> Registry:
    EVENTS.clear()
    Injector.instances.clear()
    Recorder.instances.clear()
    InjectorFactory.creations = 0
    reg = build_registry()
    reg._set_source("tests", "tests")
    for f in (InjectorFactory(), RenamerFactory(), RecorderFactory()):
        reg.register(f)
    return reg


def make_service(tmp_path: Path, registry: Registry, text: str) -> Service:
    text += "  telemetry:\n    metrics:\n      level: none\n"
    config = load_config([str(write_config(tmp_path, text))], registry)
    return Service(config, SelfTelemetry())


def traces(*names: str) -> Traces:
    req = ExportTraceServiceRequest()
    ss = req.resource_spans.add().scope_spans.add()
    for n in names:
        ss.spans.add(name=n, trace_id=bytes(16), span_id=bytes(8))
    return Traces(req.SerializeToString())


async def test_start_against_the_flow_and_shutdown_with_it(
    tmp_path: Path, registry: Registry
) -> None:
    service = make_service(
        tmp_path,
        registry,
        """\
receivers:
  inject:
processors:
  rename:
exporters:
  record:
service:
  pipelines:
    traces:
      receivers: [inject]
      processors: [rename]
      exporters: [record]
""",
    )
    await service.start()
    await service.shutdown()
    await service.shutdown()  # safe twice
    assert EVENTS == [
        "start exporter record",
        "start processor rename",
        "start receiver inject",
        "shutdown receiver inject",
        "shutdown processor rename",
        "shutdown exporter record",
    ]


async def test_shared_instances_and_copies_for_mutating_consumers(
    tmp_path: Path, registry: Registry
) -> None:
    service = make_service(
        tmp_path,
        registry,
        """\
receivers:
  inject:
processors:
  rename:
exporters:
  record/a:
  record/b:
service:
  pipelines:
    traces/renamed:
      receivers: [inject]
      processors: [rename]
      exporters: [record/a]
    traces/plain:
      receivers: [inject]
      exporters: [record/a, record/b]
    metrics:
      receivers: [inject]
      exporters: [record/a]
""",
    )
    await service.start()
    try:
        # one receiver instance for both signals and both traces pipelines
        assert list(Injector.instances) == ["inject"]
        assert InjectorFactory.creations == 2  # once per signal
        # one exporter instance per signal, shared by the pipelines naming it
        assert sorted(r.name for r in Recorder.instances) == ["record/a", "record/a", "record/b"]
        await Injector.instances["inject"].push(traces("x", "y"))
        by_name = {r.name: r for r in Recorder.instances if r.received}
        assert sorted(by_name["record/a"].span_names()) == ["renamed:x", "renamed:y", "x", "y"]
        assert by_name["record/b"].span_names() == ["x", "y"]
        # the self-telemetry counted what the receiver accepted
        assert (
            service.telemetry.value("otelcol_receiver_accepted_spans_total", receiver="inject") == 2
        )
        assert (
            service.telemetry.value(
                "otelcol_processor_incoming_items_total", processor="rename", otel_signal="traces"
            )
            == 2
        )
    finally:
        await service.shutdown()


async def test_connector_joins_pipelines(tmp_path: Path, registry: Registry) -> None:
    service = make_service(
        tmp_path,
        registry,
        """\
receivers:
  inject:
processors:
  rename:
exporters:
  record:
connectors:
  forward:
service:
  pipelines:
    traces/in:
      receivers: [inject]
      exporters: [forward]
    traces/out:
      receivers: [forward]
      processors: [rename]
      exporters: [record]
""",
    )
    await service.start()
    await Injector.instances["inject"].push(traces("a"))
    await service.shutdown()
    assert Recorder.instances[0].span_names() == ["renamed:a"]
    assert EVENTS.index("shutdown receiver inject") < EVENTS.index("shutdown processor rename")
    assert EVENTS.index("shutdown processor rename") < EVENTS.index("shutdown exporter record")


async def test_shutdown_drains_the_batch_processor(tmp_path: Path, registry: Registry) -> None:
    service = make_service(
        tmp_path,
        registry,
        """\
receivers:
  inject:
processors:
  batch:
    timeout: 1h
    send_batch_size: 1000000
exporters:
  record:
service:
  pipelines:
    traces:
      receivers: [inject]
      processors: [batch]
      exporters: [record]
""",
    )
    await service.start()
    for i in range(10):
        await Injector.instances["inject"].push(traces(f"s{i}"))
    assert Recorder.instances[0].received == []  # held by the batch
    await service.shutdown()
    assert Recorder.instances[0].span_names() == [f"s{i}" for i in range(10)]


@pytest.mark.timeout(60)
async def test_a_component_that_swallows_its_cancellation_does_not_hang_shutdown(
    tmp_path: Path, registry: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    service = make_service(
        tmp_path,
        registry,
        """\
receivers:
  inject:
exporters:
  record/stuck:
    swallow_cancel: true
  record:
service:
  shutdown_timeout: 50ms
  pipelines:
    traces:
      receivers: [inject]
      exporters: [record/stuck, record]
""",
    )
    caplog.set_level(logging.ERROR)
    await service.start()
    await service.shutdown()  # hung for ever when the second wait was unbounded
    stuck = next(r for r in Recorder.instances if r.config.swallow_cancel)
    assert "swallowed cancellation record/stuck" in EVENTS
    assert "shutdown exporter record" in EVENTS  # the others still stopped
    left = [r for r in caplog.records if "left behind" in r.getMessage()]
    assert [getattr(r, "component", None) for r in left] == ["record/stuck"]
    assert (
        service.telemetry.registry.get_sample_value(
            "otelcol_service_components_abandoned_total",
            {"kind": getattr(left[0], "kind", ""), "component": "record/stuck"},
        )
        == 1.0
    )
    stuck.release.set()
    await asyncio.sleep(0)


async def test_failed_start_stops_what_started(tmp_path: Path, registry: Registry) -> None:
    service = make_service(
        tmp_path,
        registry,
        """\
receivers:
  inject:
exporters:
  record/ok:
  record/bad:
    fail_start: true
service:
  pipelines:
    traces:
      receivers: [inject]
      exporters: [record/ok, record/bad]
""",
    )
    with pytest.raises(RuntimeError, match="record/bad cannot start"):
        await service.start()
    assert "start receiver inject" not in EVENTS
    started = [e for e in EVENTS if e.startswith("start exporter")]
    for event in started:
        assert event.replace("start", "shutdown") in EVENTS
    assert service.statuses["exporter record/bad (traces)"].status == "permanent_error"
