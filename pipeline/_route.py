"""Which worker owns which part of an encoded OTLP request (``service.workers``).

A request is split by owner without decoding more than the routing key:

* traces: each span's ``trace_id`` (the last length-delimited field 1 of the span, as a
  decoder keeps it), so that every span of a trace is processed by one worker;
* metrics: each ``ResourceMetrics``' ``resource`` bytes, so that every series of a resource
  lives in one worker (a cumulative series is never held, and summed, twice);
* logs: each log record's ``trace_id`` (field 9 of the record), so that the records of a trace
  are processed by the worker that owns its spans (the ``workflow`` processor stamps them from
  its trace hold; ``agentmetrics`` joins GenAI events to their spans); a record without a
  trace id stays with the worker that received it. Split in Python (:func:`split_logs`).

The owner of a key is a pure function of its bytes and the worker count (the last 8 bytes of a
trace id, which W3C trace context keeps random, big-endian, modulo the count; a CRC-32 of the
resource), the same in every process. Routing by first arrival (``service.worker_routing``) replaces
the trace id's hash by an ownership table the workers share (:class:`OwnerTable`): a trace
belongs to the worker that claimed it first. A request whose items all belong to one worker is
returned as it came; otherwise each owner's part is written from the request's bytes (spans,
resources and scopes copied verbatim, only the enclosing lengths written anew). Traces are split
by the C module ``plugins/_native/_route.c`` when it was built, else by its twin
:func:`split_traces_python` (the same bytes, checked by the fuzz target ``route``). Malformed
framing raises ``ValueError``; the receivers check every request before it gets here.
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass
from typing import Any

from pipeline._pbwire import encode_varint, field_readers, varint_reader

# pbwire.h's readers (pipeline/_pbwire.py): ValueError("malformed OTLP request: ...")
_varint = varint_reader()
_read_tag, _read_value = field_readers(read_varint=_varint)


_MAX_GROUP_DEPTH = 100


def _fields(data: bytes) -> list[tuple[int, int, int, int, int]]:
    """``(number, wire, start, payload_start, end)`` of every field of the message ``data``
    (a group, wire type 3, spans to its end), refusing what ``_route.c``'s ``next_any``
    refuses."""
    out = []
    pos = 0
    end = len(data)
    while pos < end:
        start = pos
        number, wire, payload, pos = _field(data, pos, 0)
        out.append((number, wire, start, payload, pos))
    return out


def _field(data: bytes, pos: int, depth: int) -> tuple[int, int, int, int]:
    """One field at ``pos``: ``(number, wire, payload_start, end)``."""
    end = len(data)
    number, wire, pos = _read_tag(data, pos, end)
    if wire == 3:
        payload = pos
        if depth >= _MAX_GROUP_DEPTH:
            raise ValueError("malformed OTLP request: groups nested too deeply")
        while True:
            if pos >= end:
                raise ValueError("malformed OTLP request: unterminated group")
            inner, pos_after = _varint(data, pos, end)
            if inner > 0xFFFFFFFF or inner >> 3 == 0:
                raise ValueError("malformed OTLP request: field number")
            if inner & 7 == 4:
                if inner >> 3 != number:
                    raise ValueError("malformed OTLP request: mismatched end of group")
                return number, 3, payload, pos_after
            _, _, _, pos = _field(data, pos, depth + 1)
    if wire == 4:
        raise ValueError("malformed OTLP request: unexpected end of group")
    _, start, _, after = _read_value(data, wire, pos, end)
    # the payload: a length-delimited field's, else where the value starts
    return number, wire, start if wire == 2 else pos, after


def field_bytes(data: bytes, number: int) -> bytes:
    """The last length-delimited field ``number`` of the message ``data`` (as a decoder keeps
    it), ``b""`` when absent."""
    found = b""
    for n, wire, _, payload, stop in _fields(data):
        if n == number and wire == 2:
            found = data[payload:stop]
    return found


def span_trace_id(span: bytes) -> bytes:
    """A span's trace id, reading no other field."""
    return field_bytes(span, 1)


def trace_owner(trace_id: bytes, workers: int) -> int:
    """The worker (0-based) that processes every span of ``trace_id``."""
    return int.from_bytes(trace_id[-8:], "big") % workers


def resource_owner(resource: bytes, workers: int) -> int:
    """The worker that holds every series of the resource encoded as ``resource``."""
    return zlib.crc32(resource) % workers


# -- routing by first arrival (service.worker_routing: first_arrival) ----------------------------
TABLE_WAYS = 8
TABLE_BUCKET_BYTES = TABLE_WAYS * 16 + 8  # 8 slots (key, seen), an overflow stamp, a lock
_MASK64 = (1 << 64) - 1


@dataclass
class OwnerTable:
    """The ownership table of routing by first arrival, shared by the workers (``buf``: a
    writable buffer, an mmap of one file): a trace is owned by the worker that claimed it, the
    first to receive one of its spans (``index``: this worker), for as long as spans come at
    most ``ttl`` seconds apart. Layout and rules: ``_route.c`` (``table_owner``); the twin
    :func:`table_owner_python` gives the same owners and leaves the same bytes."""

    buf: Any
    index: int
    ttl: int


def table_bytes(buckets: int) -> int:
    """The size of a table of ``buckets`` buckets (8 traces each)."""
    return buckets * TABLE_BUCKET_BYTES


def _mix64(v: int) -> int:
    h = (v + 0x9E3779B97F4A7C15) & _MASK64
    h = ((h ^ (h >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    h = ((h ^ (h >> 27)) * 0x94D049BB133111EB) & _MASK64
    return h ^ (h >> 31)


def _table_view(table: Any, workers: int, index: int, now: int, ttl: int) -> tuple[Any, Any, int]:
    """The table's slots and overflow stamps (its arguments checked as ``_route.c`` does)."""
    if workers > 256:
        raise ValueError("routing by first arrival takes at most 256 workers")
    if not (0 <= index < workers and 0 <= now <= 0xFFFFFFFF and 0 <= ttl <= 0xFFFFFFFF):
        raise ValueError("index, now or ttl out of range")
    mv = memoryview(table)
    if mv.readonly:
        raise BufferError("the table must be writable")
    buckets = mv.nbytes // TABLE_BUCKET_BYTES
    if buckets == 0:
        raise ValueError("the table is too small or not aligned")
    mv = mv.cast("B")
    slots = mv[: buckets * TABLE_WAYS * 16].cast("Q")
    stamps = mv[buckets * TABLE_WAYS * 16 : buckets * (TABLE_WAYS * 16 + 4)].cast("I")
    return slots, stamps, buckets


def _is_dead(dead: Any, owner: int, workers: int) -> bool:
    return dead is not None and owner < workers and bool(dead[owner])


def hash_fallback(v: int, workers: int, hashed: int, dead: Any = None) -> int:
    """The twin of ``_route.c``'s ``hash_fallback``: the owner of a trace routed by hash (its
    routing value ``v``, its hash owner ``hashed``) when ``dead`` (a byte a worker, nonzero:
    dead, its traces taken over) says that owner is dead: a live worker among the others,
    spread by ``v``; ``hashed`` when it lives (or every other is dead)."""
    if not _is_dead(dead, hashed, workers) or workers < 2:
        return hashed
    spread = v // workers
    for j in range(workers - 1):
        w = (hashed + 1 + (spread + j) % (workers - 1)) % workers
        if not dead[w]:
            return w
    return hashed


def _check_dead(dead: Any, workers: int) -> None:
    if dead is not None and len(memoryview(dead).cast("B")) < workers:
        raise ValueError("dead must hold a byte for every worker")


def table_owner_python(
    table: Any,
    trace_id: bytes,
    workers: int,
    index: int,
    now: int,
    ttl: int,
    dead: Any = None,
) -> int:
    """The twin of ``_route.c``'s ``trace_owner``: the owner of ``trace_id``, claimed for
    ``index`` when the trace is new, adopted by ``index`` when ``dead`` says its owner is dead
    (one process: no lock, no compare-and-swap)."""
    slots, stamps, buckets = _table_view(table, workers, index, now, ttl)
    v = int.from_bytes(trace_id[-8:], "big")
    hashed = v % workers
    h = _mix64(v)
    key = h & ~0xFF & _MASK64 or 0x100
    base = (h >> 8) % buckets * TABLE_WAYS * 2
    for i in range(TABLE_WAYS):
        k = slots[base + 2 * i]
        if k & ~0xFF == key:
            slots[base + 2 * i + 1] = now
            if _is_dead(dead, k & 0xFF, workers):  # adopted (the C code: under the lock)
                slots[base + 2 * i] = key | index
                return index
            return k & 0xFF
    bucket = base // (TABLE_WAYS * 2)
    if now - stamps[bucket] <= ttl:  # the bucket routes new traces by hash (see _route.c)
        if now > stamps[bucket]:
            stamps[bucket] = now
        return hash_fallback(v, workers, hashed, dead)
    for i in range(TABLE_WAYS):
        k = slots[base + 2 * i]
        if k == 0 or now - (slots[base + 2 * i + 1] & 0xFFFFFFFF) > ttl:
            slots[base + 2 * i + 1] = now
            slots[base + 2 * i] = key | index
            return index
    stamps[bucket] = now
    return hash_fallback(v, workers, hashed, dead)


def claim(owners: OwnerTable, trace_id: bytes, workers: int, now: int, dead: Any = None) -> int:
    """The owner of ``trace_id`` by first arrival (the C module's, else the twin's); with
    ``dead``, a dead owner's trace is adopted by ``owners.index``."""
    mod = native()
    if mod is None:
        return table_owner_python(
            owners.buf, trace_id, workers, owners.index, now, owners.ttl, dead
        )
    if dead is None:
        return int(mod.trace_owner(trace_id, workers, owners.buf, owners.index, now, owners.ttl))
    return int(mod.trace_owner(trace_id, workers, owners.buf, owners.index, now, owners.ttl, dead))


# -- load-aware first arrival (service.worker_routing: balanced) --------------------------------
# Each worker publishes its event loop's busy fraction in a board the workers share (an mmap of
# run_dir/load, LOAD_SLOT_BYTES a worker, int64 fields: alive, busy in 1/1000, when it entered
# its selector's wait (CLOCK_MONOTONIC microseconds, 0 while it runs), when it last published,
# its pid). A new trace is claimed for the receiving worker unless it is at least BALANCE_BUSY
# busy and a sibling is at least BALANCE_MARGIN less busy: then for the least busy sibling (the
# ownership table's ``index`` is the claimant, the table and its C code unchanged).
LOAD_SLOT_BYTES = 64
LOAD_FIELDS = 5
BALANCE_BUSY = 0.5  # below it a worker keeps every new trace (nothing crosses at a low rate)
BALANCE_MARGIN = 0.15  # a sibling takes the new traces only when this much less busy
LOAD_IDLE_US = 20_000  # a sibling waiting in its selector this long counts as idle (0 busy)
LOAD_STALE_US = 1_000_000  # a running sibling silent this long is stuck or dead: not chosen


def load_bytes(workers: int) -> int:
    """The size of the load board of ``workers`` workers."""
    return workers * LOAD_SLOT_BYTES


def load_slots(buf: Any, workers: int) -> Any:
    """The board ``buf`` as int64 fields, LOAD_SLOT_BYTES // 8 a worker."""
    mv = memoryview(buf).cast("B")
    if mv.readonly or mv.nbytes < load_bytes(workers):
        raise ValueError("the load board is read-only or too small")
    return mv[: load_bytes(workers)].cast("q")


def sibling_load(fields: Any, worker: int, now_us: int) -> float | None:
    """Worker ``worker``'s busy fraction as the board says at ``now_us``; ``None`` when it may
    not be given traces: not alive (never started, or died: the supervisor clears it), or
    running without publishing for LOAD_STALE_US (stuck, or killed mid-turn)."""
    base = worker * (LOAD_SLOT_BYTES // 8)
    if fields[base] != 1:
        return None
    busy = fields[base + 1]
    waiting = fields[base + 2]
    published = fields[base + 3]
    if not 0 <= busy <= 1000:  # garbage: not trusted
        return None
    if waiting > 0:
        return 0.0 if now_us - waiting >= LOAD_IDLE_US else busy / 1000
    if now_us - published > LOAD_STALE_US:
        return None
    return busy / 1000


def balanced_claimant(
    fields: Any, workers: int, index: int, busy: float, now_us: int, current: int
) -> int:
    """For whom worker ``index`` (its busy fraction ``busy``) claims new traces: itself below
    BALANCE_BUSY, else the least busy sibling when at least BALANCE_MARGIN less busy than it.
    ``current`` (the claimant so far) is kept while it is still less busy than ``index`` (the
    hysteresis: a sibling taking new traces grows busier, and keeps them until it is as busy
    as this worker)."""
    if busy < BALANCE_BUSY:
        return index
    best, best_load = index, busy - BALANCE_MARGIN
    for w in range(workers):
        if w == index:
            continue
        load = sibling_load(fields, w, now_us)
        if load is None:
            continue
        if w == current and load < busy:
            return w
        if load < best_load:
            best, best_load = w, load
    return best


def split_traces(
    data: bytes,
    workers: int,
    owner_table: OwnerTable | None = None,
    now: int = 0,
    dead: Any = None,
) -> dict[int, tuple[bytes, int | None]]:
    """An ``ExportTraceServiceRequest`` split by owning worker: ``{worker: (request, spans)}``
    with only the workers that own spans (``{}`` for a request without any; the request itself
    and ``None`` when one worker owns every span). Owners by trace id, or by first arrival
    through ``owner_table`` (``now``: the time in seconds). ``dead`` (a byte a worker, nonzero:
    that worker is dead and its traces are taken over): a dead owner's traces are adopted by
    the table's ``index``, or without a table go to a live worker (:func:`hash_fallback`). The
    C module ``plugins._native._route`` when it was built, else :func:`split_traces_python`
    (the same bytes)."""
    mod = native()
    if mod is None:
        return split_traces_python(data, workers, owner_table, now, dead)
    if owner_table is None:
        if dead is None:
            result = mod.route_traces(data, workers)
        else:
            result = mod.route_traces(data, workers, None, 0, 0, 0, dead)
    else:
        t = owner_table
        if dead is None:
            result = mod.route_traces(data, workers, t.buf, t.index, now, t.ttl)
        else:
            result = mod.route_traces(data, workers, t.buf, t.index, now, t.ttl, dead)
    if isinstance(result, int):
        return {} if result < 0 else {result: (data, None)}
    return {owner: (raw, n) for owner, raw, n in result}


def split_traces_python(
    data: bytes,
    workers: int,
    owner_table: OwnerTable | None = None,
    now: int = 0,
    dead: Any = None,
) -> dict[int, tuple[bytes, int | None]]:
    """The twin of ``_route.c``'s ``route_traces``: for each owner, each ResourceSpans with
    spans of that owner (its fields other than scope_spans verbatim, then each ScopeSpans with
    spans of that owner: its fields other than spans verbatim, then those spans)."""
    if not 1 <= workers <= 65536:
        raise ValueError("workers must be between 1 and 65536")
    if owner_table is None:
        _check_dead(dead, workers)

        def owner_of(tid: bytes) -> int:
            if dead is None:
                return trace_owner(tid, workers)
            v = int.from_bytes(tid[-8:], "big")
            return hash_fallback(v, workers, v % workers, dead)

    else:
        table, index, ttl = owner_table.buf, owner_table.index, owner_table.ttl
        _table_view(table, workers, index, now, ttl)  # its checks, before any claim
        _check_dead(dead, workers)

        def owner_of(tid: bytes) -> int:
            return table_owner_python(table, tid, workers, index, now, ttl, dead)

    # resource: (others, [(others, [(owner, span)])])
    resources: list[tuple[bytes, list[tuple[bytes, list[tuple[int, bytes]]]]]] = []
    for number, wire, _, payload, stop in _fields(data):
        if number != 1 or wire != 2:
            continue
        rs = data[payload:stop]
        others = b"".join(rs[a:b] for n, w, a, _, b in _fields(rs) if not (n == 2 and w == 2))
        scopes = []
        for n, w, _, sp, sb in _fields(rs):
            if not (n == 2 and w == 2):
                continue
            ss = rs[sp:sb]
            ss_fields: list[bytes] = []
            spans = []
            for n2, w2, a2, p2, b2 in _fields(ss):
                if n2 == 2 and w2 == 2:
                    span = ss[p2:b2]
                    spans.append((owner_of(span_trace_id(span)), span))
                else:
                    ss_fields.append(ss[a2:b2])
            scopes.append((b"".join(ss_fields), spans))
        resources.append((others, scopes))
    owners = sorted({o for _, scopes in resources for _, spans in scopes for o, _ in spans})
    if not owners:
        return {}
    if len(owners) == 1:
        return {owners[0]: (data, None)}
    return _reassemble(resources, owners)


def _reassemble(
    resources: list[tuple[bytes, list[tuple[bytes, list[tuple[int, bytes]]]]]],
    owners: list[int],
) -> dict[int, tuple[bytes, int | None]]:
    """Each owner's request: the resources and scopes (their other fields as they came) that
    hold items (spans or log records, field 2 of a scope either way) it owns, with those
    items only, and their count."""
    out: dict[int, tuple[bytes, int | None]] = {}
    for k in owners:
        parts = []
        count = 0
        for others, scopes in resources:
            scope_parts = []
            for scope_others, items in scopes:
                mine = [item for o, item in items if o == k]
                if not mine:
                    continue
                count += len(mine)
                body = scope_others + b"".join(b"\x12" + encode_varint(len(i)) + i for i in mine)
                scope_parts.append(b"\x12" + encode_varint(len(body)) + body)
            if not scope_parts:
                continue
            body = others + b"".join(scope_parts)
            parts.append(b"\x0a" + encode_varint(len(body)) + body)
        out[k] = (b"".join(parts), count)
    return out


_native_flag: str | None = "unset"
_native: Any = None


def native() -> Any:
    """The C module (``plugins._native._route``), or None when it was not built or
    ``PIPELINE_NATIVE=0`` is set (read again when it changes)."""
    global _native_flag, _native
    flag = os.environ.get("PIPELINE_NATIVE")
    if flag != _native_flag:
        from plugins._native import load

        _native = load("_route")
        _native_flag = flag
    return _native


def split_metrics(data: bytes, workers: int) -> dict[int, tuple[bytes, int | None]]:
    """An ``ExportMetricsServiceRequest`` split by owning worker, one ``ResourceMetrics`` at
    a time: ``{worker: (request, None)}``, the encoded entries copied as they are (two
    encodings joined are one valid request); other fields of the request are left out."""
    chunks: dict[int, list[bytes]] = {}
    for number, wire, start, payload, stop in _fields(data):
        if number != 1 or wire != 2:
            continue
        owner = resource_owner(field_bytes(data[payload:stop], 1), workers)
        chunks.setdefault(owner, []).append(data[start:stop])
    if not chunks:
        return {}
    if len(chunks) == 1:
        return {next(iter(chunks)): (data, None)}
    return {owner: (b"".join(parts), None) for owner, parts in sorted(chunks.items())}


LOG_RECORD_TRACE_ID = 9  # LogRecord.trace_id


def split_logs(
    data: bytes,
    workers: int,
    local: int,
    owner_table: OwnerTable | None = None,
    now: int = 0,
    dead: Any = None,
) -> dict[int, tuple[bytes, int | None]]:
    """An ``ExportLogsServiceRequest`` split by owning worker, as :func:`split_traces_python`
    splits spans: a record goes to the owner of its trace id (by first arrival through
    ``owner_table``: the worker that owns the trace's spans); one without a trace id (or with one
    that is not 16 bytes) to ``local``, the worker that received it; a dead owner's (``dead``)
    records go where its spans go (:func:`split_traces`). ``{}`` for a request without
    records, ``{owner: (request, None)}`` when one worker owns them all."""
    if not 1 <= workers <= 65536:
        raise ValueError("workers must be between 1 and 65536")
    # the records' trace ids, in order, read by the C parser (the skeleton view); the walk
    # below reads them itself when the request is not one the parser takes
    ids = _log_trace_ids(data)
    resources: list[tuple[bytes, list[tuple[bytes, list[tuple[int, bytes]]]]]] = []
    flat: list[tuple[list[tuple[int, bytes]], int]] = []  # (scope's records, index)
    for number, wire, _, payload, stop in _fields(data):
        if number != 1 or wire != 2:
            continue
        rl = data[payload:stop]
        others = b"".join(rl[a:b] for n, w, a, _, b in _fields(rl) if not (n == 2 and w == 2))
        scopes = []
        for n, w, _, sp, sb in _fields(rl):
            if not (n == 2 and w == 2):
                continue
            sl = rl[sp:sb]
            sl_fields: list[bytes] = []
            records: list[tuple[int, bytes]] = []
            for n2, w2, a2, p2, b2 in _fields(sl):
                if n2 == 2 and w2 == 2:
                    flat.append((records, len(records)))
                    records.append((local, sl[p2:b2]))
                else:
                    sl_fields.append(sl[a2:b2])
            scopes.append((b"".join(sl_fields), records))
        resources.append((others, scopes))
    if ids is None or len(ids) != len(flat):  # the parser saw other records: read them here
        ids = [field_bytes(records[i][1], LOG_RECORD_TRACE_ID) for records, i in flat]
    owners: set[int] = set()
    for (records, i), trace in zip(flat, ids, strict=True):
        if len(trace) != 16:
            owner = local
        elif owner_table is None:
            owner = trace_owner(trace, workers)
            if dead is not None and dead[owner]:
                owner = hash_fallback(int.from_bytes(trace[-8:], "big"), workers, owner, dead)
        else:
            owner = claim(owner_table, trace, workers, now, dead)
        owners.add(owner)
        records[i] = (owner, records[i][1])
    if not owners:
        return {}
    if len(owners) == 1:
        return {next(iter(owners)): (data, None)}
    return _reassemble(resources, sorted(owners))


def _log_trace_ids(data: bytes) -> list[bytes] | None:
    """The trace ids of a logs request's records, in order, or ``None`` when the C parser
    refuses the request."""
    from google.protobuf.message import DecodeError

    from pipeline._wire import SkeletonLogs

    try:
        skeleton = SkeletonLogs.FromString(data)
    except (DecodeError, RuntimeError, ValueError):
        return None
    return [
        lr.trace_id
        for rl in skeleton.resource_logs
        for sl in rl.scope_logs
        for lr in sl.log_records
    ]
