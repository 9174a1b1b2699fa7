"""The scrapers of the ``hostmetrics`` receiver.

Each scraper is a blocking function of psutil and ``/proc`` reads: the receiver runs it in a
worker thread (``asyncio.to_thread``), never on the event loop. Metric names, units,
temporality and attributes follow the OpenTelemetry semantic conventions as the Collector's
``hostmetricsreceiver`` emits them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psutil

from plugins._metricbuilder import Point, RequestBuilder, ScopeWriter
from plugins.hostmetricsreceiver.config import (
    CPUScraperConfig,
    DiskScraperConfig,
    FilesystemScraperConfig,
    LoadScraperConfig,
    NetworkScraperConfig,
    ProcessScraperConfig,
    ScraperConfig,
)

SCOPE_PREFIX = "pipeline/receiver/hostmetricsreceiver/"
NS = 1_000_000_000


@dataclass
class ScrapeResult:
    """What one scraper produced: points written and partial errors met."""

    points: int = 0
    errors: list[str] = field(default_factory=list)


def _boot_ns() -> int:
    return int(psutil.boot_time() * NS)


class Scraper:
    """Base: ``scrape(builder, now_ns)`` adds metrics to the request being built."""

    name = ""

    def __init__(self, config: ScraperConfig, root_path: str = "") -> None:
        self.config = config
        self.root = root_path

    def host_path(self, path: str) -> str:
        """``path`` of the host (below ``root_path`` when one is set)."""
        return os.path.join(self.root, path.lstrip("/")) if self.root else path

    def on(self, metric: str) -> bool:
        return self.config.enabled(metric)

    def scope(self, builder: RequestBuilder, now_ns: int, resource: Any = None) -> ScopeWriter:
        return builder.scope(SCOPE_PREFIX + self.name, now_ns, resource)

    def scrape(self, builder: RequestBuilder, now_ns: int) -> ScrapeResult:
        raise NotImplementedError


# -- cpu -------------------------------------------------------------------------------------
_CPU_STATES = {
    "user": "user",
    "system": "system",
    "idle": "idle",
    "irq": "interrupt",
    "nice": "nice",
    "softirq": "softirq",
    "steal": "steal",
    "iowait": "wait",
}


class CPUScraper(Scraper):
    """``system.cpu.time`` (per CPU and state) and friends."""

    name = "cpu"

    def __init__(self, config: CPUScraperConfig, root_path: str = "") -> None:
        super().__init__(config, root_path)
        self._previous: list[Any] | None = None

    def scrape(self, builder: RequestBuilder, now_ns: int) -> ScrapeResult:
        times = psutil.cpu_times(percpu=True)
        w = self.scope(builder, now_ns)
        start = _boot_ns()
        result = ScrapeResult()
        if self.on("system.cpu.time"):
            points: list[Point] = []
            for i, t in enumerate(times):
                for field_name, state in _CPU_STATES.items():
                    if hasattr(t, field_name):
                        points.append(
                            (float(getattr(t, field_name)), {"cpu": f"cpu{i}", "state": state})
                        )
            result.points += w.sum(
                "system.cpu.time",
                "s",
                "Total seconds each logical CPU spent on each mode.",
                points,
                monotonic=True,
                start_ns=start,
            )
        if self.on("system.cpu.utilization") and self._previous is not None:
            points = []
            for i, (t, p) in enumerate(zip(times, self._previous, strict=False)):
                total = sum(t) - sum(p)
                for field_name, state in _CPU_STATES.items():
                    if hasattr(t, field_name) and total > 0:
                        delta = getattr(t, field_name) - getattr(p, field_name)
                        points.append((max(delta, 0.0) / total, {"cpu": f"cpu{i}", "state": state}))
            result.points += w.gauge(
                "system.cpu.utilization",
                "1",
                "Difference in system.cpu.time since the last measurement, divided by the "
                "elapsed time and number of logical CPUs.",
                points,
            )
        self._previous = list(times)
        if self.on("system.cpu.logical.count"):
            result.points += w.sum(
                "system.cpu.logical.count",
                "{cpu}",
                "Number of available logical CPUs.",
                [(int(psutil.cpu_count(logical=True) or 0), {})],
                monotonic=False,
                start_ns=start,
            )
        if self.on("system.cpu.physical.count"):
            result.points += w.sum(
                "system.cpu.physical.count",
                "{cpu}",
                "Number of available physical CPUs.",
                [(int(psutil.cpu_count(logical=False) or 0), {})],
                monotonic=False,
                start_ns=start,
            )
        return result


# -- load ------------------------------------------------------------------------------------
class LoadScraper(Scraper):
    """``system.cpu.load_average.{1m,5m,15m}``."""

    name = "load"

    def scrape(self, builder: RequestBuilder, now_ns: int) -> ScrapeResult:
        config = self.config
        assert isinstance(config, LoadScraperConfig)
        loads = os.getloadavg()
        if config.cpu_average:
            n = psutil.cpu_count(logical=True) or 1
            loads = (loads[0] / n, loads[1] / n, loads[2] / n)
        w = self.scope(builder, now_ns)
        result = ScrapeResult()
        for window, value in zip(("1m", "5m", "15m"), loads, strict=True):
            name = f"system.cpu.load_average.{window}"
            if self.on(name):
                result.points += w.gauge(
                    name,
                    "{thread}",
                    f"Average CPU Load over {window[:-1]} minute(s).",
                    [(float(value), {})],
                )
        return result


# -- memory ----------------------------------------------------------------------------------
def _procfs() -> str:
    return str(getattr(psutil, "PROCFS_PATH", "/proc"))


def _meminfo() -> dict[str, int]:
    """``/proc/meminfo`` in bytes (Linux); empty elsewhere."""
    out: dict[str, int] = {}
    try:
        with open(os.path.join(_procfs(), "meminfo")) as f:
            for line in f:
                key, _, rest = line.partition(":")
                parts = rest.split()
                if parts and parts[0].isdigit():
                    out[key] = int(parts[0]) * (1024 if len(parts) > 1 else 1)
    except OSError:
        pass
    return out


class MemoryScraper(Scraper):
    """``system.memory.usage`` and ``system.memory.utilization`` by state."""

    name = "memory"

    def scrape(self, builder: RequestBuilder, now_ns: int) -> ScrapeResult:
        vm = psutil.virtual_memory()
        states: dict[str, int] = {"used": int(vm.used), "free": int(vm.free)}
        if hasattr(vm, "buffers"):
            states["buffered"] = int(vm.buffers)
        if hasattr(vm, "cached"):
            states["cached"] = int(vm.cached)
        info = _meminfo()
        if "SReclaimable" in info:
            states["slab_reclaimable"] = info["SReclaimable"]
        if "SUnreclaim" in info:
            states["slab_unreclaimable"] = info["SUnreclaim"]
        w = self.scope(builder, now_ns)
        result = ScrapeResult()
        if self.on("system.memory.usage"):
            result.points += w.sum(
                "system.memory.usage",
                "By",
                "Bytes of memory in use.",
                [(v, {"state": s}) for s, v in states.items()],
                monotonic=False,
                start_ns=_boot_ns(),
            )
        if self.on("system.memory.utilization") and vm.total:
            result.points += w.gauge(
                "system.memory.utilization",
                "1",
                "Percentage of memory bytes in use.",
                [(v / vm.total, {"state": s}) for s, v in states.items()],
            )
        if self.on("system.memory.limit"):
            result.points += w.sum(
                "system.memory.limit",
                "By",
                "Total bytes of memory available.",
                [(int(vm.total), {})],
                monotonic=False,
                start_ns=_boot_ns(),
            )
        return result


# -- disk ------------------------------------------------------------------------------------
class DiskScraper(Scraper):
    """``system.disk.io``, ``.operations``, ``.io_time``, ``.operation_time``, ``.merged``."""

    name = "disk"

    def scrape(self, builder: RequestBuilder, now_ns: int) -> ScrapeResult:
        config = self.config
        assert isinstance(config, DiskScraperConfig)
        counters = psutil.disk_io_counters(perdisk=True) or {}
        devices = {
            d: c
            for d, c in sorted(counters.items())
            if (config.include is None or config.include.match(d))
            and not (config.exclude is not None and config.exclude.match(d))
        }
        w = self.scope(builder, now_ns)
        start = _boot_ns()
        result = ScrapeResult()

        def directional(read: str, write: str, scale: float = 1.0) -> list[Point]:
            points: list[Point] = []
            for d, c in devices.items():
                for direction, attr in (("read", read), ("write", write)):
                    value = getattr(c, attr, None)
                    if value is not None:
                        v: int | float = value * scale if scale != 1.0 else int(value)
                        points.append((v, {"device": d, "direction": direction}))
            return points

        if self.on("system.disk.io"):
            result.points += w.sum(
                "system.disk.io",
                "By",
                "Disk bytes transferred.",
                directional("read_bytes", "write_bytes"),
                monotonic=True,
                start_ns=start,
            )
        if self.on("system.disk.operations"):
            result.points += w.sum(
                "system.disk.operations",
                "{operations}",
                "Disk operations count.",
                directional("read_count", "write_count"),
                monotonic=True,
                start_ns=start,
            )
        if self.on("system.disk.io_time"):
            points: list[Point] = [
                (c.busy_time / 1000.0, {"device": d})
                for d, c in devices.items()
                if hasattr(c, "busy_time")
            ]
            result.points += w.sum(
                "system.disk.io_time",
                "s",
                "Time disk spent activated. On Windows, this is calculated as the inverse of "
                "disk idle time.",
                points,
                monotonic=True,
                start_ns=start,
            )
        if self.on("system.disk.operation_time"):
            result.points += w.sum(
                "system.disk.operation_time",
                "s",
                "Time spent in disk operations.",
                directional("read_time", "write_time", 0.001),
                monotonic=True,
                start_ns=start,
            )
        if self.on("system.disk.merged"):
            result.points += w.sum(
                "system.disk.merged",
                "{operations}",
                "The number of disk reads/writes merged into single physical disk access "
                "operations.",
                directional("read_merged_count", "write_merged_count"),
                monotonic=True,
                start_ns=start,
            )
        return result


# -- filesystem ------------------------------------------------------------------------------
class FilesystemScraper(Scraper):
    """``system.filesystem.usage`` (used / free / reserved) and inodes, per mount point."""

    name = "filesystem"

    def _selected(self, part: Any) -> bool:
        c = self.config
        assert isinstance(c, FilesystemScraperConfig)
        checks = (
            (c.include_devices, c.exclude_devices, part.device),
            (c.include_fs_types, c.exclude_fs_types, part.fstype),
            (c.include_mount_points, c.exclude_mount_points, part.mountpoint),
        )
        for include, exclude, value in checks:
            if include is not None and not include.match(value):
                return False
            if exclude is not None and exclude.match(value):
                return False
        return True

    def scrape(self, builder: RequestBuilder, now_ns: int) -> ScrapeResult:
        c = self.config
        assert isinstance(c, FilesystemScraperConfig)
        result = ScrapeResult()
        usage: list[Point] = []
        inodes: list[Point] = []
        utilization: list[Point] = []
        seen: set[str] = set()
        for part in psutil.disk_partitions(all=c.include_virtual_filesystems):
            if part.mountpoint in seen or not self._selected(part):
                continue
            seen.add(part.mountpoint)
            try:
                st = os.statvfs(self.host_path(part.mountpoint))
            except OSError as exc:
                result.errors.append(f"{part.mountpoint}: {exc.strerror or exc}")
                continue
            opts = part.opts.split(",")
            attrs = {
                "device": part.device,
                "mode": "ro" if "ro" in opts else "rw",
                "mountpoint": part.mountpoint,
                "type": part.fstype,
            }
            used = (st.f_blocks - st.f_bfree) * st.f_frsize
            free = st.f_bavail * st.f_frsize
            reserved = (st.f_bfree - st.f_bavail) * st.f_frsize
            usage += [
                (used, {**attrs, "state": "used"}),
                (free, {**attrs, "state": "free"}),
                (reserved, {**attrs, "state": "reserved"}),
            ]
            inodes += [
                (st.f_files - st.f_ffree, {**attrs, "state": "used"}),
                (st.f_ffree, {**attrs, "state": "free"}),
            ]
            if used + free:
                utilization.append((used / (used + free), attrs))
        w = self.scope(builder, now_ns)
        start = _boot_ns()
        if self.on("system.filesystem.usage"):
            result.points += w.sum(
                "system.filesystem.usage",
                "By",
                "Filesystem bytes used.",
                usage,
                monotonic=False,
                start_ns=start,
            )
        if self.on("system.filesystem.inodes.usage"):
            result.points += w.sum(
                "system.filesystem.inodes.usage",
                "{inodes}",
                "FileSystem inodes used.",
                inodes,
                monotonic=False,
                start_ns=start,
            )
        if self.on("system.filesystem.utilization"):
            result.points += w.gauge(
                "system.filesystem.utilization",
                "1",
                "Fraction of filesystem bytes used.",
                utilization,
            )
        return result


# -- network ---------------------------------------------------------------------------------
class NetworkScraper(Scraper):
    """``system.network.io`` / ``.packets`` / ``.errors`` / ``.dropped`` per interface and
    ``system.network.connections`` (TCP, by state)."""

    name = "network"

    def scrape(self, builder: RequestBuilder, now_ns: int) -> ScrapeResult:
        c = self.config
        assert isinstance(c, NetworkScraperConfig)
        counters = psutil.net_io_counters(pernic=True) or {}
        nics = {
            n: v
            for n, v in sorted(counters.items())
            if (c.include is None or c.include.match(n))
            and not (c.exclude is not None and c.exclude.match(n))
        }
        w = self.scope(builder, now_ns)
        start = _boot_ns()
        result = ScrapeResult()

        def pair(tx: str, rx: str) -> list[Point]:
            points: list[Point] = []
            for n, v in nics.items():
                points.append((int(getattr(v, tx)), {"device": n, "direction": "transmit"}))
                points.append((int(getattr(v, rx)), {"device": n, "direction": "receive"}))
            return points

        specs = (
            (
                "system.network.io",
                "By",
                "The number of bytes transmitted and received.",
                "bytes_sent",
                "bytes_recv",
            ),
            (
                "system.network.packets",
                "{packets}",
                "The number of packets transferred.",
                "packets_sent",
                "packets_recv",
            ),
            (
                "system.network.errors",
                "{errors}",
                "The number of errors encountered.",
                "errout",
                "errin",
            ),
            (
                "system.network.dropped",
                "{packets}",
                "The number of packets dropped.",
                "dropout",
                "dropin",
            ),
        )
        for name, unit, doc, tx, rx in specs:
            if self.on(name):
                result.points += w.sum(
                    name, unit, doc, pair(tx, rx), monotonic=True, start_ns=start
                )
        if self.on("system.network.connections"):
            states: dict[str, int] = {}
            try:
                for conn in psutil.net_connections(kind="tcp"):
                    states[conn.status] = states.get(conn.status, 0) + 1
            except psutil.AccessDenied as exc:
                result.errors.append(f"connections: {exc}")
            else:
                result.points += w.sum(
                    "system.network.connections",
                    "{connections}",
                    "The number of connections.",
                    [(n, {"protocol": "tcp", "state": s}) for s, n in sorted(states.items())],
                    monotonic=False,
                    start_ns=start,
                )
        return result


# -- process ---------------------------------------------------------------------------------
@dataclass
class _CPUSample:
    create_time: float
    cpu_seconds: float
    wall: float


class ProcessScraper(Scraper):
    """One resource per selected process with ``process.*`` metrics, plus the reference
    document's ``process_cpu_usage_percent``, ``process_memory_rss_bytes`` and
    ``process_open_fds`` gauges."""

    name = "process"

    def __init__(self, config: ProcessScraperConfig, root_path: str = "") -> None:
        super().__init__(config, root_path)
        self._errors: list[str] = []
        self._cpu: dict[int, _CPUSample] = {}
        self._total_memory = 0  # read on the first scrape (in the worker thread)

    def _select(self, proc: psutil.Process) -> dict[str, Any] | None:
        c = self.config
        assert isinstance(c, ProcessScraperConfig)
        info = proc.info
        exe = info.get("exe") or ""
        cmdline = info.get("cmdline") or []
        if not exe and info.get("name") and not c.muted("exe"):
            self._errors.append(f"pid {info['pid']}: cannot read the executable")
        if not info.get("username") and not c.muted("user"):
            self._errors.append(f"pid {info['pid']}: cannot read the owner")
        exe_name = os.path.basename(exe) if exe else (info.get("name") or "")
        names = [exe_name, info.get("name") or ""]
        command_line = " ".join(cmdline)
        pid = int(info["pid"])
        if c.include is not None and not c.include.match(pid, names, command_line):
            return None
        if c.exclude is not None and c.exclude.match(pid, names, command_line):
            return None
        return {
            "process.pid": pid,
            "process.parent_pid": int(info.get("ppid") or 0),
            "process.executable.name": exe_name,
            "process.executable.path": exe,
            "process.command": cmdline[0] if cmdline else "",
            "process.command_line": command_line,
            "process.owner": info.get("username") or "",
        }

    def _processes(self, attrs: list[str]) -> Iterator[psutil.Process]:
        """Every process, or only the pids an include filter by pid names (the gateway's own
        process in the default config: no walk over the host's processes)."""
        c = self.config
        assert isinstance(c, ProcessScraperConfig)
        pids = c.include.only_pids() if c.include is not None else None
        if pids is None:
            yield from psutil.process_iter(attrs, ad_value=None)
            return
        for pid in sorted(pids):
            try:
                proc = psutil.Process(pid)
                proc.info = proc.as_dict(attrs, ad_value=None)  # what process_iter sets
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                continue
            yield proc

    def scrape(self, builder: RequestBuilder, now_ns: int) -> ScrapeResult:
        c = self.config
        assert isinstance(c, ProcessScraperConfig)
        result = ScrapeResult()
        self._errors = result.errors
        if not self._total_memory:
            self._total_memory = psutil.virtual_memory().total
        now = time.time()
        alive: set[int] = set()
        attrs = ["pid", "ppid", "name", "exe", "cmdline", "username", "create_time"]
        for proc in self._processes(attrs):
            try:
                resource = self._select(proc)
                if resource is None:
                    continue
                create_time = float(proc.info.get("create_time") or 0.0)
                if c.scrape_process_delay and now - create_time < c.scrape_process_delay:
                    continue
                alive.add(proc.pid)
                self._scrape_one(proc, resource, create_time, now, builder, now_ns, result)
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                continue  # it ended while we looked
            except psutil.AccessDenied as exc:
                if not c.muted("name"):
                    result.errors.append(
                        f"pid {proc.pid}: access denied ({exc.msg or 'no detail'})"
                    )
        for pid in set(self._cpu) - alive:
            del self._cpu[pid]
        return result

    def _scrape_one(
        self,
        proc: psutil.Process,
        resource: dict[str, Any],
        create_time: float,
        now: float,
        builder: RequestBuilder,
        now_ns: int,
        result: ScrapeResult,
    ) -> None:
        w = self.scope(builder, now_ns, resource)
        start = int(create_time * NS)
        with proc.oneshot():
            cpu = proc.cpu_times()
            mem = proc.memory_info()
            if self.on("process.cpu.time"):
                points: list[Point] = [
                    (float(cpu.user), {"state": "user"}),
                    (float(cpu.system), {"state": "system"}),
                ]
                if hasattr(cpu, "iowait"):
                    points.append((float(cpu.iowait), {"state": "wait"}))
                result.points += w.sum(
                    "process.cpu.time",
                    "s",
                    "Total CPU seconds broken down by different states.",
                    points,
                    monotonic=True,
                    start_ns=start,
                )
            cpu_seconds = float(cpu.user + cpu.system)
            prev = self._cpu.get(proc.pid)
            if prev is None or prev.create_time != create_time:
                # First sight: the average since the process started.
                base_cpu, base_wall = 0.0, create_time
            else:
                base_cpu, base_wall = prev.cpu_seconds, prev.wall
            elapsed = now - base_wall
            percent = max(cpu_seconds - base_cpu, 0.0) / elapsed * 100.0 if elapsed > 0 else 0.0
            self._cpu[proc.pid] = _CPUSample(create_time, cpu_seconds, now)
            if self.on("process.cpu.utilization"):
                n = psutil.cpu_count(logical=True) or 1
                result.points += w.gauge(
                    "process.cpu.utilization",
                    "1",
                    "Percentage of total CPU time used by the process since last scrape, "
                    "divided by the number of logical CPUs.",
                    [(percent / 100.0 / n, {})],
                )
            if self.on("process_cpu_usage_percent"):
                result.points += w.gauge(
                    "process_cpu_usage_percent",
                    "%",
                    "Current process CPU usage percentage (100 = one full core).",
                    [(percent, {})],
                )
            if self.on("process.memory.usage"):
                result.points += w.sum(
                    "process.memory.usage",
                    "By",
                    "The amount of physical memory in use.",
                    [(int(mem.rss), {})],
                    monotonic=False,
                    start_ns=start,
                )
            if self.on("process_memory_rss_bytes"):
                result.points += w.gauge(
                    "process_memory_rss_bytes",
                    "By",
                    "Process resident set size in bytes.",
                    [(int(mem.rss), {})],
                )
            if self.on("process.memory.virtual"):
                result.points += w.sum(
                    "process.memory.virtual",
                    "By",
                    "Virtual memory size.",
                    [(int(mem.vms), {})],
                    monotonic=False,
                    start_ns=start,
                )
            if self.on("process.memory.utilization") and self._total_memory:
                result.points += w.gauge(
                    "process.memory.utilization",
                    "1",
                    "Percentage of total physical memory that is used by the process.",
                    [(mem.rss / self._total_memory, {})],
                )
            if self.on("process.threads"):
                result.points += w.sum(
                    "process.threads",
                    "{threads}",
                    "Process threads count.",
                    [(int(proc.num_threads()), {})],
                    monotonic=False,
                    start_ns=start,
                )
            if self.on("process.open_file_descriptors") or self.on("process_open_fds"):
                try:
                    fds = int(proc.num_fds())
                except psutil.AccessDenied:
                    result.errors.append(f"pid {proc.pid}: cannot count open files")
                else:
                    if self.on("process.open_file_descriptors"):
                        result.points += w.sum(
                            "process.open_file_descriptors",
                            "{count}",
                            "Number of file descriptors in use by the process.",
                            [(fds, {})],
                            monotonic=False,
                            start_ns=start,
                        )
                    if self.on("process_open_fds"):
                        result.points += w.gauge(
                            "process_open_fds",
                            "{fds}",
                            "Number of open file descriptors.",
                            [(fds, {})],
                        )
            if self.on("process.disk.io") or self.on("process.disk.operations"):
                try:
                    io = proc.io_counters()
                except (psutil.AccessDenied, AttributeError):
                    io = None  # other users' processes without privileges
                    c = self.config
                    assert isinstance(c, ProcessScraperConfig)
                    if not c.muted("io"):
                        result.errors.append(f"pid {proc.pid}: cannot read the I/O counters")
                if io is not None:
                    if self.on("process.disk.io"):
                        result.points += w.sum(
                            "process.disk.io",
                            "By",
                            "Disk bytes transferred.",
                            [
                                (int(io.read_bytes), {"direction": "read"}),
                                (int(io.write_bytes), {"direction": "write"}),
                            ],
                            monotonic=True,
                            start_ns=start,
                        )
                    if self.on("process.disk.operations"):
                        result.points += w.sum(
                            "process.disk.operations",
                            "{operations}",
                            "Number of disk operations performed by the process.",
                            [
                                (int(io.read_count), {"direction": "read"}),
                                (int(io.write_count), {"direction": "write"}),
                            ],
                            monotonic=True,
                            start_ns=start,
                        )
            if self.on("process.context_switches"):
                cs = proc.num_ctx_switches()
                result.points += w.sum(
                    "process.context_switches",
                    "{count}",
                    "Number of times the process has been context switched.",
                    [
                        (int(cs.involuntary), {"context_switch_type": "involuntary"}),
                        (int(cs.voluntary), {"context_switch_type": "voluntary"}),
                    ],
                    monotonic=True,
                    start_ns=start,
                )
            if self.on("process.uptime"):
                result.points += w.gauge(
                    "process.uptime",
                    "s",
                    "The time the process has been running.",
                    [(max(now - create_time, 0.0), {})],
                )


# -- paging ----------------------------------------------------------------------------------
def _read_pairs(path: str) -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        with open(path) as fh:
            for line in fh:
                parts = line.split()
                if len(parts) >= 2 and parts[1].lstrip("-").isdigit():
                    out[parts[0]] = int(parts[1])
    except OSError:
        pass
    return out


class PagingScraper(Scraper):
    """``system.paging.usage`` / ``.utilization`` per swap device (``/proc/swaps``),
    ``system.paging.operations`` (pages and swap pages in and out) and ``system.paging.faults``
    (``/proc/vmstat``)."""

    name = "paging"

    def _swaps(self) -> list[tuple[str, int, int]]:
        out = []
        try:
            with open(os.path.join(_procfs(), "swaps")) as fh:
                next(fh, None)
                for line in fh:
                    parts = line.split()
                    if len(parts) >= 4 and parts[2].isdigit() and parts[3].isdigit():
                        out.append((parts[0], int(parts[2]) * 1024, int(parts[3]) * 1024))
        except OSError:
            pass
        return out

    def scrape(self, builder: RequestBuilder, now_ns: int) -> ScrapeResult:
        result = ScrapeResult()
        w = self.scope(builder, now_ns)
        start = _boot_ns()
        swaps = self._swaps()
        if self.on("system.paging.usage"):
            points: list[Point] = []
            for device, size, used in swaps:
                points.append((used, {"device": device, "state": "used"}))
                points.append((size - used, {"device": device, "state": "free"}))
            result.points += w.sum(
                "system.paging.usage", "By", "Swap (unix) or pagefile (windows) usage.",
                points, monotonic=False, start_ns=start,
            )  # fmt: skip
        if self.on("system.paging.utilization"):
            upoints: list[Point] = []
            for device, size, used in swaps:
                if size:
                    upoints.append((used / size, {"device": device, "state": "used"}))
                    upoints.append(((size - used) / size, {"device": device, "state": "free"}))
            result.points += w.gauge(
                "system.paging.utilization", "1",
                "Swap (unix) or pagefile (windows) utilization.", upoints,
            )  # fmt: skip
        vmstat = _read_pairs(os.path.join(_procfs(), "vmstat"))
        if not vmstat:
            result.errors.append("cannot read vmstat")
            return result
        if self.on("system.paging.operations"):
            ops: list[Point] = []
            for kind, (pin, pout) in (("major", ("pswpin", "pswpout")),
                                      ("minor", ("pgpgin", "pgpgout"))):  # fmt: skip
                if pin in vmstat:
                    ops.append((vmstat[pin], {"direction": "page_in", "type": kind}))
                if pout in vmstat:
                    ops.append((vmstat[pout], {"direction": "page_out", "type": kind}))
            result.points += w.sum(
                "system.paging.operations", "{operations}",
                "The number of paging operations.", ops, monotonic=True, start_ns=start,
            )  # fmt: skip
        if self.on("system.paging.faults") and "pgfault" in vmstat:
            major = vmstat.get("pgmajfault", 0)
            result.points += w.sum(
                "system.paging.faults", "{faults}", "The number of page faults.",
                [(major, {"type": "major"}), (max(vmstat["pgfault"] - major, 0),
                                              {"type": "minor"})],
                monotonic=True, start_ns=start,
            )  # fmt: skip
        return result


# -- processes -------------------------------------------------------------------------------
class ProcessesScraper(Scraper):
    """``system.processes.count`` by status and ``system.processes.created``."""

    name = "processes"

    def scrape(self, builder: RequestBuilder, now_ns: int) -> ScrapeResult:
        result = ScrapeResult()
        w = self.scope(builder, now_ns)
        if self.on("system.processes.count"):
            counts: dict[str, int] = {}
            for proc in psutil.process_iter(["status"], ad_value=None):
                status = proc.info.get("status") or "unknown"
                status = {"disk-sleep": "blocked", "tracing-stop": "stopped",
                          "dead": "zombies", "zombie": "zombies", "idle": "idle",
                          "parked": "idle", "waking": "running"}.get(status, status)  # fmt: skip
                counts[status] = counts.get(status, 0) + 1
            result.points += w.sum(
                "system.processes.count", "{processes}",
                "Total number of processes in each state.",
                [(n, {"status": s}) for s, n in sorted(counts.items())],
                monotonic=False, start_ns=_boot_ns(),
            )  # fmt: skip
        if self.on("system.processes.created"):
            stat = _read_pairs(os.path.join(_procfs(), "stat"))
            if "processes" in stat:
                result.points += w.sum(
                    "system.processes.created", "{processes}",
                    "Total number of created processes.", [(stat["processes"], {})],
                    monotonic=True, start_ns=_boot_ns(),
                )  # fmt: skip
            else:
                result.errors.append("cannot read the processes created")
        return result


# -- system ----------------------------------------------------------------------------------
class SystemScraper(Scraper):
    """``system.uptime``."""

    name = "system"

    def scrape(self, builder: RequestBuilder, now_ns: int) -> ScrapeResult:
        result = ScrapeResult()
        if self.on("system.uptime"):
            uptime = max(time.time() - psutil.boot_time(), 0.0)
            result.points += self.scope(builder, now_ns).gauge(
                "system.uptime", "s", "The time the system has been running.", [(uptime, {})]
            )
        return result


SCRAPERS: dict[str, type[Scraper]] = {
    "cpu": CPUScraper,
    "load": LoadScraper,
    "memory": MemoryScraper,
    "disk": DiskScraper,
    "filesystem": FilesystemScraper,
    "network": NetworkScraper,
    "paging": PagingScraper,
    "processes": ProcessesScraper,
    "process": ProcessScraper,
    "system": SystemScraper,
}


def make_scrapers(configured: dict[str, ScraperConfig], root_path: str = "") -> list[Scraper]:
    """One scraper per configured section, in a fixed order. With ``root_path``, psutil reads
    the host's ``/proc`` below it (a process-wide setting of psutil's)."""
    if root_path:
        psutil.PROCFS_PATH = os.path.join(root_path, "proc")
    return [SCRAPERS[name](cfg, root_path) for name, cfg in configured.items()]
