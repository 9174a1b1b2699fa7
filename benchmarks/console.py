"""Benchmark: what the ``console`` extension costs the gateway, side by side in one run.

The agent pipeline of ``benchmarks/agent_pipeline.py`` (otlp -> memory_limiter -> workflow ->
batch, agentmetrics; blackhole exporters by default) on the same workflow-shaped load
(100,000 spans/s, 10 spans per trace: 10,000 workflows/s), in these cases:

* ``rotel``: rotel-agent's forward path on the same load (the peer, for scale);
* ``console off``: the gateway without the console;
* ``console on``: the console enabled, nobody watching (it samples the agent gauges);
* ``console watched``: the console enabled and a headless Chromium on its Workflows view (the
  heaviest: the workflow processor records the released workflows, the console lists them,
  computes every view and streams it once a second);
* ``baseline`` (with ``--baseline DIR``): the agent pipeline run from another source tree
  (``git worktree add DIR main``, with the C extensions copied in): the gateway before the
  console existed, to show what the disabled console costs.

The gateway runs on CPU 0, the load generator and the browser on CPU 1. The cases run in
turn, ``--repeat`` times (so machine noise falls on all of them alike); the report gives the
medians of the gateway's CPU-seconds per million spans and the ratios to ``console off``.

    python -m benchmarks.console [--rate 100000] [--seconds 10] [--repeat 3] [--baseline DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks.agent_pipeline import (
    Case,
    Load,
    Result,
    _telemetry_value,
    free_port,
    run_case,
    sink_process,
)

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def overlay(port: int) -> str:
    return f"""
extensions:
  console: {{endpoint: "127.0.0.1:{port}"}}
service:
  extensions: [console]
"""


@contextlib.contextmanager
def browser_watching(url: str, workdir: Path) -> Iterator[dict[str, Any]]:
    """A headless Chromium (on CPU 1) showing ``url``'s Workflows view until the block ends;
    yields what it saw (updates received, workflows listed)."""
    from playwright.sync_api import sync_playwright

    wrapper = workdir / "chromium-cpu1"
    wrapper.write_text(f'#!/bin/sh\nexec taskset -c 1 {CHROMIUM} "$@"\n')
    wrapper.chmod(0o755)
    deadline = time.monotonic() + 30
    while True:  # the console listens once the gateway has started
        try:
            with urllib.request.urlopen(url, timeout=2):
                break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    seen: dict[str, Any] = {}
    with sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
        context = p.chromium.launch_persistent_context(
            profile, executable_path=str(wrapper), headless=True, args=FLAGS
        )
        try:
            page = context.new_page()
            page.goto(url + "#workflows")
            page.wait_for_selector("#connection.live")
            start = page.evaluate("window.consoleModel.updates")
            yield seen
            seen["updates"] = page.evaluate("window.consoleModel.updates") - start
            seen["workflows_listed"] = page.evaluate("window.consoleModel.workflows.length")
            seen["rate_text"] = page.text_content("#workflow-rate")
        finally:
            context.close()


def console_busy(telemetry: int) -> float:
    """The console's own CPU time so far (``otelcol_extension_busy_seconds``)."""
    value = _telemetry_value(telemetry, "otelcol_extension_busy_seconds_total", extension="console")
    return value or 0.0


def run(args: argparse.Namespace, workdir: Path) -> list[tuple[str, Result, dict[str, Any]]]:
    load = Load(rate=args.rate, seconds=args.seconds)
    agent = Case("agent pipeline", "agent", load)
    rotel = Case("rotel forward", "rotel", load)
    out: list[tuple[str, Result, dict[str, Any]]] = []
    with contextlib.ExitStack() as stack:
        sink = stack.enter_context(sink_process(workdir)) if args.exporter == "otlp" else None
        for i in range(args.repeat):
            cases: list[tuple[str, Case, str, Any, Path]] = [("rotel", rotel, "", None, ROOT)]
            if args.baseline:
                cases.append(("baseline", agent, "", None, Path(args.baseline)))
            cases.append(("console off", agent, "", None, ROOT))
            seen: dict[str, dict[str, Any]] = {"console on": {}, "console watched": {}}

            def measure(
                telemetry: int, port: int, watched: bool, seen: dict[str, Any]
            ) -> contextlib.AbstractContextManager[None]:
                @contextlib.contextmanager
                def ctx() -> Iterator[None]:
                    busy0 = console_busy(telemetry)
                    if watched:
                        with browser_watching(f"http://127.0.0.1:{port}/", workdir) as got:
                            yield
                        seen.update(got)
                    else:
                        yield
                    seen["busy_s"] = console_busy(telemetry) - busy0

                return ctx()

            for name in ("console on", "console watched"):
                port = free_port()
                around = functools.partial(
                    measure, port=port, watched=name == "console watched", seen=seen[name]
                )
                cases.append((name, agent, overlay(port), around, ROOT))
            for name, case, extra, around, cwd in cases:
                result = run_case(case, workdir, sink, extra, around, cwd)
                info = dict(seen.get(name, {}))
                if "busy_s" in info:
                    info["busy_s_per_million"] = info["busy_s"] / result.sent_spans * 1e6
                print(json.dumps({"run": i, "case": name, **asdict(result), **info}), flush=True)
                out.append((name, result, info))
    return out


def report(results: list[tuple[str, Result, dict[str, Any]]], args: argparse.Namespace) -> str:
    names = list(dict.fromkeys(name for name, _, _ in results))
    cpu = {n: [r.cpu_s_per_million for m, r, _ in results if m == n] for n in names}
    med = {n: statistics.median(v) for n, v in cpu.items()}
    off = med["console off"]
    lines = [
        "# The console's cost",
        "",
        f"Generated by `python -m benchmarks.console --rate {args.rate:g} --seconds "
        f"{args.seconds:g} --repeat {args.repeat}"
        + (f" --baseline {args.baseline}" if args.baseline else "")
        + f"` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {os.cpu_count()} CPUs "
        "(shared with other work: medians and ratios); the gateway on CPU 0, the load "
        f"generator and the browser on CPU 1; exporter: {args.exporter}.",
        "",
        f"Load: {args.rate:,.0f} spans/s for {args.seconds:g} s per run, 10 spans per trace "
        f"({args.rate / 10:,.0f} workflows/s), 200 spans per request. The cases run in turn, "
        f"{args.repeat} times.",
        "",
        "| case | CPU-s per 1M spans (median) | runs | vs console off | added CPU at this rate |",
        "|---|---|---|---|---|",
    ]
    for n in names:
        ratio = med[n] / off if off else float("nan")
        added = (med[n] - off) * args.rate / 1e6 * 100  # % of one core
        lines.append(
            f"| {n} | {med[n]:.3f} | {', '.join(f'{v:.3f}' for v in cpu[n])} | "
            f"{ratio:.3f} | {added:+.2f} % of a core |"
            if n not in ("rotel",)
            else f"| {n} | {med[n]:.3f} | {', '.join(f'{v:.3f}' for v in cpu[n])} | {ratio:.3f} | |"
        )
    own = {
        n: [info["busy_s_per_million"] for m, _, info in results if m == n and info]
        for n in ("console on", "console watched")
    }
    if any(own.values()):
        lines += [
            "",
            "The console's own CPU time, measured in the gateway "
            "(`otelcol_extension_busy_seconds`: CPU time of its work on the event loop: "
            "snapshots, views, JSON, the charts; not the socket writes), per 1M spans and as a "
            "share of one core at this rate:",
            "",
            "| case | console CPU-s per 1M spans (median) | runs | share of a core | share of "
            "the gateway's CPU (console off) |",
            "|---|---|---|---|---|",
        ]
        for n, values in own.items():
            if not values:
                continue
            m = statistics.median(values)
            lines.append(
                f"| {n} | {m:.4f} | {', '.join(f'{v:.4f}' for v in values)} | "
                f"{m * args.rate / 1e6 * 100:.2f} % | {m / off * 100:.2f} % |"
            )
    watched = [info for m, _, info in results if m == "console watched" and info]
    if watched:
        lines += [
            "",
            "What the browser saw while it watched (each run): "
            + "; ".join(
                f"{w.get('updates')} updates, {w.get('workflows_listed')} workflows listed "
                f"({w.get('rate_text')})"
                for w in watched
            )
            + ".",
        ]
    lost = [(m, r.sent_spans, r.out_spans) for m, r, _ in results if r.out_spans is not None]
    if any(out != sent for _, sent, out in lost):
        lines += ["", f"Spans not delivered: {[x for x in lost if x[1] != x[2]]}"]
    else:
        lines += ["", "Every span sent was delivered in every gateway run."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rate", type=float, default=100_000)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--exporter", choices=("otlp", "blackhole"), default="blackhole")
    p.add_argument("--baseline", help="another source tree to run as the baseline")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "console.md"))
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="console-bench-") as tmp:
        results = run(args, Path(tmp))
    text = report(results, args)
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
