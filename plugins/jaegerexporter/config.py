"""Config of the ``jaeger`` exporter."""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, PrivateAttr, ValidationError, model_validator

from pipeline import ClientAuthConfig, ExporterHelperConfig, Kind
from pipeline.configtypes import parse_endpoint

JaegerProtocol = Literal["otlp_grpc", "otlp_http", "thrift_http", "thrift_compact"]

DEFAULT_ENDPOINTS: dict[str, str] = {
    "otlp_grpc": "localhost:4317",
    "otlp_http": "localhost:4318",
    "thrift_http": "http://localhost:14268/api/traces",
    "thrift_compact": "localhost:6831",
}

# The exporter each OTLP protocol delegates to (created through the registry at run time).
OTLP_EXPORTER_TYPES: dict[str, str] = {"otlp_grpc": "otlp", "otlp_http": "otlphttp"}

MAX_UDP_PAYLOAD = 65507  # IPv4: 65535 - 20 (IP header) - 8 (UDP header)


class JaegerExporterConfig(ExporterHelperConfig):
    """``exporters.jaeger``.

    ``protocol``: ``otlp_grpc`` (default) or ``otlp_http`` for Jaeger 1.35 and later (the
    ``otlp`` / ``otlphttp`` exporters do the sending), ``thrift_http`` for the collector's
    ``POST /api/traces``, ``thrift_compact`` for the agent's UDP port.
    ``endpoint``: ``host:port`` for the OTLP protocols and ``thrift_compact``, the full URL
    for ``thrift_http``.
    """

    protocol: JaegerProtocol = "otlp_grpc"
    endpoint: str | None = None
    headers: dict[str, str] = {}
    """Extra HTTP headers (``thrift_http``) or request metadata (OTLP protocols)."""
    auth: ClientAuthConfig | None = None
    """``{authenticator: <extension>}``: credentials on every request (``thrift_http`` and
    the OTLP protocols; UDP has none)."""
    tls: dict[str, Any] | None = None
    """OTLP protocols: the ``tls`` section handed to the OTLP exporter as written."""
    otlp: dict[str, Any] = {}
    """OTLP protocols: any further options of the OTLP exporter (``compression``...)."""
    max_packet_size: int = Field(65000, ge=512, le=MAX_UDP_PAYLOAD)
    """``thrift_compact``: the largest UDP datagram sent; batches are split to fit."""

    _otlp_config: Any = PrivateAttr(default=None)

    @property
    def resolved_endpoint(self) -> str:
        return self.endpoint or DEFAULT_ENDPOINTS[self.protocol]

    @model_validator(mode="after")
    def _check(self) -> JaegerExporterConfig:
        endpoint = self.resolved_endpoint
        if self.protocol == "thrift_http":
            parts = urlsplit(endpoint)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError(
                    "endpoint: protocol thrift_http needs the collector's full URL, such as "
                    f"'http://jaeger:14268/api/traces', got {endpoint!r}"
                )
        else:
            if "://" in endpoint:
                raise ValueError(
                    f"endpoint: protocol {self.protocol} needs host:port (no scheme), "
                    f"got {endpoint!r}"
                )
            try:
                parse_endpoint(endpoint)
            except ValueError as exc:
                raise ValueError(
                    f"endpoint: protocol {self.protocol} needs host:port: {exc}"
                ) from None
        if (
            self.protocol != "thrift_compact"
            and self.max_packet_size != type(self).model_fields["max_packet_size"].default
        ):
            raise ValueError("max_packet_size applies only to protocol thrift_compact")
        if self.protocol.startswith("thrift") and (self.tls is not None or self.otlp):
            raise ValueError("tls and otlp apply only to the OTLP protocols")
        if self.protocol == "thrift_compact" and self.auth is not None:
            raise ValueError("auth: protocol thrift_compact (UDP) carries no credentials")
        if "auth" in self.otlp:
            raise ValueError("otlp.auth: set auth at the top level of the jaeger exporter")
        if self.protocol in OTLP_EXPORTER_TYPES:
            self._otlp_config = self.otlp_exporter_config()
        return self

    def otlp_exporter_config(self) -> Any:
        """The validated config of the OTLP exporter this config delegates to."""
        from pipeline.pluginmanager import default_registry

        type_ = OTLP_EXPORTER_TYPES[self.protocol]
        factory = default_registry().get(Kind.EXPORTER, type_)
        if factory is None:
            raise ValueError(
                f"protocol {self.protocol} sends through the {type_!r} exporter, which is not "
                "installed in this gateway; use protocol thrift_http or thrift_compact, or "
                f"install a plugin that provides the {type_!r} exporter"
            )
        endpoint = self.resolved_endpoint
        if self.protocol == "otlp_http" and "://" not in endpoint:
            scheme = "https" if self.tls and not self.tls.get("insecure", False) else "http"
            endpoint = f"{scheme}://{endpoint}"
        options: dict[str, Any] = {"endpoint": endpoint}
        dumped = self.model_dump()
        for name in ("timeout", "sending_queue", "retry_on_failure"):
            if name in self.model_fields_set:
                options[name] = dumped[name]
        if self.headers:
            options["headers"] = dict(self.headers)
        if self.auth is not None:
            options["auth"] = {"authenticator": self.auth.authenticator}
        if self.tls is not None:
            options["tls"] = self.tls
        options.update(self.otlp)
        try:
            return factory.config_class.model_validate(options)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}"
                for e in exc.errors()
            )
            raise ValueError(
                f"the options handed to the {type_!r} exporter are not valid: {problems}"
            ) from None
