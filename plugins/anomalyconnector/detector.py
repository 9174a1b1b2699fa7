"""Baselines and the anomaly state machine of one series, without any I/O.

One :class:`SeriesState` per watched series gets one observation per interval
(:meth:`SeriesState.observe`) and returns the events it caused (opened, escalated, closed).
Time is whatever the caller says it is: tests drive it explicitly.

Memory per series is bounded: the flat baseline is a ring of at most ``max_points`` doubles
(with running sums, so the mean and standard deviation cost O(1) per observation); the
seasonal baseline keeps three doubles and a season index per bucket; the recent window and
the leak fit keep at most ``recent_window / interval`` and ``leak.window / interval`` points.
"""

from __future__ import annotations

import math
import statistics
from array import array
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from plugins.anomalyconnector.config import AnomalyConfig, RuleConfig

MAD_TO_STDDEV = 1.4826
DOWN_TYPES = frozenset({"throughput_drop"})


class Ring:
    """At most ``capacity`` doubles, oldest evicted first, with running sum and sum of
    squares (recomputed exactly every ``capacity`` insertions against drift)."""

    __slots__ = ("_buf", "_next", "_since_exact", "capacity", "s1", "s2")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._buf = array("d")
        self._next = 0
        self.s1 = 0.0
        self.s2 = 0.0
        self._since_exact = 0

    def __len__(self) -> int:
        return len(self._buf)

    def append(self, v: float) -> None:
        if len(self._buf) < self.capacity:
            self._buf.append(v)
        else:
            old = self._buf[self._next]
            self._buf[self._next] = v
            self._next = (self._next + 1) % self.capacity
            self.s1 -= old
            self.s2 -= old * old
        self.s1 += v
        self.s2 += v * v
        self._since_exact += 1
        if self._since_exact >= self.capacity:
            self._since_exact = 0
            self.s1 = math.fsum(self._buf)
            self.s2 = math.fsum(x * x for x in self._buf)

    def values(self) -> list[float]:
        """Oldest first."""
        b = self._buf
        return list(b[self._next :]) + list(b[: self._next])

    def mean_stddev(self) -> tuple[float, float]:
        n = len(self._buf)
        mean = self.s1 / n
        var = max(0.0, (self.s2 - n * mean * mean) / (n - 1)) if n > 1 else 0.0
        return mean, math.sqrt(var)

    def median_mad(self) -> tuple[float, float]:
        values = list(self._buf)
        med = statistics.median(values)
        mad = statistics.median([abs(v - med) for v in values])
        return med, mad * MAD_TO_STDDEV

    def nbytes(self) -> int:
        return self._buf.buffer_info()[1] * self._buf.itemsize


class Seasonal:
    """Per ``bucket`` of the season (time of day or week): a decaying mean and variance of the
    observations seen at that time, and how many distinct seasons contributed."""

    __slots__ = ("bucket", "last_season", "m2", "max_weight", "mean", "n", "season", "seasons")

    def __init__(self, season: float, bucket: float, per_bucket: int) -> None:
        self.season = season
        self.bucket = bucket
        size = max(1, int(season // bucket))
        self.n = array("d", bytes(8 * size))
        self.mean = array("d", bytes(8 * size))
        self.m2 = array("d", bytes(8 * size))
        self.last_season = array("d", [-1.0]) * size
        self.seasons = array("d", bytes(8 * size))
        # about eight seasons of observations weigh in; older ones fade
        self.max_weight = 8.0 * max(1, per_bucket)

    def index(self, t: float) -> int:
        return int((t % self.season) // self.bucket) % len(self.n)

    def add(self, t: float, v: float) -> None:
        i = self.index(t)
        season_no = float(t // self.season)
        if self.last_season[i] != season_no:
            self.last_season[i] = season_no
            self.seasons[i] += 1
        n = self.n[i]
        if n >= self.max_weight:  # exponential forgetting: the weight stays bounded
            scale = (self.max_weight - 1) / n
            n *= scale
            self.m2[i] *= scale
        n += 1
        delta = v - self.mean[i]
        self.mean[i] += delta / n
        self.m2[i] += delta * (v - self.mean[i])
        self.n[i] = n

    def expected(self, times: list[float], min_seasons: int) -> tuple[float, float] | None:
        """Mean and standard deviation expected at ``times``; ``None`` unless every bucket
        involved has ``min_seasons`` seasons of history."""
        centre = var = 0.0
        for t in times:
            i = self.index(t)
            if self.seasons[i] < min_seasons or self.n[i] < 2:
                return None
            centre += self.mean[i]
            var += self.m2[i] / (self.n[i] - 1)
        k = len(times)
        return centre / k, math.sqrt(var / k)

    def state(self) -> dict[str, Any]:
        return {
            "n": list(self.n),
            "mean": list(self.mean),
            "m2": list(self.m2),
            "last_season": list(self.last_season),
            "seasons": list(self.seasons),
        }

    def restore(self, doc: dict[str, Any]) -> None:
        for name in ("n", "mean", "m2", "last_season", "seasons"):
            values = [float(x) for x in doc.get(name, [])]
            target: array[float] = getattr(self, name)
            if len(values) == len(target) and all(math.isfinite(x) for x in values):
                target[:] = array("d", values)

    def nbytes(self) -> int:
        return 5 * len(self.n) * 8


@dataclass
class Event:
    """An anomaly opened, escalated (warning to critical) or closed."""

    state: str  # "opened" | "escalated" | "closed"
    severity: str
    score: float
    value: float
    centre: float
    spread: float
    time: float
    anomaly_id: str
    opened_at: float
    increase: float = 0.0  # memory_leak: rise over the leak window


@dataclass
class SeriesState:
    """One watched series: baseline, recent window and anomaly state."""

    rule: RuleConfig
    config: AnomalyConfig
    key_id: str
    recent: deque[tuple[float, float]] = field(init=False)
    history: Ring = field(init=False)
    seasonal: Seasonal | None = field(init=False, default=None)
    trend: deque[tuple[float, float]] | None = field(init=False, default=None)
    pending: int = 0
    calm: int = 0
    active: bool = False
    severity: str = ""
    opened_at: float = 0.0
    anomaly_id: str = ""
    score: float = 0.0
    value: float = math.nan
    centre: float = math.nan
    spread: float = math.nan
    increase: float = 0.0
    last_seen: float = 0.0
    observations: int = 0

    def __post_init__(self) -> None:
        cfg = self.config
        self.recent = deque(maxlen=cfg.steps(cfg.recent_window))
        points = min(cfg.baseline.max_points, cfg.steps(cfg.baseline.window))
        self.history = Ring(max(2, points))
        if cfg.baseline.method == "seasonal":
            per_bucket = cfg.steps(cfg.baseline.season_bucket)
            self.seasonal = Seasonal(cfg.baseline.season, cfg.baseline.season_bucket, per_bucket)
        if self.rule.type == "memory_leak":
            self.trend = deque(maxlen=cfg.steps(cfg.leak.window) + 1)

    # -- judging -------------------------------------------------------------------------------
    def _baseline(self) -> tuple[float, float] | None:
        cfg = self.config
        if len(self.history) < cfg.baseline.min_samples:
            return None
        got: tuple[float, float] | None = None
        if self.seasonal is not None:
            got = self.seasonal.expected([t for t, _ in self.recent], cfg.baseline.min_seasons)
        if got is None:
            if cfg.baseline.method == "median_mad":
                got = self.history.median_mad()
            else:
                got = self.history.mean_stddev()
        return got

    def _sigma_score(self, recent_mean: float) -> float:
        base = self._baseline()
        if base is None:
            self.centre = self.spread = math.nan
            return 0.0
        centre, spread = base
        floor = max(self.rule.min_stddev, self.config.min_stddev_ratio * abs(centre), 1e-12)
        spread = max(spread, floor)
        self.centre, self.spread = centre, spread
        z = (recent_mean - centre) / spread
        return -z if self.rule.type in DOWN_TYPES else z

    def _leak_score(self) -> float:
        trend = self.trend
        assert trend is not None
        leak = self.config.leak
        need = max(self.config.baseline.min_samples, int(0.8 * (trend.maxlen or 2)))
        self.increase = 0.0
        if len(trend) < need:
            return 0.0
        t0 = trend[0][0]
        xs = [t - t0 for t, _ in trend]
        ys = [v for _, v in trend]
        n = len(xs)
        mx, my = sum(xs) / n, sum(ys) / n
        sxx = sum((x - mx) ** 2 for x in xs)
        syy = sum((y - my) ** 2 for y in ys)
        if sxx <= 0 or syy <= 0:
            return 0.0
        sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
        slope = sxy / sxx
        r2 = sxy * sxy / (sxx * syy)
        self.centre, self.spread = ys[0], math.sqrt(syy / n)
        if slope <= 0 or r2 < leak.min_r2:
            return 0.0
        inc = slope * leak.window
        self.increase = inc
        warn, crit = leak.warning_increase, leak.critical_increase
        wt, ct = self.config.warning_threshold, self.config.critical_threshold
        if inc < warn:
            return wt * inc / warn
        if inc < crit:
            return wt + (ct - wt) * (inc - warn) / (crit - warn)
        return ct + (inc - crit) / crit

    def _threshold_score(self, value: float) -> float:
        rule = self.rule
        breached = (rule.above is not None and value > rule.above) or (
            rule.below is not None and value < rule.below
        )
        self.centre = rule.above if rule.above is not None else rule.below or 0.0
        self.spread = 0.0
        if not breached:
            return 0.0
        return (
            self.config.critical_threshold
            if rule.severity == "critical"
            else self.config.warning_threshold
        )

    # -- one observation -----------------------------------------------------------------------
    def observe(self, t: float, value: float) -> list[Event]:
        """Take the observation of one interval (at time ``t``, seconds) and judge."""
        self.last_seen = t
        self.observations += 1
        self.value = value
        rtype = self.rule.type
        if rtype == "threshold":
            score = self._threshold_score(value)
        elif rtype == "memory_leak":
            assert self.trend is not None
            self.trend.append((t, value))
            score = self._leak_score()
        else:
            if len(self.recent) == self.recent.maxlen:
                old_t, old_v = self.recent[0]
                self._learn(old_t, old_v, t)
            self.recent.append((t, value))
            recent_mean = sum(v for _, v in self.recent) / len(self.recent)
            self.value = recent_mean
            score = self._sigma_score(recent_mean)
        self.score = score
        return self._transition(t, score)

    def _learn(self, t: float, v: float, now: float) -> None:
        """Move an observation leaving the recent window into the baseline. The flat baseline
        skips what belongs to an anomaly (open, or about to open) until it has lasted
        :meth:`relearn_after`; the seasonal one learns everything (one season weighs at most
        an eighth of a bucket, and a pattern that recurs every season is normal)."""
        if self.seasonal is not None:
            self.seasonal.add(t, v)
        if (self.active or self.pending) and now - self.opened_at < self.relearn_after():
            return
        self.history.append(v)

    def relearn_after(self) -> float:
        """An anomaly open this long is the new normal: its observations are learned."""
        return max(self.config.baseline.window / 4, self.config.interval)

    def _transition(self, t: float, score: float) -> list[Event]:
        cfg = self.config
        wt, ct = cfg.warning_threshold, cfg.critical_threshold
        events: list[Event] = []
        if not self.active:
            if score >= wt:
                if not self.pending:
                    self.opened_at = t
                self.pending += 1
            else:
                self.pending = 0
            if self.pending >= cfg.steps(cfg.open_after):
                self.active = True
                self.pending = 0
                self.calm = 0
                self.opened_at = t
                self.anomaly_id = f"{self.key_id}-{int(t * 1000)}"
                self.severity = "critical" if score >= ct else "warning"
                events.append(self._event("opened", t))
            return events
        if self.severity == "warning" and score >= ct:
            self.severity = "critical"
            events.append(self._event("escalated", t))
        if score < cfg.close_threshold or (self.rule.type == "threshold" and score < wt):
            self.calm += 1
        else:
            self.calm = 0
        if self.calm >= cfg.steps(cfg.close_after):
            self.active = False
            self.calm = 0
            events.append(self._event("closed", t))
        return events

    def _event(self, state: str, t: float) -> Event:
        return Event(
            state=state,
            severity=self.severity,
            score=self.score,
            value=self.value,
            centre=self.centre,
            spread=self.spread,
            time=t,
            anomaly_id=self.anomaly_id,
            opened_at=self.opened_at,
            increase=self.increase,
        )

    # -- persistence and size -------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "history": self.history.values(),
            "recent": [list(p) for p in self.recent],
            "last_seen": self.last_seen,
            "observations": self.observations,
        }
        if self.seasonal is not None:
            doc["seasonal"] = self.seasonal.state()
        if self.trend is not None:
            doc["trend"] = [list(p) for p in self.trend]
        if self.active:
            doc["active"] = {
                "severity": self.severity,
                "opened_at": self.opened_at,
                "id": self.anomaly_id,
            }
        return doc

    def restore(self, doc: dict[str, Any]) -> None:
        """Load what :meth:`state` wrote; values that are not finite numbers are skipped."""
        for v in _floats(doc.get("history")):
            self.history.append(v)
        for p in _pairs(doc.get("recent")):
            self.recent.append(p)
        if self.trend is not None:
            for p in _pairs(doc.get("trend")):
                self.trend.append(p)
        seasonal = doc.get("seasonal")
        if self.seasonal is not None and isinstance(seasonal, dict):
            self.seasonal.restore(seasonal)
        last_seen = doc.get("last_seen")
        if isinstance(last_seen, int | float) and math.isfinite(last_seen):
            self.last_seen = float(last_seen)
        obs = doc.get("observations")
        if isinstance(obs, int):
            self.observations = obs
        active = doc.get("active")
        if isinstance(active, dict) and active.get("severity") in ("warning", "critical"):
            opened = active.get("opened_at")
            if isinstance(opened, int | float) and math.isfinite(opened):
                self.active = True
                self.severity = str(active["severity"])
                self.opened_at = float(opened)
                self.anomaly_id = str(active.get("id", ""))[:200]

    def nbytes(self) -> int:
        """Approximate memory held by the buffers of this series."""
        total = self.history.nbytes() + 64 * len(self.recent)
        if self.seasonal is not None:
            total += self.seasonal.nbytes()
        if self.trend is not None:
            total += 64 * len(self.trend)
        return total


def _floats(value: Any) -> list[float]:
    if not isinstance(value, list):
        return []
    return [float(v) for v in value if isinstance(v, int | float) and math.isfinite(v)]


def _pairs(value: Any) -> list[tuple[float, float]]:
    if not isinstance(value, list):
        return []
    out = []
    for p in value:
        if isinstance(p, list) and len(p) == 2:
            a, b = _floats(p) if len(_floats(p)) == 2 else (None, None)
            if a is not None and b is not None:
                out.append((a, b))
    return out
