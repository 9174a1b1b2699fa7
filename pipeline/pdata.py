"""Telemetry as it travels through a pipeline: encoded OTLP, decoded only on demand.

A :class:`Traces`, :class:`Metrics` or :class:`Logs` payload holds an encoded
``Export*ServiceRequest``. A component that only forwards never decodes it; one that must read
it calls :meth:`message`, and one that changes it calls :meth:`mutable_message`, after which the
payload re-encodes once when it is next needed as bytes. Payloads merge by concatenating their
encodings (two encoded requests joined are one valid request: every top-level field of an
``Export*ServiceRequest`` is a repeated message, which protobuf appends) and split without
decoding a span or log record. A merged payload keeps its parts and joins them only when asked
for its bytes (:meth:`Payload.to_bytes`): an exporter that only compresses and sends feeds the
parts to the compressor one by one (:meth:`Payload.encoded_parts`) and never copies the batch.
"""

from __future__ import annotations

import bisect
import enum
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from pipeline import _otlpvalid, _wire
from pipeline.errors import MalformedDataError, PermanentError


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
    """Base class of :class:`Traces`, :class:`Metrics` and :class:`Logs`; not created
    directly."""

    __slots__ = ("_count", "_encoded", "_message", "_parts", "_whole", "ack_tokens")

    signal: ClassVar[Signal]
    request_class: ClassVar[type[Message]]
    ack_tokens: tuple[object, ...]  # (see carry_acks)

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
        # the encodings of a merge, joined on demand; when set, _encoded and _message are None
        self._parts: tuple[bytes, ...] | None = None
        self._count = item_count
        self.ack_tokens = ()
        self._whole = False

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_message(cls, message: Message, item_count: int | None = None) -> Payload:
        """Wrap a decoded request (the payload owns it from now on); ``item_count``: its
        items, when its builder counted them (else counted when first asked, a walk of the
        message)."""
        return cls(message=message, item_count=item_count)

    @classmethod
    def merge(cls, payloads: Sequence[Payload]) -> Payload:
        """One payload holding every item of ``payloads``, without decoding any of them.

        The encodings are not copied: the merged payload keeps them as its :meth:`encoded_parts` and
        joins them into one ``bytes`` only when :meth:`to_bytes` (or anything that reads the
        request) is first called."""
        if len(payloads) == 1:
            return payloads[0]
        parts = tuple(c for p in payloads for c in p.encoded_parts() if c)
        counts = [p._count for p in payloads]
        total = None if any(c is None for c in counts) else sum(c for c in counts if c is not None)
        merged = cls(parts[0] if parts else b"", item_count=total)
        if len(parts) > 1:
            merged._encoded = None
            merged._parts = parts
        acks = [p.ack_tokens for p in payloads if p.ack_tokens]
        if acks:
            merged.ack_tokens = acks[0] if len(acks) == 1 else union_acks(acks)
        merged._whole = all(p._whole for p in payloads)
        return merged

    # -- whole traces ---------------------------------------------------------------------------
    @property
    def whole_traces(self) -> bool:
        """Whether every trace in this (traces) payload is whole: the component that emitted
        it held the traces until they were complete (the ``workflow`` processor releasing a
        workflow after its ``wait_duration``; the late spans it passes on belong to traces it
        released before) and nothing upstream holds more of them. A component that would
        hold traces to see them whole (``tail_sampling``) decides at once instead of holding
        them a second time.

        Set by the component that emits the payload (``payload.whole_traces = True``); kept by
        :meth:`copy` and by :meth:`merge` when every part has it; not by :meth:`split` (a part
        may hold part of a trace) nor by a new payload a component builds (which sets it again
        when it keeps whole traces whole, as ``probabilistic_sampler`` and ``redaction`` do)."""
        return self._whole

    @whole_traces.setter
    def whole_traces(self, value: bool) -> None:
        self._whole = bool(value)

    # -- acknowledgement tokens -----------------------------------------------------------------
    # ``ack_tokens`` (a slot, not a property: it is read several times a consume, and a
    # property is a Python call each time): the acknowledgement tokens this payload carries
    # (empty unless durability is on). Read it; add to it with :meth:`carry_acks`.
    #
    # With ``service.durability`` on, every request a receiver accepts is written to a
    # write-ahead log and its payload carries one token for that record; the record is done
    # (not replayed after a crash) once no live payload holds its token any more. Tokens
    # travel with the data: :meth:`merge` unions them, :meth:`split` and :meth:`copy` share
    # them. A component that holds data in another form than the payload it got (a trace
    # store, an aggregate) and later emits it in new payloads carries the tokens on with
    # :meth:`carry_acks` (see ``docs/durability.md``).

    @property
    def _acks(self) -> tuple[object, ...]:
        """``ack_tokens`` under its former slot's name (for code written against it)."""
        return self.ack_tokens

    @_acks.setter
    def _acks(self, tokens: tuple[object, ...]) -> None:
        self.ack_tokens = tokens

    def carry_acks(self, tokens: Iterable[object]) -> Payload:
        """Add ``tokens`` (of the payloads this one was made from) to this payload; returns it."""
        more = tuple(tokens)
        if more:
            self.ack_tokens = union_acks((self.ack_tokens, more)) if self.ack_tokens else more
        return self

    # -- access ------------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """The encoded request (re-encoded once if a component changed it; the parts of a
        merge joined once)."""
        if self._encoded is None:
            if self._parts is not None:
                self._encoded = b"".join(self._parts)
                self._parts = None
            else:
                assert self._message is not None
                self._encoded = self._message.SerializeToString()
        return self._encoded

    def encoded_parts(self) -> tuple[bytes, ...]:
        """The encoded request as consecutive pieces whose concatenation is :meth:`to_bytes`,
        without joining the parts of a merge: for a consumer that only streams the bytes (a
        compressor, a file write). One piece unless the payload was merged and not yet read
        as a whole; never empty pieces, except the single ``b""`` of an empty request."""
        if self._parts is not None:
            return self._parts
        return (self.to_bytes(),)

    @property
    def nbytes(self) -> int:
        """Size of the encoded request in bytes."""
        if self._parts is not None:
            return sum(map(len, self._parts))
        return len(self.to_bytes())

    def message(self) -> Any:
        """The decoded request, for reading. Do not change it: use :meth:`mutable_message`."""
        if self._message is None:
            msg = self.request_class()
            try:
                msg.ParseFromString(self.to_bytes())
            except DecodeError as exc:
                raise MalformedDataError(f"cannot decode {self.signal} request: {exc}") from exc
            self._message = msg
        return self._message

    def mutable_message(self) -> Any:
        """The decoded request, for changing; the payload re-encodes when next sent."""
        msg = self.message()
        self._encoded = None
        self._count = None
        return msg

    def item_count(self) -> int:
        """Spans (traces), data points (metrics) or log records (logs), counted without a full
        decode."""
        count = self._count
        if count is None:
            count = self._count = self._counted()
        return count

    def _counted(self) -> int:
        # (apart from item_count, which runs several times a consume: the generator over the
        # parts made item_count keep ``self`` in a cell, a PyCell_New every call)
        if self._parts is not None:  # a request's items are the sum of its parts'
            return sum(map(self._count_encoded, self._parts))
        if self._encoded is not None:
            return self._count_encoded(self._encoded)
        return self._count_message(self._message)

    def is_empty(self) -> bool:
        return self.item_count() == 0

    def copy(self) -> Payload:
        """An independent payload with the same content (cheap: encodings are immutable).
        The copy shares the acknowledgement tokens."""
        parts = self._parts
        out = type(self)(b"" if parts is not None else self.to_bytes(), item_count=self._count)
        if parts is not None:
            out._encoded = None
            out._parts = parts
        out.ack_tokens = self.ack_tokens
        out._whole = self._whole
        return out

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
        size = sum(map(len, self._parts)) if self._parts is not None else len(self._encoded or b"")
        return f"{type(self).__name__}(items={self._count}, bytes={size})"


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
        return _split_items(self, _wire.ShallowTraces, _TRACE_LEVELS, max_items, first)


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
        if self.ack_tokens:
            for part in out:
                part.ack_tokens = self.ack_tokens
        return out


class Logs(Payload):
    """An encoded ``ExportLogsServiceRequest``; items are log records."""

    __slots__ = ()
    signal = Signal.LOGS
    request_class = ExportLogsServiceRequest

    @classmethod
    def _count_encoded(cls, data: bytes) -> int:
        return _wire.count_log_records(_wire.ShallowLogs.FromString(data))

    @classmethod
    def _count_message(cls, message: Any) -> int:
        return sum(len(sl.log_records) for rl in message.resource_logs for sl in rl.scope_logs)

    def split(self, max_items: int, first: int = 0) -> list[Payload]:
        return _split_items(self, _wire.ShallowLogs, _LOG_LEVELS, max_items, first)


# the three levels of a request whose items are split one by one: group, scope, items
_TRACE_LEVELS = ("resource_spans", "scope_spans", "spans")
_LOG_LEVELS = ("resource_logs", "scope_logs", "log_records")


def _split_items(
    payload: Payload, shallow_class: Any, levels: tuple[str, str, str], max_items: int, first: int
) -> list[Payload]:
    """:meth:`Payload.split` of a request shaped resource -> scope -> items (traces, logs),
    through its shallow view: items are copied as opaque bytes, each part repeating the
    resource and scope of the items it holds."""
    limit = first or max_items
    if max_items <= 0 or payload.item_count() <= limit:
        return [payload]
    groups, scopes, items_name = levels
    make = type(payload)
    shallow = shallow_class.FromString(payload.to_bytes())
    out: list[Payload] = []
    current = shallow_class()
    room = limit
    for group in getattr(shallow, groups):
        for scope in getattr(group, scopes):
            items = getattr(scope, items_name)
            start = 0
            while start < len(items):
                take = min(room, len(items) - start)
                group_out = getattr(current, groups).add(
                    resource=group.resource, schema_url=group.schema_url
                )
                scope_out = getattr(group_out, scopes).add(
                    scope=scope.scope, schema_url=scope.schema_url
                )
                getattr(scope_out, items_name).extend(items[start : start + take])
                start += take
                room -= take
                if room == 0:
                    out.append(make(current.SerializeToString(), item_count=limit))
                    current = shallow_class()
                    room = limit = max_items
    if room != limit:
        out.append(make(current.SerializeToString(), item_count=limit - room))
    if payload.ack_tokens:  # every part holds the whole request's durability tokens
        for part in out:
            part.ack_tokens = payload.ack_tokens
    return out


class JoinedParts:
    """A payload's :meth:`~Payload.encoded_parts` read at offsets into their concatenation,
    without joining them: for a reader given such offsets (the agentmetrics connector's C
    scanner, which walks the parts where they are) that slices a few ranges out of a large
    merged request. A range is read from the one part that holds it (a part is a whole encoded
    request: a message of the request never straddles two)."""

    __slots__ = ("_starts", "parts")

    def __init__(self, parts: Sequence[bytes]) -> None:
        self.parts = tuple(parts)
        starts = []
        at = 0
        for part in self.parts:
            starts.append(at)
            at += len(part)
        self._starts = starts

    def locate(self, start: int, end: int) -> tuple[bytes, int, int]:
        """The part holding bytes ``start`` to ``end`` of the concatenation, and the range's
        offsets in it. :class:`ValueError` for a range outside the request or across two
        parts."""
        parts = self.parts
        if len(parts) == 1:
            first = parts[0]
            if 0 <= start <= end <= len(first):
                return first, start, end
        elif parts:
            i = bisect.bisect_right(self._starts, start) - 1
            if i >= 0:
                part, base = parts[i], self._starts[i]
                if start <= end <= base + len(part):
                    return part, start - base, end - base
        raise ValueError(f"bytes {start}..{end} are not within one part of the request")

    def __getitem__(self, key: slice) -> bytes:
        """``parts joined[start:end]`` (a slice with both bounds, no step)."""
        part, start, end = self.locate(key.start, key.stop)
        if start == 0 and end == len(part):
            return part
        return part[start:end]


PAYLOAD_TYPES: dict[Signal, type[Payload]] = {
    Signal.TRACES: Traces,
    Signal.METRICS: Metrics,
    Signal.LOGS: Logs,
}


def union_acks(groups: Iterable[tuple[object, ...]]) -> tuple[object, ...]:
    """The tokens of several payloads, each once, in order."""
    return tuple(dict.fromkeys(t for group in groups for t in group))


def payload_type(signal: Signal) -> type[Payload]:
    """The payload class of a signal."""
    return PAYLOAD_TYPES[signal]


def iter_spans(traces: Traces) -> Iterable[tuple[Any, Any, Any]]:
    """``(resource_spans, scope_spans, span)`` for every span of a decoded payload."""
    for rs in traces.message().resource_spans:
        for ss in rs.scope_spans:
            for span in ss.spans:
                yield rs, ss, span


def iter_log_records(logs: Logs) -> Iterable[tuple[Any, Any, Any]]:
    """``(resource_logs, scope_logs, log_record)`` for every record of a decoded payload."""
    for rl in logs.message().resource_logs:
        for sl in rl.scope_logs:
            for record in sl.log_records:
                yield rl, sl, record


def describe_payload(payload: Payload, limit: int = 3) -> dict[str, str]:
    """What helps find the sender of a payload that could not be processed, read best-effort
    (the payload may be corrupt): the ``service.name`` of its first resource and its first
    trace ids (traces, and logs whose records carry one) or metric names (metrics). Never
    raises."""
    out: dict[str, str] = {}
    try:
        data = payload.to_bytes()
        resource = b""
        if payload.signal in (Signal.TRACES, Signal.LOGS):
            skeleton_class, (groups, scopes, items) = (
                (_wire.SkeletonTraces, _TRACE_LEVELS)
                if payload.signal is Signal.TRACES
                else (_wire.SkeletonLogs, _LOG_LEVELS)
            )
            ids: list[str] = []
            for group in getattr(skeleton_class.FromString(data), groups):
                resource = resource or group.resource
                for scope in getattr(group, scopes):
                    for item in getattr(scope, items):
                        tid = item.trace_id.hex()
                        if tid and tid not in ids:
                            ids.append(tid)
                        if len(ids) >= limit:
                            break
            if ids:
                out["trace_ids"] = ",".join(ids)
        elif payload.signal is Signal.METRICS:
            shallow = _wire.ShallowMetrics.FromString(data)
            names: list[str] = []
            for rm in shallow.resource_metrics:
                resource = resource or rm.resource
                for sm in rm.scope_metrics:
                    names.extend(m.name.decode("utf-8", "replace") for m in sm.metrics[:limit])
            if names:
                out["metrics"] = ",".join(names[:limit])
        if resource:
            out["service_name"] = _service_name(resource)
    except Exception:
        out.setdefault("payload", "unreadable framing")
    return out


def _service_name(resource: bytes) -> str:
    from opentelemetry.proto.resource.v1.resource_pb2 import Resource

    try:
        parsed = Resource.FromString(resource)
    except DecodeError:
        return "(resource unreadable)"
    for kv in parsed.attributes:
        if kv.key == "service.name":
            return str(kv.value.string_value)
    return ""
