"""Config of the ``loadbalancing`` exporter, with the Collector's option names."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, PrivateAttr, ValidationError, model_validator

from pipeline import ComponentConfig, ConfigModel, Duration, Seconds


class StaticResolverConfig(ConfigModel):
    """``resolver.static``: a fixed list of backends."""

    hostnames: list[str] = Field(min_length=1)
    """``host[:port]`` each; the port defaults to 4317."""


class DNSResolverConfig(ConfigModel):
    """``resolver.dns``: every address ``hostname`` resolves to is a backend, on ``port``."""

    hostname: str = Field(min_length=1)
    port: int = Field(4317, ge=1, le=65535)
    interval: Duration = Seconds(5.0)
    """How often the name is resolved again."""
    timeout: Duration = Seconds(1.0)
    """How long one resolution may take."""


class ResolverConfig(ConfigModel):
    """``resolver``: exactly one of ``static`` and ``dns``."""

    static: StaticResolverConfig | None = None
    dns: DNSResolverConfig | None = None

    @model_validator(mode="after")
    def _one(self) -> ResolverConfig:
        if (self.static is None) == (self.dns is None):
            raise ValueError("resolver: give exactly one of 'static' and 'dns'")
        return self


class ProtocolConfig(ConfigModel):
    """``protocol``: how to reach a backend."""

    otlp: dict[str, Any] = {}
    """The ``otlp`` exporter's options (``endpoint`` excepted: the resolver gives it); its
    ``sending_queue`` and ``retry_on_failure`` apply to each backend."""

    @model_validator(mode="after")
    def _no_endpoint(self) -> ProtocolConfig:
        if "endpoint" in self.otlp:
            raise ValueError("protocol.otlp.endpoint: the resolver gives each backend's endpoint")
        return self


RoutingKey = Literal["", "traceID", "service", "resource", "metric", "streamID"]


class LoadBalancingConfig(ComponentConfig):
    """``exporters.loadbalancing``."""

    routing_key: RoutingKey = ""
    """What keeps data on one backend: ``traceID`` (the default for traces and logs),
    ``service`` (the default for metrics), ``resource``, ``metric``, ``streamID``."""
    protocol: ProtocolConfig = ProtocolConfig()
    resolver: ResolverConfig
    timeout: Duration = Seconds(5.0)
    """Accepted for Collector configs; each backend's ``protocol.otlp.timeout`` applies."""
    _otlp: Any = PrivateAttr(None)

    @model_validator(mode="after")
    def _otlp_options(self) -> LoadBalancingConfig:
        # the otlp exporter's options, checked now (with a placeholder endpoint)
        from plugins.loadbalancingexporter.backends import otlp_config_class

        cls = otlp_config_class()
        if cls is not None:
            try:
                self._otlp = cls.model_validate(
                    {**self.protocol.otlp, "endpoint": "placeholder:4317"}
                )
            except ValidationError as exc:
                problems = "; ".join(
                    f"{'.'.join(str(p) for p in e['loc']) or '(section)'}: {e['msg']}"
                    for e in exc.errors()
                )
                raise ValueError(f"protocol.otlp: {problems}") from None
        return self

    def extension_references(self) -> list[tuple[str, str, str]]:
        refs = super().extension_references()
        if self._otlp is not None:
            refs += [
                (f"protocol.otlp.{path}", name, kind)
                for path, name, kind in self._otlp.extension_references()
            ]
        return refs
