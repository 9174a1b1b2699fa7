"""One pass over a request's bytes for the redaction processor's "anything to do?" check: the
content keys, the ignored keys counted by the summary, the GenAI event names and the leading
bytes of the byte-searchable patterns, found together by the C scan
(``_tailscan.find_patterns``, ``plugins/_native/_tailscan.c``) or by its twin
:func:`find_patterns_python`.

A pattern of the scan is a sequence of byte classes. A literal (a key) is its bytes, exact: when
found, the request holds it. A regular expression gives the classes every match starts with
(:func:`leading_classes`): when they are not found, it cannot match; when they are, the
expression itself is searched. An expression without such a start is always searched.
"""

from __future__ import annotations

import functools
import re
from re import _constants as _sre_constants
from re import _parser as _sre_parse
from typing import Any

from plugins._native import load

_tailscan: Any = load("_tailscan")

PAIR_BYTES = 8192
MAX_PATTERNS = 64
MAX_LITERAL = 255  # bytes of a literal the scan compares exactly (a pattern's length is a byte)
MAX_CLASSES = 32  # leading classes taken from an expression
EVENT_NAME = 1  # flag: the match follows a span event's name field start (0x12, its length)
_ALL = (1 << 256) - 1

Classes = list[int]  # one 256-bit set per byte


def leading_classes(pattern: bytes) -> Classes:
    """The byte classes every match of ``pattern`` (a bytes expression without flags) starts
    with, up to the first element that is optional, repeated a variable number of times, an
    alternation, a group or anything else; ``[]`` when there is none."""
    try:
        parsed = _sre_parse.parse(pattern.decode("latin-1"))
    except Exception:
        return []
    if parsed.state.flags & (re.IGNORECASE | re.LOCALE):  # (a text parse: UNICODE is set)
        return []
    out: Classes = []
    for op, av in parsed:
        if op in (_sre_constants.MAX_REPEAT, _sre_constants.MIN_REPEAT):
            lo, hi, sub = av
            items = list(sub)
            cls = _item_class(*items[0]) if len(items) == 1 else None
            if cls is None:
                break
            out.extend([cls] * min(lo, MAX_CLASSES))
            if hi != lo:
                break
        else:
            cls = _item_class(op, av)
            if cls is None:
                break
            out.append(cls)
        if len(out) >= MAX_CLASSES:
            break
    return out[:MAX_CLASSES]


def _item_class(op: Any, av: Any) -> int | None:
    """The set of bytes one element matches (LITERAL or IN of literals and ranges), or None."""
    if op is _sre_constants.LITERAL:
        return 1 << av if 0 <= av < 256 else None
    if op is not _sre_constants.IN:
        return None
    bits, negate = 0, False
    for kind, value in av:
        if kind is _sre_constants.NEGATE:
            negate = True
        elif kind is _sre_constants.LITERAL and 0 <= value < 256:
            bits |= 1 << value
        elif kind is _sre_constants.RANGE and 0 <= value[0] <= value[1] < 256:
            for b in range(value[0], value[1] + 1):
                bits |= 1 << b
        else:
            return None
    return _ALL & ~bits if negate else bits


def compile_table(patterns: list[tuple[Classes, int]]) -> bytes:
    """The scan's table of ``(classes, flags)`` patterns (see ``_tailscan.c``)."""
    if len(patterns) > MAX_PATTERNS:
        raise ValueError(f"at most {MAX_PATTERNS} patterns")
    pair = bytearray(PAIR_BYTES)
    body = bytearray()
    for classes, flags in patterns:
        if not 1 <= len(classes) <= MAX_LITERAL:
            raise ValueError("a pattern has 1 to 255 classes")
        firsts = [b for b in range(256) if classes[0] >> b & 1]
        seconds = [b for b in range(256) if len(classes) < 2 or classes[1] >> b & 1]
        for a in firsts:
            for b in seconds:
                i = a << 8 | b
                pair[i >> 3] |= 1 << (i & 7)
        body += bytes((len(classes), flags))
        for cls in classes:
            body += cls.to_bytes(32, "little")
    return bytes(pair) + bytes(body)


def _parse_table(table: bytes) -> list[tuple[list[int], int]]:
    if len(table) < PAIR_BYTES:
        raise ValueError("find_patterns: malformed table")
    out: list[tuple[list[int], int]] = []
    off = PAIR_BYTES
    while off < len(table):
        if len(out) == MAX_PATTERNS or len(table) - off < 2:
            raise ValueError("find_patterns: malformed table")
        n, flags = table[off], table[off + 1]
        if n < 1 or n * 32 > len(table) - off - 2:
            raise ValueError("find_patterns: malformed table")
        start = off + 2
        classes = [
            int.from_bytes(table[start + 32 * c : start + 32 * c + 32], "little") for c in range(n)
        ]
        out.append((classes, flags))
        off = start + 32 * n
    return out


# a match that follows a span event's name field start: 0x12 and a one-byte length, or 0x12, a
# byte with the high bit and a length byte
_AFTER_EVENT_NAME = rb"(?:(?<=\x12[\x01-\x7f])|(?<=\x12[\x80-\xff][\x01-\x7f]))"


def _class_regex(cls: int) -> bytes:
    members = [b for b in range(256) if cls >> b & 1]
    return b"[" + b"".join(re.escape(bytes([b])) for b in members) + b"]"


def pattern_regex(classes: Classes, flags: int) -> re.Pattern[bytes]:
    """A table pattern as a regular expression (the twin's way of finding it)."""
    body = b"".join(_class_regex(c) for c in classes)
    return re.compile((_AFTER_EVENT_NAME if flags & EVENT_NAME else b"") + body)


def find_patterns_python(data: bytes, table: bytes) -> int:
    """The twin of ``_tailscan.find_patterns``: the bit mask of the table's patterns found in
    ``data``, each pattern searched as a regular expression (:func:`pattern_regex`)."""
    mask = 0
    for j, regex in enumerate(_table_regexes(bytes(table))):
        if regex.search(data):
            mask |= 1 << j
    return mask


@functools.lru_cache(maxsize=16)
def _table_regexes(table: bytes) -> list[re.Pattern[bytes]]:
    return [pattern_regex(classes, flags) for classes, flags in _parse_table(table)]


class Prefilter:
    """Whether a request's bytes hold any of ``literals`` (exact), a GenAI event name starting
    with one of ``event_prefixes``, or a match of one of ``patterns`` (bytes expressions that
    match the same on bytes as on text): one scan, then only the expressions whose start was
    found are searched. :meth:`build` gives None when the scan is not built or the patterns do
    not fit in one table (the processor's searches are used)."""

    def __init__(self, table: bytes, exact: int, checks: list[tuple[int, re.Pattern[bytes]]],
                 always: list[re.Pattern[bytes]]) -> None:  # fmt: skip
        self.table = table
        self._exact = exact  # the bits of the literals and event names: found means found
        self._checks = checks  # (bit, expression): searched when its start was found
        self._always = always  # expressions without a leading class: always searched
        self._find = _tailscan.find_patterns if _tailscan is not None else find_patterns_python

    @classmethod
    def build(
        cls,
        literals: list[bytes],
        event_prefixes: list[bytes],
        patterns: list[re.Pattern[bytes]],
        native_only: bool = True,
    ) -> Prefilter | None:
        if native_only and _tailscan is None:
            return None
        entries: list[tuple[Classes, int]] = []
        exact = 0
        for lit in dict.fromkeys(literals):
            if not lit or len(lit) > MAX_LITERAL:
                return None  # the empty key is in every request; a huge one: the searches
            exact |= 1 << len(entries)
            entries.append(([1 << b for b in lit], 0))
        for prefix in dict.fromkeys(event_prefixes):
            if not prefix or len(prefix) > MAX_LITERAL:
                return None
            exact |= 1 << len(entries)
            entries.append(([1 << b for b in prefix], EVENT_NAME))
        checks: list[tuple[int, re.Pattern[bytes]]] = []
        always: list[re.Pattern[bytes]] = []
        for r in patterns:
            classes = leading_classes(r.pattern)
            if not classes:
                always.append(r)
                continue
            checks.append((len(entries), r))
            entries.append((classes, 0))
        if len(entries) > MAX_PATTERNS:
            return None
        return cls(compile_table(entries), exact, checks, always)

    def may_match(self, raw: bytes) -> bool:
        found = self._find(raw, self.table) if len(self.table) > PAIR_BYTES else 0
        if found & self._exact:
            return True
        for bit, r in self._checks:
            if found >> bit & 1 and r.search(raw):
                return True
        return any(r.search(raw) for r in self._always)
