"""What both OTLP/gRPC senders (grpcio's and the native one) share, without importing grpcio:
the status codes, the OTLP specification's retryable/permanent split, how servers word a
refusal of an oversize message, ``RetryInfo`` and ``partial_success``."""

from __future__ import annotations

import logging

from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from pipeline import (
    ComponentTelemetry,
    PermanentError,
    RequestTooLargeError,
    RetryableError,
    Signal,
)

METHODS = {
    Signal.TRACES: "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    Signal.METRICS: "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
    Signal.LOGS: "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
}
# gRPC status codes by number (google.rpc.Code)
CODE_NAMES = (
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
)
CANCELLED, UNKNOWN, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED = 1, 2, 4, 8
OUT_OF_RANGE, INTERNAL, UNAVAILABLE = 11, 13, 14
RETRYABLE = frozenset({1, 4, 10, 11, 14, 15})  # CANCELLED ... DATA_LOSS (OTLP specification)
TOO_LARGE = frozenset({RESOURCE_EXHAUSTED, OUT_OF_RANGE})
MAX_MESSAGE = 256 << 20
# How servers word a refusal of an oversize message (lower case): gRPC C-core and grpc-go
# ("[grpc: ]received message larger than max (N vs. M)", and "sent ..." for the client's own
# limit), tonic ("decoded message length too large"), grpc-java ("... exceeds maximum ...").
TOO_LARGE_MARKERS = (
    "message larger than max",
    "message length too large",
    "exceeds maximum",
)


def code_name(code: int) -> str:
    return CODE_NAMES[code] if 0 <= code < len(CODE_NAMES) else f"CODE_{code}"


def is_too_large_code(code: int, details: str | None) -> bool:
    """Whether a failed call (status number ``code``) was refused for its size."""
    text = (details or "").lower()
    return code in TOO_LARGE and any(m in text for m in TOO_LARGE_MARKERS)


def failure(endpoint: str, code: int, message: str | None, delay: float | None) -> Exception:
    """The OTLP specification's retryable/permanent split of a call that failed with status
    number ``code`` (``delay``: the server's ``RetryInfo``, if any)."""
    text = f"{endpoint}: {code_name(code)}: {message}"
    if is_too_large_code(code, message):
        return RequestTooLargeError(text)
    if code in RETRYABLE:
        return RetryableError(text, retry_after=delay)
    if code == RESOURCE_EXHAUSTED and delay is not None:
        return RetryableError(text, retry_after=delay, resource_exhausted=True)
    return PermanentError(text)


def retry_delay_from_status(value: bytes) -> float | None:
    """The ``RetryInfo.retry_delay`` (seconds) in an encoded ``google.rpc.Status``."""
    status = status_pb2.Status()
    try:
        status.ParseFromString(value)
    except DecodeError:
        return None
    for detail in status.details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return float(info.retry_delay.seconds + info.retry_delay.nanos / 1e9)
    return None


def record_partial_success(
    signal: Signal,
    rejected: int,
    message: str,
    telemetry: ComponentTelemetry | None,
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger],
) -> None:
    """Count and log the items a server said it rejected (``partial_success``)."""
    if rejected and telemetry is not None:
        telemetry.dropped(signal, rejected, "rejected_by_server")
    if rejected or message:
        logger.warning(
            "partial success: the server rejected %d %s: %s",
            rejected,
            signal.item_name,
            message or "(no message)",
            extra={"rejected_items": rejected, "otel_signal": str(signal)},
        )


def parse_partial_success(signal: Signal, body: bytes) -> tuple[int, str]:
    """``(rejected items, error_message)`` of an encoded ``Export*ServiceResponse``."""
    if not body:
        return 0, ""
    try:
        if signal is Signal.TRACES:
            tr = ExportTraceServiceResponse.FromString(body)
            return tr.partial_success.rejected_spans, tr.partial_success.error_message
        if signal is Signal.LOGS:
            lr = ExportLogsServiceResponse.FromString(body)
            return lr.partial_success.rejected_log_records, lr.partial_success.error_message
        mr = ExportMetricsServiceResponse.FromString(body)
        return mr.partial_success.rejected_data_points, mr.partial_success.error_message
    except DecodeError:
        return 0, ""
