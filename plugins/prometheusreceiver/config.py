"""Config of the ``prometheus`` receiver: ``config`` holds the subset of Prometheus's own
configuration that the receiver supports, with Prometheus's names and defaults."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, model_validator

from pipeline import ComponentConfig, ConfigModel, Duration, Seconds
from pipeline.configtypes import parse_endpoint

_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_SIZE = re.compile(r"^\s*(\d+)\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)?\s*$")
_SIZE_UNITS = {
    None: 1,
    "B": 1,
    "KB": 1 << 10,
    "MB": 1 << 20,
    "GB": 1 << 30,
    "TB": 1 << 40,
    "KiB": 1 << 10,
    "MiB": 1 << 20,
    "GiB": 1 << 30,
    "TiB": 1 << 40,
}


def parse_size(value: Any) -> int:
    """A size as Prometheus reads it: bytes, or a number with a base-2 unit (``100MB`` and
    ``100MiB`` are both 100 * 2^20 bytes)."""
    if isinstance(value, bool):
        raise ValueError(f"not a size: {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"a size cannot be negative: {value}")
        return value
    match = _SIZE.match(str(value))
    if match is None:
        raise ValueError(f"not a size: {value!r} (use bytes, or a unit: 10MB, 512KiB)")
    return int(match.group(1)) * _SIZE_UNITS[match.group(2)]


ByteSize = Annotated[int, BeforeValidator(parse_size)]

# Defaults of the scrape limits. Prometheus's are 0 (no limit); the receiver's bound what
# one scrape can cost, since parsing runs at ~0.5 µs and ~20 bytes of memory per byte of
# exposition and ~40 µs and ~1.4 KB per sample (prometheus_client's parser is pure Python):
# a scrape at both limits costs at most ~2-5 s of CPU (in a decode thread) and ~100 MB.
DEFAULT_BODY_SIZE_LIMIT = 10 << 20
DEFAULT_SAMPLE_LIMIT = 50_000


class GlobalConfig(ConfigModel):
    """``config.global``: defaults of every scrape config."""

    scrape_interval: Duration = Seconds(60)
    scrape_timeout: Duration = Seconds(10)
    body_size_limit: ByteSize = DEFAULT_BODY_SIZE_LIMIT
    """An uncompressed response body larger than this fails the scrape (0: no limit)."""
    sample_limit: int = Field(DEFAULT_SAMPLE_LIMIT, ge=0)
    """More samples than this in one scrape fail it (0: no limit)."""
    label_limit: int = Field(0, ge=0)
    """More labels than this on a sample fail the scrape (0: no limit)."""
    label_name_length_limit: int = Field(0, ge=0)
    """A label name longer than this fails the scrape (0: no limit)."""
    label_value_length_limit: int = Field(0, ge=0)
    """A label value longer than this fails the scrape (0: no limit)."""
    target_limit: int = Field(0, ge=0)
    """More targets than this in a scrape config: none is scraped, all are down (0: none)."""


@dataclass(frozen=True)
class ScrapeLimits:
    """The limits of one scrape config, its own or ``global``'s (0: no limit)."""

    body_size_limit: int = DEFAULT_BODY_SIZE_LIMIT
    sample_limit: int = DEFAULT_SAMPLE_LIMIT
    label_limit: int = 0
    label_name_length_limit: int = 0
    label_value_length_limit: int = 0
    target_limit: int = 0


class StaticConfig(ConfigModel):
    """One ``static_configs`` entry: targets (``host:port``) and labels added to their series."""

    targets: list[str] = Field(min_length=1)
    labels: dict[str, str] = {}

    @model_validator(mode="after")
    def _check(self) -> StaticConfig:
        for target in self.targets:
            parse_endpoint(target)
        for name in self.labels:
            if not _LABEL_NAME.match(name) or name.startswith("__"):
                raise ValueError(f"labels: {name!r} is not a valid label name")
        return self


class ScrapeConfig(ConfigModel):
    """One ``scrape_configs`` entry. Unset intervals take ``global``'s."""

    job_name: str = Field(min_length=1)
    scrape_interval: Duration | None = None
    scrape_timeout: Duration | None = None
    metrics_path: str = "/metrics"
    scheme: str = Field("http", pattern="^https?$")
    honor_labels: bool = False
    honor_timestamps: bool = True
    params: dict[str, list[str]] = {}
    static_configs: list[StaticConfig] = []
    body_size_limit: ByteSize | None = None
    sample_limit: int | None = Field(None, ge=0)
    label_limit: int | None = Field(None, ge=0)
    label_name_length_limit: int | None = Field(None, ge=0)
    label_value_length_limit: int | None = Field(None, ge=0)
    target_limit: int | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _check(self) -> ScrapeConfig:
        if not self.metrics_path.startswith("/"):
            raise ValueError(f"metrics_path must start with '/', got {self.metrics_path!r}")
        return self


class PromConfig(ConfigModel):
    """``config``: Prometheus's configuration (the supported subset)."""

    global_: GlobalConfig = Field(GlobalConfig(), alias="global")
    scrape_configs: list[ScrapeConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> PromConfig:
        seen: set[str] = set()
        for sc in self.scrape_configs:
            if sc.job_name in seen:
                raise ValueError(f"found multiple scrape configs with job name {sc.job_name!r}")
            seen.add(sc.job_name)
            interval = self.interval(sc)
            timeout = self.timeout(sc)
            if interval <= 0:
                raise ValueError(f"job {sc.job_name!r}: scrape_interval must be above 0")
            if timeout > interval:
                raise ValueError(
                    f"job {sc.job_name!r}: scrape_timeout ({timeout:g}s) greater than "
                    f"scrape_interval ({interval:g}s)"
                )
        return self

    def interval(self, sc: ScrapeConfig) -> float:
        return (
            sc.scrape_interval if sc.scrape_interval is not None else self.global_.scrape_interval
        )

    def limits(self, sc: ScrapeConfig) -> ScrapeLimits:
        """The scrape config's limits; those it does not set are ``global``'s."""
        values = {}
        for name in ScrapeLimits.__dataclass_fields__:
            own = getattr(sc, name)
            values[name] = own if own is not None else getattr(self.global_, name)
        return ScrapeLimits(**values)

    def timeout(self, sc: ScrapeConfig) -> float:
        if sc.scrape_timeout is not None:
            return sc.scrape_timeout
        # Prometheus: the global timeout, capped at the job's interval.
        return min(self.global_.scrape_timeout, self.interval(sc))


class PrometheusReceiverConfig(ComponentConfig):
    """``receivers.prometheus``."""

    config: PromConfig
