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

import bisect
import collections
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from pipeline import Consumer, CreateSettings, Host, Payload, Signal, workers
from pipeline.pdata import JoinedParts
from pipeline.status import AgentMetricsProvider, GaugeSample
from plugins._agentconv import (
    DEFAULT_ERROR_RULES,
    OUTCOMES,
    SPAN_KIND_CONSUMER,
    SPAN_KIND_PRODUCER,
    SPAN_KIND_SERVER,
    STATUS_ERROR,
    ErrorClassifier,
    agent_label,
    attr_map,
    duration_of,
    exception_type,
    workflow_outcome,
    workflow_type_of,
)
from plugins._agentdialects import (
    Dialects,
    Role,
    SpanFacts,
    load_dialects,
    value_text,
)
from plugins._agentdialects.tables import LABELS
from plugins._metricsagg import Aggregator, FlushingConnector, Kind, Metric, Temporality
from plugins._native import load
from plugins._spanview import DECODED, SpanView, TracesView, cached_str
from plugins.agentmetricsconnector.calls import (
    FRAMEWORK,
    MCP_CLIENT,
    MCP_SERVER,
    Call,
    CallJoiner,
    Failure,
    Layer,
)
from plugins.agentmetricsconnector.config import AgentMetricsConfig
from plugins.agentmetricsconnector.events import EventJoiner, SpanUsage, TokenCount, read_events

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
# the OpenTelemetry GenAI metrics' buckets (gen_ai.client.token.usage,
# gen_ai.client.operation.duration)
TOKEN_BUCKETS = tuple(float(4**i) for i in range(14))  # 1, 4, 16, ... 67108864
GENAI_DURATION_BUCKETS = tuple(0.01 * 2**i for i in range(14))  # 0.01 ... 81.92
LLM_OPERATIONS = frozenset({"chat", "text_completion", "generate_content", "embeddings"})
RECOVERABLE_ERRORS = frozenset(
    {"timeout", "rate_limited", "connection", "TimeoutError", "ConnectionError", "cancelled"}
)
UNKNOWN = "unknown"
# what labelled an inference call's workflow totals (otelcol_connector_agentmetrics_
# workflow_token_calls_total{result}: see _count_tokens)
TOKEN_RESULTS = ("stamped", "root", "waited", "no_root")
STAMPED, ROOT, WAITED, NO_ROOT = range(len(TOKEN_RESULTS))
UNBOUNDED = 1 << 62  # a memory's size while a request's roots are counted
FACTS_CACHE = 4096  # span shapes whose dialect facts are kept
SHAPE_MEMO = 4096  # span shapes (of the C scanner) whose reading is remembered, per context
SHAPE_CONTEXTS = 256  # (scope, service) pairs with such a memo
MAX_SHAPE_KEYS = 1024  # the C scanner's bound (plugins/_native/_agentscan.c)
JOIN_SHAPES = 4096  # shapes the C scanner may pack (see _learn) at most
JOIN_SERIES = 65_536  # distinct tool-call layer readings it may pack at most
LINK = "link"  # a remembered reading: the span is only a parent link (see _read_span)
# a learned reading (not remembered: the span is read each time): the span neither failed nor
# is a tool-call layer, so it gives the joiner at most a parent link (an inference span, the
# root agent run); the C scanner hands it over to Python and packs its trace's layers
LINK_ONLY = "link only"
# a learned reading of a failed span by its shape and exception type (not remembered: the span
# is read each time): it is not a tool-call layer, so it gives the joiner a failure and its
# parent link; the C scanner hands it over to Python and packs its trace's layers (learned as
# -3, see _failed_shape)
FAILURE_ONLY = "failure only"
# a learned reading of a failed workflow root by its shape and exception type: all of its
# reading but its execution, error labels, ids, times and message follows from these (see
# _read_span); the C scanner counts the next ones (``failed_root`` in _agentscan.c, learned as
# -4: its failure to the joiner, -5: a failure the peer answered with, -6: a status report,
# no failure) and hands over their failures only (the Failure's arguments, see _read_fallback)
FAILED_ROOTS = {(False, False): -4, (False, True): -5, (True, False): -6, (True, True): -6}
# a context's memo of readings by shape (see _Shape): shape -> LINK or a tool-call layer's
# reading; (shape, exception type) -> a failed tool-call layer's reading; (shape, exception
# type, None) -> FAILURE_ONLY (learned so)
ShapeMemo = dict[bytes | tuple[bytes, str] | tuple[bytes, str, bool | None], Any]
NO_RESOURCE = b""
INTERESTING_KINDS = frozenset({SPAN_KIND_SERVER, SPAN_KIND_PRODUCER, SPAN_KIND_CONSUMER})
_OBSERVE = Metric.observe


class RootMemory(collections.OrderedDict[bytes, tuple[str, str]]):
    """The connector's memory of workflow roots (trace id -> (workflow type, agent id), for the
    tokens of their traces' inference spans: ``_count_tokens``), the twin of the C scanner's
    ``_agentscan.RootMemory`` (a C table keyed by the raw trace id): at most ``size`` entries,
    the least recently put dropped first (:meth:`put` makes a trace the newest), what an
    OrderedDict trimmed from the front to ``size`` after each put holds, in the same order;
    setting ``size`` drops the oldest beyond it."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self._size = max(size, 0)

    @property
    def size(self) -> int:
        return self._size

    @size.setter
    def size(self, size: int) -> None:
        self._size = max(size, 0)
        while len(self) > self._size:
            self.popitem(last=False)

    def put(self, trace: bytes, value: tuple[str, str]) -> None:
        """``trace`` -> ``value`` as the newest entry, the oldest dropped beyond ``size``
        (with ``size`` 0 nothing is kept)."""
        if trace in self:
            self[trace] = value
            self.move_to_end(trace)
        elif self._size > 0:
            if len(self) >= self._size:
                self.popitem(last=False)
            self[trace] = value


def _nothing() -> None:
    """An operation of a batch counted already (see _merge_native)."""


_DONE: tuple[Any, tuple[Any, ...]] = (_nothing, ())


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


def exception_message(span: Any) -> str:
    """``exception.message`` of a decoded span's first exception event, or ``""``."""
    for ev in span.events:
        if ev.name == "exception":
            for kv in ev.attributes:
                if kv.key == "exception.message":
                    return str(kv.value.string_value)
    return ""


GATEWAY_DIALECT = "gateway"


def encoded_string(text: str) -> bytes:
    """``AnyValue(string_value=text)`` encoded (its one field: tag 0x0a, length, UTF-8)."""
    data = text.encode()
    n = len(data)
    head = bytearray(b"\x0a")
    while n >= 0x80:
        head.append((n & 0x7F) | 0x80)
        n >>= 7
    head.append(n)
    return bytes(head) + data


# the labels of the tool-call join's ids: call id, JSON-RPC request id, MCP session id
ID_LABELS = ("tool_call_id", "jsonrpc_request_id", "mcp_session_id")


def join_id_sources(dialects: Dialects) -> tuple[tuple[tuple[str, ...], ...], frozenset[str]]:
    """The attributes each join id (:data:`ID_LABELS`) is read from by any rule of the
    tables, in order, and the ids some rule reads from the span name. The C scanner packs a
    layer with ids only when exactly one of them is present (see ``_id_keys``); an id a rule
    may read from the span name is never packed (a span with that id is not learned)."""
    compiled = dialects.compiled
    keys = compiled.attribute_keys
    out: dict[str, list[str]] = {label: [] for label in ID_LABELS}
    named: set[str] = set()  # ids some rule reads from the span name
    for rule in compiled.rules:
        for label, sources in rule.labels:
            found = out.get(LABELS[label])
            if found is None:
                continue
            for src in sources:
                if src.key < 0:
                    named.add(LABELS[label])
                elif keys[src.key] not in found:
                    found.append(keys[src.key])
    return tuple(tuple(out[label]) for label in ID_LABELS), frozenset(named)


def defer_markers(
    dialects: Dialects, names: Any
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """The attribute keys, span-name prefixes and scope-name prefixes of the dialects'
    ``detect`` alternatives: a span with none of them is in no dialect (the C scanner counts
    it). The gateway's own dialect is left out (workflow roots, ``mcp.server.name``,
    PRODUCER/CONSUMER spans with ``a2a.message.type``: the scanner counts those itself, and
    sends its failed spans and tool calls to Python anyway), and so are the attributes the
    workflow processor writes on every span (they mark a workflow only on its root, which is
    counted either way), and so are the dialects whose rules give no role (they say something
    of failed spans only, which Python reads anyway); a dialect that detects a span by nothing
    of these (an empty ``detect``, a name regular expression) makes every span one for Python
    (the empty name prefix)."""
    compiled = dialects.compiled
    written = {
        names.workflow_id,
        names.workflow_type,
        names.workflow_outcome,
        names.workflow_complexity_tier,
        names.workflow_agent_id,
    }
    keys: dict[str, None] = {}
    prefixes: dict[str, None] = {}
    scopes: dict[str, None] = {}
    only_none = {i for i, _ in enumerate(compiled.dialects)} - {
        r.dialect for r in compiled.rules if r.role is not Role.NONE
    }
    for index, (name, detect) in enumerate(zip(compiled.dialects, compiled.detect, strict=True)):
        if name == GATEWAY_DIALECT or index in only_none:
            continue  # (a dialect giving no role says something of failed spans only)
        if not detect:
            prefixes[""] = None
        for alt in detect:
            alt_keys = [compiled.attribute_keys[k] for k, _ in alt.equals]
            alt_keys += [compiled.attribute_keys[k] for k in alt.present]
            if alt_keys:
                # one key of the alternative is enough (all must be there for it to hold)
                usable = [k for k in alt_keys if k not in written]
                if usable:
                    keys.setdefault(usable[0])
                    continue
            if alt.name_prefix:
                prefixes.update(dict.fromkeys(alt.name_prefix))
            elif alt.scope_prefix:
                scopes.update(dict.fromkeys(alt.scope_prefix))
            elif not alt_keys:
                prefixes[""] = None
    return tuple(keys), tuple(prefixes), tuple(scopes)


class _Context:
    """The resource and instrumentation scope of spans (encoded), decoded on demand."""

    __slots__ = ("_scope", "_service", "resource", "scope")

    def __init__(self, resource: bytes, scope: bytes) -> None:
        self.resource = resource
        self.scope = scope
        self._service: str | None = None
        self._scope: str | None = None

    @property
    def service_name(self) -> str:
        if self._service is None:
            self._service = ""
            if self.resource:
                for kv in Resource.FromString(self.resource).attributes:
                    if kv.key == "service.name":
                        self._service = kv.value.string_value
        return self._service

    @property
    def scope_name(self) -> str:
        if self._scope is None:
            self._scope = InstrumentationScope.FromString(self.scope).name if self.scope else ""
        return self._scope


class _Batch:
    """What a request's spans add, gathered before anything is counted (consume is atomic):
    metric operations in span order, workflows for the windows, A2A producers and consumers,
    tool-call layers and failures for the joiner."""

    __slots__ = ("a2a_clients", "a2a_servers", "consumers", "failures", "inferences", "layers",
                 "links", "marks", "ops", "producers", "roots", "workflows")  # fmt: skip

    def __init__(self) -> None:
        self.ops: list[tuple[Any, tuple[Any, ...]]] = []
        # (index in ops, offset of the span) of each span the C scanner left to Python that
        # is read here (not completed from a memo): where its operations are in the request
        # (see _merge_native)
        self.marks: list[tuple[int, int]] = []
        self.workflows: list[tuple[str, str, float]] = []
        # the workflow roots counted: (offset of the span, trace id, (workflow type, agent
        # id)), for the tokens of their traces' inference spans (see _count_tokens); the
        # offset in the request of a span the C scanner left to Python (else 0)
        self.roots: list[tuple[int, bytes, tuple[str, str]]] = []
        self.producers: list[tuple[bytes, int]] = []
        # A2A consumers: (parent, link span ids, start, trace, span, message type)
        self.consumers: list[tuple[bytes, list[bytes], int, bytes, bytes, str]] = []
        self.layers: list[Layer] = []
        self.failures: list[Failure] = []
        self.links: list[tuple[bytes, bytes, bytes]] = []  # (trace, span, parent)
        self.a2a_clients: list[tuple[bytes, int]] = []  # (trace, start) of A2A client spans
        self.a2a_servers: list[tuple[Any, str]] = []  # A2A server spans, message type
        self.inferences: list[SpanUsage] = []  # inference spans, for the GenAI events' join


class _SpanView:
    """A span of a :data:`TracesView`: attributes (a map of encoded values) decoded on demand."""

    __slots__ = ("_exception", "_full", "attrs", "encoded", "failure", "span")

    def __init__(
        self,
        span: Any,
        attrs: Any,
        full: Any = None,
        encoded: bytes = b"",
        failure: tuple[str, str, str] | None = None,
    ) -> None:
        self.span = span
        self.attrs = attrs
        self._full: Any = full
        self.encoded = encoded  # the span's own encoding, when the caller has it
        # a failed span's (status message, exception type, exception message) when the C
        # scanner gave them (``failure_facts`` in _agentscan.c): no full decode for them
        self.failure = failure
        self._exception: str | None = failure[1] if failure is not None else None

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
        """The span decoded in full (for exception events, links, status message): from its
        own encoding when given (a span the C scanner left to Python), else re-encoded."""
        if self._full is None:
            self._full = Span.FromString(self.encoded or self.span.SerializeToString())
        return self._full

    def exception(self) -> str:
        """:func:`exception_type` of the span decoded in full (read once)."""
        if self._exception is None:
            self._exception = exception_type(self.full())
        return self._exception

    def status_message(self) -> str:
        """``status.message`` of the span decoded in full."""
        failure = self.failure
        return failure[0] if failure is not None else str(self.full().status.message)

    def failure_message(self) -> str:
        """The status message, else :func:`exception_message` of the span decoded in full."""
        failure = self.failure
        if failure is not None:
            return failure[0] or failure[2]
        full = self.full()
        return str(full.status.message or exception_message(full))


class _Shape:
    """A span's shape as the C scanner gives it (``span_shape`` in ``_agentscan.c``: name,
    kind, parent or not, status, the attribute entries the dialect tables and the tool-call
    markers read) and the memo of its (scope, service) context: what :meth:`_read_span`
    concluded for the first span of this shape when that is a function of the shape alone
    (a parent link only, or a tool-call layer that did not fail)."""

    __slots__ = ("key", "memo", "where")

    def __init__(self, key: bytes, memo: ShapeMemo, where: tuple[bytes, bytes, bytes]) -> None:
        self.key = key
        self.memo = memo
        self.where = where  # (resource, scope, shape): the C scanner's key of the reading


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
        self.function_calls = metric(
            "agent_tool_calls",
            Kind.COUNTER,
            "Tool calls that are not MCP (a framework's function tools), once per call.",
        )
        self.function_duration = metric(
            "agent_tool_call_duration",
            Kind.HISTOGRAM,
            "Duration of tool calls that are not MCP (the caller's span).",
            "s",
            MCP_BUCKETS,
        )
        self.token_usage = metric(
            "gen_ai.client.token.usage",
            Kind.HISTOGRAM,
            "Number of input and output tokens used (derived from inference spans).",
            "{token}",
            TOKEN_BUCKETS,
        )
        self.operation_duration = metric(
            "gen_ai.client.operation.duration",
            Kind.HISTOGRAM,
            "GenAI operation duration (derived from inference spans).",
            "s",
            GENAI_DURATION_BUCKETS,
        )
        self.workflow_tokens = metric(
            "agent_workflow_tokens",
            Kind.COUNTER,
            "Tokens used by the inference calls of workflow executions.",
            "{token}",
        )
        # the currency is in the name (a Prometheus name carries its unit; the translation
        # drops the {USD} annotation): agent_workflow_cost_usd_total
        self.workflow_cost = metric(
            "agent_workflow_cost_usd",
            Kind.COUNTER,
            "Cost in US dollars of the inference calls of workflow executions (price table).",
            "{USD}",
        )
        service = settings.telemetry.service
        self._join_counter = service.counter(
            "otelcol_connector_agentmetrics_tool_call_layers",
            "Spans of tool calls by what became of them: joined into a call counted once "
            "(joined), the caller of a call (caller), a late layer of a call already counted "
            "(late).",
            ("connector", "result"),
        )
        self._pending_gauge = service.gauge(
            "otelcol_connector_agentmetrics_join_pending_traces",
            "Traces whose tool calls and failures wait in the join window.",
            ("connector",),
        )
        self._early_counter = service.counter(
            "otelcol_connector_agentmetrics_join_early_settled_traces",
            "Traces settled before the end of their join window (tool_call_join.max_traces).",
            ("connector",),
        )
        join = config.tool_call_join
        self._classifier = ErrorClassifier(DEFAULT_ERROR_RULES)
        self.joiner = CallJoiner(join.window, join.max_traces, self._classifier.match)
        self._late_seen = 0
        self._early_seen = 0
        self._caller_child: Any = None  # the labelled children _settle sets, once created
        # the workflow roots counted, for the tokens of their traces' inference spans that carry
        # no stamp of the workflow processor: trace id -> (workflow type, agent id), the newest
        # 4 x tool_call_join.max_traces (the joiner's memories' bound; a RootMemory, with the C
        # scanner its C table of raw trace ids, where it puts its roots itself: put_roots); the
        # inference calls of
        # traces whose root was not counted yet, held per trace for tool_call_join.window
        # (trace -> (deadline, [(input tokens, output tokens, cost)])): see _count_tokens
        self._roots_size = 4 * join.max_traces
        self._wf_roots: Any = RootMemory(self._roots_size)
        self._token_waits: collections.OrderedDict[
            bytes, tuple[float, list[tuple[int | None, int | None, float]]]
        ] = collections.OrderedDict()
        self._token_window = join.window
        self._token_max = join.max_traces
        # inference calls by the workflow their tokens were counted for (see TOKEN_RESULTS),
        # and as last reported
        self._token_results = [0] * len(TOKEN_RESULTS)
        self._token_reported = [0] * len(TOKEN_RESULTS)
        self._token_counter = service.counter(
            "otelcol_connector_agentmetrics_workflow_token_calls",
            "Inference calls with token usage by the workflow their tokens were counted for in "
            "agent_workflow_tokens_total and agent_workflow_cost_usd_total: the workflow "
            "processor's stamp on the span (stamped), the root of its trace counted before or "
            "in the same request (root) or within tool_call_join.window after it (waited), or "
            "none, no workflow root of its trace counted by then: not in those totals "
            "(no_root).",
            ("connector", "result"),
        )
        self._pending_child: Any = None
        self._events_counter = service.counter(
            "otelcol_connector_agentmetrics_genai_events",
            "GenAI events (log records) by what became of their token usage: given to their "
            "span that had none (joined), already counted by their span or an earlier event "
            "(duplicate), counted on their own when their span did not arrive in time (alone) "
            "or when too many waited (early), none to count (no_usage); remembered spans "
            "forgotten to bound memory (forgotten).",
            ("connector", "result"),
        )
        self._events_gauge = service.gauge(
            "otelcol_connector_agentmetrics_genai_events_pending",
            "GenAI events with token usage waiting for their span.",
            ("connector",),
        )
        ev = config.genai_events
        # whether a logs input feeds this instance (set by the factory, or by the first logs
        # request): only then are inference spans remembered for the GenAI events' join
        self.accepts_logs = False
        self.events = EventJoiner(
            ev.window,
            ev.max_pending,
            ev.max_remembered,
            ev.remember,
            lambda result, n: self._events_counter.labels(settings.name, result).inc(n),
        )
        self._users = 0
        self.on_stop: Any = None  # the factory forgets the shared instance at its last shutdown
        self.dialects: Dialects = load_dialects(config.dialects, config.attributes)
        self._role = Role
        # the roles whose failed root is read with more than its execution and failure
        self._root_roles = frozenset({Role.INFERENCE, Role.A2A_CLIENT, Role.A2A_SERVER})
        self._dialect_keys = self.dialects.attribute_keys
        self._facts_cache: dict[tuple[Any, ...], SpanFacts] = {}
        # the attributes the tool-call join ids are read from (see _id_keys), in order: call
        # id sources, then JSON-RPC request id sources; the session id sources
        sources, self._named_ids = join_id_sources(self.dialects)
        self._call_sources, self._rpc_sources, self._session_sources = sources
        self._id_sources = (*self._call_sources, *self._rpc_sources, *self._session_sources)
        self._join_id_keys = (*self._call_sources, *self._rpc_sources)
        self._join_id_keys_raw = tuple(k.encode() for k in self._join_id_keys)
        # what makes a span one for the Python path beyond failed spans and tool calls: an
        # attribute or a name / scope prefix that a dialect table recognises (the workflow
        # attributes the workflow processor writes on every span are not such a marker)
        keys, prefixes, scopes = defer_markers(self.dialects, self.names)
        self._defer_keys = keys
        self._defer_names = tuple(p.encode() for p in prefixes)
        self._defer_scopes = scopes
        self._prices = {m: (p.input / 1e6, p.output / 1e6) for m, p in config.prices.items()}
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
        # the label sets of settled tool calls, by (mcp, server, tool, tool type, status, error)
        self._call_labels: dict[tuple[Any, ...], tuple[Any, ...]] = {}
        # (scope, service) -> {shape: remembered reading} (see _Shape)
        self._shapes: dict[tuple[str, str], ShapeMemo] = {}
        # gen_ai.operation.name values of agent runs and workflows (encoded AnyValues)
        self._run_ops_raw = frozenset(
            AnyValue(string_value=op).SerializeToString()
            for op in ("invoke_agent", "invoke_workflow", "create_agent")
        )

        # A2A producer spans (span id -> start), the newest a2a_producer_cache_size; a Memory
        # with the C scanner (_native_scanner), which puts into it without a Python call
        self._producers: Any = collections.OrderedDict()
        # trace -> starts of its A2A client spans (the A2A conventions, a2a-sdk)
        self._a2a_traces: collections.OrderedDict[bytes, list[int]] = collections.OrderedDict()
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
            (self.function_calls, ("tool", "tool_type", "status", "error_type")),
            (self.function_duration, ("tool", "tool_type")),
        )
        # the join's common case in C (calls.py, Packed): the shapes whose reading the C
        # scanner may pack, (resource, scope, shape) -> series (-1: a link), the series' labels
        # (mcp, server or tool, tool or tool type, status) and their ids by reading
        self._join_shapes: dict[tuple[bytes, bytes, bytes], int] = {}
        self._join_series: list[tuple[bool, str, str, str]] = []
        self._join_ids: dict[tuple[Any, ...], int] = {}
        self._join_enabled = False
        # the workflow root markers are in the span shape: a root tool-call layer's shape says
        # whether it is a workflow root (see _plain_root)
        n = self.names
        self._root_markers_shaped = {
            k.encode() for k in (n.workflow_name, n.workflow_id, n.workflow_type)
        } <= set(self._shape_keys())
        self._scanner = self._native_scanner(exemplars)
        native = load("_agentscan")
        if self._scanner is not None and native is not None:
            # (the scanner puts the roots it counts there: put_roots)
            self._wf_roots = native.RootMemory(self._roots_size)
        if self._scanner is not None and self._join_enabled:
            self.joiner.use_native(self._scanner)

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
            n.workflow_duration,
            n.workflow_secondary_root,
            n.agent_name,
        )
        # the producer cache in C: the scan's puts and lookups make no key object, and a put
        # pops no OrderedDict entry through a method call (put_producers: the Python path's)
        self._producers = native.Memory(self.config.a2a_producer_cache_size)
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
            defer_keys=tuple(k.encode() for k in self._defer_keys),
            defer_names=self._defer_names,
            defer_scopes=tuple(p.encode() for p in self._defer_scopes),
            shape_keys=self._shape_keys(),
            presence_keys=self._presence_keys(),
            **self._join_native(),
        )

    def _join_native(self) -> dict[str, Any]:
        """The C scanner's part of the join's common case (see ``Packed`` in calls.py): the
        shapes it may pack, their series and the joiner's memory of settled layers (off when
        no span is remembered by shape: more dialect keys than the scanner takes)."""
        self._join_enabled = bool(self._shape_keys())
        if not self._join_enabled:
            return {}
        native = load("_agentscan")
        if native is not None:  # the joiner's memories kept in C (written by its settle paths)
            self.joiner.use_memory(native.Memory)
            self.joiner.hold = native.hold_packed  # (its Packed items held in C)
        return {
            "join_shapes": self._join_shapes,
            "join_series": self._join_series,
            "join_settled": self.joiner.settled_memory(),
            "join_learned": self.joiner.learned,
            "join_keys": self.joiner.settled_keys_memory(),
            "join_id_keys": tuple(k.encode() for k in self._join_id_keys),
        }

    def _learn(self, shape: _Shape, reading: Any) -> None:
        """Lets the C scanner pack the spans of a shape whose reading was remembered (a link,
        or a tool-call layer: (side, tool, tool type, mcp, server, retry, agent, call id key,
        JSON-RPC id key): the keys index ``join_id_keys``, -1 when the layer has no such id;
        the scanner reads the ids of each span from those attributes, see :meth:`_id_keys`),
        or count them (a failed workflow root: a value of :data:`FAILED_ROOTS`)."""
        if self.joiner.native is None:
            return
        shapes = self._join_shapes
        if reading is LINK_ONLY or reading is FAILURE_ONLY or isinstance(reading, int):
            if shape.where not in shapes:  # (kept so once learned)
                if len(shapes) >= JOIN_SHAPES:
                    shapes.clear()
                    self._scanner.forget_shapes()
                code = reading if isinstance(reading, int) else -2 if reading is LINK_ONLY else -3
                shapes[shape.where] = code
            return
        if reading is not LINK:
            known = self._join_ids.get(reading)
            if known is not None and shapes.get(shape.where) == known:
                return  # (learned so already: a layer with ids is read again in Python)
        # the scanner remembers the shapes it found here: it is told when one leaves or maps to
        # another series (a shape added changes nothing it found)
        if len(shapes) >= JOIN_SHAPES:
            shapes.clear()
            self._scanner.forget_shapes()
        elif shape.where in shapes:
            self._scanner.forget_shapes()
        if reading is LINK:
            shapes[shape.where] = -1
            return
        series = self._join_ids.get(reading)
        if series is None:
            if len(self._join_series) >= JOIN_SERIES:
                return  # (a bound on what is learned: the rest is read as before)
            side, tool, tool_type, mcp, server, retry, *_rest = reading
            mcp = mcp or side != FRAMEWORK
            status = "retry" if retry else "success"
            labels = (
                (True, server or UNKNOWN, tool or UNKNOWN, status)
                if mcp
                else (False, tool or UNKNOWN, tool_type or "function", status)
            )
            series = self._join_ids[reading] = len(self._join_series)
            self._join_series.append(labels)
            self.joiner.learned.append(reading)  # (a failed layer's: 12 items)
        shapes[shape.where] = series

    @staticmethod
    def _failed_shape(shape: _Shape, exception_type: str) -> _Shape:
        """The C scanner's key of a failed span's reading learned by its shape and exception
        type (``failed_learned`` in ``_agentscan.c``): the shape and an ``x`` entry of the
        exception type (ASCII: the scanner's failure facts), as ``scratch_put`` writes it."""
        text = exception_type.encode()
        n = len(text)
        varint = bytearray()
        while True:
            byte = n & 0x7F
            n >>= 7
            varint.append(byte | (0x80 if n else 0))
            if not n:
                break
        key = shape.key + b"x" + bytes(varint) + text
        return _Shape(key, shape.memo, (shape.where[0], shape.where[1], key))

    def _id_sources_free(self, attrs: Any) -> bool:
        """No attribute a join id is read from (see :func:`join_id_sources`)."""
        return not any(map(attrs.__contains__, self._id_sources))

    def _id_keys(self, attrs: Any, layer: Layer) -> tuple[int, int] | None:
        """Where the C scanner finds a learned layer's call id and JSON-RPC id: indexes into
        ``join_id_keys`` (-1: none), when every span of its shape gives its ids so: no session
        id (a session joins across traces: the Python join), and for each id exactly one of
        its source attributes present (the shape holds which), the one the layer's id came
        from, as a plain non-empty string value (the scanner packs only such values; any other
        span of the shape goes to Python). ``None``: not so (the layer is not learned)."""
        if any(k in attrs for k in self._session_sources) or (
            (layer.call_id and "tool_call_id" in self._named_ids)
            or (layer.rpc_id and "jsonrpc_request_id" in self._named_ids)
        ):
            return None
        found = []
        for wanted, sources, base in (
            (layer.call_id, self._call_sources, 0),
            (layer.rpc_id, self._rpc_sources, len(self._call_sources)),
        ):
            present = [i for i, k in enumerate(sources) if k in attrs]
            if not present:
                if wanted:
                    return None
                found.append(-1)
                continue
            if len(present) != 1 or not wanted:
                return None
            if attrs.get(sources[present[0]]) != encoded_string(wanted):
                return None
            found.append(base + present[0])
        return found[0], found[1]

    def _shape_keys(self) -> tuple[bytes, ...]:
        """Every attribute key the reading of a span the C scanner leaves to Python depends
        on when it is remembered by shape (a link, a tool-call layer): the keys the dialect
        tables read and the tool-call markers (none when there are more than the scanner
        takes: then nothing is remembered)."""
        n = self.names
        keys = dict.fromkeys(
            (*sorted(self.dialects.attribute_keys), *self._defer_keys, n.operation_name,
             n.mcp_method_name)
        )  # fmt: skip
        if len(keys) > MAX_SHAPE_KEYS:
            return ()
        return tuple(k.encode() for k in keys)

    def _presence_keys(self) -> tuple[bytes, ...]:
        """The shape keys whose presence alone is part of a shape: the attributes the dialect
        tables read only for their presence (``present``/``absent``) or as a run id, never for
        a value (``attributes`` equals, a label). Their values are per-run ids (``workflow.id``,
        which the workflow processor writes on every span; conversation and session ids), on
        which no remembered reading depends (a link, a tool-call layer: see :class:`_Shape`)
        but which would make every run's spans a shape of their own. (The facts a shape keeps
        then hold the run id of its first span: this connector reads no run id.)"""
        compiled = self.dialects.compiled
        keys = compiled.attribute_keys
        valued = {*self._defer_keys, self.names.operation_name, self.names.mcp_method_name}
        for alternatives in (*compiled.detect, *(r.alternatives for r in compiled.rules)):
            for alt in alternatives:
                valued.update(keys[k] for k, _ in alt.equals)
        for rule in compiled.rules:
            for label, sources in rule.labels:
                if LABELS[label] in ID_LABELS:
                    continue  # (read per span: the C scanner reads them for the join, _id_keys)
                valued.update(keys[src.key] for src in sources if src.key >= 0)
        shape = self._shape_keys()
        return tuple(k.encode() for k in keys if k not in valued and k.encode() in shape)

    # -- aggregation -----------------------------------------------------------------------------
    async def consume(self, data: Payload) -> None:
        """With the C scanner (``plugins/_native/_agentscan.c``), the request is walked once in
        C and the measurements arrive aggregated per series (A2A producers remembered and
        consumers matched there too); the spans it leaves to Python (failed spans, tool-call
        layers, spans a dialect recognises: see ``handle_span`` in the C source) and the
        pure-Python path read spans through :data:`plugins._spanview.TracesView` (attributes
        as a C-level map of encoded values). Tool-call layers and failures go to the
        :class:`CallJoiner`, which counts them once when their trace's join window ends.

        Atomic: every span is decoded and classified before anything is counted, so a request
        that fails changes nothing. Logs (GenAI events) go to :meth:`consume_logs`."""
        if data.signal is Signal.LOGS:
            await self.consume_logs(data)
            return
        now_ns = time.time_ns()
        now = now_ns / 1e9
        batch = _Batch()
        if self._scanner is not None:
            # a merged payload's parts are scanned where they are (not joined: ~2.5 MB copied
            # per batch of 8,192 spans); the offsets the scan gives are into their concatenation
            parts = data.encoded_parts()
            try:
                series, fallback, consumers, workflows = self._scanner.scan(
                    parts[0] if len(parts) == 1 else parts
                )
            except ValueError:
                pass  # malformed: the Python path reports it as it always did
            else:
                joined = JoinedParts(parts)
                late = self._scanner.take_late() if self.joiner.native is not None else 0
                # the spans left to Python are read (parsed, classified, what they say
                # decoded) before anything is counted, so one that cannot be read refuses the
                # whole request with nothing changed (consume is atomic: the engine then
                # isolates the corrupt spans); the receivers' edge check has checked every
                # field of the request already
                self._read_fallback(joined, fallback, now_ns, batch, self._scanner.take_failures(),
                                    self._scanner.take_roots())  # fmt: skip
                self.joiner.late_layers += late  # (layers the scanner found late)
                self._merge_native(series, now_ns, batch)
                for (wf_type, outcome), durations in workflows.items():
                    self._windows(wf_type, outcome, durations, now)
                # the roots it counted and those read here, in span order (all of the
                # request's kept while the tokens of their traces are counted: trimmed to the
                # bound after, in _apply)
                self._wf_roots.size = UNBOUNDED
                self._scanner.put_roots(self._wf_roots, batch.roots or None)
                batch.roots = []
                self._apply(batch, now_ns, now)
                self._match_consumers(consumers, now_ns)
                self._match_consumers(batch.consumers, now_ns)
                self._settle(now_ns, now)
                self._settle_tokens(now_ns, now)
                return
        # the Python path reads span by span: the request is checked whole first (a full
        # parse), and every span is read before anything is counted (consume is atomic)
        raw = data.to_bytes()
        ExportTraceServiceRequest.FromString(raw)
        skeleton = TracesView.FromString(raw)
        for rs in skeleton.resource_spans:
            for ss in rs.scope_spans:
                ctx = _Context(rs.resource, ss.scope)
                for sp in ss.spans:
                    self._read_span(sp, now_ns, ctx, batch, None)
        self._apply(batch, now_ns, now)
        self._match_consumers(batch.consumers, now_ns)
        self._settle(now_ns, now)
        self._settle_tokens(now_ns, now)

    def _read_fallback(
        self,
        raw: JoinedParts,
        fallback: list[Any],
        now_ns: int,
        batch: _Batch,
        failures: dict[int, tuple[str, str, str]] | None = None,
        roots: dict[int, tuple[str, str, str, str, float, str, str, str]] | None = None,
    ) -> None:
        """Reads the spans the C scanner left to Python, in order. A span whose shape (see
        :class:`_Shape`) was read before as a link or a tool-call layer is not parsed again:
        its ids and times (given by the scanner) complete the remembered reading. A failed
        span's status message and exception type and message come from ``failures`` (the
        scanner's ``take_failures``) when it has them, instead of a full decode; then a failed
        tool-call layer whose shape and exception type were read before is not parsed either
        (its message, ids and times complete the remembered reading), nor a failed workflow
        root whose shape and exception type were read before as one whose failure says no
        more (see :meth:`_read_span`): the scanner's ``take_roots`` give what its execution
        and errors say beyond its shape. The scanner counts the next such roots itself (learned
        as :data:`FAILED_ROOTS`) and gives only their failures here (a 9-tuple: the
        :class:`Failure`'s arguments)."""
        contexts: dict[tuple[int, int, int, int], tuple[_Context, ShapeMemo | None]] = {}
        links = batch.links
        layers = batch.layers
        ops = batch.ops
        marks = batch.marks
        for item in fallback:
            if len(item) == 4:  # Packed: a trace's layers and links (see calls.py)
                layers.append(item)
                continue
            if len(item) == 9:  # a failed workflow root the C scanner counted: its failure
                batch.failures.append(Failure(*item))
                continue
            key = item[2:6]  # (resource start, end, scope start, end)
            found = contexts.get(key)
            if found is None:
                rs_start, rs_end, sc_start, sc_end = key
                ctx = _Context(raw[rs_start:rs_end], raw[sc_start:sc_end])
                memo = self._shape_memo(ctx) if len(item) > 6 else None
                if memo is None:  # (a context that failed to decode is not reused)
                    ctx = _Context(raw[rs_start:rs_end], raw[sc_start:sc_end])
                found = contexts[key] = (ctx, memo)
            ctx, memo = found
            shape = None
            if memo is not None:
                key_bytes = item[6]
                if key_bytes is not None:
                    known = memo.get(key_bytes)
                    if known is LINK:
                        links.append((item[7], item[8], item[9]))
                        continue
                    if known is not None:  # (side, tool, tool type, mcp, server, retry, agent)
                        if len(known) == 7:
                            side, tool, tool_type, mcp, server, retry, agent = known
                            layers.append(Layer(item[7], item[8], item[9], side, tool,
                                                tool_type, mcp, "", "", "", server, item[10],
                                                item[11], False, retry, "", "", "",
                                                agent))  # fmt: skip
                            continue
                        # (and the keys its call id and JSON-RPC id are read from)
                        side, tool, tool_type, mcp, server, retry, agent, ck, rk = known
                        call, rpc = self._memo_ids(raw, item, ck, rk)
                        layers.append(Layer(item[7], item[8], item[9], side, tool, tool_type,
                                            mcp, call, rpc, "", server, item[10], item[11],
                                            False, retry, "", "", "", agent))  # fmt: skip
                        continue
                    failure = failures.get(item[0]) if failures is not None else None
                    if failure is not None:  # a failed tool-call layer of a shape read before?
                        known = memo.get((key_bytes, failure[1]))
                        if known is not None:
                            (side, tool, tool_type, mcp, server, failed, retry, error_type, exc,
                             agent, ck, rk) = known  # fmt: skip
                            call, rpc = (
                                self._memo_ids(raw, item, ck, rk)
                                if ck >= 0 or rk >= 0
                                else ("", "")
                            )
                            layers.append(Layer(item[7], item[8], item[9], side, tool,
                                                tool_type, mcp, call, rpc, "", server, item[10],
                                                item[11], failed, retry, error_type, exc,
                                                (failure[0] or failure[2]) if failed else "",
                                                agent))  # fmt: skip
                            continue
                        root = roots.get(item[0]) if roots is not None else None
                        if root is not None:  # a failed workflow root of a shape read before?
                            known = memo.get((key_bytes, failure[1], True))
                            if known is not None:  # (status report, peer error)
                                marks.append((len(ops), item[0]))
                                self._failed_root(item, failure, root, known, now_ns, batch)
                                continue
                    if len(memo) >= SHAPE_MEMO:
                        memo.clear()
                    shape = _Shape(key_bytes, memo, (ctx.resource, ctx.scope, key_bytes))
            if shape is None:
                failure = failures.get(item[0]) if failures is not None else None
            encoded = raw[item[0] : item[1]]
            marks.append((len(ops), item[0]))
            if (
                not self._read_span(
                    SpanView.FromString(encoded), now_ns, ctx, batch, None, shape, encoded, failure
                )
                and shape is not None
            ):
                # read here for its other metrics; to the joiner at most a link: the C scanner
                # may pack the layers of its trace all the same (LINK_ONLY)
                self._learn(shape, LINK_ONLY)

    def _memo_ids(
        self, raw: JoinedParts, item: Any, call_key: int, rpc_key: int
    ) -> tuple[str, str]:
        """The call id and JSON-RPC id of a span remembered by shape with ids (``item``: its
        fallback tuple, its offsets in ``raw``): the text of the one attribute of each the
        shape has (its key's index in ``join_id_keys``, -1: none), as the dialect tables read
        it (the first source given a value: the only one the shape has). The two values are
        read by the C scanner's ``span_attrs`` (as ``SpanView`` reads them, without decoding
        the rest of the span)."""
        keys = self._join_id_keys_raw
        part, start, end = raw.locate(item[0], item[1])
        call_raw, rpc_raw = self._scanner.span_attrs(
            part,
            start,
            end,
            keys[call_key] if call_key >= 0 else None,
            keys[rpc_key] if rpc_key >= 0 else None,
        )
        call = value_text(call_raw) if call_key >= 0 else ""
        rpc = value_text(rpc_raw) if rpc_key >= 0 else ""
        return call, rpc

    def _shape_memo(self, ctx: _Context) -> ShapeMemo | None:
        """The memo of the spans' shapes of one (scope, service), or ``None`` when the scope
        or the resource does not decode (its spans are then read one by one, which reports
        it as without shapes)."""
        try:
            where = (ctx.scope_name, ctx.service_name)
        except DecodeError:
            return None
        shapes = self._shapes
        memo = shapes.get(where)
        if memo is None:
            if len(shapes) >= SHAPE_CONTEXTS:
                shapes.clear()
            memo = shapes[where] = {}
        return memo

    def _merge_native(self, series: list[Any], now_ns: int, batch: _Batch | None = None) -> None:
        """Adds the C scanner's per-series aggregates to the metrics. ``batch``: the request's
        spans the scanner left to Python (read, not counted yet): a series they observe too
        (a failed workflow root's duration among the others') is counted with them here in
        span order, so that its exemplars are the last spans' as on the Python path."""
        metrics = self._native_metrics
        shared = self._shared_series(batch) if batch is not None and batch.marks else None
        for index, values, count, total, buckets, exemplars, seen in series:
            metric, labels = metrics[index]
            attrs = tuple(zip(labels, values, strict=True))
            if buckets is None:
                metric.add_count(NO_RESOURCE, attrs, count, now_ns)
                continue
            ops = shared.get((metric, attrs)) if shared else None
            if ops is None:
                # (seen: the ring of exemplars ends where the measurements' observe() calls
                # would leave it, position included: the exemplars are exported in its order)
                metric.merge(NO_RESOURCE, attrs, count, total, buckets, exemplars, now_ns, seen)
                continue
            assert batch is not None
            # the C scanner's exemplars (the last of its spans', with their places: the earlier
            # ones' writes are only counted) and the Python path's observations, in span order
            given = len(exemplars)
            k = 0
            while k < given and exemplars[k][3] < ops[0][0]:
                k += 1
            metric.merge(NO_RESOURCE, attrs, count, total, buckets, exemplars[:k], now_ns,
                         seen - given + k)  # fmt: skip
            for n, (_, i) in enumerate(ops):
                fn, args = batch.ops[i]
                fn(*args)
                batch.ops[i] = _DONE
                end = ops[n + 1][0] if n + 1 < len(ops) else None
                first = k
                while k < given and (end is None or exemplars[k][3] < end):
                    k += 1
                if k > first:
                    metric.merge(NO_RESOURCE, attrs, 0, 0.0, (), exemplars[first:k], now_ns)

    @staticmethod
    def _shared_series(batch: _Batch) -> dict[tuple[Metric, Any], list[tuple[int, int]]]:
        """The histogram observations with an exemplar among ``batch``'s operations, by
        series: (offset of the span, index in ``batch.ops``) in span order."""
        out: dict[tuple[Metric, Any], list[tuple[int, int]]] = {}
        marks = batch.marks
        starts: list[int] | None = None
        for i, (fn, args) in enumerate(batch.ops):
            if getattr(fn, "__func__", None) is _OBSERVE and len(args) > 4 and args[4]:
                if starts is None:
                    starts = [start for start, _ in marks]
                place = marks[bisect.bisect_right(starts, i) - 1][1]
                out.setdefault((fn.__self__, args[1]), []).append((place, i))
        return out

    def _remember_producers(self, items: list[tuple[bytes, int]]) -> None:
        """Remembers A2A producer spans (span id -> start) for the consumers' latency."""
        cache_size = self.config.a2a_producer_cache_size
        if not cache_size:
            return
        producers = self._producers
        if producers.__class__ is not collections.OrderedDict:  # the C scanner's Memory
            self._scanner.put_producers(items)  # (an id put again keeps its place, as below)
            return
        for span_id, start in items:
            producers[span_id] = start
            if len(producers) > cache_size:
                producers.popitem(last=False)

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

    # -- reading spans (nothing counted) ---------------------------------------------------------
    def _marked(self, sp: Any, attrs: Any, ctx: _Context) -> bool:
        """A span a dialect table recognises beyond failed spans and tool calls (the same test
        as the C scanner's ``defer`` keys and prefixes)."""
        for key in self._defer_keys:
            if key in attrs:
                return True
        if self._defer_names and sp.name.startswith(self._defer_names):
            return True
        return bool(self._defer_scopes) and ctx.scope_name.startswith(self._defer_scopes)

    def _read_span(
        self,
        sp: Any,
        now_ns: int,
        ctx: _Context,
        batch: _Batch,
        full: Any | None,
        shape: _Shape | None = None,
        encoded: bytes = b"",
        failure: tuple[str, str, str] | None = None,
    ) -> bool:
        """What one span (a :data:`SpanView`) adds to the metrics, as operations on ``batch``
        applied once the whole request is read (:meth:`_apply`), and whether it failed or is a
        tool-call layer (else it gives the joiner at most a link); ``full``: the span decoded
        in full when the caller has it; ``shape``: its shape, when the reading is to be
        remembered for the spans of the same shape (a link, a tool-call layer); ``encoded``:
        the span's own encoding when the caller has it (decoded by :meth:`_SpanView.full`);
        ``failure``: a failed span's (status message, exception type, exception message) when
        the C scanner read them (then no full decode for them)."""
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
        marked = failed or tool or self._marked(sp, attrs, ctx)
        if not (root or marked or kind in INTERESTING_KINDS):
            return False  # nothing to count for this span
        if marked and not (failed or root) and op_raw in self._run_ops_raw:
            # an agent run or workflow of the GenAI conventions that did not fail: executions
            # are the workflow processor's; here it is only a link a failure may climb through
            batch.links.append((sp.trace_id, sp.span_id, sp.parent_span_id))
            if kind not in INTERESTING_KINDS:
                if shape is not None:
                    shape.memo[shape.key] = LINK
                    self._learn(shape, LINK)
                return False
            marked = False
        component = ""
        view = _SpanView(sp, attrs, full, encoded, failure)
        if root and self._is_workflow_root(view):
            self._workflow(view, now_ns, batch)
            component = "workflow"
        op_name = cached_str(op_raw) if op_raw is not None else ""
        facts = None
        if marked:
            facts = self._facts(view, ctx, root, shape)
            role = facts.role
            if facts.is_tool_layer:
                layer = self._layer(view, facts, ctx, batch)
                # (a span with a join id attribute, even empty: its shape holds the id's
                # presence only, so the reading is not the shape's alone)
                id_free = self._id_sources_free(attrs)
                if shape is not None and not (
                    (root and not self._plain_root(view))
                    or layer.failed
                    or layer.error_type
                    or layer.exception
                    or layer.message
                    or layer.session
                ):
                    if id_free and not (layer.call_id or layer.rpc_id):
                        shape.memo[shape.key] = reading = (layer.side, layer.tool,
                            layer.tool_type, layer.mcp, layer.server, layer.retry,
                            layer.agent)  # fmt: skip
                        self._learn(shape, (*reading, -1, -1))
                    else:  # the ids are the span's own, read from the keys the reading names
                        keys = self._id_keys(attrs, layer)
                        if keys is not None:
                            shape.memo[shape.key] = with_ids = (layer.side, layer.tool,
                                layer.tool_type, layer.mcp, layer.server, layer.retry,
                                layer.agent, *keys)  # fmt: skip
                            self._learn(shape, with_ids)
                elif not (shape is None or root or failure is None or layer.session) and (
                    keys := (-1, -1)
                    if id_free and not (layer.call_id or layer.rpc_id)
                    else self._id_keys(attrs, layer)
                ):
                    # a failed layer: all but its ids, times and message (from ``failure``:
                    # the scanner's, not in the shape) follow from its shape and exception
                    # type (the facts' key), read again as such by _read_fallback when the
                    # C scanner leaves it to Python
                    shape.memo[(shape.key, failure[1])] = (layer.side, layer.tool,
                        layer.tool_type, layer.mcp, layer.server, layer.failed, layer.retry,
                        layer.error_type, layer.exception, layer.agent, *keys)  # fmt: skip
                    # and the C scanner packs the next ones (their message with their ids)
                    self._learn(self._failed_shape(shape, failure[1]), (layer.side,
                        layer.tool, layer.tool_type, layer.mcp, layer.server, layer.retry,
                        layer.agent, *keys, layer.failed, layer.error_type,
                        layer.exception))  # fmt: skip
                return True  # counted (and its failure) once per call, by the joiner
            if not failed:  # a link a failure below may climb through (see calls.py)
                batch.links.append((sp.trace_id, sp.span_id, sp.parent_span_id))
            if role is self._role.INFERENCE:
                self._inference(view, facts, failed, now_ns, batch)
                component = component or "llm"
            elif (
                role is self._role.A2A_CLIENT or role is self._role.A2A_SERVER
            ) and names.a2a_message_type not in attrs:
                self._a2a(view, facts, role is self._role.A2A_CLIENT, failed, now_ns, batch)
                component = component or "a2a"
        if kind in (SPAN_KIND_PRODUCER, SPAN_KIND_CONSUMER):
            mtype = view.get(names.a2a_message_type)
            if mtype is not None:
                message_type = mtype or UNKNOWN
                if kind == SPAN_KIND_PRODUCER:
                    labels = (
                        ("message_type", message_type),
                        ("recipient_type", view.label(names.a2a_recipient_type)),
                        ("priority", view.label(names.a2a_priority)),
                    )
                    batch.ops.append((self.a2a_sent.add, (NO_RESOURCE, labels, 1, now_ns)))
                    batch.producers.append((sp.span_id, sp.start_time_unix_nano))
                else:
                    status_value = view.get(names.a2a_processing_status)
                    processing = (
                        status_value
                        if status_value is not None
                        else ("failed" if failed else "processed")
                    )
                    labels = (
                        ("message_type", message_type),
                        ("sender_type", view.label(names.a2a_sender_type)),
                        ("processing_status", processing),
                    )
                    batch.ops.append((self.a2a_received.add, (NO_RESOURCE, labels, 1, now_ns)))
                    links = [Span.Link.FromString(raw_link).span_id for raw_link in sp.links]
                    batch.consumers.append(
                        (
                            sp.parent_span_id,
                            links,
                            sp.start_time_unix_nano,
                            sp.trace_id,
                            sp.span_id,
                            message_type,
                        )
                    )
                component = component or "a2a"
        if kind == SPAN_KIND_SERVER:
            http_method = view.get(names.http_method) or view.get("http.method")
            if http_method is not None:
                self._http(view, http_method, now_ns, batch)
                component = component or "http"
        if (
            root
            and failed
            and shape is not None
            and failure is not None
            and facts is not None
            and not facts.is_tool_layer
            and facts.role not in self._root_roles
            and kind not in (SPAN_KIND_SERVER, SPAN_KIND_PRODUCER, SPAN_KIND_CONSUMER)
        ):
            # a failed root: all its reading but its execution, error labels, ids, times and
            # message (from the scanner: take_roots, take_failures) follows from its shape and
            # exception type (the facts' key), read again as such by _read_fallback
            shape.memo[(shape.key, failure[1], True)] = (facts.status_report, facts.peer_error)
            if self._id_sources_free(attrs):  # (the C scanner counts the next ones)
                self._learn(
                    self._failed_shape(shape, failure[1]),
                    FAILED_ROOTS[(bool(facts.status_report), bool(facts.peer_error))],
                )
        if failed and not (facts is not None and facts.status_report):
            batch.failures.append(
                Failure(
                    sp.trace_id,
                    sp.span_id,
                    sp.parent_span_id,
                    self._error_labels(view, component, op_name),
                    view.exception(),
                    sp.start_time_unix_nano,
                    sp.end_time_unix_nano,
                    view.status_message(),
                    facts is not None and facts.peer_error,
                )
            )
        if failed and shape is not None and failure is not None:
            known = (shape.key, failure[1], None)  # (learned so once: see FAILURE_ONLY)
            if known not in shape.memo and self._id_sources_free(attrs):
                # no tool-call layer: its trace's layers may be packed all the same (its
                # failure and parent link to the joiner from here)
                shape.memo[known] = FAILURE_ONLY
                self._learn(self._failed_shape(shape, failure[1]), FAILURE_ONLY)
        return failed

    def _facts(
        self, view: _SpanView, ctx: _Context, root: bool, span_shape: _Shape | None = None
    ) -> SpanFacts:
        """The dialect tables' facts about a span. Spans of one shape repeat (the same
        operation, tool, model and server, without per-call ids): the facts of a shape are
        kept (``FACTS_CACHE`` of them) and the tables consulted once per shape. The shape is
        the C scanner's when it gave one (``span_shape``: it holds the name, kind, parent or
        not, status and every attribute the tables read), else built here."""
        sp = view.span
        status = sp.status
        code = self._statuses.get(status, 0) if status else 0
        failed = code == STATUS_ERROR
        exc = view.exception() if failed else ""
        attrs = sp.attributes
        shape: tuple[Any, ...]
        if span_shape is not None:
            # (the join ids are in the shape by their presence: their values are read per span)
            shape = (span_shape.key, ctx.scope_name, ctx.service_name, exc,
                     () if self._id_sources_free(attrs)
                     else tuple(map(attrs.get, self._id_sources)))  # fmt: skip
        else:
            wanted = self._dialect_keys
            shape = (
                sp.name,
                sp.kind,
                ctx.scope_name,
                ctx.service_name,
                root,
                code,
                exc,
                tuple([item for item in attrs.items() if item[0] in wanted]),
            )
        cache = self._facts_cache
        facts = cache.get(shape)
        if facts is None:
            facts = self.dialects.classify(
                view.name,
                sp.kind,
                attrs,  # encoded AnyValues, decoded by the tables when read
                scope=ctx.scope_name,
                root=root,
                status_code=code,
                exception_type=exc,
                service=ctx.service_name,
            )
            if len(cache) >= FACTS_CACHE:
                cache.clear()
            cache[shape] = facts
        return facts

    def _layer(self, view: _SpanView, facts: Any, ctx: _Context, batch: _Batch) -> Layer:
        """A tool-call layer for the joiner (added to ``batch``, and returned)."""
        sp = view.span
        role = facts.role
        side = (
            MCP_SERVER
            if role is self._role.MCP_SERVER
            else MCP_CLIENT
            if role is self._role.MCP_CLIENT
            else FRAMEWORK
        )
        failed = facts.failed
        message = ""
        exc = facts.exception_type
        if failed:
            message = view.failure_message()
            if not exc:
                exc = view.exception()
        get = facts.labels.get
        layer = Layer(
            sp.trace_id,
            sp.span_id,
            sp.parent_span_id,
            side,
            get("tool_name", ""),
            get("tool_type", ""),
            side != FRAMEWORK or get("mcp_method", "") == self.names.mcp_tool_method,
            get("tool_call_id", ""),
            get("jsonrpc_request_id", ""),
            get("mcp_session_id", ""),
            facts.server,
            sp.start_time_unix_nano,
            sp.end_time_unix_nano,
            failed,
            facts.model_retry,
            get("error_type", ""),
            exc,
            message,
            get("agent_name", ""),
        )
        batch.layers.append(layer)
        return layer

    def _inference(
        self, view: _SpanView, facts: Any, failed: bool, now_ns: int, batch: _Batch
    ) -> None:
        """``gen_ai.client.operation.duration`` and ``gen_ai.client.token.usage`` of an
        inference span, and its tokens (and cost) in its workflow's totals."""
        sp = view.span
        names = self.names
        common: list[tuple[str, str]] = [
            ("gen_ai.operation.name", facts.label("operation") or UNKNOWN),
            ("gen_ai.provider.name", facts.label("provider") or UNKNOWN),
        ]
        model = facts.label("model")
        if model:
            common.append(("gen_ai.request.model", model))
        agent = facts.label("agent_name")
        if agent:
            common.append(("gen_ai.agent.name", agent))
        # a GenAI event of this span already held lends what the span lacks
        event = self.events.peek(sp.trace_id, sp.span_id) if self.events.pending else None
        if event is not None and not model and event.model:
            model = event.model
            common.append(("gen_ai.request.model", model))
        duration_labels = list(common)
        if failed:
            error = (
                facts.label("error_type")
                or (event.error_type if event is not None else "")
                or facts.exception_type
                or self._classifier.match(view.status_message())
                or "_OTHER"
            )
            duration_labels.append(("error.type", error))
        duration = (sp.end_time_unix_nano - sp.start_time_unix_nano) / 1e9
        batch.ops.append(
            (
                self.operation_duration.observe,
                (NO_RESOURCE, tuple(duration_labels), duration, now_ns, sp.trace_id, sp.span_id),
            )
        )
        wf_type = view.get(names.workflow_type) or ""
        wf_agent = view.get(names.workflow_agent_id) or agent or UNKNOWN
        has_usage = facts.input_tokens is not None or facts.output_tokens is not None
        labels = tuple(common)
        if self.accepts_logs:
            batch.inferences.append(
                SpanUsage(sp.trace_id, sp.span_id, has_usage, labels, model, wf_type, wf_agent)
            )
        if has_usage and not (
            self.accepts_logs and self.events.counted_alone(sp.trace_id, sp.span_id)
        ):
            tokens = TokenCount(
                labels,
                model,
                wf_type,
                wf_agent,
                facts.input_tokens,
                facts.output_tokens,
                sp.trace_id,
                sp.span_id,
            )
            batch.ops.append((self._count_tokens, (tokens, now_ns)))

    def _count_tokens(self, tokens: TokenCount, now_ns: int) -> None:
        """``gen_ai.client.token.usage`` and the workflow's token and cost totals of one
        inference call (from its span, or its GenAI event). The totals carry the workflow
        type and agent of the call's trace: the workflow processor's stamp on it, else those
        its trace's root was counted with (``_workflow``), remembered (``_wf_roots``); a call
        whose trace's root was not counted yet is held for ``tool_call_join.window``
        (:meth:`_settle_tokens`)."""
        model = tokens.model
        price = self._prices.get(model) if model else None
        cost = 0.0
        for token_type, count in (
            ("input", tokens.input_tokens),
            ("output", tokens.output_tokens),
        ):
            if count is None:
                continue
            labels = (*tokens.common, ("gen_ai.token.type", token_type))
            self.token_usage.observe(
                NO_RESOURCE, labels, float(count), now_ns, tokens.trace_id, tokens.span_id
            )
            if price is not None:
                cost += count * (price[0] if token_type == "input" else price[1])
        wf_type = tokens.workflow_type
        if wf_type:
            self._token_results[STAMPED] += 1
            agent = tokens.workflow_agent
        else:
            trace = tokens.trace_id
            if not trace:  # (an event outside any trace: no workflow's)
                return
            root = self._wf_roots.get(trace)
            if root is None:
                held = (tokens.input_tokens, tokens.output_tokens, cost)
                self._hold_tokens(trace, held, now_ns)
                return
            self._token_results[ROOT] += 1
            wf_type, agent = root
        self._workflow_totals(
            wf_type, agent, tokens.input_tokens, tokens.output_tokens, cost, now_ns
        )

    def _workflow_totals(
        self,
        wf_type: str,
        agent: str,
        input_tokens: int | None,
        output_tokens: int | None,
        cost: float,
        now_ns: int,
    ) -> None:
        """``agent_workflow_tokens`` and ``agent_workflow_cost_usd`` of one inference call."""
        for token_type, count in (("input", input_tokens), ("output", output_tokens)):
            if count is not None:
                labels = (
                    ("workflow_type", wf_type),
                    ("agent_id", agent),
                    ("token_type", token_type),
                )
                self.workflow_tokens.add(NO_RESOURCE, labels, count, now_ns)
        if cost:
            self.workflow_cost.add(
                NO_RESOURCE, (("workflow_type", wf_type), ("agent_id", agent)), cost, now_ns
            )

    def _hold_tokens(
        self, trace: bytes, held: tuple[int | None, int | None, float], now_ns: int
    ) -> None:
        """Holds an inference call's tokens and cost for its trace's root (see
        :meth:`_settle_tokens`); beyond ``tool_call_join.max_traces`` traces the oldest is
        settled early."""
        waits = self._token_waits
        entry = waits.get(trace)
        if entry is None:
            entry = waits[trace] = (now_ns / 1e9 + self._token_window, [])
            if len(waits) > self._token_max:
                old, (_, calls) = waits.popitem(last=False)
                self._release_tokens(old, calls, now_ns)
        entry[1].append(held)

    def _settle_tokens(self, now_ns: int, now: float, everything: bool = False) -> None:
        """The held inference calls whose window ended: counted for the workflow their
        trace's root was counted with meanwhile (in any request since), else not in the
        workflow totals (no workflow root of their trace: their tokens are in
        ``gen_ai.client.token.usage`` only). A root arriving later counts its execution, not
        these tokens."""
        waits = self._token_waits
        while waits:
            trace, (deadline, calls) = next(iter(waits.items()))
            if not everything and deadline > now:
                break
            del waits[trace]
            self._release_tokens(trace, calls, now_ns)
        results, reported = self._token_results, self._token_reported
        if results != reported:
            name = self.settings.name
            for i, result in enumerate(TOKEN_RESULTS):
                if results[i] != reported[i]:
                    self._token_counter.labels(name, result).inc(results[i] - reported[i])
                    reported[i] = results[i]

    def _release_tokens(
        self, trace: bytes, calls: list[tuple[int | None, int | None, float]], now_ns: int
    ) -> None:
        root = self._wf_roots.get(trace)
        if root is None:
            self._token_results[NO_ROOT] += len(calls)
            return
        self._token_results[WAITED] += len(calls)
        wf_type, agent = root
        for input_tokens, output_tokens, cost in calls:
            self._workflow_totals(wf_type, agent, input_tokens, output_tokens, cost, now_ns)

    def _a2a(
        self,
        view: _SpanView,
        facts: Any,
        client: bool,
        failed: bool,
        now_ns: int,
        batch: _Batch,
    ) -> None:
        """An A2A message of the A2A conventions (CLIENT / SERVER spans with ``a2a.*``) or of
        a2a-sdk's own spans: sent by a client span, received by a server span; its latency
        when the client span is the server span's parent."""
        sp = view.span
        message_type = facts.label("a2a_message_type") or UNKNOWN
        if client:
            labels = (
                ("message_type", message_type),
                ("recipient_type", facts.label("agent_name") or facts.server or UNKNOWN),
                ("priority", UNKNOWN),
            )
            batch.ops.append((self.a2a_sent.add, (NO_RESOURCE, labels, 1, now_ns)))
            batch.producers.append((sp.span_id, sp.start_time_unix_nano))
            batch.a2a_clients.append((sp.trace_id, sp.start_time_unix_nano))
        else:
            state = view.get("a2a.task.state") or ""
            processing = "failed" if failed or state == "TASK_STATE_FAILED" else "processed"
            labels = (
                ("message_type", message_type),
                ("sender_type", UNKNOWN),
                ("processing_status", processing),
            )
            batch.ops.append((self.a2a_received.add, (NO_RESOURCE, labels, 1, now_ns)))
            batch.a2a_servers.append((sp, message_type))

    def _plain_root(self, view: _SpanView) -> bool:
        """A root span whose shape says it is no workflow root: none of the workflow markers
        :meth:`_is_workflow_root` reads, each of them in the shape (by presence or value, and
        the name), so no span of its shape is one (a root tool-call layer: the MCP SDK's client
        span of a process whose context is not propagated, the MCP server span at the root of
        its process; its reading, a layer, is then the shape's alone: learned, packed)."""
        names = self.names
        attrs = view.attrs
        return (
            self._root_markers_shaped
            and names.workflow_name not in attrs
            and names.workflow_id not in attrs
            and names.workflow_type not in attrs
            and not view.name.startswith(names.workflow_span_prefix)
        )

    def _is_workflow_root(self, view: _SpanView) -> bool:
        names = self.names
        # (a parentless span the workflow processor marked is not its trace's root: one
        # execution per trace, counted on its root)
        return names.workflow_secondary_root not in view.attrs and (
            view.name.startswith(names.workflow_span_prefix)
            or names.workflow_name in view.attrs
            or names.workflow_id in view.attrs
            or names.workflow_type in view.attrs
        )

    def _workflow(self, view: _SpanView, now_ns: int, batch: _Batch) -> None:
        names = self.names
        sp = view.span
        outcome = view.get(names.workflow_outcome) or ""
        if outcome not in OUTCOMES:
            full = view.full()
            outcome = workflow_outcome(full, attr_map(full), names)
        # workflow.type, else workflow.name, else the span name less the prefix, none shaped
        # like a per-run id (the workflow processor's reading: with it ahead, its stamp)
        wf_type = workflow_type_of(
            view.get(names.workflow_type) or "",
            view.get(names.workflow_name) or "",
            view.name,
            names.workflow_span_prefix,
        )
        tier = view.label(names.workflow_complexity_tier)
        # the workflow processor's stamp, else (none ahead) the root's agent as it reads one:
        # gen_ai.agent.name, else gen_ai.agent.id, neither shaped like a per-run id
        agent_id = (
            view.get(names.workflow_agent_id)
            or agent_label(view.get(names.agent_name), view.get(names.agent_id))
            or UNKNOWN
        )
        # the execution's duration: the root's own, unless the execution is below it
        given = view.attrs.get(names.workflow_duration)
        duration = duration_of(given) if given is not None else None
        if duration is None:
            duration = (sp.end_time_unix_nano - sp.start_time_unix_nano) / 1e9
        self._execution(wf_type, agent_id, outcome, tier, duration, sp.trace_id, sp.span_id,
                        now_ns, batch)  # fmt: skip

    def _execution(
        self,
        wf_type: str,
        agent_id: str,
        outcome: str,
        tier: str,
        duration: float,
        trace_id: bytes,
        span_id: bytes,
        now_ns: int,
        batch: _Batch,
    ) -> None:
        """Counts a workflow execution (``_workflow``'s reading of a root)."""
        batch.ops.append(
            (
                self.executions.add,
                (
                    NO_RESOURCE,
                    (
                        ("workflow_type", wf_type),
                        ("agent_id", agent_id),
                        ("outcome", outcome),
                        ("complexity_tier", tier),
                    ),
                    1,
                    now_ns,
                ),
            )
        )
        batch.ops.append(
            (
                self.workflow_duration.observe,
                (
                    NO_RESOURCE,
                    (("workflow_type", wf_type), ("complexity_tier", tier)),
                    duration,
                    now_ns,
                    trace_id,
                    span_id,
                ),
            )
        )
        batch.workflows.append((wf_type, outcome, duration))
        batch.roots.append(
            (batch.marks[-1][1] if batch.marks else 0, trace_id, (wf_type, agent_id))
        )

    def _failed_root(
        self,
        item: Any,
        failure: tuple[str, str, str],
        root: tuple[str, str, str, str, float, str, str, str],
        known: tuple[bool, bool],
        now_ns: int,
        batch: _Batch,
    ) -> None:
        """:meth:`_read_span` of a failed workflow root the C scanner read (``item``: its
        fallback tuple; ``failure``: take_failures', ``root``: take_roots' facts of it) whose
        shape and exception type were read before (``known``: the facts' status report and
        peer error): its execution, and its failure for the joiner."""
        wf_type, agent_id, outcome, tier, duration, error_type, severity, recoverable = root
        trace_id, span_id = item[7], item[8]
        self._execution(wf_type, agent_id, outcome, tier, duration, trace_id, span_id, now_ns,
                        batch)  # fmt: skip
        status_report, peer_error = known
        if not status_report:
            labels = (("error_type", error_type), ("component", "workflow"),
                      ("severity", severity), ("recoverable", recoverable))  # fmt: skip
            batch.failures.append(Failure(trace_id, span_id, item[9], labels, failure[1], item[10],
                                          item[11], failure[0], peer_error))  # fmt: skip

    def _windows(self, wf_type: str, outcome: str, durations: Sequence[float], now: float) -> None:
        """Counts workflows of one type and outcome in the failure / SLO windows."""
        n = len(durations)
        objective = self.config.sla.objective(wf_type)
        within = n if objective is None else sum(1 for d in durations if d <= objective)
        bad = n if outcome in self._failure_outcomes else 0
        tracked = [w.record(wf_type, now, bad, within, n) for w in self.windows.values()]
        if not all(tracked):
            self.count_overflow("agent_workflow_failure_ratio", n)

    def _http(self, view: _SpanView, method: str, now_ns: int, batch: _Batch) -> None:
        names = self.names
        sp = view.span
        code = view.get(names.http_status_code) or view.get("http.status_code") or ""
        status_class = f"{code[0]}xx" if len(code) == 3 and code.isdigit() else UNKNOWN
        labels = (
            ("method", method or UNKNOWN),
            ("endpoint", view.label(names.http_route)),
            ("status_class", status_class),
        )
        duration = (sp.end_time_unix_nano - sp.start_time_unix_nano) / 1e9
        batch.ops.append(
            (
                self.http_duration.observe,
                (NO_RESOURCE, labels, duration, now_ns, sp.trace_id, sp.span_id),
            )
        )

    def _error_labels(
        self, view: _SpanView, component: str, op_name: str
    ) -> tuple[tuple[str, str], ...]:
        """The ``errors_total`` labels of a failed span."""
        names = self.names
        attrs = view.attrs
        error_type = view.get(names.error_type) or view.exception() or "_OTHER"
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
        return (
            ("error_type", error_type),
            ("component", component),
            ("severity", severity),
            ("recoverable", recoverable),
        )

    # -- counting --------------------------------------------------------------------------------
    def _apply(self, batch: _Batch, now_ns: int, now: float) -> None:
        """Counts what a request's spans said (nothing here can fail on the spans' content)."""
        # the request's workflow roots remembered before the tokens of their traces'
        # inference spans are counted, and all of them kept meanwhile: the oldest roots
        # beyond the bound dropped after (with the C scanner, put by put_roots)
        roots = self._wf_roots
        if batch.roots:
            roots.size = UNBOUNDED
            for _, trace, value in batch.roots:
                roots.put(trace, value)
        for fn, args in batch.ops:
            fn(*args)
        if roots.size != self._roots_size:
            roots.size = self._roots_size
        if batch.workflows:
            # (by type and outcome, in order of first appearance: the windows count them
            # alike one by one or together, and the C scanner's are given so too)
            grouped: dict[tuple[str, str], list[float]] = {}
            for wf_type, outcome, duration in batch.workflows:
                durations = grouped.get((wf_type, outcome))
                if durations is None:
                    grouped[(wf_type, outcome)] = [duration]
                else:
                    durations.append(duration)
            for (wf_type, outcome), durations in grouped.items():
                self._windows(wf_type, outcome, durations, now)
        self._remember_producers(batch.producers)
        self._a2a_latencies(batch, now_ns)
        self.joiner.add(batch.layers, batch.failures, now, batch.links)
        if batch.inferences:
            for tokens in self.events.add_spans(batch.inferences, now):
                self._count_tokens(tokens, now_ns)

    def _a2a_latencies(self, batch: _Batch, now_ns: int) -> None:
        """A2A latency of the A2A conventions' and a2a-sdk's spans, where both sides are in
        one trace: the server span's start minus that of its client span (its parent), else
        of the latest client span of its trace that started before it (a2a-sdk's server span
        sits below its HTTP handler's spans). Client spans are remembered (boundedly, as the
        producers) for servers arriving in later requests."""
        cache_size = self.config.a2a_producer_cache_size
        traces = self._a2a_traces
        if cache_size:
            for trace, start in batch.a2a_clients:
                starts = traces.get(trace)
                if starts is None:
                    starts = traces[trace] = []
                    if len(traces) > cache_size:
                        traces.popitem(last=False)
                starts.append(start)
                del starts[:-16]
        for sp, message_type in batch.a2a_servers:
            start = sp.start_time_unix_nano
            sent = self._producers.get(sp.parent_span_id)
            if sent is None:
                sent = max((s for s in traces.get(sp.trace_id, ()) if s <= start), default=None)
            if sent is not None:
                self.a2a_latency.observe(
                    NO_RESOURCE,
                    (("message_type", message_type),),
                    (start - sent) / 1e9,
                    now_ns,
                    sp.trace_id,
                    sp.span_id,
                )

    def _settle(self, now_ns: int, now: float, everything: bool = False) -> None:
        """Counts the tool calls and failures whose join window ended."""
        joiner = self.joiner
        calls, errors = joiner.settle(now, everything)
        native = joiner.native_calls
        if native and self._scanner is not None:  # the join's common case, counted in C
            joiner.native_calls = 0
            self._merge_native(self._scanner.take_calls(), now_ns)
        if calls or native:
            name = self.settings.name
            caller = self._caller_child
            if caller is None:  # (labels() is a lookup per call: the child is kept)
                caller = self._caller_child = self._join_counter.labels(name, "caller")
            caller.inc(len(calls) + native)
            joined = sum(call.layers for call in calls) - len(calls)
            if joined:
                self._join_counter.labels(name, "joined").inc(joined)
        known = self._call_labels
        for call in calls:
            key = (call.mcp, call.server, call.tool, call.tool_type, call.status, call.error_type)
            labels = known.get(key)
            if labels is None:
                labels = self._call_label_sets(call, key)
            counter, histogram, count_labels, duration_labels = labels
            counter.add(NO_RESOURCE, count_labels, 1, now_ns)
            histogram.observe(
                NO_RESOURCE, duration_labels, call.duration, now_ns, call.trace_id, call.span_id
            )
        for labels in errors:
            self.errors.add(NO_RESOURCE, labels, 1, now_ns)
        name = self.settings.name
        if joiner.late_layers != self._late_seen:
            self._join_counter.labels(name, "late").inc(joiner.late_layers - self._late_seen)
            self._late_seen = joiner.late_layers
        if joiner.early_settled != self._early_seen:
            self._early_counter.labels(name).inc(joiner.early_settled - self._early_seen)
            self._early_seen = joiner.early_settled
        pending = self._pending_child
        if pending is None:
            pending = self._pending_child = self._pending_gauge.labels(name)
        pending.set(len(joiner))

    def _call_label_sets(self, call: Call, key: tuple[Any, ...]) -> tuple[Any, ...]:
        """The metrics and label sets a settled tool call is counted with (kept per series):
        ``mcp_tool_calls`` / ``mcp_tool_call_duration`` (server, tool) for MCP tools,
        ``agent_tool_calls`` / ``agent_tool_call_duration`` (tool, tool type) for others."""
        if call.mcp:
            labels: tuple[Any, ...] = (
                self.tool_calls,
                self.tool_duration,
                (
                    ("server", call.server),
                    ("tool", call.tool),
                    ("status", call.status),
                    ("error_type", call.error_type),
                ),
                (("server", call.server), ("tool", call.tool)),
            )
        else:
            labels = (
                self.function_calls,
                self.function_duration,
                (
                    ("tool", call.tool),
                    ("tool_type", call.tool_type),
                    ("status", call.status),
                    ("error_type", call.error_type),
                ),
                (("tool", call.tool), ("tool_type", call.tool_type)),
            )
        if len(self._call_labels) >= FACTS_CACHE:
            self._call_labels.clear()
        self._call_labels[key] = labels
        return labels

    # -- the logs input: GenAI events (events.py) -----------------------------------------------
    async def consume_logs(self, data: Payload) -> None:
        """GenAI events joined to their inference spans (see ``events.py`` for the rule).
        Atomic: every record is read before anything is counted."""
        self.accepts_logs = True
        now_ns = time.time_ns()
        now = now_ns / 1e9
        raw = data.to_bytes()
        # a request without the bytes "gen_ai." holds no GenAI event (no event name, no usage
        # attribute): not decoded (an application's own logs pass through a logs pipeline)
        events = list(read_events(raw, self.names)) if b"gen_ai." in raw else []
        for tokens in self.events.add_events(events, now):
            self._count_tokens(tokens, now_ns)
        self._settle_events(now_ns, now)
        self._settle_tokens(now_ns, now)

    def _settle_events(self, now_ns: int, now: float, everything: bool = False) -> None:
        for tokens in self.events.settle(now, everything):
            self._count_tokens(tokens, now_ns)
        self._events_gauge.labels(self.settings.name).set(len(self.events))

    async def shutdown(self) -> None:
        """Settles every held trace and event (nothing is lost), then stops and flushes
        (at the last of its inputs' shutdowns)."""
        self._users = max(0, self._users - 1)
        if self._users:
            return
        now_ns = time.time_ns()
        self._settle(now_ns, now_ns / 1e9, everything=True)
        self._settle_events(now_ns, now_ns / 1e9, everything=True)
        self._settle_tokens(now_ns, now_ns / 1e9, everything=True)
        await super().shutdown()
        if self.on_stop is not None:
            self.on_stop()

    # -- derived gauges ----------------------------------------------------------------------------
    def before_flush(self, now_ns: int) -> None:
        now = now_ns / 1e9
        self._settle(now_ns, now)
        self._settle_events(now_ns, now)
        self._settle_tokens(now_ns, now)
        for w in self.windows.values():
            w.prune(now)
        for m in (self.failure_ratio, self.sla_ratio, self.budget_remaining, self.burn_rate):
            m.renew()
        for metric, labels, value in self._derived(now):
            metric.set(NO_RESOURCE, labels, value, now_ns)

    async def start(self, host: Host) -> None:
        """One instance serves the traces and the logs input (the factory shares it)."""
        self._users += 1
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
        self._settle_events(now_ns, now)
        for w in self.windows.values():
            w.prune(now)
        for m in (self.failure_ratio, self.sla_ratio, self.budget_remaining, self.burn_rate):
            m.renew()
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
