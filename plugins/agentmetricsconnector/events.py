"""The logs input of the ``agentmetrics`` connector: GenAI events joined to their span.

The GenAI semantic conventions put the details of an inference call in an event (a log record
with an event name, emitted in the span's context, so it carries the span's trace id and span
id): ``gen_ai.client.inference.operation.details`` has the token usage
(``gen_ai.usage.input_tokens`` / ``gen_ai.usage.output_tokens``), the models, the finish
reasons and ``error.type`` of the call; the content events (``gen_ai.user.message``,
``gen_ai.choice``, ...) carry the messages. An instrumentation may set the usage on the span,
on the event, or on both; this module gives the span path what the span lacks, counted once.

The rule (see ``docs/agent-workflow.md``, "Logs: GenAI events"):

- **The span wins.** An inference span that carries token usage counts it (the span path); an
  event of the same span (same trace id and span id) adds no tokens, whenever it arrives
  (``duplicate``).
- An inference span **without** token usage takes the usage of its event (``joined``): counted
  with the span's labels (operation, provider, model, agent, workflow), the event's filling
  what the span lacks (the model).
- An event waits ``window`` for its span. An event whose span does not arrive in time counts
  on its own, with its own labels (``alone``); a span arriving after that adds no tokens of its
  own (its key is remembered). An event without a span id (emitted outside a span) counts on
  its own at once.
- Memory is bounded: ``max_pending`` events wait at most (beyond it the oldest counts on its
  own early, ``early``); ``max_remembered`` spans and settled events are remembered at most,
  each for ``remember`` (the oldest forgotten first, counted: ``forgotten``).

Events without usage (the content events, an inference event of a failed call) count nothing
(``no_usage``); an event that is held (one with usage, or with ``error.type``: a failed call)
lends the span path its model and ``error.type`` when the span has none. Reading a request is
atomic: every record is read before anything changes.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

INFERENCE_DETAILS = "gen_ai.client.inference.operation.details"
# input / output usage keys: the current conventions first, then the older names
INPUT_TOKEN_KEYS = ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens")
OUTPUT_TOKEN_KEYS = ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens")
MAX_TOKENS = 1 << 40  # a larger count is not a token count (hostile input): ignored

Key = tuple[bytes, bytes]  # (trace id, span id)
# what is remembered of a span whose usage was counted (by itself or from its event): no labels
# (nothing more will be counted for it); few objects for the garbage collector to walk
COUNTED = "counted"


@dataclass(slots=True)
class EventUsage:
    """What one GenAI event says about its inference call."""

    trace_id: bytes
    span_id: bytes
    operation: str
    provider: str
    model: str
    agent: str
    input_tokens: int | None
    output_tokens: int | None
    error_type: str
    finish_reasons: tuple[str, ...]
    workflow_type: str
    workflow_agent: str
    arrived: float = 0.0

    @property
    def has_usage(self) -> bool:
        return self.input_tokens is not None or self.output_tokens is not None


@dataclass(slots=True)
class SpanUsage:
    """What an inference span said (the span path's side of the join)."""

    trace_id: bytes
    span_id: bytes
    has_usage: bool
    common: tuple[tuple[str, str], ...]  # the gen_ai.client.token.usage labels but the type
    model: str
    workflow_type: str
    workflow_agent: str


@dataclass(slots=True)
class TokenCount:
    """Tokens to count (by :meth:`AgentMetricsConnector._count_tokens`)."""

    common: tuple[tuple[str, str], ...]
    model: str
    workflow_type: str
    workflow_agent: str
    input_tokens: int | None
    output_tokens: int | None
    trace_id: bytes
    span_id: bytes


def _text(value: AnyValue) -> str:
    which = value.WhichOneof("value")
    if which == "string_value":
        return value.string_value
    if which in ("int_value", "double_value", "bool_value"):
        return str(getattr(value, which))
    return ""


def _count(value: AnyValue) -> int | None:
    """A token count: an int, an integral double or a decimal string; else ``None``."""
    which = value.WhichOneof("value")
    if which == "int_value":
        n = value.int_value
    elif which == "double_value":
        d = value.double_value
        if not d.is_integer():
            return None
        n = int(d)
    elif which == "string_value" and value.string_value.isdecimal():
        n = int(value.string_value[:16])
    else:
        return None
    return n if 0 <= n <= MAX_TOKENS else None


def _first(attrs: dict[str, AnyValue], keys: Iterable[str]) -> int | None:
    for key in keys:
        value = attrs.get(key)
        if value is not None:
            n = _count(value)
            if n is not None:
                return n
    return None


def read_events(raw: bytes, names: Any) -> Iterator[EventUsage]:
    """The GenAI events of an OTLP logs request (raises ``DecodeError`` when it is not one):
    log records named ``gen_ai.*`` by ``event_name`` (or an ``event.name`` attribute, the
    older form), or carrying ``gen_ai.usage.*`` attributes."""
    request = ExportLogsServiceRequest.FromString(raw)
    for rl in request.resource_logs:
        for sl in rl.scope_logs:
            for lr in sl.log_records:
                attrs = {kv.key: kv.value for kv in lr.attributes}
                name = lr.event_name
                if not name:
                    legacy = attrs.get("event.name")
                    name = _text(legacy) if legacy is not None else ""
                input_tokens = _first(attrs, INPUT_TOKEN_KEYS)
                output_tokens = _first(attrs, OUTPUT_TOKEN_KEYS)
                if (
                    not name.startswith("gen_ai.")
                    and input_tokens is None
                    and (output_tokens is None)
                ):
                    continue

                def get(key: str, attrs: dict[str, AnyValue] = attrs) -> str:
                    value = attrs.get(key)
                    return _text(value) if value is not None else ""

                reasons = attrs.get("gen_ai.response.finish_reasons")
                finish: tuple[str, ...] = ()
                if reasons is not None and reasons.WhichOneof("value") == "array_value":
                    finish = tuple(_text(v) for v in reasons.array_value.values[:16])
                elif reasons is not None:
                    finish = (_text(reasons),)
                yield EventUsage(
                    trace_id=bytes(lr.trace_id),
                    span_id=bytes(lr.span_id),
                    operation=get("gen_ai.operation.name"),
                    provider=get("gen_ai.provider.name") or get("gen_ai.system"),
                    model=get("gen_ai.response.model") or get("gen_ai.request.model"),
                    agent=get("gen_ai.agent.name"),
                    input_tokens=input_tokens,
                    output_tokens=output_tokens,
                    error_type=get("error.type"),
                    finish_reasons=finish,
                    workflow_type=get(names.workflow_type),
                    workflow_agent=get(names.workflow_agent_id),
                )


def event_common(event: EventUsage) -> tuple[tuple[str, str], ...]:
    """The ``gen_ai.client.token.usage`` labels (but the token type) of an event counted on
    its own: those of the span path."""
    common = [
        ("gen_ai.operation.name", event.operation or "unknown"),
        ("gen_ai.provider.name", event.provider or "unknown"),
    ]
    if event.model:
        common.append(("gen_ai.request.model", event.model))
    if event.agent:
        common.append(("gen_ai.agent.name", event.agent))
    return tuple(common)


def _alone(event: EventUsage) -> TokenCount:
    return TokenCount(
        event_common(event),
        event.model,
        event.workflow_type,
        event.workflow_agent or event.agent or "unknown",
        event.input_tokens,
        event.output_tokens,
        event.trace_id,
        event.span_id,
    )


class EventJoiner:
    """Joins GenAI events to their inference spans by (trace id, span id): see the module's
    docstring for the rule. ``counts`` counts events by what became of them."""

    def __init__(
        self,
        window: float,
        max_pending: int,
        max_remembered: int,
        remember: float,
        on_count: Callable[[str, int], None] | None = None,
    ) -> None:
        self.window = window
        self.max_pending = max_pending
        self.max_remembered = max_remembered
        self.remember = max(remember, window)
        self._on_count = on_count
        # events with usage waiting for their span, oldest first
        self.pending: collections.OrderedDict[Key, EventUsage] = collections.OrderedDict()
        # key -> (when, what is known): the span without usage (its labels, for its event),
        # COUNTED (a span whose usage was counted), or None (an event counted on its own):
        # spans seen and events settled, oldest first
        self.remembered: collections.OrderedDict[Key, tuple[float, SpanUsage | str | None]] = (
            collections.OrderedDict()
        )

    def __len__(self) -> int:
        return len(self.pending)

    def _count(self, result: str, n: int = 1) -> None:
        if self._on_count is not None and n:
            self._on_count(result, n)

    def _remember(self, key: Key, now: float, known: SpanUsage | str | None) -> None:
        remembered = self.remembered
        if key in remembered:
            remembered.move_to_end(key)
        remembered[key] = (now, known)
        if len(remembered) > self.max_remembered:
            remembered.popitem(last=False)
            self._count("forgotten")

    def peek(self, trace_id: bytes, span_id: bytes) -> EventUsage | None:
        """The held event of a span (read by the span path; nothing changes)."""
        return self.pending.get((trace_id, span_id))

    def add_events(self, events: Iterable[EventUsage], now: float) -> list[TokenCount]:
        """Takes a request's events; returns the tokens to count now."""
        out: list[TokenCount] = []
        for event in events:
            joinable = bool(event.span_id and event.trace_id)
            if not event.has_usage and not (joinable and event.error_type):
                self._count("no_usage")
                continue
            if not joinable:
                out.append(_alone(event))
                self._count("alone")
                continue
            key = (event.trace_id, event.span_id)
            seen = self.remembered.get(key)
            if seen is not None and not event.has_usage:
                self._count("no_usage")  # an error.type for a span already counted
                continue
            if seen is not None:
                span = seen[1]
                if not isinstance(span, SpanUsage):
                    self._count("duplicate")  # the span (or an earlier event) counted them
                    continue
                out.append(self._joined(span, event))
                self.remembered[key] = (seen[0], COUNTED)
                self._count("joined")
                continue
            held = self.pending.get(key)
            if held is not None:
                if event.has_usage and not held.has_usage:  # the usage after an error.type
                    event.error_type = event.error_type or held.error_type
                    event.arrived = held.arrived
                    self.pending[key] = event
                    self._count("no_usage")
                else:  # a second event of one call: the first one's usage
                    self._count("duplicate" if event.has_usage else "no_usage")
                continue
            event.arrived = now
            self.pending[key] = event
            if len(self.pending) > self.max_pending:
                _, oldest = self.pending.popitem(last=False)
                if oldest.has_usage:
                    out.append(_alone(oldest))
                    self._remember((oldest.trace_id, oldest.span_id), now, None)
                    self._count("early")
                else:
                    self._count("no_usage")
        return out

    @staticmethod
    def _joined(span: SpanUsage, event: EventUsage) -> TokenCount:
        common = span.common
        model = span.model
        if not model and event.model:
            model = event.model
            common = (*common, ("gen_ai.request.model", model))
        return TokenCount(
            common,
            model,
            span.workflow_type or event.workflow_type,
            span.workflow_agent,
            event.input_tokens,
            event.output_tokens,
            event.trace_id,
            event.span_id,
        )

    def add_spans(self, spans: Iterable[SpanUsage], now: float) -> list[TokenCount]:
        """Takes a request's inference spans (the span path counted their own usage);
        returns the tokens of their held events to count (spans without usage)."""
        out: list[TokenCount] = []
        for span in spans:
            key = (span.trace_id, span.span_id)
            event = self.pending.pop(key, None) if self.pending else None
            counted = span.has_usage
            if event is not None:
                if not event.has_usage:
                    self._count("no_usage")  # its error.type labelled the span's duration
                elif span.has_usage:
                    self._count("duplicate")
                else:
                    out.append(self._joined(span, event))
                    self._count("joined")
                    counted = True
            self._remember(key, now, COUNTED if counted else span)
        return out

    def counted_alone(self, trace_id: bytes, span_id: bytes) -> bool:
        """Whether an event of this span was counted on its own already (its window ended
        before the span arrived): the span's own usage is then not counted again."""
        seen = self.remembered.get((trace_id, span_id))
        return seen is not None and seen[1] is None

    def settle(self, now: float, everything: bool = False) -> list[TokenCount]:
        """Events whose window ended without their span: counted on their own."""
        out: list[TokenCount] = []
        pending = self.pending
        cutoff = now - self.window
        while pending:
            key, event = next(iter(pending.items()))
            if not everything and event.arrived > cutoff:
                break
            del pending[key]
            if not event.has_usage:  # an error.type whose span did not come: nothing to count
                self._count("no_usage")
                continue
            out.append(_alone(event))
            self._remember(key, now, None)
            self._count("alone")
        forget = now - self.remember
        remembered = self.remembered
        while remembered:
            key, (when, _) = next(iter(remembered.items()))
            if when > forget:
                break
            del remembered[key]
        return out
