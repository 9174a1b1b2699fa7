"""``connectors.anomaly``: options.

Defaults follow the reference document's ``PerformanceAnalyzer``: an anomaly when the recent
mean leaves the baseline by more than 2 standard deviations (warning) or 3 (critical), at least
10 observations before judging, the suggested actions of its table.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, model_validator

from pipeline import ComponentConfig, ConfigModel, Duration, Seconds

AnomalyType = Literal[
    "latency_increase",
    "error_rate_spike",
    "throughput_drop",
    "resource_increase",
    "memory_leak",
    "threshold",
]
ValueKind = Literal["auto", "value", "rate", "mean", "quantile"]
Method = Literal["mean_stddev", "median_mad", "seasonal"]

# The reference's suggested actions for a latency increase, and for the other types the
# actions its alert rules give (``action_required``, ``investigation``...).
DEFAULT_ACTIONS: dict[str, list[str]] = {
    "latency_increase": [
        "Check database query performance",
        "Analyze resource utilization",
        "Review recent deployments",
        "Scale horizontal replicas if load increased",
    ],
    "error_rate_spike": [
        "Inspect recent failures in the traces of the affected component",
        "Check external service health and network connectivity",
        "Review recent deployments",
    ],
    "throughput_drop": [
        "Check whether upstream clients stopped sending requests",
        "Check external service health and network connectivity",
        "Review recent deployments",
    ],
    "resource_increase": [
        "Analyze resource utilization",
        "Scale horizontal replicas if load increased",
    ],
    "memory_leak": [
        "Investigate memory usage patterns and consider restart",
        "Compare heap snapshots taken some minutes apart",
        "Review recent deployments",
    ],
    "threshold": [
        "Check external service health and network connectivity",
        "Page on-call engineer immediately if the failure persists",
    ],
}


class BaselineConfig(ConfigModel):
    """How a series' normal is learned.

    * ``mean_stddev`` (the reference's): mean and standard deviation of the observations in
      ``window``, the recent ones excluded;
    * ``median_mad``: median and MAD (scaled by 1.4826 to estimate a standard deviation),
      which outliers in the history do not drag;
    * ``seasonal``: the mean and standard deviation of the same time of ``season`` (a day or a
      week) in earlier seasons, kept in ``season_bucket``-wide buckets; until a bucket has seen
      ``min_seasons`` seasons the flat ``mean_stddev`` baseline is used."""

    method: Method = "mean_stddev"
    window: Duration = Seconds(86400)
    min_samples: int = Field(10, ge=2)
    season: Duration = Seconds(86400)
    season_bucket: Duration = Seconds(900)
    min_seasons: int = Field(2, ge=1)
    max_points: int = Field(2880, ge=10)
    """Observations kept per series for the flat baselines (the window is cut to this)."""


class LeakConfig(ConfigModel):
    """``memory_leak``: a steady rise, fitted by least squares over ``window``: opens when the
    fit explains at least ``min_r2`` of the variance and the rise over the window is at least
    ``warning_increase`` (``critical_increase`` for critical). Defaults: the reference's
    ``AgentMemoryLeakDetected`` (100 MB in 30 minutes)."""

    window: Duration = Seconds(1800)
    min_r2: float = Field(0.8, ge=0, le=1)
    warning_increase: float = Field(50e6, gt=0)
    critical_increase: float = Field(100e6, gt=0)


class RuleConfig(ConfigModel):
    """One watched metric."""

    metric: str
    """The OTLP metric name (``mcp_tool_call_duration``, ``process_memory_rss_bytes``)."""
    type: AnomalyType
    attributes: dict[str, str] = Field(default_factory=dict)
    """Label matchers: a data point is watched only if each attribute has this value; a value
    written ``~regex`` is a full-match regular expression."""
    value: ValueKind = "auto"
    """What one observation is: ``auto`` = the value of a gauge or non-monotonic sum, the
    per-second rate of a monotonic sum, the ``quantile`` of a histogram or summary; ``mean``
    = a histogram's sum / count over the interval."""
    quantile: float = Field(0.95, gt=0, lt=1)
    labels: dict[str, str] = Field(default_factory=dict)
    """Labels added to the anomaly's series and records (``team``, ``component``): what the
    ``alertmanager`` exporter turns into routing labels."""
    runbook_url: str = ""
    min_stddev: float = Field(0.0, ge=0)
    """Floor of the baseline's spread, in the metric's unit (a series that never moved, such
    as a failure ratio stuck at 0, would otherwise alarm on any change)."""
    above: float | None = None
    """``threshold`` rules: opens while the value is above (or ``below``) the bound."""
    below: float | None = None
    severity: Literal["warning", "critical"] = "critical"
    """``threshold`` rules: the severity of the anomaly."""

    @model_validator(mode="after")
    def _check(self) -> RuleConfig:
        if self.type == "threshold" and self.above is None and self.below is None:
            raise ValueError(f"rule {self.metric}: a threshold rule needs above or below")
        for key, value in self.attributes.items():
            if value.startswith("~"):
                try:
                    re.compile(value[1:])
                except re.error as exc:
                    raise ValueError(f"rule {self.metric}: attributes.{key}: {exc}") from None
        return self


def default_rules() -> list[RuleConfig]:
    """The agent metrics of the ``agentmetrics`` connector, the health checks and the process
    metrics of the ``hostmetrics`` receiver."""
    mcp = {"team": "integrations", "component": "mcp"}
    workflow = {"team": "product", "component": "workflow"}
    system = {"team": "platform", "component": "system"}
    health = {"team": "platform", "component": "health"}
    return [
        RuleConfig(metric="mcp_tool_call_duration", type="latency_increase", labels=mcp),
        # throughput: the successful calls and runs (fewer failures is no drop)
        RuleConfig(
            metric="mcp_tool_calls",
            type="throughput_drop",
            attributes={"status": "success"},
            labels=mcp,
        ),
        RuleConfig(metric="agent_workflow_duration", type="latency_increase", labels=workflow),
        RuleConfig(
            metric="agent_workflow_failure_ratio",
            type="error_rate_spike",
            labels=workflow,
            min_stddev=0.02,
        ),
        RuleConfig(
            metric="agent_workflow_executions",
            type="throughput_drop",
            attributes={"outcome": "success"},
            labels=workflow,
        ),
        RuleConfig(
            metric="errors", type="error_rate_spike", labels={"team": "platform"}, min_stddev=0.05
        ),
        RuleConfig(metric="process_cpu_usage_percent", type="resource_increase", labels=system),
        RuleConfig(metric="process_memory_rss_bytes", type="memory_leak", labels=system),
        RuleConfig(
            metric="health_check_status",
            type="threshold",
            below=1,
            attributes={"critical": "true"},
            labels=health,
        ),
        RuleConfig(
            metric="health_check_status",
            type="threshold",
            below=1,
            severity="warning",
            attributes={"critical": "false"},
            labels=health,
        ),
    ]


class AnomalyConfig(ComponentConfig):
    """``connectors.anomaly``."""

    interval: Duration = Seconds(60)
    """One observation per series per interval; every interval the connector judges each
    series and emits ``anomaly_score`` and ``anomaly_active``."""
    baseline: BaselineConfig = Field(default_factory=BaselineConfig)
    recent_window: Duration = Seconds(300)
    """The recent mean compared to the baseline (the reference used its last 20 values)."""
    warning_threshold: float = Field(2.0, gt=0)
    critical_threshold: float = Field(3.0, gt=0)
    close_threshold: float = Field(1.0, ge=0)
    """An open anomaly closes once the score stays below this for ``close_after``."""
    open_after: Duration = Seconds(120)
    """How long the score must stay above the warning threshold before an anomaly opens."""
    close_after: Duration = Seconds(300)
    min_stddev_ratio: float = Field(0.05, ge=0)
    """Floor of the spread relative to the baseline's centre (a flat series does not alarm on
    a 1% wobble)."""
    leak: LeakConfig = Field(default_factory=LeakConfig)
    rules: list[RuleConfig] = Field(default_factory=default_rules)
    actions: dict[str, list[str]] = Field(default_factory=lambda: dict(DEFAULT_ACTIONS))
    """Suggested actions per anomaly type; types left out keep the defaults."""
    resource_attributes: list[str] = Field(
        default_factory=lambda: [
            "service.name",
            "service.namespace",
            "service.instance.id",
            "host.name",
            "process.pid",
        ]
    )
    """Resource attributes that tell series apart (kept on the emitted series)."""
    max_series: int = Field(10_000, ge=1)
    """Tracked series; beyond it new series are not tracked (counted), the idlest ones are
    forgotten after ``series_expiration``."""
    series_expiration: Duration = Seconds(3600)
    state_file: str | None = ""
    """Baselines are written here on shutdown (and every ``state_save_interval``) and read
    back at start; empty (or null, as an unset ``${env:...:-}`` gives) = not kept across
    restarts."""
    state_save_interval: Duration = Seconds(600)

    @model_validator(mode="after")
    def _check(self) -> AnomalyConfig:
        if self.interval <= 0:
            raise ValueError("interval must be greater than 0")
        if self.critical_threshold < self.warning_threshold:
            raise ValueError("critical_threshold must not be below warning_threshold")
        if self.close_threshold > self.warning_threshold:
            raise ValueError("close_threshold must not be above warning_threshold")
        if self.leak.critical_increase < self.leak.warning_increase:
            raise ValueError("leak.critical_increase must not be below leak.warning_increase")
        if self.baseline.season_bucket <= 0 or self.baseline.season < self.baseline.season_bucket:
            raise ValueError("baseline.season must be at least one baseline.season_bucket")
        actions = dict(DEFAULT_ACTIONS)
        actions.update(self.actions)
        self.actions = actions
        return self

    def steps(self, duration: float) -> int:
        """A duration in intervals (at least 1)."""
        return max(1, round(duration / self.interval))
