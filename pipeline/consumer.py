"""The consumer contract between components, and the fan-out the engine puts between them."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from pipeline.errors import ConsumeError, PermanentError, RetryableError
from pipeline.pdata import Payload

if TYPE_CHECKING:
    from pipeline.component import CreateSettings


@runtime_checkable
class Consumer(Protocol):
    """Something that takes payloads: a processor, an exporter, a connector, a fan-out.

    ``consume`` returns once the data is accepted (held in a batch, a queue, or delivered).
    It raises :class:`~pipeline.errors.RetryableError` to push back and
    :class:`~pipeline.errors.PermanentError` for data it will never accept.

    ``mutates_data`` tells the engine whether the consumer changes the payload it is given; the
    fan-out gives a mutating consumer its own copy when the same payload also goes elsewhere.
    """

    mutates_data: bool

    async def consume(self, data: Payload) -> None: ...


class FanOut:
    """Sends each payload to several consumers; copies only for those that mutate data.

    Every consumer gets the payload even if another fails. If any consumer refuses it, the
    error is raised after all were tried: a permanent one if any was permanent, else retryable
    with the longest retry delay asked for.
    """

    mutates_data = False

    def __init__(self, consumers: Sequence[Consumer]) -> None:
        if not consumers:
            raise ValueError("a fan-out needs at least one consumer")
        self.consumers = list(consumers)
        # The last mutating consumer may take the original: nobody reads it after.
        mutating = [i for i, c in enumerate(self.consumers) if c.mutates_data]
        self._copy_for = (
            set(mutating[:-1]) if len(mutating) == len(self.consumers) else set(mutating)
        )

    async def consume(self, data: Payload) -> None:
        if len(self.consumers) == 1:
            await self.consumers[0].consume(data)
            return
        inputs = [data.copy() if i in self._copy_for else data for i in range(len(self.consumers))]
        results = await asyncio.gather(
            *(c.consume(d) for c, d in zip(self.consumers, inputs, strict=True)),
            return_exceptions=True,
        )
        errors = [r for r in results if isinstance(r, BaseException)]
        if not errors:
            return
        for err in errors:
            if not isinstance(err, ConsumeError):
                raise err
        permanent = [e for e in errors if isinstance(e, PermanentError)]
        if permanent:
            raise permanent[0]
        retryable = [e for e in errors if isinstance(e, RetryableError)]
        delays = [e.retry_after for e in retryable if e.retry_after is not None]
        raise RetryableError(
            "; ".join(str(e) for e in errors),
            retry_after=max(delays) if delays else None,
            resource_exhausted=any(e.resource_exhausted for e in retryable),
        )


def fan_out(consumers: Sequence[Consumer]) -> Consumer:
    """A single consumer for ``consumers``: the consumer itself when there is only one."""
    if len(consumers) == 1:
        return consumers[0]
    return FanOut(consumers)


async def deliver_holding(
    next_consumer: Consumer, data: Payload, settings: CreateSettings, what: str = "a batch"
) -> bool:
    """Deliver ``data`` from a component's background task, holding it while ``next_consumer``
    pushes back (retried with a backoff of 50 ms doubling to 1 s, or the delay it asks for).

    A permanent refusal drops the data, counted as ``refused_permanently`` and logged. Returns
    whether the data was delivered. Cancellation (the shutdown deadline) propagates: the caller
    still holds the data and counts it.
    """
    n = data.item_count()
    delay = 0.05
    warned = False
    while True:
        try:
            await next_consumer.consume(data)
        except RetryableError as exc:
            if not warned:
                settings.logger.warning(
                    "the next component refused %s; holding it and retrying: %s",
                    what,
                    exc,
                    extra={"items": n},
                )
                warned = True
            await asyncio.sleep(min(delay, exc.retry_after or delay))
            delay = min(delay * 2, 1.0)
        except PermanentError as exc:
            settings.telemetry.dropped(data.signal, n, "refused_permanently")
            settings.logger.error(
                "the next component refused %s permanently; dropping it: %s",
                what,
                exc,
                extra={"dropped_items": n},
            )
            return False
        else:
            return True
