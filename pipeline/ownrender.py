"""The gateway's own metrics (``otelcol_*``) of a ``--workers`` gateway, merged and written by
the primary at each scrape from every worker's *share*: byte for byte what
``pipeline.workers.merge_families(gauges="sum")`` and ``prometheus_client``'s
``generate_latest`` (the 0.0.4 text format, the only one the endpoint serves) write for the
workers' ``registry.collect()``, at a fraction of the cost.

A worker sends its share (:meth:`Shares.share`): its *layout*, per family its name, type and
header lines and per sample its line up to the value (the escaped name and sorted, escaped
labels), which part of the family's text the line goes to (its own lines, or the
``_created`` / ``_gsum`` / ``_gcount`` gauge ``generate_latest`` writes after them) and how
it merges (added, the largest, the smallest, the first worker's); then the values, in the
layout's order. The lines are kept per sample and the layout pickled once while no series
comes or goes: a scrape pickles the same bytes and a list of floats. The primary
(:class:`Renderer`) unpickles a layout once (kept by its name: the worker's token and a
version), adds up the values of the lines several workers hold and writes every line (a
line whose value did not change is the same text): no ``Metric`` / ``Sample`` pickled,
unpickled, merged and written again.

What a share cannot say is left to the old path (:func:`render` returns ``None``): a sample
with a timestamp, a label name or sample name the writer would escape (two could then write
the same line), one family name with two types.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterable
from typing import Any

from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.exposition import (
    UNDERSCORES,
    escape_label_name,
    escape_metric_name,
)
from prometheus_client.utils import floatToGoString

# how the values of one line several workers hold merge (merge_families' _combine, "sum")
ADD = 0
LARGEST = 1  # *uptime*
SMALLEST = 2  # *start_time*, *_created
FIRST = 3  # a summary's quantiles

# the samples generate_latest writes after a family's own lines, as gauges of their own
_OM_SUFFIXES = ("_created", "_gsum", "_gcount")
_GAUGE_LIKE = ("gauge", "unknown", "info", "stateset")

# one sample's line up to the value, its part ("" or one of _OM_SUFFIXES) and how it merges
Line = tuple[str, str, int]
# one family of a share's layout: (name, type, header lines, the parts' header lines, lines)
LayoutFamily = tuple[str, str, str, dict[str, str], tuple[Line, ...]]
# a worker's share: (whether it holds what only the old path merges, its layout's name (a
# token of the worker's and a version), its layout pickled: the same bytes and name from one
# scrape to the next while no series came or went, the values in the layout's order)
Share = tuple[bool, str, bytes, list[float]]

_ESCAPED: Line = ("", "", -1)  # a sample whose name or a label name the writer would escape
_MAX_KEPT = 20_000  # samples' lines kept between scrapes (the own metrics hold a few hundred)
_MAX_LAYOUTS = 64  # workers' layouts the primary keeps (one a worker while none changes)


def _header(name: str, doc: str, mtype: str) -> str:
    """generate_latest's HELP and TYPE lines of a family."""
    mname = name
    if mtype == "counter":
        mname = name + "_total"
    elif mtype == "info":
        mname, mtype = name + "_info", "gauge"
    elif mtype == "stateset":
        mtype = "gauge"
    elif mtype == "gaugehistogram":
        mtype = "histogram"
    elif mtype == "unknown":
        mtype = "untyped"
    escaped = escape_metric_name(mname, UNDERSCORES)
    text = doc.replace("\\", r"\\").replace("\n", r"\n")
    return f"# HELP {escaped} {text}\n# TYPE {escaped} {mtype}\n"


def _part_header(name: str, doc: str, suffix: str) -> str:
    escaped = escape_metric_name(name + suffix, UNDERSCORES)
    text = doc.replace("\\", r"\\").replace("\n", r"\n")
    return f"# HELP {escaped} {text}\n# TYPE {escaped} gauge\n"


def _merge(family: str, mtype: str, sample: str, labels: dict[str, str]) -> int:
    if "uptime" in family:
        return LARGEST
    if "start_time" in family:
        return SMALLEST
    if mtype in _GAUGE_LIKE:
        return ADD
    if mtype == "summary" and "quantile" in labels:
        return FIRST
    if sample.endswith("_created"):
        return SMALLEST
    return ADD


class Shares:
    """One worker's :func:`share` maker, keeping what a sample's and a family's lines are
    (they do not change between scrapes; the values do)."""

    def __init__(self) -> None:
        # (family, type, sample name, label items) -> (line up to the value, part, merge), or
        # _ESCAPED when the writer would escape a name (the old path then)
        self._samples: dict[tuple[Any, ...], Line] = {}
        # (name, documentation, type) -> (header, the parts' headers)
        self._families: dict[tuple[str, str, str], tuple[str, dict[str, str]]] = {}
        # the previous share's layout, and pickled
        self._layout: list[LayoutFamily] = []
        self._layout_bytes = pickle.dumps(self._layout, pickle.HIGHEST_PROTOCOL)
        self._token = os.urandom(8).hex()
        self._version = 0
        self._name = f"{self._token}.0"

    def share(self, families: Iterable[Metric]) -> Share:
        """This worker's part of the merged exposition (see the module's docstring)."""
        layout: list[LayoutFamily] = []
        values: list[float] = []
        odd = False
        kept = self._samples
        if len(kept) > _MAX_KEPT:
            kept.clear()
        for fam in families:
            name, mtype = fam.name, fam.type
            fkey = (name, fam.documentation, mtype)
            heads = self._families.get(fkey)
            if heads is None:
                parts = {s: _part_header(name, fam.documentation, s) for s in _OM_SUFFIXES}
                heads = self._families[fkey] = (_header(name, fam.documentation, mtype), parts)
            lines: list[Line] = []
            for s in fam.samples:
                if s.timestamp is not None:
                    odd = True
                    continue
                labels = s.labels
                key = (name, mtype, s.name, tuple(labels.items()))
                line = kept.get(key)
                if line is None:
                    line = _sample_line(name, mtype, s.name, labels)
                    kept[key] = line
                if line is _ESCAPED:
                    odd = True
                    continue
                lines.append(line)
                values.append(s.value)
            layout.append((name, mtype, heads[0], heads[1], tuple(lines)))
        if layout != self._layout:  # (the same lines are the same objects: a quick compare)
            self._layout = layout
            self._layout_bytes = pickle.dumps(layout, pickle.HIGHEST_PROTOCOL)
            self._version += 1
            self._name = f"{self._token}.{self._version}"
        return odd, self._name, self._layout_bytes, values


def _sample_line(family: str, mtype: str, name: str, labels: dict[str, str]) -> Line:
    """A sample's line up to its value as generate_latest writes it, its part of the family's
    text and how it merges; ``_ESCAPED`` when a name would be escaped (then two samples could
    write one line, which merge_families keeps apart)."""
    if escape_metric_name(name, UNDERSCORES) != name:
        return _ESCAPED
    if labels:
        pairs = []
        for k, v in sorted(labels.items()):
            if escape_label_name(k, UNDERSCORES) != k:
                return _ESCAPED
            # (label values: generate_latest's _escape(v, ALLOWUTF8, ...))
            escaped = v.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
            pairs.append(f'{k}="{escaped}"')
        prefix = f"{name}{{{','.join(pairs)}}}"
    else:
        prefix = name
    part = ""
    for suffix in _OM_SUFFIXES:
        if name == family + suffix:
            part = suffix
            break
    return prefix, part, _merge(family, mtype, name, labels)


class Renderer:
    """The primary's writer of the merged own metrics, keeping the layouts the workers sent
    (unpickled once while they stay the same bytes)."""

    def __init__(self) -> None:
        # by name (not by the bytes: hashing them cost more than the rest of a scrape)
        self._layouts: dict[str, list[LayoutFamily]] = {}
        # a line's text by its start: the value it was written with, the line
        self._lines: dict[str, tuple[float, str]] = {}

    def _layout(self, name: str, data: bytes) -> list[LayoutFamily]:
        got = self._layouts.get(name)
        if got is None:
            if len(self._layouts) > _MAX_LAYOUTS:
                self._layouts.clear()
            got = pickle.loads(data)  # our own workers' (gather)
            self._layouts[name] = got
        return got

    def render(self, shares: Iterable[Share | list[Any]]) -> bytes | None:
        """Every worker's share (the primary's first) merged and written; ``None`` when one
        holds what only the old path merges (then: ``merge_families`` and
        ``generate_latest``). A worker without a share (gather's ``[]``) adds nothing."""
        # name -> (type, header, the parts' headers, line prefix -> [part, merge, value])
        merged: dict[str, tuple[str, str, dict[str, str], dict[str, list[Any]]]] = {}
        for share in shares:
            if not share:
                continue
            odd, name, data, values = share
            if odd:
                return None
            at = 0
            for family, mtype, header, parts, lines in self._layout(name, data):
                got = merged.get(family)
                if got is None:
                    got = merged[family] = (mtype, header, parts, {})
                elif got[0] != mtype:
                    return None
                held = got[3]
                for prefix, where, how in lines:
                    value = values[at]
                    at += 1
                    old = held.get(prefix)
                    if old is None:
                        held[prefix] = [where, how, value]
                    elif how == ADD:
                        old[2] = old[2] + value
                    elif how == LARGEST:
                        old[2] = max(old[2], value)
                    elif how == SMALLEST:
                        old[2] = min(old[2], value)
        out: list[str] = []
        texts = self._lines
        for _, header, parts, held in merged.values():
            out.append(header)
            later: dict[str, list[str]] | None = None
            for prefix, (where, _, value) in held.items():
                was = texts.get(prefix)
                # (a value written before is written the same; not 0: -0.0 == 0.0)
                if was is not None and value and was[0] == value:
                    line = was[1]
                else:
                    line = f"{prefix} {floatToGoString(value)}\n"
                    if len(texts) > _MAX_KEPT:
                        texts.clear()
                    texts[prefix] = (value, line)
                if not where:
                    out.append(line)
                    continue
                if later is None:
                    later = {}
                later.setdefault(where, []).append(line)
            if later:
                for suffix in sorted(later):
                    out.append(parts[suffix])
                    out.extend(later[suffix])
        return "".join(out).encode("utf-8")


def render(shares: Iterable[Share | list[Any]]) -> bytes | None:
    """:meth:`Renderer.render` without layouts kept."""
    return Renderer().render(shares)
