"""OpenTelemetry (OTLP) <-> Jaeger Thrift, as the OpenTelemetry specification
(``trace/sdk_exporters/jaeger.md`` and the non-OTLP rules) and the Collector's
``pkg/translator/jaeger`` define it.

OTLP -> Jaeger (the exporter):

* one ``Batch`` per ``ResourceSpans``; ``service.name`` becomes ``Process.serviceName``
  (``unknown_service``, the SDKs' default, when absent), the other resource attributes
  become process tags;
* trace ids split into high/low signed 64-bit halves, span ids into signed 64-bit integers;
  times in microseconds;
* the parent becomes the first reference (CHILD_OF, and ``parentSpanId``); links become
  FOLLOWS_FROM references (their attributes have no place in Jaeger and are not sent);
* span tags: ``otel.scope.name`` / ``otel.scope.version`` (and their deprecated aliases
  ``otel.library.name`` / ``otel.library.version``), the attributes, ``span.kind``
  (``client``/``server``/``producer``/``consumer``; none for INTERNAL or UNSPECIFIED, as the
  specification says), ``otel.status_code`` (``OK``/``ERROR``), ``error=true`` for ERROR,
  ``otel.status_description``, ``w3c.tracestate``, and ``otel.dropped_attributes_count`` /
  ``otel.dropped_events_count`` / ``otel.dropped_links_count`` when not zero;
* events become logs: the name in the ``event`` field, the attributes, and
  ``otel.event.dropped_attributes_count`` when not zero;
* attribute values: string, bool, int (LONG), double, bytes (BINARY); arrays and maps as
  JSON strings.

Jaeger -> OTLP (the receiver) is the inverse, as the Collector's ``jaegerthrift_to_traces``:
the process becomes the resource (``hostname`` also as ``host.name``), ``span.kind`` the
kind, ``error``/``otel.status_code``/``otel.status_description`` the status, logs events
(``event`` field -> name), references other than the parent links (with
``opentracing.ref_type``), ``otel.scope.*`` (or ``otel.library.*``) tags the scope, and the
dropped-count tags the dropped counts.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Iterable
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, Span, Status

from plugins._jaegerthrift import model
from plugins._jaegerthrift.model import Batch, Log, Process, SpanRef, SpanRefType, Tag, TagType

# The specification: "from the default Resource" when absent (the SDKs' default service name).
NO_SERVICE_NAME = "unknown_service"

# Tag keys.
SPAN_KIND = "span.kind"
STATUS_CODE = "otel.status_code"
STATUS_DESCRIPTION = "otel.status_description"
ERROR = "error"
SCOPE_NAME = "otel.scope.name"
SCOPE_VERSION = "otel.scope.version"
LIBRARY_NAME = "otel.library.name"  # older exporters wrote these
LIBRARY_VERSION = "otel.library.version"
TRACE_STATE = "w3c.tracestate"
DROPPED_ATTRIBUTES = "otel.dropped_attributes_count"
DROPPED_EVENTS = "otel.dropped_events_count"
DROPPED_LINKS = "otel.dropped_links_count"
EVENT_NAME = "event"
EVENT_DROPPED_ATTRIBUTES = "otel.event.dropped_attributes_count"
REF_TYPE = "opentracing.ref_type"
SERVICE_NAME = "service.name"

_KIND_TO_TAG = {
    Span.SPAN_KIND_CLIENT: "client",
    Span.SPAN_KIND_SERVER: "server",
    Span.SPAN_KIND_PRODUCER: "producer",
    Span.SPAN_KIND_CONSUMER: "consumer",
}
_TAG_TO_KIND = {v: k for k, v in _KIND_TO_TAG.items()} | {"internal": Span.SPAN_KIND_INTERNAL}

SAMPLED_FLAG = 1

_I64 = 1 << 64


# -- ids ------------------------------------------------------------------------------------
def trace_id_to_jaeger(trace_id: bytes) -> tuple[int, int]:
    """``(high, low)`` signed 64-bit halves of a 16-byte trace id."""
    tid = trace_id.rjust(16, b"\0")[-16:]
    return (
        int.from_bytes(tid[:8], "big", signed=True),
        int.from_bytes(tid[8:], "big", signed=True),
    )


def span_id_to_jaeger(span_id: bytes) -> int:
    return int.from_bytes(span_id.rjust(8, b"\0")[-8:], "big", signed=True)


def trace_id_from_jaeger(high: int, low: int) -> bytes:
    return (high % _I64).to_bytes(8, "big") + (low % _I64).to_bytes(8, "big")


def span_id_from_jaeger(span_id: int) -> bytes:
    return (span_id % _I64).to_bytes(8, "big")


_MAX_MICROS = (_I64 - 1) // 1000


def _nanos(micros: int | None) -> int:
    """Microseconds to nanoseconds, kept within OTLP's unsigned 64-bit range."""
    return min(max(micros or 0, 0), _MAX_MICROS) * 1000


# -- values ---------------------------------------------------------------------------------
def _json_value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_json_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _json_value(kv.value) for kv in v.kvlist_value.values}
    if kind == "bytes_value":
        return base64.b64encode(v.bytes_value).decode()
    if kind == "double_value" and not math.isfinite(v.double_value):
        return str(v.double_value)
    if kind is None:
        return None
    return getattr(v, kind)


def value_to_tag(key: str, v: AnyValue) -> Tag:
    """An attribute as a Jaeger tag."""
    kind = v.WhichOneof("value")
    if kind == "string_value":
        return Tag(key=key, vType=TagType.STRING, vStr=v.string_value)
    if kind == "int_value":
        return Tag(key=key, vType=TagType.LONG, vLong=v.int_value)
    if kind == "bool_value":
        return Tag(key=key, vType=TagType.BOOL, vBool=v.bool_value)
    if kind == "double_value":
        return Tag(key=key, vType=TagType.DOUBLE, vDouble=v.double_value)
    if kind == "bytes_value":
        return Tag(key=key, vType=TagType.BINARY, vBinary=v.bytes_value)
    if kind is None:
        return Tag(key=key, vType=TagType.STRING, vStr="")
    text = json.dumps(_json_value(v), separators=(",", ":"), ensure_ascii=False)
    return Tag(key=key, vType=TagType.STRING, vStr=text)


def _str_tag(key: str, value: str) -> Tag:
    return Tag(key=key, vType=TagType.STRING, vStr=value)


def _long_tag(key: str, value: int) -> Tag:
    return Tag(key=key, vType=TagType.LONG, vLong=value)


def _tags(attributes: Iterable[KeyValue], skip: str | None = None) -> list[Tag]:
    return [value_to_tag(kv.key, kv.value) for kv in attributes if kv.key != skip]


# -- OTLP -> Jaeger ---------------------------------------------------------------------------
def resource_to_process(rs: ResourceSpans) -> Process:
    service_name = NO_SERVICE_NAME
    for kv in rs.resource.attributes:
        if kv.key == SERVICE_NAME:
            v = kv.value
            service_name = (
                v.string_value if v.WhichOneof("value") == "string_value" else str(_json_value(v))
            )
            break
    return Process(serviceName=service_name, tags=_tags(rs.resource.attributes, SERVICE_NAME))


def span_to_jaeger(span: Span, scope_tags: list[Tag]) -> model.Span:
    """One OTLP span as a Jaeger span (``scope_tags`` are added first)."""
    high, low = trace_id_to_jaeger(span.trace_id)
    refs: list[SpanRef] = []
    parent = 0
    if span.parent_span_id and any(span.parent_span_id):
        parent = span_id_to_jaeger(span.parent_span_id)
        refs.append(
            SpanRef(refType=SpanRefType.CHILD_OF, traceIdHigh=high, traceIdLow=low, spanId=parent)
        )
    for link in span.links:
        lhigh, llow = trace_id_to_jaeger(link.trace_id)
        refs.append(
            SpanRef(
                refType=SpanRefType.FOLLOWS_FROM,
                traceIdHigh=lhigh,
                traceIdLow=llow,
                spanId=span_id_to_jaeger(link.span_id),
            )
        )

    tags = list(scope_tags)
    is_error = span.status.code == Status.STATUS_CODE_ERROR
    # The error tag added for an ERROR status overrides an attribute of that name.
    tags.extend(_tags(span.attributes, ERROR if is_error else None))
    kind = _KIND_TO_TAG.get(span.kind)
    if kind is not None:
        tags.append(_str_tag(SPAN_KIND, kind))
    code = span.status.code
    if code == Status.STATUS_CODE_OK:
        tags.append(_str_tag(STATUS_CODE, "OK"))
    elif is_error:
        tags.append(_str_tag(STATUS_CODE, "ERROR"))
        tags.append(Tag(key=ERROR, vType=TagType.BOOL, vBool=True))
    if span.status.message:
        tags.append(_str_tag(STATUS_DESCRIPTION, span.status.message))
    if span.trace_state:
        tags.append(_str_tag(TRACE_STATE, span.trace_state))
    if span.dropped_attributes_count:
        tags.append(_long_tag(DROPPED_ATTRIBUTES, span.dropped_attributes_count))
    if span.dropped_events_count:
        tags.append(_long_tag(DROPPED_EVENTS, span.dropped_events_count))
    if span.dropped_links_count:
        tags.append(_long_tag(DROPPED_LINKS, span.dropped_links_count))

    logs = []
    for ev in span.events:
        fields = _tags(ev.attributes)
        # An attribute named "event" takes precedence over the event's name.
        if ev.name and not any(kv.key == EVENT_NAME for kv in ev.attributes):
            fields.insert(0, _str_tag(EVENT_NAME, ev.name))
        if ev.dropped_attributes_count:
            fields.append(_long_tag(EVENT_DROPPED_ATTRIBUTES, ev.dropped_attributes_count))
        logs.append(Log(timestamp=ev.time_unix_nano // 1000, fields=fields))

    start = span.start_time_unix_nano
    end = max(span.end_time_unix_nano, start)
    return model.Span(
        traceIdLow=low,
        traceIdHigh=high,
        spanId=span_id_to_jaeger(span.span_id),
        parentSpanId=parent,
        operationName=span.name,
        references=refs or None,
        flags=SAMPLED_FLAG,
        startTime=start // 1000,
        duration=end // 1000 - start // 1000,
        tags=tags or None,
        logs=logs or None,
    )


def scope_tags(scope: Any) -> list[Tag]:
    """``otel.scope.name`` / ``otel.scope.version``, and the deprecated aliases
    ``otel.library.*`` that the specification says MUST also be reported."""
    tags = []
    if scope.name:
        tags.append(_str_tag(SCOPE_NAME, scope.name))
        tags.append(_str_tag(LIBRARY_NAME, scope.name))
    if scope.version:
        tags.append(_str_tag(SCOPE_VERSION, scope.version))
        tags.append(_str_tag(LIBRARY_VERSION, scope.version))
    return tags


def traces_to_batches(request: ExportTraceServiceRequest) -> list[Batch]:
    """One Jaeger ``Batch`` per ``ResourceSpans`` that holds spans."""
    batches = []
    for rs in request.resource_spans:
        spans = [
            span_to_jaeger(span, tags)
            for ss in rs.scope_spans
            for tags in (scope_tags(ss.scope),)
            for span in ss.spans
        ]
        if spans:
            batches.append(Batch(process=resource_to_process(rs), spans=spans))
    return batches


# -- Jaeger -> OTLP ---------------------------------------------------------------------------
def _set_value(dest: AnyValue, tag: Tag) -> None:
    t = tag.vType
    if t == TagType.STRING:
        dest.string_value = tag.vStr or ""
    elif t == TagType.BOOL:
        dest.bool_value = bool(tag.vBool)
    elif t == TagType.LONG:
        dest.int_value = tag.vLong or 0
    elif t == TagType.DOUBLE:
        dest.double_value = tag.vDouble or 0.0
    elif t == TagType.BINARY:
        dest.bytes_value = tag.vBinary or b""
    else:
        dest.string_value = f"<Unknown Jaeger TagType {t}>"


def _put_tags(dest: Any, tags: Iterable[Tag]) -> None:
    for tag in tags:
        kv = dest.add(key=tag.key)
        _set_value(kv.value, tag)


def _tag_str(tag: Tag) -> str:
    if tag.vType == TagType.STRING:
        return tag.vStr or ""
    if tag.vType == TagType.BOOL:
        return "true" if tag.vBool else "false"
    if tag.vType == TagType.LONG:
        return str(tag.vLong)
    if tag.vType == TagType.DOUBLE:
        return repr(tag.vDouble)
    return ""


def _tag_int(tag: Tag) -> int | None:
    if tag.vType == TagType.LONG:
        return tag.vLong
    if tag.vType == TagType.STRING and (tag.vStr or "").isdigit():
        return int(tag.vStr or "0")
    return None


def _parent_id(span: model.Span) -> int:
    """The parent: ``parentSpanId``, else the first CHILD_OF (then FOLLOWS_FROM) reference
    in the same trace, as Jaeger's own model does."""
    if span.parentSpanId:
        return span.parentSpanId
    follows = 0
    for ref in span.references or ():
        if ref.traceIdHigh != span.traceIdHigh or ref.traceIdLow != span.traceIdLow:
            continue
        if ref.refType == SpanRefType.CHILD_OF:
            return ref.spanId
        if not follows and ref.refType == SpanRefType.FOLLOWS_FROM:
            follows = ref.spanId
    return follows


_SPECIAL_SPAN_TAGS = {
    SPAN_KIND,
    STATUS_CODE,
    STATUS_DESCRIPTION,
    SCOPE_NAME,
    SCOPE_VERSION,
    LIBRARY_NAME,
    LIBRARY_VERSION,
    TRACE_STATE,
    DROPPED_ATTRIBUTES,
    DROPPED_EVENTS,
    DROPPED_LINKS,
}


def _span_from_jaeger(span: model.Span, dest: Span) -> None:
    dest.trace_id = trace_id_from_jaeger(span.traceIdHigh, span.traceIdLow)
    dest.span_id = span_id_from_jaeger(span.spanId)
    dest.name = span.operationName
    start = _nanos(span.startTime)
    dest.start_time_unix_nano = start
    dest.end_time_unix_nano = min(start + _nanos(span.duration), _MAX_MICROS * 1000)
    parent = _parent_id(span)
    if parent:
        dest.parent_span_id = span_id_from_jaeger(parent)

    special: dict[str, Tag] = {}
    error_tag: Tag | None = None
    for tag in span.tags or ():
        if tag.key in _SPECIAL_SPAN_TAGS:
            special[tag.key] = tag
        elif tag.key == ERROR and error_tag is None:
            error_tag = tag
        else:
            _set_value(dest.attributes.add(key=tag.key).value, tag)

    if SPAN_KIND in special:
        dest.kind = _TAG_TO_KIND.get(
            _tag_str(special[SPAN_KIND]).lower(), Span.SPAN_KIND_UNSPECIFIED
        )
    # Status: the error tag is the final word; otherwise otel.status_code (as the Collector).
    is_error = error_tag is not None and (
        (error_tag.vType == TagType.BOOL and bool(error_tag.vBool))
        or (error_tag.vType == TagType.STRING and (error_tag.vStr or "").lower() == "true")
    )
    description = _tag_str(special[STATUS_DESCRIPTION]) if STATUS_DESCRIPTION in special else ""
    if is_error:
        dest.status.code = Status.STATUS_CODE_ERROR
        dest.status.message = description
    elif STATUS_CODE in special:
        code = _tag_str(special[STATUS_CODE]).upper()
        dest.status.code = {"OK": Status.STATUS_CODE_OK, "ERROR": Status.STATUS_CODE_ERROR}.get(
            code, Status.STATUS_CODE_UNSET
        )
        dest.status.message = description
    elif STATUS_DESCRIPTION in special:
        _set_value(dest.attributes.add(key=STATUS_DESCRIPTION).value, special[STATUS_DESCRIPTION])
    if error_tag is not None and not is_error:
        _set_value(dest.attributes.add(key=ERROR).value, error_tag)
    if TRACE_STATE in special:
        dest.trace_state = _tag_str(special[TRACE_STATE])
    for key, field in (
        (DROPPED_ATTRIBUTES, "dropped_attributes_count"),
        (DROPPED_EVENTS, "dropped_events_count"),
        (DROPPED_LINKS, "dropped_links_count"),
    ):
        if key in special:
            n = _tag_int(special[key])
            if n is not None and 0 <= n < 2**32:
                setattr(dest, field, n)
            else:
                _set_value(dest.attributes.add(key=key).value, special[key])

    for log in span.logs or ():
        ev = dest.events.add(time_unix_nano=_nanos(log.timestamp))
        for tag in log.fields or ():
            if tag.key == EVENT_NAME and not ev.name and tag.vType == TagType.STRING:
                ev.name = tag.vStr or ""
            elif tag.key == EVENT_DROPPED_ATTRIBUTES and 0 <= (_tag_int(tag) or -1) < 2**32:
                ev.dropped_attributes_count = _tag_int(tag) or 0
            else:
                _set_value(ev.attributes.add(key=tag.key).value, tag)

    for ref in span.references or ():
        if ref.spanId == parent and ref.refType == SpanRefType.CHILD_OF:
            continue
        link = dest.links.add(
            trace_id=trace_id_from_jaeger(ref.traceIdHigh, ref.traceIdLow),
            span_id=span_id_from_jaeger(ref.spanId),
        )
        kv = link.attributes.add(key=REF_TYPE)
        kv.value.string_value = (
            "child_of" if ref.refType == SpanRefType.CHILD_OF else "follows_from"
        )


def _scope_of(span: model.Span) -> tuple[str, str]:
    name = version = ""
    for tag in span.tags or ():
        if tag.key in (SCOPE_NAME, LIBRARY_NAME) and not name:
            name = _tag_str(tag)
        elif tag.key in (SCOPE_VERSION, LIBRARY_VERSION) and not version:
            version = _tag_str(tag)
    return name, version


def batch_to_resource_spans(batch: Batch, dest: ResourceSpans) -> int:
    """Fill ``dest`` from a Jaeger batch; returns the number of spans."""
    process = batch.process
    attrs = dest.resource.attributes
    if process is not None:
        if process.serviceName:
            attrs.add(key=SERVICE_NAME).value.string_value = process.serviceName
        tags = process.tags or []
        _put_tags(attrs, tags)
        keys = {t.key for t in tags}
        if "hostname" in keys and "host.name" not in keys:
            host = next(t for t in tags if t.key == "hostname")
            _set_value(attrs.add(key="host.name").value, host)
    scopes: dict[tuple[str, str], Any] = {}
    n = 0
    for span in batch.spans or ():
        scope = _scope_of(span)
        ss = scopes.get(scope)
        if ss is None:
            ss = dest.scope_spans.add()
            ss.scope.name, ss.scope.version = scope
            scopes[scope] = ss
        _span_from_jaeger(span, ss.spans.add())
        n += 1
    return n


def batch_to_request(batch: Batch) -> tuple[ExportTraceServiceRequest, int]:
    """A Jaeger batch as an OTLP request, and its span count."""
    request = ExportTraceServiceRequest()
    n = batch_to_resource_spans(batch, request.resource_spans.add())
    return request, n
