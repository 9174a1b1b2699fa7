"""Config of the ``alertmanager`` exporter."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from pipeline import (
    ClientAuthConfig,
    ConfigModel,
    Duration,
    ExporterHelperConfig,
    QueueConfig,
    Seconds,
)

LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
SEVERITIES = {
    "TRACE": 1,
    "DEBUG": 5,
    "INFO": 9,
    "WARN": 13,
    "WARNING": 13,
    "ERROR": 17,
    "FATAL": 21,
}


def _check_labels(name: str, labels: dict[str, str]) -> dict[str, str]:
    for key in labels:
        if not LABEL_NAME.fullmatch(key):
            raise ValueError(f"{name}: {key!r} is not a valid Alertmanager label name")
    return labels


class MatchConfig(ConfigModel):
    """Which log records a condition takes: every given test must hold."""

    severity_min: str | int | None = None
    """``WARN``, ``ERROR``... or a severity number: records at least this severe."""
    event_name: str | None = None
    body: str | None = None
    """A regular expression searched in the body."""
    attributes: dict[str, str] = Field(default_factory=dict)
    """Record (or resource) attributes with these values; ``~regex`` for a full match."""

    @field_validator("severity_min")
    @classmethod
    def _severity(cls, value: str | int | None) -> str | int | None:
        if isinstance(value, str) and value.upper() not in SEVERITIES:
            raise ValueError(f"unknown severity {value!r}; known: {sorted(SEVERITIES)}")
        return value

    @model_validator(mode="after")
    def _regexes(self) -> MatchConfig:
        patterns = [self.body or ""] + [v[1:] for v in self.attributes.values() if v[:1] == "~"]
        for p in patterns:
            try:
                re.compile(p)
            except re.error as exc:
                raise ValueError(f"invalid regular expression {p!r}: {exc}") from None
        return self

    def min_number(self) -> int:
        if self.severity_min is None:
            return 0
        if isinstance(self.severity_min, int):
            return self.severity_min
        return SEVERITIES[self.severity_min.upper()]


class ConditionConfig(ConfigModel):
    """Log records other than anomalies that raise an alert."""

    name: str
    """The alert's ``alertname``."""
    match: MatchConfig = Field(default_factory=MatchConfig)
    resolve: MatchConfig | None = None
    """Records that resolve the alert of the same labels (a health check passing again)."""
    resolve_after: Duration = Seconds(300)
    """The alert resolves when no matching record came for this long (0: only ``resolve``)."""
    labels: dict[str, str] = Field(default_factory=dict)
    label_attributes: dict[str, str] = Field(default_factory=dict)
    """Alert label -> record attribute whose value it takes (``exporter: component``)."""
    annotations: dict[str, str] = Field(
        default_factory=lambda: {"summary": "{body}", "description": "{body}"}
    )
    """Templates: ``{body}``, ``{severity}`` and ``{<attribute key>}`` are replaced."""

    @field_validator("labels", "label_attributes")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        return _check_labels("labels", value)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not value:
            raise ValueError("name must not be empty")
        return value


class AnomalyAlertsConfig(ConfigModel):
    """How records of the ``anomaly`` connector become alerts."""

    enabled: bool = True
    alertname_prefix: str = "Anomaly"
    """``AnomalyLatencyIncrease``, ``AnomalyMemoryLeak``...: the prefix and the type."""
    runbook_url: str = ""
    """Used when the anomaly's rule gives none; ``{type}`` and ``{metric}`` are replaced."""


class AlertmanagerExporterConfig(ExporterHelperConfig):
    """``exporters.alertmanager``."""

    endpoint: str
    """Alertmanager's base URL (``http://alertmanager:9093``); alerts are posted to
    ``<endpoint>/api/v2/alerts``."""
    headers: dict[str, str] = Field(default_factory=dict)
    auth: ClientAuthConfig | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    """Labels on every alert (``env``, ``cluster``)."""
    generator_url: str = ""
    resend_interval: Duration = Seconds(60)
    """Active alerts are sent again this often (Prometheus' ``resend_delay``); each carries an
    ``endsAt`` of four intervals ahead, so Alertmanager resolves them if the gateway stops."""
    anomalies: AnomalyAlertsConfig = Field(default_factory=AnomalyAlertsConfig)
    conditions: list[ConditionConfig] = Field(default_factory=list)
    max_active: int = Field(10_000, ge=1)
    """Alerts kept active; beyond it new ones are dropped (counted and logged)."""
    sending_queue: QueueConfig = QueueConfig(num_consumers=1)
    """One consumer: a resolve must not overtake the alert it resolves."""

    @field_validator("sending_queue", mode="before")
    @classmethod
    def _one_consumer(cls, value: Any) -> Any:
        return QueueConfig.one_consumer(value)  # (a resolve must not overtake its alert)

    @field_validator("endpoint")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(
                f"endpoint: expected Alertmanager's http(s) URL such as "
                f"'http://alertmanager:9093', got {value!r}"
            )
        return value.rstrip("/")

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        return _check_labels("labels", value)

    @model_validator(mode="after")
    def _resend(self) -> AlertmanagerExporterConfig:
        if self.resend_interval <= 0:
            raise ValueError("resend_interval must be greater than 0")
        return self

    def url(self) -> str:
        return f"{self.endpoint}/api/v2/alerts"
