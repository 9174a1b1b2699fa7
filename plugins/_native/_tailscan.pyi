"""Facts of encoded traces for ``tail_sampling``, its one-call decision of a release, and the
``redaction`` processor's pattern prefilter (``_tailscan.c``); the Python twins are
:func:`plugins.tailsamplingprocessor.scan.trace_facts_python`,
:func:`plugins.tailsamplingprocessor.scan.decide_request_python` and
:func:`plugins.redactionprocessor.prefilter.find_patterns_python`."""

from collections.abc import Callable
from typing import Any

from typing_extensions import Buffer

# (status_mask, start_min, end_max, roots as (index, start, end), values per key, failed)
Facts = tuple[int, int, int, list[tuple[int, int, int]], tuple[bytes | None, ...], list[int]]

def trace_facts(spans: list[bytes], keys: tuple[bytes, ...], error_key: Buffer, /) -> Facts | None:
    """The facts of one trace's encoded spans, or ``None`` when a span is malformed or
    irregular (the policies then read the spans themselves)."""

# per trace (trace id, span count, decision codes or None); the deferred traces' (index, spans,
# groups: (resource, resource schema url, scope, scope schema url) per span)
Entries = list[tuple[bytes, int, bytes | None]]
Deferred = list[tuple[int, list[bytes], list[tuple[bytes, bytes, bytes, bytes]]]]

def decide_request(
    data: Buffer,
    keys: tuple[bytes, ...],
    error_key: Buffer,
    markers: tuple[bytes, ...],
    program: tuple[tuple[Any, ...], ...],
    first_match: bool,
    tool: tuple[bytes, bytes, bytes, bytes, Callable[[bytes], object]] | None,
    /,
) -> tuple[Entries, Deferred] | None:
    """The policies of ``program`` (``policies.compile_program``) on every trace of a request
    of whole traces; ``None`` for a request it does not take; ``ValueError`` for a malformed
    program; an error raised by ``tool``'s check other than ``ValueError`` is raised."""

def find_patterns(data: Buffer, table: Buffer, /) -> int:
    """The bit mask of ``table``'s patterns found in ``data``; ``ValueError`` for a malformed
    table."""
