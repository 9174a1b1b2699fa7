"""The exposition of an :class:`~plugins.prometheusexporter.accumulator.Accumulator`, written
straight from its series, byte for byte what ``prometheus_client``'s writers
(``exposition.generate_latest`` for the 0.0.4 text format, ``openmetrics.exposition`` for
OpenMetrics) write for :meth:`Accumulator.collect`'s families, at a fraction of the cost.

A scrape renders every series; most did not change since the previous scrape (a cumulative
series is sent again at each flush with the same values). So each series keeps its lines per
format, dropped by the accumulator when a fold changes what they show, and the escaped label
set (sorted once per series, not per sample as ``prometheus_client`` does). A family keeps its
header lines and escaped sample names. ``tests/plugins/test_prometheusrender.py`` compares the
output with ``prometheus_client``'s on the same state.
"""

from __future__ import annotations

import math
from typing import Any

from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.exposition import (
    UNDERSCORES,
    _escape,
    _is_legacy_labelname_rune,
    escape_label_name,
    escape_metric_name,
)
from prometheus_client.utils import floatToGoString

from plugins.prometheusexporter.accumulator import Accumulator, Family, Series, bucket_index
from plugins.prometheusexporter.accumulator import _to_exemplar as to_exemplar
from plugins.prometheustranslator import MetricKind

# the keys of a series' cached lines: (OpenMetrics, time_ns or 0 without timestamps)
_MAX_CACHED = 4


def _value(v: str) -> str:
    """A label value, escaped (both formats)."""
    return v.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _pairs(labels: dict[str, str]) -> list[tuple[str, str]]:
    return [(k, f'{escape_label_name(k, UNDERSCORES)}="{_value(v)}"') for k, v in labels.items()]


class _Labels:
    """A series' label set escaped once: all of it, and split around ``le`` / ``quantile``
    (where a bucket's or quantile's own label sorts in)."""

    __slots__ = ("_pairs", "plain", "split")

    def __init__(self, labels: dict[str, str]) -> None:
        self._pairs = sorted(_pairs(labels))
        self.plain = ",".join(p for _, p in self._pairs)
        self.split: dict[str, tuple[str, str]] = {}

    def around(self, name: str) -> tuple[str, str]:
        """The label text before and after ``name="..."`` (each with its comma)."""
        got = self.split.get(name)
        if got is None:
            before = ",".join(p for k, p in self._pairs if k < name)
            after = ",".join(p for k, p in self._pairs if k > name)
            got = (before + "," if before else "", "," + after if after else "")
            self.split[name] = got
        return got


class _Header:
    """A family's header lines and escaped sample names, for one help text."""

    __slots__ = ("help", "om", "om_names", "text", "text_names")

    def __init__(self, metric: Metric, help_text: str, names: tuple[str, ...]) -> None:
        self.help = help_text
        mname = metric.name
        mtype = metric.type
        if mtype == "counter":
            tname = mname + "_total"
            ttype = mtype
        else:
            tname = mname
            ttype = "untyped" if mtype == "unknown" else mtype
        tname = escape_metric_name(tname, UNDERSCORES)
        doc = metric.documentation
        text_doc = doc.replace("\\", r"\\").replace("\n", r"\n")
        self.text = f"# HELP {tname} {text_doc}\n# TYPE {tname} {ttype}\n"
        oname = escape_metric_name(mname, UNDERSCORES)
        om = f"# HELP {oname} {_value(doc)}\n# TYPE {oname} {mtype}\n"
        if metric.unit:
            om += f"# UNIT {oname} {metric.unit}\n"
        self.om = om
        self.text_names = tuple(escape_metric_name(n, UNDERSCORES) for n in names)
        self.om_names = tuple(_escape(n, UNDERSCORES, _is_legacy_labelname_rune) for n in names)


def _labels(s: Series) -> _Labels:
    got: _Labels | None = s.rendered_labels
    if got is None:
        got = s.rendered_labels = _Labels(s.labels)
    return got


def _line(name: str, labels: str, value: float, ts: str, exemplar: str = "") -> str:
    if labels:
        return f"{name}{{{labels}}} {floatToGoString(value)}{ts}{exemplar}\n"
    return f"{name} {floatToGoString(value)}{ts}{exemplar}\n"


def _exemplar_text(e: Any) -> str:
    """OpenMetrics' ``# {labels} value [timestamp]`` of an OTLP exemplar (as the exporter
    turns it into a ``prometheus_client`` one)."""
    ex = to_exemplar(e)
    labels = ",".join(f'{k}="{_value(v)}"' for k, v in sorted(ex.labels.items()))
    if ex.timestamp is not None:
        return f" # {{{labels}}} {floatToGoString(ex.value)} {ex.timestamp}"
    return f" # {{{labels}}} {floatToGoString(ex.value)}"


def _series_lines(
    kind: MetricKind, counter_total: bool, names: tuple[str, ...], s: Series, om: bool, ts: str
) -> str:
    lab = _labels(s)
    if counter_total:
        ex = _exemplar_text(s.exemplars[-1]) if om and s.exemplars else ""
        return _line(names[0], lab.plain, s.value, ts, ex)
    if kind is MetricKind.HISTOGRAM:
        exemplars: dict[int, str] = {}
        if om:
            for e in s.exemplars:
                exemplars[bucket_index(s, e)] = _exemplar_text(e)
        before, after = lab.around("le")
        bucket = names[0]
        out = []
        cumulative = 0
        counts = s.counts
        n = len(counts)
        for i, bound in enumerate((*s.bounds, math.inf)):
            cumulative += counts[i] if i < n else 0
            le = _value(floatToGoString(bound))
            out.append(
                f'{bucket}{{{before}le="{le}"{after}}} '
                f"{floatToGoString(cumulative)}{ts}{exemplars.get(i, '')}\n"
            )
        out.append(_line(names[1], lab.plain, s.count, ts))
        out.append(_line(names[2], lab.plain, s.sum, ts))
        return "".join(out)
    if kind is MetricKind.SUMMARY:
        before, after = lab.around("quantile")
        out = []
        for q, v in s.quantiles:
            qs = _value(floatToGoString(q))
            out.append(f'{names[0]}{{{before}quantile="{qs}"{after}}} {floatToGoString(v)}{ts}\n')
        out.append(_line(names[1], lab.plain, s.count, ts))
        out.append(_line(names[2], lab.plain, s.sum, ts))
        return "".join(out)
    return _line(names[0], lab.plain, s.value, ts)


def _header(family: Family) -> tuple[_Header, bool]:
    """The family's header (built again when its help changed) and whether it is a counter
    named ``..._total`` (written as a counter, with exemplars)."""
    header: _Header | None = family.rendered
    kind = family.kind
    name = family.name
    counter_total = kind is MetricKind.COUNTER and name.endswith("_total")
    if header is None or header.help != family.help:
        metric = Accumulator.family_head(family)
        if counter_total or kind in (MetricKind.GAUGE, MetricKind.UPDOWN, MetricKind.COUNTER):
            names: tuple[str, ...] = (name,)
        elif kind is MetricKind.HISTOGRAM:
            names = (name + "_bucket", name + "_count", name + "_sum")
        else:
            names = (name, name + "_count", name + "_sum")
        header = family.rendered = _Header(metric, family.help, names)
    return header, counter_total


def render(acc: Accumulator, openmetrics: bool, send_timestamps: bool) -> bytes:
    """What ``serialize(list(acc.collect(send_timestamps)), openmetrics)`` returns (body)."""
    acc.expire()
    out: list[str] = []
    if acc.target_info:
        out.append("# HELP target_info Target metadata\n# TYPE target_info gauge\n")
        for s in acc.target_info.values():
            out.append(_line("target_info", _labels(s).plain, 1.0, ""))
    for family in acc.families.values():
        header, counter_total = _header(family)
        if openmetrics:
            out.append(header.om)
            names = header.om_names
        else:
            out.append(header.text)
            names = header.text_names
        kind = family.kind
        for s in family.series.values():
            if send_timestamps and s.time_ns:
                key: tuple[bool, int] = (openmetrics, s.time_ns)
                ts = f" {s.time_ns / 1e9}" if openmetrics else f" {int(s.time_ns / 1e9 * 1000):d}"
            else:
                key = (openmetrics, 0)
                ts = ""
            cached: dict[tuple[bool, int], str] | None = s.rendered_lines
            if cached is None:
                cached = s.rendered_lines = {}
            text = cached.get(key)
            if text is None:
                if len(cached) >= _MAX_CACHED:
                    cached.clear()
                text = cached[key] = _series_lines(kind, counter_total, names, s, openmetrics, ts)
            out.append(text)
    if openmetrics:
        out.append("# EOF\n")
    return "".join(out).encode("utf-8")
