"""OTLP/HTTP: ``POST /v1/traces``, ``/v1/metrics`` and ``/v1/logs``, protobuf and JSON, on
aiohttp.

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
  the field), ``429`` (the gateway's own limits) or ``503`` with ``Retry-After`` when the
  pipeline pushes back;
* ``cors`` answers browser preflights for the allowed origins;
* with ``auth``, a request is authenticated from its headers before its body is read: refused,
  it gets ``401`` with ``WWW-Authenticate`` and a ``Status`` (code 16) in its encoding.
"""

from __future__ import annotations

import fnmatch
import logging
import math
from typing import TYPE_CHECKING, Any

from aiohttp import web
from google.protobuf.message import Message
from google.rpc import code_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from pipeline import (
    AuthenticationError,
    PermanentError,
    RetryableError,
    ServerAuth,
    Signal,
)
from pipeline.client import ClientInfo, peer_address, set_client
from pipeline.netedge import HTTPEdge, Listener, http_edge, serve_http
from plugins import _otlpjson as otlpjson
from plugins._offload import decode_off_loop
from plugins.otlpreceiver.common import (
    ClientDisconnected,
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
    Signal.LOGS: ExportLogsServiceRequest,
}
RESPONSE_CLASSES: dict[Signal, type[Message]] = {
    Signal.TRACES: ExportTraceServiceResponse,
    Signal.METRICS: ExportMetricsServiceResponse,
    Signal.LOGS: ExportLogsServiceResponse,
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


# JSON bodies up to this size are decoded on the event loop, larger ones in a decode thread.
# Decoding OTLP/JSON costs 0.3-0.5 µs per byte for SDK requests (json_format is pure Python)
# and up to 2.5 µs for the densest valid shape (a list of empty spans, `{},` each): 2.5 ms at
# this size at worst, within the 5 ms the loop may wait for the GIL while a thread decodes. A
# one-span SDK request is about 1 KiB.
INLINE_JSON = 1024


def parse_json(signal: Signal, body: bytes, max_values: int) -> Message:
    """An OTLP/JSON body as a request message (run in a decode thread when large); raises
    :class:`otlpjson.OTLPJSONError` as :func:`otlpjson.parse`."""
    return otlpjson.parse(body, REQUEST_CLASSES[signal](), max_values)


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

    def __init__(
        self, receiver: OTLPReceiver, config: HTTPServerConfig, auth: ServerAuth | None = None
    ) -> None:
        self.receiver = receiver
        self.config = config
        self.auth = auth
        self.cors = CORS(config.cors)
        self.routes: dict[str, Signal] = {}
        self._server: web.Server | None = None
        self._listener: Listener | None = None

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        for signal in self.receiver.consumers:
            self.routes[self.config.url_path(signal)] = signal
        cfg = self.config
        self._server = web.Server(
            self._handle,
            access_log=None,
            auto_decompress=False,
            # idle_timeout is enforced by the edge (0: never, as Go's net/http)
            keepalive_timeout=cfg.idle_timeout or 365 * 86400.0,
        )
        ctx = server_ssl_context(cfg.tls) if cfg.tls else None
        settings = self.receiver.settings
        self._listener = await serve_http(
            cfg.endpoint,
            self._server,
            cfg,
            refused=lambda reason: settings.telemetry.refused_request("http", reason),
            log_limited=settings.log_limited,
            ssl=ctx,
        )
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

    # -- requests ---------------------------------------------------------------------------------
    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        edge = http_edge(request.transport, self._listener)
        if edge is None:
            return await self._serve(request, None)
        edge.started()
        try:
            return await self._serve(request, edge)
        finally:
            edge.ended()

    async def _serve(self, request: web.BaseRequest, edge: HTTPEdge | None) -> web.StreamResponse:
        signal = self.routes.get(request.path)
        if signal is None:
            return web.Response(status=404, text=f"404 page not found: {request.path}\n")
        if request.method == "OPTIONS":
            return self.cors.preflight(request)
        cors = self.cors.simple_headers(request.headers.get("Origin"))
        peer = peer_address(request.remote)
        auth: Any = {}
        if self.auth is not None:  # from the headers, before anything else (the body unread)
            try:
                auth = await self.auth.check(request.headers, "http", peer)
            except AuthenticationError as exc:
                as_json = request.content_type.lower() == JSON
                headers = {**cors, "WWW-Authenticate": self.auth.www_authenticate}
                return self._status(401, code_pb2.UNAUTHENTICATED, str(exc), as_json, headers)
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
            self._refused("content_type", signal)
            self._warn(signal, f"unsupported content type {content_type!r}", 415)
            return web.Response(
                status=415,
                text=f"415 unsupported media type, supported: [{JSON}, {PROTOBUF}]; "
                f"got {request.headers.get('Content-Type', '(none)')!r}\n",
                headers=cors,
            )
        client = ClientInfo(peer, self.receiver.settings.name, "http", auth)
        set_client(client)  # aiohttp runs each request in a task of its own
        try:
            body = await self._read_body(request)
            if edge is not None:
                edge.read_done()
            transport = request.transport
            if transport is None or transport.is_closing():
                # the client is gone before its request was taken: not ingested (it will not
                # learn the outcome, and may send it again)
                self.receiver.settings.telemetry.refused_request("http", "cancelled")
                return web.Response(status=400, text="400 the client went away\n")
            if as_json:
                message = await decode_off_loop(
                    len(body), INLINE_JSON, parse_json, signal, body, self.config.max_json_values
                )
                await self.receiver.push_message(signal, message, "http", lambda: peer)
            else:
                await self.receiver.push(signal, body, "http", lambda: peer)
        except ClientDisconnected as exc:
            self._refused("client_disconnected", signal, exc.message, logging.INFO)
            return self._status(exc.status, code_pb2.CANCELLED, exc.message, as_json, cors)
        except RequestError as exc:
            if exc.status in (400, 413):
                self.receiver.count_malformed(signal)
            self._refused(exc.reason, signal)
            self._warn(signal, exc.message, exc.status)
            code = code_pb2.RESOURCE_EXHAUSTED if exc.status == 413 else code_pb2.INVALID_ARGUMENT
            return self._status(exc.status, code, exc.message, as_json, cors)
        except otlpjson.OTLPJSONBudgetError as exc:
            self.receiver.count_malformed(signal)
            self._refused("too_large", signal)
            self._warn(signal, str(exc), 413)
            return self._status(413, code_pb2.RESOURCE_EXHAUSTED, str(exc), as_json, cors)
        except MalformedRequestError as exc:  # counted and logged by the receiver
            return self._status(400, code_pb2.INVALID_ARGUMENT, str(exc), as_json, cors)
        except PermanentError as exc:
            if as_json:  # JSON that does not parse
                self.receiver.count_malformed(signal)
            self._refused("malformed", signal)
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
            self.receiver.settings.log_limited(
                logging.ERROR,
                "unexpected error while receiving %s",
                signal,
                key="unexpected",
                exc_info=exc,
                extra={"client": client.addr},
            )
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
        # read by chunks either way: a body cut off (the client went away, the edge closed
        # it) is dropped without being joined
        chunks: list[bytes] = []
        total = 0
        while True:
            try:
                chunk = await request.content.readany()
            except ConnectionError as exc:
                # aiohttp keeps this exception in the request's payload, which this frame (in
                # its traceback) references: a cycle only the cyclic GC would free, with the
                # chunks
                chunks.clear()
                raise ClientDisconnected(str(exc)) from None
            if not chunk:
                break
            total += len(chunk)
            if total > limit:
                raise RequestError(
                    413, f"request body is larger than max_request_body_size ({limit} bytes)"
                )
            chunks.append(chunk)
        if length is not None and total < length:
            raise RequestError(400, "request body shorter than its Content-Length")
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        encoding = request.headers.get("Content-Encoding", "").strip().lower()
        if not encoding or encoding == "identity":
            return body
        if encoding in ("gzip", "x-gzip"):
            return await inflate_off_loop(body, limit, 31, "gzip")
        if encoding in ("deflate", "zlib"):
            return await inflate_off_loop(body, limit, 15, "deflate")
        raise RequestError(
            400,
            f"unsupported Content-Encoding {encoding!r}: supported are gzip and deflate",
            "unsupported_encoding",
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

    def _refused(
        self, reason: str, signal: Signal, message: str = "", level: int | None = None
    ) -> None:
        """Count a request refused before the pipeline (``otelcol_receiver_refused_requests``
        by reason); with ``level``, also log it (at most once a second per reason)."""
        settings = self.receiver.settings
        settings.telemetry.refused_request("http", reason)
        if level is not None:
            settings.log_limited(
                level,
                "refused an OTLP/HTTP request: %s",
                message,
                key=f"http refusal/{reason}",
                extra={"reason": reason, "otel_signal": str(signal)},
            )

    def _warn(self, signal: Signal, message: str, status: int) -> None:
        """Log a refused request; at most one line a second, with the count of the others."""
        self.receiver.settings.log_limited(
            logging.WARNING,
            "refused an OTLP/HTTP request: %s",
            message,
            key="http refusal",
            extra={"status": status, "otel_signal": str(signal)},
        )
