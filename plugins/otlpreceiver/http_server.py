"""OTLP/HTTP: ``POST /v1/traces`` and ``POST /v1/metrics``, protobuf and JSON, on aiohttp.

Behaviour follows the OTLP specification (and the Collector where the specification leaves a
choice):

* ``Content-Type: application/x-protobuf`` is checked as a full parse would check it (the edge
  check of :meth:`pipeline.Payload.validate`) and forwarded still encoded;
  ``application/json`` is decoded (hex trace/span IDs), re-encoded once and the encoding
  checked the same way; anything else is answered ``415``;
* ``Content-Encoding: gzip`` (or ``deflate``) bodies are inflated incrementally, never past
  ``max_request_body_size``: a body larger than that, as sent or once inflated, gets ``413``;
* the response is in the request's encoding: an ``Export*ServiceResponse`` on success, a
  ``google.rpc.Status`` on failure, ``400`` for data that cannot be decoded (the message names
  the field), ``429``
  (the gateway's own limits) or ``503`` with ``Retry-After`` when the pipeline pushes back;
* ``cors`` answers browser preflights for the allowed origins.
"""

from __future__ import annotations

import asyncio
import fnmatch
import math
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web
from google.protobuf.message import Message
from google.rpc import code_pb2, status_pb2
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from pipeline import PermanentError, RetryableError, Signal, split_endpoint
from plugins.otlpreceiver import otlpjson
from plugins.otlpreceiver.common import (
    RequestError,
    inflate_off_loop,
    server_ssl_context,
)
from plugins.otlpreceiver.config import CORSConfig, HTTPServerConfig
from plugins.otlpreceiver.receiver import MalformedRequestError

if TYPE_CHECKING:
    from plugins.otlpreceiver.receiver import OTLPReceiver

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
DEFAULT_RETRY_AFTER = 1.0
REQUEST_CLASSES: dict[Signal, type[Message]] = {
    Signal.TRACES: ExportTraceServiceRequest,
    Signal.METRICS: ExportMetricsServiceRequest,
}
RESPONSE_CLASSES: dict[Signal, type[Message]] = {
    Signal.TRACES: ExportTraceServiceResponse,
    Signal.METRICS: ExportMetricsServiceResponse,
}
# Headers a browser may always send, plus the two OTLP needs.
SAFE_HEADERS = frozenset(
    {
        "accept",
        "accept-language",
        "content-language",
        "content-type",
        "content-encoding",
        "origin",
        "x-requested-with",
    }
)
_EMPTY_JSON_RESPONSE = b"{}"


class CORS:
    """The ``cors`` settings applied to one request."""

    def __init__(self, config: CORSConfig | None) -> None:
        self.origins = list(config.allowed_origins) if config else []
        headers = {h.lower() for h in config.allowed_headers} if config else set()
        self.any_header = "*" in headers
        self.headers = SAFE_HEADERS | headers
        self.max_age = config.max_age if config else 0

    def origin_allowed(self, origin: str) -> bool:
        return any(fnmatch.fnmatchcase(origin, pattern) for pattern in self.origins)

    def simple_headers(self, origin: str | None) -> dict[str, str]:
        """Headers for an actual (non-preflight) request."""
        if origin is None or not self.origins:
            return {}
        if not self.origin_allowed(origin):
            return {"Vary": "Origin"}
        return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}

    def preflight(self, request: web.BaseRequest) -> web.Response:
        """Answer an ``OPTIONS`` preflight: allowed -> the CORS headers; refused -> none."""
        origin = request.headers.get("Origin")
        method = request.headers.get("Access-Control-Request-Method", "")
        vary = {"Vary": "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"}
        if origin is None or not self.origin_allowed(origin) or method.upper() != "POST":
            return web.Response(status=204, headers=vary)
        wanted = [
            h.strip().lower()
            for h in request.headers.get("Access-Control-Request-Headers", "").split(",")
            if h.strip()
        ]
        if not self.any_header and any(h not in self.headers for h in wanted):
            return web.Response(status=204, headers=vary)
        headers = {
            **vary,
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Methods": "POST",
        }
        if wanted:
            headers["Access-Control-Allow-Headers"] = ", ".join(wanted)
        if self.max_age:
            headers["Access-Control-Max-Age"] = str(self.max_age)
        return web.Response(status=204, headers=headers)


class HTTPServer:
    """The HTTP side of one ``otlp`` receiver."""

    def __init__(self, receiver: OTLPReceiver, config: HTTPServerConfig) -> None:
        self.receiver = receiver
        self.config = config
        self.cors = CORS(config.cors)
        self.routes: dict[str, Signal] = {}
        self._server: web.Server | None = None
        self._listener: asyncio.Server | None = None
        self._last_warning = 0.0
        self._suppressed = 0

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        for signal in self.receiver.consumers:
            path = (
                self.config.traces_url_path
                if signal is Signal.TRACES
                else self.config.metrics_url_path
            )
            self.routes[path] = signal
        self._server = web.Server(self._handle, access_log=None, auto_decompress=False)
        host, port = split_endpoint(self.config.endpoint)
        ctx = server_ssl_context(self.config.tls) if self.config.tls else None
        loop = asyncio.get_running_loop()
        try:
            self._listener = await loop.create_server(
                self._server, host or None, port, ssl=ctx, reuse_address=True
            )
        except OSError as exc:
            raise OSError(f"cannot listen on {self.config.endpoint}: {exc.strerror}") from exc
        self.receiver.settings.logger.info(
            "OTLP/HTTP listening",
            extra={"endpoint": self.config.endpoint, "paths": ",".join(self.routes)},
        )

    async def stop(self, grace: float = 10.0) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        if self._server is not None:
            server, self._server = self._server, None
            # Idle keep-alive connections close now (else shutdown waits the whole grace
            # period for a next request); requests in progress still finish.
            for connection in list(server.connections):
                connection.close()
            await server.shutdown(grace)
        if listener is not None:
            await listener.wait_closed()

    # -- requests ---------------------------------------------------------------------------------
    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        signal = self.routes.get(request.path)
        if signal is None:
            return web.Response(status=404, text=f"404 page not found: {request.path}\n")
        if request.method == "OPTIONS":
            return self.cors.preflight(request)
        cors = self.cors.simple_headers(request.headers.get("Origin"))
        if request.method != "POST":
            return web.Response(
                status=405,
                text=f"405 method not allowed, supported: [POST]; got {request.method}\n",
                headers={"Allow": "POST", **cors},
            )
        content_type = request.content_type.lower()
        if content_type == PROTOBUF:
            as_json = False
        elif content_type == JSON:
            as_json = True
        else:
            self._warn(signal, f"unsupported content type {content_type!r}", 415)
            return web.Response(
                status=415,
                text=f"415 unsupported media type, supported: [{JSON}, {PROTOBUF}]; "
                f"got {request.headers.get('Content-Type', '(none)')!r}\n",
                headers=cors,
            )

        def peer() -> str:
            return request.remote or ""

        try:
            body = await self._read_body(request)
            if as_json:
                message = otlpjson.parse(body, REQUEST_CLASSES[signal]())
                await self.receiver.push_message(signal, message, "http", peer)
            else:
                await self.receiver.push(signal, body, "http", peer)
        except RequestError as exc:
            if exc.status in (400, 413):
                self.receiver.count_malformed(signal)
            self._warn(signal, exc.message, exc.status)
            code = code_pb2.RESOURCE_EXHAUSTED if exc.status == 413 else code_pb2.INVALID_ARGUMENT
            return self._status(exc.status, code, exc.message, as_json, cors)
        except MalformedRequestError as exc:  # counted and logged by the receiver
            return self._status(400, code_pb2.INVALID_ARGUMENT, str(exc), as_json, cors)
        except PermanentError as exc:
            if as_json:  # JSON that does not parse
                self.receiver.count_malformed(signal)
            self._warn(signal, str(exc), 400)
            return self._status(400, code_pb2.INVALID_ARGUMENT, str(exc), as_json, cors)
        except RetryableError as exc:
            delay = exc.retry_after if exc.retry_after is not None else DEFAULT_RETRY_AFTER
            status, code = (
                (429, code_pb2.RESOURCE_EXHAUSTED)
                if exc.resource_exhausted
                else (503, code_pb2.UNAVAILABLE)
            )
            headers = {**cors, "Retry-After": str(max(1, math.ceil(delay)))}
            return self._status(status, code, str(exc), as_json, headers)
        except Exception as exc:  # a bug downstream must not kill the server
            self.receiver.settings.logger.exception("unexpected error while receiving %s", signal)
            return self._status(500, code_pb2.INTERNAL, f"internal error: {exc}", as_json, cors)
        if as_json:
            return web.Response(body=_EMPTY_JSON_RESPONSE, content_type=JSON, headers=cors)
        return web.Response(body=b"", content_type=PROTOBUF, headers=cors)

    async def _read_body(self, request: web.BaseRequest) -> bytes:
        limit = self.config.max_request_body_size
        length = request.content_length
        if length is not None and length > limit:
            raise RequestError(
                413,
                f"request body of {length} bytes is larger than max_request_body_size "
                f"({limit} bytes)",
            )
        if length is not None:
            try:
                body = await request.content.readexactly(length)
            except asyncio.IncompleteReadError as exc:
                raise RequestError(400, "request body shorter than its Content-Length") from exc
        else:
            chunks: list[bytes] = []
            total = 0
            while True:
                chunk = await request.content.readany()
                if not chunk:
                    break
                total += len(chunk)
                if total > limit:
                    raise RequestError(
                        413, f"request body is larger than max_request_body_size ({limit} bytes)"
                    )
                chunks.append(chunk)
            body = b"".join(chunks)
        encoding = request.headers.get("Content-Encoding", "").strip().lower()
        if not encoding or encoding == "identity":
            return body
        if encoding in ("gzip", "x-gzip"):
            return await inflate_off_loop(body, limit, 31, "gzip")
        if encoding in ("deflate", "zlib"):
            return await inflate_off_loop(body, limit, 15, "deflate")
        raise RequestError(
            400, f"unsupported Content-Encoding {encoding!r}: supported are gzip and deflate"
        )

    def _status(
        self, status: int, code: int, message: str, as_json: bool, headers: dict[str, str]
    ) -> web.Response:
        """An error response: a ``google.rpc.Status`` in the request's encoding."""
        st = status_pb2.Status(code=code, message=message)
        if as_json:
            return web.Response(
                status=status, body=otlpjson.dumps(st), content_type=JSON, headers=headers
            )
        return web.Response(
            status=status, body=st.SerializeToString(), content_type=PROTOBUF, headers=headers
        )

    def _warn(self, signal: Signal, message: str, status: int) -> None:
        """Log a refused request; at most one line a second, with the count of the others."""
        now = time.monotonic()
        if now - self._last_warning < 1.0:
            self._suppressed += 1
            return
        extra: dict[str, Any] = {"status": status, "otel_signal": str(signal)}
        if self._suppressed:
            extra["similar_refusals_not_logged"] = self._suppressed
        self._suppressed = 0
        self._last_warning = now
        self.receiver.settings.logger.warning(
            "refused an OTLP/HTTP request: %s", message, extra=extra
        )
