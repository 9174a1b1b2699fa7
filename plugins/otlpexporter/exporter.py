"""The exporter component shared by ``otlp`` and ``otlphttp``: a sender behind the engine's
exporter helper (sending queue, retries with backoff, timeout, counts)."""

from __future__ import annotations

from typing import Any, Protocol

from pipeline import (
    ClientAuthenticator,
    Component,
    CreateSettings,
    ExporterHelper,
    ExporterHelperConfig,
    Host,
    Payload,
    Signal,
    client_authenticator,
)
from pipeline.compression import Chunks


class Sender(Protocol):
    """What an OTLP exporter needs from its transport."""

    authenticator: ClientAuthenticator | None
    """Set before ``start``: its ``request_headers()`` go with every request."""
    plaintext: bool
    """Whether requests travel without TLS."""

    async def start(self) -> None: ...

    async def send(self, signal: Signal, data: Chunks) -> None:
        """Send one encoded request, given whole or in consecutive pieces (a merged
        payload's :meth:`~pipeline.Payload.encoded_parts`, compressed piece by piece)."""

    async def close(self) -> None: ...


class OTLPExporter(Component):
    """One signal's exporter: consumes payloads and sends their encoded bytes, never decoding
    them, through :class:`pipeline.ExporterHelper`."""

    mutates_data = False

    def __init__(
        self,
        settings: CreateSettings,
        config: ExporterHelperConfig,
        signal: Signal,
        sender: Sender,
    ) -> None:
        self.settings = settings
        self.config = config
        self.signal = signal
        self.sender = sender
        self.helper = ExporterHelper(
            settings,
            signal,
            config,
            self._send,
            max_request_bytes=getattr(config, "max_request_bytes", 0),
        )

    async def _send(self, payload: Payload) -> None:
        # the pieces of a merged batch go to the compressor as they are: no joined copy
        await self.sender.send(self.signal, payload.encoded_parts())

    async def consume(self, data: Payload) -> None:
        await self.helper.consume(data)

    async def start(self, host: Host) -> None:
        auth_config: Any = getattr(self.config, "auth", None)
        auth = client_authenticator(host, auth_config, self.settings.name)
        if auth is not None:
            self.sender.authenticator = auth
            if self.sender.plaintext:
                self.settings.logger.warning(
                    "credentials of %s are sent without TLS: anyone on the path can read them",
                    auth_config.authenticator,
                )
        await self.sender.start()
        await self.helper.start(host)

    async def shutdown(self) -> None:
        try:
            await self.helper.shutdown()
        finally:
            await self.sender.close()
