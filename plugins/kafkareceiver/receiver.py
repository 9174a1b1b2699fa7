"""The ``kafka`` receiver at run time: librdkafka's consumer (``confluent-kafka``) in a
consumer group; each message is decoded, checked as any receiver checks a request, and
pushed into the pipeline.

The client's blocking calls run on one thread of this receiver (so they never overlap); the
messages are handled one after the other on the event loop. Offsets are stored (marked) by
the receiver only, before the pipeline (``message_marking.after: false``, the Collector's
default: at most once) or once the pipeline accepted the message (``after: true``: at least
once; a message refused for now is tried again, with ``error_backoff``, and nothing after it
in the batch is marked meanwhile). The stored offsets are committed every
``autocommit.interval`` (or after each batch without autocommit), and when the partitions are
revoked or the receiver stops. A message that cannot be decoded, or that the pipeline refuses
for good, is counted, logged with its topic, partition and offset, and marked: it never
blocks its partition. At most one line a second about such messages, each line naming every
offset skipped since the last (as ranges, per partition): a burst of poison is a few lines, and
no offset goes unlogged.

The consuming task is supervised (:func:`pipeline.supervise`): an unexpected exception (a bug,
not a refusal) is logged with its traceback, counted
(``otelcol_component_task_restarts{task="consume"}``), reported as the receiver's status
(``recoverable_error``, ``ok`` again once it runs), and consumption starts again after a
backoff, each partition of the batch in hand sought back to its first message not marked: what
was not marked is read again (at least once with ``message_marking.after: true``).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pipeline import (
    Component,
    ConsumeError,
    Consumer,
    CreateSettings,
    Host,
    RetryableError,
    Signal,
    supervise,
)
from plugins._kafka import ClientErrors, decode
from plugins.kafkareceiver.config import KafkaReceiverConfig

SKIPPED_LOG_INTERVAL = 1.0
"""Seconds between two lines about skipped messages (the offsets in between wait)."""
SKIPPED_LOG_MAX = 10_000
"""Skipped offsets that wait at most: this many are logged at once."""


class KafkaReceiver(Component):
    def __init__(
        self,
        settings: CreateSettings,
        config: KafkaReceiverConfig,
        signal: Signal,
        next_consumer: Consumer,
    ) -> None:
        self.settings = settings
        self.config = config
        self.signal = signal
        self.next = next_consumer
        self.topic = config.topic_for(signal)
        self.encoding = config.encoding_for(signal)
        self._consumer: Any = None
        self._executor: ThreadPoolExecutor | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._batch: list[Any] = []  # the batch being handled (read again after a failure)
        self._marked: dict[tuple[str, int], int] = {}  # (topic, partition) -> last marked
        # skipped messages whose line waits (one line a second): (template, topic, partition)
        # -> their offsets and the last error
        self._skipped: dict[tuple[str, str, int], tuple[list[int], str]] = {}
        self._skipped_logged = float("-inf")  # the first line at once
        self.messages = 0  # messages handled (also otelcol_kafka_receiver_messages)
        self.undecodable = 0
        self.assigned: set[int] = set()
        self._joined = False  # partitions assigned since the last look (the client's thread)
        self.client_errors = ClientErrors(settings)
        tel = settings.telemetry.service
        name = settings.name
        self._messages = tel.counter(
            "otelcol_kafka_receiver_messages",
            "Messages read from Kafka.",
            ("receiver", "topic"),
        ).labels(name, self.topic)
        self._unmarshal_failed = tel.counter(
            "otelcol_kafka_receiver_unmarshal_failed_messages",
            "Messages that could not be decoded (skipped: their offsets are logged).",
            ("receiver", "topic"),
        ).labels(name, self.topic)
        self._refused = tel.counter(
            "otelcol_kafka_receiver_refused_messages",
            "Messages the pipeline refused for good, or for now with message_marking.on_error "
            "(skipped: their offsets are logged).",
            ("receiver", "topic"),
        ).labels(name, self.topic)
        self._rebalances = tel.counter(
            "otelcol_kafka_receiver_partition_changes",
            "Partitions assigned to (start) or revoked from (close) this receiver.",
            ("receiver", "topic", "change"),
        )
        self._partitions = tel.gauge(
            "otelcol_kafka_receiver_partitions",
            "Partitions this receiver currently consumes.",
            ("receiver", "topic"),
        ).labels(name, self.topic)

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self, host: Host) -> None:
        from confluent_kafka import Consumer as KafkaConsumer

        if self._task is not None:
            return
        self.client_errors.bind(host, asyncio.get_running_loop())
        props = self.config.consumer_properties()
        props["error_cb"] = self.client_errors
        props["logger"] = logging.getLogger("pipeline.kafka")
        if self.config.plaintext_credentials:
            self.settings.logger.warning(
                "SASL credentials are sent without TLS: anyone on the path can read them"
            )
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"kafka {self.settings.name}")
        loop = asyncio.get_running_loop()
        self._consumer = await loop.run_in_executor(self._executor, KafkaConsumer, props)
        await loop.run_in_executor(
            self._executor,
            lambda: self._consumer.subscribe(
                [self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke
            ),
        )
        self._stopping = False
        self._task = supervise(self.settings, host, "consume", self._consume)

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:  # the client's thread
        self.assigned |= {p.partition for p in partitions}
        self._joined = True
        self._partitions.set(len(self.assigned))
        self._rebalances.labels(self.settings.name, self.topic, "start").inc(len(partitions))
        self.settings.logger.info(
            "partitions assigned",
            extra={"topic": self.topic, "partitions": sorted(p.partition for p in partitions)},
        )

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:  # the client's thread
        self.assigned -= {p.partition for p in partitions}
        for p in partitions:
            self._marked.pop((p.topic, p.partition), None)
        self._partitions.set(len(self.assigned))
        self._rebalances.labels(self.settings.name, self.topic, "close").inc(len(partitions))
        self.settings.logger.info(
            "partitions revoked",
            extra={"topic": self.topic, "partitions": sorted(p.partition for p in partitions)},
        )

    async def shutdown(self) -> None:
        self._stopping = True
        task, self._task = self._task, None
        if task is not None:
            try:
                await task
            except asyncio.CancelledError:
                task.cancel()
                raise
            except Exception as exc:
                self.settings.logger.error("the kafka receiver failed: %s", exc)
        self._log_skipped(force=True)
        consumer, self._consumer = self._consumer, None
        executor, self._executor = self._executor, None
        if consumer is not None and executor is not None:
            loop = asyncio.get_running_loop()
            if not self.config.autocommit.enable:
                await loop.run_in_executor(executor, self._commit, consumer)
            # close commits the stored offsets (autocommit) and leaves the group
            await loop.run_in_executor(executor, consumer.close)
        if executor is not None:
            executor.shutdown(wait=False)

    @staticmethod
    def _commit(consumer: Any) -> None:
        from confluent_kafka import KafkaException

        try:
            consumer.commit(asynchronous=False)
        except KafkaException:
            pass  # nothing stored since the last commit

    # -- consuming --------------------------------------------------------------------------
    async def _consume(self) -> None:
        """:meth:`_run` (the supervised task); when it fails, the batch in hand is read again
        from each partition's first message not marked, before the exception goes on to the
        supervisor (which logs, counts and reports it, and runs this again)."""
        try:
            await self._run()
        except Exception:
            batch, self._batch = self._batch, []
            await self._rewind(batch)
            raise

    async def _rewind(self, batch: list[Any]) -> None:
        """Seek each partition of ``batch`` back to its first message not marked."""
        from confluent_kafka import KafkaException, TopicPartition

        first: dict[tuple[str, int], int] = {}
        for m in batch:
            if m.error() is not None:
                continue
            where = (m.topic(), m.partition())
            if m.offset() > self._marked.get(where, -1) and where not in first:
                first[where] = m.offset()
        consumer, executor = self._consumer, self._executor
        if not first or consumer is None or executor is None:
            return
        loop = asyncio.get_running_loop()
        for (topic, partition), offset in first.items():
            try:
                await loop.run_in_executor(
                    executor, consumer.seek, TopicPartition(topic, partition, offset)
                )
            except KafkaException as exc:  # revoked meanwhile: its next owner reads it
                self.settings.logger.warning(
                    "cannot read %s[%d] again from offset %d: %s",
                    topic,
                    partition,
                    offset,
                    exc,
                    extra={"topic": topic, "partition": partition, "offset": offset},
                )

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        consumer = self._consumer
        executor = self._executor
        while not self._stopping:
            try:
                batch = await loop.run_in_executor(
                    executor, consumer.consume, self.config.max_batch, 0.2
                )
            except Exception as exc:
                self.settings.log_limited(
                    logging.ERROR, "reading from kafka failed: %s", exc, key="consume"
                )
                await asyncio.sleep(0.5)
                continue
            if self._joined or any(m.error() is None for m in batch):
                self._joined = False
                self.client_errors.served()  # an assignment or a message: the brokers serve
            self._batch = batch
            marked = False
            for message in batch:
                if self._stopping:
                    break  # the rest is not marked: read again after a restart or rebalance
                if not await self._handle(message):
                    break
                marked = True
            if marked and not self.config.autocommit.enable:
                await loop.run_in_executor(executor, self._commit, consumer)
            self._batch = []
            if self._skipped:
                self._log_skipped()

    def _extract_headers(self, payload: Any, headers: list[tuple[str, bytes | None]]) -> None:
        """``header_extraction``: each listed header of the message (exact names) becomes the
        resource attribute ``kafka.header.<name>`` of every resource in it, as the
        Collector's receiver does."""
        wanted = set(self.config.header_extraction.headers)
        found = [(k, v) for k, v in headers if k in wanted]
        if not found:
            return
        message = payload.mutable_message()
        groups = {
            Signal.TRACES: "resource_spans",
            Signal.METRICS: "resource_metrics",
            Signal.LOGS: "resource_logs",
        }[self.signal]
        for group in getattr(message, groups):
            for key, value in found:
                attr = group.resource.attributes.add(key=f"kafka.header.{key}")
                attr.value.string_value = (value or b"").decode("utf-8", "replace")

    def _skip(self, template: str, where: dict[str, Any], exc: BaseException) -> None:
        """Log that the message at ``where`` is skipped (``template``: count, topic,
        partition, offsets, error): at once when no such line was written in the last
        second, else with the others skipped meanwhile in one line per partition, written a
        second after the last (after a batch, by the next skip, or as the receiver stops):
        every skipped offset is logged, a burst of them in a few lines."""
        key = (template, where["topic"], where["partition"])
        offsets = self._skipped.get(key, ([], ""))[0]
        offsets.append(where["offset"])
        self._skipped[key] = (offsets, str(exc))
        self._log_skipped(force=len(offsets) >= SKIPPED_LOG_MAX)

    def _log_skipped(self, force: bool = False) -> None:
        """Write the lines about the skipped messages that wait, if a second has passed since
        the last (``force``: now)."""
        now = time.monotonic()
        if not self._skipped or (not force and now - self._skipped_logged < SKIPPED_LOG_INTERVAL):
            return
        self._skipped_logged = now
        skipped, self._skipped = self._skipped, {}
        for (template, topic, partition), (offsets, error) in skipped.items():
            ranges = _ranges(offsets)
            self.settings.logger.error(
                template,
                len(offsets),
                topic,
                partition,
                ranges,
                error,
                extra={
                    "topic": topic,
                    "partition": partition,
                    "offsets": ranges,
                    "skipped": len(offsets),
                },
            )

    def _mark(self, message: Any) -> None:
        self._consumer.store_offsets(message=message)
        self._marked[(message.topic(), message.partition())] = message.offset()

    async def _handle(self, message: Any) -> bool:
        """Handle one message; False when the receiver stopped before it was marked."""
        error = message.error()
        if error is not None:
            self.settings.log_limited(
                logging.WARNING, "kafka: %s", error.str(), key="consume_error"
            )
            return True
        self.messages += 1
        self._messages.inc()
        where = {
            "topic": message.topic(),
            "partition": message.partition(),
            "offset": message.offset(),
        }
        try:
            payload = decode(self.signal, message.value() or b"", self.encoding)
        except Exception as exc:
            self.undecodable += 1
            self._unmarshal_failed.inc()
            self.settings.telemetry.refused_request("kafka", "undecodable")
            self._skip("cannot decode %d message(s) (skipped) at %s[%d] offsets %s: %s", where, exc)
            self._mark(message)
            return True
        extraction = self.config.header_extraction
        if extraction.extract_headers and extraction.headers:
            self._extract_headers(payload, message.headers() or [])
        marking = self.config.message_marking
        if not marking.after:
            self._mark(message)
        if payload.item_count() == 0:
            if marking.after:
                self._mark(message)
            return True
        backoff = self.config.error_backoff
        delay = backoff.initial_interval
        loop = asyncio.get_running_loop()
        started = loop.time()
        while True:
            try:
                await self.next.consume(payload)
                break
            except RetryableError as exc:
                if not marking.after or marking.on_error or not backoff.enabled:
                    self._refused.inc()
                    self._skip(
                        "the pipeline refused %d message(s) (skipped) at %s[%d] offsets %s: %s",
                        where,
                        exc,
                    )
                    break
                if self._stopping:
                    return False  # not marked: read again
                if backoff.max_elapsed_time and loop.time() - started > backoff.max_elapsed_time:
                    self.settings.logger.warning(
                        "the pipeline still refuses a message after %.0fs; still retrying",
                        loop.time() - started,
                        extra=where,
                    )
                    started = loop.time()
                self.settings.log_limited(
                    logging.WARNING,
                    "the pipeline refused a message for now, retrying in %.2fs: %s",
                    delay,
                    exc,
                    key="retry",
                    extra=where,
                )
                jitter = backoff.randomization_factor
                await asyncio.sleep(delay * random.uniform(1 - jitter, 1 + jitter))
                delay = min(delay * backoff.multiplier, backoff.max_interval)
            except ConsumeError as exc:  # refused for good: it would be refused again
                self._refused.inc()
                self._skip(
                    "the pipeline refused %d message(s) for good (skipped) at %s[%d] offsets %s: "
                    "%s",
                    where,
                    exc,
                )
                break
        if marking.after:
            self._mark(message)
        return True


def _ranges(offsets: list[int]) -> str:
    """``[3, 4, 5, 9]`` as ``"3-5,9"``."""
    out: list[str] = []
    first = last = offsets[0]
    for o in offsets[1:]:
        if o == last + 1:
            last = o
            continue
        out.append(f"{first}-{last}" if last > first else str(first))
        first = last = o
    out.append(f"{first}-{last}" if last > first else str(first))
    return ",".join(out)
