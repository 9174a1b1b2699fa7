"""Config reload in the service: only what changed is rebuilt, what replaced components hold
is delivered, an invalid config (or a component that cannot start) leaves the running one."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from pathlib import Path

import pytest

from pipeline.config import load_config
from pipeline.netedge import HANDOVER, Listener
from pipeline.registry import Registry
from pipeline.service import Service
from pipeline.telemetry import SelfTelemetry
from tests.pipeline.test_service import Injector, Recorder, registry, traces
from tests.support import free_port, wait_until, write_config

__all__ = ["registry"]

BASE = """\
receivers:
  inject:
processors:
  batch: {timeout: 1h, send_batch_size: 1000}
exporters:
  record:
service:
  telemetry: {metrics: {level: none}}
  pipelines:
    traces:
      receivers: [inject]
      processors: [batch]
      exporters: [record]
"""


async def started(tmp_path: Path, registry: Registry, text: str) -> Service:
    path = write_config(tmp_path, text)
    service = Service(load_config([str(path)], registry), SelfTelemetry())
    service.config_files = [str(path)]
    await service.start()
    return service


def components(service: Service) -> dict[str, object]:
    return {n.label: n.component for n in service.graph.nodes}


async def test_unchanged_config_changes_nothing(tmp_path: Path, registry: Registry) -> None:
    service = await started(tmp_path, registry, BASE)
    try:
        before = components(service)
        record = await service.reload("SIGHUP")
        assert record.result == "unchanged" and record.generation == 1
        assert components(service) == before
        assert service.snapshot().reloads == (record,)
    finally:
        await service.shutdown()


async def test_changed_processor_is_replaced_and_what_it_held_delivered(
    tmp_path: Path, registry: Registry
) -> None:
    service = await started(tmp_path, registry, BASE)
    try:
        before = components(service)
        await Injector.instances["inject"].push(traces("held-1", "held-2"))
        (recorder,) = Recorder.instances
        assert recorder.span_names() == []  # the batch holds them (timeout 1h)
        write_config(tmp_path, BASE.replace("timeout: 1h", "timeout: 10ms"))
        record = await service.reload("watch")
        assert record.result == "applied", record
        assert record.replaced == ("processor batch (pipeline traces)",)
        assert record.added == () and record.removed == () and record.kept == 2
        assert record.generation == service.generation == 2
        after = components(service)
        assert after["receiver inject (traces)"] is before["receiver inject (traces)"]
        assert after["exporter record (traces)"] is before["exporter record (traces)"]
        assert (
            after["processor batch (pipeline traces)"]
            is not before["processor batch (pipeline traces)"]
        )
        # the old batch was drained into the exporter, the new one takes the next data
        assert sorted(recorder.span_names()) == ["held-1", "held-2"]
        await Injector.instances["inject"].push(traces("new"))
        await wait_until(lambda: "new" in recorder.span_names())
        statuses = {c.instance: c.status for c in service.snapshot().components}
        assert all(s is not None and s.status == "ok" for s in statuses.values()), statuses
    finally:
        await service.shutdown()


async def test_exporter_added_and_pipeline_removed(tmp_path: Path, registry: Registry) -> None:
    two = (
        BASE
        + """\
    traces/other:
      receivers: [inject]
      exporters: [record/other]
exporters:
  record:
  record/other:
"""
    )
    service = await started(
        tmp_path, registry, two.replace("exporters:\n  record:\nservice", "service")
    )
    try:
        assert {"exporter record/other (traces)"} <= set(components(service))
        # add an exporter to the first pipeline
        write_config(
            tmp_path,
            two.replace("exporters:\n  record:\nservice", "service")
            .replace("exporters: [record]", "exporters: [record, record/new]")
            .replace("  record/other:\n", "  record/other:\n  record/new:\n"),
        )
        record = await service.reload("api")
        assert record.result == "applied", record
        assert record.added == ("exporter record/new (traces)",)
        await Injector.instances["inject"].push(traces("to-both"))
        names = {r.name: r for r in Recorder.instances}
        await wait_until(lambda: "to-both" in names["record/other"].span_names())
        # remove the second pipeline
        write_config(tmp_path, BASE)
        record = await service.reload("api")
        assert record.result == "applied", record
        assert set(record.removed) == {
            "exporter record/other (traces)",
            "exporter record/new (traces)",
        }
        assert "exporter record/other (traces)" not in service.statuses
        assert all(s.status == "ok" for s in service.statuses.values()), service.statuses
        assert service.generation == 3
    finally:
        await service.shutdown()


async def test_invalid_config_keeps_the_running_one(
    tmp_path: Path, registry: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    service = await started(tmp_path, registry, BASE)
    try:
        before = components(service)
        write_config(tmp_path, BASE.replace("send_batch_size: 1000", "send_batch_size: -1"))
        with caplog.at_level(logging.ERROR, logger="pipeline"):
            record = await service.reload("SIGHUP")
        assert record.result == "invalid" and record.generation == 1
        (error,) = record.errors
        assert error.startswith("processors.batch.send_batch_size:") and "line 4" in error
        messages = [r.getMessage() for r in caplog.records]
        assert "invalid configuration (1 error); the running configuration stays" in messages
        assert f"  error: {error}" in messages  # as `pipeline validate` prints it
        assert components(service) == before
        assert (
            service.telemetry.value("otelcol_service_config_reloads_total", result="invalid") == 1
        )
        write_config(tmp_path, "receivers: [")
        record = await service.reload("SIGHUP")
        assert record.result == "invalid" and record.errors
        await Injector.instances["inject"].push(traces("still-served"))
        assert service.generation == 1
    finally:
        await service.shutdown()


async def test_a_component_that_cannot_start_leaves_the_running_config(
    tmp_path: Path, registry: Registry
) -> None:
    service = await started(tmp_path, registry, BASE)
    try:
        before = components(service)
        write_config(
            tmp_path,
            BASE.replace("exporters: [record]", "exporters: [record, record/bad]").replace(
                "  record:\n", "  record:\n  record/bad: {fail_start: true}\n"
            ),
        )
        record = await service.reload("SIGHUP")
        assert record.result == "failed"
        assert record.errors == ("exporter record/bad (traces): record/bad cannot start",)
        assert components(service) == before and service.generation == 1
        assert "exporter record/bad (traces)" not in service.statuses
        assert all(s.status == "ok" for s in service.statuses.values())
    finally:
        await service.shutdown()


async def test_listening_socket_handed_over_without_refusing_anyone() -> None:
    """A listener closed during a reload parks its socket; one started on the same address
    takes it: a client connecting in between waits in the backlog instead of being refused."""
    port = free_port()
    accepted: list[object] = []

    class Proto:
        def connection_made(self, transport: object) -> None:
            accepted.append(transport)

    def make() -> object:
        return Proto()

    first = Listener(
        f"127.0.0.1:{port}", make, refused=lambda r: None, log_limited=lambda *a, **k: None
    )
    await first.start()
    (sock,) = first.sockets
    fd = sock.fileno()
    HANDOVER.begin()
    try:
        first.close()
        client = socket.create_connection(("127.0.0.1", port), timeout=2)  # not refused
        second = Listener(
            f"127.0.0.1:{port}", make, refused=lambda r: None, log_limited=lambda *a, **k: None
        )
        await second.start()
        assert second.sockets[0].fileno() == fd  # the same listening socket
    finally:
        HANDOVER.end()
    await wait_until(lambda: len(accepted) == 1)
    client.close()
    second.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2)


async def test_exporter_with_a_persistent_queue_waits_for_its_predecessor(
    tmp_path: Path, registry: Registry
) -> None:
    """The replacement of an exporter whose queue is on disk opens that queue once the old
    one has closed it; data for it waits meanwhile, and nothing queued is lost."""
    from aiohttp import web

    from tests.plugins.helpers import post_exporter
    from tests.plugins.helpers.peers import http_server

    registry.register(post_exporter.PostExporterFactory())
    received: list[bytes] = []

    async def accept(request: web.Request) -> web.Response:
        received.append(await request.read())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/", accept)
    async with http_server(app) as url:
        text = f"""\
receivers:
  inject:
exporters:
  test_post:
    url: {url}/
    timeout: 5s
    sending_queue: {{storage: file_storage, num_consumers: 1}}
extensions:
  file_storage: {{directory: {tmp_path / "storage"}, create_directory: true}}
service:
  extensions: [file_storage]
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces: {{receivers: [inject], exporters: [test_post]}}
"""
        service = await started(tmp_path, registry, text)
        try:
            await Injector.instances["inject"].push(traces("before"))
            write_config(tmp_path, text.replace("timeout: 5s", "timeout: 6s"))
            reloading = asyncio.ensure_future(service.reload("api"))
            pushes = [Injector.instances["inject"].push(traces(f"during-{i}")) for i in range(5)]
            await asyncio.gather(*pushes)
            record = await reloading
            assert record.result == "applied", record
            assert record.replaced == ("exporter test_post (traces)",)
            await Injector.instances["inject"].push(traces("after"))
            await wait_until(lambda: len(received) >= 7, within=10)
            assert service.statuses["exporter test_post (traces)"].status == "ok"
        finally:
            await service.shutdown()


async def test_the_watcher_reloads_when_the_content_changes(tmp_path: Path) -> None:
    from pipeline import reload as reload_module

    path = tmp_path / "c.yaml"
    path.write_text("a: 1\n")
    calls: list[float] = []

    async def changed() -> None:
        calls.append(time.monotonic())

    reload_module.SETTLE, settle = 0.05, reload_module.SETTLE
    try:
        task = asyncio.ensure_future(
            reload_module.ConfigWatcher([str(path)], changed, interval=0.05).run()
        )
        await asyncio.sleep(0.2)
        path.write_text("a: 1\n")  # touched, same content
        await asyncio.sleep(0.3)
        assert calls == []
        path.write_text("a: 2\n")
        await wait_until(lambda: len(calls) == 1)
        path.unlink()  # being replaced: waited for
        await asyncio.sleep(0.3)
        assert len(calls) == 1
        path.write_text("a: 3\n")
        await wait_until(lambda: len(calls) == 2)
        task.cancel()
    finally:
        reload_module.SETTLE = settle
