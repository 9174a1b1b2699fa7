"""Telemetry as it travels through a pipeline: encoded OTLP, decoded only on demand.

A :class:`Traces` or :class:`Metrics` payload holds an encoded ``Export*ServiceRequest``. A
component that only forwards never decodes it; one that must read it calls :meth:`message`, and
one that changes it calls :meth:`mutable_message`, after which the payload re-encodes once when
it is next needed as bytes. Payloads merge by concatenating their encodings (two encoded requests
joined are one valid request) and split without decoding a span.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from pipeline import _otlpvalid, _wire
from pipeline.errors import PermanentError


class Signal(enum.StrEnum):
    """The kinds of telemetry a pipeline carries."""

    TRACES = "traces"
    METRICS = "metrics"
    LOGS = "logs"

    @property
    def item_name(self) -> str:
        """The unit the Collector's own metrics count this signal in."""
        return _ITEM_NAMES[self]


_ITEM_NAMES = {Signal.TRACES: "spans", Signal.METRICS: "metric_points", Signal.LOGS: "log_records"}


class Payload:
    """Base class of :class:`Traces` and :class:`Metrics`; not created directly."""

    __slots__ = ("_count", "_encoded", "_message")

    signal: ClassVar[Signal]
    request_class: ClassVar[type[Message]]

    def __init__(
        self,
        encoded: bytes | None = None,
        *,
        message: Message | None = None,
        item_count: int | None = None,
    ) -> None:
        if encoded is None and message is None:
            encoded = b""
        self._encoded = encoded
        self._message = message
        self._count = item_count

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_message(cls, message: Message) -> Payload:
        """Wrap a decoded request (the payload owns it from now on)."""
        return cls(message=message)

    @classmethod
    def merge(cls, payloads: Sequence[Payload]) -> Payload:
        """One payload holding every item of ``payloads``, without decoding any of them."""
        if len(payloads) == 1:
            return payloads[0]
        encoded = b"".join(p.to_bytes() for p in payloads)
        counts = [p._count for p in payloads]
        total = None if any(c is None for c in counts) else sum(c for c in counts if c is not None)
        return cls(encoded, item_count=total)

    # -- access ------------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """The encoded request (re-encoded once if a component changed it)."""
        if self._encoded is None:
            assert self._message is not None
            self._encoded = self._message.SerializeToString()
        return self._encoded

    @property
    def nbytes(self) -> int:
        """Size of the encoded request in bytes."""
        return len(self.to_bytes())

    def message(self) -> Any:
        """The decoded request, for reading. Do not change it: use :meth:`mutable_message`."""
        if self._message is None:
            msg = self.request_class()
            try:
                msg.ParseFromString(self.to_bytes())
            except DecodeError as exc:  # pragma: no cover - refused by validate() on receipt
                raise PermanentError(f"cannot decode {self.signal} request: {exc}") from exc
            self._message = msg
        return self._message

    def mutable_message(self) -> Any:
        """The decoded request, for changing; the payload re-encodes when next sent."""
        msg = self.message()
        self._encoded = None
        self._count = None
        return msg

    def item_count(self) -> int:
        """Spans (traces) or data points (metrics), counted without a full decode."""
        if self._count is None:
            if self._encoded is not None:
                self._count = self._count_encoded(self._encoded)
            else:
                self._count = self._count_message(self._message)
        return self._count

    def is_empty(self) -> bool:
        return self.item_count() == 0

    def copy(self) -> Payload:
        """An independent payload with the same content (cheap: encodings are immutable)."""
        return type(self)(self.to_bytes(), item_count=self._count)

    def validate(self) -> None:
        """Check the request as a receiver must before accepting it, and count its items.

        Refuses what a full protobuf parse refuses, at every depth (invalid UTF-8 in a string,
        truncated or corrupt fields, bad wire types, unclosed groups, nesting deeper than 100
        levels), and OTLP ids of the wrong length (see :mod:`pipeline._otlpvalid`), so every
        component after the receiver can decode what was accepted. One walk in C when the
        accelerator is built. Raises :class:`~pipeline.errors.PermanentError` with a message
        naming the field, e.g. ``malformed ExportTraceServiceRequest:
        resource_spans[0].resource.attributes[2].value.string_value: invalid UTF-8``.
        """
        self._count = self._validate(self.to_bytes())

    # -- per signal ----------------------------------------------------------------------------
    @classmethod
    def _count_encoded(cls, data: bytes) -> int:
        raise NotImplementedError

    @classmethod
    def _count_message(cls, message: Any) -> int:
        raise NotImplementedError

    @classmethod
    def _validate(cls, data: bytes) -> int:
        try:
            return _otlpvalid.check(cls.signal.value, data)
        except ValueError as exc:
            raise PermanentError(f"malformed {cls.request_class.DESCRIPTOR.name}: {exc}") from None

    def split(self, max_items: int, first: int = 0) -> list[Payload]:
        """Payloads of at most ``max_items`` items each, in order; with ``first``, the first
        payload holds at most ``first`` items (to top up a batch that has room for that many)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(items={self._count}, bytes={len(self._encoded or b'')})"


class Traces(Payload):
    """An encoded ``ExportTraceServiceRequest``."""

    __slots__ = ()
    signal = Signal.TRACES
    request_class = ExportTraceServiceRequest

    @classmethod
    def _count_encoded(cls, data: bytes) -> int:
        return _wire.count_spans(_wire.ShallowTraces.FromString(data))

    @classmethod
    def _count_message(cls, message: Any) -> int:
        return sum(len(ss.spans) for rs in message.resource_spans for ss in rs.scope_spans)

    def split(self, max_items: int, first: int = 0) -> list[Payload]:
        limit = first or max_items
        if max_items <= 0 or self.item_count() <= limit:
            return [self]
        shallow = _wire.ShallowTraces.FromString(self.to_bytes())
        out: list[Payload] = []
        current = _wire.ShallowTraces()
        room = limit
        for rs in shallow.resource_spans:
            for ss in rs.scope_spans:
                spans = ss.spans
                start = 0
                while start < len(spans):
                    take = min(room, len(spans) - start)
                    rs_out = current.resource_spans.add(
                        resource=rs.resource, schema_url=rs.schema_url
                    )
                    rs_out.scope_spans.add(
                        scope=ss.scope, schema_url=ss.schema_url, spans=spans[start : start + take]
                    )
                    start += take
                    room -= take
                    if room == 0:
                        out.append(Traces(current.SerializeToString(), item_count=limit))
                        current = _wire.ShallowTraces()
                        room = limit = max_items
        if room != limit:
            out.append(Traces(current.SerializeToString(), item_count=limit - room))
        return out


class Metrics(Payload):
    """An encoded ``ExportMetricsServiceRequest``; items are data points."""

    __slots__ = ()
    signal = Signal.METRICS
    request_class = ExportMetricsServiceRequest

    @classmethod
    def _count_encoded(cls, data: bytes) -> int:
        return _wire.count_metric_points(_wire.ShallowMetrics.FromString(data))

    @classmethod
    def _count_message(cls, message: Any) -> int:
        total = 0
        for rm in message.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    kind = m.WhichOneof("data")
                    if kind is not None:
                        total += len(getattr(m, kind).data_points)
        return total

    def split(self, max_items: int, first: int = 0) -> list[Payload]:
        """Split at metric boundaries; one metric's points are never separated, so a single
        metric with more than ``max_items`` (or ``first``) points makes a payload of its own."""
        limit = first or max_items
        if max_items <= 0 or self.item_count() <= limit:
            return [self]
        shallow = _wire.ShallowMetrics.FromString(self.to_bytes())
        out: list[Payload] = []
        current = _wire.ShallowMetrics()
        count = 0
        for rm in shallow.resource_metrics:
            for sm in rm.scope_metrics:
                sm_out = None
                for m in sm.metrics:
                    points = _wire.metric_points(m)
                    if count and count + points > limit:
                        out.append(Metrics(current.SerializeToString(), item_count=count))
                        current = _wire.ShallowMetrics()
                        count = 0
                        sm_out = None
                        limit = max_items
                    if sm_out is None:
                        rm_out = current.resource_metrics.add(
                            resource=rm.resource, schema_url=rm.schema_url
                        )
                        sm_out = rm_out.scope_metrics.add(scope=sm.scope, schema_url=sm.schema_url)
                    sm_out.metrics.append(m)
                    count += points
        if count or not out:
            out.append(Metrics(current.SerializeToString(), item_count=count))
        return out


PAYLOAD_TYPES: dict[Signal, type[Payload]] = {Signal.TRACES: Traces, Signal.METRICS: Metrics}


def payload_type(signal: Signal) -> type[Payload]:
    """The payload class of a signal."""
    return PAYLOAD_TYPES[signal]


def iter_spans(traces: Traces) -> Iterable[tuple[Any, Any, Any]]:
    """``(resource_spans, scope_spans, span)`` for every span of a decoded payload."""
    for rs in traces.message().resource_spans:
        for ss in rs.scope_spans:
            for span in ss.spans:
                yield rs, ss, span
