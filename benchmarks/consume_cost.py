"""A consume's instruction cost in the agent pipeline, fixed and per span (callgrind).

The agent config's traces pipeline (memory_limiter, workflow 1s, batch, the agentmetrics
connector; recording exporters) is built in process; parts of 1, 10 and 100 spans are cut
from the agent benchmark's 200-span requests (``benchmarks.agent_pipeline.Load()``, fixed trace
ids, each part given its span count as a worker's route and the receivers give it) and fed to
``Graph.pipeline_consumer("traces")`` as a receiver does (``await consume``). After the service
started, the gateway's GC settings are applied (``gc.freeze``, ``GC_THRESHOLDS``). For each part
size: 1,000 spans warm-up, the event loop run (the release timer and the sender: the outbox
empty), then 2,000 spans measured in one step of a coroutine that awaits each consume (none
suspends: no loop turn in the region), under ``valgrind --tool=callgrind --instr-atstart=no``
with instrumentation switched on around the region by client requests (a small helper built
with ``cc`` from ``valgrind/callgrind.h``); the cost of the client requests themselves (an
empty region) is subtracted. ``PYTHONHASHSEED=0``. The costs a consume are fitted as fixed +
per span (least squares over the three sizes).

Usage (needs valgrind, its headers and a C compiler; a tree is a checkout with its own
``.venv``, built as the README says)::

    python -m benchmarks.consume_cost                      # this tree
    python -m benchmarks.consume_cost --baseline ../main   # and another tree, same minute
    python -m benchmarks.consume_cost --keep /tmp/cg       # keep the callgrind dumps
                                                           # (callgrind_annotate them)
    python -m benchmarks.consume_cost --check              # output hashes, no valgrind

``--check`` runs the same consumes without valgrind, with the event loop's clock held while
they run (so what is released does not depend on timing), releases by expiry, shuts the
service down and prints hashes of the exported trace bytes (in order) and of the agent metrics
(timestamps, exemplars' too, cleared; points sorted): an optimisation must leave them
unchanged (compare with ``--baseline``). The child (``--child``) runs inside the measured
tree's venv (this one's when it has none) with that tree first on ``sys.path``, so the driver
also measures trees that do not have it.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import hashlib
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
ROOT = HERE.parent.parent
SIZES = (1, 10, 100)
WARM_SPANS = 1000
MEASURED_SPANS = 2000

CONFIG = """
receivers:
  inject:
processors:
  memory_limiter: {{check_interval: 1s, limit_mib: 1024}}
  workflow: {{wait_duration: 1s, max_traces: 100000, max_bytes: 268435456}}
  batch: {{timeout: 200ms, send_batch_size: 8192, send_batch_max_size: 8192}}
connectors:
  agentmetrics: {{metrics_flush_interval: 5s, aggregation_cardinality_limit: 100000}}
exporters:
  record:
service:
  pipelines:
    traces:
      receivers: [inject]
      processors: [memory_limiter, workflow, batch]
      exporters: [record, agentmetrics]
    metrics:
      receivers: [agentmetrics]
      exporters: [record]
  telemetry:
    logs: {{level: warn}}
    metrics: {{address: "127.0.0.1:{port}"}}
"""

HELPER_C = """
#include <valgrind/callgrind.h>
void cg_start(void) { CALLGRIND_START_INSTRUMENTATION; }
void cg_stop(void) { CALLGRIND_STOP_INSTRUMENTATION; }
void cg_zero(void) { CALLGRIND_ZERO_STATS; }
void cg_dump(const char *name) { CALLGRIND_DUMP_STATS_AT(name); }
"""


# -- the child: one tree's gateway, in process ------------------------------------------------
def _helper(workdir: Path) -> Any:
    """The callgrind client requests (no-ops outside valgrind)."""
    src = workdir / "cg.c"
    lib = workdir / "cg.so"
    if not lib.exists():
        src.write_text(HELPER_C)
        subprocess.run(["cc", "-O1", "-shared", "-fPIC", "-o", str(lib), str(src)], check=True)
    return ctypes.CDLL(str(lib))


def _components() -> tuple[Any, Any]:
    """A receiver driven by hand and a recording exporter (traces and metrics)."""
    from pipeline import (
        Component,
        ComponentConfig,
        ExporterFactory,
        ReceiverFactory,
        Signal,
        Stability,
    )

    class Inert(Component):
        async def start(self, host: Any) -> None:
            pass

        async def shutdown(self) -> None:
            pass

    class Record(Inert):
        mutates_data = False
        received: list[Any] = []  # (shared: traces and metrics, in order)

        async def consume(self, data: Any) -> None:
            Record.received.append(data)

    class InjectFactory(ReceiverFactory):
        type = "inject"
        config_class = ComponentConfig
        stability = {Signal.TRACES: Stability.DEVELOPMENT}

        def create_traces(self, settings: Any, config: Any, next_consumer: Any) -> Any:
            return Inert()

    class RecordFactory(ExporterFactory):
        type = "record"
        config_class = ComponentConfig
        stability = {Signal.TRACES: Stability.DEVELOPMENT, Signal.METRICS: Stability.DEVELOPMENT}

        def create_traces(self, settings: Any, config: Any) -> Any:
            return Record()

        def create_metrics(self, settings: Any, config: Any) -> Any:
            return Record()

    return (InjectFactory(), RecordFactory()), Record


def _requests(n: int) -> list[bytes]:
    """``n`` 200-span requests of the agent benchmark, fixed trace ids (all different)."""
    from benchmarks.agent_pipeline import Filler, Load, build_template, marker_offsets

    load = Load()
    rnd = random.Random(20261207)
    fillers = []
    for variant in range(8):
        template = build_template(load, variant)
        fillers.append(
            Filler(
                template, marker_offsets(template, load.traces_per_request), load.traces_per_request
            )
        )
    return [
        fillers[i % 8].fill([rnd.randbytes(16) for _ in range(load.traces_per_request)])
        for i in range(n)
    ]


def _parts(requests: list[bytes], size: int) -> list[Any]:
    """The requests cut into parts of ``size`` spans (resource and scope kept), each a
    ``Traces`` with its span count."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    from pipeline import Traces

    out = []
    for raw in requests:
        req = ExportTraceServiceRequest.FromString(raw)
        for rs in req.resource_spans:
            for ss in rs.scope_spans:
                spans = list(ss.spans)
                for i in range(0, len(spans), size):
                    part = ExportTraceServiceRequest()
                    prs = part.resource_spans.add()
                    prs.resource.CopyFrom(rs.resource)
                    prs.schema_url = rs.schema_url
                    pss = prs.scope_spans.add()
                    pss.scope.CopyFrom(ss.scope)
                    pss.schema_url = ss.schema_url
                    pss.spans.extend(spans[i : i + size])
                    chunk = spans[i : i + size]
                    out.append(Traces(part.SerializeToString(), item_count=len(chunk)))
    return out


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _service(workdir: Path) -> tuple[Any, Any, Any]:
    from pipeline.config import load_config
    from pipeline.pluginmanager import build_registry
    from pipeline.service import Service
    from pipeline.telemetry import SelfTelemetry

    factories, record = _components()
    registry = build_registry()
    registry._set_source("benchmarks", "benchmarks")
    for f in factories:
        registry.register(f)
    path = workdir / "config.yaml"
    path.write_text(CONFIG.format(port=_free_port()))
    service = Service(load_config([str(path)], registry), SelfTelemetry())
    await service.start()
    record.received.clear()
    return service, service.graph.pipeline_consumer("traces"), record


def _gateway_gc() -> None:
    from pipeline.service import GC_THRESHOLDS

    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def _step(coro: Any) -> None:
    """Runs ``coro``, which must not suspend, in one step."""
    try:
        coro.send(None)
    except StopIteration:
        return
    raise RuntimeError("a consume suspended: the measured region must not wait")


async def _feed(entry: Any, parts: list[Any]) -> None:
    for p in parts:
        await entry.consume(p)


async def _measure(workdir: Path, cg: Any) -> None:
    requests = _requests((WARM_SPANS + MEASURED_SPANS) // 200 * len(SIZES) + len(SIZES))
    per_size = (WARM_SPANS + MEASURED_SPANS) // 200 + 1
    for k, size in enumerate(SIZES):
        parts = _parts(requests[k * per_size : (k + 1) * per_size], size)
        warm = parts[: WARM_SPANS // size]
        measured = parts[WARM_SPANS // size : (WARM_SPANS + MEASURED_SPANS) // size]
        service, entry, _ = await _service(workdir)
        _gateway_gc()
        _step(_feed(entry, warm))
        await asyncio.sleep(0.05)  # the sender passes what is released on
        coro = _feed(entry, measured)
        cg.cg_start()
        cg.cg_zero()
        cg.cg_dump(f"empty{size}".encode())  # the client requests' own cost
        cg.cg_zero()
        _step(coro)
        cg.cg_dump(f"size{size}".encode())
        cg.cg_stop()
        await service.shutdown()
        gc.unfreeze()


def _metrics_digest(payloads: list[Any]) -> str:
    points = []
    for p in payloads:
        for rm in p.message().resource_metrics:
            res = rm.resource.SerializeToString(deterministic=True)
            for sm in rm.scope_metrics:
                scope = sm.scope.SerializeToString(deterministic=True)
                for m in sm.metrics:
                    kind = m.WhichOneof("data")
                    if kind is None:
                        continue
                    for dp in getattr(m, kind).data_points:
                        dp.ClearField("time_unix_nano")
                        dp.ClearField("start_time_unix_nano")
                        for ex in getattr(dp, "exemplars", ()):
                            ex.ClearField("time_unix_nano")
                        points.append(
                            res + scope + m.name.encode() + dp.SerializeToString(deterministic=True)
                        )
    return hashlib.sha256(b"\0".join(sorted(points))).hexdigest()[:16]


async def _check(workdir: Path) -> None:
    """Hashes of what comes out, the loop's clock held while the consumes run."""
    from pipeline import Signal

    requests = _requests(10)
    for size in SIZES:
        parts = _parts(requests, size)
        service, entry, record = await _service(workdir)
        _gateway_gc()
        loop = asyncio.get_running_loop()
        held = loop.time()
        loop.time = lambda t=held: t  # type: ignore[method-assign]
        try:
            _step(_feed(entry, parts[: len(parts) // 2]))
        finally:
            del loop.time
        await asyncio.sleep(1.5)  # released by expiry (wait_duration 1s), sent
        loop.time = lambda t=held + 2.0: t  # type: ignore[method-assign]
        try:
            _step(_feed(entry, parts[len(parts) // 2 :]))
        finally:
            del loop.time
        await service.shutdown()
        gc.unfreeze()
        traces = [p for p in record.received if p.signal is Signal.TRACES]
        metrics = [p for p in record.received if p.signal is Signal.METRICS]
        spans = sum(p.item_count() for p in traces)
        digest = hashlib.sha256()
        for p in traces:
            digest.update(p.to_bytes())
        print(
            f"size {size:3d}: {spans} spans out in {len(traces)} payloads, traces "
            f"{digest.hexdigest()[:16]}, agent metrics {_metrics_digest(metrics)}"
        )


def child(args: argparse.Namespace) -> int:
    workdir = Path(args.workdir)
    if args.check:
        asyncio.run(_check(workdir))
    else:
        asyncio.run(_measure(workdir, _helper(workdir)))
    return 0


# -- the parent: runs each tree under callgrind, fits, prints ----------------------------------
TRIGGER = "desc: Trigger: Client Request: "


def _totals(outdir: Path) -> dict[str, int]:
    """Instructions of each dump, by its name (the client request's argument)."""
    found: dict[str, int] = {}
    for f in outdir.glob("callgrind.out*"):
        name, total = None, None
        with f.open(errors="replace") as fh:
            for line in fh:
                if line.startswith(TRIGGER):
                    name = line[len(TRIGGER) :].strip()
                elif line.startswith("summary:"):
                    total = int(line.split()[1])
                    break
        if name is not None and total is not None:
            found[name] = total
    return found


def fit(costs: dict[int, float]) -> tuple[float, float]:
    """Least squares ``cost = fixed + per_span * size``."""
    xs, ys = list(costs), list(costs.values())
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mx) ** 2 for x in xs
    )
    return my - b * mx, b


def run_tree(tree: Path, check: bool, keep: Path | None) -> Any:
    python = tree / ".venv" / "bin" / "python"
    if not python.exists():
        python = Path(sys.executable)
    env = dict(os.environ, PYTHONHASHSEED="0", PYTHONPATH=str(tree))
    workdir = Path(tempfile.mkdtemp(prefix="consume_cost."))
    cmd = [str(python), str(HERE), "--child", "--tree", str(tree), "--workdir", str(workdir)]
    try:
        if check:
            out = subprocess.run(
                [*cmd, "--check"], env=env, cwd=tree, check=True, capture_output=True, text=True
            )
            return out.stdout
        if shutil.which("valgrind") is None:
            raise SystemExit("valgrind is needed (or --check)")
        _helper(workdir)
        outdir = keep / tree.name if keep else workdir
        outdir.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                "--instr-atstart=no",
                f"--callgrind-out-file={outdir}/callgrind.out",
                *cmd,
            ],
            env=env,
            cwd=tree,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        totals = _totals(outdir)
        return {
            size: (totals[f"size{size}"] - totals[f"empty{size}"]) / (MEASURED_SPANS // size)
            for size in SIZES
        }
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _commit(tree: Path) -> str:
    out = subprocess.run(
        ["git", "-C", str(tree), "log", "-1", "--format=%h"], capture_output=True, text=True
    )
    dirty = subprocess.run(
        ["git", "-C", str(tree), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
    )
    return (out.stdout.strip() + ("+" if dirty.stdout.strip() else "")) or tree.name


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--baseline", type=Path, help="another tree, measured the same way")
    p.add_argument("--check", action="store_true", help="output hashes instead of costs")
    p.add_argument("--keep", type=Path, help="keep the callgrind dumps under this directory")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--tree", type=Path, default=ROOT, help=argparse.SUPPRESS)
    p.add_argument("--workdir", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return child(args)
    trees = [("this", ROOT)] + ([("baseline", args.baseline.resolve())] if args.baseline else [])
    if args.check:
        for label, tree in trees:
            print(f"{label} ({_commit(tree)}):")
            print(run_tree(tree, True, None), end="")
        return 0
    print(
        f"instructions a consume (callgrind; {MEASURED_SPANS} spans measured after "
        f"{WARM_SPANS} warm-up, PYTHONHASHSEED=0, gateway GC settings)\n"
    )
    print("| tree | " + " | ".join(f"{s}-span parts" for s in SIZES) + " | fixed | a span |")
    print("|---|" + "---:|" * (len(SIZES) + 2))
    for label, tree in trees:
        costs = run_tree(tree, False, args.keep)
        fixed, per_span = fit(costs)
        cells = " | ".join(f"{costs[s]:,.0f}" for s in SIZES)
        print(f"| {label} (`{_commit(tree)}`) | {cells} | {fixed:,.0f} | {per_span:,.0f} |")
    return 0


if __name__ == "__main__":
    if "--child" in sys.argv:  # the measured tree first on sys.path, not this file's folder
        tree = sys.argv[sys.argv.index("--tree") + 1]
        sys.path[:] = [tree] + [x for x in sys.path if Path(x or ".").resolve() != HERE.parent]
    sys.exit(main())
