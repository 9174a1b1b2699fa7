"""End to end with real libraries, offline: pydantic-ai calling an MCP server over stdio (the
multi-layer case: four spans per MCP call, two processes exporting on their own) sends OTLP to a
gateway running the unmodified default config (``configs/gateway.yaml``); Prometheus scrapes of
the gateway show each tool call once with its status, error type and server, each failure once,
and the GenAI token metrics."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections import Counter

from prometheus_client.parser import text_string_to_metric_families

from tests.agent_real.expected import EXPECTED_FUNCTION, EXPECTED_MCP
from tests.support import ROOT, GatewayProcess, free_port

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[s.name, tuple(sorted(s.labels.items()))] = s.value
    return out


def calls(samples: Samples, name: str) -> dict[tuple[str, str, str], int]:
    out = {}
    for (metric, labels), value in samples.items():
        if metric == name:
            d = dict(labels)
            out[d["tool"], d["status"], d["error_type"]] = int(value)
    return out


def test_pydantic_ai_over_mcp_through_the_default_config(tmp_path: object) -> None:
    http, prom = free_port(), free_port()
    env = {
        "OTLP_GRPC_ENDPOINT": f"127.0.0.1:{free_port()}",
        "OTLP_HTTP_ENDPOINT": f"127.0.0.1:{http}",
        "PROMETHEUS_EXPORTER_ENDPOINT": f"127.0.0.1:{prom}",
        "HEALTH_CHECK_ENDPOINT": f"127.0.0.1:{free_port()}",
        "PIPELINE_TELEMETRY_ADDRESS": f"127.0.0.1:{free_port()}",
    }
    with GatewayProcess(ROOT / "configs" / "gateway.yaml", env=env) as gw:
        gw.wait_ready(30)
        app_env = {**os.environ, "OTLP_ENDPOINT": f"http://127.0.0.1:{http}"}
        app_env.pop("SPANS_OUT", None)
        done = subprocess.run(
            [sys.executable, "-m", "tests.agent_real.pydantic_mcp_app"],
            cwd=ROOT,
            env=app_env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert "run 2 failed: tool exploded" in done.stdout
        # the workflow processor waits 2 s, the join window 10 s, the flush comes every 15 s
        deadline = time.monotonic() + 60
        samples: Samples = {}
        while time.monotonic() < deadline:
            samples = scrape(prom)
            if calls(samples, "mcp_tool_calls_total") and calls(samples, "agent_tool_calls_total"):
                break
            time.sleep(0.5)
        assert calls(samples, "mcp_tool_calls_total") == EXPECTED_MCP
        assert calls(samples, "agent_tool_calls_total") == EXPECTED_FUNCTION
        servers = {
            dict(labels)["server"]
            for (metric, labels) in samples
            if metric == "mcp_tool_calls_total"
        }
        assert servers == {"docs-mcp"}
        errors = Counter[tuple[str, str]]()
        for (metric, labels), value in samples.items():
            if metric == "errors_total":
                d = dict(labels)
                errors[d["error_type"], d["component"]] += int(value)
        assert errors == {
            ("tool_error", "mcp"): 1,
            ("timeout", "tool"): 1,
            ("RuntimeError", "tool"): 1,
        }
        tokens = {
            dict(labels)["gen_ai_token_type"]: value
            for (metric, labels), value in samples.items()
            if metric == "gen_ai_client_token_usage_sum"
        }
        assert set(tokens) == {"input", "output"} and min(tokens.values()) > 0
        for _metric, labels in samples:
            for _, value in labels:
                assert "01a2" not in value  # no per-run id (pydantic-ai's UUID7s) in labels
        gw.stop()
