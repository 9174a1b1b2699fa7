"""The ``kafka`` exporter at run time: librdkafka's producer (``confluent-kafka``) behind the
engine's exporter helper (sending queue, retries, timeout, counts).

A payload becomes one message, or one per trace (``partition_traces_by_id``, keyed by the
trace id in hex, split at byte level by :mod:`plugins._otlproute`) or one per resource
(``partition_{metrics,logs}_by_resource_attributes``). ``send`` returns once the broker
acknowledged every message (``producer.required_acks``); a message that failed is retried with
the whole payload (the others may then be written twice: at least once). A payload whose
message would be above ``producer.max_message_bytes`` is sent in halves.

librdkafka's delivery reports are served by one thread per exporter (``poll``) and handed to
the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
from functools import partial
from typing import Any

from pipeline import (
    Component,
    CreateSettings,
    ExporterHelper,
    Host,
    MalformedDataError,
    Payload,
    PermanentError,
    RetryableError,
    Signal,
)
from pipeline.errors import RequestTooLargeError
from pipeline.pdata import payload_type
from plugins._kafka import ClientErrors, encode
from plugins._otlproute import split
from plugins.kafkaexporter.config import KafkaExporterConfig


class KafkaExporter(Component):
    mutates_data = False

    def __init__(self, settings: CreateSettings, config: KafkaExporterConfig, signal: Signal):
        self.settings = settings
        self.config = config
        self.signal = signal
        self.topic = config.topic_for(signal)
        self.encoding = config.encoding_for(signal)
        self.helper = ExporterHelper(settings, signal, config, self._send)
        self._producer: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._make = payload_type(signal)
        if signal == Signal.TRACES and config.partition_traces_by_id:
            self._partition = "traceID"
        elif (signal == Signal.METRICS and config.partition_metrics_by_resource_attributes) or (
            signal == Signal.LOGS and config.partition_logs_by_resource_attributes
        ):
            self._partition = "resource"
        else:
            self._partition = ""
        self.messages_sent = 0
        self.client_errors = ClientErrors(settings)

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self, host: Host) -> None:
        from confluent_kafka import Producer

        if self._producer is not None:
            return
        self._loop = asyncio.get_running_loop()
        self.client_errors.bind(host, self._loop)
        props = self.config.producer_properties()
        props["error_cb"] = self.client_errors
        props["logger"] = logging.getLogger("pipeline.kafka")
        self._producer = Producer(props)
        if self.config.plaintext_credentials:
            self.settings.logger.warning(
                "SASL credentials are sent without TLS: anyone on the path can read them"
            )
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._poll_loop, name=f"kafka-producer {self.settings.name}", daemon=True
        )
        self._thread.start()
        await self.helper.start(host)

    def _poll_loop(self) -> None:
        producer = self._producer
        while not self._stop.is_set():
            producer.poll(0.1)

    async def shutdown(self) -> None:
        try:
            await self.helper.shutdown()
        finally:
            producer, self._producer = self._producer, None
            if producer is not None:
                left = await asyncio.to_thread(producer.flush, 5.0)
                self._stop.set()
                if self._thread is not None:
                    await asyncio.to_thread(self._thread.join, 2.0)
                if left:
                    self.settings.logger.error(
                        "messages not delivered at shutdown", extra={"messages": left}
                    )

    async def consume(self, data: Payload) -> None:
        await self.helper.consume(data)

    # -- sending ----------------------------------------------------------------------------
    def _messages(self, payload: Payload) -> list[tuple[bytes | None, bytes]]:
        if not self._partition:
            return [(None, encode(payload, self.encoding))]
        try:
            parts = split(self.signal, payload.to_bytes(), self._partition, lambda k: k)
        except MalformedDataError as exc:
            raise PermanentError(f"cannot split the request: {exc}") from exc
        out: list[tuple[bytes | None, bytes]] = []
        for key, (raw, count) in parts.items():
            part = self._make(raw, item_count=count)
            if self._partition == "traceID":
                k = key.hex().encode()
            else:
                k = hashlib.blake2b(key, digest_size=16).hexdigest().encode()
            out.append((k, encode(part, self.encoding)))
        return out

    async def _send(self, payload: Payload) -> None:
        producer = self._producer
        if producer is None:
            raise RetryableError("the kafka exporter is not running", retry_after=1.0)
        messages = self._messages(payload)
        limit = self.config.producer.max_message_bytes
        if any(len(value) > limit for _, value in messages):
            raise RequestTooLargeError(
                f"a message would be above producer.max_message_bytes ({limit})"
            )
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[Any]] = []
        for key, value in messages:
            fut: asyncio.Future[Any] = loop.create_future()
            while True:
                try:
                    producer.produce(
                        self.topic, value, key, on_delivery=partial(self._delivered, fut)
                    )
                    break
                except BufferError:  # librdkafka's queue is full: wait for deliveries
                    await asyncio.sleep(0.005)
                except Exception as exc:  # KafkaException: refused before sending
                    raise self._error(getattr(exc, "args", [exc])[0]) from None
            futures.append(fut)
        errors = [e for e in await asyncio.gather(*futures) if e is not None]
        if errors:
            raise self._error(errors[0])
        self.messages_sent += len(messages)
        self.client_errors.served()

    def _delivered(self, fut: asyncio.Future[Any], err: Any, msg: Any) -> None:  # poll thread
        assert self._loop is not None
        self._loop.call_soon_threadsafe(_resolve, fut, err)

    def _error(self, err: Any) -> Exception:
        from confluent_kafka import KafkaError

        code = err.code() if hasattr(err, "code") else None
        text = err.str() if hasattr(err, "str") else str(err)
        if code == KafkaError.MSG_SIZE_TOO_LARGE:
            return RequestTooLargeError(f"kafka: {text}")
        permanent = {
            KafkaError.TOPIC_AUTHORIZATION_FAILED,
            KafkaError.CLUSTER_AUTHORIZATION_FAILED,
            KafkaError.INVALID_RECORD,
            KafkaError._INVALID_ARG,
            KafkaError.TOPIC_EXCEPTION,
        }
        fatal = hasattr(err, "fatal") and err.fatal()
        if code in permanent or fatal:
            return PermanentError(f"kafka: {text}")
        return RetryableError(f"kafka: {text}")


def _resolve(fut: asyncio.Future[Any], err: Any) -> None:
    if not fut.done():
        fut.set_result(err)
