"""An encoded ``ExportTraceServiceRequest`` split by the worker owning each span's trace
(``_route.c``); the pure-Python twin is :func:`pipeline._route.split_traces_python`. Owners by
trace id, or by first arrival through an ownership table shared by the workers (twin:
:func:`pipeline._route.table_owner_python`)."""

from typing_extensions import Buffer

def route_traces(
    data: Buffer,
    workers: int,
    table: Buffer | None = None,
    index: int = 0,
    now: int = 0,
    ttl: int = 0,
    dead: Buffer | None = None,
    /,
) -> int | list[tuple[int, bytes, int]]:
    """-1 without spans; the owner when every span belongs to one worker; else
    ``(owner, request, spans)`` per owner, in owner order. With ``table`` (writable, a
    multiple of 136 bytes per bucket) a span's owner is its trace's in the table, claimed for
    ``index`` at ``now`` (seconds) when new; ``ttl``: how long a trace is kept after its last
    span. ``dead`` (a byte a worker, nonzero: dead): a known trace of a dead owner is adopted
    by ``index``; a trace routed by hash whose owner is dead goes to a live worker spread by its
    routing value (twin: :func:`pipeline._route.hash_fallback`). ``ValueError`` on malformed
    framing or arguments, ``BufferError`` on a read-only table."""

def trace_owner(
    trace_id: Buffer,
    workers: int,
    table: Buffer,
    index: int,
    now: int,
    ttl: int,
    dead: Buffer | None = None,
    /,
) -> int:
    """The owner of ``trace_id`` in ``table`` (claimed for ``index`` when new, adopted by it
    when ``dead`` says its owner is dead)."""
