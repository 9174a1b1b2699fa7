"""The public API is small and deliberate: a change to it must be made here too."""

import pipeline

INTENDED = {
    "AuthenticationError",
    "ClientAuthConfig",
    "ClientAuthenticator",
    "ServerAuth",
    "ServerAuthConfig",
    "ServerAuthenticator",
    "ServerTLSConfig",
    "client_authenticator",
    "server_ssl_context",
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
    "RetryConfig",
    "RetryableError",
    "RequestTooLargeError",
    "Seconds",
    "SharedComponents",
    "Signal",
    "Stability",
    "Status",
    "Traces",
    "__version__",
    "current_client",
    "hookimpl",
    "parse_duration",
    "payload_type",
    "split_endpoint",
    "supervise",
}


def test_exported_names_are_the_intended_ones() -> None:
    assert set(pipeline.__all__) == INTENDED
    for name in pipeline.__all__:
        assert hasattr(pipeline, name), name


def test_public_classes_are_documented() -> None:
    for name in pipeline.__all__:
        obj = getattr(pipeline, name)
        if isinstance(obj, type):
            assert obj.__doc__, f"{name} has no docstring"
