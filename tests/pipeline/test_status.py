"""The status API (pipeline.status): the snapshot of the graph, statuses and counters the host
gives its components, providers, and status watchers."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, ClassVar

from pipeline import (
    Component,
    CreateSettings,
    EmptyConfig,
    ExtensionFactory,
    Host,
    Stability,
    supervise,
)
from pipeline.registry import Registry
from pipeline.status import (
    ExporterStateProvider,
    Status,
    StatusEvent,
    StatusWatcher,
)
from tests.pipeline.test_service import Injector, Recorder, make_service, registry, traces
from tests.plugins.helpers import post_exporter
from tests.support import free_port, wait_until

__all__ = ["registry"]  # the fixture

GRAPH = """\
receivers:
  inject:
processors:
  rename:
  batch: {timeout: 10ms}
connectors:
  forward:
exporters:
  record:
  record/2:
service:
  pipelines:
    traces:
      receivers: [inject]
      processors: [rename, batch]
      exporters: [record, forward]
    traces/copy:
      receivers: [forward]
      exporters: [record/2]
"""


async def test_snapshot_has_the_graph_statuses_and_counters(
    tmp_path: Path, registry: Registry
) -> None:
    service = make_service(tmp_path, registry, GRAPH)
    before = service.snapshot()
    assert all(c.status is None for c in before.components)
    await service.start()
    try:
        await Injector.instances["inject"].push(traces("a", "b", "c"))
        await wait_until(lambda: sum(len(r.received) for r in Recorder.instances) >= 2)
        snap = service.snapshot()
    finally:
        await service.shutdown()
    pipelines = {p.id: p for p in snap.pipelines}
    assert pipelines["traces"].receivers == ("receiver inject (traces)",)
    assert pipelines["traces"].processors == (
        "processor rename (pipeline traces)",
        "processor batch (pipeline traces)",
    )
    assert pipelines["traces"].exporters == (
        "exporter record (traces)",
        "connector forward (traces -> traces)",
    )
    assert pipelines["traces/copy"].receivers == ("connector forward (traces -> traces)",)
    assert pipelines["traces/copy"].exporters == ("exporter record/2 (traces)",)
    comps = {c.instance: c for c in snap.components}
    assert set(comps) == {
        "receiver inject (traces)",
        "processor rename (pipeline traces)",
        "processor batch (pipeline traces)",
        "exporter record (traces)",
        "connector forward (traces -> traces)",
        "exporter record/2 (traces)",
    }
    receiver = comps["receiver inject (traces)"]
    assert receiver.kind == "receiver" and receiver.type == "inject" and receiver.signal == "traces"
    assert receiver.downstream == ("processor rename (pipeline traces)",)
    assert comps["processor batch (pipeline traces)"].downstream == (
        "exporter record (traces)",
        "connector forward (traces -> traces)",
    )
    assert comps["connector forward (traces -> traces)"].pipelines == ("traces",)
    for c in comps.values():
        assert c.status is not None and c.status.status == Status.OK, c
    assert receiver.counters["accepted"] == 3
    assert receiver.counters["refused"] == 0
    batch = comps["processor batch (pipeline traces)"]
    assert batch.counters["incoming"] == 3 and batch.counters["outgoing"] == 3
    assert comps["exporter record (traces)"].counters["incoming"] == 3
    forward = comps["connector forward (traces -> traces)"]
    assert forward.counters["incoming"] == 3 and forward.counters["outgoing"] == 3
    assert comps["exporter record/2 (traces)"].counters["incoming"] == 3
    # the same values /metrics shows
    tel = service.telemetry
    assert tel.value("otelcol_receiver_accepted_spans_total", receiver="inject") == 3
    assert (
        tel.value(
            "otelcol_connector_outgoing_items_total",
            connector="forward",
            from_signal="traces",
            to_signal="traces",
        )
        == 3
    )
    assert (
        tel.value("otelcol_exporter_incoming_items_total", exporter="record", otel_signal="traces")
        == 3
    )
    # plain data, all the way down
    data = json.loads(json.dumps(snap.to_dict()))
    assert data["generation"] == 1
    assert {c["instance"] for c in data["components"]} == set(comps)
    after = service.snapshot(counters=False)
    assert all(c.status is not None and c.status.status == "stopped" for c in after.components)
    assert all(not c.counters for c in after.components)


async def test_exporter_state_through_providers(tmp_path: Path, registry: Registry) -> None:
    registry.register(post_exporter.PostExporterFactory())
    text = f"""\
receivers:
  inject:
exporters:
  test_post:
    url: http://127.0.0.1:{free_port()}/
    retry_on_failure: {{enabled: false}}
    sending_queue: {{queue_size: 7}}
service:
  pipelines:
    traces: {{receivers: [inject], exporters: [test_post]}}
"""
    service = make_service(tmp_path, registry, text)
    await service.start()
    try:
        entries = service.providers(ExporterStateProvider)
        assert [(e.instance, e.kind, e.id) for e in entries] == [
            ("exporter test_post (traces)", "exporter", "test_post")
        ]
        await Injector.instances["inject"].push(traces("x"))

        def failed() -> bool:
            comp = service.snapshot().component("exporter test_post (traces)")
            assert comp is not None
            return bool(comp.exporters) and comp.exporters[0].consecutive_failures > 0

        await wait_until(failed)
        comp = service.snapshot().component("exporter test_post (traces)")
        assert comp is not None
        (state,) = comp.exporters
        assert state.signal == "traces" and state.queue_capacity == 7
        assert state.last_error and state.last_error_time is not None
        assert comp.counters["send_failed"] == 1
    finally:
        await service.shutdown()


class Watcher(Component, StatusWatcher):
    events: ClassVar[list[tuple[str, StatusEvent]]] = []

    def component_status_changed(self, instance: str, event: StatusEvent) -> None:
        Watcher.events.append((instance, event))


class WatcherFactory(ExtensionFactory):
    type = "test_watcher"
    config_class = EmptyConfig
    extension_stability = Stability.DEVELOPMENT

    def create(self, settings: CreateSettings, config: Any) -> Watcher:  # type: ignore[override]
        return Watcher()


class Flaky(Component):
    """An exporter whose background task fails once."""

    mutates_data = False

    def __init__(self, settings: CreateSettings) -> None:
        self.settings = settings
        self.failed = False

    async def start(self, host: Host) -> None:
        async def run() -> None:
            if not self.failed:
                self.failed = True
                raise RuntimeError("first run fails")
            await asyncio.sleep(3600)

        self.task = supervise(self.settings, host, "work", run)

    async def shutdown(self) -> None:
        self.task.cancel()

    async def consume(self, data: Any) -> None:
        pass


async def test_watchers_see_every_status_change(tmp_path: Path, registry: Registry) -> None:
    from tests.pipeline.test_service import RecorderFactory

    class FlakyFactory(RecorderFactory):
        type = "flaky"

        def create_traces(self, settings: CreateSettings, config: Any) -> Any:
            return Flaky(settings)

    registry.register(WatcherFactory())
    registry.register(FlakyFactory())
    Watcher.events.clear()
    service = make_service(
        tmp_path,
        registry,
        """\
receivers:
  inject:
exporters:
  flaky:
extensions:
  test_watcher:
service:
  extensions: [test_watcher]
  pipelines:
    traces: {receivers: [inject], exporters: [flaky]}
""",
    )
    await service.start()
    try:
        await wait_until(
            lambda: any(e.status == Status.RECOVERABLE_ERROR for _, e in Watcher.events)
        )
    finally:
        await service.shutdown()
    seen = [(i, e.status) for i, e in Watcher.events]
    assert ("exporter flaky (traces)", "starting") in seen
    assert ("exporter flaky (traces)", "ok") in seen
    failure = next(e for i, e in Watcher.events if e.status == Status.RECOVERABLE_ERROR)
    assert failure.error == "first run fails" and failure.timestamp > 0
    assert seen[-1] == ("extension test_watcher", "stopped")
