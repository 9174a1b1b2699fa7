"""Benchmark: what durable acknowledgements cost per span, beside the same pipelines without
them and rotel's forward path, in the same run.

    .venv/bin/python -m benchmarks.durable [--rate 30000] [--duration 15] [--repeat 3]
        [--cases rotel,forward,forward+wal,forward+wal+queue,...]
        [--out benchmarks/results/durable.md]

Cases (OTLP/gRPC in, OTLP/gRPC out, uncompressed, to one counting sink):

* ``rotel``: rotel-agent's forward path;
* ``forward``: the gateway, otlp -> batch -> otlp (in-memory sending queue);
* ``forward+wal``: the same with ``service.durability`` (the write-ahead log in a
  ``file_storage`` extension, ``fsync: false``: acknowledged once in the page cache, fsynced
  every second); the sending queue stays in memory (its batches hold their records);
* ``forward+wal+queue``: and the persistent sending queue (``sending_queue.storage``) in the
  same storage: each span is written twice (the request in the log, the batch in the queue);
* ``forward+wal+queue+fsync``: the same with ``fsync: true`` (acknowledged after a
  group-committed fsync);
* ``agent`` / ``agent+wal+queue``: otlp -> memory_limiter -> workflow (2 s wait) -> batch ->
  otlp, without and with both (as configs/durable-gateway.yaml, without the connectors).

For each case and repetition the process under test is pinned to CPU 0 (``taskset -c 0``), the
load generator and the sink to CPU 1. Reported: CPU seconds of the process per million spans
(user + system, from /proc, from the start of the load until everything acknowledged was
delivered), peak RSS, bytes the process wrote to storage per span (``write_bytes`` of
/proc/<pid>/io) and spans lost (acknowledged, never delivered). Medians over the repetitions;
the machine is shared, so figures are noisy: compare ratios within a run.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks.forward_path import (
    PYTHON,
    ROOT,
    cpu_seconds,
    drain,
    free_port,
    peak_rss_mib,
    process,
    rotel_binary,
    sink_command,
    sink_count,
    wait_port,
)

CASES = (
    "rotel",
    "forward",
    "forward+wal",
    "forward+wal+queue",
    "forward+wal+queue+fsync",
    "agent",
    "agent+wal+queue",
)

CONFIG = """
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:{port}"}}
processors:
  memory_limiter: {{check_interval: 1s, limit_percentage: 80, spike_limit_percentage: 20}}
  workflow: {{wait_duration: 2s, max_traces: 10000, max_bytes: 67108864}}
  batch: {{}}
exporters:
  otlp:
    endpoint: "127.0.0.1:{sink_port}"
    tls: {{insecure: true}}
    compression: none
    sending_queue: {{{queue}}}
{extensions}
service:
{service_extensions}
  telemetry:
    logs: {{level: warn}}
    metrics: {{address: "127.0.0.1:{metrics_port}"}}
  pipelines:
    traces: {{receivers: [otlp], processors: [{processors}], exporters: [otlp]}}
"""


def gateway_config(case: str, port: int, sink_port: int, storage: Path) -> str:
    durable = "+wal" in case
    fsync = "true" if "fsync" in case else "false"
    persistent = "+queue" in case
    processors = "memory_limiter, workflow, batch" if case.startswith("agent") else "batch"
    extensions = service_extensions = ""
    queue = "enabled: true"
    if durable:
        extensions = (
            "extensions:\n"
            f'  file_storage: {{directory: "{storage}", create_directory: true, fsync: {fsync}}}'
        )
        service_extensions = "  extensions: [file_storage]\n  durability: {storage: file_storage}"
        if persistent:
            queue = "enabled: true, storage: file_storage"
    return CONFIG.format(
        port=port,
        sink_port=sink_port,
        metrics_port=free_port(),
        queue=queue,
        extensions=extensions,
        service_extensions=service_extensions,
        processors=processors,
    )


def command(case: str, port: int, sink_port: int, workdir: Path, run: int) -> list[str]:
    if case == "rotel":
        return [
            "taskset", "-c", "0", rotel_binary(), "start",
            "--pid-file", str(workdir / "rotel.pid"),
            "--log-file", str(workdir / "rotel.log"),
            "--otlp-grpc-endpoint", f"127.0.0.1:{port}",
            "--otlp-http-endpoint", f"127.0.0.1:{free_port()}",
            "--exporter", "otlp",
            "--otlp-exporter-endpoint", f"http://127.0.0.1:{sink_port}",
            "--otlp-exporter-protocol", "grpc",
            "--otlp-exporter-compression", "none",
        ]  # fmt: skip
    config = workdir / f"{case.replace('+', '-')}-{run}.yaml"
    config.write_text(gateway_config(case, port, sink_port, workdir / f"storage-{run}"))
    return ["taskset", "-c", "0", PYTHON, "-m", "pipeline", "run", "--config", str(config)]


def write_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


@dataclass
class Run:
    case: str
    offered_spans_per_s: float
    cpu_s_per_million: float
    peak_rss_mib: float
    written_bytes_per_span: float
    spans_acknowledged: int
    spans_delivered: int
    spans_lost: int
    spans_refused: int


def one_run(case: str, rate: float, duration: float, workdir: Path, run: int) -> Run:
    sink_grpc, sink_http, sink_ctl = free_port(), free_port(), free_port()
    port = free_port()
    with process(sink_command(sink_grpc, sink_http, sink_ctl), workdir / "sink.log") as sink:
        wait_port(sink_ctl, sink)
        cmd = command(case, port, sink_grpc, workdir, run)
        with process(cmd, workdir / f"{case}.log") as sut:
            wait_port(port, sut)
            time.sleep(1.0)
            cpu0 = cpu_seconds(sut.pid)
            io0 = write_bytes(sut.pid)
            count0 = sink_count(sink_ctl)
            load_cmd = [
                "taskset", "-c", "1", PYTHON, "-m", "benchmarks.loadgen",
                "--protocol", "grpc", "--target", f"127.0.0.1:{port}",
                "--rate", str(rate), "--duration", str(duration),
            ]  # fmt: skip
            out = subprocess.run(load_cmd, cwd=ROOT, capture_output=True, text=True, check=True)
            stats = json.loads(out.stdout.strip().splitlines()[-1])
            drain(sink_ctl, count0 + stats["ok_spans"], patience=8.0)
            cpu1 = cpu_seconds(sut.pid)
            io1 = write_bytes(sut.pid)
            rss = peak_rss_mib(sut.pid)
            delivered = sink_count(sink_ctl) - count0
    return Run(
        case=case,
        offered_spans_per_s=stats["offered_spans_per_s"],
        cpu_s_per_million=round((cpu1 - cpu0) / max(delivered, 1) * 1e6, 3),
        peak_rss_mib=round(rss, 1),
        written_bytes_per_span=round((io1 - io0) / max(delivered, 1), 1),
        spans_acknowledged=stats["ok_spans"],
        spans_delivered=delivered,
        spans_lost=max(0, stats["ok_spans"] - delivered),
        spans_refused=stats["refused_spans"],
    )


def report(runs: list[Run], args: argparse.Namespace, command_line: str) -> str:
    cases = [c for c in args.cases.split(",") if any(r.case == c for r in runs)]
    med: dict[str, dict[str, Any]] = {}
    for case in cases:
        rs = [r for r in runs if r.case == case]
        med[case] = {
            "cpu": statistics.median(r.cpu_s_per_million for r in rs),
            "cpu_all": [r.cpu_s_per_million for r in rs],
            "rss": statistics.median(r.peak_rss_mib for r in rs),
            "written": statistics.median(r.written_bytes_per_span for r in rs),
            "lost": sum(r.spans_lost for r in rs),
            "refused": sum(r.spans_refused for r in rs),
            "offered": statistics.median(r.offered_spans_per_s for r in rs),
        }
    base_of = {
        "forward+wal": "forward",
        "forward+wal+queue": "forward",
        "forward+wal+queue+fsync": "forward",
        "agent+wal+queue": "agent",
    }
    lines = [
        "# Durable acknowledgements: cost per span",
        "",
        f"Generated by `{command_line}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
        f"Load: {args.rate:,.0f} spans/s offered for {args.duration:g} s per run over OTLP/gRPC, "
        "1,000 spans per request (~260 bytes/span, `benchmarks/loadgen.py`), uncompressed "
        "export to one counting sink; the process under test pinned to CPU 0, load and sink to "
        f"CPU 1. Medians of {args.repeat} runs. The machine is shared and noisy (other "
        "engineers' test suites run on the same 2 cores): compare the ratios within this run, "
        "not the absolute figures across runs.",
        "",
        "| case | CPU-s per 1M spans (median; all runs) | x non-durable | x rotel | peak RSS MiB "
        "| bytes written per span | spans lost | spans refused |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    rotel = med.get("rotel", {}).get("cpu")
    for case in cases:
        m = med[case]
        base = base_of.get(case)
        vs_base = f"{m['cpu'] / med[base]['cpu']:.2f}" if base in med else "-"
        vs_rotel = f"{m['cpu'] / rotel:.2f}" if rotel else "-"
        cpu_all = ", ".join(f"{c:.2f}" for c in m["cpu_all"])
        lines.append(
            f"| {case} | **{m['cpu']:.2f}** ({cpu_all}) | {vs_base} | {vs_rotel} | "
            f"{m['rss']:.1f} | {m['written']:.0f} | {m['lost']} | {m['refused']} |"
        )
    lines.append("")
    for case, base in base_of.items():
        if case in med and base in med:
            extra = med[case]["cpu"] - med[base]["cpu"]  # CPU-s per 1M spans = µs per span
            lines.append(
                f"- **{case}** costs {extra:+.2f} µs of CPU per span over **{base}** "
                f"({med[case]['cpu'] / med[base]['cpu']:.2f}x), and writes "
                f"{med[case]['written']:.0f} bytes per span."
            )
    lines += ["", "Raw runs:", "", "```json"]
    lines += [json.dumps(asdict(r)) for r in runs]
    lines += ["```", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=30_000)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/durable.md"))
    args = parser.parse_args()
    command_line = ".venv/bin/python -m benchmarks.durable " + shlex.join(sys.argv[1:])
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="durable-bench-") as tmp:
        workdir = Path(tmp)
        for i in range(args.repeat):
            for case in args.cases.split(","):
                run = one_run(case, args.rate, args.duration, workdir, i)
                runs.append(run)
                print(f"[{i + 1}/{args.repeat}] {json.dumps(asdict(run))}", flush=True)
    text = report(runs, args, command_line.strip())
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
