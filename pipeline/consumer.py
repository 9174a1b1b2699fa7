"""The consumer contract between components, and the fan-out the engine puts between them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from pipeline.client import current_client
from pipeline.durability import enter_consume, leave_consume
from pipeline.errors import ConsumeError, DataDroppedError, PermanentError, RetryableError
from pipeline.pdata import Payload, describe_payload

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

    ``consume`` is atomic per payload: when it raises, it has taken none of the payload (no
    state changed, nothing passed on). The engine relies on it to isolate failures: when a
    component raises anything but a :class:`~pipeline.errors.ConsumeError`, the engine hands
    it the halves of the payload again to find and drop only the items it cannot process
    (:class:`IsolatedConsumer`).
    """

    mutates_data: bool

    async def consume(self, data: Payload) -> None: ...


class FanOut:
    """Sends each payload to several consumers; copies only for those that mutate data.

    Every consumer gets the payload even if another fails. If any consumer refuses it, the
    error is raised after all were tried: retryable (with the longest retry delay asked for)
    if any consumer asked to retry, else permanent. A retry reaches every consumer again, so
    those that took the payload get it twice: at least once, never silently lost (raising the
    permanent error of one consumer would make the sender drop what another only deferred).
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
        retryable = [e for e in errors if isinstance(e, RetryableError)]
        if not retryable:
            raise errors[0]
        delays = [e.retry_after for e in retryable if e.retry_after is not None]
        raise RetryableError(
            "; ".join(str(e) for e in errors),
            retry_after=max(delays) if delays else None,
            resource_exhausted=any(e.resource_exhausted for e in retryable),
        )


# How long a component that pushes back while the engine isolates a failure may keep one part
# of the payload waiting before that part is dropped (counted as ``refused_during_isolation``).
ISOLATION_RETRY_SECONDS = 5.0


class IsolatedConsumer:
    """A component's ``consume`` behind the engine's failure isolation: the consumer the
    engine puts in front of every processor, exporter and connector.

    A :class:`~pipeline.errors.ConsumeError` passes through untouched (push-back and refusals
    are the component's answer). Any other exception means the component could not process
    this payload (corrupt data deep inside it, or a bug): the payload is halved without
    decoding (:meth:`Payload.split`) and each half given to the component again, recursively,
    so that only the items that fail on their own are dropped; the rest is taken. What is
    dropped is counted (``otelcol_<kind>_dropped_items{reason="component_error"}``) and logged
    at most once a second, with the exception, the sender when known and the trace ids of the
    dropped items. The component goes on with the next payload. When nothing of the payload
    could be taken, :class:`~pipeline.errors.DataDroppedError` tells upstream (a receiver
    answers it as a permanent refusal; a batch processor does not count it again).
    """

    def __init__(self, inner: Consumer, settings: CreateSettings) -> None:
        self.inner = inner
        self.settings = settings
        self.mutates_data = inner.mutates_data

    async def consume(self, data: Payload) -> None:
        # with durability on: what the component builds from this payload during the call
        # carries its acknowledgement tokens (pipeline.durability.carry_current)
        entered = enter_consume(data) if data.ack_tokens else None
        try:
            await self.inner.consume(data)
        except Exception as exc:
            await self.caught(data, exc)
        finally:
            if entered is not None:
                leave_consume(entered)

    def caught(self, data: Payload, exc: Exception) -> Awaitable[None]:
        """What the isolation makes of ``exc``, raised by the component's consume of ``data``:
        a :class:`~pipeline.errors.ConsumeError` is raised again (the component's answer),
        any other exception is isolated (:meth:`failed`, returned to be awaited). The one
        place that decides it: the engine's entrance of a processor, which calls the
        component without this class's coroutine, comes here too (and to :meth:`finish`)."""
        if isinstance(exc, ConsumeError):
            try:
                raise exc
            finally:
                del exc  # (its traceback holds this frame: no cycle keeping ``data`` alive)
        return self.failed(data, exc)

    async def finish(self, rest: Awaitable[None], data: Payload) -> None:
        """Await ``rest``, what remains of a consume of ``data`` that the engine's entrance of
        a processor began by calling the component itself (a payload without acknowledgement
        tokens), under the isolation (:meth:`caught`)."""
        try:
            await rest
        except Exception as exc:
            await self.caught(data, exc)

    async def failed(self, data: Payload, exc: Exception) -> None:
        """The component raised ``exc`` (not a :class:`~pipeline.errors.ConsumeError`) on
        ``data``: the isolation (see the class). Raises :class:`DataDroppedError` when
        nothing of ``data`` could be taken."""
        total = _safe_count(data)
        dropped = await self._isolate(data, exc)
        if dropped >= total:
            raise DataDroppedError(
                f"{self.settings.kind} {self.settings.name} could not process the data "
                f"and dropped it: {type(exc).__name__}: {exc}"
            ) from exc

    async def _isolate(self, data: Payload, exc: Exception) -> int:
        """Give the halves of ``data`` to the component again; returns the items dropped."""
        halves = _halves(data)
        if halves is None:
            self._drop(data, exc)
            return _safe_count(data)
        dropped = 0
        for part in halves:
            try:
                await self._consume_part(part)
            except ConsumeError as refusal:
                self._drop(part, refusal, "refused_during_isolation")
                dropped += _safe_count(part)
            except Exception as part_exc:
                dropped += await self._isolate(part, part_exc)
        return dropped

    async def _consume_part(self, part: Payload) -> None:
        """One part, retried while the component pushes back (bounded)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ISOLATION_RETRY_SECONDS
        delay = 0.05
        while True:
            try:
                await self.inner.consume(part)
                return
            except RetryableError as exc:
                if loop.time() + delay > deadline:
                    raise
                await asyncio.sleep(min(delay, exc.retry_after or delay))
                delay = min(delay * 2, 1.0)

    def _drop(self, data: Payload, exc: BaseException, reason: str = "component_error") -> None:
        n = _safe_count(data)
        self.settings.telemetry.dropped(data.signal, n, reason)
        extra: dict[str, Any] = {
            "dropped_items": n,
            "reason": reason,
            "error_type": type(exc).__name__,
            "payload_bytes": len(data.to_bytes()),
            **describe_payload(data),
        }
        client = current_client()
        if client is not None:
            extra["client"] = client.describe()
        self.settings.log_limited(
            logging.ERROR,
            "could not process %s; dropped %d item(s): %s",
            data.signal,
            n,
            exc,
            key=f"isolation/{reason}/{type(exc).__name__}",
            extra=extra,
            exc_info=exc if reason == "component_error" else None,
        )


def _safe_count(data: Payload) -> int:
    try:
        return data.item_count()
    except Exception:
        return 1  # a payload too corrupt to count is at least one item lost


def _halves(data: Payload) -> list[Payload] | None:
    """``data`` in two parts without decoding its items, or ``None`` when it cannot be split
    (a single item, a single metric, or framing too corrupt to split)."""
    try:
        n = data.item_count()
        if n <= 1:
            return None
        parts = data.split((n + 1) // 2)
    except Exception:
        return None
    return parts if len(parts) > 1 else None


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

    A permanent refusal drops the data, counted as ``refused_permanently`` and logged (unless
    the component that refused it already counted and logged the drop:
    :class:`~pipeline.errors.DataDroppedError`). Any other exception is a failure of the next
    component that the engine did not isolate (a consumer outside a graph): the data is dropped,
    counted as ``component_error`` and logged; the caller's task goes on. Returns whether the
    data was delivered. Cancellation (the shutdown deadline) propagates: the caller still holds
    the data and counts it.
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
        except DataDroppedError:
            return False  # counted and logged where it was dropped
        except PermanentError as exc:
            settings.telemetry.dropped(data.signal, n, "refused_permanently")
            settings.log_limited(
                logging.ERROR,
                "the next component refused %s permanently; dropping it: %s",
                what,
                exc,
                key="refused_permanently",
                extra={"dropped_items": n},
            )
            return False
        except Exception as exc:
            settings.telemetry.dropped(data.signal, n, "component_error")
            settings.log_limited(
                logging.ERROR,
                "the next component failed on %s; dropping it: %s",
                what,
                exc,
                key=f"component_error/{type(exc).__name__}",
                extra={"dropped_items": n, "error_type": type(exc).__name__},
                exc_info=exc,
            )
            return False
        else:
            return True
