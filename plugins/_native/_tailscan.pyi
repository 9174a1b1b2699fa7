"""Facts of encoded traces for ``tail_sampling`` and the ``redaction`` processor's pattern
prefilter (``_tailscan.c``); the Python twins are
:func:`plugins.tailsamplingprocessor.scan.trace_facts_python` and
:func:`plugins.redactionprocessor.prefilter.find_patterns_python`."""

from typing_extensions import Buffer

# (status_mask, start_min, end_max, roots as (index, start, end), values per key, failed)
Facts = tuple[int, int, int, list[tuple[int, int, int]], tuple[bytes | None, ...], list[int]]

def trace_facts(spans: list[bytes], keys: tuple[bytes, ...], error_key: Buffer, /) -> Facts | None:
    """The facts of one trace's encoded spans, or ``None`` when a span is malformed or
    irregular (the policies then read the spans themselves)."""

def find_patterns(data: Buffer, table: Buffer, /) -> int:
    """The bit mask of ``table``'s patterns found in ``data``; ``ValueError`` for a malformed
    table."""
