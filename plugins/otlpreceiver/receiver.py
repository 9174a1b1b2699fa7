"""The ``otlp`` receiver instance: one per config, serving every configured protocol."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from google.protobuf.message import Message

from pipeline import (
    Component,
    Consumer,
    CreateSettings,
    Host,
    Payload,
    PermanentError,
    ServerAuth,
    Signal,
    payload_type,
)
from plugins._native import load_h2
from plugins.otlpreceiver.config import OTLPReceiverConfig


class MalformedRequestError(PermanentError):
    """A request the edge check refused (:meth:`pipeline.Payload.validate`); the receiver has
    counted and logged it already."""


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

    async def push(
        self,
        signal: Signal,
        data: bytes,
        transport: str = "grpc",
        peer: Callable[[], str] | None = None,
    ) -> int:
        """Validate an encoded request and pass it on; returns the item count.

        Raises :class:`MalformedRequestError` naming the field for a request that a full
        protobuf parse would refuse or whose ids have the wrong length
        (:meth:`pipeline.Payload.validate`: one walk in C, which also counts the items), counted
        and logged (rate-limited, with the sender ``peer``); and whatever the pipeline raises
        (``RetryableError`` when it pushes back). ``peer`` gives the sender's address, asked
        only for a refusal.
        """
        return await self._push_checked(signal, payload_type(signal)(data), transport, peer)

    async def push_message(
        self,
        signal: Signal,
        message: Message,
        transport: str = "http",
        peer: Callable[[], str] | None = None,
    ) -> int:
        """:meth:`push` for a request decoded from another encoding (OTLP/JSON): it is encoded
        (as it would be to be sent on) and the encoding checked, so that what another encoding
        can express and protobuf cannot parse back (nesting past its limit, ids of the wrong
        length) is refused the same way."""
        payload = payload_type(signal)(message.SerializeToString(), message=message)
        return await self._push_checked(signal, payload, transport, peer)

    async def _push_checked(
        self, signal: Signal, payload: Payload, transport: str, peer: Callable[[], str] | None
    ) -> int:
        try:
            payload.validate()
        except PermanentError as exc:
            self.refuse_malformed(signal, transport, str(exc), peer() if peer else "")
            raise MalformedRequestError(str(exc)) from None
        return await self.push_payload(signal, payload)

    def refuse_malformed(self, signal: Signal, transport: str, message: str, peer: str) -> None:
        """Count a request refused at the edge and log it, at most one line a second (with the
        count of those not logged)."""
        self.count_malformed(signal)
        self.settings.telemetry.refused_request(transport, "malformed")
        extra: dict[str, Any] = {"transport": transport, "otel_signal": str(signal)}
        if peer:
            extra["peer"] = peer
        self.settings.log_limited(
            logging.WARNING,
            "refused a malformed OTLP request: %s",
            message,
            key="malformed",
            extra=extra,
        )

    def count_malformed(self, signal: Signal) -> None:
        """Count a request refused because it could not be decoded."""
        self.settings.telemetry.service.counter(
            "otelcol_receiver_malformed_requests",
            "Requests refused because they could not be decoded.",
            ("receiver", "otel_signal"),
        ).labels(self.settings.name, str(signal)).inc()

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
        grpc_auth = http_auth = None
        if protocols.grpc is not None:
            grpc_auth = ServerAuth.from_config(self.settings, host, protocols.grpc.auth)
        if protocols.http is not None:
            http_auth = ServerAuth.from_config(self.settings, host, protocols.http.auth)
        if protocols.grpc is not None:
            server: Any
            # the native server (plugins/otlpreceiver/grpc_native.py) when it was built, unless
            # PIPELINE_GRPC_SERVER=grpcio asks for grpcio's
            h2server = load_h2("PIPELINE_GRPC_SERVER")
            if h2server is not None:
                from plugins.otlpreceiver.grpc_native import NativeGRPCServer

                server = NativeGRPCServer(self, protocols.grpc, h2server, grpc_auth)
            else:
                from plugins.otlpreceiver.grpc_server import GRPCServer

                server = GRPCServer(self, protocols.grpc, grpc_auth)
            await server.start()
            self._servers.append(server)
        if protocols.http is not None:
            from plugins.otlpreceiver.http_server import HTTPServer

            http_server = HTTPServer(self, protocols.http, http_auth)
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
