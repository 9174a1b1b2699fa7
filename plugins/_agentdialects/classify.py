"""The compiled classifier: dialect tables in, :class:`SpanFacts` per span out.

Compiled once (from the built-in tables, the plugins' and the config's); classifying a span
reads only the attributes the tables name and keeps no per-span state.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from plugins._agentdialects.tables import (
    LABELS,
    ROLE_LABELS,
    SPAN_KINDS,
    TOKEN_LABELS,
    DialectTable,
    LabelSource,
    Match,
    NameRegex,
    Role,
)

STATUS_ERROR = 2
TOOLS_CALL = "tools/call"
SPAN_KIND_CLIENT = SPAN_KINDS["CLIENT"]

# Labels that name things (become metric labels): a per-run id found there is not a name.
NAME_LABELS = frozenset({"workflow_type", "agent_name", "tool_name", "a2a_message_type"})

# (matched whole: ``$`` would also match before a trailing newline; the C twin,
# ``looks_like_run_id`` in plugins/_native/_tracewire.c, reads the same shapes)
_RUN_ID_RE = re.compile(
    r"[A-Za-z_\-]*[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?"
    r"[0-9a-fA-F]{12}"  # a UUID, bare or behind a short prefix (pyd_ai_..., call_...)
    r"|[0-9a-fA-F]{16,}"  # a long hex id
    r"|[0-9A-HJKMNP-TV-Z]{26}"  # a ULID
)


def looks_like_run_id(value: str) -> bool:
    """``True`` for UUID-, ULID- or long-hex-shaped values: per-run ids, never labels."""
    return len(value) >= 16 and _RUN_ID_RE.fullmatch(value) is not None


def _decode_any_value(encoded: bytes) -> Any:
    """An encoded ``AnyValue`` (``plugins._spanview``'s attribute maps), or ``None``."""
    from google.protobuf.message import DecodeError
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue

    try:
        return AnyValue.FromString(encoded)
    except (DecodeError, RuntimeError, ValueError):
        return None


def value_text(value: Any) -> str:
    """An attribute value as text: Python scalars, an OTLP ``AnyValue``, or an encoded
    ``AnyValue`` (``bytes``, as in ``plugins._spanview``'s attribute maps)."""
    if type(value) is str:
        return value
    if type(value) is bytes:
        if value[:1] == b"\x0a" and len(value) > 1 and value[1] < 0x80:  # a short string
            return value[2 : 2 + value[1]].decode("utf-8", "replace")
        value = _decode_any_value(value)
        if value is None:
            return ""
    which = getattr(value, "WhichOneof", None)
    if which is None:
        if isinstance(value, str):
            return value
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, int):
            return str(value)
        if isinstance(value, float):
            return f"{value:g}"
        return "" if value is None else str(value)
    kind = which("value")
    if kind == "string_value":
        return str(value.string_value)
    if kind == "int_value":
        return str(value.int_value)
    if kind == "bool_value":
        return "true" if value.bool_value else "false"
    if kind == "double_value":
        return f"{value.double_value:g}"
    return ""


def value_int(value: Any) -> int | None:
    """An attribute value as a non-negative integer, or ``None``."""
    if type(value) is bytes:
        value = _decode_any_value(value)
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, float):
        return int(value) if value >= 0 and value == value and value < 2**63 else None
    which = getattr(value, "WhichOneof", None)
    if which is not None:
        kind = which("value")
        if kind == "int_value":
            return int(value.int_value) if value.int_value >= 0 else None
        if kind == "double_value":
            return value_int(float(value.double_value))
        if kind == "string_value":
            value = value.string_value
        else:
            return None
    if isinstance(value, str) and value.isdigit() and len(value) < 19:
        return int(value)
    return None


@dataclass(frozen=True, slots=True)
class SpanFacts:
    """What the dialect tables say about one span.

    ``labels`` holds the labels found (see :data:`~plugins._agentdialects.LABELS`; never a
    per-run id in a name label, never the token counts); ``run_id`` the first per-run id
    (``gen_ai.conversation.id``, a UUID-shaped ``gen_ai.agent.id``, ...), for ``workflow.id``.
    ``failed`` is set when the status is ERROR or the span has an ``error_type``;
    ``model_retry`` when its exception is one of the dialect's retry types (pydantic-ai's
    ``ModelRetry``): the model was asked to try again, the tool did not fail;
    ``peer_error`` when a CLIENT span's exception is one of the dialect's peer error types (the
    remote peer answered with an error: the failure arose there, not here).
    """

    role: Role
    dialect: str = ""
    labels: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    run_id: str = ""
    input_tokens: int | None = None
    output_tokens: int | None = None
    failed: bool = False
    exception_type: str = ""
    model_retry: bool = False
    service: str = ""
    """The ``service.name`` of the span's resource, when the caller gave it."""
    peer_error: bool = False
    status_report: bool = False
    """It failed only as the report of an answer's status (a rule's ``reports_status``, no
    exception of its own): not a failure of its own."""

    def label(self, name: str, default: str = "") -> str:
        """A label's value, or ``default``."""
        return self.labels.get(name, default)

    @property
    def error_type(self) -> str:
        """``error.type`` (or the dialect's equivalent), else the exception type, else ``""``."""
        return self.labels.get("error_type") or self.exception_type

    @property
    def mcp_method(self) -> str:
        return self.labels.get("mcp_method", "")

    @property
    def is_tool_layer(self) -> bool:
        """A span that traces a tool call: a framework's tool span, or an MCP ``tools/call``
        request on either side."""
        role = self.role
        if role is Role.TOOL_CALL:
            return True
        return role in (Role.MCP_CLIENT, Role.MCP_SERVER) and self.mcp_method == TOOLS_CALL

    @property
    def is_execution(self) -> bool:
        """An agent run or a workflow (an execution when it is the outermost one)."""
        return self.role in (Role.AGENT_RUN, Role.WORKFLOW)

    @property
    def server(self) -> str:
        """The MCP (or A2A) server: ``server.address[:server.port]`` (the client side says
        where it sent the request), else, on the server side, its ``service.name``; ``""``
        when neither is known."""
        address = self.labels.get("server_address", "")
        if address:
            port = self.labels.get("server_port", "")
            return f"{address}:{port}" if port else address
        if self.role in (Role.MCP_SERVER, Role.A2A_SERVER):
            return self.service
        return ""


_EMPTY: Mapping[str, str] = MappingProxyType({})
NO_FACTS = SpanFacts(Role.NONE)


# -- compiled (flat) form -------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class CompiledMatch:
    """One alternative of a match, with attribute keys as indexes into
    :attr:`CompiledTables.attribute_keys` and span kinds as OTLP numbers."""

    equals: tuple[tuple[int, tuple[str, ...]], ...] = ()
    present: tuple[int, ...] = ()
    absent: tuple[int, ...] = ()
    name_prefix: tuple[str, ...] = ()
    name_equals: tuple[str, ...] = ()
    name_regex: str = ""
    kinds: tuple[int, ...] = ()
    scope_prefix: tuple[str, ...] = ()
    root: int = -1
    """-1: either; 1: only a span without parent; 0: only one with a parent."""


@dataclass(frozen=True, slots=True)
class CompiledSource:
    """A label source: an attribute (``key`` >= 0) or a span-name regex (``key`` == -1)."""

    key: int
    name_regex: str = ""


@dataclass(frozen=True, slots=True)
class CompiledRule:
    dialect: int
    role: Role
    alternatives: tuple[CompiledMatch, ...]
    labels: tuple[tuple[int, tuple[CompiledSource, ...]], ...]
    """``(label index into LABELS, sources in order)``: the rule's sources, then the dialect's."""
    values: tuple[tuple[int, str], ...]
    reports_status: bool = False


@dataclass(frozen=True, slots=True)
class CompiledTables:
    """Every table flattened to names, indexes and tuples: what a C scanner is configured with
    once. :class:`Dialects` evaluates exactly this form (it is the Python twin):

    1. dialects in order; a dialect is tried when it has no ``detect`` or one of its
       ``detect`` alternatives holds; within it, ``rules`` (those whose ``dialect`` is its
       index, in order), the first rule one of whose ``alternatives`` holds decides (an
       alternative holds when every non-empty condition does; ``root``: -1 either);
    2. each label (index into ``labels``): the first source giving a non-empty value — an
       attribute (``key`` >= 0: index into ``attribute_keys``) as text, or the first group of
       ``name_regex`` on the span name; token labels take the first source that is a
       non-negative integer; a value of a ``name_labels`` label matching ``run_id_pattern`` is
       skipped (and becomes the run id when there is none yet); then the rule's ``values``
       for labels still missing; an ``agent_run`` without ``workflow_type`` takes its
       ``agent_name``;
    3. the run id: the first of the dialect's ``run_ids`` attributes present, else what 2.
       found; ``model_retry``: the exception type's last dotted part is in the dialect's
       ``retry_exception_types``; ``peer_error``: a CLIENT span's exception type is one of
       the dialect's ``peer_error_types`` (see :func:`type_matches`); ``failed``: status
       ERROR or an ``error_type`` label.

    ``attribute_keys`` is every attribute any table reads (a scanner may skip all others)."""

    dialects: tuple[str, ...]
    attribute_keys: tuple[str, ...]
    labels: tuple[str, ...]
    detect: tuple[tuple[CompiledMatch, ...], ...]
    rules: tuple[CompiledRule, ...]
    run_ids: tuple[tuple[int, ...], ...]
    retry_exception_types: tuple[tuple[str, ...], ...]
    name_labels: tuple[int, ...] = ()
    run_id_pattern: str = ""
    peer_error_types: tuple[tuple[str, ...], ...] = ()


class _Keys:
    def __init__(self) -> None:
        self.index: dict[str, int] = {}

    def __call__(self, key: str) -> int:
        found = self.index.get(key)
        if found is None:
            found = self.index[key] = len(self.index)
        return found


def _compile_match(m: Match, keys: _Keys) -> CompiledMatch:
    return CompiledMatch(
        equals=tuple((keys(k), tuple(v)) for k, v in m.attributes.items()),
        present=tuple(keys(k) for k in m.present),
        absent=tuple(keys(k) for k in m.absent),
        name_prefix=tuple(m.name_prefix),
        name_equals=tuple(m.name_equals),
        name_regex=m.name_regex or "",
        kinds=tuple(SPAN_KINDS[k] for k in m.kind),
        scope_prefix=tuple(m.scope_prefix),
        root=-1 if m.root is None else int(m.root),
    )


def _compile_sources(sources: Iterable[LabelSource], keys: _Keys) -> tuple[CompiledSource, ...]:
    out = []
    for s in sources:
        if isinstance(s, NameRegex):
            out.append(CompiledSource(-1, s.name_regex))
        else:
            out.append(CompiledSource(keys(s)))
    return tuple(out)


def compile_tables(tables: Sequence[DialectTable]) -> CompiledTables:
    """The flat form of ``tables`` (in priority order)."""
    keys = _Keys()
    rules: list[CompiledRule] = []
    detect = []
    run_ids = []
    retries = []
    peers = []
    for d_index, table in enumerate(tables):
        detect.append(tuple(_compile_match(m, keys) for m in table.detect))
        run_ids.append(tuple(keys(k) for k in table.run_ids))
        retries.append(tuple(table.retry_exception_types))
        peers.append(tuple(table.peer_error_types))
        for rule in table.rules:
            labels = []
            relevant = ROLE_LABELS[rule.role]
            for label in LABELS:
                shared = table.labels.get(label, ()) if label in relevant else ()
                sources = [*rule.labels.get(label, ()), *shared]
                if sources:
                    labels.append((LABELS.index(label), _compile_sources(sources, keys)))
            rules.append(
                CompiledRule(
                    dialect=d_index,
                    role=rule.role,
                    alternatives=tuple(_compile_match(m, keys) for m in rule.match),
                    labels=tuple(labels),
                    values=tuple((LABELS.index(k), v) for k, v in rule.values.items()),
                    reports_status=rule.reports_status,
                )
            )
    return CompiledTables(
        dialects=tuple(t.name for t in tables),
        attribute_keys=tuple(keys.index),
        labels=LABELS,
        detect=tuple(detect),
        rules=tuple(rules),
        run_ids=tuple(run_ids),
        retry_exception_types=tuple(retries),
        peer_error_types=tuple(peers),
        name_labels=tuple(i for i, label in enumerate(LABELS) if label in NAME_LABELS),
        run_id_pattern=_RUN_ID_RE.pattern,
    )


# -- the Python classifier ------------------------------------------------------------------------
class _Alt:
    """A compiled alternative as Python closures' data (fast path of :meth:`Dialects.classify`)."""

    __slots__ = ("absent", "equals", "kinds", "name_equals", "name_prefix", "name_re", "present",
                 "root", "scope_prefix", "trigger")  # fmt: skip

    def __init__(self, m: CompiledMatch, keys: tuple[str, ...]) -> None:
        self.equals = tuple((keys[k], frozenset(v)) for k, v in m.equals)
        self.present = tuple(keys[k] for k in m.present)
        self.absent = tuple(keys[k] for k in m.absent)
        self.name_prefix = m.name_prefix
        self.name_equals = frozenset(m.name_equals)
        self.name_re = re.compile(m.name_regex) if m.name_regex else None
        self.kinds = frozenset(m.kinds)
        self.scope_prefix = m.scope_prefix
        self.root = m.root
        # an attribute that must be present for the alternative to hold: tested first, inline
        self.trigger: str | None = (self.present or tuple(k for k, _ in self.equals) or (None,))[0]

    def holds(self, name: str, kind: int, attrs: Mapping[str, Any], scope: str, root: bool) -> bool:
        if self.kinds and kind not in self.kinds:
            return False
        if self.root >= 0 and root != bool(self.root):
            return False
        if self.name_prefix and not name.startswith(self.name_prefix):
            return False
        if self.name_equals and name not in self.name_equals:
            return False
        if self.scope_prefix and not scope.startswith(self.scope_prefix):
            return False
        for key in self.present:
            if key not in attrs:
                return False
        for key in self.absent:
            if key in attrs:
                return False
        for key, allowed in self.equals:
            value = attrs.get(key)
            if value is None or value_text(value) not in allowed:
                return False
        return not (self.name_re is not None and self.name_re.search(name) is None)


# labels whose values differ from span to span (ids, counts): read on every call, never part of
# the memo key of Dialects.classify
VOLATILE_LABELS = frozenset(
    {"tool_call_id", "jsonrpc_request_id", "mcp_session_id", "input_tokens", "output_tokens"}
)


class _Rule:
    __slots__ = ("alternatives", "dialect", "labels", "reports", "role", "stable", "values",
                 "volatile")  # fmt: skip

    def __init__(self, rule: CompiledRule, tables: CompiledTables) -> None:
        keys = tables.attribute_keys
        self.dialect = rule.dialect
        self.role = rule.role
        self.reports = rule.reports_status
        self.alternatives = tuple(_Alt(m, keys) for m in rule.alternatives)
        self.labels = tuple(
            (
                LABELS[label],
                tuple(
                    (keys[s.key], None) if s.key >= 0 else ("", re.compile(s.name_regex))
                    for s in sources
                ),
            )
            for label, sources in rule.labels
        )
        self.values = tuple((LABELS[label], value) for label, value in rule.values)
        self.stable = tuple(x for x in self.labels if x[0] not in VOLATILE_LABELS)
        self.volatile = tuple(x for x in self.labels if x[0] in VOLATILE_LABELS)


MEMO_MAX = 65_536


class Dialects:
    """The compiled classifier. Build with :func:`~plugins._agentdialects.load_dialects` (or
    ``Dialects(tables)``); then :meth:`classify` each span. No per-span state; a bounded memo
    of decisions (role and stable labels per span shape: name, kind, scope, root and the
    attributes the tables test or name things from) makes repeated shapes cheap when the
    values are hashable (Python scalars, encoded ``AnyValue`` s)."""

    def __init__(self, tables: Sequence[DialectTable]) -> None:
        names = [t.name for t in tables]
        duplicates = {n for n in names if names.count(n) > 1}
        if duplicates:
            raise ValueError(f"dialects named twice: {', '.join(sorted(duplicates))}")
        self.tables: tuple[DialectTable, ...] = tuple(tables)
        self.compiled: CompiledTables = compile_tables(tables)
        keys = self.compiled.attribute_keys
        # detection: alternatives that only ask for one attribute are one set test
        self._detect_keys: tuple[frozenset[str], ...] = tuple(
            frozenset(keys[m.present[0]] for m in d if _only_present(m))
            for d in self.compiled.detect
        )
        self._detect = tuple(
            tuple(_Alt(m, keys) for m in d if not _only_present(m)) for d in self.compiled.detect
        )
        self._detect_any = tuple(not d for d in self.compiled.detect)
        by_dialect: list[list[tuple[str | None, frozenset[str] | None, _Alt, _Rule]]] = [
            [] for _ in tables
        ]
        for compiled_rule in self.compiled.rules:
            rule = _Rule(compiled_rule, self.compiled)
            for alt in rule.alternatives:
                # the values the trigger attribute must have, when it is an equality test
                allowed = next((v for k, v in alt.equals if k == alt.trigger), None)
                by_dialect[rule.dialect].append((alt.trigger, allowed, alt, rule))
        self._alternatives = tuple(tuple(r) for r in by_dialect)
        # a span none of whose attributes, name or scope could start a dialect's detection is
        # no agent span: most spans of a system are rejected by one set test
        triggers: set[str] = set()
        name_prefixes: list[str] = []
        scope_prefixes: list[str] = []
        self._always = False
        for detect in self.compiled.detect:
            if not detect:
                self._always = True
            for m in detect:
                alt = _Alt(m, keys)
                if alt.trigger is not None:
                    triggers.add(alt.trigger)
                elif m.name_prefix:
                    name_prefixes.extend(m.name_prefix)
                elif m.scope_prefix:
                    scope_prefixes.extend(m.scope_prefix)
                else:
                    self._always = True
        self._triggers = frozenset(triggers)
        # what a span's role and its stable labels depend on: the attributes any condition
        # tests and those the stable labels are read from (plus name, kind, scope, root)
        stable_keys: set[str] = set()
        for matches in (*self.compiled.detect, *(r.alternatives for r in self.compiled.rules)):
            for m in matches:
                stable_keys.update(keys[k] for k, _ in m.equals)
                stable_keys.update(keys[k] for k in (*m.present, *m.absent))
        for alternatives in self._alternatives:
            for _, _, _, rule in alternatives:
                for _, candidates in rule.stable:
                    stable_keys.update(key for key, regex in candidates if regex is None)
        self._stable_keys = frozenset(stable_keys)
        self._memo: dict[Any, tuple[int, _Rule, dict[str, str], str] | None] = {}
        self._name_prefixes = tuple(name_prefixes)
        self._scope_prefixes = tuple(scope_prefixes)
        self._run_ids = tuple(tuple(keys[k] for k in d) for d in self.compiled.run_ids)
        self._retries = tuple(frozenset(r) for r in self.compiled.retry_exception_types)
        self._peers = self.compiled.peer_error_types or ((),) * len(self.compiled.dialects)
        self.attribute_keys: frozenset[str] = frozenset(keys)

    @property
    def needles(self) -> tuple[bytes, ...] | None:
        """Byte strings one of which appears in the OTLP encoding of every span some dialect
        can claim (an attribute key that starts a detection, a span-name or scope prefix), or
        ``None`` when a dialect can claim any span: a request containing none of them holds no
        agent span and can pass unread."""
        if self._always:
            return None
        texts = {*self._triggers, *self._name_prefixes, *self._scope_prefixes}
        return tuple(sorted(t.encode() for t in texts if t))

    @property
    def names(self) -> tuple[str, ...]:
        """The dialects, in the order they are tried."""
        return self.compiled.dialects

    def match(
        self, name: str, kind: int, attrs: Mapping[str, Any], scope: str = "", root: bool = False
    ) -> tuple[int, _Rule] | None:
        """``(dialect index, rule)`` of the first rule that holds, or ``None``."""
        if (
            not self._always
            and self._triggers.isdisjoint(attrs)
            and not name.startswith(self._name_prefixes)
            and not scope.startswith(self._scope_prefixes)
        ):
            return None
        detect_keys = self._detect_keys
        detect_any = self._detect_any
        for index, detect in enumerate(self._detect):
            if not detect_any[index] and detect_keys[index].isdisjoint(attrs):
                for a in detect:
                    if a.trigger is not None and a.trigger not in attrs:
                        continue
                    if a.scope_prefix and not scope.startswith(a.scope_prefix):
                        continue
                    if a.name_prefix and not name.startswith(a.name_prefix):
                        continue
                    if a.holds(name, kind, attrs, scope, root):
                        break
                else:
                    continue
            for trigger, allowed, alt, rule in self._alternatives[index]:
                if trigger is not None:
                    value = attrs.get(trigger)
                    if value is None:
                        continue
                    if allowed is not None and value_text(value) not in allowed:
                        continue
                if alt.holds(name, kind, attrs, scope, root):
                    return index, rule
        return None

    def classify(
        self,
        name: str,
        kind: int,
        attrs: Mapping[str, Any],
        *,
        scope: str = "",
        root: bool = False,
        status_code: int = 0,
        exception_type: str = "",
        service: str = "",
    ) -> SpanFacts:
        """The facts of one span.

        ``name``: the span name; ``kind``: the OTLP span kind number (1 INTERNAL .. 5
        CONSUMER); ``attrs``: ``{key: value}`` with Python scalars, OTLP ``AnyValue`` s or
        encoded ``AnyValue`` s (``bytes``: a ``plugins._spanview`` span's ``attributes`` map
        can be passed as it is);
        ``scope``: the instrumentation scope name; ``root``: the span has no parent;
        ``status_code``: the OTLP status code (2 = ERROR); ``exception_type``: the
        ``exception.type`` of its first exception event, if any; ``service``: the
        ``service.name`` of its resource (names an MCP server on the server side).
        """
        if (
            not self._always
            and self._triggers.isdisjoint(attrs)
            and not name.startswith(self._name_prefixes)
            and not scope.startswith(self._scope_prefixes)
        ):  # no dialect can claim it (as in match): no memo needed
            return _unclaimed(status_code, exception_type, service)
        stable = self._stable_keys
        key = (name, kind, scope, root, tuple([kv for kv in attrs.items() if kv[0] in stable]))
        memo = self._memo
        try:
            known = key in memo
        except TypeError:  # unhashable values (decoded AnyValues): no memo
            return self._classify(
                name, kind, attrs, scope, root, status_code, exception_type, service, None
            )
        if known:
            decided = memo[key]
        else:
            decided = self._decide(name, kind, attrs, scope, root)
            if len(memo) >= MEMO_MAX:
                memo.clear()
            memo[key] = decided
        if decided is None:
            return _unclaimed(status_code, exception_type, service)
        index, rule, stable_labels, name_run_id = decided
        labels = dict(stable_labels)
        input_tokens = output_tokens = None
        for label, candidates in rule.volatile:
            for akey, _ in candidates:
                raw = attrs.get(akey)
                if raw is None:
                    continue
                if label in TOKEN_LABELS:
                    count = value_int(raw)
                    if count is None:
                        continue
                    if label == "input_tokens":
                        input_tokens = count
                    else:
                        output_tokens = count
                    break
                text = value_text(raw)
                if text:
                    labels[label] = text
                    break
        span = (kind, status_code, exception_type, service)
        return self._facts(
            index, rule, span, attrs, labels, name_run_id, (input_tokens, output_tokens)
        )

    def _decide(
        self, name: str, kind: int, attrs: Mapping[str, Any], scope: str, root: bool
    ) -> tuple[int, _Rule, dict[str, str], str] | None:
        """The matching rule and the stable labels (what the memo keeps), or ``None``."""
        found = self.match(name, kind, attrs, scope, root)
        if found is None:
            return None
        index, rule = found
        labels: dict[str, str] = {}
        run_id = ""
        for label, candidates in rule.stable:
            for key, regex in candidates:
                if regex is None:
                    raw = attrs.get(key)
                    if raw is None:
                        continue
                    text = value_text(raw)
                else:
                    m = regex.search(name)
                    if m is None:
                        continue
                    text = m.group(1) if m.groups() else m.group(0)
                if not text:
                    continue
                if label in NAME_LABELS and looks_like_run_id(text):
                    run_id = run_id or text
                    continue
                labels[label] = text
                break
        return index, rule, labels, run_id

    def explain(
        self,
        name: str,
        kind: int,
        attrs: Mapping[str, Any],
        *,
        scope: str = "",
        root: bool = False,
        status_code: int = 0,
        exception_type: str = "",
        service: str = "",
    ) -> tuple[SpanFacts, dict[str, str]]:
        """:meth:`classify`, plus, for each label read from an attribute, that attribute's key
        (the normalizing processor renames and may drop them)."""
        sources: dict[str, str] = {}
        facts = self._classify(
            name, kind, attrs, scope, root, status_code, exception_type, service, sources
        )
        return facts, sources

    def _classify(
        self,
        name: str,
        kind: int,
        attrs: Mapping[str, Any],
        scope: str,
        root: bool,
        status_code: int,
        exception_type: str,
        service: str,
        sources: dict[str, str] | None,
    ) -> SpanFacts:
        found = self.match(name, kind, attrs, scope, root)
        if found is None:
            return _unclaimed(status_code, exception_type, service)
        index, rule = found
        labels: dict[str, str] = {}
        run_id = ""
        input_tokens = output_tokens = None
        for label, candidates in rule.labels:
            for key, regex in candidates:
                if regex is None:
                    raw = attrs.get(key)
                    if raw is None:
                        continue
                    if label in TOKEN_LABELS:
                        count = value_int(raw)
                        if count is None:
                            continue
                        if label == "input_tokens":
                            input_tokens = count
                        else:
                            output_tokens = count
                        if sources is not None:
                            sources[label] = key
                        break
                    text = value_text(raw)
                else:
                    m = regex.search(name)
                    if m is None:
                        continue
                    text = m.group(1) if m.groups() else m.group(0)
                if not text:
                    continue
                if label in NAME_LABELS and looks_like_run_id(text):
                    run_id = run_id or text
                    continue
                labels[label] = text
                if sources is not None and regex is None:
                    sources[label] = key
                break
        span = (kind, status_code, exception_type, service)
        return self._facts(index, rule, span, attrs, labels, run_id, (input_tokens, output_tokens))

    def _facts(
        self,
        index: int,
        rule: _Rule,
        span: tuple[int, int, str, str],
        attrs: Mapping[str, Any],
        labels: dict[str, str],
        run_id: str,
        tokens: tuple[int | None, int | None],
    ) -> SpanFacts:
        """The end of a classification (memoised or not): the rule's fixed labels, an agent
        run's type from its agent, the per-run id (the dialect's run-id attributes win over
        ``run_id``, the one a name label gave), failed / retry / peer error, and the
        :class:`SpanFacts`. ``span``: its kind, status code, exception type and service."""
        kind, status_code, exception_type, service = span
        for label, value in rule.values:
            labels.setdefault(label, value)
        if rule.role is Role.AGENT_RUN and "workflow_type" not in labels and "agent_name" in labels:
            labels["workflow_type"] = labels["agent_name"]  # an agent run's type: its agent
        for key in self._run_ids[index]:
            raw = attrs.get(key)
            if raw is not None:
                text = value_text(raw)
                if text:
                    run_id = text
                    break
        failed = status_code == STATUS_ERROR or bool(labels.get("error_type"))
        retry = bool(exception_type) and exception_type.rsplit(".", 1)[-1] in self._retries[index]
        peer = (
            kind == SPAN_KIND_CLIENT
            and bool(exception_type)
            and type_matches(exception_type, self._peers[index])
        )
        return SpanFacts(
            role=rule.role,
            dialect=self.compiled.dialects[index],
            labels=MappingProxyType(labels),
            run_id=run_id,
            input_tokens=tokens[0],
            output_tokens=tokens[1],
            failed=failed,
            exception_type=exception_type,
            model_retry=retry,
            service=service,
            peer_error=peer,
            status_report=rule.reports and failed and not exception_type,
        )

    def classify_span(self, span: Any, scope: str = "", service: str = "") -> SpanFacts:
        """:meth:`classify` for a decoded OTLP ``Span`` message (its attributes, parent,
        status and first exception event); ``scope``: its scope's name; ``service``: its
        resource's ``service.name``."""
        attrs = {kv.key: kv.value for kv in span.attributes}
        return self.classify(
            span.name,
            span.kind,
            attrs,
            scope=scope,
            root=not span.parent_span_id,
            status_code=span.status.code,
            exception_type=first_exception_type(span),
            service=service,
        )


def _unclaimed(status_code: int, exception_type: str, service: str) -> SpanFacts:
    """The facts of a span no dialect claims: nothing, or that it failed."""
    failed = status_code == STATUS_ERROR
    if not failed and not exception_type:
        return NO_FACTS
    return SpanFacts(Role.NONE, failed=failed, exception_type=exception_type, service=service)


def type_matches(exception_type: str, types: Sequence[str]) -> bool:
    """An exception type is one of ``types``: the whole type or its last dotted part, or
    prefixed by an entry ending with ``.`` (every error of a module)."""
    last = exception_type.rsplit(".", 1)[-1]
    for t in types:
        if t in (exception_type, last) or (t.endswith(".") and exception_type.startswith(t)):
            return True
    return False


def _only_present(m: CompiledMatch) -> bool:
    """An alternative that only asks for one attribute to be present."""
    return len(m.present) == 1 and m == CompiledMatch(present=m.present)


def first_exception_type(span: Any) -> str:
    """``exception.type`` of a decoded span's first exception event, or ``""``."""
    for ev in span.events:
        if ev.name == "exception":
            for kv in ev.attributes:
                if kv.key == "exception.type":
                    return str(kv.value.string_value)
    return ""
