"""Config of the ``otlp`` receiver, with the Collector's option names."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, model_validator

from pipeline import (
    ConfigModel,
    Duration,
    Endpoint,
    Seconds,
    ServerAuthConfig,
    ServerTLSConfig,
    Signal,
)
from pipeline.configtypes import ProtocolsReceiverConfig
from pipeline.netedge import HTTPServerLimits, ServerLimits

__all__ = ["GRPCServerConfig", "HTTPServerConfig", "OTLPReceiverConfig", "ServerTLSConfig"]


class KeepaliveServerParameters(ConfigModel):
    """``keepalive.server_parameters``, as grpc-go's (0 for a duration: its default)."""

    max_connection_idle: Duration = Seconds(0)
    """A connection without a call for this long gets GOAWAY and is closed; 0: never."""
    max_connection_age: Duration = Seconds(0)
    """A connection this old (+-10 %) gets GOAWAY; 0: never."""
    max_connection_age_grace: Duration = Seconds(0)
    """After the age's GOAWAY, calls in progress get this long; 0: as long as they take."""
    time: Duration = Seconds(7200)
    """After this long without a frame from the client, the server pings it (0: 2h)."""
    timeout: Duration = Seconds(20)
    """A ping not answered within this closes the connection (0: 20s)."""


class KeepaliveEnforcementPolicy(ConfigModel):
    """``keepalive.enforcement_policy``: how often clients may ping (grpc-go's rule: a third
    ping closer than ``min_time`` to the one before gets GOAWAY ENHANCE_YOUR_CALM
    "too_many_pings")."""

    min_time: Duration = Seconds(300)
    """0: 5m."""
    permit_without_stream: bool = False
    """Allow pings while no call is in progress (else they may come every 2h only)."""


class KeepaliveServerConfig(ConfigModel):
    """``keepalive``."""

    server_parameters: KeepaliveServerParameters = KeepaliveServerParameters()
    enforcement_policy: KeepaliveEnforcementPolicy = KeepaliveEnforcementPolicy()


class GRPCServerConfig(ServerLimits):
    """``protocols.grpc``."""

    endpoint: Endpoint = "localhost:4317"
    transport: str = Field("tcp", pattern="^tcp$")
    max_recv_msg_size_mib: int = Field(4, ge=1)
    max_concurrent_streams: int = Field(0, ge=0)
    read_buffer_size: int = Field(0, ge=0)
    """Bytes read from a connection at once (0: 256 KiB); grpcio's server ignores it."""
    write_buffer_size: int = Field(0, ge=0)
    """Bytes of answers queued for a connection before it stops being read (0: 64 KiB)."""
    keepalive: KeepaliveServerConfig = KeepaliveServerConfig()
    tls: ServerTLSConfig | None = None
    auth: ServerAuthConfig | None = None
    """``{authenticator: <extension>}``: calls are refused (``UNAUTHENTICATED``) unless it
    authenticates their metadata."""
    # the gateway's own (the Collector has none of these)
    max_header_list_size: int = Field(16384, ge=1024, le=1 << 24)
    """Bytes of a call's header block (names + values + 32 per field, as HTTP/2's
    SETTINGS_MAX_HEADER_LIST_SIZE); a larger one resets the call."""
    max_stream_resets_per_second: float = Field(100.0, ge=0)
    """Stream resets (sent or received: Rapid Reset, CVE-2023-44487) a connection may cause
    per second, in bursts of twice that; beyond, GOAWAY ENHANCE_YOUR_CALM. 0: no limit."""
    read_header_timeout: Duration = Seconds(10)
    """A call's header block must arrive within this; 0: no limit."""
    read_timeout: Duration = Seconds(30)
    """A call's whole request must arrive within this (else it is reset, CANCEL)."""
    write_timeout: Duration = Seconds(30)
    """A connection whose answers make no progress for this long (the client does not
    read, or keeps its flow-control window shut) is closed; 0: never."""


class CORSConfig(ConfigModel):
    """``protocols.http.cors``: which browser origins may send, as in the Collector."""

    allowed_origins: list[str] = []
    """Origins allowed to send (``https://*.example.com`` wildcards, ``*`` for any)."""
    allowed_headers: list[str] = []
    """Request headers allowed beyond the CORS-safelisted ones (``*`` for any)."""
    max_age: int = Field(0, ge=0)
    """Seconds a browser may cache a preflight answer (0: not sent)."""


class HTTPServerConfig(HTTPServerLimits):
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
