"""Forward-path benchmark: the gateway (``otlp -> batch -> otlp``) against rotel, on the same load.

    .venv/bin/python -m benchmarks.forward_path [--rate 100000] [--duration 20] [--repeat 3]
        [--protocols grpc,http] [--compression none] [--out benchmarks/results/forward-path.md]
        [--baseline DIR] [--ottl] [--health-every N]

``--baseline DIR`` adds the system ``baseline``: the gateway run from another source tree (an
earlier commit, e.g. ``git archive main | tar -x -C DIR`` with the C extensions built or copied
in), measured in the same run as this tree's gateway and rotel, to show what a change costs.

``--ottl`` puts two processors before the gateway's batch: ``filter`` dropping spans named
``health-check`` and ``transform`` setting one attribute on every span (rotel still forwards:
the question is whether the gateway with both costs less than rotel without); the system
``forward`` (``--systems gateway,forward,rotel``) is the same gateway without them, to show
what the two cost; ``--health-every
N`` names every Nth span of the load ``health-check`` (default 50 with ``--ottl``, so the filter
drops 2 % of the spans and CPU per span is counted over the spans delivered).

For each protocol and each repetition, the gateway and then rotel run one after the other,
each pinned to core 0 with ``taskset -c 0``; the load generator and the counting sink run on
core 1. For each run: spans/s delivered to the sink during the load, CPU-seconds per million
spans (utime + stime of the process under test, from /proc, from just before the load until
everything is delivered), peak RSS (VmHWM) and spans lost (acknowledged by the process under
test but never delivered). The report quotes the medians and the gateway/rotel CPU ratio.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rotel_binary() -> str:
    import rotel

    return str(Path(rotel.__file__).parent / "rotel-agent")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def wait_port(port: int, proc: subprocess.Popen[bytes], within: float = 20.0) -> None:
    import socket

    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited early with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"port {port} not open in time")


def sink_count(control_port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{control_port}/count", timeout=5) as r:
        return int(json.loads(r.read())["spans"])


def sink_command(grpc_port: int, http_port: int, control_port: int) -> list[str]:
    """The counting sink (``benchmarks/sink.py``), pinned to CPU 1."""
    return [
        "taskset", "-c", "1", PYTHON, "-m", "benchmarks.sink",
        "--grpc-port", str(grpc_port), "--http-port", str(http_port),
        "--control-port", str(control_port),
    ]  # fmt: skip


def drain(control_port: int, want: int, patience: float = 5.0) -> None:
    """Wait until the sink counted ``want`` spans, or its count stopped moving for
    ``patience`` seconds."""
    last, still_since = -1, time.monotonic()
    while True:
        n = sink_count(control_port)
        if n >= want:
            return
        if n != last:
            last, still_since = n, time.monotonic()
        elif time.monotonic() - still_since > patience:
            return
        time.sleep(0.1)


@contextlib.contextmanager
def process(cmd: list[str], log: Path, cwd: Path = ROOT) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=cwd)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


GATEWAY_CONFIG = """
receivers:
  otlp:
    protocols:
      {protocol}:
        endpoint: 127.0.0.1:{port}
processors:
  batch: {{}}{ottl_processors}
exporters:
  otlp:
    endpoint: 127.0.0.1:{sink_port}
    tls: {{insecure: true}}
    compression: {compression}
service:
  telemetry:
    logs: {{level: warn}}
    metrics: {{address: 127.0.0.1:{metrics_port}}}
  pipelines:
    traces: {{receivers: [otlp], processors: [{processors}batch], exporters: [otlp]}}
"""
OTTL_PROCESSORS = """
  filter/health:
    error_mode: ignore
    traces:
      span:
        - 'span.name == "health-check"'
  transform/env:
    error_mode: ignore
    trace_statements:
      - 'set(span.attributes["deployment.environment"], "production")'"""


def system_command(
    system: str,
    protocol: str,
    port: int,
    other_port: int,
    sink_port: int,
    compression: str,
    workdir: Path,
    ottl: bool = False,
) -> list[str]:
    if system in ("gateway", "baseline", "forward"):
        config = workdir / f"gateway-{protocol}.yaml"
        config.write_text(
            GATEWAY_CONFIG.format(
                protocol=protocol,
                port=port,
                sink_port=sink_port,
                compression=compression,
                metrics_port=free_port(),
                ottl_processors=OTTL_PROCESSORS if ottl else "",
                processors="filter/health, transform/env, " if ottl else "",
            )
        )
        return ["taskset", "-c", "0", PYTHON, "-m", "pipeline", "run", "--config", str(config)]
    grpc_port, http_port = (port, other_port) if protocol == "grpc" else (other_port, port)
    return [
        "taskset", "-c", "0", rotel_binary(), "start",
        "--pid-file", str(workdir / "rotel.pid"),
        "--log-file", str(workdir / "rotel.log"),
        "--otlp-grpc-endpoint", f"127.0.0.1:{grpc_port}",
        "--otlp-http-endpoint", f"127.0.0.1:{http_port}",
        "--exporter", "otlp",
        "--otlp-exporter-endpoint", f"http://127.0.0.1:{sink_port}",
        "--otlp-exporter-protocol", "grpc",
        "--otlp-exporter-compression", compression,
    ]  # fmt: skip


def delivery_rate(samples: list[tuple[float, int]], start: float, end: float) -> float:
    """Spans/s reaching the sink while the load was being sent (from the sink's count,
    sampled every 0.2 s, between the samples nearest to the load's start and end)."""
    inside = [(t, n) for t, n in samples if start <= t <= end]
    if len(inside) < 2:
        return float("nan")
    (t0, n0), (t1, n1) = inside[0], inside[-1]
    return (n1 - n0) / (t1 - t0) if t1 > t0 else float("nan")


@dataclass
class Run:
    system: str
    protocol: str
    offered_spans_per_s: float
    delivered_spans_per_s: float
    cpu_s_per_million: float
    peak_rss_mib: float
    spans_acknowledged: int
    spans_delivered: int
    spans_lost: int
    spans_refused: int
    late_requests: int
    spans_filtered: int = 0  # dropped by the filter processor on purpose (--ottl)


def one_run(
    system: str,
    protocol: str,
    rate: float,
    duration: float,
    compression: str,
    workdir: Path,
    baseline: Path | None = None,
    ottl: bool = False,
    health_every: int = 0,
) -> Run:
    sink_grpc, sink_http, sink_ctl = free_port(), free_port(), free_port()
    port, other = free_port(), free_port()
    with process(sink_command(sink_grpc, sink_http, sink_ctl), workdir / "sink.log") as sink:
        wait_port(sink_ctl, sink)
        cmd = system_command(
            system,
            protocol,
            port,
            other,
            sink_grpc,
            compression,
            workdir,
            ottl and system == "gateway",
        )
        cwd = baseline if system == "baseline" and baseline is not None else ROOT
        with process(cmd, workdir / f"{system}.log", cwd) as sut:
            wait_port(port, sut)
            time.sleep(1.0)
            cpu0 = cpu_seconds(sut.pid)
            count0 = sink_count(sink_ctl)
            load_cmd = [
                "taskset", "-c", "1", PYTHON, "-m", "benchmarks.loadgen",
                "--protocol", protocol, "--target", f"127.0.0.1:{port}",
                "--rate", str(rate), "--duration", str(duration),
                "--health-every", str(health_every),
            ]  # fmt: skip
            samples: list[tuple[float, int]] = []
            with subprocess.Popen(
                load_cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            ) as load:
                while load.poll() is None:
                    samples.append((time.time(), sink_count(sink_ctl)))
                    time.sleep(0.2)
                stdout, stderr = load.communicate()
            if load.returncode:
                raise RuntimeError(f"load generator failed: {stderr}")
            stats = json.loads(stdout.strip().splitlines()[-1])
            rate_delivered = delivery_rate(
                samples, stats["send_started_at"], stats["send_ended_at"]
            )
            # drain: wait until all acknowledged spans arrived, or the count stops moving
            filtered = (
                stats["ok_spans"] // health_every
                if ottl and system == "gateway" and health_every
                else 0
            )
            drain(sink_ctl, count0 + stats["ok_spans"] - filtered)
            cpu1 = cpu_seconds(sut.pid)
            rss = peak_rss_mib(sut.pid)
            delivered = sink_count(sink_ctl) - count0
    return Run(
        system=system,
        protocol=protocol,
        offered_spans_per_s=stats["offered_spans_per_s"],
        delivered_spans_per_s=round(rate_delivered),
        cpu_s_per_million=round((cpu1 - cpu0) / max(delivered, 1) * 1e6, 3),
        peak_rss_mib=round(rss, 1),
        spans_acknowledged=stats["ok_spans"],
        spans_delivered=delivered,
        spans_lost=max(0, stats["ok_spans"] - filtered - delivered),
        spans_refused=stats["refused_spans"],
        late_requests=stats["late"],
        spans_filtered=filtered,
    )


def median_rows(runs: list[Run]) -> list[dict[str, Any]]:
    rows = []
    order = {"gateway": 0, "baseline": 1, "forward": 2}
    keys = sorted({(r.protocol, r.system) for r in runs}, key=lambda k: (k[0], order.get(k[1], 2)))
    for protocol, system in keys:
        rs = [r for r in runs if r.protocol == protocol and r.system == system]
        rows.append(
            {
                "protocol": protocol,
                "system": system,
                "runs": len(rs),
                "offered": statistics.median(r.offered_spans_per_s for r in rs),
                "delivered": statistics.median(r.delivered_spans_per_s for r in rs),
                "cpu": statistics.median(r.cpu_s_per_million for r in rs),
                "cpu_all": [r.cpu_s_per_million for r in rs],
                "rss": statistics.median(r.peak_rss_mib for r in rs),
                "rss_max": max(r.peak_rss_mib for r in rs),
                "lost": sum(r.spans_lost for r in rs),
                "refused": sum(r.spans_refused for r in rs),
            }
        )
    return rows


def report(runs: list[Run], args: argparse.Namespace, command: str) -> str:
    rows = median_rows(runs)
    lines = [
        "# Forward path: gateway vs rotel",
        "",
        f"Generated by `{command}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
        f"Load: {args.rate:,.0f} spans/s offered for {args.duration:g} s per run, 1,000 spans per "
        "request, 8 string attributes per span (~260 bytes/span), pre-encoded; "
        f"export compression `{args.compression}` on both; process under test pinned with "
        "`taskset -c 0`, load generator and counting sink on core 1. Medians of "
        f"{args.repeat} runs (the machine is shared: figures are noisy).",
        *(
            [
                "",
                "The gateway runs `filter` (drops spans named `health-check`: every "
                f"{args.health_every}th span of the load) and `transform` (sets "
                "`deployment.environment` on every span) before its batch; rotel forwards. CPU "
                "per span is counted over the spans delivered.",
            ]
            if getattr(args, "ottl", False)
            else []
        ),
        "",
        "| protocol in | system | spans/s offered | spans/s delivered | CPU-s per 1M spans "
        "(median; all runs) | peak RSS MiB (median / max) | spans lost | spans refused |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        cpu_all = ", ".join(f"{c:.2f}" for c in r["cpu_all"])
        lines.append(
            f"| {r['protocol']} | {r['system']} | {r['offered']:,.0f} | {r['delivered']:,.0f} | "
            f"**{r['cpu']:.2f}** ({cpu_all}) | {r['rss']:.1f} / {r['rss_max']:.1f} | "
            f"{r['lost']} | {r['refused']} |"
        )
    lines.append("")
    for protocol in sorted({r["protocol"] for r in rows}):
        by = {r["system"]: r for r in rows if r["protocol"] == protocol}
        rotel_goal = (
            "; goal < 1: below rotel's forward cost with both processors"
            if getattr(args, "ottl", False)
            else "; goal <= 0.33"
        )
        for other, name, goal in [
            ("rotel", "rotel's", rotel_goal),
            ("baseline", f"the baseline's (`{getattr(args, 'baseline', '')}`)", ""),
            ("forward", "the same gateway's without the two processors", ""),
        ]:
            if "gateway" not in by or other not in by or not by[other]["cpu"]:
                continue
            ratio = by["gateway"]["cpu"] / by[other]["cpu"]
            paired = [
                g.cpu_s_per_million / o.cpu_s_per_million
                for g, o in zip(
                    [x for x in runs if x.protocol == protocol and x.system == "gateway"],
                    [x for x in runs if x.protocol == protocol and x.system == other],
                    strict=False,
                )
                if o.cpu_s_per_million
            ]
            lines.append(
                f"- **{protocol}**: gateway CPU per span = {ratio:.2f} x {name} (median of "
                f"medians; per-run pairs: {', '.join(f'{p:.2f}' for p in paired)}){goal}."
            )
    lines += ["", "Raw runs:", "", "```json"]
    lines += [json.dumps(asdict(r)) for r in runs]
    lines += ["```", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=100_000)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--protocols", default="grpc,http")
    parser.add_argument("--systems", default="gateway,rotel")
    parser.add_argument("--compression", choices=["none", "gzip"], default="none")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/forward-path.md"))
    parser.add_argument(
        "--baseline", type=Path, help="another source tree of the gateway, run as `baseline`"
    )
    parser.add_argument(
        "--ottl", action="store_true", help="filter and transform processors before the batch"
    )
    parser.add_argument("--health-every", type=int, default=None)
    args = parser.parse_args()
    if args.health_every is None:
        args.health_every = 50 if args.ottl else 0
    systems = args.systems.split(",")
    if args.baseline is not None and "baseline" not in systems:
        systems.insert(1, "baseline")
    command = ".venv/bin/python -m benchmarks.forward_path " + shlex.join(sys.argv[1:])
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="forward-path-") as tmp:
        workdir = Path(tmp)
        for i in range(args.repeat):
            for protocol in args.protocols.split(","):
                for system in systems:
                    run = one_run(
                        system,
                        protocol,
                        args.rate,
                        args.duration,
                        args.compression,
                        workdir,
                        args.baseline,
                        args.ottl,
                        args.health_every,
                    )
                    runs.append(run)
                    print(f"[{i + 1}/{args.repeat}] {json.dumps(asdict(run))}", flush=True)
    text = report(runs, args, command.strip())
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
