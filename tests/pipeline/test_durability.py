"""Durable acknowledgements in the engine (``service.durability``): the write-ahead log keeps
every acknowledged request until the pipeline is done with it (no record retired early, none
leaked), a crash image replays what was not delivered, refusals are not logged, the shutdown
deadline keeps what it drops, and the persistent sending queue survives a restart."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import grpc
import pytest

from pipeline.config import load_config
from pipeline.durability import HeldAcks
from pipeline.errors import ConfigErrors
from pipeline.pdata import Signal, Traces
from pipeline.pluginmanager import default_registry
from pipeline.service import Service
from pipeline.storage import SegmentLog
from pipeline.telemetry import SelfTelemetry
from tests.durable_support import IdBackend, build_request, span_id, wait_delivered
from tests.otlp_support import TRACE_METHOD
from tests.poison import poison_traces
from tests.support import (
    CLIENT_TIMEOUT,
    free_port,
    own_metrics_on_a_free_port,
    wait_until,
    write_config,
)

CONFIG = """
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:{port}"}}
processors:
  batch: {{timeout: 20ms}}
  workflow: {{wait_duration: {wait}}}
connectors:
  spanmetrics: {{metrics_flush_interval: 1s}}
exporters:
  otlp:
    endpoint: "127.0.0.1:{backend}"
    tls: {{insecure: true}}
    compression: none
    timeout: 2s
    retry_on_failure: {{initial_interval: 50ms, max_interval: 100ms, max_elapsed_time: 0}}
    sending_queue: {{{queue}}}
  debug: {{verbosity: basic}}
extensions:
  file_storage:
    directory: "{storage}"
    create_directory: true
    fsync: {fsync}
service:
  extensions: [file_storage]
  durability: {{storage: file_storage}}
  shutdown_timeout: {shutdown}
  telemetry: {{metrics: {{level: none}}, logs: {{level: warn}}}}
  pipelines:
    traces:
      receivers: [otlp]
      processors: [{processors}]
      exporters: [otlp{extra_exporters}]
    metrics/derived:
      receivers: [spanmetrics]
      exporters: [debug]
"""


def config_text(
    port: int,
    backend: int,
    storage: Path,
    *,
    processors: str = "batch",
    wait: str = "100ms",
    queue: str = "enabled: true",
    fsync: str = "false",
    shutdown: str = "10s",
    spanmetrics: bool = False,
) -> str:
    text = CONFIG.format(
        port=port,
        backend=backend,
        storage=storage,
        processors=processors,
        wait=wait,
        queue=queue,
        fsync=fsync,
        shutdown=shutdown,
        extra_exporters=", spanmetrics" if spanmetrics else "",
    )
    if not spanmetrics:
        text = text.replace(
            "    metrics/derived:\n      receivers: [spanmetrics]\n      exporters: [debug]\n", ""
        )
    return text


@contextlib.asynccontextmanager
async def service(text: str, tmp_path: Path, name: str = "config.yaml") -> AsyncIterator[Service]:
    path = write_config(tmp_path, text, name)
    config = own_metrics_on_a_free_port(load_config([str(path)], default_registry()))
    svc = Service(config, SelfTelemetry())
    await svc.start()
    try:
        yield svc
    finally:
        await svc.shutdown()


def wal_of(svc: Service) -> SegmentLog:
    assert svc.graph.wal is not None and svc.graph.wal.log is not None
    return svc.graph.wal.log


async def send(port: int, bodies: list[bytes]) -> list[str]:
    """Send each body as one OTLP/gRPC export; returns the status code names."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(TRACE_METHOD)
        out = []
        for body in bodies:
            try:
                await call(body, timeout=10)
                out.append("OK")
            except grpc.aio.AioRpcError as exc:
                out.append(exc.code().name)
        return out


def ids(first: int, requests: int, per_request: int = 20) -> set[bytes]:
    return {span_id(i) for i in range(first, first + requests * per_request)}


def bodies(first: int, requests: int, per_request: int = 20) -> list[bytes]:
    return [build_request(first + i * per_request, per_request) for i in range(requests)]


@pytest.fixture(autouse=True)
def no_log_records() -> Iterator[None]:
    """pytest keeps every log record of a test, and a record whose arguments include an
    exception keeps its traceback's frames - and the payloads in them, with their tokens -
    alive until the test ends (a running gateway's log handlers keep nothing). These tests
    count records that are done, so no record is created."""
    logging.disable(logging.CRITICAL)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


@pytest.fixture
async def backend() -> AsyncIterator[IdBackend]:
    b = IdBackend()
    await b.start_grpc()
    try:
        yield b
    finally:
        await b.stop()


async def test_records_stay_until_delivered_and_are_then_done(
    tmp_path: Path, backend: IdBackend
) -> None:
    port = free_port()
    backend.down()
    text = config_text(port, backend.grpc_port, tmp_path / "storage", processors="workflow, batch")
    async with service(text, tmp_path) as svc:
        wal = wal_of(svc)
        assert await send(port, bodies(1, 10)) == ["OK"] * 10
        # held by the workflow processor, then by the exporter retrying: nothing retired early
        await asyncio.sleep(0.5)
        assert wal.stats.live == 10
        assert backend.count() == {}
        backend.up()
        assert await wait_delivered(backend, ids(1, 10), within=10) == set()
        # every record done once delivered: none leaked, the log holds nothing
        await wait_until(lambda: wal.stats.live == 0, within=5)


async def test_a_crash_image_replays_what_was_acknowledged(
    tmp_path: Path, backend: IdBackend
) -> None:
    port = free_port()
    storage = tmp_path / "storage"
    held = config_text(port, backend.grpc_port, storage, processors="workflow, batch", wait="30s")
    async with service(held, tmp_path) as svc:
        assert await send(port, bodies(1, 15)) == ["OK"] * 15
        await asyncio.sleep(0.2)
        assert wal_of(svc).stats.live == 15  # the workflow processor holds every trace
        # what a kill -9 leaves behind: the files as they are now
        await asyncio.to_thread(shutil.copytree, storage, tmp_path / "crashed")
    backend.raw.clear()
    backend.ids.clear()
    backend._counted = 0
    port2 = free_port()
    text = config_text(port2, backend.grpc_port, tmp_path / "crashed", processors="workflow, batch")
    async with service(text, tmp_path, "restarted.yaml") as svc:
        assert await wait_delivered(backend, ids(1, 15), within=10) == set()
        replayed = svc.telemetry.value("otelcol_receiver_replayed_spans_total", receiver="otlp")
        assert replayed == 15 * 20
        await wait_until(lambda: wal_of(svc).stats.live == 0, within=5)


async def test_refused_requests_are_not_logged(tmp_path: Path, backend: IdBackend) -> None:
    port = free_port()
    backend.respond = lambda proto: ("grpc", grpc.StatusCode.INVALID_ARGUMENT, "no", ())
    text = config_text(
        port, backend.grpc_port, tmp_path / "storage", processors="", queue="enabled: false"
    )
    async with service(text, tmp_path) as svc:
        codes = await send(port, bodies(1, 3))
        assert codes == ["INVALID_ARGUMENT"] * 3
        assert wal_of(svc).stats.records_written == 0


async def test_dropped_data_releases_its_records(tmp_path: Path, backend: IdBackend) -> None:
    """Poison requests dropped by the engine's failure isolation (spanmetrics cannot decode
    them) are done, not leaked; the good requests around them are delivered."""
    port = free_port()
    # no batch processor: without the C framing walk a poison request is forwarded as it came,
    # and one batched with good ones would make the backend refuse them all
    text = config_text(
        port, backend.grpc_port, tmp_path / "storage", processors="", spanmetrics=True
    )
    async with service(text, tmp_path) as svc:
        poison = [body for _, body in poison_traces()]
        await send(port, bodies(1, 3) + poison + bodies(1000, 3))
        want = ids(1, 3) | ids(1000, 3)
        assert await wait_delivered(backend, want, within=10) == set()
        await wait_until(lambda: wal_of(svc).stats.live == 0, within=5)


async def test_the_shutdown_deadline_keeps_what_it_drops_for_the_next_start(
    tmp_path: Path, backend: IdBackend
) -> None:
    port = free_port()
    storage = tmp_path / "storage"
    backend.down()
    text = config_text(port, backend.grpc_port, storage, shutdown="500ms")
    async with service(text, tmp_path) as svc:
        assert await send(port, bodies(1, 5)) == ["OK"] * 5
        await asyncio.sleep(0.2)
        assert wal_of(svc).stats.live == 5
    # the exporter dropped its queue at the deadline (counted); the log kept the records
    backend.up()
    port2 = free_port()
    async with service(
        config_text(port2, backend.grpc_port, storage), tmp_path, "restarted.yaml"
    ) as svc:
        assert await wait_delivered(backend, ids(1, 5), within=10) == set()
        await wait_until(lambda: wal_of(svc).stats.live == 0, within=5)


async def test_the_persistent_queue_survives_a_restart_and_frees_the_log(
    tmp_path: Path, backend: IdBackend
) -> None:
    port = free_port()
    storage = tmp_path / "storage"
    backend.down()
    queue = "enabled: true, storage: file_storage, num_consumers: 2"
    text = config_text(port, backend.grpc_port, storage, queue=queue, shutdown="1s")
    async with service(text, tmp_path) as svc:
        assert await send(port, bodies(1, 8)) == ["OK"] * 8
        # once a batch is in the persistent queue, its requests' log records are done
        await wait_until(lambda: wal_of(svc).stats.live == 0, within=5)
        assert svc.graph.wal is not None
        queue_dir = storage / "exporter_otlp__traces"
        assert list(queue_dir.glob("*.seg"))
    backend.up()
    port2 = free_port()
    text2 = config_text(port2, backend.grpc_port, storage, queue=queue)
    async with service(text2, tmp_path, "restarted.yaml") as svc:
        assert await wait_delivered(backend, ids(1, 8), within=10) == set()
        recovered = svc.telemetry.value(
            "otelcol_exporter_queue_recovered_spans_total", exporter="otlp"
        )
        assert recovered == 8 * 20


async def test_fsync_always_acknowledges_after_a_shared_fsync(
    tmp_path: Path, backend: IdBackend
) -> None:
    port = free_port()
    text = config_text(port, backend.grpc_port, tmp_path / "storage", fsync="true")
    async with service(text, tmp_path) as svc:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary(TRACE_METHOD)
            await asyncio.gather(*(call(b, timeout=10) for b in bodies(1, 40)))
        stats = wal_of(svc).stats
        assert stats.records_written == 40
        assert stats.fsyncs >= 1 and stats.fsyncs <= stats.commits
        assert stats.commits < 40  # concurrent requests shared commits
        assert await wait_delivered(backend, ids(1, 40), within=10) == set()


def _injected_bug(*args: object, **kwargs: object) -> None:
    raise ValueError("injected: the writer's bug")


async def health(port: int) -> int:
    async with (
        aiohttp.ClientSession(timeout=CLIENT_TIMEOUT) as session,
        session.get(f"http://127.0.0.1:{port}/live") as resp,
    ):
        return resp.status


async def test_a_failed_log_refuses_before_the_pipeline_reports_it_and_a_reload_restarts_it(
    tmp_path: Path, backend: IdBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The write-ahead log's writer fails (a non-OS error injected into its write, as the
    storage tests do): the request being written is refused with a retryable error; from
    then on every request is refused before the pipeline takes it (before, each one went
    through the pipeline to the backend and was then refused, so a sender retrying for ever
    made the backend receive it again and again), counted and reported: the receiver's
    status is ``permanent_error`` and the health check answers 503. A reload with the
    storage working again restarts the log: ``ok``, 200, and requests are acknowledged,
    delivered and logged again."""
    port, hport = free_port(), free_port()
    text = config_text(port, backend.grpc_port, tmp_path / "storage", processors="")
    text = text.replace(
        "extensions:\n", f'extensions:\n  health_check: {{endpoint: "127.0.0.1:{hport}"}}\n', 1
    ).replace("extensions: [file_storage]", "extensions: [file_storage, health_check]")
    async with service(text, tmp_path) as svc:
        wal = wal_of(svc)
        assert await send(port, bodies(1, 2)) == ["OK"] * 2
        assert await wait_delivered(backend, ids(1, 2), within=10) == set()
        assert await health(hport) == 200
        monkeypatch.setattr(SegmentLog, "_flush", _injected_bug)
        # the request being written when the log fails: refused (the sender retries it)
        assert await send(port, bodies(100, 1)) == ["UNAVAILABLE"]
        assert wal.stats.failed
        # while failed: refused at once, never passed on
        assert await send(port, bodies(200, 5)) == ["UNAVAILABLE"] * 5
        await asyncio.sleep(0.5)
        got = backend.count()
        assert not any(i in got for i in ids(200, 5))
        instance = "receiver otlp (traces)"
        assert svc.statuses[instance].status == "permanent_error"
        assert await health(hport) == 503
        refused = svc.telemetry.value(
            "otelcol_service_wal_refused_requests_total", receiver=instance, reason="log_failed"
        )
        assert refused == 6
        assert (
            svc.telemetry.value("otelcol_receiver_refused_spans_total", receiver="otlp") == 6 * 20
        )
        monkeypatch.undo()
        # still failed until someone acts: the storage works again, a reload restarts the log
        assert await send(port, bodies(200, 1)) == ["UNAVAILABLE"]
        record = await svc.reload("test", [str(tmp_path / "config.yaml")])
        assert record.result == "unchanged", record
        assert not wal.stats.failed
        assert svc.statuses[instance].status == "ok"
        assert await health(hport) == 200
        assert await send(port, bodies(300, 3)) == ["OK"] * 3
        assert await wait_delivered(backend, ids(300, 3), within=10) == set()
        await wait_until(lambda: wal.stats.live == 0, within=5)
    # what was acknowledged before and after is done: nothing to replay at the next start
    async with service(text.replace(str(port), str(free_port())), tmp_path, "again.yaml") as svc:
        assert svc.graph.wal is not None and not svc.graph.wal._pending
        assert wal_of(svc).stats.live == 0


def _disk_full(*args: object, **kwargs: object) -> None:
    raise OSError(errno.ENOSPC, "injected: no space left on device")


async def test_a_full_disk_refuses_the_request_and_reports_a_recoverable_error(
    tmp_path: Path, backend: IdBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write the log survives (a full disk): the request is refused with
    ``RESOURCE_EXHAUSTED``, counted (``reason="write_failed"``), and the receiver reports
    ``recoverable_error`` (the Collector's status for a failure that may clear by itself);
    the log stays usable, and the first request logged afterwards makes the receiver ``ok``
    again, without a reload."""
    port = free_port()
    text = config_text(port, backend.grpc_port, tmp_path / "storage", processors="")
    instance = "receiver otlp (traces)"
    async with service(text, tmp_path) as svc:
        assert await send(port, bodies(1, 1)) == ["OK"]
        monkeypatch.setattr(SegmentLog, "_flush", _disk_full)
        assert await send(port, bodies(100, 2)) == ["RESOURCE_EXHAUSTED"] * 2
        assert not wal_of(svc).stats.failed
        assert svc.statuses[instance].status == "recoverable_error"
        refused = svc.telemetry.value(
            "otelcol_service_wal_refused_requests_total", receiver=instance, reason="write_failed"
        )
        assert refused == 2
        monkeypatch.undo()
        assert await send(port, bodies(200, 1)) == ["OK"]
        assert svc.statuses[instance].status == "ok"
        assert await wait_delivered(backend, ids(1, 1) | ids(200, 1), within=10) == set()


# -- config -------------------------------------------------------------------------------------
BASE = """
receivers: {otlp: {protocols: {grpc: {endpoint: "127.0.0.1:0"}}}}
exporters: {debug: {}}
extensions:
  file_storage: {directory: /tmp}
  health_check: {}
service:
  extensions: [EXTENSIONS]
  durability: DURABILITY
  pipelines: {traces: {receivers: [otlp], exporters: [debug]}}
"""


@pytest.mark.parametrize(
    ("extensions", "durability", "message"),
    [
        ("health_check", "{storage: file_storage}", "must also be listed in service.extensions"),
        ("file_storage", "{storage: nope}", "extension 'nope' is not defined"),
        ("health_check", "{storage: health_check}", "does not provide storage"),
        ("file_storage", "{}", "required option is missing"),
        (
            "file_storage",
            "{storage: file_storage, receivers: [jaeger]}",
            "receiver 'jaeger' is not a receiver of any pipeline",
        ),
    ],
)
def test_durability_config_errors(
    tmp_path: Path, extensions: str, durability: str, message: str
) -> None:
    text = BASE.replace("EXTENSIONS", extensions).replace("DURABILITY", durability)
    with pytest.raises(ConfigErrors, match=message):
        load_config([str(write_config(tmp_path, text))], default_registry())


def test_queue_storage_config_errors(tmp_path: Path) -> None:
    text = BASE.replace("EXTENSIONS", "health_check").replace("  durability: DURABILITY\n", "")
    text = text.replace(
        "exporters: {debug: {}}",
        "exporters: {debug: {}, otlp: {endpoint: 'h:1', sending_queue: {storage: file_storage}}}",
    ).replace("exporters: [debug]", "exporters: [otlp]")
    with pytest.raises(ConfigErrors, match=r"sending_queue\.storage.*must also be listed"):
        load_config([str(write_config(tmp_path, text))], default_registry())
    off = text.replace("{storage: file_storage}", "{enabled: false, storage: file_storage}")
    with pytest.raises(ConfigErrors, match="needs the sending queue"):
        load_config([str(write_config(tmp_path, off, "off.yaml"))], default_registry())


# -- tokens -------------------------------------------------------------------------------------
class Tok:
    """A stand-in token that records its death."""

    dead: list[int] = []

    def __init__(self, n: int) -> None:
        self.n = n

    def __del__(self) -> None:
        Tok.dead.append(self.n)


def test_tokens_follow_the_data_through_merge_split_and_copy() -> None:
    Tok.dead = []
    a = Traces(build_request(1, 10)).carry_acks([Tok(1)])
    b = Traces(build_request(100, 10)).carry_acks([Tok(2)])
    merged = Traces.merge([a, b])
    del a, b
    assert Tok.dead == []
    parts = merged.split(7)
    copy = parts[-1].copy()
    del merged
    assert Tok.dead == []
    assert {t.n for t in copy.ack_tokens} == {1, 2}  # type: ignore[attr-defined]
    del parts
    assert Tok.dead == []
    del copy
    assert sorted(Tok.dead) == [1, 2]


def test_held_acks_release_by_the_released_watermark() -> None:
    held = HeldAcks()
    t1, t2, t3 = ("r1",), ("r2",), ("r3",)
    held.arrived(1.0, t1, created=2, held=True)  # two traces created at 1.0
    held.arrived(2.0, t2, created=0, held=True)  # spans into those traces only
    held.arrived(3.0, t3, created=1, held=True)  # a new trace at 3.0
    assert held.released([1.0]) == ()  # one trace of 1.0 still held
    assert held.released([3.0]) == ()  # trace of 3.0 released, but 1.0 holds the rest
    assert held.released([1.0]) == ("r1", "r2", "r3")  # everything before the watermark
    held.arrived(4.0, ("late",), created=0, held=False)  # passed straight through: not held
    assert len(held) == 0


def test_held_acks_started_late_count_what_was_already_held() -> None:
    held = HeldAcks([0.5, 0.2])  # two groups held before the first payload with tokens
    held.arrived(1.0, ("r1",), created=0, held=True)  # its spans joined those groups
    assert held.released([0.2]) == ()
    assert held.released([0.5]) == ("r1",)


# -- the workflow processor's released watermark -------------------------------------------------
def trace_request(*spans: tuple[bytes, int]) -> Traces:
    """A request of spans given as (trace id, span number)."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    req = ExportTraceServiceRequest()
    ss = req.resource_spans.add().scope_spans.add()
    for trace_id, n in spans:
        span = ss.spans.add(trace_id=trace_id, span_id=span_id(n), name=f"op-{n}")
        span.parent_span_id = span_id(10_000)  # not roots: nothing to read
    return Traces(req.SerializeToString())


class DropAfter:
    """A consumer that keeps what it gets until told to let go (a delivery in progress)."""

    mutates_data = False

    def __init__(self) -> None:
        self.got: list[Traces] = []

    async def consume(self, data: Traces) -> None:  # type: ignore[override]
        self.got.append(data)

    def deliver(self) -> int:
        n = sum(p.item_count() for p in self.got)
        self.got.clear()
        return n


async def test_the_workflow_processor_releases_a_request_only_with_its_last_trace() -> None:
    from pipeline import Kind
    from pipeline.testing import StubHost, create_settings
    from plugins.workflowprocessor.config import WorkflowConfig
    from plugins.workflowprocessor.processor import WorkflowProcessor

    Tok.dead = []
    out = DropAfter()
    proc = WorkflowProcessor(
        create_settings(Kind.PROCESSOR, "workflow"), WorkflowConfig(wait_duration="300ms"), out
    )
    await proc.start(StubHost())
    x, y = b"X" * 16, b"Y" * 16
    await proc.consume(trace_request((x, 1), (x, 2)).carry_acks([Tok(1)]))  # A: creates X
    await asyncio.sleep(0.1)
    await proc.consume(trace_request((y, 3), (x, 4)).carry_acks([Tok(2)]))  # B: Y, and into X
    await asyncio.sleep(0.1)
    await proc.consume(trace_request((x, 5)).carry_acks([Tok(3)]))  # C: keeps X going
    # Y is released first (300 ms after B) while X still holds part of A, B and C
    await wait_until(lambda: sum(p.item_count() for p in out.got) == 1, within=2)
    assert out.deliver() == 1
    assert Tok.dead == []  # B's spans in X are still held: its record must stay
    await wait_until(lambda: sum(p.item_count() for p in out.got) == 4, within=2)
    assert {t.n for p in out.got for t in p.ack_tokens} == {1, 2, 3}  # type: ignore[attr-defined]
    assert Tok.dead == []
    assert out.deliver() == 4
    assert sorted(Tok.dead) == [1, 2, 3]  # delivered: every record done, none kept
    await proc.shutdown()


async def test_replay_drops_what_it_cannot_deliver_counted_and_logged_and_delivers_the_rest(
    tmp_path: Path, backend: IdBackend
) -> None:
    """Records of the log that replay cannot deliver (a record too short for its route header,
    one whose route overruns it, one for a receiver no longer configured, one whose payload
    does not parse): each is dropped (done: it would fail the same way at every start),
    counted by reason and logged; the start goes on and the good records are delivered. A
    record too short for its header used to stop every start with ``struct.error``."""
    import logging
    import struct

    storage = tmp_path / "storage"
    wal = SegmentLog(storage / "service_wal")
    wal.open()

    def record(route: str, data: bytes) -> bytes:
        raw = route.encode()
        return struct.pack("<H", len(raw)) + raw + data

    for body in (
        b"\x01",  # too short for the route header
        struct.pack("<H", 500) + b"traces:otlp",  # a route longer than the record
        record("traces:gone", build_request(1, 20)),
        record("traces:otlp", b"\xff\xff\xff"),
        record("traces:otlp", build_request(1, 20)),
    ):
        await wal.append([body])
    wal.close()
    port = free_port()
    text = config_text(port, backend.grpc_port, storage, processors="")
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.ERROR)
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("pipeline.durability")  # (the service configures "pipeline")
    logger.addHandler(handler)
    logging.disable(logging.NOTSET)  # (no_log_records: this test keeps only strings)
    try:
        async with service(text, tmp_path) as svc:
            assert await wait_delivered(backend, ids(1, 1), within=10) == set()
            await wait_until(lambda: wal_of(svc).stats.live == 0, within=5)

            def dropped(reason: str) -> float:
                return svc.telemetry.value(
                    "otelcol_service_wal_dropped_records_total", reason=reason
                )

            assert dropped("malformed") == 3
            assert dropped("unknown_receiver") == 1
    finally:
        logging.disable(logging.CRITICAL)
        logger.removeHandler(handler)
    lines = [r.getMessage() for r in records if "dropping it" in r.getMessage()]
    assert len(lines) == 4, lines


async def _crash_image(storage: Path, requests: int) -> None:
    """What a crash leaves behind: ``requests`` acknowledged requests (``bodies(1, ...)``) of
    the receiver ``otlp`` in the write-ahead log, none done."""
    import struct

    wal = SegmentLog(storage / "service_wal")
    wal.open()
    route = b"traces:otlp"
    for body in bodies(1, requests):
        await wal.append([struct.pack("<H", len(route)) + route + body])
    wal.close()


def _live_records(storage: Path) -> int:
    wal = SegmentLog(storage / "service_wal")
    try:
        return len(wal.open())
    finally:
        wal.close()


async def test_a_replay_the_pipeline_blocks_does_not_hold_the_start_and_goes_on(
    tmp_path: Path, backend: IdBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The backend is down and the exporter has no queue: the replay's first record waits in
    the pipeline. The start waits for the replay a bounded time, then the receivers start
    (the gateway serves) while the replay goes on, its progress in
    ``otelcol_service_wal_replay_pending_records``; once the backend is back every record is
    delivered and done. Before, the start waited for the replay without limit: the receivers
    never started."""
    from pipeline import durability

    monkeypatch.setattr(durability, "REPLAY_START_WAIT", 0.5, raising=False)
    storage = tmp_path / "storage"
    await _crash_image(storage, 5)
    backend.down()
    port = free_port()
    text = config_text(port, backend.grpc_port, storage, processors="", queue="enabled: false")
    config = own_metrics_on_a_free_port(
        load_config([str(write_config(tmp_path, text, "c.yaml"))], default_registry())
    )
    svc = Service(config, SelfTelemetry())
    starting = asyncio.ensure_future(svc.start())
    try:
        done, _ = await asyncio.wait({starting}, timeout=10)  # a guard against the hang only
        assert done, "the start waited for the replay without limit"
        starting.result()
        _, writer = await asyncio.open_connection("127.0.0.1", port)  # the receiver serves
        writer.close()

        def pending() -> float:
            return svc.telemetry.value("otelcol_service_wal_replay_pending_records")

        assert pending() == 5
        backend.up()
        assert await wait_delivered(backend, ids(1, 5), within=20) == set()
        await wait_until(lambda: wal_of(svc).stats.live == 0, within=5)
        assert pending() == 0
        replayed = svc.telemetry.value("otelcol_receiver_replayed_spans_total", receiver="otlp")
        assert replayed == 5 * 20
    finally:
        starting.cancel()
        await asyncio.gather(starting, return_exceptions=True)
        await asyncio.wait_for(svc.shutdown(), 30)


async def test_a_shutdown_during_a_replay_ends_in_time_and_keeps_what_was_not_replayed(
    tmp_path: Path, backend: IdBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gateway serves while the replay waits for a backend that is down (in the
    background); SIGTERM then: the gateway stops within its shutdown timeout and every record
    stays in the log - the one in the pipeline when the replay stopped too (its token is
    kept: the stopped replay lets go of it undelivered) - and the next start delivers them
    all. Before, the receivers never started while the replay waited."""
    from pipeline import durability

    monkeypatch.setattr(durability, "REPLAY_START_WAIT", 0.5, raising=False)
    storage = tmp_path / "storage"
    await _crash_image(storage, 5)
    backend.down()
    port = free_port()
    text = config_text(
        port, backend.grpc_port, storage, processors="", queue="enabled: false", shutdown="1s"
    )
    config = own_metrics_on_a_free_port(
        load_config([str(write_config(tmp_path, text, "c.yaml"))], default_registry())
    )
    svc = Service(config, SelfTelemetry())
    stop = asyncio.Event()
    running = asyncio.ensure_future(svc.run(stop=stop, install_signal_handlers=False))
    await wait_until(lambda: backend.attempts > 0, within=10)  # the replay is sending
    serving = False
    for _ in range(100):  # the receivers start (the replay goes on)
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            serving = True
            break
        await asyncio.sleep(0.1)
    stop.set()
    assert serving, "the receivers did not start while the replay waited"
    done, _ = await asyncio.wait({running}, timeout=10)  # (1s shutdown timeout)
    assert done, "the shutdown did not end"
    assert running.result() == 0
    assert _live_records(storage) == 5  # nothing replayed, nothing lost
    backend.up()
    port2 = free_port()
    text = config_text(port2, backend.grpc_port, storage, processors="")
    async with service(text, tmp_path, "restarted.yaml") as svc2:
        assert await wait_delivered(backend, ids(1, 5), within=10) == set()
        await wait_until(lambda: wal_of(svc2).stats.live == 0, within=5)


async def test_a_replay_waiting_for_room_goes_before_new_data_of_its_receiver(
    tmp_path: Path, backend: IdBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The backend is down behind a one-batch queue: the replay fills it and waits for room
    (pushback) after the start's wait, and the receivers start. A client sends new requests
    all along: while the replay waits they are refused (``RESOURCE_EXHAUSTED``, counted with
    ``reason="replay_first"``), so once the backend is back every replayed request reaches it
    before any new one (one sender: the queue's order is the backend's). Before, the room that
    freed went to whichever came first - the client, retrying every few milliseconds, ahead
    of the replay's one-second backoff: new spans went ahead of the replayed ones."""
    from pipeline import durability

    monkeypatch.setattr(durability, "REPLAY_START_WAIT", 0.5, raising=False)
    storage = tmp_path / "storage"
    await _crash_image(storage, 6)
    backend.down()
    port = free_port()
    text = config_text(
        port,
        backend.grpc_port,
        storage,
        processors="",
        queue="enabled: true, queue_size: 1, num_consumers: 1",
    )
    config = own_metrics_on_a_free_port(
        load_config([str(write_config(tmp_path, text, "c.yaml"))], default_registry())
    )
    svc = Service(config, SelfTelemetry())
    await asyncio.wait_for(svc.start(), 20)
    try:
        assert svc.graph.wal is not None
        await wait_until(lambda: svc.graph.wal.replay_waiting is not None, within=10)
        new_first = 1_000_000
        results: list[str] = []
        stop = asyncio.Event()

        async def client() -> None:
            k = 0
            while not stop.is_set():
                results.extend(await send(port, [build_request(new_first + k * 20, 20)]))
                k += 1
                await asyncio.sleep(0.005)

        sender = asyncio.ensure_future(client())
        await wait_until(lambda: "RESOURCE_EXHAUSTED" in results, within=10)
        backend.up()
        assert await wait_delivered(backend, ids(1, 6), within=20) == set()
        await wait_until(lambda: results.count("OK") >= 3, within=20)
        stop.set()
        await sender

        def first_span(raw: bytes) -> int:
            from pipeline import _wire

            skeleton = _wire.SkeletonTraces.FromString(raw)
            return int.from_bytes(skeleton.resource_spans[0].scope_spans[0].spans[0].span_id)

        order = [first_span(r) for r in backend.raw]
        replayed_at = [i for i, f in enumerate(order) if f < new_first]
        new_at = [i for i, f in enumerate(order) if f >= new_first]
        assert new_at and max(replayed_at) < min(new_at), order
        refused = svc.telemetry.value(
            "otelcol_service_wal_refused_requests_total",
            receiver="receiver otlp (traces)",
            reason="replay_first",
        )
        assert refused >= 1
        late = svc.telemetry.value("otelcol_service_wal_replayed_after_start_records_total")
        assert 1 <= late <= 6
    finally:
        await asyncio.wait_for(svc.shutdown(), 30)


async def test_a_damaged_log_record_in_the_middle_is_counted_and_the_rest_replayed(
    tmp_path: Path, backend: IdBackend
) -> None:
    """A crash image whose third record was damaged on disk (a flipped byte, records after
    it): the replay delivers every other record and counts the damaged one
    (``otelcol_service_wal_dropped_records{reason="corrupt"}``). Before, reading the log
    stopped at the damage and cut the segment there: the three records after it were lost."""
    import struct

    storage = tmp_path / "storage"
    wal = SegmentLog(storage / "service_wal")
    wal.open()
    route = b"traces:otlp"
    recs = [
        await wal.append([struct.pack("<H", len(route)) + route + body]) for body in bodies(1, 6)
    ]
    wal.close()
    [seg] = (storage / "service_wal").glob("*.seg")
    data = bytearray(seg.read_bytes())
    data[recs[2].offset + 40] ^= 0xFF
    seg.write_bytes(bytes(data))
    port = free_port()
    text = config_text(port, backend.grpc_port, storage, processors="")
    async with service(text, tmp_path) as svc:
        want = ids(1, 2) | ids(61, 3)
        assert await wait_delivered(backend, want, within=10) == set()
        assert not ids(41, 1) & set(backend.count())
        dropped = svc.telemetry.value("otelcol_service_wal_dropped_records_total", reason="corrupt")
        assert dropped == 1
        await wait_until(lambda: wal_of(svc).stats.live == 0, within=5)


async def test_a_replayed_record_carries_its_count_and_a_refused_one_is_counted_dropped(
    tmp_path: Path,
) -> None:
    """The replay counts a record's items where it builds its payload (the count rides on
    the payload: no component after counts it again) and a record the pipeline refuses for
    good is counted dropped with its items (``reason="replay_refused"``) and logged."""
    import struct

    from pipeline.component import ComponentID, Kind
    from pipeline.durability import WriteAheadLog
    from pipeline.errors import PermanentError

    wal_log = SegmentLog(tmp_path / "service_wal")
    wal_log.open()
    route = b"traces:otlp"
    for n in (20, 7):
        await wal_log.append([struct.pack("<H", len(route)) + route + build_request(1, n)])
    wal_log.close()
    telemetry = SelfTelemetry()
    receiver = ComponentID.parse("otlp")

    class Refusing:
        mutates_data = False
        counts: list[int | None] = []

        async def consume(self, data: Traces) -> None:
            self.counts.append(data._count)
            raise PermanentError("no")

    sink = Refusing()
    wal = WriteAheadLog(ComponentID.parse("file_storage"), None)
    wal.entry(receiver, Signal.TRACES, sink, telemetry.component(Kind.RECEIVER, receiver))
    wal.log = SegmentLog(tmp_path / "service_wal")
    wal._pending = wal.log.open()
    try:
        await wal.replay()
    finally:
        wal.log.close()
    assert sink.counts == [20, 7]
    dropped = telemetry.registry.get_sample_value(
        "otelcol_receiver_dropped_items_total",
        {"receiver": "otlp", "otel_signal": "traces", "reason": "replay_refused"},
    )
    assert dropped == 27
