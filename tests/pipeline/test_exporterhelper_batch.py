"""Exporter-side batching (``sending_queue.batch``) and the queue's ``sizer``, as current
Collector configs write them, through a real OTLP exporter to a recording backend."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pipeline import ConfigErrors, Kind, Signal
from tests.otlp_support import recording_backend
from tests.plugins.ottl.support import traces
from tests.support import config_from_text, free_port, running_service, wait_until


def _config(backend: Any, queue: dict[str, Any]) -> str:
    return json.dumps({
        "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": f"127.0.0.1:{free_port()}"}}}},
        "exporters": {"otlp_grpc": {"endpoint": f"127.0.0.1:{backend.grpc_port}",
                                    "tls": {"insecure": True}, "sending_queue": queue}},
        "service": {"telemetry": {"metrics": {"level": "none"}},
                    "pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["otlp_grpc"]}}},
    })  # fmt: skip


def _sizes(backend: Any) -> list[int]:
    return [sum(len(ss.spans) for rs in r.resource_spans for ss in rs.scope_spans)
            for r in backend.traces]  # fmt: skip


async def test_batches_reach_min_size_and_split_at_max_size() -> None:
    async with recording_backend() as backend:
        queue = {"batch": {"flush_timeout": "5s", "min_size": 10, "max_size": 12}}
        async with running_service(_config(backend, queue)) as service:
            receiver = next(n.component for n in service.graph.nodes if n.kind == Kind.RECEIVER)
            for _ in range(3):
                await receiver.push_payload(Signal.TRACES, traces([{}] * 4))
            await wait_until(lambda: sum(_sizes(backend)) == 12, within=3)
            assert _sizes(backend) == [12]  # three requests of 4 sent as one
            await receiver.push_payload(Signal.TRACES, traces([{}] * 30))
            await wait_until(lambda: sum(_sizes(backend)) == 42, within=3)
            assert _sizes(backend)[1:] == [12, 12, 6]


async def test_flush_timeout_sends_a_small_batch() -> None:
    async with recording_backend() as backend:
        queue = {"batch": {"flush_timeout": "100ms"}}  # min_size 8192 by default
        async with running_service(_config(backend, queue)) as service:
            receiver = next(n.component for n in service.graph.nodes if n.kind == Kind.RECEIVER)
            await receiver.push_payload(Signal.TRACES, traces([{}] * 2))
            await receiver.push_payload(Signal.TRACES, traces([{}] * 3))
            await wait_until(lambda: bool(backend.traces), within=3)
            assert _sizes(backend) == [5]


async def test_shutdown_flushes_the_pending_batch() -> None:
    async with recording_backend() as backend:
        queue = {"batch": {"flush_timeout": "1h"}}
        async with running_service(_config(backend, queue)) as service:
            receiver = next(n.component for n in service.graph.nodes if n.kind == Kind.RECEIVER)
            await receiver.push_payload(Signal.TRACES, traces([{}] * 2))
        assert _sizes(backend) == [2]


async def test_items_sizer_refuses_when_full() -> None:
    async with recording_backend() as backend:
        backend.respond = lambda _: ("grpc", 14, "down", [])  # UNAVAILABLE: data stays queued
        queue = {"sizer": "items", "queue_size": 5, "num_consumers": 1}
        async with running_service(_config(backend, queue)) as service:
            receiver = next(n.component for n in service.graph.nodes if n.kind == Kind.RECEIVER)
            await receiver.push_payload(Signal.TRACES, traces([{}] * 5))
            from pipeline import RetryableError

            with pytest.raises(RetryableError, match="5 items"):
                for _ in range(5):
                    await receiver.push_payload(Signal.TRACES, traces([{}] * 5))


def test_batch_sizes_are_checked() -> None:
    with pytest.raises(ConfigErrors, match="max_size"):
        config_from_text(
            "receivers: {otlp: {protocols: {grpc: {endpoint: '127.0.0.1:0'}}}}\n"
            "exporters: {otlp: {endpoint: '127.0.0.1:1', sending_queue: {batch: {min_size: 10, "
            "max_size: 5}}}}\n"
            "service: {pipelines: {traces: {receivers: [otlp], exporters: [otlp]}}}\n"
        )
