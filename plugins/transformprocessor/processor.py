"""The ``transform`` processor instance."""

from __future__ import annotations

from pipeline import Component, Consumer, CreateSettings, Payload, Signal
from pipeline.ottl.runner import error_reporter, transform
from plugins.transformprocessor.factory import TransformConfig


class TransformProcessor(Component):
    """Runs the statement groups in order over each payload and passes on the result.

    The payload given is never changed (a new one is built when a statement changed something),
    so the fan-out need not copy it and ``consume`` is atomic: when a statement fails with
    ``error_mode: propagate`` (or the data is corrupt), nothing was passed on and the engine's
    isolation drops only the items that fail.
    """

    mutates_data = False

    def __init__(
        self, settings: CreateSettings, config: TransformConfig, signal: Signal, nxt: Consumer
    ) -> None:
        self.settings = settings
        self.signal = signal
        self.next = nxt
        self.groups = config.groups(signal)
        self._report = error_reporter(settings.log_limited)

    async def consume(self, data: Payload) -> None:
        if self.groups and data.item_count():
            data = transform(data, self.groups, self._report)
        await self.next.consume(data)
