"""Which span of a trace is its execution, read with the agent dialect tables
(``plugins/_agentdialects``).

An *execution* is the outermost agent run or workflow of a trace (``invoke_agent``,
``invoke_workflow``, an OpenLLMetry ``workflow`` / ``agent`` span, an OpenInference ``AGENT``
span, a ``workflow.<type>`` span of the gateway's own dialect...), which need not be the trace's
root: an HTTP server span may sit above it. ``create_agent`` is not an execution. A trace is
one execution: agent runs nested in it (an agent invoking a sub-agent) are part of it, not
executions of their own, so the outer run is counted once; when one trace holds several
outermost runs side by side (a request handler running two agents one after the other), the
first to start is the execution and the trace is stamped with it. A run whose parent never
arrived (an orphan: its parent may be any span of the trace) is the execution only when no run
below a parentless span of the trace is one.

How it stays cheap: while a trace's root span is a workflow by the gateway's own rules (the
common case of instrumented workflows), that root is the outermost execution and nothing else
is read. Otherwise the spans that hold one of the byte strings an execution rule needs
(:func:`execution_markers`, derived from the tables once) are remembered by index as they
arrive (the C store finds them in its ingest: no second pass over the spans) and read with the
classifier when the trace is released.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

from google.protobuf.message import DecodeError
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from plugins._agentconv import STATUS_ERROR, AttributeNames, outcome_from
from plugins._agentdialects import CompiledMatch, Dialects, Role
from plugins._spanview import SpanView, cached_str
from plugins.workflowprocessor.rules import RootFacts
from plugins.workflowprocessor.wire import varint

EXECUTION_ROLES = (Role.AGENT_RUN, Role.WORKFLOW)

# values compared as strings that another AnyValue kind can also spell (value_text gives
# "true", "12", "1.5" for bool, int and double values): their encoded string is no marker
_NOT_STRING_ONLY = ("true", "false")


def _string_value(value: str) -> bytes | None:
    """The encoded ``AnyValue{string_value}`` of a value, if only a string can give it."""
    if value in _NOT_STRING_ONLY or value.lstrip("-").replace(".", "", 1).isdigit():
        return None
    raw = value.encode()
    return b"\x0a" + varint(len(raw)) + raw


def _key(key: str) -> bytes:
    raw = key.encode()
    return b"\x0a" + varint(len(raw)) + raw


def _alternative_markers(m: CompiledMatch, keys: Sequence[str]) -> tuple[bytes, ...] | None:
    """Byte strings one of which every span matching ``m`` contains (the most selective
    condition of the alternative), or ``None`` when no condition gives any."""
    options: list[tuple[bytes, ...]] = []
    for key, values in m.equals:
        encoded = [_string_value(v) for v in values]
        if values and all(e is not None for e in encoded):
            options.append(tuple(e for e in encoded if e is not None))
        else:
            options.append((_key(keys[key]),))
    for key in m.present:
        options.append((_key(keys[key]),))
    if m.name_equals:
        options.append(tuple(n.encode() for n in m.name_equals if n))
    if m.name_prefix and all(m.name_prefix):
        options.append(tuple(p.encode() for p in m.name_prefix))
    options = [o for o in options if o and all(o)]
    if not options:
        return None
    # the most selective: the option whose shortest marker is the longest
    return max(options, key=lambda o: (min(len(x) for x in o), -len(o)))


def execution_markers(dialects: Dialects) -> tuple[bytes, ...] | None:
    """The byte strings a span must hold (one of) to be an agent run or a workflow under
    ``dialects``; ``None`` when some rule gives none (every span is then read)."""
    compiled = dialects.compiled
    out: list[bytes] = []
    for rule in compiled.rules:
        if rule.role not in EXECUTION_ROLES:
            continue
        for alt in rule.alternatives:
            markers = _alternative_markers(alt, compiled.attribute_keys)
            if markers is None:
                return None
            out.extend(markers)
    # a marker containing another is implied by it
    unique = sorted(set(out), key=len)
    kept: list[bytes] = []
    for m in unique:
        if not any(k in m for k in kept):
            kept.append(m)
    return tuple(kept)


@functools.lru_cache(maxsize=1024)
def scope_name(scope: bytes) -> str:
    """The name of an encoded ``InstrumentationScope``."""
    if not scope:
        return ""
    try:
        return str(InstrumentationScope.FromString(scope).name)
    except DecodeError:
        return ""


@dataclass(frozen=True, slots=True)
class Execution:
    """An agent run or workflow span: what it says about its trace's workflow."""

    index: int  # in the trace
    span_id: bytes
    parent: bytes
    start: int
    end: int
    facts: RootFacts  # (True, workflow id, type, outcome, stamp attributes present)
    agent: str  # the agent's logical name, or ""


def execution_of(
    span_raw: bytes,
    scope: bytes,
    index: int,
    trace_id: bytes,
    dialects: Dialects,
    names: AttributeNames,
    keys: Sequence[str],
) -> Execution | None:
    """The span read with the classifier: an :class:`Execution` when it is an agent run or a
    workflow. ``workflow_type`` is the workflow's name, else the agent's; the workflow id is
    the per-run id the dialect names (``gen_ai.conversation.id``, a UUID-shaped
    ``gen_ai.agent.id``, ``workflow.id``...), else the trace id; the outcome is from the
    status, ``error.type`` and the exception events' types."""
    try:
        view = SpanView.FromString(span_raw)
        code, message = 0, ""
        if view.status:
            status = Status.FromString(view.status)
            code, message = status.code, status.message
    except DecodeError:  # (the receivers refuse such spans; held spans are never dropped)
        return None
    attrs = view.attributes  # encoded values: the classifier decodes those it reads
    facts = dialects.classify(
        view.name.decode("utf-8", "replace"),
        view.kind,
        attrs,
        scope=scope_name(scope),
        root=not view.parent_span_id,
        status_code=code,
    )
    if facts.role not in EXECUTION_ROLES:
        return None
    agent = facts.label("agent_name")
    wf_type = facts.label("workflow_type") or agent or "unknown"
    error_type = facts.label("error_type")
    exception = ""
    if code == STATUS_ERROR or error_type:
        for raw_event in view.events:
            try:
                event = Span.Event.FromString(raw_event)
            except DecodeError:
                continue
            if event.name == "exception":
                for kv in event.attributes:
                    if kv.key == "exception.type" and kv.value.string_value:
                        exception = str(kv.value.string_value)
                        break
                if exception:
                    break
    given = attrs.get(names.workflow_outcome)
    outcome = outcome_from(
        cached_str(given) if given is not None else "", error_type, exception, code, message
    )
    wf_id = facts.run_id or trace_id.hex()
    present = tuple(k for k in keys if k in attrs)
    return Execution(
        index,
        view.span_id,
        view.parent_span_id,
        view.start_time_unix_nano,
        view.end_time_unix_nano,
        (True, wf_id, wf_type, outcome, present),
        agent,
    )


def outermost(
    found: list[Execution], ids: list[bytes], parents: list[bytes]
) -> tuple[Execution, str] | None:
    """The execution of a trace among its agent runs and workflows (see the module
    docstring), and the agent's name: the execution's, else that of the outermost run below
    it naming one."""
    if not found:
        return None
    if len(found) == 1:
        return found[0], found[0].agent
    parent_of = dict(zip(ids, parents, strict=True))
    by_id = {e.span_id: e for e in found}
    depth: dict[bytes, int] = {}
    top: list[Execution] = []
    connected: list[Execution] = []  # of top: those below a parentless span of the trace
    for e in found:
        # executions above this one (bounded: ids may form a cycle)
        above = 0
        p = e.parent
        reached = False
        for _ in range(len(ids)):
            if not p:
                reached = True
                break
            if p in by_id:
                above += 1
            up = parent_of.get(p)
            if up is None:
                break  # an ancestor never arrived
            p = up
        depth[e.span_id] = above
        if above == 0:
            top.append(e)
            if reached:
                connected.append(e)
    if connected:
        # an orphan (a run whose parent never arrived) may be inside any of them: a run
        # known to be outermost wins
        top = connected
    elif not top:  # a cycle of executions: the first to start
        top = found
    chosen = min(top, key=lambda e: (e.start, e.index))
    agent = chosen.agent
    if not agent:
        named = [e for e in found if e.agent]
        if named:
            agent = min(named, key=lambda e: (depth.get(e.span_id, 0), e.start, e.index)).agent
    return chosen, agent
