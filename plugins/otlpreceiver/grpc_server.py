"""OTLP/gRPC: ``TraceService/Export`` and ``MetricsService/Export`` on raw bytes.

The request is never parsed into Python objects here: the handler gets the encoded bytes,
checks them as a full parse would (:meth:`pipeline.Payload.validate`) and passes them on.
Answers follow the OTLP specification: ``INVALID_ARGUMENT`` for data that cannot be decoded,
``UNAVAILABLE`` (or ``RESOURCE_EXHAUSTED`` for the gateway's own limits) with ``RetryInfo`` when
the pipeline pushes back.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from google.rpc import code_pb2

from pipeline import PermanentError, RetryableError, Signal, split_endpoint
from plugins.otlpreceiver.common import retry_status
from plugins.otlpreceiver.config import GRPCServerConfig, ServerTLSConfig

if TYPE_CHECKING:
    from plugins.otlpreceiver.receiver import OTLPReceiver

SERVICES = {
    Signal.TRACES: "opentelemetry.proto.collector.trace.v1.TraceService",
    Signal.METRICS: "opentelemetry.proto.collector.metrics.v1.MetricsService",
}
EMPTY_RESPONSE = b""  # an ExportServiceResponse with no partial_success
DEFAULT_RETRY_DELAY = 1.0


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


class GRPCServer:
    """The gRPC side of one ``otlp`` receiver."""

    def __init__(self, receiver: OTLPReceiver, config: GRPCServerConfig) -> None:
        self.receiver = receiver
        self.config = config
        self._server: Any = None

    def _handler(self, signal: Signal) -> Any:
        receiver = self.receiver
        logger = receiver.settings.logger

        async def export(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            try:
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
                logger.exception("unexpected error while receiving %s", signal)
                await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {exc}")
            return EMPTY_RESPONSE

        return grpc.unary_unary_rpc_method_handler(export)

    async def start(self) -> None:
        options = [
            ("grpc.max_receive_message_length", self.config.max_recv_msg_size_mib << 20),
            ("grpc.so_reuseport", 0),
        ]
        if self.config.max_concurrent_streams:
            options.append(("grpc.max_concurrent_streams", self.config.max_concurrent_streams))
        server = grpc.aio.server(options=options)
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
