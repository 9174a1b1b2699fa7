"""The ``resource`` processor instance."""

from __future__ import annotations

from typing import Any

from pipeline import Component, Consumer, CreateSettings, Payload, Signal
from pipeline.ottl.runner import rewrite_resources
from plugins._attractions import Actions


class ResourceProcessor(Component):
    """Applies the actions to each resource once; items stay encoded."""

    mutates_data = False

    def __init__(
        self, settings: CreateSettings, config: Any, signal: Signal, nxt: Consumer
    ) -> None:
        self.settings = settings
        self.signal = signal
        self.next = nxt
        self.actions = Actions(config.attributes)

    async def consume(self, data: Payload) -> None:
        if data.item_count():
            data = self.process(data)
        await self.next.consume(data)

    def process(self, data: Payload) -> Payload:
        return rewrite_resources(data, self.actions.apply)
