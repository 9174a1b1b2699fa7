"""Splitting an encoded OTLP request by a routing key, at byte level (shared by the
``loadbalancing`` and ``kafka`` exporters; the package name starts with ``_``: not a plugin).

The request is read through the shallow views of :mod:`pipeline._wire` (protobuf's C parser):
spans, log records and data points stay opaque bytes and are copied into the parts as they
are; only what the key needs is read: a span's trace id (field 1, normally the first 18 bytes
of the span), a log record's trace id (field 9), the resource's ``service.name``, a metric's
name, a data point's attributes.

:func:`split` groups the items by ``pick(key)`` (a backend, a partition, the key itself) and
returns one encoded request per group, each item keeping its resource and scope.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Hashable
from typing import Any, Literal, TypeVar

from google.protobuf.message import DecodeError

from pipeline import MalformedDataError, Signal, _wire
from pipeline._pbwire import field_readers, varint_reader

RoutingKey = Literal["traceID", "service", "resource", "metric", "streamID"]
K = TypeVar("K", bound=Hashable)

# which routing keys each signal supports (as the Collector's loadbalancing exporter)
SUPPORTED: dict[Signal, tuple[str, ...]] = {
    Signal.TRACES: ("traceID", "service", "resource"),
    Signal.METRICS: ("service", "resource", "metric", "streamID"),
    Signal.LOGS: ("traceID", "service", "resource"),
}
DEFAULT_KEY: dict[Signal, str] = {
    Signal.TRACES: "traceID",
    Signal.METRICS: "service",
    Signal.LOGS: "traceID",
}

# the field number of the attributes of each data point kind
_POINT_ATTRS = {
    "gauge": 7,
    "sum": 7,
    "histogram": 9,
    "exponential_histogram": 1,
    "summary": 7,
}


# pbwire.h's readers (pipeline/_pbwire.py) with this module's bounds and errors: every bit of
# a varint kept, any field number taken, MalformedDataError in its own words
_REASONS = {
    "length past the end": "length beyond the message",
    "truncated fixed64": "truncated fixed field",
    "truncated fixed32": "truncated fixed field",
}
_varint = varint_reader(
    MalformedDataError, mask=-1, truncated="truncated varint", overlong="truncated varint"
)
_, _read_value = field_readers(
    lambda reason: MalformedDataError(_REASONS.get(reason, reason)), read_varint=_varint
)


def fields(buf: bytes) -> list[tuple[int, int, bytes | int]]:
    """The top-level fields of one encoded message: (number, wire type, value), a length-
    delimited value as bytes, a fixed one as the int of its bytes. Raises
    :class:`MalformedDataError` on bad framing (groups are refused)."""
    out: list[tuple[int, int, bytes | int]] = []
    pos, end = 0, len(buf)
    while pos < end:
        tag, pos = _varint(buf, pos, end)
        number, wt = tag >> 3, tag & 7
        if wt not in (0, 1, 2, 5):
            raise MalformedDataError(f"unsupported wire type {wt}")
        value, start, stop, pos = _read_value(buf, wt, pos, end)
        out.append((number, wt, buf[start:stop] if wt == 2 else value))
    return out


def span_trace_id(span: bytes) -> bytes:
    """The trace id of an encoded span (field 1), without decoding the rest."""
    if span[:2] == b"\x0a\x10":
        return span[2:18]
    tid = b""
    for number, wt, value in fields(span):
        if number == 1 and wt == 2:
            tid = value  # type: ignore[assignment]
    return tid


def log_trace_id(record: bytes) -> bytes:
    """The trace id of an encoded log record (field 9), or b""."""
    tid = b""
    for number, wt, value in fields(record):
        if number == 9 and wt == 2:
            tid = value  # type: ignore[assignment]
    return tid


def service_name(resource: bytes) -> str:
    """``service.name`` of an encoded resource (a string value), or ""."""
    name = ""
    for number, wt, kv in fields(resource):
        if number != 1 or wt != 2:
            continue
        key = b""
        value = b""
        for n2, w2, v2 in fields(kv):  # type: ignore[arg-type]
            if n2 == 1 and w2 == 2:
                key = v2  # type: ignore[assignment]
            elif n2 == 2 and w2 == 2:
                value = v2  # type: ignore[assignment]
        if key == b"service.name":
            for n3, w3, v3 in fields(value):
                if n3 == 1 and w3 == 2:
                    name = v3.decode("utf-8", "replace")  # type: ignore[union-attr]
    return name


def _point_attrs(kind: str, point: bytes) -> bytes:
    number = _POINT_ATTRS[kind]
    return b"".join(
        value  # type: ignore[misc]
        for n, wt, value in fields(point)
        if n == number and wt == 2
    )


def _parse(cls: Any, raw: bytes, signal: Signal) -> Any:
    try:
        return cls.FromString(raw)
    except DecodeError as exc:
        raise MalformedDataError(f"cannot read the {signal} request: {exc}") from exc


def split(
    signal: Signal, raw: bytes, routing_key: str, pick: Callable[[bytes], K]
) -> dict[K, tuple[bytes, int]]:
    """Group the items of the encoded request ``raw`` by ``pick(key)``, the key being the
    item's ``routing_key`` value as bytes (``traceID``: the 16 id bytes; ``service``: the
    UTF-8 service name; ``resource``: the encoded resource; ``metric``: the service name and
    the metric name; ``streamID``: resource, scope, metric name and the point's attributes).
    Returns ``{group: (encoded request, item count)}``; raises :class:`MalformedDataError`
    when the request cannot be read. An item without a trace id (a log record) is keyed by
    random bytes, as the Collector routes it to any backend."""
    if routing_key not in SUPPORTED[signal]:
        raise ValueError(f"routing_key {routing_key!r} is not supported for {signal}")
    try:
        if signal == Signal.METRICS:
            return _split_metrics(raw, routing_key, pick)
        return _split_spans_or_logs(signal, raw, routing_key, pick)
    except (ValueError, IndexError) as exc:
        if isinstance(exc, MalformedDataError):
            raise
        raise MalformedDataError(f"cannot read the {signal} request: {exc}") from exc


def _split_spans_or_logs(
    signal: Signal, raw: bytes, routing_key: str, pick: Callable[[bytes], K]
) -> dict[K, tuple[bytes, int]]:
    traces = signal == Signal.TRACES
    cls = _wire.ShallowTraces if traces else _wire.ShallowLogs
    groups_name, scopes_name, items_name = (
        ("resource_spans", "scope_spans", "spans")
        if traces
        else ("resource_logs", "scope_logs", "log_records")
    )
    request = _parse(cls, raw, signal)
    outs: dict[K, list[Any]] = {}  # group -> [request, count, last group ref, last scope ref]
    picked: dict[bytes, K] = {}  # the spans of a trace share their pick
    for group in getattr(request, groups_name):
        resource = group.resource
        group_key: K | None = None
        if routing_key == "service":
            group_key = pick(service_name(resource).encode())
        elif routing_key == "resource":
            group_key = pick(resource)
        for scope in getattr(group, scopes_name):
            items = getattr(scope, items_name)
            if group_key is not None:  # the whole scope goes one way
                out = outs.get(group_key)
                if out is None:
                    out = outs[group_key] = [cls(), 0, None, None, None, None]
                if out[2] is not group:
                    out[4] = getattr(out[0], groups_name).add(
                        resource=resource, schema_url=group.schema_url
                    )
                    out[2] = group
                scope_out = getattr(out[4], scopes_name).add(
                    scope=scope.scope, schema_url=scope.schema_url
                )
                getattr(scope_out, items_name).extend(items)
                out[3] = None
                out[1] += len(items)
                continue
            for item in items:
                if traces and item[:2] == b"\x0a\x10":
                    tid = item[2:18]
                else:
                    tid = span_trace_id(item) if traces else log_trace_id(item)
                if not tid:
                    label = pick(os.urandom(16))
                else:
                    hit = picked.get(tid)
                    if hit is None:
                        hit = picked[tid] = pick(tid)
                    label = hit
                out = outs.get(label)
                if out is None:
                    out = outs[label] = [cls(), 0, None, None, None, None]
                if out[2] is not group:
                    out[4] = getattr(out[0], groups_name).add(
                        resource=resource, schema_url=group.schema_url
                    )
                    out[2] = group
                    out[3] = None
                if out[3] is not scope:
                    out[5] = getattr(
                        getattr(out[4], scopes_name).add(
                            scope=scope.scope, schema_url=scope.schema_url
                        ),
                        items_name,
                    )
                    out[3] = scope
                out[5].append(item)
                out[1] += 1
    return {label: (out[0].SerializeToString(), out[1]) for label, out in outs.items()}


def _split_metrics(
    raw: bytes, routing_key: str, pick: Callable[[bytes], K]
) -> dict[K, tuple[bytes, int]]:
    request = _parse(_wire.ShallowMetrics, raw, Signal.METRICS)
    outs: dict[K, list[Any]] = {}

    def target(label: K, rm: Any, sm: Any) -> Any:
        out = outs.get(label)
        if out is None:
            out = outs[label] = [_wire.ShallowMetrics(), 0, None, None, None, None]
        if out[2] is not rm:
            out[4] = out[0].resource_metrics.add(resource=rm.resource, schema_url=rm.schema_url)
            out[2] = rm
            out[3] = None
        if out[3] is not sm:
            out[5] = out[4].scope_metrics.add(scope=sm.scope, schema_url=sm.schema_url)
            out[3] = sm
        return out

    for rm in request.resource_metrics:
        svc = service_name(rm.resource).encode()
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                npoints = _wire.metric_points(metric)
                if routing_key != "streamID":
                    if routing_key == "service":
                        key = svc
                    elif routing_key == "resource":
                        key = rm.resource
                    else:  # metric
                        key = svc + b"\x00" + metric.name
                    out = target(pick(key), rm, sm)
                    out[5].metrics.append(metric)
                    out[1] += npoints
                    continue
                kind = next((k for k in _wire.METRIC_KINDS if metric.HasField(k)), None)
                if kind is None:
                    out = target(pick(rm.resource + sm.scope + metric.name), rm, sm)
                    out[5].metrics.append(metric)
                    continue
                data = getattr(metric, kind)
                by_label: dict[K, list[bytes]] = {}
                prefix = b"\x00".join((rm.resource, sm.scope, metric.name, b""))
                for point in data.data_points:
                    label = pick(prefix + _point_attrs(kind, point))
                    by_label.setdefault(label, []).append(point)
                for label, points in by_label.items():
                    out = target(label, rm, sm)
                    part = out[5].metrics.add()
                    part.CopyFrom(metric)
                    pdata = getattr(part, kind)
                    pdata.ClearField("data_points")
                    pdata.data_points.extend(points)
                    out[1] += len(points)
    return {label: (out[0].SerializeToString(), out[1]) for label, out in outs.items()}
