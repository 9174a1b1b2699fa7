"""A test-only exporter built on the shared ExporterHelper: POSTs each encoded payload to
``url``. Used to drive real queue growth and export failures in health tests."""

from __future__ import annotations

import aiohttp

from pipeline import (
    CreateSettings,
    ExporterFactory,
    ExporterHelper,
    ExporterHelperConfig,
    Host,
    Payload,
    PermanentError,
    RetryableError,
    Signal,
    Stability,
)
from pipeline.pluginmanager import default_registry


class PostExporterConfig(ExporterHelperConfig):
    url: str = "http://127.0.0.1:1/"


class PostExporter(ExporterHelper):
    def __init__(
        self, settings: CreateSettings, config: PostExporterConfig, signal: Signal
    ) -> None:
        super().__init__(settings, signal, config, self._post)
        self.url = config.url
        self.session: aiohttp.ClientSession | None = None

    async def start(self, host: Host) -> None:
        self.session = aiohttp.ClientSession()
        await super().start(host)

    async def shutdown(self) -> None:
        try:
            await super().shutdown()
        finally:
            if self.session is not None:
                await self.session.close()
                self.session = None

    async def _post(self, payload: Payload) -> None:
        assert self.session is not None
        try:
            async with self.session.post(self.url, data=payload.to_bytes()) as resp:
                if resp.status >= 500:
                    raise RetryableError(f"HTTP {resp.status}")
                if resp.status >= 400:
                    raise PermanentError(f"HTTP {resp.status}")
        except aiohttp.ClientError as exc:
            raise RetryableError(str(exc)) from exc


class PostExporterFactory(ExporterFactory):
    type = "test_post"
    config_class = PostExporterConfig
    stability = {Signal.TRACES: Stability.DEVELOPMENT, Signal.METRICS: Stability.DEVELOPMENT}

    def create_traces(self, settings: CreateSettings, config: PostExporterConfig) -> PostExporter:
        return PostExporter(settings, config, Signal.TRACES)

    def create_metrics(self, settings: CreateSettings, config: PostExporterConfig) -> PostExporter:
        return PostExporter(settings, config, Signal.METRICS)


def register() -> None:
    """Add the ``test_post`` exporter to the process-wide registry (once)."""
    from pipeline import Kind

    registry = default_registry()
    if registry.get(Kind.EXPORTER, "test_post") is None:
        registry.register(PostExporterFactory())
