from __future__ import annotations

import json
import signal
import subprocess
import sys

from pipeline import __version__
from pipeline.cli import default_config_path
from tests.support import ROOT, GatewayProcess, free_port


def test_version() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "pipeline", "--version"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    assert out.stdout.strip() == f"pipeline {__version__}"


def test_no_command_prints_help() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "pipeline"], capture_output=True, text=True, cwd=ROOT
    )
    assert out.returncode == 2
    assert "run" in out.stdout and "validate" in out.stdout and "components" in out.stdout


def test_default_config_runs_and_stops_on_sigint() -> None:
    assert default_config_path().endswith("configs/gateway.yaml")
    grpc_port, telemetry_port, health_port, prom_port, http_port = (free_port() for _ in range(5))
    env = {
        "OTLP_GRPC_ENDPOINT": f"127.0.0.1:{grpc_port}",
        "OTLP_HTTP_ENDPOINT": f"127.0.0.1:{http_port}",
        "PIPELINE_TELEMETRY_ADDRESS": f"127.0.0.1:{telemetry_port}",
        "HEALTH_CHECK_ENDPOINT": f"127.0.0.1:{health_port}",
        "PROMETHEUS_EXPORTER_ENDPOINT": f"127.0.0.1:{prom_port}",
        # no local service to check: every health check of the default config is disabled
        **{f"HEALTHCHECK_{s}_ENDPOINT": "" for s in ("POSTGRESQL", "REDIS", "MCP", "HTTP")},
    }
    with GatewayProcess(env=env) as gw:  # no --config: the built-in default
        gw.wait_ready()
        import urllib.request

        body = urllib.request.urlopen(f"http://127.0.0.1:{telemetry_port}/metrics").read().decode()
        assert "otelcol_processor_batch_batch_send_size" in body
        health = urllib.request.urlopen(f"http://127.0.0.1:{health_port}/ready")
        assert health.status == 200
        assert gw.stop(signal.SIGINT) == 0
        records = gw.records()
    # JSON lines, one per lifecycle event
    lifecycle = [r for r in records if r.get("msg") in ("component started", "component stopped")]
    started = {(r["kind"], r["component"]) for r in lifecycle if r["msg"] == "component started"}
    stopped = {(r["kind"], r["component"]) for r in lifecycle if r["msg"] == "component stopped"}
    assert (
        started
        == stopped
        == {
            ("receiver", "otlp"),
            ("receiver", "hostmetrics"),
            ("receiver", "healthcheck"),
            ("processor", "memory_limiter"),
            ("processor", "workflow"),
            ("processor", "batch"),
            ("exporter", "debug"),
            ("exporter", "prometheus"),
            ("connector", "agentmetrics"),
            ("connector", "spanmetrics"),
            ("connector", "dbmetrics"),
            ("extension", "health_check"),
        }
    )
    disabled = {r["check"] for r in records if r.get("status") == "disabled"}
    assert disabled == {"postgresql", "redis", "mcp", "http"}
    for line in gw.lines():
        json.loads(line)  # every line is JSON


def test_invalid_config_exits_nonzero_before_starting(tmp_path: object) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "bad.yaml"
    path.write_text("receivers:\n  otlp:\nservice:\n  pipelines: {}\n")
    out = subprocess.run(
        [sys.executable, "-m", "pipeline", "run", "--config", str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert out.returncode == 1
    assert (
        "receivers.otlp: must specify at least one protocol when using the OTLP receiver"
        in out.stderr
    )
    assert "service.pipelines: no pipelines are defined" in out.stderr
    assert "component started" not in out.stderr
