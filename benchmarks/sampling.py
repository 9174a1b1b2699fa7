"""Benchmark: the agent pipeline with tail sampling and redaction, beside the agent pipeline
without them and rotel's plain forward path, in the same run.

Cases (the load of ``benchmarks/agent_pipeline.py``: workflow-shaped traces of 10 spans):

* ``rotel``: rotel-agent's forward path;
* ``agent``: otlp -> memory_limiter -> workflow -> batch -> otlp, agentmetrics fed beside;
* ``agent, split pipelines``: the topology below without tail_sampling and redaction (what
  the connectors-before-the-sampler layout costs by itself);
* ``agent + sampling + redaction``: otlp -> memory_limiter -> workflow -> agentmetrics and a
  forward connector -> tail_sampling -> redaction -> batch -> otlp (the shape of
  ``configs/agent-gateway-sampled.yaml``). Every policy of that config is evaluated on every
  trace and the last keeps all of them (the worst case: every span is also reassembled,
  redacted and exported, so the out count proves nothing was lost); redaction checks every
  attribute with the GenAI content rules on.

The cases run in turn, ``--repeat`` times; CPU seconds of the server per million spans are
compared by their medians (the machine is shared: medians and ratios, not absolutes).

    python -m benchmarks.sampling --rate 10000 --seconds 6 --repeat 3

``--in-process`` instead times the two processors alone, in this process, on the workflow
processor's releases of the same load (20,000 spans in ~100 whole-trace payloads, the config
above): CPU microseconds per span (best and median of ``--repeat``) of ``tail_sampling``,
``redaction`` and the two chained, with ``tail_sampling``'s one-call decision of a release
(``_tailscan.decide_request``) and without it (each policy read per trace). Under
``valgrind --tool=callgrind --toggle-collect='*functools_reduce*'`` with ``--callgrind CASE``
one steady pass of CASE (``tail_sampling``, ``redaction``, ``both``; ``--without-one-call``)
runs inside ``functools.reduce``: its instruction count is what the processors cost.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks.agent_pipeline import (
    COMPRESSION,
    Case,
    Load,
    Result,
    _telemetry_value,
    run_case,
    sink_process,
)

ROOT = Path(__file__).resolve().parent.parent

OVERLAY = """
processors:
  tail_sampling:
    decision_wait: 10s
    num_traces: 100000
    decision_cache: {sampled_cache_size: 100000, non_sampled_cache_size: 100000}
    policies:
      - {name: failed-workflows, type: workflow_outcome,
         workflow_outcome: {outcomes: [failed, timeout, cancelled]}}
      - {name: over-sla, type: workflow_sla, workflow_sla: {default: 30s}}
      - {name: tool-call-failed, type: tool_call_failed}
      - {name: expensive, type: workflow_usage, workflow_usage: {min_tokens: 100000}}
      - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}
      - {name: the-rest, type: probabilistic, probabilistic: {sampling_percentage: 100}}
  redaction:
    allow_all_keys: true
    blocked_values: ["4[0-9]{12}(?:[0-9]{3})?"]
    genai_content: {action: mask}
connectors:
  forward/sampling: {}
service:
  pipelines:
    traces:
      receivers: [otlp]
      processors: [memory_limiter, workflow]
      exporters: [agentmetrics, forward/sampling]
    traces/sampled:
      receivers: [forward/sampling]
      processors: [tail_sampling, redaction, batch]
      exporters: [EXPORTER]
"""


def run(args: argparse.Namespace, workdir: Path) -> list[tuple[str, Result, dict[str, float]]]:
    load = Load(rate=args.rate, seconds=args.seconds)
    cases = [
        ("rotel", Case("rotel forward", "rotel", load), ""),
        ("agent", Case("agent pipeline", "agent", load), ""),
        ("agent, split pipelines", Case("agent pipeline", "agent", load), "split"),
        ("agent + sampling + redaction", Case("agent pipeline", "agent", load), "sampled"),
    ]
    out: list[tuple[str, Result, dict[str, float]]] = []
    with contextlib.ExitStack() as stack:
        sink = stack.enter_context(sink_process(workdir)) if args.exporter == "otlp" else None
        exporter = "otlp" if sink is not None else "blackhole"
        for i in range(args.repeat):
            for name, case, extra in cases:
                info: dict[str, float] = {}

                @contextlib.contextmanager
                def decisions(telemetry: int, info: dict[str, float] = info) -> object:
                    yield
                    for when in ("released", "decision_wait", "num_traces"):
                        info[when] = (
                            _telemetry_value(
                                telemetry,
                                "otelcol_processor_tail_sampling_decisions_total",
                                processor="tail_sampling",
                                when=when,
                            )
                            or 0.0
                        )

                overlay = OVERLAY.replace("EXPORTER", exporter) if extra else ""
                if extra == "split":  # the same pipelines without the two processors
                    overlay = overlay.replace("[tail_sampling, redaction, batch]", "[batch]")
                sampled = extra == "sampled"
                result = run_case(case, workdir, sink, overlay, decisions if sampled else None)
                print(json.dumps({"run": i, "case": name, **asdict(result), **info}), flush=True)
                out.append((name, result, info))
    return out


def report(results: list[tuple[str, Result, dict[str, float]]], args: argparse.Namespace) -> str:
    names = list(dict.fromkeys(name for name, _, _ in results))
    cpu = {n: [r.cpu_s_per_million for m, r, _ in results if m == n] for n in names}
    med = {n: statistics.median(v) for n, v in cpu.items()}
    lines = [
        "# Tail sampling and redaction: their cost in the agent pipeline",
        "",
        f"Generated by `python -m benchmarks.sampling --rate {args.rate:g} --seconds "
        f"{args.seconds:g} --repeat {args.repeat} --compression {args.compression}` on "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {os.cpu_count()} CPUs (shared "
        "with other work: medians and ratios); the gateway on CPU 0, the load generator on "
        f"CPU 1; exporter: {args.exporter} ({args.compression}).",
        "",
        f"Load: {args.rate:,.0f} spans/s for {args.seconds:g} s per run, 10 spans per trace, "
        "200 spans per request. The cases run in turn.",
        "",
        "| case | CPU-s per 1M spans (median) | runs | vs agent | vs rotel | peak RSS MiB "
        "(median) | workflow traces held (peak) |",
        "|---|---|---|---|---|---|---|",
    ]
    for n in names:
        rss = statistics.median(r.peak_rss_mib for m, r, _ in results if m == n)
        held = [r.traces_held_peak for m, r, _ in results if m == n and r.traces_held_peak]
        lines.append(
            f"| {n} | {med[n]:.3f} | {', '.join(f'{v:.3f}' for v in cpu[n])} | "
            f"{med[n] / med['agent']:.2f}x | {med[n] / med['rotel']:.2f}x | {rss:.1f} | "
            f"{statistics.median(held):.0f} |"
            if held
            else f"| {n} | {med[n]:.3f} | {', '.join(f'{v:.3f}' for v in cpu[n])} | "
            f"{med[n] / med['agent']:.2f}x | {med[n] / med['rotel']:.2f}x | {rss:.1f} | |"
        )
    sampled = [(r, info) for m, r, info in results if m == "agent + sampling + redaction"]
    lines += [
        "",
        "Every span came out of the sampled pipeline (all kept by the last policy): "
        + ", ".join(f"{r.out_spans}/{r.sent_spans}" for r, _ in sampled)
        + ". Decisions taken on release (whole traces from the workflow processor) / after "
        "decision_wait / early: "
        + ", ".join(
            f"{info.get('released', 0):.0f}/{info.get('decision_wait', 0):.0f}/"
            f"{info.get('num_traces', 0):.0f}"
            for _, info in sampled
        )
        + " (counted over the warm-up and the run): tail_sampling held no span, the traces are "
        "held once, by the workflow processor (peak RSS within a few MiB of the agent "
        "pipeline's).",
    ]
    return "\n".join(lines) + "\n"


async def _in_process_pass(case: str, one_call: bool, payloads: list[Any]) -> Any:
    """(the first processor of ``case``, the copies of ``payloads`` to give it)."""
    import yaml

    from benchmarks.agent_components import Keep
    from pipeline import Kind, Signal, Traces
    from pipeline.testing import create_settings
    from plugins.redactionprocessor.config import RedactionConfig
    from plugins.redactionprocessor.processor import RedactionProcessor
    from plugins.tailsamplingprocessor.config import TailSamplingConfig
    from plugins.tailsamplingprocessor.processor import TailSamplingProcessor

    cfg = yaml.safe_load(OVERLAY)["processors"]
    keep = Keep()
    red = RedactionProcessor(
        create_settings(Kind.PROCESSOR, "redaction"),
        RedactionConfig.model_validate(cfg["redaction"]),
        Signal.TRACES,
        keep,
    )
    first: Any = red
    if case != "redaction":
        first = TailSamplingProcessor(
            create_settings(Kind.PROCESSOR, "tail_sampling"),
            TailSamplingConfig.model_validate(cfg["tail_sampling"]),
            red if case == "both" else keep,
        )
        if not one_call:
            first._program = None
    copies = []
    for p in payloads:
        c = Traces(p.to_bytes(), item_count=p.item_count())
        c.whole_traces = True
        copies.append(c)
    return first, copies


def in_process(args: argparse.Namespace) -> int:
    import asyncio
    import functools

    from benchmarks.agent_components import requests, run_workflow

    load = Load(rate=args.rate, seconds=args.seconds)
    reqs = requests(load, max(1, 20_000 // load.spans_per_request))
    _, payloads = asyncio.run(run_workflow(reqs, 1))
    n = sum(p.item_count() for p in payloads)

    async def timed(case: str, one_call: bool) -> float:
        first, copies = await _in_process_pass(case, one_call, payloads)
        start = time.process_time()
        for c in copies:
            await first.consume(c)
        return time.process_time() - start

    if args.callgrind:
        one_call = not args.without_one_call
        asyncio.run(timed(args.callgrind, one_call))  # warm: imports, compiled patterns

        async def steady() -> None:
            first, copies = await _in_process_pass(args.callgrind, one_call, payloads)

            async def feed() -> None:
                for c in copies:
                    await first.consume(c)

            coro = feed()

            def step(acc: int, _: int) -> int:  # the chain never waits: one step
                with contextlib.suppress(StopIteration):
                    coro.send(None)
                return acc

            functools.reduce(step, [0], 0)

        asyncio.run(steady())
        print(f"{n} spans through {args.callgrind} inside functools.reduce")
        return 0
    print(f"{n} spans in {len(payloads)} payloads; CPU us per span, best / median of {args.repeat}")
    for case in ("tail_sampling", "redaction", "both"):
        for one_call in (True, False) if case != "redaction" else (True,):
            runs = [asyncio.run(timed(case, one_call)) for _ in range(args.repeat)]
            label = case + ("" if case == "redaction" else
                            " (one call)" if one_call else " (per trace)")  # fmt: skip
            print(
                f"  {label:30s} {min(runs) / n * 1e6:6.2f} {statistics.median(runs) / n * 1e6:6.2f}"
            )
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rate", type=float, default=10000.0)
    p.add_argument("--seconds", type=float, default=6.0)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--exporter", choices=("otlp", "blackhole"), default="otlp")
    p.add_argument(
        "--compression",
        choices=("gzip", "none"),
        default="gzip",
        help="export compression of every server (default gzip, as the default settings)",
    )
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "sampling.md"))
    p.add_argument("--in-process", action="store_true", help="time the two processors alone")
    p.add_argument("--callgrind", choices=("tail_sampling", "redaction", "both"),
                   help="with --in-process: one steady pass inside functools.reduce")  # fmt: skip
    p.add_argument("--without-one-call", action="store_true",
                   help="with --callgrind: tail_sampling's policies read per trace")  # fmt: skip
    args = p.parse_args(argv)
    if args.in_process:
        return in_process(args)
    COMPRESSION["value"] = args.compression
    with tempfile.TemporaryDirectory(prefix="sampling-bench-") as tmp:
        results = run(args, Path(tmp))
    text = report(results, args)
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
