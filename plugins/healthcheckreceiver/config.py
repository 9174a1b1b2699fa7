"""Config of the ``healthcheck`` receiver.

Example::

    receivers:
      healthcheck:
        collection_interval: 10s
        checks:
          - {name: orders-db, type: postgresql,
             endpoint: "postgresql://postgres@127.0.0.1:5432/postgres", critical: true, timeout: 5s}
          - {name: cache, type: redis, endpoint: "redis://127.0.0.1:6379/0", timeout: 3s}
          - {name: tools, type: mcp, endpoint: "http://127.0.0.1:8000/mcp", critical: false,
             timeout: 10s}
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, model_validator

from pipeline import ComponentConfig, ConfigModel, Duration, Seconds

CheckType = Literal["postgresql", "redis", "http", "mcp", "system"]

# Degraded above these unless the check's ``thresholds`` say otherwise (the reference
# document's numbers for PostgreSQL and Redis).
DEFAULT_RESPONSE_TIME = {
    "postgresql": 1.0,
    "redis": 0.5,
    "http": 1.0,
    "mcp": 2.0,
    "system": 2.0,
}

_THRESHOLDS_BY_TYPE = {
    "postgresql": {"response_time", "active_connections"},
    "redis": {"response_time", "failed_nodes"},
    "http": {"response_time"},
    "mcp": {"response_time"},
    "system": {"response_time", "cpu_percent", "memory_percent", "disk_percent"},
}
_OPTIONS_BY_TYPE = {
    "query": {"postgresql"},
    "method": {"http"},
    "expected_status": {"http"},
    "body_match": {"http"},
    "headers": {"http", "mcp"},
    "path": {"system"},
}


class Thresholds(ConfigModel):
    """Above any of these, a check that otherwise passed reads *degraded*."""

    response_time: Duration | None = None
    """Default per type: postgresql 1s, redis 500ms, http 1s, mcp 2s, system 2s."""
    active_connections: int | None = Field(None, ge=0)
    """PostgreSQL: active backends in ``pg_stat_activity`` (default 80)."""
    failed_nodes: int | None = Field(None, ge=0)
    """Redis cluster: failed nodes tolerated (default 0)."""
    cpu_percent: float | None = Field(None, ge=0)
    """System: host CPU busy percentage (default 90)."""
    memory_percent: float | None = Field(None, ge=0, le=100)
    """System: memory in use, percent (default 90)."""
    disk_percent: float | None = Field(None, ge=0, le=100)
    """System: disk space in use at ``path``, percent (default 90)."""

    def given(self) -> set[str]:
        return {k for k in type(self).model_fields if getattr(self, k) is not None}


class CheckConfig(ConfigModel):
    """One entry of ``checks``."""

    name: str = Field(min_length=1)
    type: CheckType
    endpoint: str | None = None
    """A DSN (``postgresql://``), a URL (``redis://``, ``http://``) or none for ``system``.
    An empty value (``""`` or null) disables the check (logged at start): that is what an unset
    environment variable gives, so ``endpoint: ${env:HEALTHCHECK_POSTGRESQL_ENDPOINT:-}`` checks the
    database only where its address is set. A check with no ``endpoint`` key (other than
    ``system``) is a config error."""
    interval: Duration | None = None
    """How often this check runs; the receiver's ``collection_interval`` by default."""
    timeout: Duration = Seconds(5)
    """The whole check (connect included) is bounded by this; past it, unhealthy."""
    critical: bool = False
    """A critical check that is unhealthy makes the gateway not ready (health_check
    extension)."""
    thresholds: Thresholds = Thresholds()
    query: str | None = None
    """PostgreSQL: an extra statement run as part of the check (e.g. a representative read)."""
    method: Literal["GET", "HEAD", "POST"] = "GET"
    expected_status: list[int] | None = None
    """HTTP: status codes that count as success (default: any below 400)."""
    body_match: str | None = None
    """HTTP: a regular expression the response body must contain."""
    headers: dict[str, str] = Field(default_factory=dict)
    path: str = "/"
    """System: the filesystem whose usage is checked."""

    @property
    def disabled(self) -> bool:
        """Its endpoint is an empty string (an unset environment variable): not run."""
        return (
            self.type != "system"
            and "endpoint" in self.model_fields_set
            and not (self.endpoint or "").strip()
        )

    @model_validator(mode="after")
    def _check(self) -> CheckConfig:
        if self.type != "system" and "endpoint" not in self.model_fields_set:
            raise ValueError(
                f"a {self.type} check needs an endpoint (an empty one disables the check)"
            )
        if self.type == "system" and self.endpoint:
            raise ValueError("a system check takes no endpoint")
        if self.endpoint and not self.disabled:
            schemes = {
                "postgresql": ("postgresql://", "postgres://"),
                "redis": ("redis://", "rediss://", "unix://"),
                "http": ("http://", "https://"),
                "mcp": ("http://", "https://"),
            }[self.type]
            if not self.endpoint.startswith(schemes):
                raise ValueError(
                    f"the endpoint of a {self.type} check must start with "
                    + " or ".join(schemes)
                    + f", got {self.endpoint!r}"
                )
        if self.timeout <= 0:
            raise ValueError("timeout must be above 0")
        if self.interval is not None and self.interval <= 0:
            raise ValueError("interval must be above 0")
        wrong = self.thresholds.given() - _THRESHOLDS_BY_TYPE[self.type]
        if wrong:
            raise ValueError(
                f"threshold(s) {', '.join(sorted(wrong))} do not apply to a {self.type} check "
                f"(it takes {', '.join(sorted(_THRESHOLDS_BY_TYPE[self.type]))})"
            )
        for option, types in _OPTIONS_BY_TYPE.items():
            if option in self.model_fields_set and self.type not in types:
                raise ValueError(f"option {option!r} does not apply to a {self.type} check")
        if self.body_match is not None:
            try:
                re.compile(self.body_match)
            except re.error as exc:
                raise ValueError(f"body_match is not a valid regular expression: {exc}") from exc
        return self

    def response_time_threshold(self) -> float:
        t = self.thresholds.response_time
        return t if t is not None else DEFAULT_RESPONSE_TIME[self.type]


class HealthCheckReceiverConfig(ComponentConfig):
    """``receivers.healthcheck``."""

    collection_interval: Duration = Seconds(30)
    """The default interval of every check."""
    initial_delay: Duration = Seconds(0)
    checks: list[CheckConfig] = Field(min_length=1)
    """The checks; those whose endpoint is empty are disabled (see ``CheckConfig.endpoint``)."""
    trace_checks: bool = True
    """Trace each check (a span per run; PostgreSQL statements through
    opentelemetry-instrumentation-asyncpg) when the OpenTelemetry API is installed."""

    @model_validator(mode="after")
    def _check(self) -> HealthCheckReceiverConfig:
        if self.collection_interval <= 0:
            raise ValueError("collection_interval must be above 0")
        seen: set[str] = set()
        for c in self.checks:
            if c.name in seen:
                raise ValueError(f"two checks are named {c.name!r}; names must be unique")
            seen.add(c.name)
        return self
