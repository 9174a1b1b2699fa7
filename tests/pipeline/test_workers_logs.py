"""``pipeline run --workers 2`` with GenAI events: the OpenTelemetry SDK's openai-v2
instrumentation inside a workflow span sends its spans and its events (log records) over two
connections, which the kernel may hand to different workers; log records are routed by trace
id as spans are (``pipeline/_route.py`` ``split_logs``; by first arrival through the same
ownership table), so the ``workflow`` processor stamps
every event and ``agentmetrics`` counts every call's tokens once, from the spans
(``agentmetrics/both``) and from the stamped events alone (``agentmetrics/alone``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.pipeline.test_workers import running, wait_for
from tests.support import ROOT

pytestmark = pytest.mark.slow

CONFIG = """
receivers:
  otlp: {{protocols: {{grpc: {{endpoint: "127.0.0.1:{grpc}"}}}}}}
processors:
  workflow: {{wait_duration: 200ms}}
connectors:
  agentmetrics/both: {{metrics_flush_interval: 100ms, genai_events: {{window: 1h}}}}
  agentmetrics/alone: {{metrics_flush_interval: 100ms, genai_events: {{window: 0s}}}}
exporters:
  prometheus/both: {{endpoint: "127.0.0.1:{prom}"}}
  prometheus/alone: {{endpoint: "127.0.0.1:{prom_alone}"}}
service:
  worker_routing: {routing}
  worker_acknowledge: {acknowledge}
  pipelines:
    traces: {{receivers: [otlp], processors: [workflow], exporters: [agentmetrics/both]}}
    logs:
      receivers: [otlp]
      processors: [workflow]
      exporters: [agentmetrics/both, agentmetrics/alone]
    metrics/both: {{receivers: [agentmetrics/both], exporters: [prometheus/both]}}
    metrics/alone: {{receivers: [agentmetrics/alone], exporters: [prometheus/alone]}}
  telemetry:
    metrics: {{address: "127.0.0.1:{telemetry}"}}
"""
RUNS = 6  # each: 2 calls of 42 input and 17 output tokens, one workflow trace


def tokens(sample: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for (name, labels), value in sample.items():
        if name == "agent_workflow_tokens_total":
            d = dict(labels)
            key = f"{d['workflow_type']}/{d['token_type']}"
            out[key] = out.get(key, 0) + value
    return out


@pytest.mark.parametrize(
    ("routing", "acknowledge"),
    [("trace_id", "owner"), ("first_arrival", "owner"), ("first_arrival", "handover")],
)
def test_events_meet_their_spans_across_workers(
    tmp_path: Path, routing: str, acknowledge: str
) -> None:
    """By first arrival too: the spans' and the events' connections may land on different
    workers, and whichever arrives first claims the trace for both; answered on hand-over,
    the events that cross reach their trace's worker as well."""
    ports = ("grpc", "prom", "prom_alone", "telemetry")
    with running(
        tmp_path, "logs-workers", 2, CONFIG, ports, routing=routing, acknowledge=acknowledge
    ) as gw:
        # RUNS runs one after the other, each with connections of its own (one process: the
        # interpreter's start and imports paid once, not RUNS times)
        subprocess.run(
            [sys.executable, "-m", "tests.plugins.agentmetrics_event_sources",
             "otel_workflow", str(gw.ports["grpc"]), str(RUNS)],
            cwd=ROOT, timeout=300, check=True, capture_output=True,
        )  # fmt: skip
        expected = {"research/input": RUNS * 84.0, "research/output": RUNS * 34.0}
        wait_for(lambda: tokens(gw.scrape("prom")) == expected)
        wait_for(lambda: tokens(gw.scrape("prom_alone")) == expected)
        own = gw.scrape("telemetry")
        stamped = sum(
            v
            for (n, labels), v in own.items()
            if n == "otelcol_processor_workflow_log_records_total"
            and dict(labels).get("result") == "stamped"
        )
        assert stamped == 2 * RUNS
