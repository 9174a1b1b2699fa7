"""What the ``kafka`` exporter and receiver share: the client options (with the Collector's
names), their translation to librdkafka's (through ``confluent-kafka``), the topics and the
encodings. Not a plugin (the name starts with ``_``)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Literal

from pydantic import Field, model_validator

from pipeline import (
    ConfigModel,
    CreateSettings,
    Duration,
    Host,
    Payload,
    Seconds,
    Signal,
    Status,
)
from pipeline.pdata import payload_type

DEFAULT_TOPICS = {
    Signal.TRACES: "otlp_spans",
    Signal.METRICS: "otlp_metrics",
    Signal.LOGS: "otlp_logs",
}
Encoding = Literal["otlp_proto", "otlp_json"]


class TLSConfig(ConfigModel):
    """``tls`` (or ``auth.tls``): TLS to the brokers (on unless ``insecure``)."""

    insecure: bool = False
    insecure_skip_verify: bool = False
    ca_file: str | None = None
    ca_pem: str | None = None
    """The CA certificates themselves (PEM), instead of ``ca_file``."""
    cert_file: str | None = None
    cert_pem: str | None = None
    key_file: str | None = None
    key_pem: str | None = None
    server_name_override: str = ""
    """Accepted for Collector configs when empty: librdkafka checks the certificate against
    the broker's own host name and cannot be given another (an error when set)."""

    @model_validator(mode="after")
    def _pair(self) -> TLSConfig:
        for name in ("ca", "cert", "key"):
            if getattr(self, f"{name}_file") and getattr(self, f"{name}_pem"):
                raise ValueError(f"give {name}_file or {name}_pem, not both")
        if (self.cert_file or self.cert_pem) and not (self.key_file or self.key_pem):
            raise ValueError("a client certificate (cert_file, cert_pem) needs its key")
        if (self.key_file or self.key_pem) and not (self.cert_file or self.cert_pem):
            raise ValueError("a key (key_file, key_pem) needs its certificate")
        if self.server_name_override:
            raise ValueError(
                "server_name_override is not supported by the kafka client (librdkafka checks "
                "the certificate against each broker's host name): use a host name the "
                "brokers' certificates name, or insecure_skip_verify"
            )
        return self


class PlainTextConfig(ConfigModel):
    """``auth.plain_text`` (the Collector's older spelling of SASL PLAIN)."""

    username: str = Field(min_length=1)
    password: str = ""


class SASLConfig(ConfigModel):
    """``auth.sasl``."""

    username: str = Field(min_length=1)
    password: str = ""
    mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    version: int = Field(0, ge=0, le=1)
    """Accepted for Collector configs (librdkafka negotiates the handshake version)."""


class AuthConfig(ConfigModel):
    """``auth``: SASL (``sasl`` or ``plain_text``) and/or TLS."""

    plain_text: PlainTextConfig | None = None
    sasl: SASLConfig | None = None
    tls: TLSConfig | None = None

    @model_validator(mode="after")
    def _one_sasl(self) -> AuthConfig:
        if self.plain_text is not None and self.sasl is not None:
            raise ValueError("auth: give 'sasl' or 'plain_text', not both")
        return self


class MetadataRetryConfig(ConfigModel):
    max: int = Field(3, ge=0)
    backoff: Duration = Seconds(0.25)


class MetadataConfig(ConfigModel):
    """``metadata``."""

    full: bool = True
    """Accepted for Collector configs (librdkafka fetches the metadata it needs)."""
    retry: MetadataRetryConfig = MetadataRetryConfig()


class SignalTopicConfig(ConfigModel):
    """``traces`` / ``metrics`` / ``logs``: the topic and encoding of one signal (the
    Collector's newer spelling; ``topic`` and ``encoding`` at the top apply otherwise)."""

    topic: str = ""
    encoding: Encoding | None = None


class ClientConfig(ConfigModel):
    """The options of any Kafka client, as the Collector names them."""

    brokers: list[str] = Field(default_factory=lambda: ["localhost:9092"], min_length=1)
    protocol_version: str = ""
    """Accepted for Collector configs: librdkafka negotiates the protocol with the broker."""
    resolve_canonical_bootstrap_servers_only: bool = False
    client_id: str = "otel-collector"
    auth: AuthConfig | None = None
    tls: TLSConfig | None = None
    metadata: MetadataConfig = MetadataConfig()
    topic: str = ""
    """The topic of every signal (default: ``otlp_spans``, ``otlp_metrics``, ``otlp_logs``)."""
    encoding: Encoding = "otlp_proto"
    traces: SignalTopicConfig = SignalTopicConfig()
    metrics: SignalTopicConfig = SignalTopicConfig()
    logs: SignalTopicConfig = SignalTopicConfig()

    def topic_for(self, signal: Signal) -> str:
        own: SignalTopicConfig = getattr(self, str(signal))
        return own.topic or self.topic or DEFAULT_TOPICS[signal]

    def encoding_for(self, signal: Signal) -> str:
        own: SignalTopicConfig = getattr(self, str(signal))
        return own.encoding or self.encoding

    def librdkafka(self) -> dict[str, Any]:
        """The librdkafka properties of these options."""
        out: dict[str, Any] = {
            "bootstrap.servers": ",".join(self.brokers),
            "client.id": self.client_id,
            "retry.backoff.ms": max(1, int(self.metadata.retry.backoff * 1000)),
        }
        if self.resolve_canonical_bootstrap_servers_only:
            out["client.dns.lookup"] = "resolve_canonical_bootstrap_servers_only"
        auth = self.auth or AuthConfig()
        tls = auth.tls or self.tls
        sasl = auth.sasl or (
            SASLConfig(username=auth.plain_text.username, password=auth.plain_text.password)
            if auth.plain_text
            else None
        )
        use_tls = tls is not None and not tls.insecure
        if sasl is not None:
            out["security.protocol"] = "SASL_SSL" if use_tls else "SASL_PLAINTEXT"
            out["sasl.mechanism"] = sasl.mechanism
            out["sasl.username"] = sasl.username
            out["sasl.password"] = sasl.password
        elif use_tls:
            out["security.protocol"] = "SSL"
        if use_tls and tls is not None:
            if tls.ca_file:
                out["ssl.ca.location"] = tls.ca_file
            if tls.ca_pem:
                out["ssl.ca.pem"] = tls.ca_pem
            if tls.cert_file:
                out["ssl.certificate.location"] = tls.cert_file
            if tls.cert_pem:
                out["ssl.certificate.pem"] = tls.cert_pem
            if tls.key_file:
                out["ssl.key.location"] = tls.key_file
            if tls.key_pem:
                out["ssl.key.pem"] = tls.key_pem
            if tls.insecure_skip_verify:
                out["enable.ssl.certificate.verification"] = False
                out["ssl.endpoint.identification.algorithm"] = "none"
        return out

    @property
    def plaintext_credentials(self) -> bool:
        """SASL credentials sent without TLS."""
        auth = self.auth or AuthConfig()
        tls = auth.tls or self.tls
        return (auth.sasl or auth.plain_text) is not None and (tls is None or tls.insecure)


class ClientErrors:
    """What the exporter and the receiver do with librdkafka's client errors (``error_cb``,
    called on the client's thread): each is counted (``otelcol_kafka_client_errors``, by
    kind) and logged, a refused authentication or a failed TLS handshake at ERROR with what
    to check; and the component's status becomes ``recoverable_error`` until the brokers serve
    it again (:meth:`served`, on the event loop)."""

    KINDS = {"_AUTHENTICATION": "authentication", "_SSL": "tls"}
    HINTS = {
        "authentication": "the brokers refused the SASL authentication: check auth.sasl "
        "(username, password, mechanism)",
        "tls": "TLS with the brokers failed: check tls (or auth.tls): ca_file, cert_file, "
        "key_file, and the brokers' certificates",
    }

    def __init__(self, settings: CreateSettings) -> None:
        self.settings = settings
        self._host: Host | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.failing: str | None = None  # the kind of the error the status reports
        self._counter = settings.telemetry.service.counter(
            "otelcol_kafka_client_errors",
            "Errors of the Kafka client (authentication, tls, other), each logged.",
            ("component", "error"),
        )

    def bind(self, host: Host, loop: asyncio.AbstractEventLoop) -> None:
        self._host, self._loop = host, loop

    def __call__(self, error: Any) -> None:  # librdkafka's thread
        name = error.name() if hasattr(error, "name") else ""
        kind = self.KINDS.get(name, "other")
        self._counter.labels(self.settings.name, kind).inc()
        text = error.str() if hasattr(error, "str") else str(error)
        if kind == "other":
            self.settings.log_limited(
                logging.WARNING, "kafka client: %s", text, key="kafka_client_error"
            )
            return
        self.settings.log_limited(
            logging.ERROR,
            "kafka client: %s: %s",
            self.HINTS[kind],
            text,
            key=f"kafka_client_{kind}",
            extra={"error_kind": kind},
        )
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._report, kind, text)

    def _report(self, kind: str, text: str) -> None:
        self.failing = kind
        if self._host is not None:
            self._host.report_status(
                self.settings.instance,
                Status.RECOVERABLE_ERROR,
                ConnectionError(f"kafka {kind}: {text}"),
            )

    def served(self) -> None:
        """The brokers served the client (a delivery, an assignment): the status is ``ok``
        again after an error."""
        if self.failing is not None:
            self.failing = None
            if self._host is not None:
                self._host.report_status(self.settings.instance, Status.OK)
            self.settings.logger.info("kafka client: the brokers serve the client again")


def encode(payload: Payload, encoding: str) -> bytes:
    """The message value of ``payload`` in ``encoding``."""
    if encoding == "otlp_json":
        from plugins import _otlpjson

        return _otlpjson.dumps(payload.message())
    return payload.to_bytes()


def decode(signal: Signal, value: bytes, encoding: str) -> Payload:
    """The payload of a message value, checked as a receiver checks a request (raises
    :class:`pipeline.PermanentError` saying what is wrong)."""
    make = payload_type(signal)
    if encoding == "otlp_json":
        from plugins import _otlpjson

        message = _otlpjson.parse(value, make.request_class())
        payload = make(message.SerializeToString())
    else:
        payload = make(value)
    payload.validate()
    return payload
