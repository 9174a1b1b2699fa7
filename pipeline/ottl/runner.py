"""Running compiled OTTL on payloads: the loops over resources, scopes and items of each
context, error modes, dropping items, and rebuilding the encoded request.

Traces and logs stay encoded (:mod:`pipeline.ottl.views`): the request is parsed shallow (items
as bytes) and, only when a statement reads a span's (record's) own fields, as a view with those
fields (attributes left encoded); an item is decoded only when a statement changes it in a way
that cannot be appended. Resources and scopes are decoded when a path reads them. Metrics are
decoded (data points are small messages nested in metrics). The payload given is never changed:
a new one is built when something changed, so ``consume`` stays atomic.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from pipeline.ottl.compiler import Condition, Statement
from pipeline.ottl.contexts import Ctx, Handle
from pipeline.ottl.views import (
    LazyItem,
    LazyLog,
    LazySpan,
    joined,
    replace_occurrences,
    shallow_class,
    view_classes,
)
from pipeline.pdata import Logs, Metrics, Payload, Signal, Traces

ErrorMode = Literal["ignore", "silent", "propagate"]
ReportFn = Callable[[str, BaseException], None]
# errors of the data itself (corrupt encodings met while decoding lazily): never handled by
# error_mode; the engine's isolation drops the items that carry them
DATA_ERRORS = (DecodeError, UnicodeDecodeError, RecursionError)


@dataclass
class Group:
    """Statements run together on one context (a transform group)."""

    context: str
    statements: list[Statement]
    conditions: list[Condition]
    error_mode: ErrorMode

    @property
    def span_fields(self) -> set[str]:
        out: set[str] = set()
        for s in self.statements:
            out |= s.span_fields
        for c in self.conditions:
            out |= c.span_fields
        return out


@dataclass
class Filter:
    """Conditions that drop an item when any holds, per context."""

    context: str
    conditions: list[Condition]
    error_mode: ErrorMode


def run_statement(statement: Statement, ctx: Ctx, mode: ErrorMode, report: ReportFn) -> None:
    try:
        statement.run(ctx)
    except DATA_ERRORS:
        raise
    except Exception as exc:
        if mode == "propagate":
            raise
        if mode == "ignore":
            report(statement.text, exc)


def holds(
    conditions: Sequence[Condition],
    ctx: Ctx,
    mode: ErrorMode,
    report: ReportFn,
    item: LazyItem | None = None,
) -> bool:
    """Whether any condition holds (an erroring condition does not, unless propagated). With
    ``item`` (unchanged so far), a condition whose needles are not all in its bytes is false
    without being evaluated."""
    raw = item.raw if item is not None and item.full is None and not item.extra else None
    for condition in conditions:
        needles = condition.needles
        if raw is not None and needles is not None and not all(n in raw for n in needles):
            continue
        try:
            if condition.evaluate(ctx) is True:
                return True
        except DATA_ERRORS:
            raise
        except Exception as exc:
            if mode == "propagate":
                raise
            if mode == "ignore":
                report(condition.text, exc)
    return False


class _ScopeEntry:
    __slots__ = ("handle", "holder", "items", "kept", "raw_items", "view_items")

    def __init__(self, handle: Handle, holder: Any, raw_items: Any, view_items: Any) -> None:
        self.handle = handle
        self.holder = holder
        self.raw_items = raw_items
        self.view_items = view_items
        self.items: list[LazyItem] | None = None
        self.kept: list[bool] | None = None


class ItemBatch:
    """A traces or logs request, shallow-parsed, with lazy items."""

    def __init__(self, payload: Payload, view_fields: bool) -> None:
        self.signal = payload.signal
        data = payload.to_bytes()
        traces = self.signal is Signal.TRACES
        self.shallow = shallow_class(str(self.signal)).FromString(data)
        view = view_classes(str(self.signal))[0].FromString(data) if view_fields else None
        self.item_class: type[LazyItem] = LazySpan if traces else LazyLog
        groups, scopes, items = (
            ("resource_spans", "scope_spans", "spans")
            if traces
            else ("resource_logs", "scope_logs", "log_records")
        )
        self.resources: list[tuple[Handle, list[_ScopeEntry]]] = []
        view_groups = getattr(view, groups) if view is not None else None
        for i, group in enumerate(getattr(self.shallow, groups)):
            handle = Handle(Resource, joined(group.resource) if group.resource else b"", group)
            entries = []
            view_scopes = getattr(view_groups[i], scopes) if view_groups is not None else None
            for j, scope in enumerate(getattr(group, scopes)):
                view_items = getattr(view_scopes[j], items) if view_scopes is not None else None
                entries.append(
                    _ScopeEntry(
                        Handle(
                            InstrumentationScope, joined(scope.scope) if scope.scope else b"", scope
                        ),
                        scope,
                        getattr(scope, items),
                        view_items,
                    )
                )
            self.resources.append((handle, entries))
        self.dropped = 0
        self.changed = False  # items rewritten in place (raw_items) by a batch-wide edit

    def items(self, entry: _ScopeEntry) -> list[LazyItem]:
        if entry.items is None:
            cls = self.item_class
            if entry.view_items is not None:
                entry.items = [
                    cls(raw, view)
                    for raw, view in zip(entry.raw_items, entry.view_items, strict=True)
                ]
            else:
                entry.items = [cls(raw) for raw in entry.raw_items]
        return entry.items

    def each(self, context: str, ctx: Ctx) -> Any:
        """Point ``ctx`` at every item of ``context`` in turn (yields the item, or the
        ``(span, event index)`` for span events)."""
        slot = "span" if self.signal is Signal.TRACES else "log"
        for handle, entries in self.resources:
            ctx.resource = handle
            if context == "resource":
                ctx.scope = None
                ctx.cache = None
                yield handle
                continue
            for entry in entries:
                ctx.scope = entry.handle
                if context == "scope":
                    ctx.cache = None
                    yield entry
                    continue
                items = self.items(entry)
                kept = entry.kept
                for k, item in enumerate(items):
                    if kept is not None and not kept[k]:
                        continue
                    setattr(ctx, slot, item)
                    ctx.cache = None
                    if context == "spanevent":
                        if not item.src.events:
                            continue
                        span = item.materialize()
                        for index, event in enumerate(span.events):
                            ctx.event = event
                            yield (item, index)
                    else:
                        yield item

    def drop(self, entry: _ScopeEntry, index: int) -> None:
        if entry.kept is None:
            entry.kept = [True] * len(entry.raw_items)
        if entry.kept[index]:
            entry.kept[index] = False
            self.dropped += 1

    def entry_of(self) -> Any:
        for _, entries in self.resources:
            yield from entries

    def build(self, remove_empty: bool) -> tuple[Payload | None, int]:
        """The rebuilt payload (``None`` when nothing changed) and its item count."""
        changed = self.dropped > 0 or self.changed
        count = 0
        traces = self.signal is Signal.TRACES
        group_field, scope_field = (
            ("resource_spans", "scope_spans") if traces else ("resource_logs", "scope_logs")
        )
        groups = getattr(self.shallow, group_field)
        for (handle, entries), group in zip(self.resources, groups, strict=True):
            if handle.decoded():
                new = handle.msg.SerializeToString()
                if new != handle.raw:
                    replace_occurrences(group.resource, new)
                    changed = True
            for entry in entries:
                if entry.handle.decoded():
                    new = entry.handle.msg.SerializeToString()
                    if new != entry.handle.raw:
                        replace_occurrences(entry.holder.scope, new)
                        changed = True
                items = entry.items
                if items is None:
                    if entry.kept is None:
                        count += len(entry.raw_items)
                        continue
                    kept_raw = [r for k, r in enumerate(entry.raw_items) if entry.kept[k]]
                    count += len(kept_raw)
                    del entry.raw_items[:]
                    entry.raw_items.extend(kept_raw)
                    continue
                kept = entry.kept
                if kept is None and not any(item.changed() for item in items):
                    count += len(items)
                    continue
                new_items = [
                    item.encoded() if item.changed() else item.raw
                    for k, item in enumerate(items)
                    if kept is None or kept[k]
                ]
                changed = True
                count += len(new_items)
                del entry.raw_items[:]
                entry.raw_items.extend(new_items)
        if not changed:
            return None, count
        if remove_empty:
            for group in groups:
                scopes = getattr(group, scope_field)
                keep_scopes = [
                    s for s in scopes if len(getattr(s, "spans" if traces else "log_records"))
                ]
                if len(keep_scopes) != len(scopes):
                    copies = [type(s).FromString(s.SerializeToString()) for s in keep_scopes]
                    del scopes[:]
                    scopes.extend(copies)
            keep = [g for g in groups if len(getattr(g, scope_field))]
            if len(keep) != len(groups):
                copies = [type(g).FromString(g.SerializeToString()) for g in keep]
                del groups[:]
                groups.extend(copies)
        cls = Traces if traces else Logs
        return cls(self.shallow.SerializeToString(), item_count=count), count


class MetricBatch:
    """A metrics request, decoded (a copy: the payload given is not changed)."""

    def __init__(self, payload: Payload) -> None:
        self.request = ExportMetricsServiceRequest.FromString(payload.to_bytes())
        self.dropped = 0
        self.changed = False

    def each(self, context: str, ctx: Ctx) -> Any:
        for rm in self.request.resource_metrics:
            ctx.resource = Handle(Resource, None, rm, rm.resource)
            if context == "resource":
                ctx.cache = None
                yield rm
                continue
            for sm in rm.scope_metrics:
                ctx.scope = Handle(InstrumentationScope, None, sm, sm.scope)
                if context == "scope":
                    ctx.cache = None
                    yield sm
                    continue
                for metric in sm.metrics:
                    ctx.metric = metric
                    ctx.cache = None
                    if context == "metric":
                        yield metric
                        continue
                    kind = metric.WhichOneof("data")
                    if kind is None:
                        continue
                    for point in getattr(metric, kind).data_points:
                        ctx.point = point
                        ctx.cache = None
                        yield point

    def build(self) -> tuple[Payload, int]:
        payload = Metrics(self.request.SerializeToString())
        return payload, payload.item_count()


def _points(metric: Any) -> Any:
    kind = metric.WhichOneof("data")
    return None if kind is None else getattr(metric, kind).data_points


def append_constants(batch: ItemBatch, constants: list[tuple[str, Any]]) -> None:
    """``set(attributes[key], <literal>)`` on every item of the batch, as bytes: the encoded
    attribute is appended to each item that does not have the key (repeated fields concatenate
    on the wire); an item that has it goes through the lazy item (decoded and re-encoded)."""
    from pipeline.ottl.views import attribute_field, key_needle

    tag = batch.item_class.attributes_tag
    plan = [(key_needle(k), attribute_field(tag, k, v), k, v) for k, v in constants]
    cls = batch.item_class
    for entry in batch.entry_of():
        if entry.items is not None:
            for item in entry.items:
                for _, _, key, value in plan:
                    item.set_attr(key, value)
            continue
        out = []
        for raw in entry.raw_items:
            for needle, field_bytes, key, value in plan:
                if needle not in raw:
                    raw += field_bytes
                else:
                    item = cls(raw)
                    item.set_attr(key, value)
                    raw = item.encoded()
            out.append(raw)
        del entry.raw_items[:]
        entry.raw_items.extend(out)
        batch.changed = True


# -- transform ---------------------------------------------------------------------------------
def transform(payload: Payload, groups: Sequence[Group], report: ReportFn) -> Payload:
    """Run the groups in order over the payload; returns the new payload (or the same one when
    nothing changed)."""
    ctx = Ctx()
    if payload.signal is Signal.METRICS:
        batch = MetricBatch(payload)
        for group in groups:
            _run_group(batch.each(group.context, ctx), group, ctx, report)
        return batch.build()[0]
    need_view = any(g.context not in ("resource", "scope") and g.span_fields for g in groups)
    ibatch = ItemBatch(payload, need_view)
    for group in groups:
        constants = [s.constant_attribute for s in group.statements]
        if group.context in ("span", "log") and not group.conditions and all(constants):
            append_constants(ibatch, constants)  # type: ignore[arg-type]
            continue
        _run_group(ibatch.each(group.context, ctx), group, ctx, report)
    new, _ = ibatch.build(remove_empty=False)
    return payload if new is None else new


def _run_group(items: Any, group: Group, ctx: Ctx, report: ReportFn) -> None:
    mode = group.error_mode
    statements = group.statements
    conditions = group.conditions
    lazy = group.context in ("span", "log")
    for item in items:
        if conditions and not holds(conditions, ctx, mode, report, item if lazy else None):
            continue
        for statement in statements:
            needles = statement.needles
            if needles is not None and lazy and item.full is None and not item.extra:
                raw = item.raw
                if not all(n in raw for n in needles):
                    continue
            run_statement(statement, ctx, mode, report)


# -- filter -------------------------------------------------------------------------------------
def filter_payload(
    payload: Payload, filters: Sequence[Filter], report: ReportFn
) -> tuple[Payload | None, int]:
    """Drop every item a filter's conditions match; returns ``(payload or None when nothing is
    left, items dropped)``."""
    ctx = Ctx()
    if payload.signal is Signal.METRICS:
        return _filter_metrics(payload, filters, ctx, report)
    data = payload.to_bytes()
    # a condition whose needles are not all in the request holds for none of its items
    filters = [
        f
        for f in filters
        if f.context not in ("span", "log")
        or any(c.needles is None or all(n in data for n in c.needles) for c in f.conditions)
    ]
    if not filters:
        return payload, 0
    # with needles for every condition, only the items holding them are read (each parsed
    # alone): no view of the whole request
    prefiltered = all(
        c.needles is not None for f in filters if f.context in ("span", "log") for c in f.conditions
    )
    need_view = not prefiltered and any(
        f.context not in ("resource", "scope") and _fields(f) for f in filters
    )
    batch = ItemBatch(payload, need_view)
    slot = "span" if batch.signal is Signal.TRACES else "log"
    for flt in filters:
        if flt.context == "spanevent":
            _drop_events(batch, flt, ctx, report)
            continue
        needle_sets = [c.needles for c in flt.conditions]
        use_needles = all(nd is not None for nd in needle_sets)
        single = (
            next(iter(needle_sets[0]))  # type: ignore[arg-type]
            if use_needles and len(needle_sets) == 1 and len(needle_sets[0]) == 1  # type: ignore[arg-type]
            else None
        )
        for handle, entries in batch.resources:
            ctx.resource = handle
            for entry in entries:
                ctx.scope = entry.handle
                if entry.items is None and use_needles:
                    kept = entry.kept
                    for k, raw in enumerate(list(entry.raw_items)):
                        if kept is not None and not kept[k]:
                            continue
                        if single is not None:
                            if single not in raw:
                                continue
                        elif not any(
                            all(n in raw for n in nd)  # type: ignore[union-attr]
                            for nd in needle_sets
                        ):
                            continue
                        view = entry.view_items[k] if entry.view_items is not None else None
                        item = batch.item_class(raw, view)
                        setattr(ctx, slot, item)
                        ctx.cache = None
                        if holds(flt.conditions, ctx, flt.error_mode, report, item):
                            batch.drop(entry, k)
                            kept = entry.kept
                    continue
                items = batch.items(entry)
                for k, item in enumerate(items):
                    if entry.kept is not None and not entry.kept[k]:
                        continue
                    setattr(ctx, slot, item)
                    ctx.cache = None
                    if holds(flt.conditions, ctx, flt.error_mode, report, item):
                        batch.drop(entry, k)
    new, count = batch.build(remove_empty=True)
    if new is None:
        return payload, 0
    return (new if count else None), batch.dropped


def _fields(flt: Filter) -> set[str]:
    out: set[str] = set()
    for c in flt.conditions:
        out |= c.span_fields
    return out


def _drop_events(batch: ItemBatch, flt: Filter, ctx: Ctx, report: ReportFn) -> None:
    for handle, entries in batch.resources:
        ctx.resource = handle
        for entry in entries:
            ctx.scope = entry.handle
            for k, item in enumerate(batch.items(entry)):
                if entry.kept is not None and not entry.kept[k]:
                    continue
                if not item.src.events:
                    continue
                ctx.span = item
                span = item.materialize()
                keep = []
                for event in span.events:
                    ctx.event = event
                    ctx.cache = None
                    if not holds(flt.conditions, ctx, flt.error_mode, report):
                        keep.append(event.SerializeToString())
                if len(keep) != len(span.events):
                    from opentelemetry.proto.trace.v1.trace_pb2 import Span

                    del span.events[:]
                    for data in keep:
                        span.events.add().MergeFrom(Span.Event.FromString(data))


def _filter_metrics(
    payload: Payload, filters: Sequence[Filter], ctx: Ctx, report: ReportFn
) -> tuple[Payload | None, int]:
    batch = MetricBatch(payload)
    before = payload.item_count()
    changed = False
    for flt in filters:
        for rm in batch.request.resource_metrics:
            ctx.resource = Handle(Resource, None, rm, rm.resource)
            for sm in rm.scope_metrics:
                ctx.scope = Handle(InstrumentationScope, None, sm, sm.scope)
                keep_metrics = []
                for metric in sm.metrics:
                    ctx.metric = metric
                    ctx.cache = None
                    if flt.context == "metric":
                        if holds(flt.conditions, ctx, flt.error_mode, report):
                            changed = True
                            continue
                        keep_metrics.append(metric)
                        continue
                    points = _points(metric)
                    if points is None:
                        keep_metrics.append(metric)
                        continue
                    kept = []
                    for point in points:
                        ctx.point = point
                        ctx.cache = None
                        if not holds(flt.conditions, ctx, flt.error_mode, report):
                            kept.append(point.SerializeToString())
                    if len(kept) != len(points):
                        changed = True
                        point_class = type(points[0])
                        del points[:]
                        for data in kept:
                            points.add().MergeFrom(point_class.FromString(data))
                    if kept:
                        keep_metrics.append(metric)
                if len(keep_metrics) != len(sm.metrics):
                    changed = True
                    copies = [type(m).FromString(m.SerializeToString()) for m in keep_metrics]
                    del sm.metrics[:]
                    sm.metrics.extend(copies)
            keep_scopes = [sm for sm in rm.scope_metrics if len(sm.metrics)]
            if len(keep_scopes) != len(rm.scope_metrics):
                copies_s = [type(s).FromString(s.SerializeToString()) for s in keep_scopes]
                del rm.scope_metrics[:]
                rm.scope_metrics.extend(copies_s)
        keep_rm = [rm for rm in batch.request.resource_metrics if len(rm.scope_metrics)]
        if len(keep_rm) != len(batch.request.resource_metrics):
            copies_r = [type(r).FromString(r.SerializeToString()) for r in keep_rm]
            del batch.request.resource_metrics[:]
            batch.request.resource_metrics.extend(copies_r)
    if not changed:
        return payload, 0
    new, count = batch.build()
    return (new if count or len(batch.request.resource_metrics) else None), max(before - count, 0)


def error_reporter(logger_call: Callable[..., object]) -> ReportFn:
    def report(text: str, exc: BaseException) -> None:
        logger_call(
            logging.WARNING,
            "failed to execute OTTL %r: %s",
            text,
            exc,
            key=f"ottl/{text}",
        )

    return report


_GROUPS = {
    Signal.TRACES: "resource_spans",
    Signal.METRICS: "resource_metrics",
    Signal.LOGS: "resource_logs",
}


def rewrite_resources(payload: Payload, apply: Callable[[Any], None]) -> Payload:
    """Call ``apply(attributes)`` on every resource's attributes (a map) of any signal, decoding
    the resources only: spans, data points and log records pass as bytes. Returns the payload
    itself when no resource changed."""
    from pipeline.ottl.values import PMap

    field_name = _GROUPS[payload.signal]
    shallow = shallow_class(str(payload.signal)).FromString(payload.to_bytes())
    changed = False
    for group in getattr(shallow, field_name):
        raw = joined(group.resource) if group.resource else b""
        resource = Resource.FromString(raw)
        apply(PMap(resource.attributes))
        encoded = resource.SerializeToString()
        if encoded != raw:
            replace_occurrences(group.resource, encoded)
            changed = True
    if not changed:
        return payload
    return type(payload)(shallow.SerializeToString(), item_count=payload.item_count())
