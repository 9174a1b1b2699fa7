"""Micro-benchmark: CPU per span of the agent components, in-process, on workflow-shaped traces.

Feeds the pre-encoded requests of ``benchmarks/agent_pipeline.py`` (same trace shape, a fresh
trace id for every trace) straight into each component, with a consumer that only keeps the
output, and reports process CPU microseconds per span (median of ``--repeat`` runs):

* ``workflow``: ``consume`` of every request, and the release (stamping, re-assembly) of the
  held traces every ``--release-every`` requests (as the processor's timer would);
* ``agentmetrics`` / ``spanmetrics``: ``consume`` of the workflow processor's output, then one
  flush (building the OTLP metrics request);
* ``gen_ai_normalizer`` (alone, not in the total: it is not in the default pipeline):
  ``consume`` of every request, with its default sources; ``--corpus`` also runs it on the
  recorded spans of the real agent libraries (tests/data/agent_sources/).

    python -m benchmarks.agent_components                    # default shape, 100k spans
    python -m benchmarks.agent_components --attrs 32 --profile workflow   # cProfile top 25
    python -m benchmarks.agent_components --join-window 0s   # agentmetrics settling included
    python -m benchmarks.agent_components --root http   # executions found with the dialects
    python -m benchmarks.agent_components --join-window 0s --freeze-gc   # as `pipeline run`

``--freeze-gc`` moves what is alive before the timed runs (the loaded requests, modules) out
of the cyclic collector's reach, as the ``pipeline run`` process does once started: without
it, a full collection that scans the benchmark's own heap lands in some runs and not others
(0.5-1.5 µs a span of the agentmetrics figure in one run, none in the next).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import os
import pstats
import statistics
import time
from collections.abc import Callable, Coroutine
from typing import Any

from benchmarks.agent_pipeline import Load, build_template, fill, marker_offsets
from pipeline import Kind, Payload, Traces
from pipeline.testing import create_settings
from plugins.agentmetricsconnector.config import AgentMetricsConfig
from plugins.agentmetricsconnector.connector import AgentMetricsConnector
from plugins.spanmetricsconnector.config import SpanMetricsConfig
from plugins.spanmetricsconnector.connector import SpanMetricsConnector
from plugins.workflowprocessor.config import WorkflowConfig
from plugins.workflowprocessor.processor import WorkflowProcessor


class Keep:
    """A consumer that keeps the payloads it is given (and counts nothing else)."""

    mutates_data = False

    def __init__(self) -> None:
        self.payloads: list[Payload] = []

    async def consume(self, data: Payload) -> None:
        self.payloads.append(data)


def requests(load: Load, count: int, variants: int = 8) -> list[bytes]:
    """``count`` encoded requests, every trace with its own trace id."""
    templates = [build_template(load, v) for v in range(variants)]
    offsets = [marker_offsets(t, load.traces_per_request) for t in templates]
    seq = int.from_bytes(os.urandom(6), "big") << 40
    out = []
    for r in range(count):
        ids = [(seq + k + 1).to_bytes(16, "big") for k in range(load.traces_per_request)]
        seq += load.traces_per_request
        out.append(bytes(fill(templates[r % variants], offsets[r % variants], ids)))
    return out


def cpu() -> float:
    return time.process_time()


async def run_workflow(reqs: list[bytes], release_every: int) -> tuple[float, list[Payload]]:
    keep = Keep()
    proc = WorkflowProcessor(
        create_settings(Kind.PROCESSOR, "workflow"),
        WorkflowConfig(wait_duration="1s", max_traces=100_000, max_bytes=1 << 30),
        keep,
    )
    loop = asyncio.get_running_loop()
    payloads = [Traces(r) for r in reqs]
    start = cpu()
    for i, p in enumerate(payloads, 1):
        await proc.consume(p)
        if i % release_every == 0:
            proc._release_expired(loop.time() + 3600)
            while proc._outbox:
                payload, count, _ = proc._outbox.popleft()
                await proc._send(payload, count)
    proc._release_expired(loop.time() + 3600)
    while proc._outbox:
        payload, count, _ = proc._outbox.popleft()
        await proc._send(payload, count)
    return cpu() - start, keep.payloads


async def run_connector(
    make: Callable[[Keep], Any], payloads: list[Payload]
) -> tuple[float, float]:
    """(CPU of consuming every payload, CPU of one flush)."""
    keep = Keep()
    conn = make(keep)
    copies = [Traces(p.to_bytes()) for p in payloads]
    start = cpu()
    for p in copies:
        await conn.consume(p)
    mid = cpu()
    await conn.flush()
    return mid - start, cpu() - mid


JOIN: dict[str, Any] = {}  # the agentmetrics connector's tool_call_join (--join-window)


def agentmetrics(keep: Keep) -> AgentMetricsConnector:
    config = AgentMetricsConfig(tool_call_join=JOIN) if JOIN else AgentMetricsConfig()
    return AgentMetricsConnector(create_settings(Kind.CONNECTOR, "agentmetrics"), config, keep)


def spanmetrics(keep: Keep) -> SpanMetricsConnector:
    return SpanMetricsConnector(
        create_settings(Kind.CONNECTOR, "spanmetrics"),
        SpanMetricsConfig(aggregation_cardinality_limit=100_000),
        keep,
    )


async def run_normalizer(reqs: list[bytes]) -> float:
    """CPU of the ``gen_ai_normalizer`` processor consuming every request."""
    from plugins.genainormalizerprocessor import GenAINormalizerConfig
    from plugins.genainormalizerprocessor.processor import GenAINormalizerProcessor

    proc = GenAINormalizerProcessor(
        create_settings(Kind.PROCESSOR, "gen_ai_normalizer"), GenAINormalizerConfig(), Keep()
    )
    payloads = [Traces(r) for r in reqs]
    start = cpu()
    for p in payloads:
        await proc.consume(p)
    return cpu() - start


def corpus_requests(copies: int) -> tuple[list[bytes], int]:
    """The recorded corpus (every source and scenario), ``copies`` times, and its span count."""
    from tests.agent_sources._otel import CORPUS, read_corpus

    reqs = [read_corpus(p).SerializeToString() for p in sorted(CORPUS.glob("*/*.json"))]
    spans = sum(Traces(r).item_count() for r in reqs)
    return reqs * copies, spans * copies


def profiled(coro: Coroutine[Any, Any, Any], top: int) -> Any:
    prof = cProfile.Profile()
    prof.enable()
    result = asyncio.run(coro)
    prof.disable()
    pstats.Stats(prof).sort_stats("tottime").print_stats(top)
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spans", type=int, default=100_000, help="spans per run")
    ap.add_argument("--attrs", type=int, default=8, help="attributes per span")
    ap.add_argument("--spans-per-trace", type=int, default=10)
    ap.add_argument("--release-every", type=int, default=50, help="requests between releases")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--profile", choices=("workflow", "agentmetrics", "spanmetrics"))
    ap.add_argument(
        "--root",
        choices=("workflow", "http"),
        default="workflow",
        help="workflow: workflow.<type> roots; http: an HTTP server root above an invoke_agent "
        "span (the execution found with the dialect tables)",
    )
    ap.add_argument("--corpus", action="store_true", help="also the normalizer on the corpus")
    ap.add_argument(
        "--join-window",
        help="agentmetrics tool_call_join.window (0s: every trace's tool calls and failures "
        "settled with its request, so the settling is measured too; default: the connector's)",
    )
    ap.add_argument(
        "--freeze-gc",
        action="store_true",
        help="gc.freeze() before the timed runs, as `pipeline run` does once started",
    )
    args = ap.parse_args(argv)
    if args.join_window:
        JOIN.update(window=args.join_window, max_traces=1_000_000)
    spt = args.spans_per_trace
    load = Load(
        attrs_per_span=args.attrs,
        spans_per_trace=spt,
        traces_per_request=max(1, 200 // spt),
        root=args.root,
    )
    n_req = max(1, args.spans // load.spans_per_request)
    n_spans = n_req * load.spans_per_request
    reqs = requests(load, n_req)
    if args.freeze_gc:
        gc.collect()
        gc.freeze()
    if args.profile:
        if args.profile == "workflow":
            profiled(run_workflow(reqs, args.release_every), 25)
        else:
            _, out = asyncio.run(run_workflow(reqs, args.release_every))
            make = agentmetrics if args.profile == "agentmetrics" else spanmetrics
            profiled(run_connector(make, out), 25)
        return 0
    rows: dict[str, list[float]] = {"workflow": [], "agentmetrics": [], "spanmetrics": []}
    flushes: dict[str, list[float]] = {"agentmetrics": [], "spanmetrics": []}
    for _ in range(args.repeat):
        t, out = asyncio.run(run_workflow(reqs, args.release_every))
        rows["workflow"].append(t)
        for name, make in (("agentmetrics", agentmetrics), ("spanmetrics", spanmetrics)):
            t, f = asyncio.run(run_connector(make, out))
            rows[name].append(t)
            flushes[name].append(f)
    print(
        f"{n_spans} spans, {spt} spans/trace, {args.attrs} attrs/span, "
        f"median of {args.repeat} runs (CPU-µs per span)"
    )
    total = 0.0
    for name, times in rows.items():
        us = statistics.median(times) / n_spans * 1e6
        total += us
        extra = ""
        if name in flushes:
            extra = f"  (one flush: {statistics.median(flushes[name]) * 1e3:.1f} ms)"
        runs = " ".join(f"{t / n_spans * 1e6:.2f}" for t in times)
        low = min(times) / n_spans * 1e6
        print(f"  {name:13s} {us:6.2f}   min {low:5.2f}   runs: {runs}{extra}")
    print(f"  {'total':13s} {total:6.2f}")
    norm = [asyncio.run(run_normalizer(reqs)) for _ in range(args.repeat)]
    runs = " ".join(f"{t / n_spans * 1e6:.2f}" for t in norm)
    print(f"  {'gen_ai_normalizer':17s} {statistics.median(norm) / n_spans * 1e6:6.2f}"
          f"   (alone) runs: {runs}")  # fmt: skip
    if args.corpus:
        creqs, cspans = corpus_requests(max(1, args.spans // 500))
        norm = [asyncio.run(run_normalizer(creqs)) for _ in range(args.repeat)]
        runs = " ".join(f"{t / cspans * 1e6:.2f}" for t in norm)
        print(f"  {'gen_ai_normalizer':17s} {statistics.median(norm) / cspans * 1e6:6.2f}"
              f"   on the recorded corpus ({cspans} spans) runs: {runs}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
