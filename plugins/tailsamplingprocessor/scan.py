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

import math
import struct
from typing import Any, NamedTuple

from pipeline._pbwire import encode_varint, fields_reader
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


# -- one release decided at once -----------------------------------------------------------------
#
# decide_request(data, keys, error_key, markers, program, first_match): the policies of a
# ``program`` (compiled by policies.compile_program: one op per policy, each answering from the
# facts of a trace as its ``Policy.fast`` does) evaluated on every trace of an encoded request of
# whole traces, in one C call (``_tailscan.decide_request``) or by its twin below.
#
# Returns ``(entries, deferred)``: per trace, in order of first appearance, ``(trace id, span
# count, codes)`` with ``codes`` the bytes of the policies' decisions (CODES' indices; fewer with
# ``first_match``, as ``_evaluate``), or ``None`` when a policy's answer needs the spans (its
# fast answer would be ``None``) or the trace has no facts; ``deferred``: ``(index, spans,
# groups)`` of those traces, as the request walk gives them. ``None`` for a request the call does
# not take (malformed framing, a wire type other than its field's, a span not starting with its
# 16-byte trace id): the processor then reads it as before.

# the ops of a program (policies.compile_program), as _tailscan.c numbers them
OP_CONST, OP_LATENCY, OP_PROB, OP_STATUS, OP_COUNT, OP_OUTCOME = 0, 1, 2, 3, 4, 5
OP_SLA, OP_USAGE, OP_TOOLFAIL, OP_ALL = 6, 7, 8, 9
DEFER = -1

Entries = list[tuple[bytes, int, bytes | None]]
Deferred = list[tuple[int, list[bytes], list[tuple[bytes, bytes, bytes, bytes]]]]


class _NotTaken(Exception):
    pass


def _group_part(data: bytes, a: int, b: int) -> tuple[bytes, bytes]:
    """A ResourceSpans' or ScopeSpans' group bytes (field 1: the resource or scope) and schema
    URL (field 3) in ``data[a:b]``; the spans (field 2) must be length-delimited too."""
    part, url = b"", b""
    for n, w, _, start, end in _fields(data, a, b):
        if n in (1, 3):
            if w != 2:
                raise _NotTaken
            if n == 1:
                part = data[start:end]
            else:
                url = data[start:end]
        elif n == 2 and w != 2:
            raise _NotTaken
    return part, url


def _walk_request(data: bytes) -> list[tuple[bytes, tuple[bytes, bytes, bytes, bytes]]]:
    """``(span, group)`` of every span of a request, as the C walk reads it (``_NotTaken``
    where it returns None)."""
    out: list[tuple[bytes, tuple[bytes, bytes, bytes, bytes]]] = []
    try:
        for number, wire, _, a, b in _fields(data, 0, len(data)):
            if number != 1:
                continue
            if wire != 2:
                raise _NotTaken
            res, res_url = _group_part(data, a, b)
            for n2, _, _, a2, b2 in _fields(data, a, b):
                if n2 != 2:
                    continue
                scope, scope_url = _group_part(data, a2, b2)
                group = (res, res_url, scope, scope_url)
                for n3, _, _, a3, b3 in _fields(data, a2, b2):
                    if n3 != 2:
                        continue
                    span = data[a3:b3]
                    if len(span) < 18 or span[:2] != b"\x0a\x10":
                        raise _NotTaken
                    out.append((span, group))
    except Malformed:
        raise _NotTaken from None
    return out


def _simple_str(encoded: bytes | None) -> str | None:
    """``value_str`` of an encoded AnyValue when exact without decoding: the string (one string
    field of ASCII bytes, its length one byte; ``""`` when absent or empty), else None."""
    if not encoded:
        return ""
    n = len(encoded)
    if not (encoded[0] == 0x0A and n >= 2 and encoded[1] == n - 2 and encoded[1] < 0x80):
        return None
    if not encoded[2:].isascii():
        return None
    return encoded[2:].decode()


def _duration_seconds(encoded: bytes) -> float | bool | None:
    """``duration_of`` of a double or integer AnyValue alone (False: anything else)."""
    if encoded[0] == 0x21 and len(encoded) == 9:
        seconds = struct.unpack("<d", encoded[1:])[0]
    elif encoded[0] == 0x18:
        try:
            fields = list(_fields(b"\x18" + encoded[1:], 0, len(encoded)))
        except Malformed:
            return False
        if len(fields) != 1:
            return False
        v = fields[0][2]
        seconds = float(v - (1 << 64) if v >= 1 << 63 else v)
    else:
        return False
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


_WIRES = (-1, 2, 0, 0, 1, 2, 2, 2)  # AnyValue's oneof members 1..7


def _anyvalue_string(value: bytes | None) -> bytes | None:
    """``AnyValue.string_value`` of an encoded AnyValue (None: a KeyValue without a value), or
    None when a member of the oneof has another wire type than its own."""
    if value is None:
        return b""
    last, text = 0, b""
    try:
        for number, wire, _, a, b in _fields(value, 0, len(value)):
            if 1 <= number <= 7:
                if wire != _WIRES[number]:
                    return None
                last = number
                if number == 1:
                    text = value[a:b]
    except Malformed:
        return None
    return text if last == 1 else b""


def _wrap(span: bytes) -> bytes:
    """An ExportTraceServiceRequest holding ``span`` alone."""
    inner = b"\x12" + encode_varint(len(span)) + span
    middle = b"\x12" + encode_varint(len(inner)) + inner
    return b"\x0a" + encode_varint(len(middle)) + middle


def span_is_tool_call(span: bytes, tool: tuple[Any, ...]) -> int:
    """``is_tool_call`` of a span (1 or 0), or -1 when it does not decode (``check`` of it
    wrapped in a request raises ValueError) or an attribute is irregular (the twin of
    span_is_tool_call in C)."""
    op_key, op_value, mcp_key, mcp_value, check = tool
    try:
        check(_wrap(span))
    except ValueError:
        return -1
    op = mcp = None
    has_op = has_mcp = False
    try:
        for number, wire, _, a, b in _fields(span, 0, len(span)):
            if number != 9 or wire != 2:
                continue
            key, value = b"", None
            nkey = nval = 0
            for n2, w2, _, a2, b2 in _fields(span, a, b):
                if n2 == 1:
                    if w2 != 2 or nkey:
                        return -1
                    nkey += 1
                    key = span[a2:b2]
                elif n2 == 2:
                    if w2 != 2 or nval:
                        return -1
                    nval += 1
                    value = span[a2:b2]
            if key == op_key:
                op, has_op = value, True
            if key == mcp_key:
                mcp, has_mcp = value, True
    except Malformed:
        return -1
    for has, value, want in ((has_op, op, op_value), (has_mcp, mcp, mcp_value)):
        if has:
            text = _anyvalue_string(value)
            if text is None:
                return -1
            if text == want:
                return 1
    return 0


def eval_op(op: tuple[Any, ...], f: Facts, tid: bytes, n: int, tool_state: int) -> int:
    """One op's decision code from a trace's facts, or DEFER (the twin of eval_op in C)."""
    kind = op[0]
    if kind == OP_CONST:
        if not 0 <= op[1] <= 5:
            raise ValueError("decide_request: malformed program")
        return int(op[1])
    if kind == OP_LATENCY:
        lo, hi = op[1], op[2]
        d = max(0, f.end_max - f.start_min)
        return 0 if (d >= lo if not hi else lo <= d <= hi) else 1
    if kind == OP_PROB:
        h = op[1]
        for byte in tid:
            h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
        return 0 if h <= op[2] and op[2] > 0 else 1
    if kind == OP_STATUS:
        return 0 if f.status_mask & op[1] else 1
    if kind == OP_COUNT:
        return 0 if n >= op[1] and (not op[2] or n <= op[2]) else 1
    if kind == OP_OUTCOME:
        value = _simple_str(f.values[op[1]])
        if not value:
            return DEFER
        return 0 if value.encode() in op[2] else 1
    if kind == OP_SLA:
        _, k_id, k_type, k_dur, objectives, default = op
        if len(f.roots) > 1 or not _simple_str(f.values[k_id]):
            return DEFER
        if not f.roots:
            return 1
        wf_type = _simple_str(f.values[k_type])
        if not wf_type:
            return DEFER
        objective = dict(objectives).get(wf_type.encode(), default)
        if objective is None:
            return 1
        given = f.values[k_dur]
        seconds: float | None = None
        if given:
            got = _duration_seconds(given)
            if got is False:
                return DEFER
            seconds = got
        _, start, end = f.roots[0]
        duration = (end - start) / 1e9 if seconds is None else seconds
        return 0 if duration > objective else 1
    if kind == OP_USAGE:
        return DEFER if any(f.values[k] is not None for k in op[1]) else 1
    if kind == OP_TOOLFAIL:
        return DEFER if tool_state < 0 else 0 if tool_state else 1
    if kind == OP_ALL:
        for sub in op[1]:
            d = eval_op(sub, f, tid, n, tool_state)
            if d == DEFER:
                return DEFER
            if d not in (0, 2):
                return 1
        if not 0 <= op[2] <= 5:
            raise ValueError("decide_request: malformed program")
        return int(op[2])
    raise ValueError("decide_request: malformed program")


_ARITY = (2, 3, 3, 2, 3, 3, 6, 2, 1, 3)


def check_op(op: Any, nkeys: int, depth: int = 0) -> None:
    """ValueError unless ``op`` is an op as compile_program makes them (the twin of check_op
    in C: kinds, arity, types, key indices)."""
    bad = ValueError("decide_request: malformed program")
    if depth > 16 or not isinstance(op, tuple) or not op or type(op[0]) is not int:
        raise bad
    kind = op[0]
    if not OP_CONST <= kind <= OP_ALL or len(op) != _ARITY[kind]:
        raise bad
    for i, o in enumerate(op[1:], 1):
        want_int = not (
            (kind == OP_OUTCOME and i == 2) or (kind == OP_SLA and i >= 4) or kind == OP_USAGE
            or (kind == OP_ALL and i == 1)
        )  # fmt: skip
        if want_int:
            limit = 2**64 if kind in (OP_LATENCY, OP_PROB) else 2**63
            if type(o) is not int or not 0 <= o < limit:
                raise bad
            if (kind == OP_CONST or (kind == OP_ALL and i == 2)) and o > 5:
                raise bad
            if ((kind == OP_OUTCOME and i == 1) or kind == OP_SLA) and o >= nkeys:
                raise bad
        elif kind in (OP_OUTCOME, OP_USAGE):
            if not isinstance(o, tuple):
                raise bad
            for x in o:
                if kind == OP_OUTCOME and not isinstance(x, bytes):
                    raise bad
                if kind == OP_USAGE and (type(x) is not int or not 0 <= x < nkeys):
                    raise bad
        elif kind == OP_SLA and i == 4:
            if not isinstance(o, tuple) or not all(
                isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], bytes)
                and type(p[1]) is float for p in o
            ):  # fmt: skip
                raise bad
        elif kind == OP_SLA and i == 5:
            if o is not None and type(o) is not float:
                raise bad
        elif kind == OP_ALL:
            if not isinstance(o, tuple):
                raise bad
            for sub in o:
                check_op(sub, nkeys, depth + 1)


def decide_request_python(
    data: bytes, keys: tuple[bytes, ...], error_key: bytes, markers: tuple[bytes, ...],
    program: tuple[tuple[Any, ...], ...], first_match: bool, tool: tuple[Any, ...] | None,
) -> tuple[Entries, Deferred] | None:  # fmt: skip
    """The twin of ``_tailscan.decide_request`` (see above)."""
    if len(keys) > MAX_KEYS:
        raise ValueError("decide_request: at most 32 keys")
    for op in program:
        check_op(op, len(keys))
    try:
        walked = _walk_request(data)
    except _NotTaken:
        return None
    by_trace: dict[bytes, tuple[list[bytes], list[tuple[bytes, bytes, bytes, bytes]]]] = {}
    for span, group in walked:
        entry = by_trace.setdefault(span[2:18], ([], []))
        entry[0].append(span)
        entry[1].append(group)
    entries: Entries = []
    deferred: Deferred = []
    for i, (tid, (spans, groups)) in enumerate(by_trace.items()):
        facts = trace_facts_python(spans, keys, error_key)
        codes: bytes | None = None
        if facts is not None:
            state = 0  # tool_call_failed from the failed spans holding a marker, in order
            for j in facts.failed:
                if any(m in spans[j] for m in markers):
                    state = -1 if tool is None else span_is_tool_call(spans[j], tool)
                    if state:
                        break
            out = bytearray()
            for op in program:
                d = eval_op(op, facts, tid, len(spans), state)
                if d == DEFER:
                    out = None  # type: ignore[assignment]
                    break
                out.append(d)
                if first_match and d in (0, 2):
                    break
            codes = None if out is None else bytes(out)
        entries.append((tid, len(spans), codes))
        if codes is None:
            deferred.append((i, spans, groups))
    return entries, deferred


def decide_request(
    data: bytes, keys: tuple[bytes, ...], error_key: bytes, markers: tuple[bytes, ...],
    program: tuple[tuple[Any, ...], ...], first_match: bool, tool: tuple[Any, ...] | None,
) -> tuple[Entries, Deferred] | None:  # fmt: skip
    """One release decided: by the C call when built, else by its twin."""
    if _tailscan is not None:
        return _tailscan.decide_request(data, keys, error_key, markers, program, first_match, tool)
    return decide_request_python(data, keys, error_key, markers, program, first_match, tool)
