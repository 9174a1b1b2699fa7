"""Background tasks of components that do not die with the first exception.

A component's loop (a batch processor's sender, an exporter's queue workers, a connector's
flush) runs in a task of its own; an exception escaping it used to end the task silently, and
the component with it (the data kept arriving, was acknowledged and never left). A supervised
task is restarted instead: each restart is counted (``otelcol_component_task_restarts``),
logged with the traceback (at most once a second) and reported to the host as a recoverable
error, and the component reports ``ok`` again once the task has run for a while without
failing. A task that keeps failing (``max_restarts`` within ``window`` seconds) is given up:
the component is reported as a permanent error, which the health check turns into 503.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from pipeline.component import CreateSettings, Host

T = TypeVar("T")

RESTART_DELAY = 0.1  # first delay before a restart, doubling up to MAX_RESTART_DELAY
MAX_RESTART_DELAY = 5.0
HEALTHY_AFTER = 5.0  # seconds a restarted task must run before the component is ok again


def supervise(
    settings: CreateSettings,
    host: Host | None,
    name: str,
    run: Callable[[], Awaitable[None]],
    *,
    max_restarts: int = 10,
    window: float = 60.0,
) -> asyncio.Task[None]:
    """Run ``run()`` in a task restarted whenever it raises (not when it returns or is
    cancelled). ``name`` says which of the component's tasks it is (``sender``, ``flush``)."""
    return asyncio.get_running_loop().create_task(
        _supervised(settings, host, name, run, max_restarts, window),
        name=f"{settings.name}-{name}",
    )


async def _supervised(
    settings: CreateSettings,
    host: Host | None,
    name: str,
    run: Callable[[], Awaitable[None]],
    max_restarts: int,
    window: float,
) -> None:
    loop = asyncio.get_running_loop()
    failures: deque[float] = deque()
    recovered: asyncio.TimerHandle | None = None
    instance = settings.instance or f"{settings.kind} {settings.name}"
    try:
        while True:
            try:
                await run()
                return
            except Exception as exc:
                now = loop.time()
                failures.append(now)
                while failures and failures[0] < now - window:
                    failures.popleft()
                settings.telemetry.task_restarted(name)
                if recovered is not None:
                    recovered.cancel()
                    recovered = None
                if len(failures) > max_restarts:
                    settings.logger.error(
                        "background task %r failed %d times in %gs; giving up: %s",
                        name,
                        len(failures),
                        window,
                        exc,
                        exc_info=exc,
                        extra={"task": name},
                    )
                    if host is not None:
                        host.report_status(instance, "permanent_error", exc)
                    return
                # 0.1 s after a first failure, doubling with each failure in the window
                delay = min(RESTART_DELAY * 2 ** (len(failures) - 1), MAX_RESTART_DELAY)
                settings.log_limited(
                    logging.ERROR,
                    "background task %r failed; restarting it in %gs: %s",
                    name,
                    delay,
                    exc,
                    key=f"task/{name}",
                    exc_info=exc,
                    extra={"task": name},
                )
                if host is not None:
                    host.report_status(instance, "recoverable_error", exc)
                await asyncio.sleep(delay)
                if host is not None:
                    recovered = loop.call_later(HEALTHY_AFTER, _recovered, host, instance)
    finally:
        if recovered is not None:
            recovered.cancel()


def _recovered(host: Host, instance: str) -> None:
    host.report_status(instance, "ok")


async def in_a_task(coro: Coroutine[Any, Any, T]) -> T:
    """Await ``coro``, in a task of its own when the caller runs outside any task: a worker
    runs a sibling's part through its pipelines at once, without a task, as far as it goes
    without waiting (:func:`pipeline.workers._run_now`), and ``asyncio.timeout`` (or anything
    else that needs ``asyncio.current_task()``) raises ``RuntimeError`` there. The task is
    cancelled with the caller."""
    if asyncio.current_task() is not None:
        return await coro
    return await asyncio.get_running_loop().create_task(coro)
