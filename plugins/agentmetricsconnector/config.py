"""``connectors.agentmetrics``: options."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from pipeline import ComponentConfig, ConfigModel, Duration, Seconds
from plugins._agentconv import OUTCOMES, AttributeNames
from plugins._agentdialects import DialectsConfig


class ExemplarsConfig(ConfigModel):
    """Exemplars (trace and span ids) on the histograms."""

    enabled: bool = True
    max_per_data_point: int = Field(3, ge=1)


class SlaConfig(ConfigModel):
    """Latency objectives per workflow type; ``default`` applies to types not listed (no
    objective, no SLA gauge, when unset)."""

    default: Duration | None = None
    objectives: dict[str, Duration] = Field(default_factory=dict)

    def objective(self, workflow_type: str) -> float | None:
        return self.objectives.get(workflow_type, self.default)


class SloConfig(ConfigModel):
    """The availability objective of workflows, for the error budget and burn rates.

    ``burn_rate_windows``: one ``agent_workflow_error_budget_burn_rate{window}`` gauge per
    window (the multi-window method pairs a short and a long one: 5m with 1h, 30m with 6h);
    ``budget_window`` (default: the longest burn-rate window) is the window over which
    ``agent_workflow_error_budget_remaining_ratio`` is computed."""

    target: float = Field(0.99, gt=0, lt=1)
    targets: dict[str, float] = Field(default_factory=dict)
    burn_rate_windows: list[Duration] = Field(
        default_factory=lambda: list[float](
            [Seconds(300), Seconds(1800), Seconds(3600), Seconds(21600)]
        )
    )
    budget_window: Duration | None = None

    def target_for(self, workflow_type: str) -> float:
        return self.targets.get(workflow_type, self.target)

    @property
    def effective_budget_window(self) -> float:
        return self.budget_window or max(self.burn_rate_windows)


class ToolCallJoinConfig(ConfigModel):
    """How the layers that trace one tool call are joined (see ``docs/agent-workflow.md``).

    ``window``: how long a trace's tool-call spans and failed spans are held, from the first
    one seen, waiting for the other layers of the same calls (an MCP server span exported by
    another process, in another request); ``0s`` joins only what arrives in one request.
    ``max_traces``: traces held at most; beyond it the oldest is settled early (counted,
    never lost). The same window and bound hold the tokens of inference calls whose trace's
    workflow root was not counted yet (for its workflow type and agent); the roots counted
    are remembered for them, the newest ``4 * max_traces``."""

    window: Duration = Seconds(10)
    max_traces: int = Field(10_000, ge=1)


class GenAIEventsConfig(ConfigModel):
    """How GenAI events (the logs input) are joined to their inference spans (see
    ``docs/agent-workflow.md``, "Logs: GenAI events").

    ``window``: how long an event with token usage waits for its span; one whose span does not
    arrive in time counts on its own. ``max_pending``: events waiting at most (beyond it the
    oldest counts on its own early, counted). ``max_remembered`` / ``remember``: inference
    spans and settled events remembered (at most that many, for that long) so that an event
    or a span arriving later is not counted twice."""

    window: Duration = Seconds(10)
    max_pending: int = Field(10_000, ge=1)
    max_remembered: int = Field(100_000, ge=1)
    remember: Duration = Seconds(300)


class ModelPrice(ConfigModel):
    """The price of one model, in US dollars per million tokens."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)


class AgentMetricsConfig(ComponentConfig):
    """``connectors.agentmetrics``."""

    metrics_flush_interval: Duration = Seconds(15)
    metrics_expiration: Duration = Seconds(600)
    aggregation_temporality: Literal[
        "AGGREGATION_TEMPORALITY_CUMULATIVE", "AGGREGATION_TEMPORALITY_DELTA"
    ] = "AGGREGATION_TEMPORALITY_CUMULATIVE"
    aggregation_cardinality_limit: int = Field(2000, ge=0)
    exemplars: ExemplarsConfig = Field(default_factory=ExemplarsConfig)
    failure_window: Duration = Seconds(300)
    failure_outcomes: list[str] = Field(default_factory=lambda: ["failed", "timeout"])
    sla: SlaConfig = Field(default_factory=SlaConfig)
    slo: SloConfig = Field(default_factory=SloConfig)
    a2a_producer_cache_size: int = Field(10_000, ge=0)
    tool_call_join: ToolCallJoinConfig = Field(default_factory=ToolCallJoinConfig)
    genai_events: GenAIEventsConfig = Field(default_factory=GenAIEventsConfig)
    prices: dict[str, ModelPrice] = Field(default_factory=dict)
    """Per model (``gen_ai.response.model``, else ``gen_ai.request.model``): input and output
    prices per million tokens, for ``agent_workflow_cost_usd_total``; a model not listed
    costs nothing (its tokens are still counted)."""
    attributes: AttributeNames = Field(default_factory=AttributeNames)
    dialects: DialectsConfig = Field(default_factory=DialectsConfig)
    """Extra or disabled dialect tables (see ``docs/agent-conventions.md``)."""

    @model_validator(mode="after")
    def _check(self) -> AgentMetricsConfig:
        bad = [o for o in self.failure_outcomes if o not in OUTCOMES]
        if bad:
            raise ValueError(f"failure_outcomes: unknown outcome(s) {bad}; known: {OUTCOMES}")
        for name in ("failure_window",):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be greater than 0")
        if self.genai_events.window < 0 or self.genai_events.remember < 0:
            raise ValueError("genai_events.window and genai_events.remember must be 0 or more")
        if self.tool_call_join.window < 0:
            raise ValueError("tool_call_join.window must be 0 or more")
        if not self.slo.burn_rate_windows or min(self.slo.burn_rate_windows) <= 0:
            raise ValueError("slo.burn_rate_windows: give at least one window, each > 0")
        if self.slo.budget_window is not None and self.slo.budget_window <= 0:
            raise ValueError("slo.budget_window must be greater than 0")
        for wf_type, target in self.slo.targets.items():
            if not 0 < target < 1:
                raise ValueError(f"slo.targets.{wf_type}: expected a value between 0 and 1")
        return self
