"""Config of the ``otlp`` (gRPC) exporter, with the Collector's option names; the client
``tls`` section is shared with ``otlphttp``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from pipeline import ClientAuthConfig, ConfigModel, ExporterHelperConfig


class ClientTLSConfig(ConfigModel):
    """``tls`` of a client: ``insecure`` for plaintext, else TLS with optional CA and a client
    certificate (``cert_file`` + ``key_file``) for mutual TLS."""

    insecure: bool = False
    insecure_skip_verify: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_name_override: str = ""

    @model_validator(mode="after")
    def _pair(self) -> ClientTLSConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file must be given together")
        return self


Compression = Literal["gzip", "none", ""]


class OTLPExporterConfig(ExporterHelperConfig):
    """``exporters.otlp``."""

    endpoint: str = Field(min_length=1)
    """``host:port``; an ``http://`` prefix means plaintext, ``https://`` TLS."""
    tls: ClientTLSConfig = ClientTLSConfig()
    headers: dict[str, str] = {}
    auth: ClientAuthConfig | None = None
    """``{authenticator: <extension>}``: every call carries its credentials (metadata)."""
    compression: Compression = "gzip"
    balancer_name: str = ""
    authority: str = ""
    max_request_bytes: int = Field(0, ge=0)
    """Split a batch whose protobuf encoding (before compression) is larger than this many
    bytes into requests below it before sending; 0 = off. Requests the server refuses as too
    large are split in any case."""

    @model_validator(mode="after")
    def _endpoint(self) -> OTLPExporterConfig:
        target = self.endpoint.split("://", 1)[-1]
        host, sep, port = target.rpartition(":")
        if not sep or not port.isdigit() or not host:
            raise ValueError(
                f"endpoint must be 'host:port' (optionally with http:// or https://), "
                f"got {self.endpoint!r}"
            )
        return self

    @property
    def target(self) -> str:
        """The gRPC target, without any scheme."""
        return self.endpoint.split("://", 1)[-1].rstrip("/")

    @property
    def insecure(self) -> bool:
        return self.tls.insecure or self.endpoint.startswith("http://")
