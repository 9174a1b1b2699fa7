"""Sending encoded OTLP requests over gRPC without decoding them.

:class:`OTLPGrpcSender` is the reusable part: it owns a ``grpc.aio`` channel whose calls take
and return raw bytes, and maps gRPC outcomes to the OTLP specification's split: retryable codes
(``CANCELLED``, ``DEADLINE_EXCEEDED``, ``ABORTED``, ``OUT_OF_RANGE``, ``UNAVAILABLE``,
``DATA_LOSS``, and ``RESOURCE_EXHAUSTED`` only when the server sent ``RetryInfo``) raise
:class:`~pipeline.RetryableError` with the server's delay; every other code raises
:class:`~pipeline.PermanentError`. A refusal because the message is larger than the server (or
this client) accepts raises :class:`~pipeline.RequestTooLargeError`, whatever its code: gRPC
C-core and grpc-go answer ``RESOURCE_EXHAUSTED`` "received message larger than max", tonic
(rotel) ``OUT_OF_RANGE`` "decoded message length too large"; the exporter helper then sends the
request in halves. A response with ``partial_success`` is counted and logged.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import grpc

from pipeline import (
    ClientAuthenticator,
    ComponentTelemetry,
    Signal,
)
from pipeline.compression import Chunks, joined
from plugins.otlpexporter.config import ClientTLSConfig, OTLPExporterConfig
from plugins.otlpexporter.grpcstatus import (
    MAX_MESSAGE,
    METHODS,
    failure,
    parse_partial_success,
    record_partial_success,
    retry_delay_from_status,
)


def retry_delay_from_trailers(metadata: Any) -> float | None:
    """The ``RetryInfo.retry_delay`` (seconds) carried in ``grpc-status-details-bin``."""
    if not metadata:
        return None
    for key, value in metadata:
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            return retry_delay_from_status(value)
    return None


def grpc_credentials(tls: ClientTLSConfig) -> grpc.ChannelCredentials:
    """Channel credentials from the ``tls`` files."""
    return grpc.ssl_channel_credentials(
        root_certificates=Path(tls.ca_file).read_bytes() if tls.ca_file else None,
        private_key=Path(tls.key_file).read_bytes() if tls.key_file else None,
        certificate_chain=Path(tls.cert_file).read_bytes() if tls.cert_file else None,
    )


class OTLPGrpcSender:
    """Sends encoded ``Export*ServiceRequest`` bytes to one OTLP/gRPC endpoint.

    Use: ``await sender.start()`` (in the event loop), ``await sender.send(signal, data)`` as
    often as needed, ``await sender.close()``. ``send`` raises ``RetryableError`` or
    ``PermanentError`` as described in the module docstring.
    """

    def __init__(
        self,
        config: OTLPExporterConfig,
        logger: logging.Logger | logging.LoggerAdapter[logging.Logger],
        telemetry: ComponentTelemetry | None = None,
    ) -> None:
        self.config = config
        self.logger = logger
        self.telemetry = telemetry
        self.authenticator: ClientAuthenticator | None = None
        self.plaintext = config.insecure
        self._channel: grpc.aio.Channel | None = None
        self._calls: dict[Signal, Any] = {}
        self._metadata = tuple((k.lower(), v) for k, v in config.headers.items())
        self._compression = (
            grpc.Compression.Gzip
            if config.compression == "gzip"
            else grpc.Compression.NoCompression
        )

    async def start(self) -> None:
        if self._channel is not None:
            return
        options: list[tuple[str, Any]] = [
            ("grpc.max_send_message_length", MAX_MESSAGE),
            ("grpc.max_receive_message_length", MAX_MESSAGE),
            # Reconnect soon after a backend comes back (gRPC's default backoff grows to 120s).
            ("grpc.initial_reconnect_backoff_ms", 500),
            ("grpc.max_reconnect_backoff_ms", 5000),
        ]
        if self.config.balancer_name:
            options.append(
                (
                    "grpc.service_config",
                    '{"loadBalancingConfig": [{"%s": {}}]}' % self.config.balancer_name,  # noqa: UP031
                )
            )
        if self.config.authority:
            options.append(("grpc.default_authority", self.config.authority))
        tls = self.config.tls
        if tls.server_name_override:
            options.append(("grpc.ssl_target_name_override", tls.server_name_override))
        if self.config.insecure:
            channel = grpc.aio.insecure_channel(self.config.target, options=options)
        else:
            channel = grpc.aio.secure_channel(
                self.config.target, grpc_credentials(tls), options=options
            )
        self._channel = channel
        # request_serializer/response_deserializer None: bytes go through untouched.
        self._calls = {signal: channel.unary_unary(method) for signal, method in METHODS.items()}

    async def send(self, signal: Signal, data: Chunks) -> None:
        """Send one encoded request (whole or in pieces: grpcio compresses one buffer, so
        pieces are joined); raises ``RetryableError`` / ``PermanentError``."""
        if self._channel is None:
            await self.start()
        metadata = self._metadata
        if self.authenticator is not None:
            extra = await self.authenticator.request_headers()
            metadata = metadata + tuple((k.lower(), v) for k, v in extra.items())
        try:
            response = await self._calls[signal](
                joined(data),
                metadata=metadata or None,
                compression=self._compression,
                timeout=self.config.timeout or None,
            )
        except grpc.aio.AioRpcError as exc:
            raise self.error_for(exc) from None
        rejected, message = parse_partial_success(signal, response)
        record_partial_success(signal, rejected, message, self.telemetry, self.logger)

    def error_for(self, exc: grpc.aio.AioRpcError) -> Exception:
        """The OTLP specification's retryable/permanent split of a failed call."""
        delay = retry_delay_from_trailers(exc.trailing_metadata())
        return failure(self.config.endpoint, exc.code().value[0], exc.details(), delay)

    async def close(self) -> None:
        channel, self._channel = self._channel, None
        if channel is not None:
            await channel.close()
