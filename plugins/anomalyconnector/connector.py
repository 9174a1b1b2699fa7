"""The ``anomaly`` connector: baselines per watched series, anomalies as metrics and logs.

One :class:`AnomalyEngine` per config is shared by the connector's two halves (metrics ->
metrics, metrics -> logs): the engine takes the data once (the first half created is the one
that feeds it; both receive the same payloads), and every ``interval`` (:meth:`tick`) turns
what arrived into one observation per series, judges it and sends

* to the metrics half: ``anomaly_score`` (how many baseline standard deviations the recent
  mean is away, in the bad direction) and ``anomaly_active`` (1 while an anomaly is open) per
  series, with the series' labels plus ``metric`` and ``anomaly_type``;
* to the logs half: one record per anomaly opened, escalated (warning to critical) or closed,
  with the reference's fields (``anomaly.metric_name``, ``anomaly.type``,
  ``anomaly.severity``, ``anomaly.description``, ``anomaly.suggested_actions``,
  ``anomaly.detection_time``) and what the ``alertmanager`` exporter needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from pipeline import (
    Component,
    ConsumeError,
    Consumer,
    CreateSettings,
    Host,
    Logs,
    Metrics,
    Payload,
    Signal,
    supervise,
)
from plugins._metricbuilder import RequestBuilder, set_attributes
from plugins.anomalyconnector.config import AnomalyConfig, RuleConfig
from plugins.anomalyconnector.detector import Event, SeriesState

SCOPE = "pipeline/connector/anomalyconnector"
STATE_VERSION = 1
MAX_LABEL_TEXT = 4096  # a series whose labels are longer is not tracked
MAX_BOUNDS = 1000  # a histogram point with more buckets is not tracked
YIELD_EVERY = 500  # series judged between two yields to the event loop
MAX_ABS = 1e150  # observations beyond this are not judged (their squares would overflow)
CUMULATIVE = 2
SEVERITY_NUMBER = {"warning": 13, "critical": 17, "closed": 9}  # WARN, ERROR, INFO
TYPE_TEXT = {
    "latency_increase": ("increased significantly", "latency"),
    "error_rate_spike": ("spiked", "error rate"),
    "throughput_drop": ("dropped significantly", "throughput"),
    "resource_increase": ("rose significantly", "resource usage"),
    "memory_leak": ("grows steadily (possible memory leak)", "memory"),
    "threshold": ("crossed its threshold", "value"),
}


def _attr_text(v: AnyValue) -> str | None:
    kind = v.WhichOneof("value")
    if kind == "string_value":
        return v.string_value
    if kind == "bool_value":
        return "true" if v.bool_value else "false"
    if kind == "int_value":
        return str(v.int_value)
    if kind == "double_value":
        return repr(v.double_value)
    return None


def _attrs(kvs: Iterable[Any]) -> dict[str, str]:
    out = {}
    for kv in kvs:
        text = _attr_text(kv.value)
        if text is not None:
            out[kv.key] = text
    return out


class _Matcher:
    def __init__(self, rule: RuleConfig) -> None:
        self.exact = {k: v for k, v in rule.attributes.items() if not v.startswith("~")}
        self.regex = {k: re.compile(v[1:]) for k, v in rule.attributes.items() if v.startswith("~")}

    def __call__(self, attrs: dict[str, str]) -> bool:
        for k, v in self.exact.items():
            if attrs.get(k) != v:
                return False
        for k, rx in self.regex.items():
            value = attrs.get(k)
            if value is None or rx.fullmatch(value) is None:
                return False
        return True


@dataclass
class _Pending:
    """What arrived for one series during the current interval."""

    total: float = 0.0
    count: int = 0
    # monotonic sums and histograms: the previous cumulative point
    prev_t: int = 0
    prev_v: float = math.nan
    prev_count: float = 0.0
    prev_sum: float = 0.0
    prev_buckets: list[float] = field(default_factory=list)
    bounds: list[float] = field(default_factory=list)
    buckets: list[float] = field(default_factory=list)
    rate_dv: float = 0.0
    rate_dt: float = 0.0
    h_sum: float = 0.0
    h_count: float = 0.0
    touched: bool = False

    def clear(self) -> None:
        self.touched = False
        self.total = 0.0
        self.count = 0
        self.rate_dv = self.rate_dt = 0.0
        self.h_sum = self.h_count = 0.0
        self.buckets = [0.0] * len(self.bounds_with_inf()) if self.bounds else []

    def bounds_with_inf(self) -> list[float]:
        return [*self.bounds, math.inf]


@dataclass
class _Series:
    rule_index: int
    key: str
    resource: dict[str, str]
    labels: dict[str, str]
    state: SeriesState
    pending: _Pending = field(default_factory=_Pending)


def histogram_quantile(q: float, bounds: list[float], counts: list[float]) -> float:
    """Prometheus' ``histogram_quantile``: linear interpolation inside the bucket holding the
    rank (``counts`` per bucket, the last one the +Inf bucket)."""
    total = sum(counts)
    if total <= 0:
        return math.nan
    rank = q * total
    cum = 0.0
    for i, c in enumerate(counts):
        if cum + c >= rank and c > 0:
            if i >= len(bounds):  # +Inf bucket: the highest finite bound
                return bounds[-1] if bounds else math.nan
            lower = bounds[i - 1] if i > 0 else 0.0
            upper = bounds[i]
            if i == 0 and upper <= 0:
                return upper
            return lower + (upper - lower) * (rank - cum) / c
        cum += c
    return bounds[-1] if bounds else math.nan


class AnomalyEngine:
    """The state shared by the connector's halves; see the module docstring."""

    def __init__(self, settings: CreateSettings, config: AnomalyConfig) -> None:
        self.settings = settings
        self.config = config
        self.clock: Callable[[], float] = time.time
        self.metrics_out: Consumer | None = None
        self.logs_out: Consumer | None = None
        self.halves: list[AnomalyConnector] = []
        self.on_released: Callable[[], None] | None = None
        self.series: dict[str, _Series] = {}
        self.by_metric: dict[str, list[int]] = {}
        self.matchers = [_Matcher(r) for r in config.rules]
        for i, rule in enumerate(config.rules):
            self.by_metric.setdefault(rule.metric, []).append(i)
        self.rule_ids = [self._rule_id(r) for r in config.rules]
        self._started = 0
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._restored = False
        self._last_tick = self.clock()
        self._last_save = 0.0
        self._saved_docs: dict[str, Any] = {}
        svc = settings.telemetry.service
        self._series_gauge = svc.gauge(
            "otelcol_connector_anomaly_series",
            "Series the anomaly connector tracks.",
            ("connector",),
        ).labels(settings.name)
        self._active_gauge = svc.gauge(
            "otelcol_connector_anomaly_active",
            "Anomalies open now.",
            ("connector",),
        ).labels(settings.name)
        self._events = svc.counter(
            "otelcol_connector_anomaly_events",
            "Anomalies opened, escalated and closed.",
            ("connector", "state", "severity"),
        )
        self._untracked = svc.counter(
            "otelcol_connector_anomaly_untracked_points",
            "Data points of watched metrics not tracked (max_series reached, labels too long, "
            "value not finite).",
            ("connector", "reason"),
        )

    @staticmethod
    def _rule_id(rule: RuleConfig) -> str:
        return f"{rule.metric}|{rule.type}|{sorted(rule.attributes.items())}"

    # -- ingest ---------------------------------------------------------------------------------
    def ingest(self, data: Payload) -> None:
        """Note the data points of watched metrics (raises MalformedDataError when the payload
        cannot be decoded)."""
        if not self.by_metric:
            return
        req = data.message()
        keys = self.config.resource_attributes
        for rm in req.resource_metrics:
            resource: dict[str, str] | None = None
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    rules = self.by_metric.get(metric.name)
                    if not rules:
                        continue
                    if resource is None:
                        full = _attrs(rm.resource.attributes)
                        resource = {k: full[k] for k in keys if k in full}
                    self._metric(metric, resource, rules)

    def _metric(self, metric: Any, resource: dict[str, str], rules: list[int]) -> None:
        kind = metric.WhichOneof("data")
        if kind is None:
            return
        body = getattr(metric, kind)
        for dp in body.data_points:
            attrs = _attrs(dp.attributes)
            for i in rules:
                if not self.matchers[i](attrs):
                    continue
                series = self._series(i, resource, attrs)
                if series is not None:
                    self._point(series, kind, body, dp)

    def _series(self, i: int, resource: dict[str, str], attrs: dict[str, str]) -> _Series | None:
        raw = json.dumps([self.rule_ids[i], sorted(resource.items()), sorted(attrs.items())])
        series = self.series.get(raw)
        if series is not None:
            return series
        if len(raw) > MAX_LABEL_TEXT:
            self._untracked.labels(self.settings.name, "labels_too_long").inc()
            return None
        if len(self.series) >= self.config.max_series:
            self._untracked.labels(self.settings.name, "max_series").inc()
            return None
        rule = self.config.rules[i]
        key_id = hashlib.sha1(raw.encode(), usedforsecurity=False).hexdigest()[:16]
        state = SeriesState(rule, self.config, key_id)
        state.last_seen = self._last_tick
        labels = {**attrs, **rule.labels, "metric": rule.metric, "anomaly_type": rule.type}
        series = _Series(i, raw, resource, labels, state)
        saved = self._saved_docs.pop(raw, None)
        if isinstance(saved, dict):
            with contextlib.suppress(ValueError, TypeError, OverflowError):
                state.restore(saved)
        self.series[raw] = series
        return series

    def _point(self, series: _Series, kind: str, body: Any, dp: Any) -> None:
        rule = self.config.rules[series.rule_index]
        p = series.pending
        p.touched = True
        how = rule.value
        if kind in ("gauge", "sum"):
            v = dp.as_double if dp.WhichOneof("value") == "as_double" else float(dp.as_int)
            if not math.isfinite(v):
                self._untracked.labels(self.settings.name, "not_finite").inc()
                return
            monotonic = kind == "sum" and body.is_monotonic
            if how == "rate" or (how == "auto" and monotonic):
                self._rate(p, body, dp, v)
            else:
                p.total += v
                p.count += 1
        elif kind == "histogram":
            self._histogram(p, body, dp)
        elif kind == "exponential_histogram":
            self._sum_count(p, body, dp, float(dp.sum), float(dp.count))
        elif kind == "summary":
            if how in ("mean",) and dp.count:
                v = dp.sum / dp.count
            else:
                qs = [(abs(q.quantile - rule.quantile), q.value) for q in dp.quantile_values]
                if not qs:
                    return
                v = min(qs)[1]
            if math.isfinite(v):
                p.total += v
                p.count += 1

    def _rate(self, p: _Pending, body: Any, dp: Any, v: float) -> None:
        t = int(dp.time_unix_nano)
        if getattr(body, "aggregation_temporality", CUMULATIVE) != CUMULATIVE:
            start = int(dp.start_time_unix_nano)
            if t > start > 0:
                p.rate_dv += v
                p.rate_dt += (t - start) / 1e9
            return
        if not math.isnan(p.prev_v) and t > p.prev_t and v >= p.prev_v:
            p.rate_dv += v - p.prev_v
            p.rate_dt += (t - p.prev_t) / 1e9
        if t > p.prev_t or v < p.prev_v:
            p.prev_t, p.prev_v = t, v

    def _sum_count(self, p: _Pending, body: Any, dp: Any, s: float, c: float) -> None:
        if not (math.isfinite(s) and math.isfinite(c)):
            return
        if getattr(body, "aggregation_temporality", CUMULATIVE) == CUMULATIVE:
            if c < p.prev_count:  # reset
                p.prev_count = p.prev_sum = 0.0
            ds, dc = s - p.prev_sum, c - p.prev_count
            p.prev_sum, p.prev_count = s, c
        else:
            ds, dc = s, c
        if dc > 0:
            p.h_sum += ds
            p.h_count += dc

    def _histogram(self, p: _Pending, body: Any, dp: Any) -> None:
        if len(dp.explicit_bounds) > MAX_BOUNDS:
            self._untracked.labels(self.settings.name, "too_many_buckets").inc()
            return
        bounds = [float(b) for b in dp.explicit_bounds]
        counts = [float(c) for c in dp.bucket_counts]
        if len(counts) != len(bounds) + 1 or any(not math.isfinite(b) for b in bounds):
            self._untracked.labels(self.settings.name, "malformed_histogram").inc()
            return
        cumulative = getattr(body, "aggregation_temporality", CUMULATIVE) == CUMULATIVE
        if bounds != p.bounds:
            p.bounds = bounds
            p.buckets = [0.0] * len(counts)
            p.prev_buckets = [0.0] * len(counts) if cumulative else []
            p.prev_count = p.prev_sum = 0.0
            if cumulative and dp.start_time_unix_nano == 0:
                # no start time: the first point is the starting level, not a delta
                p.prev_buckets = counts
                p.prev_count, p.prev_sum = float(dp.count), float(dp.sum)
                return
        if len(p.buckets) != len(counts):
            p.buckets = [0.0] * len(counts)
        if cumulative:
            if len(p.prev_buckets) != len(counts):  # a delta series that turned cumulative
                p.prev_buckets = [0.0] * len(counts)
                p.prev_count = p.prev_sum = 0.0
            if float(dp.count) < p.prev_count or any(
                c < pc for c, pc in zip(counts, p.prev_buckets, strict=True)
            ):
                p.prev_buckets = [0.0] * len(counts)
                p.prev_count = p.prev_sum = 0.0
            deltas = [c - pc for c, pc in zip(counts, p.prev_buckets, strict=True)]
            p.prev_buckets = counts
        else:
            deltas = counts
        p.buckets = [a + b for a, b in zip(p.buckets, deltas, strict=True)]
        self._sum_count(p, body, dp, float(dp.sum), float(dp.count))

    # -- one interval -----------------------------------------------------------------------------
    def _observation(self, series: _Series) -> float | None:
        rule = self.config.rules[series.rule_index]
        p = series.pending
        value: float | None = None
        if p.count:
            value = p.total / p.count
        elif p.rate_dt > 0:
            value = p.rate_dv / p.rate_dt
        elif p.h_count > 0:
            if rule.value == "mean" or not p.bounds or sum(p.buckets) <= 0:
                value = p.h_sum / p.h_count
            else:
                value = histogram_quantile(rule.quantile, p.bounds, p.buckets)
        p.clear()
        if value is None or not math.isfinite(value):
            return None
        if abs(value) > MAX_ABS:
            self._untracked.labels(self.settings.name, "out_of_range").inc()
            return None
        return value

    async def tick(self, now: float | None = None) -> tuple[int, list[Event]]:
        """Judge every series on what arrived since the last tick and send the results;
        returns the number of score points sent and the events. ``now`` (seconds) defaults to
        the clock."""
        if now is None:
            now = self.clock()
        self._last_tick = now
        events: list[tuple[_Series, Event]] = []
        expired = []
        for n, (key, series) in enumerate(list(self.series.items())):
            if n and n % YIELD_EVERY == 0:
                await asyncio.sleep(0)  # many series: let the event loop serve in between
            if series.pending.touched:
                series.state.last_seen = now
            value = self._observation(series)
            if value is not None:
                try:
                    got = series.state.observe(now, value)
                except (ArithmeticError, ValueError) as exc:  # a bug must not stop the rest
                    self.settings.log_limited(
                        40, "anomaly: series %s skipped: %r", series.key[:200], exc, key="observe"
                    )
                    continue
                events.extend((series, ev) for ev in got)
            elif now - series.state.last_seen > self.config.series_expiration:
                expired.append(key)
        for key in expired:
            gone = self.series.pop(key, None)
            if gone is None:
                continue
            series, st = gone, gone.state
            if st.active:  # the series stopped reporting: its anomaly cannot go on
                st.active = False
                events.append((series, st._event("closed", now)))
        for _, ev in events:
            self._events.labels(self.settings.name, ev.state, ev.severity).inc()
        self._series_gauge.set(len(self.series))
        self._active_gauge.set(sum(1 for s in self.series.values() if s.state.active))
        points = await self._send_scores(now)
        await self._send_events(events, now)
        if self.config.state_file and now - self._last_save >= self.config.state_save_interval:
            self._last_save = now
            await self.save()
        return points, [ev for _, ev in events]

    async def _send_scores(self, now: float) -> int:
        if self.metrics_out is None:
            return 0
        builder = RequestBuilder()
        by_resource: dict[str, list[_Series]] = {}
        for s in self.series.values():
            if s.state.observations:
                by_resource.setdefault(json.dumps(sorted(s.resource.items())), []).append(s)
        now_ns = int(now * 1e9)
        for group in by_resource.values():
            w = builder.scope(SCOPE, now_ns, group[0].resource)
            w.gauge(
                "anomaly_score",
                "",  # unit "1" would be exported as anomaly_score_ratio
                "How many baseline standard deviations the recent mean is away, in the bad "
                "direction (0 while normal).",
                [(max(0.0, round(s.state.score, 6)), s.labels) for s in group],
            )
            w.gauge(
                "anomaly_active",
                "",
                "1 while an anomaly of the series is open.",
                [(int(s.state.active), s.labels) for s in group],
            )
        points = builder.point_count()
        if not points:
            return 0
        try:
            await self.metrics_out.consume(Metrics.from_message(builder.request))
        except ConsumeError as exc:
            self.settings.telemetry.dropped(Signal.METRICS, points, "refused")
            self.settings.log_limited(
                30, "the next component refused the anomaly scores: %s", exc, key="scores"
            )
            return 0
        return points

    def describe(self, series: _Series, ev: Event) -> str:
        rule = self.config.rules[series.rule_index]
        what, noun = TYPE_TEXT[rule.type]
        unit = "s" if "duration" in rule.metric or "latency" in rule.metric else ""
        where = ", ".join(
            f"{k}={v}"
            for k, v in sorted(series.labels.items())
            if k not in ("metric", "anomaly_type", "team", "component")
        )
        subject = f"{rule.metric}" + (f" {{{where}}}" if where else "")
        if ev.state == "closed":
            return (
                f"{subject}: {noun} back to normal: {_fmt(ev.value)}{unit} vs baseline "
                f"{_fmt(ev.centre)}{unit}"
            )
        if rule.type == "memory_leak":
            minutes = round(self.config.leak.window / 60)
            return (
                f"{subject}: {noun} {what}: +{_fmt(ev.increase)} over {minutes} minutes, "
                f"now {_fmt(ev.value)}"
            )
        if rule.type == "threshold":
            bound = f"above {rule.above}" if rule.above is not None else f"below {rule.below}"
            return f"{subject}: {noun} {what}: {_fmt(ev.value)} ({bound})"
        return (
            f"{subject}: {noun} {what}: {_fmt(ev.value)}{unit} vs baseline "
            f"{_fmt(ev.centre)}{unit} (stddev {_fmt(ev.spread)}{unit}, {ev.score:.1f} sigma)"
        )

    def _record(self, series: _Series, ev: Event, now: float) -> LogRecord:
        rule = self.config.rules[series.rule_index]
        severity_number = SEVERITY_NUMBER["closed" if ev.state == "closed" else ev.severity]
        lr = LogRecord(
            time_unix_nano=int(ev.time * 1e9),
            observed_time_unix_nano=int(now * 1e9),
            severity_number=severity_number,  # type: ignore[arg-type]
            severity_text="INFO" if ev.state == "closed" else ev.severity.upper(),
            event_name=f"anomaly.{ev.state}",
        )
        description = self.describe(series, ev)
        lr.body.string_value = description
        actions = self.config.actions.get(rule.type, [])
        attrs: dict[str, Any] = {
            "anomaly.id": ev.anomaly_id,
            "anomaly.state": ev.state,
            "anomaly.metric_name": rule.metric,
            "anomaly.type": rule.type,
            "anomaly.severity": ev.severity,
            "anomaly.description": description,
            "anomaly.detection_time": datetime.fromtimestamp(ev.opened_at, UTC).isoformat(),
            "anomaly.score": float(round(max(ev.score, 0.0), 6)),
            "anomaly.baseline.method": self.config.baseline.method,
        }
        for name, num in (("anomaly.value", ev.value), ("anomaly.baseline.mean", ev.centre)):
            if math.isfinite(num):
                attrs[name] = float(num)
        if math.isfinite(ev.spread):
            attrs["anomaly.baseline.stddev"] = float(ev.spread)
        if rule.runbook_url:
            attrs["anomaly.runbook_url"] = rule.runbook_url
        set_attributes(lr.attributes, attrs)
        kv = lr.attributes.add(key="anomaly.suggested_actions")
        for a in actions:
            kv.value.array_value.values.add().string_value = a
        labels = lr.attributes.add(key="anomaly.labels")
        for k, v in sorted(series.labels.items()):
            labels.value.kvlist_value.values.add(key=k).value.string_value = v
        return lr

    async def _send_events(self, events: list[tuple[_Series, Event]], now: float) -> None:
        for series, ev in events:
            self.settings.logger.info(
                "anomaly %s: %s",
                ev.state,
                self.describe(series, ev),
                extra={"anomaly_id": ev.anomaly_id, "severity": ev.severity},
            )
        if self.logs_out is None or not events:
            return
        req = ExportLogsServiceRequest()
        groups: dict[str, Any] = {}
        for series, ev in events:
            gkey = json.dumps(sorted(series.resource.items()))
            sl = groups.get(gkey)
            if sl is None:
                rl = req.resource_logs.add()
                set_attributes(rl.resource.attributes, series.resource)
                sl = groups[gkey] = rl.scope_logs.add()
                sl.scope.name = SCOPE
            sl.log_records.append(self._record(series, ev, now))
        try:
            await self.logs_out.consume(Logs.from_message(req))
        except ConsumeError as exc:
            self.settings.telemetry.dropped(Signal.LOGS, len(events), "refused")
            self.settings.log_limited(
                40,
                "the next component refused %d anomaly records: %s",
                len(events),
                exc,
                key="records",
            )

    # -- state file -------------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """The baselines as plain data (taken in the event loop, where they change)."""
        return {
            "version": STATE_VERSION,
            "saved_at": self.clock(),
            "series": {**self._saved_docs, **{k: s.state.state() for k, s in self.series.items()}},
        }

    async def save(self) -> None:
        """Write the baselines to ``state_file``: the snapshot here, the file in a thread."""
        if self.config.state_file:
            await asyncio.to_thread(self.save_state, self.snapshot())

    def save_state(self, doc: dict[str, Any] | None = None) -> None:
        path = self.config.state_file
        if not path:
            return
        if doc is None:
            doc = self.snapshot()
        target = Path(path)
        tmp = target.with_name(target.name + ".tmp")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(doc, separators=(",", ":")))
            os.replace(tmp, target)
        except OSError as exc:
            self.settings.logger.error("cannot save the anomaly baselines to %s: %s", path, exc)

    def load_state(self) -> None:
        """Baselines saved by an earlier run; a series takes its saved state when it first
        reports again (saved series not seen within ``baseline.window`` are forgotten)."""
        path = self.config.state_file
        if not path or self._restored:
            return
        self._restored = True
        try:
            doc = json.loads(Path(path).read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            self.settings.logger.warning(
                "cannot read the anomaly baselines from %s (starting afresh): %s", path, exc
            )
            return
        series = doc.get("series") if isinstance(doc, dict) else None
        if not isinstance(series, dict) or doc.get("version") != STATE_VERSION:
            self.settings.logger.warning("ignoring %s: not a baseline file of this version", path)
            return
        now = self.clock()
        horizon = self.config.baseline.window + self.config.series_expiration
        kept = {}
        for key, state in list(series.items())[: self.config.max_series]:
            if isinstance(key, str) and isinstance(state, dict):
                seen = state.get("last_seen", 0)
                if isinstance(seen, int | float) and now - seen <= horizon:
                    kept[key] = state
        self._saved_docs = kept
        self.settings.logger.info("restored the baselines of %d series from %s", len(kept), path)

    def memory_per_series(self) -> float:
        if not self.series:
            return 0.0
        return sum(s.state.nbytes() for s in self.series.values()) / len(self.series)

    # -- lifecycle ---------------------------------------------------------------------------
    async def _run(self) -> None:
        while not self._stop.is_set():
            try:
                async with asyncio.timeout(self.config.interval):
                    await self._stop.wait()
            except TimeoutError:
                await self.tick()

    async def start(self, host: Host) -> None:
        self._started += 1
        if self._started > 1:
            return
        await asyncio.to_thread(self.load_state)
        self._last_save = self.clock()
        self._stop.clear()
        self._task = supervise(self.settings, host, "evaluate", self._run)

    async def shutdown(self) -> None:
        if self._started <= 0:
            return
        self._started -= 1
        if self._started:
            return
        self._stop.set()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.save()


class AnomalyConnector(Component):
    """One half of the connector (metrics -> metrics or metrics -> logs)."""

    mutates_data = False

    def __init__(self, engine: AnomalyEngine, signal: Signal, next_consumer: Consumer) -> None:
        self.engine = engine
        self.signal = signal
        self.next = next_consumer
        self._attached = False
        self._started = False
        self._attach()

    def _attach(self) -> None:
        if self._attached:
            return
        self._attached = True
        if self.signal is Signal.METRICS:
            self.engine.metrics_out = self.next
        else:
            self.engine.logs_out = self.next
        self.engine.halves.append(self)

    @property
    def feeds(self) -> bool:
        return bool(self.engine.halves) and self.engine.halves[0] is self

    async def consume(self, data: Payload) -> None:
        if self.feeds:
            self.engine.ingest(data)

    async def start(self, host: Host) -> None:
        self._attach()
        if not self._started:
            self._started = True
            await self.engine.start(host)

    async def shutdown(self) -> None:
        started, self._started = self._started, False
        if started:
            await self.engine.shutdown()
        if self._attached:
            self._attached = False
            with contextlib.suppress(ValueError):
                self.engine.halves.remove(self)
            if self.signal is Signal.METRICS and self.engine.metrics_out is self.next:
                self.engine.metrics_out = None
            if self.signal is Signal.LOGS and self.engine.logs_out is self.next:
                self.engine.logs_out = None
            if not self.engine.halves and self.engine.on_released is not None:
                self.engine.on_released()


def _fmt(v: float) -> str:
    if not math.isfinite(v):
        return "n/a"
    a = abs(v)
    if a >= 1e9:
        return f"{v / 1e9:.2f}G"
    if a >= 1e6:
        return f"{v / 1e6:.2f}M"
    if a >= 1e4:
        return f"{v / 1e3:.1f}k"
    return f"{v:.3g}" if a < 0.01 else f"{v:.2f}"
