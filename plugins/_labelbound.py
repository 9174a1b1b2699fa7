"""The bound on a metric label value, shared by everything that turns attributes into labels.

A label value longer than :data:`MAX_LABEL_VALUE_CHARS` characters is cut to that length:
a hostile 1 MiB ``service.name`` (or agent name, tool name, any resource or span attribute)
must not become a 1 MiB label (or resource attribute) in every flush of the aggregating
connectors (``plugins._metricsagg``) and every scrape or remote write of the Prometheus
exporters (``plugins.prometheusexporter.accumulator``). Each cut is counted in
``otelcol_label_values_truncated_total{kind, component}`` (:class:`CutCounter`) and logged,
rate-limited.

The module name starts with ``_``: it is not a plugin.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from pipeline.ratelimit import LogLimiter
from plugins._anyvalue import any_value_to_string

if TYPE_CHECKING:
    from pipeline.telemetry import SelfTelemetry

MAX_LABEL_VALUE_CHARS = 4096
"""Characters of a label value kept (the rest is cut off)."""

Attrs = tuple[tuple[str, Any], ...]

_LOG = logging.getLogger("pipeline.labelbound")
_CUT_LOG = LogLimiter()


def cut_attrs(attrs: Attrs) -> Attrs | None:
    """``attrs`` with its long string values cut to :data:`MAX_LABEL_VALUE_CHARS`; ``None`` if
    none is that long (the usual case: one pass, nothing built)."""
    if not any(isinstance(v, str) and len(v) > MAX_LABEL_VALUE_CHARS for _, v in attrs):
        return None
    return tuple(
        (
            k,
            v[:MAX_LABEL_VALUE_CHARS]
            if isinstance(v, str) and len(v) > MAX_LABEL_VALUE_CHARS
            else v,
        )
        for k, v in attrs
    )


def cut_labels(labels: dict[str, str]) -> int:
    """Cut, in place, every value of ``labels`` longer than the bound; returns how many."""
    n = 0
    for k, v in labels.items():
        if len(v) > MAX_LABEL_VALUE_CHARS:
            labels[k] = v[:MAX_LABEL_VALUE_CHARS]
            n += 1
    return n


def cut_resource(resource: Any) -> int:
    """Cut, in place, the attribute values of an OTLP ``Resource`` longer than the bound (the
    resource a connector exports with its series, whose ``service.name`` becomes ``job`` and
    the rest ``target_info`` labels); returns how many. Strings and bytes are cut to the bound;
    an array or a kvlist whose rendering as a label (compact JSON,
    :func:`plugins._anyvalue.any_value_to_string`, as ``target_info`` renders it) is longer
    becomes that rendering cut to the bound, a string: the label made of it downstream is the
    one the uncut value would have made, and a 1 MiB array or a deeply nested kvlist is not
    exported whole with every flush."""
    n = 0
    for kv in resource.attributes:
        value = kv.value
        which = value.WhichOneof("value")
        if which == "string_value":
            if len(value.string_value) > MAX_LABEL_VALUE_CHARS:
                value.string_value = value.string_value[:MAX_LABEL_VALUE_CHARS]
                n += 1
        elif which == "bytes_value":
            if len(value.bytes_value) > MAX_LABEL_VALUE_CHARS:
                value.bytes_value = value.bytes_value[:MAX_LABEL_VALUE_CHARS]
                n += 1
        elif which in ("array_value", "kvlist_value") and value.ByteSize() > _MIN_RENDERED:
            text = any_value_to_string(value)
            if len(text) > MAX_LABEL_VALUE_CHARS:
                value.string_value = text[:MAX_LABEL_VALUE_CHARS]  # (clears the array/kvlist)
                n += 1
    return n


# an array or kvlist encoded in at most this many bytes renders in fewer than
# MAX_LABEL_VALUE_CHARS characters, so it is not rendered: compact JSON takes at most 6
# characters per encoded byte (a "\u0000" of a 1-byte character; an empty element or key
# costs 2 bytes for "null," or '"":null,')
_MIN_RENDERED = MAX_LABEL_VALUE_CHARS // 12


def log_cut(where: str, n: int) -> None:
    """Log (rate-limited, one line a second per ``where``) that ``n`` values were cut."""
    _CUT_LOG.log(
        _LOG,
        logging.WARNING,
        "%s: %d label value(s) longer than %d characters cut to that length",
        where,
        n,
        MAX_LABEL_VALUE_CHARS,
        key=where,
    )


class CutCounter:
    """Counts (and logs) the label values a component cut:
    ``otelcol_label_values_truncated_total{kind, component}``."""

    def __init__(self, service: SelfTelemetry, kind: str, component: str) -> None:
        self.where = f"{kind} {component}"
        self.total = 0
        self._child = service.counter(
            "otelcol_label_values_truncated",
            f"Label values (attribute values that became metric labels or the resource "
            f"attributes of derived metrics) longer than {MAX_LABEL_VALUE_CHARS} characters, "
            f"cut to that length.",
            ("kind", "component"),
        ).labels(kind, component)

    def __call__(self, n: int, *, log: bool = True) -> None:
        """Count ``n`` values cut (and log it unless the caller logged it already)."""
        if n <= 0:
            return
        self.total += n
        self._child.inc(n)
        if log:
            log_cut(self.where, n)
