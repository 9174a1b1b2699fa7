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
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from pipeline import Consumer, CreateSettings, Host, Payload, workers
from pipeline.status import AgentMetricsProvider, GaugeSample
from plugins._agentconv import (
    OUTCOMES,
    SPAN_KIND_CONSUMER,
    SPAN_KIND_PRODUCER,
    SPAN_KIND_SERVER,
    STATUS_ERROR,
    attr_map,
    exception_type,
    workflow_outcome,
)
from plugins._metricsagg import Aggregator, FlushingConnector, Kind, Metric, Temporality
from plugins._native import load
from plugins._spanview import DECODED, SpanView, TracesView, cached_str
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
INTERESTING_KINDS = frozenset({SPAN_KIND_SERVER, SPAN_KIND_PRODUCER, SPAN_KIND_CONSUMER})


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

    def record(
        self, wf_type: str, now: float, bad: int, within_objective: int, total: int = 1
    ) -> bool:
        """Counts ``total`` workflows of a type at ``now``, ``bad`` of them failures and
        ``within_objective`` of them within their latency objective."""
        buckets = self.types.get(wf_type)
        if buckets is None:
            if self.max_types and len(self.types) >= self.max_types:
                return False
            buckets = self.types[wf_type] = collections.deque()
        start = now - (now % self.resolution)
        if not buckets or buckets[-1][0] != start:
            buckets.append([start, 0, 0, 0])
        b = buckets[-1]
        b[1] += total
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


class _SpanView:
    """A span of a :data:`TracesView`: attributes (a map of encoded values) decoded on demand."""

    __slots__ = ("_full", "attrs", "span")

    def __init__(self, span: Any, attrs: Any) -> None:
        self.span = span
        self.attrs = attrs
        self._full: Any = None

    @property
    def name(self) -> str:
        return str(self.span.name.decode("utf-8", "replace"))

    def get(self, key: str) -> str | None:
        value = self.attrs.get(key)
        if value is None:
            return None
        text = DECODED.get(value)
        return text if text is not None else cached_str(value)

    def label(self, key: str) -> str:
        value = self.attrs.get(key)
        if value is None:
            return UNKNOWN
        text = DECODED.get(value)
        if text is None:
            text = cached_str(value)
        return text or UNKNOWN

    def full(self) -> Any:
        """The span decoded in full (for exception events, links, status message)."""
        if self._full is None:
            self._full = Span.FromString(self.span.SerializeToString())
        return self._full


class AgentMetricsConnector(FlushingConnector, AgentMetricsProvider):
    """Aggregates agent metrics from spans; flushes OTLP metrics periodically. Offers its
    derived gauges as a :class:`pipeline.status.AgentMetricsProvider`."""

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
        settings.provide(self)
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
        # the encoded AnyValue of the marker values: compared without decoding
        self._tool_op_raw = AnyValue(
            string_value=config.attributes.tool_operation
        ).SerializeToString()
        self._tool_method_raw = AnyValue(
            string_value=config.attributes.mcp_tool_method
        ).SerializeToString()
        self._statuses: dict[bytes, int] = {}

        self._producers: collections.OrderedDict[bytes, int] = collections.OrderedDict()
        # the metrics the C scanner aggregates, in its order, with their label names
        self._native_metrics: tuple[tuple[Metric, tuple[str, ...]], ...] = (
            (self.tool_calls, ("server", "tool", "status", "error_type")),
            (self.tool_duration, ("server", "tool")),
            (self.a2a_sent, ("message_type", "recipient_type", "priority")),
            (self.a2a_received, ("message_type", "sender_type", "processing_status")),
            (self.http_duration, ("method", "endpoint", "status_class")),
            (self.errors, ("error_type", "component", "severity", "recoverable")),
            (self.executions, ("workflow_type", "agent_id", "outcome", "complexity_tier")),
            (self.workflow_duration, ("workflow_type", "complexity_tier")),
            (self.a2a_latency, ("message_type",)),
        )
        self._scanner = self._native_scanner(exemplars)

    def _native_scanner(self, max_exemplars: int) -> Any:
        """The C scanner for this config, or ``None`` (not built, disabled, or more exemplars
        per data point than it keeps)."""
        native = load("_agentscan")
        if native is None or max_exemplars > 16:
            return None
        n = self.names
        keys = (
            n.operation_name,
            n.mcp_method_name,
            n.mcp_server_name,
            n.server_address,
            n.tool_name,
            n.error_type,
            n.a2a_message_type,
            n.a2a_recipient_type,
            n.a2a_priority,
            n.a2a_sender_type,
            n.a2a_processing_status,
            n.http_method,
            "http.method",
            n.http_status_code,
            "http.status_code",
            n.http_route,
            n.db_system,
            n.db_system_legacy,
            n.error_severity,
            n.error_recoverable,
            n.workflow_name,
            n.workflow_id,
            n.workflow_type,
            n.workflow_outcome,
            n.workflow_complexity_tier,
            n.workflow_agent_id,
            n.agent_id,
        )
        return native.Scanner(
            tuple(k.encode() for k in keys),
            self._tool_op_raw,
            self._tool_method_raw,
            n.workflow_span_prefix.encode(),
            MCP_BUCKETS,
            HTTP_BUCKETS,
            WORKFLOW_BUCKETS,
            A2A_BUCKETS,
            max_exemplars,
            RECOVERABLE_ERRORS,
            LLM_OPERATIONS,
            OUTCOMES,
            self._producers,
            self.config.a2a_producer_cache_size,
        )

    # -- aggregation -----------------------------------------------------------------------------
    async def consume(self, data: Payload) -> None:
        """With the C scanner (``plugins/_native/_agentscan.c``), the request is walked once in
        C and the measurements arrive aggregated per series (A2A producers remembered and
        consumers matched there too); the rare spans it leaves to Python (see
        ``handle_span`` in the C source) and the pure-Python path read spans through
        :data:`plugins._spanview.TracesView` (attributes as a C-level map of encoded values)."""
        raw = data.to_bytes()
        now_ns = time.time_ns()
        now = now_ns / 1e9
        if self._scanner is not None:
            try:
                series, fallback, consumers, workflows = self._scanner.scan(raw)
            except ValueError:
                pass  # malformed: the Python path reports it as it always did
            else:
                # the spans left to Python are decoded in full before anything is counted, so
                # a corrupt one refuses the whole request with nothing changed (consume is
                # atomic: the engine then isolates the corrupt spans)
                views = []
                for start, end in fallback:
                    Span.FromString(raw[start:end])
                    views.append(SpanView.FromString(raw[start:end]))
                self._merge_native(series, now_ns)
                for (wf_type, outcome), durations in workflows.items():
                    self._windows(wf_type, outcome, durations, now)
                py_consumers: list[tuple[Any, str]] = []
                for view in views:
                    self._count_span(view, now_ns, now, py_consumers)
                self._match_consumers(consumers, now_ns)
                self._match_consumers(self._decoded_consumers(py_consumers), now_ns)
                return
        # the Python path counts span by span: the request is checked whole first (a full
        # parse), so a corrupt one changes nothing (consume is atomic)
        ExportTraceServiceRequest.FromString(raw)
        skeleton = TracesView.FromString(raw)
        py_consumers = []
        for rs in skeleton.resource_spans:
            for ss in rs.scope_spans:
                for sp in ss.spans:
                    self._count_span(sp, now_ns, now, py_consumers)
        self._match_consumers(self._decoded_consumers(py_consumers), now_ns)

    def _merge_native(self, series: list[Any], now_ns: int) -> None:
        """Adds the C scanner's per-series aggregates to the metrics."""
        metrics = self._native_metrics
        for index, values, count, total, buckets, exemplars in series:
            metric, labels = metrics[index]
            attrs = tuple(zip(labels, values, strict=True))
            if buckets is None:
                metric.add_count(NO_RESOURCE, attrs, count, now_ns)
            else:
                metric.merge(NO_RESOURCE, attrs, count, total, buckets, exemplars, now_ns)

    def _remember_producers(self, items: list[tuple[bytes, int]]) -> None:
        """Remembers A2A producer spans (span id -> start) for the consumers' latency."""
        cache_size = self.config.a2a_producer_cache_size
        if not cache_size:
            return
        producers = self._producers
        for span_id, start in items:
            producers[span_id] = start
            if len(producers) > cache_size:
                producers.popitem(last=False)

    @staticmethod
    def _decoded_consumers(
        consumers: list[tuple[Any, str]],
    ) -> Iterator[tuple[bytes, Iterable[bytes], int, bytes, bytes, str]]:
        for sp, message_type in consumers:
            links = (Span.Link.FromString(raw_link).span_id for raw_link in sp.links)
            yield (
                sp.parent_span_id,
                links,
                sp.start_time_unix_nano,
                sp.trace_id,
                sp.span_id,
                message_type,
            )

    def _match_consumers(
        self,
        consumers: Iterable[tuple[bytes, Iterable[bytes], int, bytes, bytes, str]],
        now_ns: int,
    ) -> None:
        """A2A latency: a consumer span's start minus its producer's (found by parent, else by
        link), when the producer was seen."""
        producers = self._producers
        for parent, links, start, trace_id, span_id, message_type in consumers:
            sent = producers.get(parent)
            if sent is None:
                for link_span_id in links:
                    sent = producers.get(link_span_id)
                    if sent is not None:
                        break
            if sent is not None:
                latency = max(start - sent, 0) / 1e9
                self.a2a_latency.observe(
                    NO_RESOURCE,
                    (("message_type", message_type),),
                    latency,
                    now_ns,
                    trace_id,
                    span_id,
                )

    def _count_span(
        self, sp: Any, now_ns: int, now: float, consumers: list[tuple[Any, str]]
    ) -> None:
        """The metrics of one span (a :data:`SpanView`), in Python."""
        kind = sp.kind
        status = sp.status
        failed = False
        if status:
            statuses = self._statuses
            code = statuses.get(status)
            if code is None:
                code = Status.FromString(status).code
                if len(statuses) < 1000:
                    statuses[status] = code
            failed = code == STATUS_ERROR
        names = self.names
        attrs = sp.attributes
        op_raw = attrs.get(names.operation_name)
        tool = op_raw == self._tool_op_raw or attrs.get(names.mcp_method_name) == (
            self._tool_method_raw
        )
        root = not sp.parent_span_id
        if not (root or tool or failed or kind in INTERESTING_KINDS):
            return  # nothing to count for this span
        component = ""
        view = _SpanView(sp, attrs)
        if root and self._is_workflow_root(view):
            self._workflow(view, now_ns, now)
            component = "workflow"
        op_name = cached_str(op_raw) if op_raw is not None else ""
        if tool:
            self._tool_call(view, failed, now_ns)
            component = component or "mcp"
        if kind in (SPAN_KIND_PRODUCER, SPAN_KIND_CONSUMER):
            mtype = view.get(names.a2a_message_type)
            if mtype is not None:
                message_type = mtype or UNKNOWN
                if kind == SPAN_KIND_PRODUCER:
                    self.a2a_sent.add(
                        NO_RESOURCE,
                        (
                            ("message_type", message_type),
                            ("recipient_type", view.label(names.a2a_recipient_type)),
                            ("priority", view.label(names.a2a_priority)),
                        ),
                        1,
                        now_ns,
                    )
                    self._remember_producers([(sp.span_id, sp.start_time_unix_nano)])
                else:
                    status_value = view.get(names.a2a_processing_status)
                    processing = (
                        status_value
                        if status_value is not None
                        else ("failed" if failed else "processed")
                    )
                    self.a2a_received.add(
                        NO_RESOURCE,
                        (
                            ("message_type", message_type),
                            ("sender_type", view.label(names.a2a_sender_type)),
                            ("processing_status", processing),
                        ),
                        1,
                        now_ns,
                    )
                    consumers.append((sp, message_type))
                component = component or "a2a"
        if kind == SPAN_KIND_SERVER:
            http_method = view.get(names.http_method) or view.get("http.method")
            if http_method is not None:
                self._http(view, http_method, now_ns)
                component = component or "http"
        if failed:
            self._error(view, component, op_name, now_ns)

    def _is_workflow_root(self, view: _SpanView) -> bool:
        names = self.names
        return (
            view.name.startswith(names.workflow_span_prefix)
            or names.workflow_name in view.attrs
            or names.workflow_id in view.attrs
            or names.workflow_type in view.attrs
        )

    def _workflow(self, view: _SpanView, now_ns: int, now: float) -> None:
        names = self.names
        sp = view.span
        outcome = view.get(names.workflow_outcome) or ""
        if outcome not in OUTCOMES:
            full = view.full()
            outcome = workflow_outcome(full, attr_map(full), names)
        wf_type = view.get(names.workflow_type) or view.get(names.workflow_name) or ""
        if not wf_type:
            name = view.name
            prefix = names.workflow_span_prefix
            wf_type = (name[len(prefix) :] if name.startswith(prefix) else name) or UNKNOWN
        tier = view.label(names.workflow_complexity_tier)
        agent_id = view.get(names.workflow_agent_id) or view.get(names.agent_id) or UNKNOWN
        duration = (sp.end_time_unix_nano - sp.start_time_unix_nano) / 1e9
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
            sp.trace_id,
            sp.span_id,
        )
        self._windows(wf_type, outcome, (duration,), now)

    def _windows(self, wf_type: str, outcome: str, durations: Sequence[float], now: float) -> None:
        """Counts workflows of one type and outcome in the failure / SLO windows."""
        n = len(durations)
        objective = self.config.sla.objective(wf_type)
        within = n if objective is None else sum(1 for d in durations if d <= objective)
        bad = n if outcome in self._failure_outcomes else 0
        tracked = [w.record(wf_type, now, bad, within, n) for w in self.windows.values()]
        if not all(tracked):
            self.count_overflow("agent_workflow_failure_ratio", n)

    def _tool_call(self, view: _SpanView, failed: bool, now_ns: int) -> None:
        names = self.names
        sp = view.span
        server = view.get(names.mcp_server_name) or view.get(names.server_address) or UNKNOWN
        tool = view.get(names.tool_name) or view.name.rsplit(" ", 1)[-1] or UNKNOWN
        error_value = view.get(names.error_type)
        failed = failed or error_value is not None
        error_type = (error_value or exception_type(view.full()) or "_OTHER") if failed else "none"
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
            (sp.end_time_unix_nano - sp.start_time_unix_nano) / 1e9,
            now_ns,
            sp.trace_id,
            sp.span_id,
        )

    def _http(self, view: _SpanView, method: str, now_ns: int) -> None:
        names = self.names
        sp = view.span
        code = view.get(names.http_status_code) or view.get("http.status_code") or ""
        status_class = f"{code[0]}xx" if len(code) == 3 and code.isdigit() else UNKNOWN
        self.http_duration.observe(
            NO_RESOURCE,
            (
                ("method", method or UNKNOWN),
                ("endpoint", view.label(names.http_route)),
                ("status_class", status_class),
            ),
            (sp.end_time_unix_nano - sp.start_time_unix_nano) / 1e9,
            now_ns,
            sp.trace_id,
            sp.span_id,
        )

    def _error(self, view: _SpanView, component: str, op_name: str, now_ns: int) -> None:
        names = self.names
        attrs = view.attrs
        error_type = view.get(names.error_type) or exception_type(view.full()) or "_OTHER"
        if not component:
            if names.db_system in attrs or names.db_system_legacy in attrs:
                component = "database"
            elif op_name in LLM_OPERATIONS:
                component = "llm"
            elif names.http_method in attrs or "http.method" in attrs:
                component = "http"
            else:
                component = "agent"
        severity = view.get(names.error_severity)
        if severity is None:
            severity = "critical" if component == "workflow" else "error"
        recoverable = view.get(names.error_recoverable)
        if recoverable is None:
            code = view.get(names.http_status_code) or view.get("http.status_code") or ""
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
        for w in self.windows.values():
            w.prune(now)
        for m in (self.failure_ratio, self.sla_ratio, self.budget_remaining, self.burn_rate):
            m.clear()
        for metric, labels, value in self._derived(now):
            metric.set(NO_RESOURCE, labels, value, now_ns)

    async def start(self, host: Host) -> None:
        await super().start(host)
        ctx = workers.current()
        if ctx is not None:
            ctx.expose(self._windows_key, self._window_state)

    @property
    def _windows_key(self) -> str:
        return f"agentmetrics-windows/{self.settings.id}"

    def _window_state(self) -> dict[float, dict[str, list[list[float]]]]:
        return {
            h: {t: [list(b) for b in bs] for t, bs in w.types.items()}
            for h, w in self.windows.items()
        }

    async def prepare_flush(self, now_ns: int) -> None:
        """With several workers (``service.workers``), each counts the workflows it owns:
        the primary computes the derived gauges from every worker's windows added up (the
        same buckets in every process: they start at multiples of the resolution), the
        others export none, so the merged scrape holds the gauges of one process."""
        ctx = workers.current()
        if ctx is None or ctx.count <= 1:
            self.before_flush(now_ns)
            return
        now = now_ns / 1e9
        for w in self.windows.values():
            w.prune(now)
        for m in (self.failure_ratio, self.sla_ratio, self.budget_remaining, self.burn_rate):
            m.clear()
        if not ctx.primary:
            return
        states = await ctx.gather(self._windows_key)
        merged: dict[float, SlidingWindows] = {}
        for horizon, own in self.windows.items():
            total = SlidingWindows(own.horizon, own.resolution, 0)
            by_type: dict[str, dict[float, list[float]]] = {}
            for state in states:
                for wf_type, buckets in (state or {}).get(horizon, {}).items():
                    slots = by_type.setdefault(wf_type, {})
                    for start, t, b, o in buckets:
                        slot = slots.setdefault(start, [start, 0, 0, 0])
                        slot[1] += t
                        slot[2] += b
                        slot[3] += o
            for wf_type, slots in by_type.items():
                total.types[wf_type] = collections.deque(slots[s] for s in sorted(slots))
            total.prune(now)
            merged[horizon] = total
        for metric, labels, value in self._derived(now, merged):
            metric.set(NO_RESOURCE, labels, value, now_ns)

    def _derived(
        self, now: float, windows: dict[float, SlidingWindows] | None = None
    ) -> Iterator[tuple[Metric, tuple[tuple[str, str], ...], float]]:
        """The failure ratio, SLA compliance, error budget and burn rates of every workflow
        type, over their windows at ``now`` (``windows``: instead of this process's)."""
        cfg = self.config
        windows = self.windows if windows is None else windows
        failure = windows[cfg.failure_window]
        budget_window = windows[cfg.slo.effective_budget_window]
        for wf_type in failure.types.keys() | budget_window.types.keys():
            label = (("workflow_type", wf_type),)
            total, bad, ok = failure.totals(wf_type, now)
            if total:
                yield self.failure_ratio, label, bad / total
                if cfg.sla.objective(wf_type) is not None:
                    yield self.sla_ratio, label, ok / total
            budget = 1.0 - cfg.slo.target_for(wf_type)
            for window, name in self._burn_windows:
                total_w, bad_w, _ = windows[window].totals(wf_type, now)
                if total_w:
                    yield self.burn_rate, (*label, ("window", name)), (bad_w / total_w) / budget
            total_b, bad_b, _ = budget_window.totals(wf_type, now)
            if total_b:
                yield self.budget_remaining, label, 1.0 - (bad_b / total_b) / budget

    def agent_gauges(self) -> list[GaugeSample]:
        """The derived gauges as the next flush would export them (for the ``console``)."""
        return [
            GaugeSample(metric.name, dict(labels), value)
            for metric, labels, value in self._derived(time.time())
        ]
