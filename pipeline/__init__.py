"""pipeline: a telemetry gateway for AI-agent systems, in the shape of the OpenTelemetry
Collector.

This module is the public API for plugin authors; everything else is internal. See
:mod:`pipeline.hookspecs` for how a plugin registers components.
"""

from pipeline._version import __version__
from pipeline.client import ClientInfo, current_client
from pipeline.component import (
    Component,
    ComponentID,
    CreateSettings,
    Host,
    Kind,
    Stability,
)
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
from pipeline.pdata import Metrics, Payload, Signal, Traces, payload_type
from pipeline.registry import Registry
from pipeline.tasks import supervise
from pipeline.telemetry import ComponentTelemetry

__all__ = [
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
    "MalformedDataError",
    "Metrics",
    "Payload",
    "PermanentError",
    "ProcessorFactory",
    "QueueCodec",
    "QueueConfig",
    "ReceiverFactory",
    "Registry",
    "RequestTooLargeError",
    "RetryConfig",
    "RetryableError",
    "Seconds",
    "SharedComponents",
    "Signal",
    "Stability",
    "Traces",
    "__version__",
    "current_client",
    "hookimpl",
    "parse_duration",
    "payload_type",
    "split_endpoint",
    "supervise",
]
