"""The hostmetrics receiver against the real host: values agree with /proc."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from pipeline import ConfigError, ConfigErrors, Payload, RetryableError
from pipeline.component import ComponentID, CreateSettings, Kind
from pipeline.telemetry import SelfTelemetry, component_logger
from plugins._metricbuilder import RequestBuilder
from plugins.hostmetricsreceiver.config import HostMetricsConfig
from plugins.hostmetricsreceiver.receiver import HostMetricsReceiver
from plugins.hostmetricsreceiver.scrapers import make_scrapers
from tests.support import config_from_text, running_service, wait_until

CLK_TCK = os.sysconf("SC_CLK_TCK")


class Collect:
    """A consumer that keeps what it receives (the receiver's next consumer)."""

    mutates_data = False

    def __init__(self, refuse: bool = False) -> None:
        self.payloads: list[Payload] = []
        self.refuse = refuse

    async def consume(self, data: Payload) -> None:
        if self.refuse:
            raise RetryableError("full")
        self.payloads.append(data)


def attrs(kvs: Any) -> dict[str, Any]:
    out = {}
    for kv in kvs:
        kind = kv.value.WhichOneof("value")
        out[kv.key] = getattr(kv.value, kind)
    return out


def points(request: Any, name: str) -> list[tuple[dict[str, Any], dict[str, Any], float, Any]]:
    """(resource attrs, point attrs, value, metric) for every point of ``name``."""
    out = []
    for rm in request.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                if m.name != name:
                    continue
                data = getattr(m, m.WhichOneof("data"))
                for dp in data.data_points:
                    v = dp.as_int if dp.WhichOneof("value") == "as_int" else dp.as_double
                    out.append((attrs(rm.resource.attributes), attrs(dp.attributes), v, m))
    return out


def scrape(scrapers: dict[str, Any]) -> Any:
    cfg = HostMetricsConfig.model_validate({"scrapers": scrapers})
    builder = RequestBuilder()
    for s in make_scrapers(cfg.scrapers.configured()):
        s.scrape(builder, time.time_ns())
    return builder.request


def settings(telemetry: SelfTelemetry, name: str = "hostmetrics") -> CreateSettings:
    cid = ComponentID.parse(name)
    return CreateSettings(
        cid,
        Kind.RECEIVER,
        component_logger(Kind.RECEIVER, cid),
        telemetry.component(Kind.RECEIVER, cid),
    )


# -- config ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("scrapers", "message"),
    [
        ("{}", "at least one scraper"),
        ("{cpu: {metrics: {system.cpu.nope: {enabled: true}}}}", "unknown metric"),
        ("{process: {include: {names: ['(']}, match_type: regexp}}", "unknown option 'match_type'"),
        ("{process: {include: {names: ['('], match_type: regexp}}}", "invalid regular"),
        ("{process: {include: {match_type: strict}}}", "at least one of names"),
        ("{gpu: {}}", "gpu"),
    ],
)
def test_config_errors(scrapers: str, message: str) -> None:
    text = f"""
    receivers:
      hostmetrics:
        scrapers: {scrapers}
    exporters:
      debug:
    service:
      pipelines:
        metrics: {{receivers: [hostmetrics], exporters: [debug]}}
    """
    with pytest.raises((ConfigErrors, ConfigError)) as info:
        config_from_text(text)
    assert message in str(info.value)
    assert "receivers.hostmetrics" in str(info.value)


def test_defaults() -> None:
    cfg = HostMetricsConfig.model_validate({"scrapers": {"cpu": None}})
    assert cfg.collection_interval == 60
    assert cfg.scrapers.cpu is not None and cfg.scrapers.memory is None


# -- values agree with /proc ------------------------------------------------------------------
def test_cpu_time_matches_proc_stat() -> None:
    request = scrape({"cpu": {}})
    with open("/proc/stat") as f:
        lines = [line.split() for line in f if line.startswith("cpu") and line[3] != " "]
    by_cpu = {parts[0]: [int(x) / CLK_TCK for x in parts[1:]] for parts in lines}
    got = points(request, "system.cpu.time")
    assert got
    metric = got[0][3]
    assert metric.unit == "s" and metric.sum.is_monotonic
    assert metric.sum.aggregation_temporality == 2  # cumulative
    values = {(a["cpu"], a["state"]): v for _, a, v, _ in got}
    # /proc/stat columns: user nice system idle iowait irq softirq steal
    for cpu, cols in by_cpu.items():
        assert values[(cpu, "user")] == pytest.approx(cols[0], abs=1.0)
        assert values[(cpu, "system")] == pytest.approx(cols[2], abs=1.0)
        assert values[(cpu, "idle")] == pytest.approx(cols[3], abs=2.5)
        assert values[(cpu, "wait")] == pytest.approx(cols[4], abs=1.0)
    assert {a["state"] for _, a, _, _ in got} == {
        "user",
        "system",
        "idle",
        "interrupt",
        "nice",
        "softirq",
        "steal",
        "wait",
    }


def test_load_matches_proc_loadavg() -> None:
    request = scrape({"load": {}})
    with open("/proc/loadavg") as f:
        expected = [float(x) for x in f.read().split()[:3]]
    for window, value in zip(("1m", "5m", "15m"), expected, strict=True):
        ((_, _, v, m),) = points(request, f"system.cpu.load_average.{window}")
        assert m.unit == "{thread}" and m.WhichOneof("data") == "gauge"
        assert v == pytest.approx(value, abs=0.5)


def meminfo() -> dict[str, int]:
    with open("/proc/meminfo") as f:
        return {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f}


def test_memory_matches_proc_meminfo() -> None:
    request = scrape({"memory": {}})
    info = meminfo()
    usage = {a["state"]: v for _, a, v, _ in points(request, "system.memory.usage")}
    tolerance = 64 * 1024 * 1024
    assert usage["free"] == pytest.approx(info["MemFree"], abs=tolerance)
    assert usage["buffered"] == pytest.approx(info["Buffers"], abs=tolerance)
    assert usage["slab_reclaimable"] == pytest.approx(info["SReclaimable"], abs=tolerance)
    utilization = {a["state"]: v for _, a, v, _ in points(request, "system.memory.utilization")}
    assert utilization["free"] == pytest.approx(info["MemFree"] / info["MemTotal"], abs=0.02)
    (_, _, _, metric) = points(request, "system.memory.usage")[0]
    assert metric.unit == "By" and not metric.sum.is_monotonic


def lo_counters() -> list[int]:
    with open("/proc/net/dev") as f:
        row = next(line for line in f if line.strip().startswith("lo:"))
    return [int(x) for x in row.split(":", 1)[1].split()]


def test_network_matches_proc_net_dev() -> None:
    # loopback counters only grow: the scraped values lie between a reading of /proc/net/dev
    # before the scrape and one after (whatever else uses loopback on the machine meanwhile)
    before = lo_counters()
    request = scrape({"network": {"include": {"interfaces": ["lo"]}}})
    after = lo_counters()
    io = {a["direction"]: v for _, a, v, _ in points(request, "system.network.io")}
    packets = {a["direction"]: v for _, a, v, _ in points(request, "system.network.packets")}
    assert {a["device"] for _, a, _, _ in points(request, "system.network.io")} == {"lo"}
    assert before[0] <= io["receive"] <= after[0]
    assert before[8] <= io["transmit"] <= after[8]
    assert before[1] <= packets["receive"] <= after[1]
    assert points(request, "system.network.errors")
    assert points(request, "system.network.connections")


def test_disk_matches_proc_diskstats() -> None:
    request = scrape({"disk": {}})
    stats = {}
    with open("/proc/diskstats") as f:
        for line in f:
            parts = line.split()
            stats[parts[2]] = [int(x) for x in parts[3:]]
    ops = {
        (a["device"], a["direction"]): v for _, a, v, _ in points(request, "system.disk.operations")
    }
    assert ops
    for (device, direction), v in ops.items():
        col = 0 if direction == "read" else 4
        assert v == pytest.approx(stats[device][col], abs=2000)
    io = {(a["device"], a["direction"]): v for _, a, v, _ in points(request, "system.disk.io")}
    for (device, direction), v in io.items():
        col = 2 if direction == "read" else 6  # sectors of 512 bytes
        assert v == pytest.approx(stats[device][col] * 512, abs=64 * 1024 * 1024)


def test_filesystem_root() -> None:
    request = scrape({"filesystem": {"include_mount_points": {"mount_points": ["/"]}}})
    got = points(request, "system.filesystem.usage")
    assert {a["mountpoint"] for _, a, _, _ in got} == {"/"}
    by_state = {a["state"]: v for _, a, v, _ in got}
    st = os.statvfs("/")
    assert by_state["free"] == pytest.approx(st.f_bavail * st.f_frsize, abs=256 * 1024 * 1024)
    assert by_state["used"] + by_state["free"] + by_state["reserved"] == pytest.approx(
        st.f_blocks * st.f_frsize, rel=0.001
    )


# -- processes --------------------------------------------------------------------------------
@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(["sleep", "120"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def proc_status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as f:
        return {line.split(":")[0]: line.split(":", 1)[1].strip() for line in f}


def test_process_by_name(sleeper: subprocess.Popen[bytes]) -> None:
    request = scrape({"process": {"include": {"names": ["sleep"], "match_type": "strict"}}})
    rss = [
        p for p in points(request, "process_memory_rss_bytes") if p[0]["process.pid"] == sleeper.pid
    ]
    assert len(rss) == 1
    resource, _, value, metric = rss[0]
    assert resource["process.executable.name"] == "sleep"
    assert resource["process.command_line"] == "sleep 120"
    assert resource["process.parent_pid"] == os.getpid()
    assert metric.unit == "By" and metric.WhichOneof("data") == "gauge"
    vmrss = int(proc_status(sleeper.pid)["VmRSS"].split()[0]) * 1024
    assert value == pytest.approx(vmrss, rel=0.2)
    fds = {p[0]["process.pid"]: p[2] for p in points(request, "process_open_fds")}
    assert fds[sleeper.pid] == len(os.listdir(f"/proc/{sleeper.pid}/fd"))
    threads = {p[0]["process.pid"]: p[2] for p in points(request, "process.threads")}
    assert threads[sleeper.pid] == 1
    usage = {p[0]["process.pid"]: p[2] for p in points(request, "process.memory.usage")}
    assert usage[sleeper.pid] == value
    # Only processes named "sleep" were selected.
    names = {p[0]["process.executable.name"] for p in points(request, "process.memory.usage")}
    assert names == {"sleep"}


def test_process_by_pid_and_command_line(sleeper: subprocess.Popen[bytes]) -> None:
    by_pid = scrape({"process": {"include": {"pids": [sleeper.pid]}}})
    assert {p[0]["process.pid"] for p in points(by_pid, "process.cpu.time")} == {sleeper.pid}
    by_cmd = scrape(
        {"process": {"include": {"command_lines": [r"^sleep 12\d$"], "match_type": "regexp"}}}
    )
    assert sleeper.pid in {p[0]["process.pid"] for p in points(by_cmd, "process.cpu.time")}
    excluded = scrape(
        {"process": {"include": {"names": ["sleep"]}, "exclude": {"pids": [sleeper.pid]}}}
    )
    assert sleeper.pid not in {p[0]["process.pid"] for p in points(excluded, "process.cpu.time")}


def test_process_own_process(
    sleeper: subprocess.Popen[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``own_process: true`` selects the gateway's own process (the default config's memory
    rules), read directly: the host's other processes are not walked."""
    walked: list[int] = []
    real = psutil.process_iter

    def spy(*args: Any, **kwargs: Any) -> Any:
        walked.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(psutil, "process_iter", spy)
    own = scrape({"process": {"include": {"own_process": True}}})
    assert {p[0]["process.pid"] for p in points(own, "process_memory_rss_bytes")} == {os.getpid()}
    assert {p[0]["process.pid"] for p in points(own, "process_cpu_usage_percent")} == {os.getpid()}
    assert not walked
    # with another pid, both; with names as well, the walk (names need every process)
    both = scrape({"process": {"include": {"own_process": True, "pids": [sleeper.pid]}}})
    assert {p[0]["process.pid"] for p in points(both, "process.cpu.time")} == {
        os.getpid(),
        sleeper.pid,
    }
    assert not walked
    mixed = scrape({"process": {"include": {"own_process": True, "names": ["sleep"]}}})
    assert {os.getpid(), sleeper.pid} <= {
        p[0]["process.pid"] for p in points(mixed, "process.cpu.time")
    }
    assert walked
    # a pid that is gone is skipped
    gone = subprocess.Popen(["true"])
    gone.wait()
    assert not points(scrape({"process": {"include": {"pids": [gone.pid]}}}), "process.cpu.time")
    with pytest.raises(ValueError, match="own_process"):
        HostMetricsConfig.model_validate({"scrapers": {"process": {"include": {}}}})


def test_process_cpu_percent_of_a_busy_process() -> None:
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        cfg = HostMetricsConfig.model_validate(
            {"scrapers": {"process": {"include": {"pids": [busy.pid]}}}}
        )
        (scraper,) = make_scrapers(cfg.scrapers.configured())
        scraper.scrape(RequestBuilder(), time.time_ns())
        time.sleep(1.0)
        builder = RequestBuilder()
        scraper.scrape(builder, time.time_ns())
        (_, _, percent, metric) = points(builder.request, "process_cpu_usage_percent")[0]
        assert metric.unit == "%"
        with open(f"/proc/{busy.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        cpu_now = (int(fields[11]) + int(fields[12])) / CLK_TCK
        (cpu_time,) = [
            v for _, a, v, _ in points(builder.request, "process.cpu.time") if a["state"] == "user"
        ]
        assert cpu_time <= cpu_now + 0.05
        assert 10.0 < percent <= 200.0
    finally:
        busy.kill()
        busy.wait()


# -- the receiver -----------------------------------------------------------------------------
async def test_receiver_sends_on_interval_and_counts() -> None:
    telemetry = SelfTelemetry()
    sink = Collect()
    cfg = HostMetricsConfig.model_validate(
        {
            "collection_interval": "100ms",
            "initial_delay": "0s",
            "scrapers": {"cpu": None, "memory": None, "load": None},
        }
    )
    receiver = HostMetricsReceiver(settings(telemetry), cfg, sink)
    await receiver.shutdown()  # safe before start
    await receiver.start(None)  # type: ignore[arg-type]
    await wait_until(lambda: len(sink.payloads) >= 3, within=10)
    await receiver.shutdown()
    await receiver.shutdown()
    n = len(sink.payloads)
    await asyncio.sleep(0.3)
    assert len(sink.payloads) == n  # stopped
    names = {
        m.name
        for rm in sink.payloads[0].message().resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
    }
    assert {"system.cpu.time", "system.memory.usage", "system.cpu.load_average.1m"} <= names
    scraped = sum(
        telemetry.value(
            "otelcol_scraper_scraped_metric_points_total", receiver="hostmetrics", scraper=s
        )
        for s in ("cpu", "memory", "load")
    )
    delivered = sum(p.item_count() for p in sink.payloads)
    assert delivered > 0
    # A cycle cut short by shutdown may have scraped without delivering.
    assert delivered <= scraped <= delivered + 40


async def test_scrapes_off_the_event_loop() -> None:
    """The loop keeps ticking while a whole-host process scrape runs."""
    telemetry = SelfTelemetry()
    cfg = HostMetricsConfig.model_validate({"scrapers": {"process": None, "network": None}})
    receiver = HostMetricsReceiver(settings(telemetry), cfg, Collect())
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.001)
            ticks += 1

    task = asyncio.create_task(ticker())
    started = time.perf_counter()
    await receiver.scrape_once()
    elapsed = time.perf_counter() - started
    task.cancel()
    # A blocking scrape would let the ticker run at most once.
    assert elapsed > 0.005  # the scrape took long enough to matter
    assert ticks >= 3


async def test_refused_points_are_counted_by_the_engine() -> None:
    text = """
    receivers:
      hostmetrics:
        collection_interval: 50ms
        initial_delay: 0s
        scrapers: {memory: }
    exporters:
      debug:
    service:
      telemetry: {metrics: {level: none}}
      pipelines:
        metrics: {receivers: [hostmetrics], exporters: [debug]}
    """
    async with running_service(text) as service:
        tel = service.telemetry
        await wait_until(
            lambda: (
                tel.value("otelcol_receiver_accepted_metric_points_total", receiver="hostmetrics")
                > 0
            )
        )
        assert tel.value("otelcol_exporter_sent_metric_points_total", exporter="debug") > 0
    # A refusing next consumer: nothing accepted, all refused (counted by the engine wrapper).
    from pipeline.graph import ObservedConsumer

    telemetry = SelfTelemetry()
    s = settings(telemetry)
    cfg = HostMetricsConfig.model_validate({"scrapers": {"memory": None}})
    receiver = HostMetricsReceiver(s, cfg, ObservedConsumer(Collect(refuse=True), s.telemetry))
    payload = await receiver.scrape_once()
    assert payload is not None
    assert (
        telemetry.value("otelcol_receiver_refused_metric_points_total", receiver="hostmetrics")
        == payload.item_count()
    )
    assert (
        telemetry.value("otelcol_receiver_accepted_metric_points_total", receiver="hostmetrics")
        == 0
    )


def _vmstat() -> dict[str, int]:
    out = {}
    for line in Path("/proc/vmstat").read_text().splitlines():
        key, value = line.split()
        out[key] = int(value)
    return out


def test_paging_processes_and_system_scrapers() -> None:
    """The Collector's ``paging``, ``processes`` and ``system`` scrapers against /proc."""
    before = _vmstat()
    request = scrape({"paging": {"metrics": {"system.paging.utilization": {"enabled": True}}},
                      "processes": None, "system": None})  # fmt: skip
    after = _vmstat()
    faults = {a["type"]: v for _, a, v, _ in points(request, "system.paging.faults")}
    assert before["pgmajfault"] <= faults["major"] <= after["pgmajfault"]
    ops = {
        (a["direction"], a["type"]) for _, a, _, _ in points(request, "system.paging.operations")
    }
    assert ("page_in", "minor") in ops and ("page_out", "major") in ops
    swaps = Path("/proc/swaps").read_text().splitlines()[1:]
    assert len(points(request, "system.paging.usage")) == 2 * len(swaps)
    counts = {a["status"]: v for _, a, v, _ in points(request, "system.processes.count")}
    assert counts.get("running", 0) >= 1 and sum(counts.values()) >= len(psutil.pids()) // 2
    created = points(request, "system.processes.created")[0][2]
    assert created >= int(
        next(line for line in Path("/proc/stat").read_text().splitlines()
             if line.startswith("processes")).split()[1]
    ) - 1000  # fmt: skip
    uptime = points(request, "system.uptime")[0][2]
    assert abs(uptime - (time.time() - psutil.boot_time())) < 5


def test_root_path_reads_the_host_below_it(tmp_path: Path) -> None:
    """``root_path``: the host's file system mounted elsewhere (here: symlinks to /)."""
    for name in ("proc", "sys", "etc", "dev", "run"):
        (tmp_path / name).symlink_to(f"/{name}")
    (tmp_path / "mnt").mkdir()
    try:
        cfg = HostMetricsConfig.model_validate(
            {"root_path": str(tmp_path), "scrapers": {"memory": None, "filesystem": None}}
        )
        builder = RequestBuilder()
        for s in make_scrapers(cfg.scrapers.configured(), cfg.root_path):
            s.scrape(builder, time.time_ns())
        assert str(tmp_path / "proc") == psutil.PROCFS_PATH
        assert points(builder.request, "system.memory.usage")
    finally:
        psutil.PROCFS_PATH = "/proc"
    with pytest.raises(ValueError, match="has no proc directory"):
        HostMetricsConfig.model_validate({"root_path": "/nonexistent", "scrapers": {"cpu": None}})


def test_mute_process_errors() -> None:
    """Without privileges some processes' I/O counters cannot be read: counted as errors,
    unless ``mute_process_io_error`` (or ``mute_process_all_errors``) says otherwise."""
    cfg = HostMetricsConfig.model_validate(
        {"scrapers": {"process": {"mute_process_all_errors": True, "mute_process_io_error": True,
                                  "mute_process_exe_error": True,
                                  "mute_process_user_error": True,
                                  "mute_process_name_error": True}}}
    )  # fmt: skip
    (scraper,) = make_scrapers(cfg.scrapers.configured())
    result = scraper.scrape(RequestBuilder(), time.time_ns())
    assert result.errors == []
    assert cfg.scrapers.process is not None and cfg.scrapers.process.muted("io")
