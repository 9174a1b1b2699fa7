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

import itertools
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
_MAX_CACHED = 6
# the keys, in the same cache, of its exemplar texts (OpenMetrics) and of whether its bucket
# bounds or quantiles increase strictly (each bucket's or quantile's line is its own)
_EXEMPLARS = "exemplars"
_INCREASING = "increasing"


def _value(v: str) -> str:
    """A label value, escaped (both formats)."""
    return v.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _pairs(labels: dict[str, str]) -> list[tuple[str, str]]:
    return [(k, f'{escape_label_name(k, UNDERSCORES)}="{_value(v)}"') for k, v in labels.items()]


class _Labels:
    """A series' label set escaped once: all of it, and split around ``le`` / ``quantile``
    (where a bucket's or quantile's own label sorts in). ``exact``: every label name is
    written as it is (then ``plain`` tells label sets apart: values are escaped
    reversibly)."""

    __slots__ = ("_pairs", "exact", "plain", "split")

    def __init__(self, labels: dict[str, str]) -> None:
        self._pairs = sorted(_pairs(labels))
        self.plain = ",".join(p for _, p in self._pairs)
        self.exact = all(p.startswith(k + '="') for k, p in self._pairs)
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

    __slots__ = ("help", "metric", "om", "om_names", "text", "text_names")

    def __init__(self, metric: Metric, help_text: str, names: tuple[str, ...]) -> None:
        self.help = help_text
        mname = self.metric = metric.name
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


def _number(v: float) -> str:
    """``floatToGoString(v)``; a float under a million in magnitude (repr, which Go's format
    matches there) and a count under a million (``"<n>.0"``) without its calls."""
    c = v.__class__
    if c is float:
        if -1e6 < v < 1e6:
            return repr(v)
    elif c is int and 0 <= v < 1_000_000:
        return f"{v}.0"
    return floatToGoString(v)


def _line(name: str, labels: str, value: float, ts: str, exemplar: str = "") -> str:
    if labels:
        return f"{name}{{{labels}}} {_number(value)}{ts}{exemplar}\n"
    return f"{name} {_number(value)}{ts}{exemplar}\n"


# a histogram's bucket lines up to their value, by (sample name, labels before and after le,
# bounds): the same for every flush of a series (and for series with the same labels but
# their le); cleared when it grows past _MAX_PREFIXES
_PREFIXES: dict[tuple[str, str, str, tuple[float, ...]], tuple[str, ...]] = {}
_MAX_PREFIXES = 16384


def _bucket_prefixes(
    bucket: str, before: str, after: str, bounds: tuple[float, ...]
) -> tuple[str, ...]:
    key = (bucket, before, after, bounds)
    got = _PREFIXES.get(key)
    if got is None:
        got = tuple(
            f'{bucket}{{{before}le="{_value(floatToGoString(bound))}"{after}}} '
            for bound in (*bounds, math.inf)
        )
        if 0.0 not in bounds:  # (-0.0 == 0.0: the key would not tell them apart)
            if len(_PREFIXES) >= _MAX_PREFIXES:
                _PREFIXES.clear()
            _PREFIXES[key] = got
    return got


def _exemplar_text(e: Any) -> str:
    """OpenMetrics' ``# {labels} value [timestamp]`` of an OTLP exemplar (as the exporter
    turns it into a ``prometheus_client`` one)."""
    ex = to_exemplar(e)
    labels = ",".join(f'{k}="{_value(v)}"' for k, v in sorted(ex.labels.items()))
    if ex.timestamp is not None:
        return f" # {{{labels}}} {floatToGoString(ex.value)} {ex.timestamp}"
    return f" # {{{labels}}} {floatToGoString(ex.value)}"


def _ts_text(time_ns: int, om: bool, send_timestamps: bool) -> str:
    if send_timestamps and time_ns:
        return f" {time_ns / 1e9}" if om else f" {int(time_ns / 1e9 * 1000):d}"
    return ""


def _exemplars(s: Series, histogram: bool) -> Any:
    """The OpenMetrics exemplar text of a counter (``""`` without one), or a histogram's by
    bucket index, kept with the series' lines (dropped with them when a fold changes them)."""
    cached: dict[Any, Any] | None = s.rendered_lines
    if cached is None:
        cached = s.rendered_lines = {}
    got = cached.get(_EXEMPLARS)
    if got is None:
        if histogram:
            got = {bucket_index(s, e): _exemplar_text(e) for e in s.exemplars}
        else:
            got = _exemplar_text(s.exemplars[-1]) if s.exemplars else ""
        cached[_EXEMPLARS] = got
    return got


def _histogram_lines(
    names: tuple[str, ...],
    plain: str,
    around: tuple[str, str],
    bounds: tuple[float, ...],
    cumulative: list[Any],
    count: Any,
    total: float,
    ts: str,
    exemplars: dict[int, str],
) -> str:
    prefixes = _bucket_prefixes(names[0], around[0], around[1], bounds)
    if exemplars:
        out = [
            f"{prefix}{_number(cumulative[i])}{ts}{exemplars.get(i, '')}\n"
            for i, prefix in enumerate(prefixes)
        ]
    else:
        out = [
            f"{prefix}{_number(value)}{ts}\n"
            for prefix, value in zip(prefixes, cumulative, strict=True)
        ]
    out.append(_line(names[1], plain, count, ts))
    out.append(_line(names[2], plain, total, ts))
    return "".join(out)


def _cumulative(bounds: tuple[float, ...], counts: list[int]) -> list[int]:
    out = []
    cumulative = 0
    n = len(counts)
    for i in range(len(bounds) + 1):
        cumulative += counts[i] if i < n else 0
        out.append(cumulative)
    return out


def _summary_lines(
    names: tuple[str, ...],
    plain: str,
    around: tuple[str, str],
    quantiles: list[tuple[float, float]],
    quantile_ts: str,
    count: Any,
    total: float,
    ts: str,
) -> str:
    before, after = around
    out = []
    for q, v in quantiles:
        qs = _value(floatToGoString(q))
        out.append(f'{names[0]}{{{before}quantile="{qs}"{after}}} {_number(v)}{quantile_ts}\n')
    out.append(_line(names[1], plain, count, ts))
    out.append(_line(names[2], plain, total, ts))
    return "".join(out)


def _series_lines(
    kind: MetricKind, counter_total: bool, names: tuple[str, ...], s: Series, om: bool, ts: str
) -> str:
    lab = _labels(s)
    if counter_total:
        ex = _exemplars(s, False) if om else ""
        return _line(names[0], lab.plain, s.value, ts, ex)
    if kind is MetricKind.HISTOGRAM:
        return _histogram_lines(
            names,
            lab.plain,
            lab.around("le"),
            s.bounds,
            _cumulative(s.bounds, s.counts),
            s.count,
            s.sum,
            ts,
            _exemplars(s, True) if om and s.exemplars else {},
        )
    if kind is MetricKind.SUMMARY:
        return _summary_lines(
            names, lab.plain, lab.around("quantile"), s.quantiles, ts, s.count, s.sum, ts
        )
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


def _cached_lines(
    kind: MetricKind,
    counter_total: bool,
    names: tuple[str, ...],
    s: Series,
    openmetrics: bool,
    send_timestamps: bool,
) -> str:
    """The series' lines, from its cache when they did not change."""
    if send_timestamps and s.time_ns:
        key: tuple[bool, int] = (openmetrics, s.time_ns)
    else:
        key = (openmetrics, 0)
    cached: dict[Any, Any] | None = s.rendered_lines
    if cached is None:
        cached = s.rendered_lines = {}
    text: str | None = cached.get(key)
    if text is None:
        if len(cached) >= _MAX_CACHED:
            cached.clear()
        ts = _ts_text(s.time_ns, openmetrics, send_timestamps)
        text = cached[key] = _series_lines(kind, counter_total, names, s, openmetrics, ts)
    return text


_TARGET_INFO_HEADER = "# HELP target_info Target metadata\n# TYPE target_info gauge\n"


def render(acc: Accumulator, openmetrics: bool, send_timestamps: bool) -> bytes:
    """What ``serialize(list(acc.collect(send_timestamps)), openmetrics)`` returns (body)."""
    acc.expire()
    out: list[str] = []
    if acc.target_info:
        out.append(_TARGET_INFO_HEADER)
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
            # (_cached_lines, inline: a call per series is ~15 % of an unchanged scrape)
            if send_timestamps and s.time_ns:
                key: tuple[bool, int] = (openmetrics, s.time_ns)
            else:
                key = (openmetrics, 0)
            cached: dict[Any, Any] | None = s.rendered_lines
            if cached is not None:
                text = cached.get(key)
                if text is not None:
                    out.append(text)
                    continue
            out.append(_cached_lines(kind, counter_total, names, s, openmetrics, send_timestamps))
    if openmetrics:
        out.append("# EOF\n")
    return "".join(out).encode("utf-8")


# -- with workers ------------------------------------------------------------------------------
# Each worker holds the series of what it processed; the primary serves them merged, byte for
# byte what pipeline.workers.merge_families (gauges="latest") and prometheus_client's writers
# make of every worker's Accumulator.collect(True) (then without timestamps unless
# send_timestamps). A worker sends its share: per family the header, and per series its lines
# (from the same caches as render) with what merging needs (value, buckets, timestamp...).
# A series only one worker holds is written as that worker's lines; one several hold (a
# connector's series with the same labels in every worker) is merged and written again.

# how a family's series merge (by the prometheus_client type merge_families looks at)
_LATEST = 0  # gauge, unknown: the sample with the most recent timestamp (the first on a tie)
_ADD = 1  # counter: values added, the most recent timestamp, the first worker's exemplar
_HISTOGRAM = 2  # buckets, count and sum added (the bounds must be the same)
_SUMMARY = 3  # count and sum added, the first worker's quantiles (the same quantiles)

# one family of a share: (prometheus_client name, how it merges, header, sample names, series)
ShareFamily = tuple[str, int, str, tuple[str, ...], list[tuple[Any, ...]]]
# a worker's share: (whether merge_families would merge it otherwise than by series: then
# the primary merges prometheus_client's families as before, families)
Share = tuple[bool, list[ShareFamily]]


def _merge_mode(kind: MetricKind, counter_total: bool) -> int:
    if counter_total:
        return _ADD
    if kind is MetricKind.HISTOGRAM:
        return _HISTOGRAM
    if kind is MetricKind.SUMMARY:
        return _SUMMARY
    return _LATEST  # a gauge, an up-down counter, a counter without "_total" ("unknown")


def share(acc: Accumulator, openmetrics: bool, send_timestamps: bool) -> Share:
    """This worker's part of the merged exposition (see above)."""
    acc.expire()
    odd = False
    families: list[ShareFamily] = []
    if acc.target_info:
        families.append(
            (
                "target_info",
                _LATEST,
                _TARGET_INFO_HEADER,
                ("target_info",),
                [
                    (lab.plain, _line("target_info", lab.plain, 1.0, ""), 0)
                    for lab in map(_labels, acc.target_info.values())
                ],
            )
        )
    seen: set[str] = {"target_info"} if acc.target_info else set()
    for family in acc.families.values():
        header, counter_total = _header(family)
        if header.metric in seen:  # two families merge_families would make one
            odd = True
        seen.add(header.metric)
        kind = family.kind
        mode = _merge_mode(kind, counter_total)
        names = header.om_names if openmetrics else header.text_names
        series: list[tuple[Any, ...]] = []
        for s in family.series.values():
            text = _cached_lines(kind, counter_total, names, s, openmetrics, send_timestamps)
            lab: _Labels = s.rendered_labels
            if not lab.exact:
                odd = True
            if mode == _LATEST:
                series.append((lab.plain, text, s.time_ns))
            elif mode == _ADD:
                ex = _exemplars(s, False) if openmetrics else ""
                series.append((lab.plain, text, s.time_ns, s.value, ex))
            elif mode == _HISTOGRAM:
                if "le" in s.labels or not _increasing(s, True):
                    odd = True  # its bucket lines could be another series' or repeat
                exemplars = _exemplars(s, True) if openmetrics and s.exemplars else None
                around = lab.around("le")
                series.append(
                    (lab.plain, text, s.time_ns, around, s.bounds, s.counts, s.count, s.sum)
                    + ((exemplars,) if exemplars else ())
                )
            else:
                if "quantile" in s.labels or not _increasing(s, False):
                    odd = True
                around = lab.around("quantile")
                series.append((lab.plain, text, s.time_ns, around, s.quantiles, s.count, s.sum))
        families.append(
            (header.metric, mode, header.om if openmetrics else header.text, names, series)
        )
    return odd, families


def _increasing(s: Series, histogram: bool) -> bool:
    cached: dict[Any, Any] = s.rendered_lines or {}
    got = cached.get(_INCREASING)
    if got is None:
        values = (*s.bounds, math.inf) if histogram else tuple(q for q, _ in s.quantiles)
        got = all(a < b for a, b in itertools.pairwise(values))
        if s.rendered_lines is not None:
            s.rendered_lines[_INCREASING] = got
    return bool(got)


def _latest(held: list[tuple[Any, ...]]) -> tuple[Any, ...]:
    """The series with the most recent timestamp (as seconds), the first on a tie."""
    best = held[0]
    best_ts = best[2] / 1e9 if best[2] else 0.0
    for other in held[1:]:
        ts = other[2] / 1e9 if other[2] else 0.0
        if ts > best_ts:
            best, best_ts = other, ts
    return best


def _merged_lines(
    mode: int,
    names: tuple[str, ...],
    held: list[tuple[Any, ...]],
    openmetrics: bool,
    send_timestamps: bool,
) -> str | None:
    """The lines of one series several workers hold, merged (None: merge_families would not
    merge them series by series)."""
    if mode == _LATEST:
        return str(_latest(held)[1])  # (the whole sample: lines and timestamp)
    first = held[0]
    plain = first[0]
    ts = _ts_text(_latest(held)[2], openmetrics, send_timestamps)
    if mode == _ADD:
        value = first[3]
        for other in held[1:]:
            value = value + other[3]
        return _line(names[0], plain, value, ts, first[4])
    if mode == _HISTOGRAM:
        bounds = first[4]
        cumulative = _cumulative(bounds, first[5])
        count, total = first[6], first[7]
        for other in held[1:]:
            if other[4] != bounds:
                return None
            cumulative = [
                a + b for a, b in zip(cumulative, _cumulative(bounds, other[5]), strict=True)
            ]
            count = count + other[6]
            total = total + other[7]
        exemplars = first[8] if openmetrics and len(first) > 8 else {}
        return _histogram_lines(
            names, plain, first[3], bounds, cumulative, count, total, ts, exemplars
        )
    quantiles = first[4]
    count, total = first[5], first[6]
    for other in held[1:]:
        if [q for q, _ in other[4]] != [q for q, _ in quantiles]:
            return None
        count = count + other[5]
        total = total + other[6]
    # the quantile lines are the first worker's, with its timestamp
    first_ts = _ts_text(first[2], openmetrics, send_timestamps)
    return _summary_lines(names, plain, first[3], quantiles, first_ts, count, total, ts)


def render_merged(
    shares: list[Share | list[Any]],
    openmetrics: bool,
    send_timestamps: bool,
    kept: dict[tuple[str, str], tuple[Any, str]] | None = None,
) -> bytes | None:
    """Every worker's share (the primary's first) merged into one exposition; ``None`` when a
    share holds what is merged otherwise than series by series (two families of one name, a
    histogram series labelled ``le``...): then the caller merges prometheus_client's
    families (``pipeline.workers.merge_families``).

    ``kept`` (the caller's, one per format; replaced by this scrape's): the merged lines of
    the series several workers hold, with what they were merged from; written again only when
    a worker's part of the series changed (its lines, numbers or timestamp)."""
    # name -> [mode, header, sample names, series by label text, the series several hold]
    merged: dict[str, list[Any]] = {}
    for part in shares:
        if not part:  # a worker whose exporter does not run (yet): nothing (gather's [])
            continue
        odd, families = part
        if odd:
            return None
        for name, mode, header, names, series in families:
            got = merged.get(name)
            if got is None:
                merged[name] = [mode, header, names, {s[0]: s for s in series}, None]
                continue
            if got[0] != mode:
                return None
            held: dict[str, tuple[Any, ...]] = got[3]
            several: dict[str, list[tuple[Any, ...]]] | None = got[4]
            for s in series:
                key = s[0]
                old = held.get(key)
                if old is None:
                    held[key] = s
                    continue
                if several is None:
                    several = got[4] = {}
                more = several.get(key)
                if more is None:
                    several[key] = [old, s]
                else:
                    more.append(s)
    out: list[str] = []
    keep: dict[tuple[str, str], tuple[Any, str]] = {}
    for name, (mode, header, names, held, several) in merged.items():
        out.append(header)
        if several is None:
            out.extend(s[1] for s in held.values())
            continue
        for key, s in held.items():
            more = several.get(key)
            if more is None:
                out.append(s[1])
                continue
            parts = (names, *more)
            had = kept.get((name, key)) if kept is not None else None
            if had is not None and had[0] == parts:
                text: str = had[1]
            else:
                written = _merged_lines(mode, names, more, openmetrics, send_timestamps)
                if written is None:
                    return None
                text = written
            keep[(name, key)] = (parts, text)
            out.append(text)
    if kept is not None:
        kept.clear()
        kept.update(keep)
    if openmetrics:
        out.append("# EOF\n")
    return "".join(out).encode("utf-8")
