"""``tls`` of a server, as the Collector's ``configtls.ServerConfig``: shared by every component
that listens (receivers, the ``prometheus`` exporter, the ``health_check`` extension, the
gateway's own metrics endpoint)."""

from __future__ import annotations

import ssl
from typing import Literal

from pydantic import model_validator

from pipeline.configtypes import ConfigModel

TLSVersion = Literal["1.0", "1.1", "1.2", "1.3", ""]
_VERSIONS = {
    "1.0": ssl.TLSVersion.TLSv1,
    "1.1": ssl.TLSVersion.TLSv1_1,
    "1.2": ssl.TLSVersion.TLSv1_2,
    "1.3": ssl.TLSVersion.TLSv1_3,
}


class ServerTLSConfig(ConfigModel):
    """``tls`` of a server: its certificate and key (PEM files); with ``client_ca_file``,
    clients must present a certificate signed by that CA (mutual TLS)."""

    cert_file: str
    key_file: str
    client_ca_file: str | None = None
    """CA certificates (PEM) that client certificates must chain to: every client must then
    present one (mTLS); others fail the handshake."""
    min_version: TLSVersion = "1.2"
    """The oldest TLS version accepted (the Collector's default, 1.2)."""
    max_version: TLSVersion = ""
    """The newest TLS version offered; empty: the newest the system supports."""

    @model_validator(mode="after")
    def _versions(self) -> ServerTLSConfig:
        if (
            self.min_version
            and self.max_version
            and _VERSIONS[self.min_version] > _VERSIONS[self.max_version]
        ):
            raise ValueError(
                f"min_version {self.min_version} is newer than max_version {self.max_version}"
            )
        return self


def server_ssl_context(tls: ServerTLSConfig, alpn: list[str] | None = None) -> ssl.SSLContext:
    """A server's TLS context from its ``tls`` section (files read now: call it at start, so
    a missing or unreadable file fails the start with its name). ``alpn``: protocols to
    negotiate (``["h2"]`` for gRPC).

    Client certificates are verified against ``client_ca_file`` only: not against the system's
    CA store (which ``ssl.create_default_context`` would add), or a certificate from any public
    CA would pass, as the Collector's default (``include_system_ca_certs_pool: false``)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.load_cert_chain(tls.cert_file, tls.key_file)
    except (OSError, ssl.SSLError) as exc:
        raise OSError(
            f"cannot load the TLS certificate {tls.cert_file!r} and key {tls.key_file!r}: {exc}"
        ) from exc
    if tls.client_ca_file:
        try:
            ctx.load_verify_locations(tls.client_ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise OSError(f"cannot load client_ca_file {tls.client_ca_file!r}: {exc}") from exc
        ctx.verify_mode = ssl.CERT_REQUIRED
    if tls.min_version:
        ctx.minimum_version = _VERSIONS[tls.min_version]
    if tls.max_version:
        ctx.maximum_version = _VERSIONS[tls.max_version]
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx
