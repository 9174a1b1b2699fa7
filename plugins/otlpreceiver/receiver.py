"""The ``otlp`` receiver instance: one per config, serving every configured protocol."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pipeline import (
    Component,
    Consumer,
    CreateSettings,
    Host,
    Payload,
    Signal,
    payload_type,
)
from plugins._native import load_h2
from plugins.otlpreceiver.config import OTLPReceiverConfig


class OTLPReceiver(Component):
    """Owns the protocol servers; each hands decoded-enough payloads to :meth:`push`."""

    def __init__(
        self,
        settings: CreateSettings,
        config: OTLPReceiverConfig,
        on_shutdown: Callable[[OTLPReceiverConfig], None] | None = None,
    ) -> None:
        self.settings = settings
        self.config = config
        self.consumers: dict[Signal, Consumer] = {}
        self._servers: list[Any] = []
        self._started = False
        self._on_shutdown = on_shutdown

    def set_consumer(self, signal: Signal, consumer: Consumer) -> None:
        self.consumers[signal] = consumer

    async def push(self, signal: Signal, data: bytes) -> int:
        """Validate an encoded request and pass it on; returns the item count.

        Raises ``PermanentError`` naming the field for a request a full parse would refuse or
        whose ids have the wrong length (:meth:`pipeline.Payload.validate`: one walk in C,
        which also counts the items), and whatever the pipeline raises (``RetryableError`` when
        it pushes back).
        """
        payload: Payload = payload_type(signal)(data)
        try:
            payload.validate()
        except Exception:
            self.count_malformed(signal)
            raise
        return await self.push_payload(signal, payload)

    def count_malformed(self, signal: Signal) -> None:
        """Count a request refused because it could not be decoded."""
        self.settings.telemetry.service.counter(
            "otelcol_receiver_malformed_requests",
            "Requests refused because they could not be decoded.",
            ("receiver", "otel_signal"),
        ).labels(self.settings.name, str(signal)).inc()

    def count_rejected(self, signal: Signal, n: int) -> None:
        """Count items left out of an accepted request (a partial success)."""
        self.settings.telemetry.refused(signal, n)

    async def push_payload(self, signal: Signal, payload: Payload) -> int:
        """Pass on a payload already checked (or built from a decoded message)."""
        n = payload.item_count()
        if n:
            await self.consumers[signal].consume(payload)
        return n

    async def start(self, host: Host) -> None:
        if self._started:
            return
        self._started = True
        protocols = self.config.protocols
        if protocols.grpc is not None:
            server: Any
            # the native server (plugins/otlpreceiver/grpc_native.py) when it was built, unless
            # PIPELINE_GRPC_SERVER=grpcio asks for grpcio's
            h2server = load_h2("PIPELINE_GRPC_SERVER")
            if h2server is not None:
                from plugins.otlpreceiver.grpc_native import NativeGRPCServer

                server = NativeGRPCServer(self, protocols.grpc, h2server)
            else:
                from plugins.otlpreceiver.grpc_server import GRPCServer

                server = GRPCServer(self, protocols.grpc)
            await server.start()
            self._servers.append(server)
        if protocols.http is not None:
            from plugins.otlpreceiver.http_server import HTTPServer

            http_server = HTTPServer(self, protocols.http)
            try:
                await http_server.start()
            except BaseException:
                await self.shutdown()
                raise
            self._servers.append(http_server)

    async def shutdown(self) -> None:
        """Stop taking requests; requests in progress finish first."""
        servers, self._servers = self._servers, []
        for server in servers:
            await server.stop()
        if self._on_shutdown is not None:
            self._on_shutdown(self.config)
