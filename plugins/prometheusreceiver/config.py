"""Config of the ``prometheus`` receiver: ``config`` holds the subset of Prometheus's own
configuration that the receiver supports, with Prometheus's names and defaults."""

from __future__ import annotations

import re

from pydantic import Field, model_validator

from pipeline import ComponentConfig, ConfigModel, Duration, Seconds
from pipeline.configtypes import parse_endpoint

_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


class GlobalConfig(ConfigModel):
    """``config.global``: defaults of every scrape config."""

    scrape_interval: Duration = Seconds(60)
    scrape_timeout: Duration = Seconds(10)


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

    def timeout(self, sc: ScrapeConfig) -> float:
        if sc.scrape_timeout is not None:
            return sc.scrape_timeout
        # Prometheus: the global timeout, capped at the job's interval.
        return min(self.global_.scrape_timeout, self.interval(sc))


class PrometheusReceiverConfig(ComponentConfig):
    """``receivers.prometheus``."""

    config: PromConfig
