"""The ``resource`` processor instance."""

from __future__ import annotations

from typing import Any

from pipeline import Component, Consumer, CreateSettings, Payload, Signal
from pipeline.ottl.contexts import Ctx
from pipeline.ottl.runner import ItemBatch, MetricBatch
from pipeline.ottl.values import PMap
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
        ctx = Ctx()
        if self.signal is Signal.METRICS:
            batch = MetricBatch(data)
            for rm in batch.each("resource", ctx):
                self.actions.apply(PMap(rm.resource.attributes))
            return batch.build()[0]
        ibatch = ItemBatch(data, view_fields=False)
        for handle in ibatch.each("resource", ctx):
            self.actions.apply(PMap(handle.msg.attributes))
        new, _ = ibatch.build(remove_empty=False)
        return data if new is None else new
