"""The release timer of the ``workflow`` processor: one task that sleeps until the first held
trace falls due, woken early only when that deadline changes (no task, no timeout per
request)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

# the longest time between two releases (a tenth of wait_duration when that is shorter)
RELEASE_TICK_MAX = 0.1


class ReleaseTimer:
    """Calls ``release(now)`` when ``deadline()`` (the first held trace's, ``None`` when
    nothing is held) passes. Releases are at least :attr:`tick` apart (a tenth of
    ``wait_duration``, at most 100 ms), so the traces falling due within a tick go out
    together: one release, one request downstream and one pass of the connectors per tick
    instead of per incoming request; a trace is held between ``wait_duration`` and that plus
    the tick."""

    def __init__(
        self,
        wait_duration: float,
        deadline: Callable[[], float | None],
        release: Callable[[float], None],
    ) -> None:
        self.tick = min(wait_duration / 10, RELEASE_TICK_MAX)
        self._deadline = deadline
        self._release = release
        self.wake = asyncio.Event()
        self.armed: float | None = None  # the deadline the timer waits for, if any
        self.not_before = 0.0
        self.closing = False

    def next_release(self) -> float | None:
        """When the timer should release next: the first held trace's deadline, but not
        before a tick after the last release; ``None`` when nothing is held."""
        deadline = self._deadline()
        if deadline is None:
            return None
        return max(deadline, self.not_before)

    def poke(self) -> None:
        """Wakes the timer if the earliest deadline changed (called after each request)."""
        if self.next_release() != self.armed:
            self.wake.set()

    def close(self) -> None:
        self.closing = True
        self.wake.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        wake = self.wake
        while not self.closing:
            handle: asyncio.TimerHandle | None = None
            self.armed = None
            deadline = self.next_release()
            if deadline is not None:
                now = loop.time()
                if deadline <= now:
                    self.not_before = now + self.tick
                    self._release(now)
                    continue
                self.armed = deadline
                handle = loop.call_at(deadline, wake.set)
            wake.clear()
            try:
                await wake.wait()
            finally:
                if handle is not None:
                    handle.cancel()
        self.armed = None
