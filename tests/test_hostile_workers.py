"""Hostile parts on the socket between workers (``service.workers``): a real gateway's
pipelines behind a worker's socket (``WorkerContext``), fed framing-valid frames whose parts
are corrupt requests (invalid UTF-8, truncated fields, nested 200 deep, seeded mutations) or
a good request cut short, among good parts, in one read (one joined consume) and one frame a
read. Every good part reaches the backend, each once; no corrupt byte does (what the backend
gets is valid OTLP); every bad part is refused for good, counted and logged; the worker keeps
serving."""

from __future__ import annotations

import asyncio
import random
import struct
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from pipeline import Signal
from pipeline.workers import _HEADER, WorkerContext
from tests.hostile import mutate
from tests.otlp_support import recording_backend
from tests.poison import framing_valid, full_parse_fails, good_traces, poison_traces
from tests.support import free_port, running_service, wait_until

_KEY = b"traces|traces|-1"


def _frame(req_id: int, body: bytes, key: bytes = _KEY) -> bytes:
    return _HEADER.pack(len(key) + len(body) + _HEADER.size - 4, req_id, 1, len(key)) + key + body


async def _answers(reader: asyncio.StreamReader, n: int) -> dict[int, int]:
    got = {}
    for _ in range(n):
        head = await asyncio.wait_for(reader.readexactly(4), 10)
        rest = await reader.readexactly(int.from_bytes(head, "big"))
        req_id, status = struct.unpack_from("!IB", rest)
        got[req_id] = status
    return got


def _config(backend_port: int) -> str:
    return f"""
receivers:
  otlp: {{protocols: {{grpc: {{endpoint: "127.0.0.1:{free_port()}"}}}}}}
exporters:
  otlp:
    endpoint: 127.0.0.1:{backend_port}
    tls: {{insecure: true}}
    sending_queue: {{enabled: false}}
    retry_on_failure: {{enabled: false}}
service:
  pipelines:
    traces: {{receivers: [otlp], exporters: [otlp]}}
"""


def _dropped(service: object) -> float:
    """Items the gateway counted as dropped, refused or failed to send, whatever the
    component (not the receivers')."""
    total = 0.0
    for family in service.telemetry.registry.collect():  # type: ignore[attr-defined]
        name = family.name
        if any(w in name for w in ("dropped", "refused", "failed")) and "receiver" not in name:
            total += sum(s.value for s in family.samples if s.name.endswith("_total"))
    return total


async def test_a_siblings_part_reaches_an_exporter_without_a_sending_queue(tmp_path: Path) -> None:
    """The owner runs a sibling's part through its pipelines at once, outside any task; the
    exporter's send is bounded by ``asyncio.timeout``, which needs a task: every part used to
    fail ("Timeout should be used inside a task") and be dropped."""
    async with (
        recording_backend() as backend,
        running_service(_config(backend.grpc_port), tmp_path) as service,
    ):
        (tmp_path / "run").mkdir()
        a = WorkerContext(0, 2, tmp_path / "run")
        b = WorkerContext(1, 2, tmp_path / "run")
        b.service = service
        await b.open()
        try:
            for i in range(3):
                data = good_traces(2, service=f"part-{i}", seed=i)
                await a.forward(1, Signal.TRACES, ["traces"], data, 2)
            assert backend.span_count() == 6
            assert _services(backend) == {f"part-{i}" for i in range(3)}
            assert _dropped(service) == 0
        finally:
            await a.close()
            await b.close()


@pytest.mark.parametrize("one_read", [True, False], ids=["joined", "one-a-read"])
async def test_unreadable_parts_are_refused_alone_and_the_good_ones_delivered(
    tmp_path: Path, one_read: bool
) -> None:
    """Parts whose framing cannot be read (cut short, fuzzed), among good ones: each is
    refused for good, alone (a retryable answer would bring it back forever, with whatever
    the sender joined to it); in one read, the good parts of that read are still one consume
    and delivered. One a read, requests corrupt inside a valid framing (the edge check's
    poison: the owner trusts its siblings' framing-valid parts, the router checked them) are
    dropped by the backend's refusal, counted, and nothing corrupt arrives."""
    rng = random.Random(7)
    goods = [good_traces(3, service=f"good-{i}", seed=i) for i in range(12)]
    bads = [goods[0][: len(goods[0]) // 2], goods[1][:-1], b"\x0a\xff\xff\xff\xff\x0f"]
    bads += [
        m for m in (mutate(goods[i % 12], rng, goods[3]) for i in range(60)) if not framing_valid(m)
    ]
    poison = [] if one_read else [data for _, data in poison_traces()[:10]]
    parts = [(True, g) for g in goods[:-1]] + [(False, b) for b in bads]
    parts += [(None, p) for p in poison]
    rng.shuffle(parts)
    parts.append((True, goods[-1]))
    async with (
        recording_backend() as backend,
        running_service(_config(backend.grpc_port), tmp_path) as service,
    ):
        (tmp_path / "run").mkdir()
        b = WorkerContext(1, 2, tmp_path / "run")
        b.service = service
        await b.open()
        try:
            reader, writer = await asyncio.open_unix_connection(b.socket_path(1))
            frames = [_frame(i + 1, body) for i, (_, body) in enumerate(parts)]
            got: dict[int, int] = {}
            if one_read:
                writer.write(b"".join(frames))
                await writer.drain()
                got = await _answers(reader, len(frames))
            else:
                for f in frames:
                    writer.write(f)
                    await writer.drain()
                    got.update(await _answers(reader, 1))
            kinds = {i + 1: ok for i, (ok, _) in enumerate(parts)}
            assert {i: got[i] for i, ok in kinds.items() if ok} == {
                i: 0 for i, ok in kinds.items() if ok
            }
            assert {i: got[i] for i, ok in kinds.items() if ok is False} == {
                i: 2 for i, ok in kinds.items() if ok is False
            }
            wanted = {f"good-{i}" for i in range(12)}
            await wait_until(lambda: wanted <= _services(backend), within=10)
            await asyncio.sleep(0.2)  # (time for a duplicate to arrive: none may)
            # each good span once; of the poison, only what protobuf reads (the ids of the
            # wrong length: the owner does not check its siblings' parts again)
            readable = sum(
                ExportTraceServiceRequest.FromString(p)
                .resource_spans[0]
                .scope_spans[0]
                .spans.__len__()
                for p in poison
                if not full_parse_fails(p)
            )
            assert backend.span_count() == 36 + readable
            if poison:
                assert _dropped(service) >= len(poison)
            writer.close()
            # still serving
            r2, w2 = await asyncio.open_unix_connection(b.socket_path(1))
            w2.write(_frame(1000, good_traces(2, service="after", seed=99)))
            await w2.drain()
            assert await _answers(r2, 1) == {1000: 0}
            await wait_until(lambda: "after" in _services(backend), within=10)
            w2.close()
        finally:
            await b.close()


def _valid(data: bytes) -> bool:
    from pipeline.pdata import payload_type

    try:
        payload_type(Signal.TRACES)(data).validate()
    except Exception:
        return False
    return True


def _services(backend: object) -> set[str]:
    return {
        a.value.string_value
        for req in list(backend.traces)  # type: ignore[attr-defined]
        for rs in req.resource_spans
        for a in rs.resource.attributes
        if a.key == "service.name"
    }


async def test_a_siblings_part_meets_the_workflow_processors_push_back_as_a_retry(
    tmp_path: Path,
) -> None:
    """The workflow processor pushes back (waits up to half a second for its outbox, then
    asks to retry) when what it released is not sent: a sibling's part, run outside any task,
    used to fail in that wait ("Timeout should be used inside a task") and be dropped for
    good; it is asked to come again instead."""
    stuck = free_port()  # nothing listens: the exporter retries, the released traces wait
    config = f"""
receivers:
  otlp: {{protocols: {{grpc: {{endpoint: "127.0.0.1:{free_port()}"}}}}}}
processors:
  workflow: {{wait_duration: 10ms, max_bytes: 4096}}
exporters:
  otlp:
    endpoint: 127.0.0.1:{stuck}
    tls: {{insecure: true}}
    sending_queue: {{enabled: false}}
    retry_on_failure: {{initial_interval: 5s, max_elapsed_time: 0}}
service:
  shutdown_timeout: 1s
  pipelines:
    traces: {{receivers: [otlp], processors: [workflow], exporters: [otlp]}}
"""
    async with running_service(config, tmp_path) as service:
        (tmp_path / "run").mkdir()
        b = WorkerContext(1, 2, tmp_path / "run")
        b.service = service
        await b.open()
        try:
            reader, writer = await asyncio.open_unix_connection(b.socket_path(1))
            statuses: list[int] = []
            for i in range(40):  # released 10 ms after each, never sent: the outbox fills
                writer.write(_frame(i + 1, good_traces(5, service=f"s{i}", seed=i)))
                await writer.drain()
                statuses += (await _answers(reader, 1)).values()
                if statuses[-1] != 0:
                    break
                await asyncio.sleep(0.03)  # past the 10 ms wait: released before the next
            assert statuses[0] == 0 and statuses[-1] == 1, statuses  # retry, not dropped
            writer.close()
        finally:
            await b.close()
