"""The ``memory_limiter`` processor: refuses with a retryable error above the soft limit (HTTP
429 + Retry-After, gRPC RESOURCE_EXHAUSTED + RetryInfo), counts what it refuses, reads memory
on its timer only, and lets data through below the limit."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import sys
from typing import Any

import aiohttp
import grpc
import psutil
import pytest

from pipeline import ComponentID, CreateSettings, Kind
from pipeline.telemetry import SelfTelemetry
from plugins.memorylimiterprocessor import (
    MemoryLimiter,
    MemoryLimiterConfig,
    rss_bytes,
    statm_rss,
)
from plugins.otlpexporter.sender import retry_delay_from_trailers
from tests.otlp_support import LOGS_METHOD, TRACE_METHOD, recording_backend
from tests.plugins.otlpreceiver.test_http_server import a_logs_request, a_request
from tests.support import free_port, running_service, wait_until


def config(http: int, grpc_port: int, backend_port: int, limiter: str) -> str:
    return f"""
receivers:
  otlp:
    protocols:
      http: {{endpoint: 127.0.0.1:{http}}}
      grpc: {{endpoint: 127.0.0.1:{grpc_port}}}
processors:
  memory_limiter: {limiter}
exporters:
  otlp: {{endpoint: '127.0.0.1:{backend_port}', tls: {{insecure: true}}}}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces: {{receivers: [otlp], processors: [memory_limiter], exporters: [otlp]}}
    logs: {{receivers: [otlp], processors: [memory_limiter], exporters: [otlp]}}
"""


async def test_refuses_above_the_soft_limit() -> None:
    http, gport = free_port(), free_port()
    async with (
        recording_backend() as backend,
        running_service(
            config(http, gport, backend.grpc_port, "{check_interval: 100ms, limit_mib: 10}")
        ) as service,
    ):
        body = a_request(4).SerializeToString()
        async with (
            aiohttp.ClientSession() as s,
            s.post(
                f"http://127.0.0.1:{http}/v1/traces",
                data=body,
                headers={"Content-Type": "application/x-protobuf"},
            ) as resp,
        ):
            assert resp.status == 429
            assert int(resp.headers["Retry-After"]) >= 1
            assert "high memory usage" in (await resp.read()).decode(errors="replace")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gport}") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await channel.unary_unary(TRACE_METHOD)(body, timeout=5)
        assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert retry_delay_from_trailers(info.value.trailing_metadata()) == pytest.approx(0.1)
        tel = service.telemetry
        assert tel.value("otelcol_processor_refused_spans_total", processor="memory_limiter") == 8
        assert tel.value("otelcol_receiver_refused_spans_total", receiver="otlp") == 8
        assert tel.value(
            "otelcol_processor_memory_limiter_usage_bytes", processor="memory_limiter"
        ) > (10 << 20)
        # logs are refused the same way, by the same limiter, and counted as log records
        logs_body = a_logs_request(3).SerializeToString()
        async with (
            aiohttp.ClientSession() as s,
            s.post(
                f"http://127.0.0.1:{http}/v1/logs",
                data=logs_body,
                headers={"Content-Type": "application/x-protobuf"},
            ) as resp,
        ):
            assert resp.status == 429
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gport}") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await channel.unary_unary(LOGS_METHOD)(logs_body, timeout=5)
        assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert (
            tel.value("otelcol_processor_refused_log_records_total", processor="memory_limiter")
            == 6
        )
        assert tel.value("otelcol_receiver_refused_log_records_total", receiver="otlp") == 6
        await asyncio.sleep(0.3)
        assert backend.span_count() == 0 and backend.log_record_count() == 0


@pytest.mark.parametrize(
    "limiter",
    ["{check_interval: 1s, limit_mib: 4000}", "{check_interval: 1s, limit_percentage: 99}"],
)
async def test_passes_data_below_the_limit(limiter: str) -> None:
    http, gport = free_port(), free_port()
    async with (
        recording_backend() as backend,
        running_service(config(http, gport, backend.grpc_port, limiter)),
    ):
        async with (
            aiohttp.ClientSession() as s,
            s.post(
                f"http://127.0.0.1:{http}/v1/traces",
                data=a_request(4).SerializeToString(),
                headers={"Content-Type": "application/x-protobuf"},
            ) as resp,
        ):
            assert resp.status == 200
        await wait_until(lambda: backend.span_count() == 4)
        async with (
            aiohttp.ClientSession() as s,
            s.post(
                f"http://127.0.0.1:{http}/v1/logs",
                data=a_logs_request(3).SerializeToString(),
                headers={"Content-Type": "application/x-protobuf"},
            ) as resp,
        ):
            assert resp.status == 200
        await wait_until(lambda: backend.log_record_count() == 3)


async def test_memory_is_read_on_the_timer_only() -> None:
    reads: list[int] = []
    usage = {"now": 5 << 20}

    def read() -> int:
        reads.append(usage["now"])
        return usage["now"]

    settings = limiter_settings()
    cfg = MemoryLimiterConfig.model_validate(
        {"check_interval": "50ms", "limit_mib": 100, "spike_limit_mib": 20}
    )
    limiter = MemoryLimiter(settings, cfg, read_usage=read)
    assert limiter.soft_limit == 80 << 20 and limiter.hard_limit == 100 << 20
    await limiter.start()
    try:
        assert not limiter.refusing
        usage["now"] = 90 << 20  # above soft limit: refusing after the next check
        await wait_until(lambda: limiter.refusing, within=2)
        usage["now"] = 50 << 20
        await wait_until(lambda: not limiter.refusing, within=2)
        n = len(reads)
        await asyncio.sleep(0.26)
        assert 3 <= len(reads) - n <= 7  # about one read per check_interval, whatever the load
    finally:
        await limiter.stop()


def limiter_settings() -> CreateSettings:
    cid = ComponentID("memory_limiter")
    return CreateSettings(
        id=cid,
        kind=Kind.PROCESSOR,
        logger=logging.LoggerAdapter(logging.getLogger("test"), {}),
        telemetry=SelfTelemetry().component(Kind.PROCESSOR, cid),
    )


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="limit_mib or limit_percentage"):
        MemoryLimiterConfig.model_validate({"check_interval": "1s"})
    with pytest.raises(ValueError, match="spike_limit_mib"):
        MemoryLimiterConfig.model_validate({"limit_mib": 100, "spike_limit_mib": 100})
    with pytest.raises(ValueError, match="spike_limit_percentage"):
        MemoryLimiterConfig.model_validate({"limit_percentage": 50, "spike_limit_percentage": 60})
    with pytest.raises(ValueError, match="check_interval"):
        MemoryLimiterConfig.model_validate({"limit_mib": 100, "check_interval": "0s"})


class CountingExecutor(concurrent.futures.ThreadPoolExecutor):
    def __init__(self) -> None:
        super().__init__(max_workers=1)
        self.submitted = 0

    def submit(self, *args: Any, **kwargs: Any) -> Any:
        self.submitted += 1
        return super().submit(*args, **kwargs)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/statm is Linux's")
async def test_the_default_check_reads_statm_on_the_loop_without_a_thread() -> None:
    """Each check reads the RSS on the event loop (no hand-over to a worker thread and back,
    two wake-ups per check), the same figure psutil gives."""
    executor = CountingExecutor()
    asyncio.get_running_loop().set_default_executor(executor)
    settings = limiter_settings()
    cfg = MemoryLimiterConfig.model_validate({"check_interval": "1s", "limit_mib": 1 << 20})
    limiter = MemoryLimiter(settings, cfg)
    for _ in range(3):
        await limiter.check()
    assert executor.submitted == 0
    rss = psutil.Process().memory_info().rss
    assert statm_rss() == pytest.approx(rss, rel=0.1)
    assert limiter.usage == pytest.approx(rss, rel=0.1)
    # a reader given (psutil's) runs in the worker thread
    limiter = MemoryLimiter(settings, cfg, read_usage=rss_bytes)
    await limiter.check()
    assert executor.submitted == 1
    assert limiter.usage == pytest.approx(rss, rel=0.1)
