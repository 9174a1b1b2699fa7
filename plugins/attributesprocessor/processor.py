"""The ``attributes`` processor instance: actions on lazy spans and log records (a span is
decoded only when an action changes it in a way that cannot be appended), and on the data
points of decoded metrics."""

from __future__ import annotations

from typing import Any

from pipeline import Component, Consumer, CreateSettings, Payload, Signal
from pipeline.ottl.contexts import Ctx
from pipeline.ottl.runner import ItemBatch, MetricBatch
from pipeline.ottl.values import PMap
from plugins._attractions import Actions


class AttributesProcessor(Component):
    """Applies the actions to every selected item; builds a new payload, never changes the one
    it is given."""

    mutates_data = False

    def __init__(
        self, settings: CreateSettings, config: Any, signal: Signal, nxt: Consumer
    ) -> None:
        self.settings = settings
        self.signal = signal
        self.next = nxt
        self.actions = Actions(config.actions)
        self.include = config.include
        self.exclude = config.exclude

    def _selected(self, **facts: Any) -> bool:
        if self.include is not None and not self.include.matches(**facts):
            return False
        return not (self.exclude is not None and self.exclude.matches(**facts))

    async def consume(self, data: Payload) -> None:
        if data.item_count():
            data = self.process(data)
        await self.next.consume(data)

    def process(self, data: Payload) -> Payload:
        ctx = Ctx()
        filtering = self.include is not None or self.exclude is not None
        if self.signal is Signal.METRICS:
            batch = MetricBatch(data)
            for point in batch.each("datapoint", ctx):
                if filtering and not self._selected(
                    resource=PMap(ctx.resource.msg.attributes),
                    scope=ctx.scope.msg,
                    attributes=PMap(point.attributes),
                    metric_name=ctx.metric.name,
                ):
                    continue
                self.actions.apply(PMap(point.attributes))
            return batch.build()[0]
        context = "span" if self.signal is Signal.TRACES else "log"
        ibatch = ItemBatch(data, view_fields=filtering)
        for item in ibatch.each(context, ctx):
            attrs = item.attributes()
            if filtering:
                facts: dict[str, Any] = {
                    "resource": PMap(ctx.resource.msg.attributes),
                    "scope": ctx.scope.msg,
                    "attributes": attrs,
                }
                if context == "span":
                    facts.update(span_name=item.src.name, span_kind=item.src.kind)
                else:
                    facts.update(body=item.body(), severity_text=item.src.severity_text,
                                 severity_number=item.src.severity_number)  # fmt: skip
                if not self._selected(**facts):
                    continue
            self.actions.apply(attrs)
        new, _ = ibatch.build(remove_empty=False)
        return data if new is None else new
