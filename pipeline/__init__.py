"""pipeline: a telemetry gateway for AI-agent systems, in the shape of the OpenTelemetry
Collector.

This module is the public API for plugin authors, with :mod:`pipeline.status` (what the host
tells components about the service, and the provider interfaces); everything else is internal.
See :mod:`pipeline.hookspecs` for how a plugin registers components.
"""

from pipeline._version import __version__
from pipeline.auth import (
    AuthenticationError,
    ClientAuthConfig,
    ClientAuthenticator,
    ServerAuth,
    ServerAuthConfig,
    ServerAuthenticator,
    client_authenticator,
)
from pipeline.client import ClientInfo, current_client
from pipeline.component import (
    Component,
    ComponentID,
    CreateSettings,
    Host,
    Kind,
    Stability,
)
from pipeline.configtls import ServerTLSConfig, server_ssl_context
from pipeline.configtypes import (
    ComponentConfig,
    ConfigModel,
    Duration,
    EmptyConfig,
    Endpoint,
    ListenEndpoint,
    Seconds,
    parse_duration,
    split_endpoint,
)
from pipeline.consumer import Consumer, FanOut
from pipeline.durability import HeldAcks
from pipeline.errors import (
    ConfigError,
    ConfigErrors,
    ConsumeError,
    DataDroppedError,
    MalformedDataError,
    PermanentError,
    RequestTooLargeError,
    RetryableError,
)
from pipeline.exporterhelper import (
    ExporterHelper,
    ExporterHelperConfig,
    QueueCodec,
    QueueConfig,
    RetryConfig,
)
from pipeline.factory import (
    ConnectorFactory,
    ExporterFactory,
    ExtensionFactory,
    ProcessorFactory,
    ReceiverFactory,
    SharedComponents,
)
from pipeline.hookspecs import hookimpl
from pipeline.pdata import Logs, Metrics, Payload, Signal, Traces, payload_type
from pipeline.prepared import PreparedPayload, PreparedQueueCodec
from pipeline.registry import Registry
from pipeline.status import Status
from pipeline.tasks import supervise
from pipeline.telemetry import ComponentTelemetry

__all__ = [
    "AuthenticationError",
    "ClientAuthConfig",
    "ClientAuthenticator",
    "ClientInfo",
    "Component",
    "ComponentConfig",
    "ComponentID",
    "ComponentTelemetry",
    "ConfigError",
    "ConfigErrors",
    "ConfigModel",
    "ConnectorFactory",
    "ConsumeError",
    "Consumer",
    "CreateSettings",
    "DataDroppedError",
    "Duration",
    "EmptyConfig",
    "Endpoint",
    "ExporterFactory",
    "ExporterHelper",
    "ExporterHelperConfig",
    "ExtensionFactory",
    "FanOut",
    "HeldAcks",
    "Host",
    "Kind",
    "ListenEndpoint",
    "Logs",
    "MalformedDataError",
    "Metrics",
    "Payload",
    "PermanentError",
    "PreparedPayload",
    "PreparedQueueCodec",
    "ProcessorFactory",
    "QueueCodec",
    "QueueConfig",
    "ReceiverFactory",
    "Registry",
    "RequestTooLargeError",
    "RetryConfig",
    "RetryableError",
    "Seconds",
    "ServerAuth",
    "ServerAuthConfig",
    "ServerAuthenticator",
    "ServerTLSConfig",
    "SharedComponents",
    "Signal",
    "Stability",
    "Status",
    "Traces",
    "__version__",
    "client_authenticator",
    "current_client",
    "hookimpl",
    "parse_duration",
    "payload_type",
    "server_ssl_context",
    "split_endpoint",
    "supervise",
]
