"""The ``agentmetrics`` connector: the reference document's agent metrics, from spans.

OTLP names are chosen so that the standard OpenTelemetry -> Prometheus translation (``_total``
added to monotonic sums, the unit suffix ``_seconds`` for unit ``s``, ``_ratio`` for unit ``1``
gauges, each only if not already present) gives exactly the reference names:

=======================================  ======  =====================================
OTLP name (unit)                         type    Prometheus
=======================================  ======  =====================================
agent_workflow_executions ("")           sum     agent_workflow_executions_total
agent_workflow_duration (s)              hist    agent_workflow_duration_seconds
mcp_tool_calls ("")                      sum     mcp_tool_calls_total
mcp_tool_call_duration (s)               hist    mcp_tool_call_duration_seconds
a2a_messages_sent ("")                   sum     a2a_messages_sent_total
a2a_messages_received ("")               sum     a2a_messages_received_total
a2a_message_latency (s)                  hist    a2a_message_latency_seconds
http_request_duration (s)                hist    http_request_duration_seconds
errors ("")                              sum     errors_total
agent_workflow_failure_ratio (1)         gauge   agent_workflow_failure_ratio
agent_workflow_sla_compliance_ratio (1)  gauge   agent_workflow_sla_compliance_ratio
agent_workflow_error_budget_remaining_   gauge   agent_workflow_error_budget_remaining_ratio
ratio (1)
agent_workflow_error_budget_burn_rate    gauge   agent_workflow_error_budget_burn_rate
("")
=======================================  ======  =====================================
"""

from __future__ import annotations

import collections
import time
from typing import Any

from pipeline import Consumer, CreateSettings, Payload
from plugins._agentconv import (
    OUTCOMES,
    SPAN_KIND_CONSUMER,
    SPAN_KIND_PRODUCER,
    SPAN_KIND_SERVER,
    STATUS_ERROR,
    attr_str,
    exception_type,
    is_workflow_root,
    workflow_outcome,
    workflow_type,
)
from plugins._metricsagg import Aggregator, FlushingConnector, Kind, Metric, Temporality
from plugins.agentmetricsconnector.config import AgentMetricsConfig

WORKFLOW_BUCKETS = (0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0)
MCP_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0)
A2A_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0)
HTTP_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
)
LLM_OPERATIONS = frozenset({"chat", "text_completion", "generate_content", "embeddings"})
RECOVERABLE_ERRORS = frozenset(
    {"timeout", "rate_limited", "connection", "TimeoutError", "ConnectionError", "cancelled"}
)
UNKNOWN = "unknown"
NO_RESOURCE = b""


def window_label(seconds: float) -> str:
    """``300`` -> ``5m``, ``3600`` -> ``1h``, ``90`` -> ``90s``: the ``window`` label value."""
    s = round(seconds)
    if s % 3600 == 0:
        return f"{s // 3600}h"
    if s % 60 == 0:
        return f"{s // 60}m"
    return f"{s}s"


class SlidingWindows:
    """Per workflow type, counts of workflows over one sliding window of ``horizon`` seconds.

    Buckets are ``resolution`` seconds wide; the window sums the buckets that overlap it (so it
    may reach back up to one bucket further). Memory is bounded: ``horizon / resolution``
    buckets per type, and at most ``max_types`` types (others are not tracked; counted by the
    caller)."""

    def __init__(self, horizon: float, resolution: float, max_types: int) -> None:
        self.horizon = horizon
        self.resolution = resolution
        self.max_types = max_types
        # type -> deque of [bucket_start, total, bad, within_objective]
        self.types: dict[str, collections.deque[list[float]]] = {}

    def record(self, wf_type: str, now: float, bad: bool, within_objective: bool) -> bool:
        buckets = self.types.get(wf_type)
        if buckets is None:
            if self.max_types and len(self.types) >= self.max_types:
                return False
            buckets = self.types[wf_type] = collections.deque()
        start = now - (now % self.resolution)
        if not buckets or buckets[-1][0] != start:
            buckets.append([start, 0, 0, 0])
        b = buckets[-1]
        b[1] += 1
        b[2] += bad
        b[3] += within_objective
        return True

    def prune(self, now: float) -> None:
        cutoff = now - self.horizon - self.resolution
        for wf_type in list(self.types):
            buckets = self.types[wf_type]
            while buckets and buckets[0][0] < cutoff:
                buckets.popleft()
            if not buckets:
                del self.types[wf_type]

    def totals(self, wf_type: str, now: float) -> tuple[float, float, float]:
        """(total, bad, within objective) over the window (``horizon`` seconds)."""
        cutoff = now - self.horizon
        total = bad = ok = 0.0
        for start, t, b, o in reversed(self.types.get(wf_type, ())):
            if start + self.resolution <= cutoff:
                break
            total += t
            bad += b
            ok += o
        return total, bad, ok


class AgentMetricsConnector(FlushingConnector):
    """Aggregates agent metrics from spans; flushes OTLP metrics periodically."""

    def __init__(
        self, settings: CreateSettings, config: AgentMetricsConfig, next_consumer: Consumer
    ) -> None:
        temporality = (
            Temporality.DELTA
            if config.aggregation_temporality == "AGGREGATION_TEMPORALITY_DELTA"
            else Temporality.CUMULATIVE
        )
        # No scope name: the Prometheus exporter would add it as an ``otel_scope_name`` label,
        # and the reference document's label sets are exact.
        agg = Aggregator("", temporality, config.metrics_expiration)
        super().__init__(settings, next_consumer, agg, config.metrics_flush_interval)
        self.config = config
        self.names = config.attributes
        limit = config.aggregation_cardinality_limit
        exemplars = config.exemplars.max_per_data_point if config.exemplars.enabled else 0

        def metric(
            name: str, kind: Kind, description: str, unit: str = "", bounds: tuple = ()
        ) -> Metric:
            return agg.add_metric(
                Metric(
                    name,
                    kind,
                    description=description,
                    unit=unit,
                    bounds=bounds,
                    cardinality_limit=limit,
                    max_exemplars=exemplars if kind is Kind.HISTOGRAM else 0,
                    on_overflow=self.count_overflow,
                )
            )

        self.executions = metric(
            "agent_workflow_executions", Kind.COUNTER, "Agent workflow executions."
        )
        self.workflow_duration = metric(
            "agent_workflow_duration",
            Kind.HISTOGRAM,
            "Agent workflow execution duration.",
            "s",
            WORKFLOW_BUCKETS,
        )
        self.tool_calls = metric("mcp_tool_calls", Kind.COUNTER, "MCP tool calls.")
        self.tool_duration = metric(
            "mcp_tool_call_duration", Kind.HISTOGRAM, "MCP tool call duration.", "s", MCP_BUCKETS
        )
        self.a2a_sent = metric("a2a_messages_sent", Kind.COUNTER, "A2A messages sent.")
        self.a2a_received = metric("a2a_messages_received", Kind.COUNTER, "A2A messages received.")
        self.a2a_latency = metric(
            "a2a_message_latency",
            Kind.HISTOGRAM,
            "End-to-end A2A message latency (consumer start - producer start).",
            "s",
            A2A_BUCKETS,
        )
        self.http_duration = metric(
            "http_request_duration",
            Kind.HISTOGRAM,
            "HTTP server request duration.",
            "s",
            HTTP_BUCKETS,
        )
        self.errors = metric("errors", Kind.COUNTER, "Failed spans, classified.")
        self.failure_ratio = metric(
            "agent_workflow_failure_ratio",
            Kind.GAUGE,
            "Share of workflows whose outcome is a failure, over the failure window.",
            "1",
        )
        self.sla_ratio = metric(
            "agent_workflow_sla_compliance_ratio",
            Kind.GAUGE,
            "Share of workflows within their latency objective, over the failure window.",
            "1",
        )
        self.budget_remaining = metric(
            "agent_workflow_error_budget_remaining_ratio",
            Kind.GAUGE,
            "Error budget left over the SLO long window (1 = untouched, < 0 = overspent).",
            "1",
        )
        self.burn_rate = metric(
            "agent_workflow_error_budget_burn_rate",
            Kind.GAUGE,
            "Error budget burn rate over the short and long SLO windows.",
        )
        # one set of time buckets per distinct window length, 60 buckets per window
        lengths = {config.failure_window, config.slo.effective_budget_window}
        lengths.update(config.slo.burn_rate_windows)
        self.windows = {w: SlidingWindows(w, max(1.0, w / 60), limit) for w in sorted(lengths)}
        self._burn_windows = [(w, window_label(w)) for w in config.slo.burn_rate_windows]
        self._failure_outcomes = frozenset(config.failure_outcomes)
        self._producers: collections.OrderedDict[bytes, tuple[int, str]] = collections.OrderedDict()

    # -- aggregation -----------------------------------------------------------------------------
    async def consume(self, data: Payload) -> None:
        msg = data.message()
        now_ns = time.time_ns()
        now = now_ns / 1e9
        names = self.names
        consumers: list[tuple[Any, str]] = []
        producers = self._producers
        for rs in msg.resource_spans:
            for ss in rs.scope_spans:
                for span in ss.spans:
                    attrs = {kv.key: kv.value for kv in span.attributes}
                    kind = span.kind
                    failed = span.status.code == STATUS_ERROR
                    duration = (span.end_time_unix_nano - span.start_time_unix_nano) / 1e9
                    component = ""
                    if not span.parent_span_id and is_workflow_root(span, attrs, names):
                        self._workflow(span, attrs, duration, now_ns, now)
                        component = "workflow"
                    op = attrs.get(names.operation_name)
                    op_name = op.string_value if op is not None else ""
                    method = attrs.get(names.mcp_method_name)
                    if op_name == names.tool_operation or (
                        method is not None and method.string_value == names.mcp_tool_method
                    ):
                        self._tool_call(span, attrs, failed, duration, now_ns)
                        component = component or "mcp"
                    if kind in (SPAN_KIND_PRODUCER, SPAN_KIND_CONSUMER):
                        mtype = attrs.get(names.a2a_message_type)
                        if mtype is not None:
                            message_type = attr_str(mtype) or UNKNOWN
                            if kind == SPAN_KIND_PRODUCER:
                                self.a2a_sent.add(
                                    NO_RESOURCE,
                                    (
                                        ("message_type", message_type),
                                        (
                                            "recipient_type",
                                            self._s(attrs, names.a2a_recipient_type),
                                        ),
                                        ("priority", self._s(attrs, names.a2a_priority)),
                                    ),
                                    1,
                                    now_ns,
                                )
                                if self.config.a2a_producer_cache_size:
                                    producers[span.span_id] = (span.start_time_unix_nano, "")
                                    if len(producers) > self.config.a2a_producer_cache_size:
                                        producers.popitem(last=False)
                            else:
                                status = attrs.get(names.a2a_processing_status)
                                processing = (
                                    attr_str(status)
                                    if status is not None
                                    else ("failed" if failed else "processed")
                                )
                                self.a2a_received.add(
                                    NO_RESOURCE,
                                    (
                                        ("message_type", message_type),
                                        ("sender_type", self._s(attrs, names.a2a_sender_type)),
                                        ("processing_status", processing),
                                    ),
                                    1,
                                    now_ns,
                                )
                                consumers.append((span, message_type))
                            component = component or "a2a"
                    if kind == SPAN_KIND_SERVER:
                        http_method = attrs.get(names.http_method) or attrs.get("http.method")
                        if http_method is not None:
                            self._http(span, attrs, http_method, duration, now_ns)
                            component = component or "http"
                    if failed:
                        self._error(attrs, span, component, op_name, now_ns)
        for span, message_type in consumers:
            sent = producers.get(span.parent_span_id)
            if sent is None:
                for link in span.links:
                    sent = producers.get(link.span_id)
                    if sent is not None:
                        break
            if sent is not None:
                latency = max(span.start_time_unix_nano - sent[0], 0) / 1e9
                self.a2a_latency.observe(
                    NO_RESOURCE,
                    (("message_type", message_type),),
                    latency,
                    now_ns,
                    span.trace_id,
                    span.span_id,
                )

    @staticmethod
    def _s(attrs: dict[str, Any], key: str) -> str:
        value = attrs.get(key)
        return (attr_str(value) or UNKNOWN) if value is not None else UNKNOWN

    def _workflow(
        self, span: Any, attrs: dict[str, Any], duration: float, now_ns: int, now: float
    ) -> None:
        names = self.names
        given = attrs.get(names.workflow_outcome)
        outcome = attr_str(given) if given is not None else ""
        if outcome not in OUTCOMES:
            outcome = workflow_outcome(span, attrs, names)
        wf_type = workflow_type(span, attrs, names)
        tier = self._s(attrs, names.workflow_complexity_tier)
        agent = attrs.get(names.workflow_agent_id) or attrs.get(names.agent_id)
        agent_id = (attr_str(agent) or UNKNOWN) if agent is not None else UNKNOWN
        self.executions.add(
            NO_RESOURCE,
            (
                ("workflow_type", wf_type),
                ("agent_id", agent_id),
                ("outcome", outcome),
                ("complexity_tier", tier),
            ),
            1,
            now_ns,
        )
        self.workflow_duration.observe(
            NO_RESOURCE,
            (("workflow_type", wf_type), ("complexity_tier", tier)),
            duration,
            now_ns,
            span.trace_id,
            span.span_id,
        )
        objective = self.config.sla.objective(wf_type)
        within = objective is None or duration <= objective
        bad = outcome in self._failure_outcomes
        tracked = [w.record(wf_type, now, bad, within) for w in self.windows.values()]
        if not all(tracked):
            self.count_overflow("agent_workflow_failure_ratio", 1)

    def _tool_call(
        self, span: Any, attrs: dict[str, Any], failed: bool, duration: float, now_ns: int
    ) -> None:
        names = self.names
        server_value = attrs.get(names.mcp_server_name) or attrs.get(names.server_address)
        server = (attr_str(server_value) or UNKNOWN) if server_value is not None else UNKNOWN
        tool_value = attrs.get(names.tool_name)
        tool = attr_str(tool_value) if tool_value is not None else ""
        if not tool:
            tool = span.name.rsplit(" ", 1)[-1] or UNKNOWN
        error_value = attrs.get(names.error_type)
        failed = failed or error_value is not None
        if failed:
            error_type = (
                attr_str(error_value) if error_value is not None else exception_type(span)
            ) or "_OTHER"
        else:
            error_type = "none"
        self.tool_calls.add(
            NO_RESOURCE,
            (
                ("server", server),
                ("tool", tool),
                ("status", "error" if failed else "success"),
                ("error_type", error_type),
            ),
            1,
            now_ns,
        )
        self.tool_duration.observe(
            NO_RESOURCE,
            (("server", server), ("tool", tool)),
            duration,
            now_ns,
            span.trace_id,
            span.span_id,
        )

    def _http(
        self, span: Any, attrs: dict[str, Any], method: Any, duration: float, now_ns: int
    ) -> None:
        names = self.names
        route = attrs.get(names.http_route)
        code_value = attrs.get(names.http_status_code) or attrs.get("http.status_code")
        code = attr_str(code_value) if code_value is not None else ""
        status_class = f"{code[0]}xx" if len(code) == 3 and code.isdigit() else UNKNOWN
        self.http_duration.observe(
            NO_RESOURCE,
            (
                ("method", attr_str(method) or UNKNOWN),
                ("endpoint", (attr_str(route) or UNKNOWN) if route is not None else UNKNOWN),
                ("status_class", status_class),
            ),
            duration,
            now_ns,
            span.trace_id,
            span.span_id,
        )

    def _error(
        self, attrs: dict[str, Any], span: Any, component: str, op_name: str, now_ns: int
    ) -> None:
        names = self.names
        value = attrs.get(names.error_type)
        error_type = (attr_str(value) if value is not None else exception_type(span)) or "_OTHER"
        if not component:
            if names.db_system in attrs or names.db_system_legacy in attrs:
                component = "database"
            elif op_name in LLM_OPERATIONS:
                component = "llm"
            elif names.http_method in attrs or "http.method" in attrs:
                component = "http"
            else:
                component = "agent"
        severity_value = attrs.get(names.error_severity)
        severity = (
            attr_str(severity_value)
            if severity_value is not None
            else ("critical" if component == "workflow" else "error")
        )
        recoverable_value = attrs.get(names.error_recoverable)
        if recoverable_value is not None:
            recoverable = attr_str(recoverable_value)
        else:
            code_value = attrs.get(names.http_status_code) or attrs.get("http.status_code")
            code = attr_str(code_value) if code_value is not None else ""
            recoverable = (
                "true"
                if error_type in RECOVERABLE_ERRORS or code.startswith("5") or code == "429"
                else "false"
            )
        self.errors.add(
            NO_RESOURCE,
            (
                ("error_type", error_type),
                ("component", component),
                ("severity", severity),
                ("recoverable", recoverable),
            ),
            1,
            now_ns,
        )

    # -- derived gauges ----------------------------------------------------------------------------
    def before_flush(self, now_ns: int) -> None:
        now = now_ns / 1e9
        cfg = self.config
        for w in self.windows.values():
            w.prune(now)
        for m in (self.failure_ratio, self.sla_ratio, self.budget_remaining, self.burn_rate):
            m.clear()
        failure = self.windows[cfg.failure_window]
        budget_window = self.windows[cfg.slo.effective_budget_window]
        for wf_type in failure.types.keys() | budget_window.types.keys():
            label = (("workflow_type", wf_type),)
            total, bad, ok = failure.totals(wf_type, now)
            if total:
                self.failure_ratio.set(NO_RESOURCE, label, bad / total, now_ns)
                if cfg.sla.objective(wf_type) is not None:
                    self.sla_ratio.set(NO_RESOURCE, label, ok / total, now_ns)
            budget = 1.0 - cfg.slo.target_for(wf_type)
            for window, name in self._burn_windows:
                total_w, bad_w, _ = self.windows[window].totals(wf_type, now)
                if total_w:
                    self.burn_rate.set(
                        NO_RESOURCE, (*label, ("window", name)), (bad_w / total_w) / budget, now_ns
                    )
            total_b, bad_b, _ = budget_window.totals(wf_type, now)
            if total_b:
                remaining = 1.0 - (bad_b / total_b) / budget
                self.budget_remaining.set(NO_RESOURCE, label, remaining, now_ns)
