"""An encoded ``ExportTraceServiceRequest`` split by the worker owning each span's trace
(``_route.c``); the pure-Python twin is :func:`pipeline._route.split_traces_python`."""

from typing_extensions import Buffer

def route_traces(data: Buffer, workers: int, /) -> int | list[tuple[int, bytes, int]]:
    """-1 without spans; the owner when every span belongs to one worker; else
    ``(owner, request, spans)`` per owner, in owner order. ``ValueError`` on malformed
    framing."""
