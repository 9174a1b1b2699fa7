"""The ``memory_limiter`` processor, with the Collector's options and meaning.

The process's resident memory (RSS: on Linux read from ``/proc/self/statm`` on the event loop,
a few microseconds without a thread hand-over; elsewhere with psutil in a worker thread) is
checked every ``check_interval``, never per request. Limits:

* hard limit: ``limit_mib``, or ``limit_percentage`` of the machine's (or cgroup's) memory;
* soft limit: the hard limit minus ``spike_limit_mib`` (default 20% of the hard limit), or
  minus ``spike_limit_percentage``.

While usage is above the soft limit, new data is refused with a retryable error marked
``resource_exhausted`` (receivers answer ``RESOURCE_EXHAUSTED`` / HTTP 429 with a retry delay)
so senders back off instead of the process growing; every refused item is counted
(``otelcol_processor_refused_<items>``) and refusals are logged when they start and stop. Above
the soft limit a garbage collection is run (at most every ``min_gc_interval_when_soft_limited``);
above the hard limit one is forced at every check (at most every
``min_gc_interval_when_hard_limited``), as the Collector does.

One limiter per component ID is shared by every pipeline naming it, whatever the signal.
"""

from __future__ import annotations

import asyncio
import gc
import os
import time
from collections.abc import Callable
from pathlib import Path

import psutil
from pydantic import Field, model_validator

import pipeline
from pipeline import (
    Component,
    ComponentConfig,
    Consumer,
    CreateSettings,
    Duration,
    Host,
    Payload,
    ProcessorFactory,
    RetryableError,
    Seconds,
    SharedComponents,
    Signal,
    Stability,
)

MIB = 1 << 20


class MemoryLimiterConfig(ComponentConfig):
    """``processors.memory_limiter``."""

    check_interval: Duration = Seconds(1.0)
    limit_mib: int = Field(0, ge=0)
    spike_limit_mib: int = Field(0, ge=0)
    limit_percentage: int = Field(0, ge=0, le=100)
    spike_limit_percentage: int = Field(0, ge=0, le=100)
    min_gc_interval_when_soft_limited: Duration = Seconds(10.0)
    min_gc_interval_when_hard_limited: Duration = Seconds(0)

    @model_validator(mode="after")
    def _check(self) -> MemoryLimiterConfig:
        if self.check_interval <= 0:
            raise ValueError("check_interval must be greater than zero")
        if self.limit_mib == 0 and self.limit_percentage == 0:
            raise ValueError("either limit_mib or limit_percentage must be set above zero")
        if self.limit_mib:
            if self.spike_limit_mib >= self.limit_mib:
                raise ValueError(
                    f"spike_limit_mib ({self.spike_limit_mib}) must be smaller than limit_mib "
                    f"({self.limit_mib})"
                )
        elif self.spike_limit_percentage >= self.limit_percentage:
            raise ValueError(
                f"spike_limit_percentage ({self.spike_limit_percentage}) must be smaller "
                f"than limit_percentage ({self.limit_percentage})"
            )
        return self


def total_memory() -> int:
    """Memory available to this process: the cgroup limit if there is one, else the machine's."""
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < (1 << 60):
            return int(text)
    return int(psutil.virtual_memory().total)


def rss_bytes() -> int:
    """Resident memory of this process."""
    return int(psutil.Process().memory_info().rss)


PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
STATM = "/proc/self/statm"


def statm_rss() -> int:
    """Resident memory of this process from ``/proc/self/statm`` (what psutil reads on Linux,
    without building a ``Process``, which reads ``/proc/self/stat`` too)."""
    with open(STATM, "rb") as f:
        return int(f.read().split()[1]) * PAGE_SIZE


def default_reader() -> tuple[Callable[[], int], bool]:
    """The RSS reader and whether it may run on the event loop: ``/proc/self/statm`` where it
    can be read (it answers at once), psutil in a worker thread elsewhere."""
    try:
        statm_rss()
    except (OSError, ValueError, IndexError):
        return rss_bytes, False
    return statm_rss, True


class MemoryLimiter:
    """The shared check: a timer reading RSS and deciding whether data must be refused."""

    def __init__(
        self,
        settings: CreateSettings,
        config: MemoryLimiterConfig,
        read_usage: Callable[[], int] | None = None,
        on_stop: Callable[[MemoryLimiterConfig], None] | None = None,
    ) -> None:
        self.settings = settings
        self.config = config
        # a reader given (tests) runs in a worker thread, as psutil does
        self._read_usage, self._inline = (
            default_reader() if read_usage is None else (read_usage, False)
        )
        self._on_stop = on_stop
        if config.limit_mib:
            self.hard_limit = config.limit_mib * MIB
            spike = config.spike_limit_mib * MIB if config.spike_limit_mib else self.hard_limit // 5
        else:
            total = total_memory()
            self.hard_limit = total * config.limit_percentage // 100
            spike = total * config.spike_limit_percentage // 100
        self.soft_limit = self.hard_limit - spike
        self.usage = 0
        self.refusing = False
        self._users = 0
        self._task: asyncio.Task[None] | None = None
        self._last_gc = 0.0
        gauge = settings.telemetry.service.gauge(
            "otelcol_processor_memory_limiter_usage_bytes",
            "Resident memory of the process at the memory limiter's last check.",
            ("processor",),
        )
        self._usage_gauge = gauge.labels(settings.name)

    async def start(self) -> None:
        self._users += 1
        if self._task is None:
            await self.check()
            self._task = asyncio.create_task(self._run(), name=f"{self.settings.name}-check")
            self.settings.logger.info(
                "memory limiter started",
                extra={
                    "hard_limit_mib": self.hard_limit // MIB,
                    "soft_limit_mib": self.soft_limit // MIB,
                    "check_interval": self.config.check_interval,
                },
            )

    async def stop(self) -> None:
        self._users = max(0, self._users - 1)
        if self._users == 0 and self._task is not None:
            task, self._task = self._task, None
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            if self._on_stop is not None:
                self._on_stop(self.config)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.config.check_interval)
            try:
                await self.check()
            except Exception:  # a failed read must not stop the checks
                self.settings.logger.exception("memory check failed")

    async def _usage(self) -> int:
        if self._inline:
            return self._read_usage()
        return await asyncio.to_thread(self._read_usage)  # psutil may block

    async def check(self) -> None:
        """Read the usage and update the refusing state."""
        usage = await self._usage()
        if usage > self.soft_limit:
            now = time.monotonic()
            min_gap = (
                self.config.min_gc_interval_when_hard_limited
                if usage > self.hard_limit
                else self.config.min_gc_interval_when_soft_limited
            )
            if now - self._last_gc >= min_gap:
                self._last_gc = now
                gc.collect()
                usage = await self._usage()
        self.usage = usage
        self._usage_gauge.set(usage)
        refusing = usage > self.soft_limit
        if refusing != self.refusing:
            self.refusing = refusing
            if refusing:
                self.settings.logger.warning(
                    "memory usage is above the soft limit; refusing data",
                    extra={"usage_mib": usage // MIB, "soft_limit_mib": self.soft_limit // MIB},
                )
            else:
                self.settings.logger.info(
                    "memory usage is below the soft limit again; accepting data",
                    extra={"usage_mib": usage // MIB, "soft_limit_mib": self.soft_limit // MIB},
                )


class MemoryLimiterProcessor(Component):
    """Passes data on unless the shared limiter says memory is above the soft limit."""

    mutates_data = False

    def __init__(
        self,
        settings: CreateSettings,
        limiter: MemoryLimiter,
        signal: Signal,
        next_consumer: Consumer,
    ) -> None:
        self.settings = settings
        self.limiter = limiter
        self.signal = signal
        self.next = next_consumer
        self._started = False
        self._refused = settings.telemetry.service.counter(
            f"otelcol_processor_refused_{signal.item_name}",
            "Items refused by the processor (memory limiter above its soft limit).",
            ("processor",),
        ).labels(settings.name)

    def admit(self, data: Payload) -> None:
        """The check of :meth:`consume`: raises the retryable refusal (counted) while memory
        is above the soft limit. The engine's entrance calls it and then the next consumer
        itself (no coroutine of this processor a consume: ``Component.admit``)."""
        limiter = self.limiter
        if limiter.refusing:
            self._refused.inc(data.item_count())
            raise RetryableError(
                f"data refused due to high memory usage ({limiter.usage // MIB} MiB, soft "
                f"limit {limiter.soft_limit // MIB} MiB)",
                retry_after=limiter.config.check_interval,
                resource_exhausted=True,
            )

    async def consume(self, data: Payload) -> None:
        self.admit(data)
        await self.next.consume(data)

    async def start(self, host: Host) -> None:
        if not self._started:
            self._started = True
            await self.limiter.start()

    async def shutdown(self) -> None:
        if self._started:
            self._started = False
            await self.limiter.stop()


class MemoryLimiterProcessorFactory(ProcessorFactory):
    type = "memory_limiter"
    config_class = MemoryLimiterConfig
    description = "Refuses data while the process's memory is above its soft limit."
    stability = {
        Signal.TRACES: Stability.BETA,
        Signal.METRICS: Stability.BETA,
        Signal.LOGS: Stability.BETA,
    }

    def __init__(self) -> None:
        self._shared = SharedComponents()

    def create_default_config(self) -> MemoryLimiterConfig:
        return MemoryLimiterConfig(limit_percentage=80, spike_limit_percentage=20)

    def _create(
        self,
        settings: CreateSettings,
        config: MemoryLimiterConfig,
        signal: Signal,
        next_consumer: Consumer,
    ) -> MemoryLimiterProcessor:
        limiter: MemoryLimiter = self._shared.get_or_create(
            config, lambda: MemoryLimiter(settings, config, on_stop=self._shared.release)
        )
        return MemoryLimiterProcessor(settings, limiter, signal, next_consumer)

    def create_traces(
        self, settings: CreateSettings, config: MemoryLimiterConfig, next_consumer: Consumer
    ) -> MemoryLimiterProcessor:
        return self._create(settings, config, Signal.TRACES, next_consumer)

    def create_metrics(
        self, settings: CreateSettings, config: MemoryLimiterConfig, next_consumer: Consumer
    ) -> MemoryLimiterProcessor:
        return self._create(settings, config, Signal.METRICS, next_consumer)

    def create_logs(
        self, settings: CreateSettings, config: MemoryLimiterConfig, next_consumer: Consumer
    ) -> MemoryLimiterProcessor:
        return self._create(settings, config, Signal.LOGS, next_consumer)


@pipeline.hookimpl
def register_components(registry: pipeline.Registry) -> None:
    registry.register(MemoryLimiterProcessorFactory())
