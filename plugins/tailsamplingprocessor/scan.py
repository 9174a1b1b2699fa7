"""The facts of one trace that the policies read, in one pass over its encoded spans.

:func:`trace_facts` is the C scan (``plugins/_native/_tailscan.c``) when it is built, else
:func:`trace_facts_python`, its twin (the same facts for every input, ``None`` included): the
status codes seen, the least start and greatest end time, the root spans with their times,
the first value of each attribute key the configured policies name, and the spans that failed
(an ERROR status or an ``error.type`` attribute). ``None`` when a span is malformed or
irregular (a field with another wire type than its own, a key or value written twice in an
attribute, a status written twice): the policies then read the spans as before.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from pipeline._pbwire import fields_reader
from plugins._native import load

_tailscan: Any = load("_tailscan")

MAX_KEYS = 32


class Facts(NamedTuple):
    status_mask: int  # bit c: a span with Status.code c (0..2); bit 3: any other code
    start_min: int
    end_max: int
    roots: list[tuple[int, int, int]]  # (index, start, end) of the spans without a parent
    values: tuple[bytes | None, ...]  # per key: the encoded AnyValue of its first attribute
    failed: list[int]  # the spans with an ERROR status or the error key


class Malformed(Exception):
    pass


# pbwire.h's readers (pipeline/_pbwire.py), raising Malformed
_fields = fields_reader(Malformed)


class _Irregular(Exception):
    pass


def trace_facts_python(
    spans: list[bytes], keys: tuple[bytes, ...], error_key: bytes
) -> Facts | None:
    """The twin of ``_tailscan.trace_facts`` (see the module docstring)."""
    if len(keys) > MAX_KEYS:
        raise ValueError("trace_facts: at most 32 keys")
    found: dict[int, bytes] = {}
    roots: list[tuple[int, int, int]] = []
    failed: list[int] = []
    status_mask = 0
    start_min = end_max = 0
    try:
        for i, raw in enumerate(spans):
            is_root, has_error_key, statuses = True, False, 0
            start = end = code = 0
            for number, wire, value, a, b in _fields(raw, 0, len(raw)):
                if number == 4:
                    if wire != 2:
                        raise _Irregular
                    is_root = a == b
                elif number in (7, 8):
                    if wire != 1:
                        raise _Irregular
                    if number == 7:
                        start = value
                    else:
                        end = value
                elif number == 15:
                    if wire != 2 or statuses:
                        raise _Irregular
                    statuses += 1
                    for n2, w2, v2, _, _ in _fields(raw, a, b):
                        if n2 == 3:
                            if w2 != 0:
                                raise _Irregular
                            code = v2
                elif number == 9:
                    if wire != 2:
                        raise _Irregular
                    key = b""
                    val: bytes | None = None
                    nkey = nval = 0
                    for n2, w2, _, a2, b2 in _fields(raw, a, b):
                        if n2 == 1:
                            if w2 != 2 or nkey:
                                raise _Irregular
                            nkey += 1
                            key = raw[a2:b2]
                        elif n2 == 2:
                            if w2 != 2 or nval:
                                raise _Irregular
                            nval += 1
                            val = raw[a2:b2]
                    if key == error_key:
                        has_error_key = True
                    for k, want in enumerate(keys):
                        if k not in found and want == key:
                            found[k] = b"" if val is None else val
            if i == 0 or start < start_min:
                start_min = start
            if i == 0 or end > end_max:
                end_max = end
            c = code & 0xFFFFFFFF
            bit = c if c <= 2 else 3
            status_mask |= 1 << bit
            if bit == 2 or has_error_key:
                failed.append(i)
            if is_root:
                roots.append((i, start, end))
    except (Malformed, _Irregular):
        return None
    values = tuple(found.get(k) for k in range(len(keys)))
    return Facts(status_mask, start_min, end_max, roots, values, failed)


def trace_facts(spans: list[bytes], keys: tuple[bytes, ...], error_key: bytes) -> Facts | None:
    """The facts of one trace: by the C scan when built, else by its twin."""
    if _tailscan is not None:
        facts = _tailscan.trace_facts(spans, keys, error_key)
        return None if facts is None else Facts._make(facts)
    return trace_facts_python(spans, keys, error_key)
