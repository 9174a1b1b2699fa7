"""OTTL contexts and their paths: what ``span.name`` or ``resource.attributes["k"]`` reads and
writes.

Contexts form chains (``resource`` > ``scope`` > ``span`` > ``spanevent``; ``... > metric >
datapoint``; ``... > log``); a statement runs once per item of its context and may read and
write the items above it. Spans and log records are :class:`~pipeline.ottl.views.LazyItem` s
(read from their view, decoded only when changed); resources and scopes are decoded once per
request when a path reads them; metrics and span events are decoded messages.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pipeline.ottl.values import (
    DictMap,
    OTTLRuntimeError,
    PMap,
    Time,
    is_map,
    is_slice,
    set_any,
    to_plain,
    type_name,
)

Getter = Callable[[Any], Any]
Setter = Callable[[Any, Any], None]

SIGNAL_CONTEXTS = {
    "traces": ("resource", "scope", "span", "spanevent"),
    "metrics": ("resource", "scope", "metric", "datapoint"),
    "logs": ("resource", "scope", "log"),
}
DEPTH = {"resource": 0, "scope": 1, "span": 2, "metric": 2, "log": 2, "spanevent": 3,
         "datapoint": 3}  # fmt: skip
ALIASES = {"instrumentation_scope": "scope"}


class Ctx:
    """What a statement runs on: the item and everything above it (one object per payload,
    its fields moved from item to item)."""

    __slots__ = ("cache", "event", "log", "metric", "point", "resource", "scope", "span")

    def __init__(self) -> None:
        self.resource: Any = None
        self.scope: Any = None
        self.span: Any = None
        self.event: Any = None
        self.log: Any = None
        self.metric: Any = None
        self.point: Any = None
        self.cache: DictMap | None = None


class Handle:
    """A resource or scope: decoded on first access (``raw`` bytes of the shallow view) or
    wrapping a decoded message; ``holder`` carries its ``schema_url``."""

    __slots__ = ("_msg", "holder", "message_class", "raw")

    def __init__(self, message_class: Any, raw: bytes | None, holder: Any, msg: Any = None) -> None:
        self.message_class = message_class
        self.raw = raw
        self._msg = msg
        self.holder = holder

    @property
    def msg(self) -> Any:
        if self._msg is None:
            self._msg = self.message_class.FromString(self.raw or b"")
        return self._msg

    def decoded(self) -> bool:
        return self._msg is not None

    def schema_url(self) -> str:
        value = self.holder.schema_url
        return value.decode() if isinstance(value, bytes) else str(value)

    def set_schema_url(self, value: str) -> None:
        current = self.holder.schema_url
        self.holder.schema_url = value.encode() if isinstance(current, bytes) else value


@dataclass
class Accessor:
    """A compiled path: its getter, its setter (``None``: read-only) and what it reads."""

    get: Getter
    set: Setter | None
    context: str
    text: str
    span_fields: builtins.set[str] = field(default_factory=builtins.set)


class PathError(ValueError):
    """A path that does not exist in its context."""


# -- keys ([...] indexes) -------------------------------------------------------------------------
def index_value(value: Any, keys: list[Getter], ctx: Any) -> Any:
    for key_getter in keys:
        key = key_getter(ctx)
        if value is None:
            return None
        if isinstance(key, str):
            if not is_map(value):
                raise OTTLRuntimeError(f"cannot index a {type_name(value)} with the key {key!r}")
            value = value.get(key)
        elif isinstance(key, int) and not isinstance(key, bool):
            if not is_slice(value):
                raise OTTLRuntimeError(f"cannot index a {type_name(value)} with {key}")
            if not 0 <= key < len(value):
                raise OTTLRuntimeError(f"index {key} out of bounds (length {len(value)})")
            value = value[key]
        else:
            raise OTTLRuntimeError(f"a key must be a string or an integer, got {type_name(key)}")
    return value


def set_indexed(slot: Any, keys: list[Any], value: Any) -> None:
    """Write ``value`` at ``keys`` below the ``AnyValue`` ``slot``, creating maps on the way
    (as pdata does for a missing key)."""
    for key in keys:
        if isinstance(key, str):
            if slot.WhichOneof("value") != "kvlist_value":
                if slot.WhichOneof("value") is not None:
                    raise OTTLRuntimeError(f"cannot set the key {key!r} in a non-map value")
                slot.kvlist_value.SetInParent()
            slot = PMap(slot.kvlist_value.values).value_slot(key)
        elif isinstance(key, int) and not isinstance(key, bool):
            if slot.WhichOneof("value") != "array_value":
                raise OTTLRuntimeError(f"cannot index a non-slice value with {key}")
            values = slot.array_value.values
            if not 0 <= key < len(values):
                raise OTTLRuntimeError(f"index {key} out of bounds (length {len(values)})")
            slot = values[key]
        else:
            raise OTTLRuntimeError(f"a key must be a string or an integer, got {type_name(key)}")
    set_any(slot, value)


def _map_accessor(
    get_map: Callable[[Any], Any],
    context: str,
    text: str,
    keys: list[Getter],
    const_keys: list[Any] | None,
    fast_get: Callable[[Any, str], Any] | None = None,
    fast_set: Callable[[Any, str, Any], None] | None = None,
    writable_map: Callable[[Any], Any] | None = None,
) -> Accessor:
    """Paths to a map (``attributes``, ``attributes["a"]["b"]``)."""
    writable = writable_map or get_map
    if not keys:

        def get(ctx: Any) -> Any:
            return get_map(ctx)

        def set_(ctx: Any, value: Any) -> None:
            if not is_map(value):
                raise OTTLRuntimeError(f"{text} must be set to a map, got {type_name(value)}")
            writable(ctx).replace_all(list(value.items()))

        return Accessor(get, set_, context, text)
    if const_keys is not None and len(const_keys) == 1 and isinstance(const_keys[0], str):
        key = const_keys[0]
        if fast_get is not None and fast_set is not None:
            fg, fs = fast_get, fast_set
            return Accessor(lambda ctx: fg(ctx, key), lambda ctx, v: fs(ctx, key, v), context, text)

        def get1(ctx: Any) -> Any:
            return get_map(ctx).get(key)

        def set1(ctx: Any, value: Any) -> None:
            writable(ctx).set(key, value)

        return Accessor(get1, set1, context, text)

    def get_n(ctx: Any) -> Any:
        return index_value(get_map(ctx), keys, ctx)

    def set_n(ctx: Any, value: Any) -> None:
        values = [k(ctx) for k in keys]
        first = values[0]
        if not isinstance(first, str):
            raise OTTLRuntimeError(f"a map key must be a string, got {type_name(first)}")
        target = writable(ctx)
        if isinstance(target, DictMap):
            current = target.data.get(first)
            if len(values) == 1:
                target.set(first, value)
                return
            if current is None:
                current = target.data[first] = {}
            _set_plain(current, values[1:], to_plain(value))
            return
        set_indexed(target.value_slot(first), values[1:], value)

    return Accessor(get_n, set_n, context, text)


def _set_plain(container: Any, keys: list[Any], value: Any) -> None:
    for key in keys[:-1]:
        container = container.setdefault(key, {}) if isinstance(container, dict) else container[key]
    container[keys[-1]] = value


def _value_accessor(get_value: Getter, set_value: Setter | None, context: str, text: str,
                    keys: list[Getter]) -> Accessor:  # fmt: skip
    """A field with ``[key]`` indexes into its value (``log.body["a"]``): read-only below."""
    if not keys:
        return Accessor(get_value, set_value, context, text)
    return Accessor(lambda ctx: index_value(get_value(ctx), keys, ctx), None, context, text)


# -- the fields of each context -------------------------------------------------------------------
SPAN_KINDS = ("Unspecified", "Internal", "Server", "Client", "Producer", "Consumer")
_TIME_FIELDS = {
    "start_time": "start_time_unix_nano",
    "end_time": "end_time_unix_nano",
    "time": "time_unix_nano",
    "observed_time": "observed_time_unix_nano",
}


def _check(value: Any, types: Any, text: str) -> Any:
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in _tuple(types)):
        raise OTTLRuntimeError(f"cannot set {text} to a {type_name(value)}")
    return value


def _tuple(types: Any) -> tuple[Any, ...]:
    return types if isinstance(types, tuple) else (types,)


def _id_accessor(obj: Callable[[Any], Any], writable: Callable[[Any], Any], name: str,
                 size: int, context: str, text: str, as_string: bool) -> Accessor:  # fmt: skip
    if as_string:

        def get_s(ctx: Any) -> Any:
            return bytes(getattr(obj(ctx), name)).hex()

        def set_s(ctx: Any, value: Any) -> None:
            _check(value, str, text)
            try:
                data = bytes.fromhex(value)
            except ValueError:
                raise OTTLRuntimeError(f"{text}: {value!r} is not hexadecimal") from None
            if len(data) != size:
                raise OTTLRuntimeError(f"{text} must be {size} bytes, got {len(data)}")
            setattr(writable(ctx), name, data)

        return Accessor(get_s, set_s, context, text)

    def get(ctx: Any) -> Any:
        return bytes(getattr(obj(ctx), name))

    def set_(ctx: Any, value: Any) -> None:
        _check(value, bytes, text)
        if len(value) not in (0, size):
            raise OTTLRuntimeError(f"{text} must be {size} bytes, got {len(value)}")
        setattr(writable(ctx), name, value)

    return Accessor(get, set_, context, text)


def _scalar(obj: Callable[[Any], Any], writable: Callable[[Any], Any], name: str,
            types: Any, context: str, text: str) -> Accessor:  # fmt: skip
    def get(ctx: Any) -> Any:
        return getattr(obj(ctx), name)

    def set_(ctx: Any, value: Any) -> None:
        if types is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        _check(value, types, text)
        try:
            setattr(writable(ctx), name, value)
        except ValueError as exc:  # out of range for the field
            raise OTTLRuntimeError(f"cannot set {text}: {exc}") from None

    return Accessor(get, set_, context, text)


def _time(obj: Callable[[Any], Any], writable: Callable[[Any], Any], name: str,
          context: str, text: str) -> Accessor:  # fmt: skip
    def get(ctx: Any) -> Any:
        return Time(getattr(obj(ctx), name))

    def set_(ctx: Any, value: Any) -> None:
        _check(value, Time, text)
        setattr(writable(ctx), name, value.ns)

    return Accessor(get, set_, context, text)


def _lazy_item_path(
    context: str, name: str, rest: list[str], keys: list[Getter], const_keys: list[Any] | None,
    text: str, slot: str,
) -> Accessor:  # fmt: skip
    """Paths of a span (``slot="span"``) or a log record (``"log"``): a ``LazyItem``."""

    def item(ctx: Any) -> Any:
        return getattr(ctx, slot)

    def src(ctx: Any) -> Any:
        return getattr(ctx, slot).src

    def full(ctx: Any) -> Any:
        return getattr(ctx, slot).materialize()

    if name == "attributes" and not rest:
        acc = _map_accessor(
            lambda ctx: getattr(ctx, slot).attributes(),
            context,
            text,
            keys,
            const_keys,
            fast_get=lambda ctx, k: getattr(ctx, slot).get_attr(k),
            fast_set=lambda ctx, k, v: getattr(ctx, slot).set_attr(k, v),
            writable_map=lambda ctx: PMap(getattr(ctx, slot).materialize().attributes),
        )
        return acc
    if keys and name not in ("body", "trace_state"):
        raise PathError(f"{text}: {context}.{name} cannot be indexed")
    if name in ("trace_id", "span_id", "parent_span_id") and rest in ([], ["string"]):
        size = 16 if name == "trace_id" else 8
        acc = _id_accessor(src, full, name, size, context, text, bool(rest))
        acc.span_fields.add(name)
        return acc
    if rest:
        if name == "status" and rest in (["code"], ["message"]):
            field_name = rest[0]
            types = int if field_name == "code" else str

            def get_status(ctx: Any) -> Any:
                return getattr(getattr(ctx, slot).src.status, field_name)

            def set_status(ctx: Any, value: Any) -> None:
                _check(value, types, text)
                setattr(getattr(ctx, slot).materialize().status, field_name, value)

            return Accessor(get_status, set_status, context, text, {"status"})
        if name == "kind" and rest in (["string"], ["deprecated_string"]):
            deprecated = rest == ["deprecated_string"]

            def get_kind(ctx: Any) -> Any:
                kind = getattr(ctx, slot).src.kind
                if not 0 <= kind < len(SPAN_KINDS):
                    return ""
                if deprecated:
                    return "SPAN_KIND_" + SPAN_KINDS[kind].upper()
                return SPAN_KINDS[kind]

            return Accessor(get_kind, None, context, text, {"kind"})
        if name == "body" and rest == ["string"]:
            from pipeline.ottl.values import as_string

            def set_body_string(ctx: Any, value: Any) -> None:
                _check(value, str, text)
                getattr(ctx, slot).materialize().body.string_value = value

            return Accessor(lambda ctx: as_string(getattr(ctx, slot).body()), set_body_string,
                            context, text)  # fmt: skip
        raise PathError(f"{text}: unknown path {context}.{'.'.join([name, *rest])}")
    if name in _TIME_FIELDS:
        acc = _time(src, full, _TIME_FIELDS[name], context, text)
        return acc
    if name == "body" and slot == "log":

        def set_body(ctx: Any, value: Any) -> None:
            set_any(getattr(ctx, slot).materialize().body, value)

        return _value_accessor(lambda ctx: getattr(ctx, slot).body(), set_body, context, text,
                               keys)  # fmt: skip
    if name == "trace_state" and slot == "span":
        if keys:

            def get_ts(ctx: Any) -> Any:
                key = keys[0](ctx)
                for part in getattr(ctx, slot).src.trace_state.split(","):
                    k, _, v = part.strip().partition("=")
                    if k == key:
                        return v
                return None

            def set_ts(ctx: Any, value: Any) -> None:
                key = keys[0](ctx)
                _check(value, str, text)
                span = getattr(ctx, slot).materialize()
                parts = [p.strip() for p in span.trace_state.split(",") if p.strip()]
                parts = [p for p in parts if p.partition("=")[0] != key]
                span.trace_state = ",".join([f"{key}={value}", *parts])

            return Accessor(get_ts, set_ts, context, text)
        return _scalar(src, full, "trace_state", str, context, text)
    if name == "status" and slot == "span":

        def get_status_map(ctx: Any) -> Any:
            status = getattr(ctx, slot).src.status
            return {"code": status.code, "message": status.message}

        return Accessor(get_status_map, None, context, text)
    if name in ("events", "links") and slot == "span":

        def get_list(ctx: Any) -> Any:
            span = getattr(ctx, slot).materialize()
            return list(getattr(span, name))

        return Accessor(get_list, None, context, text)
    scalars: dict[str, Any] = (
        {
            "name": str, "kind": int, "dropped_attributes_count": int,
            "dropped_events_count": int, "dropped_links_count": int, "flags": int,
            "start_time_unix_nano": int, "end_time_unix_nano": int,
        }
        if slot == "span"
        else {
            "severity_number": int, "severity_text": str, "dropped_attributes_count": int,
            "flags": int, "time_unix_nano": int, "observed_time_unix_nano": int,
            "event_name": str,
        }
    )  # fmt: skip
    if name in scalars:
        acc = _scalar(src, full, name, scalars[name], context, text)
        acc.span_fields.add(name)
        return acc
    if name in ("trace_id", "span_id", "parent_span_id"):
        raise PathError(f"{text}: unknown path {context}.{name}.{'.'.join(rest)}")
    raise PathError(f"{text}: {context} has no field {name!r}")


def _handle_path(context: str, name: str, rest: list[str], keys: list[Getter],
                 const_keys: list[Any] | None, text: str) -> Accessor:  # fmt: skip
    slot = context

    def handle(ctx: Any) -> Any:
        return getattr(ctx, slot)

    if rest:
        raise PathError(f"{text}: unknown path {context}.{'.'.join([name, *rest])}")
    if name == "attributes":
        return _map_accessor(lambda ctx: PMap(getattr(ctx, slot).msg.attributes), context,
                             text, keys, const_keys)  # fmt: skip
    if keys:
        raise PathError(f"{text}: {context}.{name} cannot be indexed")
    if name == "schema_url":

        def set_schema(ctx: Any, value: Any) -> None:
            _check(value, str, text)
            getattr(ctx, slot).set_schema_url(value)

        return Accessor(lambda ctx: getattr(ctx, slot).schema_url(), set_schema, context, text)
    fields: dict[str, Any] = {"dropped_attributes_count": int}
    if context == "scope":
        fields.update(name=str, version=str)
    if name in fields:
        return _scalar(lambda ctx: handle(ctx).msg, lambda ctx: handle(ctx).msg, name,
                       fields[name], context, text)  # fmt: skip
    raise PathError(f"{text}: {context} has no field {name!r}")


METRIC_TYPES = {None: 0, "gauge": 1, "sum": 2, "histogram": 3, "exponential_histogram": 4,
                "summary": 5}  # fmt: skip


def _metric_path(name: str, rest: list[str], keys: list[Getter], const_keys: list[Any] | None,
                 text: str) -> Accessor:  # fmt: skip
    if rest:
        raise PathError(f"{text}: unknown path metric.{'.'.join([name, *rest])}")
    if name == "metadata":
        return _map_accessor(lambda ctx: PMap(ctx.metric.metadata), "metric", text, keys,
                             const_keys)  # fmt: skip
    if keys:
        raise PathError(f"{text}: metric.{name} cannot be indexed")
    if name in ("name", "description", "unit"):
        return _scalar(lambda ctx: ctx.metric, lambda ctx: ctx.metric, name, str, "metric", text)
    if name == "type":
        return Accessor(lambda ctx: METRIC_TYPES[ctx.metric.WhichOneof("data")], None, "metric",
                        text)  # fmt: skip
    if name == "aggregation_temporality":

        def get_at(ctx: Any) -> Any:
            kind = ctx.metric.WhichOneof("data")
            if kind in ("sum", "histogram", "exponential_histogram"):
                return getattr(ctx.metric, kind).aggregation_temporality
            return 0

        def set_at(ctx: Any, value: Any) -> None:
            _check(value, int, text)
            kind = ctx.metric.WhichOneof("data")
            if kind in ("sum", "histogram", "exponential_histogram"):
                getattr(ctx.metric, kind).aggregation_temporality = value

        return Accessor(get_at, set_at, "metric", text)
    if name == "is_monotonic":

        def get_mono(ctx: Any) -> Any:
            return ctx.metric.sum.is_monotonic if ctx.metric.WhichOneof("data") == "sum" else False

        def set_mono(ctx: Any, value: Any) -> None:
            _check(value, bool, text)
            if ctx.metric.WhichOneof("data") == "sum":
                ctx.metric.sum.is_monotonic = value

        return Accessor(get_mono, set_mono, "metric", text)
    if name == "data_points":

        def get_points(ctx: Any) -> Any:
            kind = ctx.metric.WhichOneof("data")
            return [] if kind is None else list(getattr(ctx.metric, kind).data_points)

        return Accessor(get_points, None, "metric", text)
    raise PathError(f"{text}: metric has no field {name!r}")


_POINT_FIELDS: dict[str, Any] = {
    "start_time_unix_nano": int, "time_unix_nano": int, "flags": int, "count": int,
    "sum": float, "scale": int, "zero_count": int,
}  # fmt: skip


def _datapoint_path(name: str, rest: list[str], keys: list[Getter], const_keys: list[Any] | None,
                    text: str) -> Accessor:  # fmt: skip
    if rest:
        raise PathError(f"{text}: unknown path datapoint.{'.'.join([name, *rest])}")
    if name == "attributes":
        return _map_accessor(lambda ctx: PMap(ctx.point.attributes), "datapoint", text, keys,
                             const_keys)  # fmt: skip
    if keys:
        raise PathError(f"{text}: datapoint.{name} cannot be indexed")
    if name in ("start_time", "time"):
        return _time(lambda ctx: ctx.point, lambda ctx: ctx.point, _TIME_FIELDS[name],
                     "datapoint", text)  # fmt: skip
    if name in ("value_double", "value_int"):
        field_name = "as_double" if name == "value_double" else "as_int"
        types = float if name == "value_double" else int

        def get_v(ctx: Any) -> Any:
            point = ctx.point
            if point.DESCRIPTOR.name != "NumberDataPoint":
                return None
            return getattr(point, field_name)

        def set_v(ctx: Any, value: Any) -> None:
            if types is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            _check(value, types, text)
            if ctx.point.DESCRIPTOR.name == "NumberDataPoint":
                setattr(ctx.point, field_name, value)

        return Accessor(get_v, set_v, "datapoint", text)
    if name in ("bucket_counts", "explicit_bounds"):

        def get_list(ctx: Any) -> Any:
            point = ctx.point
            if name not in point.DESCRIPTOR.fields_by_name:
                return None
            return list(getattr(point, name))

        return Accessor(get_list, None, "datapoint", text)
    if name == "quantile_values":
        return Accessor(
            lambda ctx: (
                [{"quantile": q.quantile, "value": q.value} for q in ctx.point.quantile_values]
                if ctx.point.DESCRIPTOR.name == "SummaryDataPoint"
                else None
            ),
            None,
            "datapoint",
            text,
        )
    if name in _POINT_FIELDS:
        types = _POINT_FIELDS[name]

        def get_f(ctx: Any) -> Any:
            point = ctx.point
            if name not in point.DESCRIPTOR.fields_by_name:
                return None
            return getattr(point, name)

        def set_f(ctx: Any, value: Any) -> None:
            if types is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            _check(value, types, text)
            if name in ctx.point.DESCRIPTOR.fields_by_name:
                setattr(ctx.point, name, value)

        return Accessor(get_f, set_f, "datapoint", text)
    raise PathError(f"{text}: datapoint has no field {name!r}")


def _spanevent_path(name: str, rest: list[str], keys: list[Getter], const_keys: list[Any] | None,
                    text: str) -> Accessor:  # fmt: skip
    if rest:
        raise PathError(f"{text}: unknown path spanevent.{'.'.join([name, *rest])}")
    if name == "attributes":
        return _map_accessor(lambda ctx: PMap(ctx.event.attributes), "spanevent", text, keys,
                             const_keys)  # fmt: skip
    if keys:
        raise PathError(f"{text}: spanevent.{name} cannot be indexed")
    if name == "time":
        return _time(lambda ctx: ctx.event, lambda ctx: ctx.event, "time_unix_nano", "spanevent",
                     text)  # fmt: skip
    fields = {"name": str, "time_unix_nano": int, "dropped_attributes_count": int}
    if name in fields:
        return _scalar(lambda ctx: ctx.event, lambda ctx: ctx.event, name, fields[name],
                       "spanevent", text)  # fmt: skip
    raise PathError(f"{text}: spanevent has no field {name!r}")


def _cache_path(keys: list[Getter], const_keys: list[Any] | None, context: str,
                text: str) -> Accessor:  # fmt: skip
    def cache(ctx: Any) -> DictMap:
        if ctx.cache is None:
            ctx.cache = DictMap()
        return ctx.cache

    return _map_accessor(cache, context, text, keys, const_keys)


def resolve(
    context: str, fields: list[str], keys: list[Getter], const_keys: list[Any] | None, text: str
) -> Accessor:
    """The accessor of a path in ``context`` (``fields`` without the context prefix; ``keys``
    the ``[...]`` indexes of the last field)."""
    if not fields:
        raise PathError(f"{text}: a path needs a field after {context!r}")
    name, rest = fields[0], fields[1:]
    if name == "cache" and not rest:
        return _cache_path(keys, const_keys, context, text)
    if context in ("resource", "scope"):
        return _handle_path(context, name, rest, keys, const_keys, text)
    if context == "span":
        return _lazy_item_path(context, name, rest, keys, const_keys, text, "span")
    if context == "log":
        return _lazy_item_path(context, name, rest, keys, const_keys, text, "log")
    if context == "metric":
        return _metric_path(name, rest, keys, const_keys, text)
    if context == "datapoint":
        return _datapoint_path(name, rest, keys, const_keys, text)
    if context == "spanevent":
        return _spanevent_path(name, rest, keys, const_keys, text)
    raise PathError(f"{text}: unknown context {context!r}")


# -- enums -----------------------------------------------------------------------------------------
ENUMS: dict[str, int] = {
    "SPAN_KIND_UNSPECIFIED": 0, "SPAN_KIND_INTERNAL": 1, "SPAN_KIND_SERVER": 2,
    "SPAN_KIND_CLIENT": 3, "SPAN_KIND_PRODUCER": 4, "SPAN_KIND_CONSUMER": 5,
    "STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2,
    "AGGREGATION_TEMPORALITY_UNSPECIFIED": 0, "AGGREGATION_TEMPORALITY_DELTA": 1,
    "AGGREGATION_TEMPORALITY_CUMULATIVE": 2,
    "METRIC_DATA_TYPE_NONE": 0, "METRIC_DATA_TYPE_GAUGE": 1, "METRIC_DATA_TYPE_SUM": 2,
    "METRIC_DATA_TYPE_HISTOGRAM": 3, "METRIC_DATA_TYPE_EXPONENTIAL_HISTOGRAM": 4,
    "METRIC_DATA_TYPE_SUMMARY": 5,
    "FLAG_NONE": 0, "FLAG_NO_RECORDED_VALUE": 1,
    "SEVERITY_NUMBER_UNSPECIFIED": 0,
}  # fmt: skip
for _i, _name in enumerate(("TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL")):
    for _j, _suffix in enumerate(("", "2", "3", "4")):
        ENUMS[f"SEVERITY_NUMBER_{_name}{_suffix}"] = 1 + _i * 4 + _j
