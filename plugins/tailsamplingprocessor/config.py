"""``processors.tail_sampling``: the Collector's options and policies, plus workflow-aware
policies."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, PrivateAttr, model_validator

from pipeline import ComponentConfig, ConfigModel, Duration, Seconds
from plugins._agentconv import OUTCOMES

POLICY_TYPES = (
    "always_sample",
    "latency",
    "numeric_attribute",
    "probabilistic",
    "status_code",
    "string_attribute",
    "rate_limiting",
    "span_count",
    "boolean_attribute",
    "trace_state",
    "and",
    "composite",
    "drop",
    "ottl_condition",
    # workflow-aware (this gateway's)
    "workflow_outcome",
    "workflow_complexity_tier",
    "workflow_sla",
    "workflow_usage",
    "tool_call_failed",
)


class LatencyCfg(ConfigModel):
    threshold_ms: int = Field(0, ge=0)
    upper_threshold_ms: int = Field(0, ge=0)


class NumericAttributeCfg(ConfigModel):
    key: str
    min_value: float | None = None
    max_value: float | None = None
    invert_match: bool = False

    @model_validator(mode="after")
    def _check(self) -> NumericAttributeCfg:
        if self.min_value is None and self.max_value is None:
            raise ValueError("numeric_attribute: set min_value, max_value or both")
        if (
            self.min_value is not None
            and self.max_value is not None
            and self.max_value < self.min_value
        ):
            raise ValueError("numeric_attribute: max_value must be >= min_value")
        return self


class ProbabilisticCfg(ConfigModel):
    hash_salt: str = ""
    sampling_percentage: float = Field(0.0, ge=0)


class StatusCodeCfg(ConfigModel):
    status_codes: list[Literal["OK", "ERROR", "UNSET"]] = Field(min_length=1)


class StringAttributeCfg(ConfigModel):
    key: str
    values: list[str] = Field(min_length=1)
    enabled_regex_matching: bool = False
    cache_max_size: int = Field(0, ge=0)
    invert_match: bool = False

    @model_validator(mode="after")
    def _check(self) -> StringAttributeCfg:
        if self.enabled_regex_matching:
            for v in self.values:
                try:
                    re.compile(v)
                except re.error as exc:
                    raise ValueError(
                        f"string_attribute: invalid regular expression {v!r}: {exc}"
                    ) from None
        return self


class RateLimitingCfg(ConfigModel):
    spans_per_second: int = Field(gt=0)
    burst_capacity: int | None = Field(None, gt=0)  # default: twice spans_per_second


class SpanCountCfg(ConfigModel):
    min_spans: int = Field(0, ge=0)
    max_spans: int = Field(0, ge=0)


class BooleanAttributeCfg(ConfigModel):
    key: str
    value: bool
    invert_match: bool = False


class TraceStateCfg(ConfigModel):
    key: str
    values: list[str] = Field(min_length=1)


class OttlConditionCfg(ConfigModel):
    """Sample a trace when an OTTL condition holds for one of its spans (span events)."""

    error_mode: Literal["ignore", "silent", "propagate"] = "propagate"
    span: list[str] = Field(default_factory=list)
    spanevent: list[str] = Field(default_factory=list)
    _filters: list[Any] = PrivateAttr(default_factory=list)

    @model_validator(mode="after")
    def _compile(self) -> OttlConditionCfg:
        if not self.span and not self.spanevent:
            raise ValueError("ottl_condition: give span or spanevent conditions")
        from pipeline.ottl import StatementError, compile_conditions
        from pipeline.ottl.runner import Filter

        for context in ("span", "spanevent"):
            texts = getattr(self, context)
            if not texts:
                continue
            try:
                _, conditions = compile_conditions(texts, "traces", context)
            except StatementError as exc:
                text = texts[max(exc.index, 0)]
                raise ValueError(f"ottl_condition.{context}: {exc.detail} in {text!r}") from None
            self._filters.append(Filter(context, conditions, self.error_mode))
        return self

    def filters(self) -> list[Any]:
        return list(self._filters)


class WorkflowOutcomeCfg(ConfigModel):
    """Sample workflows whose ``workflow.outcome`` is one of ``outcomes``."""

    outcomes: list[str] = Field(default_factory=lambda: ["failed", "timeout"], min_length=1)

    @model_validator(mode="after")
    def _check(self) -> WorkflowOutcomeCfg:
        bad = [o for o in self.outcomes if o not in OUTCOMES]
        if bad:
            raise ValueError(f"workflow_outcome: unknown outcome(s) {bad}; known: {OUTCOMES}")
        return self


class WorkflowTierCfg(ConfigModel):
    tiers: list[str] = Field(min_length=1)


class WorkflowSlaCfg(ConfigModel):
    """Sample workflows whose root span lasted longer than their type's objective."""

    default: Duration | None = None
    objectives: dict[str, Duration] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> WorkflowSlaCfg:
        if self.default is None and not self.objectives:
            raise ValueError("workflow_sla: set default, objectives or both")
        return self

    def objective(self, workflow_type: str) -> float | None:
        return self.objectives.get(workflow_type, self.default)


class ModelPrice(ConfigModel):
    """Prices in currency units per million tokens."""

    input: float = Field(0.0, ge=0)
    output: float = Field(0.0, ge=0)


class WorkflowUsageCfg(ConfigModel):
    """Sample traces that used at least ``min_tokens`` tokens (input + output) or cost at least
    ``min_cost`` (from ``cost_attribute`` on spans, else from ``prices`` per model)."""

    min_tokens: int | None = Field(None, ge=1)
    min_cost: float | None = Field(None, gt=0)
    cost_attribute: str = "gen_ai.usage.cost"
    prices: dict[str, ModelPrice] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> WorkflowUsageCfg:
        if self.min_tokens is None and self.min_cost is None:
            raise ValueError("workflow_usage: set min_tokens, min_cost or both")
        return self


class ToolCallFailedCfg(ConfigModel):
    """Sample traces in which a tool call failed (any tool, or one of ``tools``)."""

    tools: list[str] = Field(default_factory=list)


class RateAllocationCfg(ConfigModel):
    policy: str
    percent: int = Field(ge=0, le=100)


class PolicyCfg(ConfigModel):
    """One policy: ``name``, ``type`` and the section of that type."""

    name: str
    type: Literal[POLICY_TYPES]  # type: ignore[valid-type]
    latency: LatencyCfg | None = None
    numeric_attribute: NumericAttributeCfg | None = None
    probabilistic: ProbabilisticCfg | None = None
    status_code: StatusCodeCfg | None = None
    string_attribute: StringAttributeCfg | None = None
    rate_limiting: RateLimitingCfg | None = None
    span_count: SpanCountCfg | None = None
    boolean_attribute: BooleanAttributeCfg | None = None
    trace_state: TraceStateCfg | None = None
    ottl_condition: OttlConditionCfg | None = None
    workflow_outcome: WorkflowOutcomeCfg | None = None
    workflow_complexity_tier: WorkflowTierCfg | None = None
    workflow_sla: WorkflowSlaCfg | None = None
    workflow_usage: WorkflowUsageCfg | None = None
    tool_call_failed: ToolCallFailedCfg | None = None
    and_: AndCfg | None = Field(None, alias="and")
    composite: CompositeCfg | None = None
    drop: DropCfg | None = None

    @model_validator(mode="after")
    def _check(self) -> PolicyCfg:
        section = "and_" if self.type == "and" else self.type
        needs_section = self.type not in ("always_sample", "tool_call_failed", "workflow_outcome")
        if needs_section and getattr(self, section, None) is None:
            raise ValueError(f"policy {self.name!r} of type {self.type}: missing '{self.type}:'")
        return self


class AndCfg(ConfigModel):
    and_sub_policy: list[PolicyCfg] = Field(min_length=1)


class DropCfg(ConfigModel):
    drop_sub_policy: list[PolicyCfg] = Field(min_length=1)


class CompositeCfg(ConfigModel):
    max_total_spans_per_second: int = Field(gt=0)
    policy_order: list[str] = Field(default_factory=list)
    composite_sub_policy: list[PolicyCfg] = Field(min_length=1)
    rate_allocation: list[RateAllocationCfg] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> CompositeCfg:
        names = {p.name for p in self.composite_sub_policy}
        for n in self.policy_order:
            if n not in names:
                raise ValueError(f"composite: policy_order names {n!r}, not a sub-policy")
        for r in self.rate_allocation:
            if r.policy not in names:
                raise ValueError(f"composite: rate_allocation names {r.policy!r}, not a sub-policy")
        if sum(r.percent for r in self.rate_allocation) > 100:
            raise ValueError("composite: rate_allocation percents add up to more than 100")
        return self


PolicyCfg.model_rebuild()


class DecisionCacheCfg(ConfigModel):
    sampled_cache_size: int = Field(0, ge=0)
    non_sampled_cache_size: int = Field(0, ge=0)


class TailSamplingConfig(ComponentConfig):
    """``processors.tail_sampling``."""

    decision_wait: Duration = Seconds(30)
    num_traces: int = Field(50_000, gt=0)
    expected_new_traces_per_sec: int = Field(0, ge=0)
    sample_on_first_match: bool = False
    block_on_overflow: bool = False
    drop_pending_traces_on_shutdown: bool = False
    decision_cache: DecisionCacheCfg = Field(default_factory=DecisionCacheCfg)
    policies: list[PolicyCfg] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> TailSamplingConfig:
        if self.decision_wait <= 0:
            raise ValueError("decision_wait must be greater than 0")
        if not self.policies:
            raise ValueError("missing required field 'policies': give at least one policy")
        names = [p.name for p in self.policies]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"policy names must be unique: {sorted(dup)}")
        return self
