"""Config of the ``hostmetrics`` receiver, with the Collector's option names.

A scraper runs when its section is present under ``scrapers`` (even empty: ``cpu:``). Each
scraper takes ``metrics: {<metric name>: {enabled: bool}}`` to switch single metrics on or off,
as the Collector's generated ``metadata.yaml`` settings do.
"""

from __future__ import annotations

import os
import re
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from pipeline import ComponentConfig, ConfigModel, Duration, Seconds

MatchType = Literal["strict", "regexp"]


class MetricSettings(ConfigModel):
    """``metrics.<name>``."""

    enabled: bool = True


class ScraperConfig(ConfigModel):
    """Options every scraper shares."""

    DEFAULT_METRICS: ClassVar[dict[str, bool]] = {}

    metrics: dict[str, MetricSettings] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known_metrics(self) -> ScraperConfig:
        unknown = sorted(set(self.metrics) - set(self.DEFAULT_METRICS))
        if unknown:
            raise ValueError(
                f"unknown metric(s) {', '.join(unknown)}; this scraper emits "
                + ", ".join(sorted(self.DEFAULT_METRICS))
            )
        return self

    def enabled(self, metric: str) -> bool:
        """Whether ``metric`` is emitted (the user's setting, else the default)."""
        setting = self.metrics.get(metric)
        return setting.enabled if setting is not None else self.DEFAULT_METRICS[metric]


class Filter(ConfigModel):
    """A list of names matched exactly (``strict``) or as regular expressions (``regexp``,
    unanchored search, as the Collector's filterset)."""

    match_type: MatchType = "strict"

    def _compile(self, values: list[str]) -> list[re.Pattern[str]]:
        if self.match_type != "regexp":
            return []
        out = []
        for v in values:
            try:
                out.append(re.compile(v))
            except re.error as exc:
                raise ValueError(f"invalid regular expression {v!r}: {exc}") from exc
        return out

    def matches(self, values: list[str], candidate: str) -> bool:
        if self.match_type == "strict":
            return candidate in values
        return any(p.search(candidate) for p in self._compile(values))


class DeviceFilter(Filter):
    """``include``/``exclude`` of the disk scraper."""

    devices: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> DeviceFilter:
        self._compile(self.devices)
        return self

    def match(self, device: str) -> bool:
        return self.matches(self.devices, device)


class InterfaceFilter(Filter):
    """``include``/``exclude`` of the network scraper."""

    interfaces: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> InterfaceFilter:
        self._compile(self.interfaces)
        return self

    def match(self, interface: str) -> bool:
        return self.matches(self.interfaces, interface)


class FSTypeFilter(Filter):
    fs_types: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> FSTypeFilter:
        self._compile(self.fs_types)
        return self

    def match(self, value: str) -> bool:
        return self.matches(self.fs_types, value)


class MountPointFilter(Filter):
    mount_points: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> MountPointFilter:
        self._compile(self.mount_points)
        return self

    def match(self, value: str) -> bool:
        return self.matches(self.mount_points, value)


class ProcessFilter(Filter):
    """``include``/``exclude`` of the process scraper: a process matches when its executable
    name is in ``names``, its pid in ``pids``, its command line matches ``command_lines``, or
    it is the gateway's own process with ``own_process: true`` (``pids``, ``command_lines``
    and ``own_process`` are this gateway's additions)."""

    names: list[str] = Field(default_factory=list)
    pids: list[int] = Field(default_factory=list)
    command_lines: list[str] = Field(default_factory=list)
    own_process: bool = False
    """The gateway's own process (whatever its pid after a restart): ``include: {own_process:
    true}`` gives the gateway's CPU and memory (the default config's memory rules)."""

    @model_validator(mode="after")
    def _check(self) -> ProcessFilter:
        if not (self.names or self.pids or self.command_lines or self.own_process):
            raise ValueError("give at least one of names, pids, command_lines or own_process")
        self._compile(self.names + self.command_lines)
        return self

    def only_pids(self) -> set[int] | None:
        """The pids this filter can match when it names processes by pid only (``pids``,
        ``own_process``): the scraper then reads just those, not every process."""
        if self.names or self.command_lines:
            return None
        return set(self.pids) | ({os.getpid()} if self.own_process else set())

    def match(self, pid: int, names: list[str], command_line: str) -> bool:
        if pid in self.pids:
            return True
        if self.own_process and pid == os.getpid():
            return True
        if any(self.matches(self.names, n) for n in names if n):
            return True
        return bool(self.command_lines) and self.matches(self.command_lines, command_line)


class CPUScraperConfig(ScraperConfig):
    """``scrapers.cpu``."""

    DEFAULT_METRICS = {
        "system.cpu.time": True,
        "system.cpu.utilization": False,
        "system.cpu.logical.count": False,
        "system.cpu.physical.count": False,
    }


class LoadScraperConfig(ScraperConfig):
    """``scrapers.load``; ``cpu_average`` divides by the number of logical CPUs."""

    DEFAULT_METRICS = {
        "system.cpu.load_average.1m": True,
        "system.cpu.load_average.5m": True,
        "system.cpu.load_average.15m": True,
    }
    cpu_average: bool = False


class MemoryScraperConfig(ScraperConfig):
    """``scrapers.memory``."""

    DEFAULT_METRICS = {
        "system.memory.usage": True,
        # Off by default in the Collector; on here because the reference alerting uses it.
        "system.memory.utilization": True,
        "system.memory.limit": False,
    }


class DiskScraperConfig(ScraperConfig):
    """``scrapers.disk``."""

    DEFAULT_METRICS = {
        "system.disk.io": True,
        "system.disk.operations": True,
        "system.disk.io_time": True,
        "system.disk.operation_time": True,
        "system.disk.merged": True,
    }
    include: DeviceFilter | None = None
    exclude: DeviceFilter | None = None


class FilesystemScraperConfig(ScraperConfig):
    """``scrapers.filesystem``."""

    DEFAULT_METRICS = {
        "system.filesystem.usage": True,
        "system.filesystem.inodes.usage": True,
        "system.filesystem.utilization": False,
    }
    include_devices: DeviceFilter | None = None
    exclude_devices: DeviceFilter | None = None
    include_fs_types: FSTypeFilter | None = None
    exclude_fs_types: FSTypeFilter | None = None
    include_mount_points: MountPointFilter | None = None
    exclude_mount_points: MountPointFilter | None = None
    include_virtual_filesystems: bool = False


class NetworkScraperConfig(ScraperConfig):
    """``scrapers.network``."""

    DEFAULT_METRICS = {
        "system.network.io": True,
        "system.network.packets": True,
        "system.network.errors": True,
        "system.network.dropped": True,
        "system.network.connections": True,
    }
    include: InterfaceFilter | None = None
    exclude: InterfaceFilter | None = None


class ProcessScraperConfig(ScraperConfig):
    """``scrapers.process``: one resource per selected process."""

    DEFAULT_METRICS = {
        "process.cpu.time": True,
        "process.cpu.utilization": False,
        "process.memory.usage": True,
        "process.memory.virtual": True,
        "process.memory.utilization": False,
        "process.disk.io": True,
        "process.disk.operations": False,
        "process.threads": True,
        "process.open_file_descriptors": True,
        "process.context_switches": False,
        "process.uptime": False,
        # The reference document's names, kept so its alert rules work unchanged.
        "process_cpu_usage_percent": True,
        "process_memory_rss_bytes": True,
        "process_open_fds": True,
    }
    include: ProcessFilter | None = None
    exclude: ProcessFilter | None = None
    scrape_process_delay: Duration = Seconds(0)
    """Skip processes younger than this."""
    mute_process_name_error: bool = False
    mute_process_exe_error: bool = False
    mute_process_io_error: bool = False
    mute_process_user_error: bool = False
    mute_process_cgroup_error: bool = False
    mute_process_all_errors: bool = False
    """The Collector's switches that silence the errors of reading a process's name,
    executable, I/O counters, owner or cgroup (other users' processes without privileges):
    muted errors are neither logged nor counted in otelcol_scraper_errored_metric_points."""

    def muted(self, kind: str) -> bool:
        return self.mute_process_all_errors or bool(getattr(self, f"mute_process_{kind}_error"))


class PagingScraperConfig(ScraperConfig):
    """``scrapers.paging``: swap usage and paging activity."""

    DEFAULT_METRICS = {
        "system.paging.usage": True,
        "system.paging.operations": True,
        "system.paging.faults": True,
        "system.paging.utilization": False,
    }


class ProcessesScraperConfig(ScraperConfig):
    """``scrapers.processes``: process counts by status and processes created."""

    DEFAULT_METRICS = {"system.processes.count": True, "system.processes.created": True}


class SystemScraperConfig(ScraperConfig):
    """``scrapers.system``: ``system.uptime``."""

    DEFAULT_METRICS = {"system.uptime": True}


class ScrapersConfig(ConfigModel):
    """``scrapers``: a scraper runs when its key is present."""

    cpu: CPUScraperConfig | None = None
    load: LoadScraperConfig | None = None
    memory: MemoryScraperConfig | None = None
    disk: DiskScraperConfig | None = None
    filesystem: FilesystemScraperConfig | None = None
    network: NetworkScraperConfig | None = None
    paging: PagingScraperConfig | None = None
    processes: ProcessesScraperConfig | None = None
    process: ProcessScraperConfig | None = None
    system: SystemScraperConfig | None = None

    def configured(self) -> dict[str, ScraperConfig]:
        out: dict[str, ScraperConfig] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out


class HostMetricsConfig(ComponentConfig):
    """``receivers.hostmetrics``."""

    collection_interval: Duration = Seconds(60)
    initial_delay: Duration = Seconds(1)
    root_path: str = ""
    """Where the host's file system is mounted when the gateway runs in a container (such as
    ``/hostfs``): ``/proc`` is read below it and file systems are measured there."""
    scrapers: ScrapersConfig = ScrapersConfig()

    @model_validator(mode="after")
    def _check(self) -> HostMetricsConfig:
        if self.root_path:
            import os

            if not os.path.isabs(self.root_path):
                raise ValueError(f"root_path must be an absolute path, got {self.root_path!r}")
            if not os.path.isdir(os.path.join(self.root_path, "proc")):
                raise ValueError(
                    f"root_path {self.root_path!r} has no proc directory: mount the host's "
                    "file system there (such as -v /:/hostfs:ro)"
                )
        if self.collection_interval <= 0:
            raise ValueError("collection_interval must be above 0")
        if not self.scrapers.configured():
            raise ValueError(
                "must specify at least one scraper when using the hostmetrics receiver, "
                "for example 'scrapers: {cpu: , memory: }'"
            )
        return self
