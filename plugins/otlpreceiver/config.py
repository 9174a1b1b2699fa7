"""Config of the ``otlp`` receiver, with the Collector's option names."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, model_validator

from pipeline import ConfigModel, Endpoint, ServerAuthConfig, ServerTLSConfig, Signal
from pipeline.configtypes import ProtocolsReceiverConfig

__all__ = ["GRPCServerConfig", "HTTPServerConfig", "OTLPReceiverConfig", "ServerTLSConfig"]


class GRPCServerConfig(ConfigModel):
    """``protocols.grpc``."""

    endpoint: Endpoint = "localhost:4317"
    transport: str = Field("tcp", pattern="^tcp$")
    max_recv_msg_size_mib: int = Field(4, ge=1)
    max_concurrent_streams: int = Field(0, ge=0)
    tls: ServerTLSConfig | None = None
    auth: ServerAuthConfig | None = None
    """``{authenticator: <extension>}``: calls are refused (``UNAUTHENTICATED``) unless it
    authenticates their metadata."""


class CORSConfig(ConfigModel):
    """``protocols.http.cors``: which browser origins may send, as in the Collector."""

    allowed_origins: list[str] = []
    """Origins allowed to send (``https://*.example.com`` wildcards, ``*`` for any)."""
    allowed_headers: list[str] = []
    """Request headers allowed beyond the CORS-safelisted ones (``*`` for any)."""
    max_age: int = Field(0, ge=0)
    """Seconds a browser may cache a preflight answer (0: not sent)."""


class HTTPServerConfig(ConfigModel):
    """``protocols.http``."""

    endpoint: Endpoint = "localhost:4318"
    traces_url_path: str = Field("/v1/traces", pattern="^/")
    metrics_url_path: str = Field("/v1/metrics", pattern="^/")
    logs_url_path: str = Field("/v1/logs", pattern="^/")
    max_request_body_size: int = Field(20 * 1024 * 1024, ge=1)
    """Largest body accepted, in bytes, both as sent and once decompressed."""
    max_json_values: int = Field(1_000_000, ge=1)
    """JSON values (objects, arrays, strings, numbers) one OTLP/JSON body may hold, counted
    before it is parsed; more: 413."""
    cors: CORSConfig | None = None
    tls: ServerTLSConfig | None = None
    auth: ServerAuthConfig | None = None
    """``{authenticator: <extension>}``: requests are refused (``401``) unless it
    authenticates their headers."""

    @model_validator(mode="after")
    def _distinct_paths(self) -> HTTPServerConfig:
        paths = {
            "traces_url_path": self.traces_url_path,
            "metrics_url_path": self.metrics_url_path,
            "logs_url_path": self.logs_url_path,
        }
        for name, path in paths.items():
            same = [other for other, p in paths.items() if p == path and other != name]
            if same:
                raise ValueError(f"{name} and {same[0]} must differ (both are {path!r})")
        return self

    def url_path(self, signal: Signal) -> str:
        """The path a signal is served on."""
        return {
            Signal.TRACES: self.traces_url_path,
            Signal.METRICS: self.metrics_url_path,
            Signal.LOGS: self.logs_url_path,
        }[signal]


class ProtocolsConfig(ConfigModel):
    """``protocols``: a protocol is served when its section is present (even empty)."""

    grpc: GRPCServerConfig | None = None
    http: HTTPServerConfig | None = None


class OTLPReceiverConfig(ProtocolsReceiverConfig):
    """``receivers.otlp``."""

    receiver_title: ClassVar[str] = "the OTLP receiver"
    protocol_example: ClassVar[str] = "protocols: {grpc: , http: }"

    protocols: ProtocolsConfig = ProtocolsConfig()
