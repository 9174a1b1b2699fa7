"""The release timer of the ``workflow`` processor: one event-loop timer set for the first held
trace's deadline, set again only when that deadline changes; the release runs in the timer's
callback (no task, no timeout per request, and no task switch per release)."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable

# the longest time between two releases (a tenth of wait_duration when that is shorter)
RELEASE_TICK_MAX = 0.1


class ReleaseTimer:
    """Calls ``release(now)`` when ``deadline()`` (the first held trace's, ``None`` when
    nothing is held) passes. Releases are at least :attr:`tick` apart (a tenth of
    ``wait_duration``, at most 100 ms), so the traces falling due within a tick go out
    together: one release, one request downstream and one pass of the connectors per tick
    instead of per incoming request; a trace is held between ``wait_duration`` and that plus
    the tick.

    The release runs in the callback of one ``loop.call_at`` timer (in the context of
    :meth:`run`'s task), which sets itself again for the next deadline; :meth:`poke` sets it
    again when a request moved the first deadline. :meth:`run` (the component's supervised
    task) only starts the timer and waits: for :meth:`close`, or for a release that raised,
    whose exception it raises (the supervisor counts it and runs it again). At 10,000 spans/s
    this saves the task switch of every release (ten a second) and of every re-arm: a wake-up
    of the process touches less code."""

    def __init__(
        self,
        wait_duration: float,
        deadline: Callable[[], float | None],
        release: Callable[[float], None],
    ) -> None:
        self.tick = min(wait_duration / 10, RELEASE_TICK_MAX)
        self._deadline = deadline
        self._release = release
        self.wake = asyncio.Event()  # set by close() and by a release that raised
        self.armed: float | None = None  # the deadline the timer waits for, if any
        self.arms = 0  # how many times the timer was set (tests)
        self.not_before = 0.0
        self.closing = False
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._context: contextvars.Context | None = None
        self._failed: Exception | None = None

    def next_release(self) -> float | None:
        """When the timer should release next: the first held trace's deadline, but not
        before a tick after the last release; ``None`` when nothing is held."""
        deadline = self._deadline()
        if deadline is None:
            return None
        return max(deadline, self.not_before)

    def poke(self) -> None:
        """Sets the timer again if the earliest deadline changed (called after each request;
        before :meth:`run` started, nothing happens: it arms the timer when it starts)."""
        if self._loop is None:
            return
        deadline = self._deadline()  # next_release(), without its call (once a request)
        if deadline is not None and deadline < self.not_before:
            deadline = self.not_before
        if deadline != self.armed:
            self._arm()

    def close(self) -> None:
        self.closing = True
        self._disarm()
        self.wake.set()

    def _disarm(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self.armed = None

    def _arm(self) -> None:
        """Set the timer for the next release (a deadline already passed: the next loop
        iteration, as a woken task would)."""
        self._disarm()
        loop = self._loop
        if self.closing or loop is None or self._failed is not None:
            return
        deadline = self.next_release()
        if deadline is None:
            return
        self.armed = deadline
        self.arms += 1
        self._handle = loop.call_at(deadline, self._fire, context=self._context)

    def _fire(self) -> None:
        self._handle = None
        self.armed = None
        loop = self._loop
        if self.closing or loop is None:
            return
        deadline = self.next_release()
        if deadline is None:
            return
        now = loop.time()
        if deadline > now:  # fired within the clock's resolution of it
            self._arm()
            return
        self.not_before = now + self.tick
        try:
            self._release(now)
        except Exception as exc:  # raised in run(), where the supervisor sees it
            self._failed = exc
            self.wake.set()
            return
        self._arm()

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._context = contextvars.copy_context()
        wake = self.wake
        try:
            while not self.closing:
                wake.clear()
                self._arm()
                await wake.wait()
                failed, self._failed = self._failed, None
                if failed is not None:
                    raise failed
        finally:
            self._disarm()
            self._loop = None
