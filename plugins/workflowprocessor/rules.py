"""What the ``workflow`` processor decides about spans and traces, as pure functions of their
encoded bytes and the configuration: whether a root is a workflow and its id, type and
outcome; whether a span is a tool call and the ``error.type`` of a failed one; the complexity
tier; the stamp a released workflow writes on its spans. Both trace stores (Python and C) use
these rules; the C accelerator implements the same ones for the common cases and hands the
rest back (``plugins/workflowprocessor/store.py``).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TypeVar

from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from plugins._agentconv import (
    STATUS_ERROR,
    TOP_TIER,
    AttributeNames,
    ComplexityTier,
    ErrorClassifier,
    outcome_from,
    workflow_type_of,
)
from plugins._agentdialects import looks_like_run_id, value_text
from plugins._spanview import SpanView, cached_str, value_str
from plugins.workflowprocessor.wire import encode_attribute

# What a root span says about its workflow: (workflow, workflow_id, workflow_type, outcome,
# present), ``workflow`` false: not a workflow; ``present``: the stamp attributes already on it.
RootFacts = tuple[bool, str, str, str, tuple[str, ...]]
NOT_WORKFLOW: RootFacts = (False, "", "", "", ())

# What a released workflow writes on its spans (remembered for late spans): the values of the
# five stamp attributes (in the order of ``stamp_keys``) and their encoding, appended to spans.
StampValues = tuple[str, str, str, str, str]
Stamp = tuple[StampValues, bytes]

# distinct status messages whose error.type is remembered (then the memory starts over)
ERROR_SUFFIX_CACHE = 1024

outcome = functools.lru_cache(maxsize=4096)(outcome_from)


def stamp_keys(names: AttributeNames) -> tuple[str, str, str, str, str]:
    """The five attributes a workflow's spans are stamped with, in stamp order."""
    return (
        names.workflow_id,
        names.workflow_type,
        names.workflow_agent_id,
        names.workflow_outcome,
        names.workflow_complexity_tier,
    )


# distinct encoded name values remembered by name_text (then the memory starts over), those
# of at most NAME_CACHE_BYTES bytes (names and run ids are short: a huge one is not kept)
NAME_CACHE = 4096
NAME_CACHE_BYTES = 256
_NAMES: dict[bytes, tuple[str, bool]] = {}


def name_text(encoded: bytes) -> tuple[str, bool]:
    """An encoded value found where the agent's name is expected: its text (as the dialect
    tables read it, ``""`` when it cannot be read) and whether it is shaped like a per-run
    id (:func:`~plugins._agentdialects.looks_like_run_id`), remembered per encoding."""
    got = _NAMES.get(encoded)
    if got is None:
        text = value_text(encoded)
        got = (text, looks_like_run_id(text))
        if len(encoded) <= NAME_CACHE_BYTES:
            if len(_NAMES) >= NAME_CACHE:
                _NAMES.clear()
            _NAMES[encoded] = got
    return got


def agent_of(attrs: Mapping[str, bytes], names: AttributeNames) -> tuple[str, str]:
    """The agent a span names and the first per-run id found where a name is expected, as the
    ``gateway`` dialect's ``agent_name`` reads it (``gen_ai.agent.name``, else
    ``gen_ai.agent.id``; the ``attributes:`` option's keys): the first non-empty value not
    shaped like a per-run id (a UUID-shaped ``gen_ai.agent.id`` is a run id, for
    ``workflow.id``, never a label). The C ingest (``agent_of`` in
    ``plugins/_native/_tracewire.c``) reads the same, and so does
    :func:`plugins._agentconv.agent_label` on decoded values (the agentmetrics connector's
    reading): a change of the rule is made in each. Not shared with ``agent_label``: this
    one reads encoded values through :func:`name_text` (text and run-id shape remembered per
    encoding) and keeps the first run id, for each root and agent-naming span; a shared
    predicate would test the shape again, a shared table of keys add a call."""
    run_id = ""
    for key in (names.agent_name, names.agent_id):
        raw = attrs.get(key)
        if raw is None:
            continue
        text, run = name_text(raw)
        if not text:
            continue
        if run:
            run_id = run_id or text
            continue
        return text, run_id
    return "", run_id


def root_facts(
    span_raw: bytes, trace_id: bytes, names: AttributeNames, keys: Sequence[str]
) -> tuple[RootFacts, str]:
    """Read a root span (attributes as a C-level map, status and events decoded only when
    needed): whether it is a workflow by the gateway's own rules (named ``workflow.<type>``
    or carrying ``workflow.name`` / ``workflow.id``), its id, type and outcome, the stamp
    attributes (``keys``) it already has, and its agent's name (:func:`agent_of`). The
    workflow id is the root's ``workflow.id``, else a per-run id found where the agent's name
    is expected (a UUID-shaped ``gen_ai.agent.id``), else the trace id."""
    view = SpanView.FromString(span_raw)
    attrs = view.attributes

    def get(key: str) -> str:
        value = attrs.get(key)
        return cached_str(value) if value is not None else ""

    agent, run_id = agent_of(attrs, names)
    name = view.name.decode("utf-8", "replace")
    prefix = names.workflow_span_prefix
    if not (name.startswith(prefix) or names.workflow_name in attrs or names.workflow_id in attrs):
        return NOT_WORKFLOW, agent
    code, message = 0, ""
    if view.status:
        status = Status.FromString(view.status)
        code, message = status.code, status.message
    error_text = get(names.error_type)
    exception = ""
    if code == STATUS_ERROR or error_text:
        for raw_event in view.events:
            event = Span.Event.FromString(raw_event)
            if event.name == "exception":
                for kv in event.attributes:
                    if kv.key == "exception.type":
                        exception = str(kv.value.string_value)
                break
    result = outcome_from(get(names.workflow_outcome), error_text, exception, code, message)
    wf_type = workflow_type_of(get(names.workflow_type), get(names.workflow_name), name, prefix)
    wf_id_raw = attrs.get(names.workflow_id)  # unique per workflow: not cached
    wf_id = (value_str(wf_id_raw) if wf_id_raw is not None else "") or run_id or trace_id.hex()
    present = tuple(k for k in keys if k in attrs)
    return (True, wf_id, wf_type, result, present), agent


def span_agent(span_raw: bytes, names: AttributeNames) -> str:
    """The agent a (non-root) span names (:func:`agent_of`), or ``""``."""
    return agent_of(SpanView.FromString(span_raw).attributes, names)[0]


class ToolCalls:
    """Recognises tool calls (``gen_ai.operation.name = execute_tool`` or
    ``mcp.method.name = tools/call``) and gives a failed one lacking ``error.type`` one (from
    the classifier; memoised by status message). ``on_classified`` is called once per
    ``error.type`` added."""

    def __init__(
        self, names: AttributeNames, classifier: ErrorClassifier, on_classified: Callable[[], None]
    ) -> None:
        self.names = names
        self.classifier = classifier
        self.on_classified = on_classified
        # status message -> the encoded error.type of a failed tool call without events
        self._suffixes: dict[bytes, bytes] = {}
        # the bytes a span that may be a tool call contains (a cheap pre-test)
        self.markers = (names.tool_operation.encode(), names.mcp_tool_method.encode())

    def check(self, span_raw: bytes) -> tuple[bytes, bool]:
        """Look at a span that may be a tool call (its attributes read as a C-level map); a
        failed tool call lacking ``error.type`` gets one appended. Returns the (possibly
        extended) bytes and whether it is a tool call."""
        view = SpanView.FromString(span_raw)
        attrs = view.attributes
        names = self.names
        op = attrs.get(names.operation_name)
        method = attrs.get(names.mcp_method_name)
        tool = (op is not None and cached_str(op) == names.tool_operation) or (
            method is not None and cached_str(method) == names.mcp_tool_method
        )
        if tool and names.error_type not in attrs and view.status:
            span_raw = self.classify_failure(span_raw)
        return span_raw, tool

    def classify_failure(self, span_raw: bytes, message: bytes | None = None) -> bytes:
        """A tool call lacking ``error.type`` with a status: if it failed, with an
        ``error.type`` (from the classifier) appended. ``message``: the span's status message
        when it alone decides the error type (the C path passes it for a failed span without
        events); the encoded attribute is then remembered for that message."""
        if message is not None:
            suffix = self._suffixes.get(message)
            if suffix is not None:
                self.on_classified()
                return span_raw + suffix
        span = Span.FromString(span_raw)
        if span.status.code == STATUS_ERROR:
            error_type = self.classifier.classify(span)
            suffix = encode_attribute(self.names.error_type, error_type)
            if message is not None:
                if len(self._suffixes) >= ERROR_SUFFIX_CACHE:
                    self._suffixes.clear()
                self._suffixes[message] = suffix
            span_raw = span_raw + suffix
            self.on_classified()
        return span_raw


def complexity_tier(
    spans: int,
    tool_calls: int,
    depth_of: Callable[[int], int],
    tiers: Sequence[ComplexityTier],
    depth_cap: int,
) -> str:
    """The first tier whose bounds a workflow meets (``complex`` when none);
    ``depth_of(cap)`` gives the span tree's depth (computed only when a tier's span and tool
    bounds are met)."""
    depth = -1
    for tier in tiers:
        if spans <= tier.max_spans and tool_calls <= tier.max_tool_calls:
            if depth < 0:
                depth = depth_of(depth_cap)
            if depth <= tier.max_depth:
                return tier.name
    return TOP_TIER


def max_depth(ids: list[bytes], parents: list[bytes], cap: int = 0) -> int:
    """Depth of the span tree (a root alone is depth 1), level by level from the spans whose
    parent is not in the trace; bounded even if the ids form a cycle. With ``cap``, no more
    than ``cap`` levels are walked (the result is ``min(depth, cap)``)."""
    present = set(ids)
    children: dict[bytes, list[bytes]] = {}
    level: list[bytes] = []
    for span_id, parent in zip(ids, parents, strict=True):
        if parent in present:
            children.setdefault(parent, []).append(span_id)
        else:
            level.append(span_id)
    depth = 0
    seen = 0
    total = len(ids)
    while level and seen < total and (not cap or depth < cap):
        depth += 1
        seen += len(level)
        nxt: list[bytes] = []
        for span_id in level:
            below = children.get(span_id)
            if below:
                nxt.extend(below)
        level = nxt
    return depth


def stamp_pattern(keys: Sequence[str]) -> re.Pattern[bytes]:
    """Finds any of the stamp attributes in an encoded span."""
    from plugins.workflowprocessor.wire import key_marker

    return re.compile(b"|".join(re.escape(key_marker(k)) for k in keys))


def suffix_for(
    span_raw: bytes, stamp: Stamp, keys: Sequence[str], pattern: re.Pattern[bytes]
) -> bytes:
    """The stamp's encoding, without the attributes the span already has."""
    if pattern.search(span_raw) is None:
        return stamp[1]
    present = SpanView.FromString(span_raw).attributes
    return b"".join(
        encode_attribute(k, v) for k, v in zip(keys, stamp[0], strict=True) if k not in present
    )


_T = TypeVar("_T")


def parts(items: list[_T], spans_of: Callable[[_T], int], max_spans: int) -> Iterator[list[_T]]:
    """``items`` (traces due for release) in consecutive parts of about ``max_spans`` spans (a
    part ends with the trace that reaches it): each part is one request downstream, so what a
    release builds and the next components copy stays small however many traces fall due at
    once."""
    start = spans = 0
    for i, item in enumerate(items):
        spans += spans_of(item)
        if spans >= max_spans:
            yield items[start : i + 1]
            start, spans = i + 1, 0
    if start < len(items):
        yield items[start:]
