"""The ``redaction`` processor instance: the Collector's attribute rules (allow list, ignored
keys, blocked key patterns, blocked and allowed values, hashing, summary attributes), applied
to resources, scopes, spans, span events and log records (attributes and body), then the GenAI
content rules on prompts, completions, system instructions and tool call arguments/results."""

from __future__ import annotations

import bisect
import hashlib
import hmac
import re
from collections.abc import Callable
from re import _constants as _sre_constants
from re import _parser as _sre_parse
from typing import Any

from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from pipeline import Component, Consumer, CreateSettings, Payload, Signal, _otlpvalid
from pipeline._pbwire import encode_varint, field_readers, fields_reader
from plugins._anyvalue import scalar_to_string as _as_string
from plugins.redactionprocessor.config import (
    BUILTIN_PATTERNS,
    EVENT_CONTENT_KEYS,
    STRUCTURE_KEYS,
    RedactionConfig,
)
from plugins.redactionprocessor.prefilter import Prefilter
from plugins.redactionprocessor.sanitize import Sanitizers, idle_options

_MASK = "****"
_SEP = ","
_SUMMARY_KEYS = (
    "redaction.redacted.keys", "redaction.redacted.count",
    "redaction.masked.keys", "redaction.masked.count",
    "redaction.allowed.keys", "redaction.allowed.count",
    "redaction.ignored.count",
    "redaction.body.redacted.keys", "redaction.body.redacted.count",
    "redaction.body.masked.keys", "redaction.body.masked.count",
    "redaction.body.allowed.keys", "redaction.body.allowed.count",
    "redaction.body.ignored.count",
)  # fmt: skip


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


class Rules:
    """The compiled configuration; ``counts`` gathers redactions by rule during one call."""

    def __init__(self, config: RedactionConfig, logs: bool = False) -> None:
        self.config = config
        self.allow = set(config.allowed_keys) | set(_SUMMARY_KEYS)
        self.ignore = set(config.ignored_keys)
        self.ignore_re = [re.compile(p) for p in config.ignored_key_patterns]
        self.block_key_re = [re.compile(p) for p in config.blocked_key_patterns]
        self.block_re = [re.compile(p) for p in config.blocked_values]
        self.allow_value_re = [re.compile(p) for p in config.allowed_values]
        self.hash = _hasher(config.hash_function, config.hmac_key)
        g = config.genai_content
        self.genai = g if g is not None and g.enabled else None
        self.content_keys: set[str] = set()
        self.content_key_re: list[re.Pattern[str]] = []
        self.pii: list[tuple[str, re.Pattern[str]]] = []
        if self.genai is not None:
            self.content_keys = set(self.genai.keys) | set(self.genai.extra_keys)
            self.content_key_re = [re.compile(p) for p in self.genai.key_patterns]
            self.pii = [(n, re.compile(BUILTIN_PATTERNS[n])) for n in self.genai.patterns]
            self.pii += [(c.name, re.compile(c.regex)) for c in self.genai.custom_patterns]
        self.event_keys = set(EVENT_CONTENT_KEYS)
        sanitizers = Sanitizers(config.url_sanitizer, config.db_sanitizer, logs)
        self.sanitizers = sanitizers if sanitizers else None  # url_sanitizer, db_sanitizer
        self.counts: dict[str, int] = {}

    def count(self, rule: str, n: int = 1) -> None:
        self.counts[rule] = self.counts.get(rule, 0) + n

    # -- the Collector's rules ---------------------------------------------------------------
    def ignored(self, k: str) -> bool:
        return k in self.ignore or any(r.search(k) for r in self.ignore_re)

    def not_allowed(self, k: str) -> bool:
        return not self.config.allow_all_keys and k not in self.allow

    def mask_key(self, k: str) -> bool:
        return any(r.search(k) for r in self.block_key_re)

    def allowed_value(self, v: str) -> bool:
        return any(r.search(v) for r in self.allow_value_re)

    def mask_all(self, v: str) -> str:
        return self.hash(v) if self.hash is not None else _MASK

    def blocked(self, v: str) -> str:
        for r in self.block_re:
            if r.search(v):
                v = r.sub(lambda m: self.mask_all(m.group(0)), v)
        return v

    # -- GenAI content -----------------------------------------------------------------------
    def is_content(self, k: str, event: bool) -> bool:
        if self.genai is None:
            return False
        if k in self.content_keys or (event and k in self.event_keys):
            return True
        return any(r.match(k) for r in self.content_key_re)

    def content_text(self, text: str) -> str:
        """``text`` after the content action (not ``drop``, handled by the caller)."""
        g = self.genai
        assert g is not None
        if g.action == "keep" or not text:
            return text
        if g.action == "hash":
            self.count("genai_content.hash")
            return _sha256(text) if self.hash is None else self.hash(text)
        if g.action == "truncate":
            if len(text) > g.truncate_length:
                self.count("genai_content.truncate")
                return text[: g.truncate_length]
            return text
        for name, pattern in self.pii:
            text = pattern.sub(self._replacer(name), text)
        return text

    def _replacer(self, name: str) -> Callable[[re.Match[str]], str]:
        return lambda m: self._pii(name, m.group(0))

    def _pii(self, name: str, found: str) -> str:
        if name == "card_number":
            digits = found.replace(" ", "").replace("-", "")
            if not _luhn(digits):
                return found
        self.count(f"genai_content.pattern.{name}")
        return self.mask_all(found)

    def content_value(self, value: Any) -> bool:
        """Applies the content action to an ``AnyValue`` in place; returns False when the
        value is to be dropped."""
        g = self.genai
        assert g is not None
        if g.action == "drop":
            self.count("genai_content.drop")
            return False
        kind = value.WhichOneof("value")
        if kind == "string_value":
            new = self.content_text(value.string_value)
            if new != value.string_value:
                value.string_value = new
        elif kind == "array_value":
            for item in value.array_value.values:
                self.content_value(item)
        elif kind == "kvlist_value":
            for kv in value.kvlist_value.values:
                if kv.key not in STRUCTURE_KEYS:
                    self.content_value(kv.value)
        elif kind == "bytes_value" and value.bytes_value and g.action != "keep":
            self.count(f"genai_content.{g.action}")
            value.bytes_value = b""  # opaque content: nothing of it is kept
        return True


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _hasher(name: str, key: str) -> Callable[[str], str] | None:
    if name in ("", "none"):
        return None
    if name == "hmac-sha256":
        return lambda s: hmac.new(key.encode(), s.encode(), hashlib.sha256).hexdigest()
    if name == "hmac-sha512":
        return lambda s: hmac.new(key.encode(), s.encode(), hashlib.sha512).hexdigest()
    algo = {"md5": "md5", "sha1": "sha1", "sha3": "sha3_256", "sha256": "sha256"}[name]
    return lambda s: hashlib.new(algo, s.encode()).hexdigest()


class RedactionProcessor(Component):
    """Builds a redacted copy of every payload; never changes the one it is given."""

    mutates_data = False

    def __init__(
        self, settings: CreateSettings, config: RedactionConfig, signal: Signal, nxt: Consumer
    ) -> None:
        self.settings = settings
        self.config = config
        self.signal = signal
        self.next = nxt
        self.rules = Rules(config, signal is Signal.LOGS)
        for option in idle_options(config.url_sanitizer, config.db_sanitizer, signal.value):
            settings.logger.warning(
                "%s is enabled without attributes: it sanitizes nothing in a %s pipeline "
                "(list the attribute keys in its attributes)",
                option,
                signal.value,
            )
        self._counter = settings.telemetry.service.counter(
            "otelcol_processor_redaction_redactions",
            "Attributes removed or masked, and content dropped, hashed, truncated or masked, "
            "by rule.",
            ("processor", "rule"),
        )
        self._children: dict[str, Any] = {}
        self._fast = self._fast_path_possible()
        rules = self.rules
        # searched in a request's text: blocked values and key patterns, content key patterns;
        # ignored key patterns only matter for the summary's count
        self._searches = [*rules.block_re, *rules.block_key_re, *rules.content_key_re]
        if config.summary in ("debug", "info"):
            # the summary counts ignored keys and values an allowed pattern matches: a request
            # holding either is not passed on untouched
            self._searches += [*rules.ignore_re, *rules.allow_value_re]
        # ASCII patterns that mean the same on bytes are searched in the request's bytes (no
        # decoding); the others in its text
        byte_searches = [
            re.compile(r.pattern.encode()) for r in self._searches if _bytes_safe(r.pattern)
        ]
        self._searches = [r for r in self._searches if not _bytes_safe(r.pattern)]
        needles = [k.encode() for k in rules.content_keys]
        # the URL sanitizer's span names: looked at in the spans' names, not searched as bytes
        # ("/", "?" and "#" are in nearly every request's ids and times)
        self._url_names = (
            rules.sanitizers is not None and rules.sanitizers.url_names
            and signal is Signal.TRACES
        )  # fmt: skip
        if rules.sanitizers is not None:
            needles += [k.encode() for k in rules.sanitizers.keys]
            needles += rules.sanitizers.needles(
                signal is Signal.TRACES, signal is Signal.LOGS, url_names=False
            )
        if rules.genai is not None and signal is Signal.LOGS:
            needles += [p.encode() for p in rules.genai.event_prefixes]  # GenAI events
        # a needle that contains another is found only where that one is: one search is enough
        self._needles = _minimal_needles(needles)
        self._needle_searches = _needle_searches(self._needles)
        # a byte pattern is searched only when the literal it starts with is in the request;
        # one whose literal contains a needle is never searched (it is searched only when no
        # needle was found, so it cannot match)
        gated: list[tuple[bytes, re.Pattern[bytes]]] = []
        for r in byte_searches:
            lit = _leading_literal(r.pattern)
            if not any(n in lit for n in self._needles):
                gated.append((lit, r))
        self._byte_searches = _group_patterns(gated)
        # a span event whose name starts with a GenAI event prefix: its name field (field 2 of
        # Event, tag 0x12) followed by the prefix, in the request's bytes
        self._event_name_re: re.Pattern[bytes] | None = None
        if rules.genai is not None and signal is Signal.TRACES and rules.genai.event_prefixes:
            self._event_name_re = _event_name_pattern(
                [p.encode() for p in rules.genai.event_prefixes]
            )
        # the same searches in one C pass over the request (prefilter.py), when it is built
        summary_keys = (
            [k.encode() for k in rules.ignore] if config.summary in ("debug", "info") else []
        )
        event_prefixes = []
        if self._event_name_re is not None and rules.genai is not None:
            event_prefixes = [p.encode() for p in rules.genai.event_prefixes]
        self._prefilter = Prefilter.build(
            [*summary_keys, *self._needles], event_prefixes, [r for _, r in gated]
        )
        self._by_item = self._by_item_possible()

    async def consume(self, data: Payload) -> None:
        if data.item_count() and self._may_redact(data):
            data = self.process(data)
        await self.next.consume(data)

    def _fast_path_possible(self) -> bool:
        """Whether a request can be passed on untouched when its bytes show nothing to do:
        every key kept (``allow_all_keys``), values checked as strings only, and no pattern
        that depends on what surrounds a value (anchors, word boundaries, lookbehinds: the
        patterns are searched in the whole request's text, where a value's text is a
        substring, so a match in a value is a match there)."""
        c = self.config
        if not c.allow_all_keys or c.redact_all_types:
            return False
        patterns = [*c.blocked_values, *c.blocked_key_patterns, *c.ignored_key_patterns]
        if c.summary in ("debug", "info"):
            patterns += c.allowed_values  # searched in the request's text too (see __init__)
        g = self.rules.genai
        if g is not None:
            patterns += g.key_patterns
        unsafe = ("^", "$", "\\A", "\\Z", "\\b", "\\B", "(?<")
        return not any(u in p for p in patterns for u in unsafe)

    def _may_redact(self, data: Payload) -> bool:
        """False when the request certainly holds nothing any rule changes (see
        :meth:`_fast_path_possible`): it is passed on as it is, never decoded."""
        if not self._fast:
            return True
        raw = data.to_bytes()
        if self._bytes_may_redact(raw):
            return True
        sanitizers = self.rules.sanitizers
        return self._url_names and sanitizers is not None and sanitizers.url_names_may_change(raw)

    def _bytes_may_redact(self, raw: bytes) -> bool:
        """Whether the request's bytes hold a needle, a GenAI event name or a pattern's
        match (what :meth:`_may_redact` looks for beside the URL sanitizer's span names)."""
        prefilter = self._prefilter
        if prefilter is not None:
            if prefilter.may_match(raw):
                return True
            return bool(self._searches) and self._text_search(raw)
        rules = self.rules
        summary = self.config.summary in ("debug", "info")
        if summary and any(k.encode() in raw for k in rules.ignore):
            return True
        for search in self._needle_searches:
            if search in raw if isinstance(search, bytes) else search.search(raw):
                return True
        if self._event_name_re is not None and self._event_name_re.search(raw):
            return True
        absent: set[bytes] = set()
        for lit, r in self._byte_searches:
            if lit:
                if lit in absent:
                    continue
                if lit not in raw:
                    absent.add(lit)
                    continue
            if r.search(raw):
                return True
        return bool(self._searches) and self._text_search(raw)

    def _text_search(self, raw: bytes) -> bool:
        text = raw.decode("utf-8", "replace")
        return any(r.search(text) for r in self._searches)

    def process(self, data: Payload) -> Payload:
        rules = self.rules
        rules.counts = {}
        spliced = self._spliced(data.to_bytes()) if self._by_item else None
        if spliced is not None:
            out = type(data)(spliced, item_count=data.item_count())
        else:
            rules.counts = {}  # the spliced path may have counted some items before it gave up
            out = self._whole(data)
        for rule, n in rules.counts.items():
            child = self._children.get(rule)
            if child is None:
                child = self._children[rule] = self._counter.labels(self.settings.name, rule)
            child.inc(n)
        out.whole_traces = data.whole_traces  # spans are changed, none added or removed
        return out.carry_acks(data.ack_tokens)

    def _whole(self, data: Payload) -> Payload:
        """The whole request decoded, every item's attributes walked, re-encoded."""
        out = type(data)(data.to_bytes())
        msg = out.mutable_message()
        if self.signal is Signal.TRACES:
            for rs in msg.resource_spans:
                self._attrs(rs.resource.attributes)
                for ss in rs.scope_spans:
                    self._attrs(ss.scope.attributes)
                    for span in ss.spans:
                        self._span(span)
        elif self.signal is Signal.LOGS:
            for rl in msg.resource_logs:
                self._attrs(rl.resource.attributes)
                for sl in rl.scope_logs:
                    self._attrs(sl.scope.attributes)
                    for record in sl.log_records:
                        self._record(record)
        else:
            for rm in msg.resource_metrics:
                self._attrs(rm.resource.attributes)
                for sm in rm.scope_metrics:
                    self._attrs(sm.scope.attributes)
                    for m in sm.metrics:
                        kind = m.WhichOneof("data")
                        if kind is not None:
                            for dp in getattr(m, kind).data_points:
                                self._attrs(dp.attributes)
        return out

    def _span(self, span: Any) -> None:
        rules = self.rules
        if rules.sanitizers is not None and rules.sanitizers.span_names:
            self._span_name(span)
        self._attrs(span.attributes)
        for ev in span.events:
            self._attrs(ev.attributes, event=self._is_genai_event(ev.name))

    def _by_item_possible(self) -> bool:
        """Whether a request that may redact can be rewritten item by item (:meth:`_spliced`):
        the fast path is possible (what a span's bytes do not show, no rule changes in it),
        traces or logs, no URL sanitizer on span names (looked at per request), and no
        summary of allowed values (added to any item whose value an allowed pattern matches,
        which the bytes' searches do not look for)."""
        c = self.config
        return (
            self._fast
            and self.signal in (Signal.TRACES, Signal.LOGS)
            and not self._url_names
            and not (c.allowed_values and c.summary in ("debug", "info"))
        )

    def _spliced(self, raw: bytes) -> bytes | None:
        """The request with only the spans (log records) whose bytes may redact decoded,
        redacted and re-encoded, spliced between the others' bytes (the enclosing length
        prefixes written again); ``None`` when the request is to be done whole: it does not
        pass the receivers' check (the whole path then fails or proceeds as it always did), a
        resource's or scope's bytes may redact, or so many items may that decoding the whole
        request costs less."""
        found: list[tuple[int, int, int]] = []
        heads: list[tuple[int, int]] = []
        try:
            self._find(raw, 0, len(raw), 0, found, heads, [0])
            if any(self._bytes_may_redact(raw[s:e]) for s, e in heads):
                return None  # a resource or scope to redact: the whole path does it
            _otlpvalid.check(self.signal.value, raw)  # what is spliced is not decoded
        except (_GiveUp, ValueError):
            return None
        return self._splice(raw, 0, len(raw), 0, found) if found else raw

    def _find(
        self, raw: bytes, start: int, end: int, depth: int,
        found: list[tuple[int, int, int]], heads: list[tuple[int, int]], seen: list[int],
    ) -> None:  # fmt: skip
        """Appends to ``found`` ``(field start, payload start, end)`` of each item of
        ``raw[start:end]`` (a request: depth 0, a resource group: 1, a scope group: 2) whose
        bytes may redact, to ``heads`` where each resource and scope is; ``seen[0]`` counts
        the items. Raises :class:`_GiveUp` for a field of another wire type than expected,
        or when decoding the whole request is likely to cost less: the first three items or
        more than half of those seen past the first eight may redact (a request whose items
        all may redact pays three items' searches more than the whole path)."""
        prev = start
        for number, wire, _, s, e in _fields(raw, start, end):
            if depth == 2 and wire != 2:
                raise _GiveUp  # the item's field start is the end of the field before it
            field, prev = prev, e
            if number > 3 or (depth == 0 and number != 1):
                continue  # unknown field: kept as it is
            if wire != 2:
                raise _GiveUp
            if depth == 0 or (depth == 1 and number == 2):
                self._find(raw, s, e, depth + 1, found, heads, seen)
            elif number == 1:
                heads.append((s, e))
            elif number == 2 and depth == 2:
                seen[0] += 1
                if self._bytes_may_redact(raw[s:e]):
                    found.append((field, s, e))
                    n = len(found)
                    if n == seen[0] == 3 or (n > 8 and 2 * n > seen[0]):
                        raise _GiveUp

    def _splice(
        self, raw: bytes, start: int, end: int, depth: int, found: list[tuple[int, int, int]]
    ) -> bytes:
        """``raw[start:end]`` with the items in ``found`` (those in it) redacted; the groups
        holding them re-encoded with their new lengths."""
        parts: list[bytes] = []
        copied = start
        if depth == 2:
            for field, s, e in found[bisect.bisect_left(found, (start,)) :]:
                if field >= end:
                    break
                new = self._item(raw[s:e])
                parts += [raw[copied:field], b"\x12", encode_varint(len(new)), new]
                copied = e
        else:
            inner = 1 if depth == 0 else 2
            pos = start
            while pos < end:
                field = pos
                number, wire, pos = _read_tag(raw, pos, end)
                _, s, e, pos = _read_value(raw, wire, pos, end)
                if number != inner or wire != 2:
                    continue
                i = bisect.bisect_left(found, (s,))
                if i == len(found) or found[i][0] >= e:
                    continue  # nothing to redact in this group
                new = self._splice(raw, s, e, depth + 1, found)
                parts += [raw[copied:field], _TAGS[inner], encode_varint(len(new)), new]
                copied = e
        parts.append(raw[copied:end])
        return b"".join(parts)

    def _item(self, encoded: bytes) -> bytes:
        """One span or log record, redacted and re-encoded."""
        if self.signal is Signal.TRACES:
            span = Span.FromString(encoded)
            self._span(span)
            return bytes(span.SerializeToString())
        record = LogRecord.FromString(encoded)
        self._record(record)
        return bytes(record.SerializeToString())

    def _span_name(self, span: Any) -> None:
        """``db_sanitizer.sanitize_span_name`` and ``url_sanitizer`` on the span's name (seen
        with the attributes as they came)."""
        assert self.rules.sanitizers is not None
        changed, name = self.rules.sanitizers.span_name(span.name, span.kind, span.attributes)
        if changed:
            span.name = name
            for rule in changed:
                self.rules.count(rule)

    def _is_genai_event(self, name: str) -> bool:
        g = self.rules.genai
        return g is not None and any(name.startswith(p) for p in g.event_prefixes)

    def _attrs(self, attrs: Any, event: bool = False) -> None:
        """The Collector's ``processAttrs``, with the GenAI content rules for content keys."""
        rules = self.rules
        redacted: list[str] = []
        masked: list[str] = []
        allowed: list[str] = []
        ignored: list[str] = []
        remove: list[int] = []
        for i, kv in enumerate(attrs):
            k = kv.key
            if rules.ignored(k):
                ignored.append(k)
                continue
            if rules.not_allowed(k):
                redacted.append(k)
                remove.append(i)
                continue
            if rules.is_content(k, event):
                before = kv.value.SerializeToString()
                if not rules.content_value(kv.value):
                    redacted.append(k)
                    remove.append(i)
                elif kv.value.SerializeToString() != before:
                    masked.append(k)
                continue
            value = kv.value
            is_str = value.WhichOneof("value") == "string_value"
            text = value.string_value if is_str else (
                _as_string(value) if self.config.redact_all_types else ""
            )  # fmt: skip
            if rules.allowed_value(text):
                allowed.append(k)
                continue
            if rules.mask_key(k):
                masked.append(k)
                rules.count("blocked_key_patterns")
                value.string_value = rules.mask_all(text)
                continue
            new = rules.blocked(text)
            if new != text:
                masked.append(k)
                rules.count("blocked_values")
                value.string_value = new
            if rules.sanitizers is not None and is_str:  # url_sanitizer, db_sanitizer
                changed, sanitized = rules.sanitizers.apply(k, new, attrs)
                if changed:
                    if new == text:
                        masked.append(k)
                    for rule in changed:
                        rules.count(rule)
                    value.string_value = sanitized
        for i in reversed(remove):
            del attrs[i]
        if redacted:
            rules.count("allowed_keys", len([k for k in redacted if rules.not_allowed(k)]))
        self._summary(attrs, redacted, "redaction.redacted.keys", "redaction.redacted.count")
        self._summary(attrs, masked, "redaction.masked.keys", "redaction.masked.count")
        self._summary(attrs, allowed, "redaction.allowed.keys", "redaction.allowed.count")
        self._summary(attrs, ignored, "", "redaction.ignored.count")

    def _summary(self, attrs: Any, keys: list[str], keys_attr: str, count_attr: str) -> None:
        if not keys:
            return
        summary = self.config.summary
        if summary == "debug" and keys_attr:
            existing = _get(attrs, keys_attr)
            names = list(keys)
            if existing is not None and existing.string_value:
                names += existing.string_value.split(_SEP)
            _put(attrs, keys_attr).string_value = _SEP.join(sorted(names))
        if summary in ("debug", "info"):
            existing = _get(attrs, count_attr)
            n = len(keys) + (existing.int_value if existing is not None else 0)
            _put(attrs, count_attr).int_value = n

    def _record(self, record: Any) -> None:
        rules = self.rules
        name = record.event_name
        if not name:
            ev = _get(record.attributes, "event.name")
            name = ev.string_value if ev is not None else ""
        genai_event = self._is_genai_event(name)
        self._attrs(record.attributes, event=genai_event)
        body = record.body
        kind = body.WhichOneof("value")
        if kind is None:
            return
        if genai_event:
            # the event's content: the content keys of a map body, or the whole body
            if kind == "kvlist_value":
                self._content_map(body.kvlist_value.values)
            elif not rules.content_value(body):
                body.Clear()
            return
        redacted: list[str] = []
        masked: list[str] = []
        allowed: list[str] = []
        ignored: list[str] = []
        if kind == "kvlist_value":
            self._body_map("", body.kvlist_value.values, redacted, masked, allowed, ignored)
        elif kind == "array_value":
            for i, item in enumerate(body.array_value.values):
                self._body_value(f"[{i}]", item, redacted, masked, allowed, ignored)
        else:
            text = _as_string(body)
            if rules.allowed_value(text):
                return
            new = rules.blocked(text)
            if new != text:
                rules.count("blocked_values")
                masked.append("body")
                body.string_value = new
            if kind == "string_value" and rules.sanitizers is not None:  # db_sanitizer
                changed, sanitized = rules.sanitizers.body(new)
                if changed:
                    if new == text:
                        masked.append("body")
                    for rule in changed:
                        rules.count(rule)
                    body.string_value = sanitized
        attrs = record.attributes
        self._summary(attrs, redacted, "redaction.body.redacted.keys",
                      "redaction.body.redacted.count")  # fmt: skip
        self._summary(attrs, masked, "redaction.body.masked.keys", "redaction.body.masked.count")
        self._summary(attrs, allowed, "redaction.body.allowed.keys",
                      "redaction.body.allowed.count")  # fmt: skip
        self._summary(attrs, ignored, "", "redaction.body.ignored.count")

    def _content_map(self, values: Any) -> None:
        """A GenAI event body: content keys get the content action, at any depth."""
        rules = self.rules
        remove = []
        for i, kv in enumerate(values):
            if kv.key in rules.event_keys or rules.is_content(kv.key, True):
                if not rules.content_value(kv.value):
                    remove.append(i)
            elif kv.value.WhichOneof("value") == "kvlist_value":
                self._content_map(kv.value.kvlist_value.values)
            elif kv.value.WhichOneof("value") == "array_value":
                for item in kv.value.array_value.values:
                    if item.WhichOneof("value") == "kvlist_value":
                        self._content_map(item.kvlist_value.values)
        for i in reversed(remove):
            del values[i]

    def _body_map(self, path: str, values: Any, redacted: list[str], masked: list[str],
                  allowed: list[str], ignored: list[str]) -> None:  # fmt: skip
        """The Collector's map-body rules: ignored keys kept, keys not allowed removed,
        blocked key patterns masked, values recursed into."""
        rules = self.rules
        remove = []
        for i, kv in enumerate(values):
            k = kv.key
            full = f"{path}.{k}" if path else k
            if rules.ignored(k):
                ignored.append(full)
                continue
            if rules.not_allowed(k):
                remove.append(i)
                redacted.append(full)
                continue
            if rules.mask_key(k):
                masked.append(full)
                rules.count("blocked_key_patterns")
                kv.value.string_value = rules.mask_all(_as_string(kv.value))
                continue
            self._body_value(full, kv.value, redacted, masked, allowed, ignored)
        for i in reversed(remove):
            del values[i]
        if remove:
            rules.count("allowed_keys", len(remove))

    def _body_value(self, path: str, value: Any, redacted: list[str], masked: list[str],
                    allowed: list[str], ignored: list[str]) -> None:  # fmt: skip
        kind = value.WhichOneof("value")
        if kind == "kvlist_value":
            self._body_map(path, value.kvlist_value.values, redacted, masked, allowed, ignored)
        elif kind == "array_value":
            for i, item in enumerate(value.array_value.values):
                self._body_value(f"{path}.[{i}]", item, redacted, masked, allowed, ignored)
        elif kind is not None:
            text = _as_string(value)
            if self.rules.allowed_value(text):
                allowed.append(path)
                return
            new = self.rules.blocked(text)
            if new != text:
                self.rules.count("blocked_values")
                masked.append(path)
                value.string_value = new
            sanitizers = self.rules.sanitizers
            if kind == "string_value" and sanitizers is not None:  # db_sanitizer
                changed, sanitized = sanitizers.body(new)
                if changed:
                    if new == text:
                        masked.append(path)
                    for rule in changed:
                        self.rules.count(rule)
                    value.string_value = sanitized


class _GiveUp(Exception):
    """The spliced path leaves the request to the whole path."""


_read_tag, _read_value = field_readers(lambda reason: _GiveUp(reason))
_fields = fields_reader(lambda reason: _GiveUp(reason))
_TAGS = {1: b"\x0a", 2: b"\x12"}  # field 1 / field 2, length-delimited


_BYTES_UNSAFE = re.compile(r"\\\\|\\[wWdDsSbBAZ]|(?<!\\)\.|\[\^|\(\?[aiLmsux]|\(\?<|[^\x00-\x7f]")


def _bytes_safe(pattern: str) -> bool:
    """Whether ``pattern`` finds the same matches in UTF-8 bytes as in text: ASCII only, no
    class or ``.`` that would see one byte of a multi-byte character as a character, no
    flags, boundaries or lookbehinds."""
    return _BYTES_UNSAFE.search(pattern) is None


def _minimal_needles(needles: list[bytes]) -> list[bytes]:
    """``needles`` without those that contain another (the shorter one is found wherever
    the longer one is), in their order."""
    unique = list(dict.fromkeys(needles))
    return [n for n in unique if n and not any(m != n and m and m in n for m in unique)] + (
        [b""] if b"" in unique else []
    )


def _needle_searches(needles: list[bytes]) -> list[bytes | re.Pattern[bytes]]:
    """What finds whether any of ``needles`` is in a request: needles that share a leading
    part (up to their first ``.`` or ``_``) are found by one pattern starting with it (the
    ``re`` module searches a pattern's literal start as fast as ``in`` searches a needle, so
    a group costs one pass instead of one per needle); the others by ``in``."""
    groups: dict[bytes, list[bytes]] = {}
    for n in needles:
        cut = min((i for i in (n.find(b"."), n.find(b"_")) if i >= 2), default=-1)
        groups.setdefault(n[: cut + 1] if cut >= 0 else n[:4], []).append(n)
    out: list[bytes | re.Pattern[bytes]] = []
    for group in groups.values():
        if len(group) == 1:
            out.append(group[0])
            continue
        common = _common_start(group)
        if common in group:  # one needle is found wherever the others are
            out.append(common)
            continue
        tails = b"|".join(re.escape(n[len(common) :]) for n in group)
        out.append(re.compile(re.escape(common) + b"(?:" + tails + b")"))
    return out


_GROUP_UNSAFE = re.compile(rb"\\[1-9]|\(\?P=|\(\?\(")


def _common_start(items: list[bytes]) -> bytes:
    """The longest start every one of ``items`` has."""
    first, last = min(items), max(items)
    n = 0
    while n < len(first) and first[n] == last[n]:
        n += 1
    return first[:n]


def _group_patterns(
    gated: list[tuple[bytes, re.Pattern[bytes]]],
) -> list[tuple[bytes, re.Pattern[bytes]]]:
    """Byte patterns with the literal they start with; those whose literals share a leading
    part (up to the first ``.`` or ``_``) joined into one alternation, searched once when
    that part is in the request (the branches' common literal start is searched fast).
    Patterns with an alternation of their own or a back reference stay alone."""
    groups: dict[bytes, list[tuple[bytes, re.Pattern[bytes]]]] = {}
    alone: list[tuple[bytes, re.Pattern[bytes]]] = []
    for lit, r in gated:
        cut = min((i for i in (lit.find(b"."), lit.find(b"_")) if i >= 2), default=-1)
        if cut < 0 or _GROUP_UNSAFE.search(r.pattern) or _has_branch(r.pattern):
            alone.append((lit, r))
        else:
            groups.setdefault(lit[: cut + 1], []).append((lit, r))
    out: list[tuple[bytes, re.Pattern[bytes]]] = []
    for members in groups.values():
        if len(members) == 1:
            out.append(members[0])
        else:
            joined = re.compile(b"|".join(r.pattern for _, r in members))
            out.append((_common_start([lit for lit, _ in members]), joined))
    return out + alone


def _has_branch(pattern: bytes) -> bool:
    try:
        parsed = _sre_parse.parse(pattern.decode("latin-1"))
    except Exception:
        return True
    return bool(parsed.state.flags & ~re.UNICODE) or any(
        op is _sre_constants.BRANCH for op, _ in parsed
    )


def _event_name_pattern(prefixes: list[bytes]) -> re.Pattern[bytes]:
    """A span event whose name starts with one of ``prefixes``: its name field (field 2 of
    ``Event``, tag 0x12, a one- or two-byte length) followed by the prefix. Written with the
    prefix first and the field's start looked behind, so the search runs over the prefix's
    occurrences (a literal start is searched fast), not over every 0x12 byte."""
    branches = []
    for p in prefixes:
        e = re.escape(p)
        branches.append(e + rb"(?<=\x12[\x01-\x7f]" + e + rb")")
        branches.append(e + rb"(?<=\x12[\x80-\xff][\x01-\x7f]" + e + rb")")
    return re.compile(b"|".join(branches))


def _leading_literal(pattern: bytes) -> bytes:
    """The literal every match of ``pattern`` starts with (``b""`` when there is none): its
    leading literal characters, up to the first that is optional, repeated, in a class, an
    alternation or anything else."""
    try:
        parsed = _sre_parse.parse(pattern.decode("latin-1"))
    except Exception:
        return b""
    if parsed.state.flags & re.IGNORECASE:
        return b""
    out = bytearray()
    for op, av in parsed:
        if op is not _sre_constants.LITERAL or not 0 <= av < 256:
            break
        out.append(av)
    return bytes(out)


def _get(attrs: Any, key: str) -> Any:
    for kv in attrs:
        if kv.key == key:
            return kv.value
    return None


def _put(attrs: Any, key: str) -> Any:
    for kv in attrs:
        if kv.key == key:
            kv.value.Clear()
            return kv.value
    return attrs.add(key=key).value
