"""The ``agentmetrics`` connector on what the OpenTelemetry Python SDK's GenAI instrumentation
(opentelemetry-instrumentation-openai-v2, the latest experimental conventions, content on
spans and events) really sends: its chat spans and its ``gen_ai.client.inference.operation.
details`` events (log records carrying the token usage too), over OTLP to one gateway with a
traces and a logs pipeline into each connector. The model is a local fake of the chat
completions API (``tests/plugins/redaction/genai_sources.py``): two calls of 42 input and 17
output tokens each.

Three connectors, three cases of the join rule, each counting the tokens exactly once:
``both`` (spans and events carry the usage: the span wins), ``stripped`` (the spans' usage
deleted by an ``attributes`` processor: the events give it) and ``alone`` (events only: they
count on their own). OpenLLMetry's content events (``use_attributes=False``) carry no usage:
they count nothing, the spans count theirs once (``tests/plugins/agentmetrics_event_sources.py``
drives both instrumentations)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

from tests.otlp_support import RecordingBackend, recording_backend
from tests.plugins.test__metricsagg import labels, points
from tests.support import ROOT, free_port, running_service, wait_until

CASES = ("both", "stripped", "alone")


def config(port: int, backends: dict[str, RecordingBackend]) -> str:
    exporters = "\n".join(
        f'  otlp/{name}: {{endpoint: "127.0.0.1:{b.grpc_port}", tls: {{insecure: true}}}}'
        for name, b in backends.items()
    )
    return f"""
receivers:
  otlp: {{protocols: {{grpc: {{endpoint: "127.0.0.1:{port}"}}}}}}
processors:
  attributes/strip:
    actions:
      - {{key: gen_ai.usage.input_tokens, action: delete}}
      - {{key: gen_ai.usage.output_tokens, action: delete}}
connectors:
  agentmetrics/both: {{metrics_flush_interval: 100ms, genai_events: {{window: 1h}}}}
  agentmetrics/stripped: {{metrics_flush_interval: 100ms, genai_events: {{window: 1h}}}}
  agentmetrics/alone: {{metrics_flush_interval: 100ms, genai_events: {{window: 0s}}}}
exporters:
{exporters}
service:
  telemetry: {{metrics: {{address: "127.0.0.1:{free_port()}"}}}}
  pipelines:
    traces/both: {{receivers: [otlp], exporters: [agentmetrics/both]}}
    logs/both: {{receivers: [otlp], exporters: [agentmetrics/both]}}
    traces/stripped:
      receivers: [otlp]
      processors: [attributes/strip]
      exporters: [agentmetrics/stripped]
    logs/stripped: {{receivers: [otlp], exporters: [agentmetrics/stripped]}}
    logs/alone: {{receivers: [otlp], exporters: [agentmetrics/alone]}}
    metrics/both: {{receivers: [agentmetrics/both], exporters: [otlp/both]}}
    metrics/stripped: {{receivers: [agentmetrics/stripped], exporters: [otlp/stripped]}}
    metrics/alone: {{receivers: [agentmetrics/alone], exporters: [otlp/alone]}}
"""


def usage(backend: RecordingBackend) -> dict[tuple[str, str], tuple[int, float]]:
    """gen_ai.client.token.usage of the latest flush (cumulative)."""
    for req in reversed(backend.metrics):
        found = points(req, "gen_ai.client.token.usage")
        if found:
            return {
                (labels(dp)["gen_ai.request.model"], labels(dp)["gen_ai.token.type"]): (
                    dp.count,
                    dp.sum,
                )
                for dp in found
            }
    return {}


def results(service: Any, name: str) -> dict[str, float]:
    out = {}
    for result in ("joined", "duplicate", "alone", "early", "no_usage", "forgotten"):
        value = service.telemetry.value(
            "otelcol_connector_agentmetrics_genai_events_total", connector=name, result=result
        )
        if value:
            out[result] = value
    return out


async def test_openai_v2_events_and_spans_count_tokens_once(tmp_path: Path) -> None:
    await run_source("otel", tmp_path)


async def test_openai_v2_content_in_events_only(tmp_path: Path) -> None:
    """Content capture EVENT_ONLY: the spans keep the usage, the events carry it too."""
    await run_source("otel_event_only", tmp_path)


async def test_openllmetry_content_events_count_nothing(tmp_path: Path) -> None:
    await run_source("openllmetry_events", tmp_path)


async def run_source(kind: str, tmp_path: Path) -> None:
    port = free_port()
    async with (
        recording_backend() as both,
        recording_backend() as stripped,
        recording_backend() as alone,
    ):
        backends = {"both": both, "stripped": stripped, "alone": alone}
        async with running_service(config(port, backends), tmp_path) as service:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "tests.plugins.agentmetrics_event_sources", kind, str(port),
                cwd=ROOT,
            )  # fmt: skip
            assert await asyncio.wait_for(proc.wait(), 60) == 0
            expected = {("gpt-4o-mini", "input"): (2, 84.0), ("gpt-4o-mini", "output"): (2, 34.0)}
            if kind in ("otel", "otel_event_only"):
                # the spans' own usage (both), the events' given to the spans (stripped) and
                # on their own (alone): the same exact counts
                wanted = dict.fromkeys(CASES, expected)
                events = {
                    "both": {"duplicate": 2},
                    "stripped": {"joined": 2},
                    "alone": {"alone": 2},
                }
            else:
                # (system, user, choice) + (system, user, assistant, tool, choice): no usage
                wanted = {"both": expected, "stripped": {}, "alone": {}}
                events = {name: {"no_usage": 8} for name in CASES}
            for name, backend in backends.items():
                if wanted[name]:
                    await wait_until(lambda b=backend, w=wanted[name]: usage(b) == w, within=20)
            # a few more flushes: still counted once
            flushes = len(both.metrics)
            await wait_until(lambda: len(both.metrics) > flushes + 2)
            for name, backend in backends.items():
                assert usage(backend) == wanted[name], name
                assert results(service, f"agentmetrics/{name}") == events[name], name
            # the spans' durations, with the model (both and stripped; none from events)
            for name, backend in backends.items():
                ops = [
                    dp
                    for req in backend.metrics[-1:]
                    for dp in points(req, "gen_ai.client.operation.duration")
                ]
                assert sum(dp.count for dp in ops) == (0 if name == "alone" else 2), name


def workflow_config(port: int, backends: dict[str, RecordingBackend]) -> str:
    exporters = "\n".join(
        f'  otlp/{name}: {{endpoint: "127.0.0.1:{b.grpc_port}", tls: {{insecure: true}}}}'
        for name, b in backends.items()
    )
    return f"""
receivers:
  otlp: {{protocols: {{grpc: {{endpoint: "127.0.0.1:{port}"}}}}}}
processors:
  workflow: {{wait_duration: 200ms}}
connectors:
  agentmetrics/both: {{metrics_flush_interval: 100ms, genai_events: {{window: 1h}}}}
  agentmetrics/alone: {{metrics_flush_interval: 100ms, genai_events: {{window: 0s}}}}
exporters:
{exporters}
service:
  telemetry: {{metrics: {{address: "127.0.0.1:{free_port()}"}}}}
  pipelines:
    traces: {{receivers: [otlp], processors: [workflow], exporters: [agentmetrics/both]}}
    logs:
      receivers: [otlp]
      processors: [workflow]
      exporters: [agentmetrics/both, agentmetrics/alone, otlp/records]
    metrics/both: {{receivers: [agentmetrics/both], exporters: [otlp/both]}}
    metrics/alone: {{receivers: [agentmetrics/alone], exporters: [otlp/alone]}}
"""


def workflow_tokens(backend: RecordingBackend) -> dict[tuple[str, str], int]:
    for req in reversed(backend.metrics):
        found = points(req, "agent_workflow_tokens")
        if found:
            return {
                (labels(dp)["workflow_type"], labels(dp)["token_type"]): dp.as_int for dp in found
            }
    return {}


async def test_workflow_stamps_the_events_of_its_trace(tmp_path: Path) -> None:
    """openai-v2 inside a workflow root span: the ``workflow`` processor of the logs pipeline
    stamps the events with their workflow (held until the trace's release), so the events
    alone give the workflow's tokens; with the spans too, the tokens count once."""
    port = free_port()
    async with (
        recording_backend() as both,
        recording_backend() as alone,
        recording_backend() as records,
    ):
        backends = {"both": both, "alone": alone, "records": records}
        async with running_service(workflow_config(port, backends), tmp_path) as service:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "tests.plugins.agentmetrics_event_sources", "otel_workflow",
                str(port), cwd=ROOT,
            )  # fmt: skip
            assert await asyncio.wait_for(proc.wait(), 60) == 0
            expected = {("research", "input"): 84, ("research", "output"): 34}
            for backend in (both, alone):
                await wait_until(lambda b=backend: workflow_tokens(b) == expected, within=20)
            await wait_until(lambda: records.log_record_count() == 2)
            for record in records.log_records:
                attrs = {kv.key: kv.value.string_value for kv in record.attributes}
                assert attrs["workflow.id"] == "wf-events-1"
                assert attrs["workflow.type"] == "research"
                assert attrs["workflow.outcome"] == "success"
            assert usage(both) == usage(alone)
            assert results(service, "agentmetrics/both") == {"duplicate": 2}
            assert results(service, "agentmetrics/alone") == {"alone": 2}
            stamped = service.telemetry.value(
                "otelcol_processor_workflow_log_records_total", processor="workflow",
                result="stamped",
            )  # fmt: skip
            assert stamped == 2
