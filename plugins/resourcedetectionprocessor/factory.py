"""Config and factory of the ``resourcedetection`` processor."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, model_validator

from pipeline import (
    ComponentConfig,
    ConfigModel,
    Consumer,
    CreateSettings,
    Duration,
    ProcessorFactory,
    Seconds,
    Signal,
    Stability,
)

if TYPE_CHECKING:
    from plugins.resourcedetectionprocessor.processor import ResourceDetectionProcessor


class AttributeSetting(ConfigModel):
    enabled: bool = True


class DetectorConfig(ConfigModel):
    """Options every detector shares: ``resource_attributes.<name>.enabled``."""

    DEFAULTS: ClassVar[dict[str, bool]] = {}
    resource_attributes: dict[str, AttributeSetting] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known(self) -> DetectorConfig:
        unknown = sorted(set(self.resource_attributes) - set(self.DEFAULTS))
        if unknown:
            raise ValueError(
                f"unknown resource attribute(s) {', '.join(unknown)}; this detector sets "
                + ", ".join(sorted(self.DEFAULTS))
            )
        return self

    def enabled(self, name: str) -> bool:
        setting = self.resource_attributes.get(name)
        return setting.enabled if setting is not None else self.DEFAULTS[name]


class SystemConfig(DetectorConfig):
    """``system``: the host, read from the operating system."""

    DEFAULTS = {
        "host.name": True, "os.type": True, "host.id": False, "host.arch": False,
        "host.ip": False, "host.mac": False, "host.cpu.vendor.id": False,
        "host.cpu.family": False, "host.cpu.model.id": False, "host.cpu.model.name": False,
        "host.cpu.stepping": False, "host.cpu.cache.l2.size": False, "os.description": False,
        "os.version": False,
    }  # fmt: skip
    hostname_sources: list[Literal["dns", "os", "cname", "lookup"]] = Field(
        default_factory=lambda: ["dns", "os"]  # type: ignore[arg-type]
    )


class DockerConfig(DetectorConfig):
    """``docker``: the Docker daemon's host name and OS type (``/var/run/docker.sock``)."""

    DEFAULTS = {"host.name": True, "os.type": True}


class EnvConfig(ConfigModel):
    """``env``: ``OTEL_RESOURCE_ATTRIBUTES``; no options."""


DETECTORS = ("env", "system", "docker")


class ResourceDetectionConfig(ComponentConfig):
    """``processors.resourcedetection``."""

    detectors: list[str] = Field(default_factory=lambda: ["env"])
    override: bool = True
    timeout: Duration = Seconds(5)
    attributes: list[str] | None = None
    """Deprecated in the Collector: only these detected attributes are added."""
    system: SystemConfig = SystemConfig()
    docker: DockerConfig = DockerConfig()
    env: EnvConfig | None = None

    @model_validator(mode="after")
    def _check(self) -> ResourceDetectionConfig:
        unknown = [d for d in self.detectors if d not in DETECTORS]
        if unknown:
            raise ValueError(
                f"unsupported detector(s) {', '.join(unknown)}; this gateway has "
                f"{', '.join(DETECTORS)} (cloud detectors such as ec2, gcp, azure, eks and "
                "k8snode are not implemented)"
            )
        return self


class ResourceDetectionProcessorFactory(ProcessorFactory):
    type = "resourcedetection"
    aliases = ("resource_detection",)  # the Collector's newer name
    config_class = ResourceDetectionConfig
    description = "Adds resource attributes detected at start (env, system, docker)."
    stability = {
        Signal.TRACES: Stability.BETA,
        Signal.METRICS: Stability.BETA,
        Signal.LOGS: Stability.BETA,
    }

    def _create(self, settings: CreateSettings, config: Any, signal: Signal,
                nxt: Consumer) -> ResourceDetectionProcessor:  # fmt: skip
        from plugins.resourcedetectionprocessor.processor import ResourceDetectionProcessor

        return ResourceDetectionProcessor(settings, config, signal, nxt)

    def create_traces(self, settings: CreateSettings, config: ResourceDetectionConfig,
                      next_consumer: Consumer) -> ResourceDetectionProcessor:  # fmt: skip
        return self._create(settings, config, Signal.TRACES, next_consumer)

    def create_metrics(self, settings: CreateSettings, config: ResourceDetectionConfig,
                       next_consumer: Consumer) -> ResourceDetectionProcessor:  # fmt: skip
        return self._create(settings, config, Signal.METRICS, next_consumer)

    def create_logs(self, settings: CreateSettings, config: ResourceDetectionConfig,
                    next_consumer: Consumer) -> ResourceDetectionProcessor:  # fmt: skip
        return self._create(settings, config, Signal.LOGS, next_consumer)
