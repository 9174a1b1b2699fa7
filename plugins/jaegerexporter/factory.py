"""Factory of the ``jaeger`` exporter."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pipeline import (
    Component,
    ConfigError,
    CreateSettings,
    ExporterFactory,
    Host,
    Kind,
    Payload,
    Signal,
    Stability,
)
from plugins.jaegerexporter.config import OTLP_EXPORTER_TYPES, JaegerExporterConfig

if TYPE_CHECKING:
    pass


class DelegatingExporter(Component):
    """The ``jaeger`` exporter for the OTLP protocols: the ``otlp`` / ``otlphttp`` exporter
    does the work. A shutdown before start is a no-op here, so that it cannot leave the
    inner exporter closed for good."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.mutates_data = bool(getattr(inner, "mutates_data", False))
        self._started = False

    async def consume(self, data: Payload) -> None:
        if data.item_count():  # nothing to send for an empty payload (as the Thrift paths)
            await self.inner.consume(data)

    async def start(self, host: Host) -> None:
        await self.inner.start(host)
        self._started = True

    async def shutdown(self) -> None:
        if self._started:
            self._started = False
            await self.inner.shutdown()


class JaegerExporterFactory(ExporterFactory):
    type = "jaeger"
    config_class = JaegerExporterConfig
    description = (
        "Sends traces to Jaeger: OTLP (gRPC or HTTP, Jaeger 1.35+), Thrift over HTTP to the "
        "collector, or compact Thrift over UDP to the agent."
    )
    stability = {Signal.TRACES: Stability.BETA}

    def create_default_config(self) -> JaegerExporterConfig:
        # OTLP (the default protocol) needs the otlp exporter; without it, the default
        # config a contract test asks for uses Thrift over UDP (which needs no peer).
        from pipeline.pluginmanager import default_registry

        if default_registry().get(Kind.EXPORTER, OTLP_EXPORTER_TYPES["otlp_grpc"]) is None:
            return JaegerExporterConfig(protocol="thrift_compact")
        return JaegerExporterConfig()

    def create_traces(self, settings: CreateSettings, config: JaegerExporterConfig) -> Any:
        if config.protocol in OTLP_EXPORTER_TYPES:
            # The OTLP exporters do the work; found through the registry so that this plugin
            # does not depend on their code.
            from pipeline.pluginmanager import default_registry

            type_ = OTLP_EXPORTER_TYPES[config.protocol]
            factory = default_registry().get(Kind.EXPORTER, type_)
            if not isinstance(factory, ExporterFactory):
                raise ConfigError(
                    f"exporters.{settings.name}.protocol",
                    f"protocol {config.protocol} needs the {type_!r} exporter, which is not "
                    "installed in this gateway",
                )
            inner_config = config.otlp_exporter_config()
            return DelegatingExporter(factory.create(Signal.TRACES, settings, inner_config))
        from plugins.jaegerexporter.exporter import JaegerThriftExporter

        return JaegerThriftExporter(settings, config)
