"""The edge check of OTLP requests in C (``_otlpvalid.c``); the pure-Python twin and the rules
are in :mod:`pipeline._otlpvalid`. Each entry point takes any buffer holding an encoded request
and returns its items (spans, data points, log records), or raises ``ValueError`` naming the
field that a full protobuf parse would refuse or whose OTLP id has the wrong length."""

from typing_extensions import Buffer

def validate_traces(data: Buffer, /) -> int:
    """The spans of an ``ExportTraceServiceRequest``."""

def validate_metrics(data: Buffer, /) -> int:
    """The data points of an ``ExportMetricsServiceRequest``."""

def validate_logs(data: Buffer, /) -> int:
    """The log records of an ``ExportLogsServiceRequest``."""
