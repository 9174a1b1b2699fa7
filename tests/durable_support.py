"""Test helpers for durable acknowledgements: OTLP trace requests whose span ids are known, a
load generator that records which spans the gateway acknowledged, and a recording backend
that counts the span ids it received (duplicates included)."""

from __future__ import annotations

import asyncio
import collections
import os
import struct
import time
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from pipeline import _wire
from tests.otlp_support import TRACE_METHOD, RecordingBackend
from tests.poison import ld


def _span_tail(name: str, attrs: int = 6) -> bytes:
    span = Span(name=name, kind=Span.SPAN_KIND_INTERNAL)
    span.start_time_unix_nano = 1_700_000_000_000_000_000
    span.end_time_unix_nano = span.start_time_unix_nano + 2_500_000
    for i in range(attrs):
        span.attributes.append(
            KeyValue(key=f"app.attr.{i}", value=AnyValue(string_value=f"value-{i}"))
        )
    return span.SerializeToString()


_ROOT_TAIL = _span_tail("workflow.durable", 4) + ld(
    9, KeyValue(key="gen_ai.agent.id", value=AnyValue(string_value="agent-1")).SerializeToString()
)
_CHILD_TAIL = _span_tail("step")
_RESOURCE = ld(
    1,
    Resource(
        attributes=[KeyValue(key="service.name", value=AnyValue(string_value="durable-load"))]
    ).SerializeToString(),
)
_SCOPE = ld(1, InstrumentationScope(name="durable-tests").SerializeToString())


def span_id(n: int) -> bytes:
    return struct.pack(">Q", n)


def build_request(first: int, spans: int, spans_per_trace: int = 10) -> bytes:
    """An ``ExportTraceServiceRequest`` whose spans have the ids ``first`` ... ``first+spans-1``
    (8 bytes, big-endian); each run of ``spans_per_trace`` spans is one trace whose first span
    is its root (a ``workflow.*`` span). Built by concatenating encoded fields: cheap enough to
    generate 30,000 spans/s in the test process."""
    parts = []
    root = b""
    trace = b""
    for n in range(first, first + spans):
        sid = span_id(n)
        if (n - first) % spans_per_trace == 0:
            trace = b"\x00" * 8 + sid  # the trace is named after its root
            root = sid
            body = b"\x0a\x10" + trace + b"\x12\x08" + sid + _ROOT_TAIL
        else:
            body = b"\x0a\x10" + trace + b"\x12\x08" + sid + b"\x22\x08" + root + _CHILD_TAIL
        parts.append(ld(2, body))
    scope_spans = _SCOPE + b"".join(parts)
    return ld(1, _RESOURCE + ld(2, scope_spans))


@dataclass
class LoadResult:
    """What a load run sent and what the gateway acknowledged."""

    sent_spans: int = 0
    acked: list[tuple[int, int]] = field(default_factory=list)  # (first id, count)
    refused: collections.Counter[str] = field(default_factory=collections.Counter)
    late: int = 0

    @property
    def acked_spans(self) -> int:
        return sum(n for _, n in self.acked)

    def acked_ids(self) -> set[bytes]:
        return {span_id(i) for first, n in self.acked for i in range(first, first + n)}


class AckingLoad:
    """Sends span-id-numbered trace requests over OTLP/gRPC at a fixed rate and records which
    spans were acknowledged (``OK``) and which refused (any other status: the sender would
    retry them; they are not the gateway's responsibility)."""

    def __init__(
        self,
        target: str,
        rate: float,
        spans_per_request: int = 100,
        concurrency: int = 32,
        first_id: int | None = None,
    ) -> None:
        self.target = target
        self.rate = rate
        self.per_request = spans_per_request
        self.concurrency = concurrency
        self.next_id = first_id if first_id is not None else (os.getpid() << 32) + 1
        self.result = LoadResult()
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def run(self, duration: float) -> LoadResult:
        channel = grpc.aio.insecure_channel(
            self.target,
            options=[
                ("grpc.initial_reconnect_backoff_ms", 100),
                ("grpc.max_reconnect_backoff_ms", 200),
            ],
        )
        call = channel.unary_unary(TRACE_METHOD)
        slots = asyncio.Semaphore(self.concurrency)
        tasks: set[asyncio.Task[None]] = set()
        result = self.result

        async def send(first: int, body: bytes) -> None:
            try:
                await call(body, timeout=10)
            except grpc.aio.AioRpcError as exc:
                result.refused[exc.code().name] += self.per_request
            else:
                result.acked.append((first, self.per_request))
            finally:
                slots.release()

        loop = asyncio.get_running_loop()
        per_second = self.rate / self.per_request
        start = loop.time()
        i = 0
        while not self._stop.is_set():
            due = start + i / per_second
            if due - start >= duration:
                break
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if slots.locked():
                result.late += 1
            await slots.acquire()
            first = self.next_id
            self.next_id += self.per_request
            body = build_request(first, self.per_request)
            result.sent_spans += self.per_request
            task = asyncio.create_task(send(first, body))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            i += 1
        await asyncio.gather(*tasks)
        await channel.close()
        return result


class IdBackend(RecordingBackend):
    """A recording OTLP backend that keeps each trace request's bytes (no decode while
    receiving) and counts the span ids received, duplicates included."""

    def __init__(self) -> None:
        super().__init__()
        self.raw: list[bytes] = []
        self._counted = 0
        self.corrupt = 0
        self.ids: collections.Counter[bytes] = collections.Counter()

    def _record(self, method: str, data: bytes) -> None:
        if method == TRACE_METHOD:
            self.raw.append(data)
        else:
            super()._record(method, data)

    def count(self) -> collections.Counter[bytes]:
        """Span id -> times received (parses what arrived since the last call)."""
        raw = self.raw
        while self._counted < len(raw):
            try:
                skeleton = _wire.SkeletonTraces.FromString(raw[self._counted])
            except DecodeError:  # a corrupt request the gateway forwarded as it came
                self.corrupt += 1
                continue
            finally:
                self._counted += 1
            for rs in skeleton.resource_spans:
                for ss in rs.scope_spans:
                    for span in ss.spans:
                        self.ids[span.span_id] += 1
        return self.ids

    def down(self) -> None:
        """Refuse every export with UNAVAILABLE (a backend outage)."""
        self.respond = lambda proto: ("grpc", grpc.StatusCode.UNAVAILABLE, "backend down", ())

    def up(self) -> None:
        self.respond = None


async def wait_delivered(
    backend: IdBackend, want: set[bytes], within: float, poll: float = 0.2
) -> set[bytes]:
    """Wait until every id of ``want`` was received (or ``within`` passed); returns those
    still missing."""
    deadline = time.monotonic() + within
    while True:
        got = backend.count()
        missing = {i for i in want if i not in got}
        if not missing or time.monotonic() > deadline:
            return missing
        await asyncio.sleep(poll)


def summary(load: LoadResult, backend: IdBackend, want: set[bytes]) -> dict[str, Any]:
    got = backend.count()
    received = sum(got.values())
    return {
        "sent": load.sent_spans,
        "acked": load.acked_spans,
        "refused": dict(load.refused),
        "received": received,
        "distinct_received": len(got),
        "duplicates": received - len(got),
        "acked_missing": len([i for i in want if i not in got]),
    }
