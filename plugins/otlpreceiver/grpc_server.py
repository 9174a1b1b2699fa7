"""OTLP/gRPC: ``TraceService/Export``, ``MetricsService/Export`` and ``LogsService/Export`` on
raw bytes.

The request is never parsed into Python objects here: the handler gets the encoded bytes,
checks them as a full parse would (:meth:`pipeline.Payload.validate`) and passes them on.
Answers follow the OTLP specification: ``INVALID_ARGUMENT`` for data that cannot be decoded,
``UNAVAILABLE`` (or ``RESOURCE_EXHAUSTED`` for the gateway's own limits) with ``RetryInfo`` when
the pipeline pushes back. With ``auth``, an interceptor authenticates each call's metadata
before its message is read: a refused call is answered ``UNAUTHENTICATED``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from google.rpc import code_pb2

from pipeline import (
    AuthenticationError,
    PermanentError,
    RetryableError,
    ServerAuth,
    Signal,
    netedge,
    split_endpoint,
)
from pipeline.client import ClientInfo, client_context
from plugins.otlpreceiver.common import retry_status
from plugins.otlpreceiver.config import GRPCServerConfig, ServerTLSConfig

if TYPE_CHECKING:
    from plugins.otlpreceiver.receiver import OTLPReceiver

SERVICES = {
    Signal.TRACES: "opentelemetry.proto.collector.trace.v1.TraceService",
    Signal.METRICS: "opentelemetry.proto.collector.metrics.v1.MetricsService",
    Signal.LOGS: "opentelemetry.proto.collector.logs.v1.LogsService",
}
EMPTY_RESPONSE = b""  # an ExportServiceResponse with no partial_success
DEFAULT_RETRY_DELAY = 1.0
# what the authenticator established, from the interceptor to the call's handler
_auth_info: ContextVar[Mapping[str, Any] | None] = ContextVar("otlp_grpc_auth", default=None)


def retry_trailers(
    code: grpc.StatusCode, message: str, delay: float
) -> tuple[tuple[str, bytes], ...]:
    """``grpc-status-details-bin`` carrying a ``google.rpc.RetryInfo``."""
    status = retry_status(getattr(code_pb2, code.name), message, delay)
    return (("grpc-status-details-bin", status),)


def server_credentials(tls: ServerTLSConfig) -> grpc.ServerCredentials:
    """TLS credentials from the config's files (read once, at start)."""
    key, cert = Path(tls.key_file).read_bytes(), Path(tls.cert_file).read_bytes()
    ca = Path(tls.client_ca_file).read_bytes() if tls.client_ca_file else None
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=ca, require_client_auth=ca is not None
    )


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Authenticates each call's metadata before its message is read: the Export handler is
    served as a stream of requests, the first read only once the caller is authenticated. A
    refused call gets ``UNAUTHENTICATED``; an accepted one runs with what the authenticator
    established (``ClientInfo.auth``)."""

    def __init__(self, auth: ServerAuth) -> None:
        self.auth = auth

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler  # UNIMPLEMENTED
        inner = handler.unary_unary
        auth = self.auth

        async def guarded(requests: Any, context: grpc.aio.ServicerContext) -> Any:
            headers: dict[str, str] = {}
            for key, value in context.invocation_metadata() or ():
                if isinstance(value, bytes):  # -bin metadata
                    value = value.decode("latin-1")
                headers.setdefault(key.lower(), value)
            try:
                info = await auth.check(headers, "grpc", context.peer() or "")
            except AuthenticationError as exc:
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(exc))
            request = None
            async for message in requests:  # a unary call: one message
                request = message
                break
            if request is None:
                await context.abort(grpc.StatusCode.INTERNAL, "no request message")
            token = _auth_info.set(info)
            try:
                return await inner(request, context)
            finally:
                _auth_info.reset(token)

        return grpc.stream_unary_rpc_method_handler(guarded)


class GRPCServer:
    """The gRPC side of one ``otlp`` receiver."""

    def __init__(
        self, receiver: OTLPReceiver, config: GRPCServerConfig, auth: ServerAuth | None = None
    ) -> None:
        self.receiver = receiver
        self.config = config
        self.auth = auth
        self._server: Any = None

    def _handler(self, signal: Signal) -> Any:
        receiver = self.receiver

        async def export(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            client = ClientInfo(
                context.peer() or "", receiver.settings.name, "grpc", _auth_info.get() or {}
            )
            if context.cancelled():  # reset by the client before it was taken: not ingested
                receiver.settings.telemetry.refused_request("grpc", "cancelled")
                return EMPTY_RESPONSE
            try:
                with client_context(client):
                    await receiver.push(signal, request, "grpc", context.peer)
            except PermanentError as exc:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            except RetryableError as exc:
                code = (
                    grpc.StatusCode.RESOURCE_EXHAUSTED
                    if exc.resource_exhausted
                    else grpc.StatusCode.UNAVAILABLE
                )
                delay = exc.retry_after if exc.retry_after is not None else DEFAULT_RETRY_DELAY
                await context.abort(
                    code, str(exc), trailing_metadata=retry_trailers(code, str(exc), delay)
                )
            except Exception as exc:  # a bug downstream must not kill the server
                receiver.settings.log_limited(
                    logging.ERROR,
                    "unexpected error while receiving %s",
                    signal,
                    key="unexpected",
                    exc_info=exc,
                    extra={"client": client.addr},
                )
                await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {exc}")
            return EMPTY_RESPONSE

        return grpc.unary_unary_rpc_method_handler(export)

    def options(self) -> list[tuple[str, Any]]:
        """grpcio's channel arguments for the limits it has (see docs/otlp.md for those it has
        not: the process-wide budget, the reset rate, read and write timeouts, the descriptor
        reserve)."""
        cfg = self.config
        params = cfg.keepalive.server_parameters
        policy = cfg.keepalive.enforcement_policy

        def ms(seconds: float) -> int:
            return max(1, int(seconds * 1000))

        options: list[tuple[str, Any]] = [
            ("grpc.max_receive_message_length", cfg.max_recv_msg_size_mib << 20),
            ("grpc.so_reuseport", 1 if netedge.REUSE_PORT else 0),
            ("grpc.max_allowed_incoming_connections", cfg.max_connections),
            ("grpc.max_metadata_size", cfg.max_header_list_size),
            ("grpc.absolute_max_metadata_size", cfg.max_header_list_size),
            ("grpc.keepalive_time_ms", ms(params.time or 7200.0)),
            ("grpc.keepalive_timeout_ms", ms(params.timeout or 20.0)),
            ("grpc.http2.min_ping_interval_without_data_ms", ms(policy.min_time or 300.0)),
            ("grpc.keepalive_permit_without_calls", int(policy.permit_without_stream)),
            ("grpc.http2.max_ping_strikes", 2),
        ]
        if cfg.handshake_timeout:
            options.append(("grpc.server_handshake_timeout_ms", ms(cfg.handshake_timeout)))
        if params.max_connection_idle:
            options.append(("grpc.max_connection_idle_ms", ms(params.max_connection_idle)))
        if params.max_connection_age:
            options.append(("grpc.max_connection_age_ms", ms(params.max_connection_age)))
        if params.max_connection_age_grace:
            options.append(
                ("grpc.max_connection_age_grace_ms", ms(params.max_connection_age_grace))
            )
        if cfg.max_concurrent_streams:
            options.append(("grpc.max_concurrent_streams", cfg.max_concurrent_streams))
        return options

    async def start(self) -> None:
        interceptors = [AuthInterceptor(self.auth)] if self.auth is not None else None
        server = grpc.aio.server(options=self.options(), interceptors=interceptors)
        for signal in self.receiver.consumers:
            server.add_generic_rpc_handlers(
                (
                    grpc.method_handlers_generic_handler(
                        SERVICES[signal], {"Export": self._handler(signal)}
                    ),
                )
            )
        host, port = split_endpoint(self.config.endpoint)
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        tls = self.config.tls
        creds = server_credentials(tls) if tls is not None else None
        try:
            if creds is not None:
                bound = server.add_secure_port(address, creds)
            else:
                bound = server.add_insecure_port(address)
        except RuntimeError as exc:
            raise OSError(f"cannot listen on {self.config.endpoint}: {exc}") from exc
        if not bound:
            raise OSError(f"cannot listen on {self.config.endpoint}")
        await server.start()
        self._server = server
        self.receiver.settings.logger.info(
            "OTLP/gRPC listening", extra={"endpoint": self.config.endpoint}
        )

    async def stop(self, grace: float = 10.0) -> None:
        if self._server is not None:
            server, self._server = self._server, None
            await server.stop(grace)
