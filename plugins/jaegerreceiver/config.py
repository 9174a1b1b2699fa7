"""Config of the ``jaeger`` receiver, in the Collector's shape."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field, model_validator

from pipeline import ConfigModel, Endpoint, ServerAuthConfig, ServerTLSConfig
from pipeline.configtypes import ProtocolsReceiverConfig
from pipeline.netedge import HTTPServerLimits
from plugins._jaegerthrift import DEFAULT_MAX_BATCH_ITEMS

MAX_UDP_PAYLOAD = 65507


class ThriftHTTPConfig(HTTPServerLimits):
    """``protocols.thrift_http``: the collector's ``POST /api/traces`` (with the connection
    limits and timeouts of :class:`pipeline.netedge.HTTPServerLimits`)."""

    endpoint: Endpoint = "localhost:14268"
    max_request_body_size: int = Field(20 * 1024 * 1024, ge=1024)
    """Bodies larger than this are refused with HTTP 413."""
    tls: ServerTLSConfig | None = None
    """HTTPS; with ``client_ca_file``, clients must present a certificate (mTLS)."""
    auth: ServerAuthConfig | None = None
    """``{authenticator: <extension>}``: requests are refused (``401``) unless it
    authenticates their headers."""
    max_batch_items: int = Field(DEFAULT_MAX_BATCH_ITEMS, ge=1)
    """Structs (spans, tags, logs, references) one batch may hold; more: HTTP 413."""


class ThriftUDPConfig(ConfigModel):
    """``protocols.thrift_compact`` / ``protocols.thrift_binary``: the agent's UDP ports."""

    endpoint: Endpoint
    queue_size: int = Field(1000, ge=1)
    """Datagrams waiting to be decoded; more are dropped (counted)."""
    max_packet_size: int = Field(65000, ge=512, le=MAX_UDP_PAYLOAD)
    """Datagrams larger than this are refused (counted)."""
    workers: int = Field(10, ge=1)
    """Datagrams handled at once."""
    socket_buffer_size: int = Field(0, ge=0)
    """``SO_RCVBUF`` in bytes; 0 keeps the system default."""
    max_batch_items: int = Field(DEFAULT_MAX_BATCH_ITEMS, ge=1)
    """Structs (spans, tags, logs, references) one datagram may hold; more: refused."""


class ThriftCompactConfig(ThriftUDPConfig):
    """``protocols.thrift_compact`` (UDP 6831)."""

    endpoint: Endpoint = "localhost:6831"


class ThriftBinaryConfig(ThriftUDPConfig):
    """``protocols.thrift_binary`` (UDP 6832)."""

    endpoint: Endpoint = "localhost:6832"


class ProtocolsConfig(ConfigModel):
    """``protocols``: a protocol is served when its section is present (even empty)."""

    thrift_http: ThriftHTTPConfig | None = None
    thrift_compact: ThriftCompactConfig | None = None
    thrift_binary: ThriftBinaryConfig | None = None

    @model_validator(mode="before")
    @classmethod
    def _unsupported(cls, data: Any) -> Any:
        if isinstance(data, dict) and "grpc" in data:
            raise ValueError(
                "grpc: Jaeger's gRPC protocol (api_v2, port 14250) is not supported by this "
                "receiver; Jaeger clients that speak gRPC also speak OTLP: use the otlp "
                "receiver, or thrift_http / thrift_compact / thrift_binary here"
            )
        return data


class JaegerReceiverConfig(ProtocolsReceiverConfig):
    """``receivers.jaeger``."""

    receiver_title: ClassVar[str] = "the Jaeger receiver"
    protocol_example: ClassVar[str] = (
        "protocols: {thrift_http: , thrift_compact: , thrift_binary: }"
    )
    udp_protocols: ClassVar[frozenset[str]] = frozenset({"thrift_compact", "thrift_binary"})

    protocols: ProtocolsConfig = ProtocolsConfig()
