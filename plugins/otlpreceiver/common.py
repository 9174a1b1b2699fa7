"""What the OTLP receiver's servers share: bounded decompression, refusals with a status,
and the TLS context of a server. Light on purpose: importing it pulls in neither aiohttp nor
grpcio."""

from __future__ import annotations

import asyncio
import zlib

from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2

from pipeline.configtls import server_ssl_context

__all__ = ["RequestError", "inflate", "inflate_off_loop", "retry_status", "server_ssl_context"]


class RequestError(Exception):
    """A request refused before it reached the pipeline: an HTTP status and a message."""

    def __init__(self, status: int, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason or ("too_large" if status == 413 else "malformed")
        """For ``otelcol_receiver_refused_requests``."""


class ClientDisconnected(RequestError):
    """The client went away before its request body was in (nothing to answer)."""

    def __init__(self, detail: str = "") -> None:
        message = "the client disconnected before the request body was received"
        super().__init__(499, f"{message} ({detail})" if detail else message)


def inflate(body: bytes, limit: int, wbits: int, name: str) -> bytes:
    """Decompress ``body`` (gzip members or a zlib stream), never producing more than ``limit``
    bytes: a body that would inflate past it raises a 413 before it is fully inflated."""
    out: list[bytes] = []
    produced = 0
    data = body
    while True:
        d = zlib.decompressobj(wbits)
        try:
            chunk = d.decompress(data, limit - produced + 1)
        except zlib.error as exc:
            raise RequestError(400, f"malformed {name} body: {exc}") from None
        produced += len(chunk)
        if produced > limit or d.unconsumed_tail:
            raise RequestError(
                413,
                f"the {name} body inflates to more than max_request_body_size ({limit} bytes)",
            )
        out.append(chunk)
        if not d.eof:
            raise RequestError(400, f"malformed {name} body: truncated (unexpected end of data)")
        data = d.unused_data
        if not data or wbits != 31:  # only gzip may hold several members
            break
    return out[0] if len(out) == 1 else b"".join(out)


# bodies up to this size are inflated on the event loop; larger ones in a worker thread (zlib
# lets go of the GIL while it works), so a large compressed request does not stall the loop
INLINE_INFLATE = 64 * 1024


async def inflate_off_loop(body: bytes, limit: int, wbits: int, name: str) -> bytes:
    """:func:`inflate`, in a worker thread when ``body`` is larger than ``INLINE_INFLATE``."""
    if len(body) <= INLINE_INFLATE:
        return inflate(body, limit, wbits, name)
    return await asyncio.to_thread(inflate, body, limit, wbits, name)


def retry_status(code: int, message: str, delay: float | None) -> bytes:
    """An encoded ``google.rpc.Status`` (what ``grpc-status-details-bin`` carries), with a
    ``RetryInfo`` when a retry delay is given."""
    status = status_pb2.Status(code=code, message=message)
    if delay is not None:
        detail = any_pb2.Any()
        seconds = int(delay)
        detail.Pack(
            error_details_pb2.RetryInfo(
                retry_delay=duration_pb2.Duration(
                    seconds=seconds, nanos=int((delay - seconds) * 1e9)
                )
            )
        )
        status.details.append(detail)
    return bytes(status.SerializeToString())
