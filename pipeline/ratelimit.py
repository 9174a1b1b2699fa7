"""Log lines that cannot flood: a hostile or broken sender must not turn each bad request into
a log line (1,000 malformed requests once made 1.2 MiB of log in 0.7 s)."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any


class LogLimiter:
    """At most one line per key every ``interval`` seconds.

    The line that is let through after some were held back carries ``similar_not_logged``: how
    many lines with that key were not written since the last one. Keys are whatever groups
    "the same problem" (by default the message template); at most ``max_keys`` are remembered
    (the least recently used is forgotten).
    """

    def __init__(
        self,
        interval: float = 1.0,
        max_keys: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval = interval
        self.max_keys = max_keys
        self._clock = clock
        self._state: OrderedDict[str, list[float]] = OrderedDict()  # key -> [last, held back]

    def allow(self, key: str) -> int | None:
        """``None`` when a line with ``key`` must not be written now (it is counted as held
        back); otherwise how many were held back since the last line with that key."""
        now = self._clock()
        state = self._state.get(key)
        if state is None:
            self._state[key] = [now, 0]
            if len(self._state) > self.max_keys:
                self._state.popitem(last=False)
            return 0
        self._state.move_to_end(key)
        if now - state[0] < self.interval:
            state[1] += 1
            return None
        held = int(state[1])
        state[0] = now
        state[1] = 0
        return held

    def log(
        self,
        logger: logging.Logger | logging.LoggerAdapter[Any],
        level: int,
        msg: str,
        *args: object,
        key: str | None = None,
        extra: dict[str, Any] | None = None,
        exc_info: Any = None,
    ) -> bool:
        """Log ``msg % args`` unless a line with the same key was logged less than
        ``interval`` seconds ago. Returns whether it was written."""
        held = self.allow(key if key is not None else msg)
        if held is None:
            return False
        fields = dict(extra or {})
        if held:
            fields["similar_not_logged"] = held
        logger.log(level, msg, *args, extra=fields, exc_info=exc_info)
        return True
