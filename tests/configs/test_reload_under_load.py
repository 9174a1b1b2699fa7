"""Config reload (SIGHUP) of a running gateway under steady load, on the shipped configs: a
processor's option changed, an exporter added, a pipeline removed, an invalid config. No
acknowledged span is lost and the receiving sockets never stop listening (a client opening
connections throughout is never refused), with the default (in-memory) config and with
durability on.

The load (:class:`tests.durable_support.AckingLoad`) numbers its span ids and records which
requests the gateway acknowledged; the backend (:class:`tests.durable_support.IdBackend`)
counts the ids it receives.
"""

from __future__ import annotations

import asyncio
import copy
import json
import signal
import socket
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.configs.test_durable_gateway import gateway_env, metric, scrape
from tests.durable_support import AckingLoad, IdBackend, summary, wait_delivered
from tests.support import ROOT, GatewayProcess, free_port, wait_until

RATE = 5000


class ConnectProbe:
    """Opens a TCP connection to each address every few milliseconds, in a thread, and
    counts the connections refused."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = [(a.rsplit(":", 1)[0], int(a.rsplit(":", 1)[1])) for a in addresses]
        self.attempts = 0
        self.refused: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for host, port in self.addresses:
                self.attempts += 1
                try:
                    with socket.create_connection((host, port), timeout=5):
                        pass
                except OSError as exc:
                    self.refused.append(f"{host}:{port}: {exc}")
            time.sleep(0.003)

    def __enter__(self) -> ConnectProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def configs(base: Path, console: str, second_backend: int) -> list[tuple[str, dict[str, Any]]]:
    """The config of each step (the shipped config, with the console and, for the default
    config, an otlp exporter to the backend)."""
    start = yaml.safe_load(base.read_text())
    start["extensions"]["console"] = {"endpoint": console, "refresh_interval": "250ms"}
    start["service"]["extensions"].append("console")
    if "otlp" not in start["exporters"]:
        start["exporters"]["otlp"] = {
            "endpoint": "${env:OTLP_EXPORTER_ENDPOINT}",
            "retry_on_failure": {"max_elapsed_time": 0},
        }
        start["service"]["pipelines"]["traces"]["exporters"].append("otlp")
    changed = copy.deepcopy(start)
    changed["processors"]["workflow"]["wait_duration"] = "1s"
    added = copy.deepcopy(changed)
    added["exporters"]["otlp/second"] = {"endpoint": f"http://127.0.0.1:{second_backend}"}
    added["service"]["pipelines"]["traces"]["exporters"].append("otlp/second")
    removed = copy.deepcopy(added)
    del removed["service"]["pipelines"]["logs"]
    invalid = copy.deepcopy(removed)
    invalid["processors"]["batch"]["send_batch_size"] = -5
    return [
        ("start", start),
        ("processor option changed", changed),
        ("exporter added", added),
        ("pipeline removed", removed),
        ("invalid", invalid),
    ]


def console_state(address: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://{address}/api/state", timeout=5) as resp:
        data: dict[str, Any] = json.load(resp)
    return data


def reload_lines(gw: GatewayProcess) -> list[dict[str, Any]]:
    return [
        r
        for r in gw.records()
        if r.get("msg") == "configuration reloaded"
        or str(r.get("msg", "")).startswith("invalid configuration (")
    ]


@pytest.mark.slow
@pytest.mark.parametrize("base", ["gateway.yaml", "durable-gateway.yaml"])
async def test_reload_under_load_loses_nothing_and_keeps_listening(
    tmp_path: Path, base: str
) -> None:
    backend, second = IdBackend(), IdBackend()
    await backend.start_grpc()
    await second.start_grpc()
    env = gateway_env(tmp_path / "storage", backend.grpc_port)
    console = f"127.0.0.1:{free_port()}"
    steps = configs(ROOT / "configs" / base, console, second.grpc_port)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(steps[0][1]))
    gw = GatewayProcess(path, env=env)
    try:
        await asyncio.to_thread(gw.wait_ready, 30.0)
        load = AckingLoad(env["OTLP_GRPC_ENDPOINT"], rate=RATE, spans_per_request=100)
        with ConnectProbe(env["OTLP_GRPC_ENDPOINT"], env["OTLP_HTTP_ENDPOINT"]) as probe:
            sending = asyncio.create_task(load.run(11.0))
            for i, (name, config) in enumerate(steps[1:], start=1):
                await asyncio.sleep(1.5)
                path.write_text(yaml.safe_dump(config))
                gw.proc.send_signal(signal.SIGHUP)
                deadline = time.monotonic() + 30
                while len(reload_lines(gw)) < i:
                    assert time.monotonic() < deadline, f"reload {name!r} did not finish"
                    assert gw.proc.poll() is None, "\n".join(gw.lines())
                    await asyncio.sleep(0.05)
                if name == "exporter added":
                    acked_at_add = load.result.acked_spans
            result = await sending
        want = result.acked_ids()
        missing = await wait_delivered(backend, want, within=60)
        figures = summary(result, backend, want)
        figures["connects"] = probe.attempts
        print(f"reload under load ({base}):", figures)
        assert result.acked_spans > RATE * 5
        assert not missing, f"{len(missing)} acknowledged spans never arrived: {figures}"
        assert not probe.refused, probe.refused[:5]
        assert probe.attempts > 1000
        # the added exporter took the traces that came after it
        await wait_until(lambda: len(second.count()) > 0, within=30)
        assert acked_at_add > 0
        # what the gateway says about the reloads: its log, its metrics, the console
        lines = reload_lines(gw)
        assert [r["msg"].split(" (")[0] for r in lines] == [
            "configuration reloaded",
            "configuration reloaded",
            "configuration reloaded",
            "invalid configuration",
        ]
        assert lines[0]["replaced"] == 1  # the workflow processor only
        text = await asyncio.to_thread(scrape, env["PIPELINE_TELEMETRY_ADDRESS"])
        assert metric(text, "otelcol_service_config_reloads_total") == 4
        state = await asyncio.to_thread(console_state, console)
        results = [(r["trigger"], r["result"]) for r in state["reloads"]]
        assert results == [("SIGHUP", "applied")] * 3 + [("SIGHUP", "invalid")]
        assert state["generation"] == 4
        assert "processors.batch.send_batch_size" in state["reloads"][-1]["errors"][0]
        assert state["reloads"][1]["added"] == ["exporter otlp/second (traces)"]
        assert "receiver otlp (logs)" in state["reloads"][2]["removed"]
        instances = {c["instance"] for c in state["components"]}
        assert "exporter debug (logs)" not in instances
        assert all(c["status"] == "ok" for c in state["components"]), state["components"]
        assert await asyncio.to_thread(gw.stop) == 0
    finally:
        gw.__exit__()
        await backend.stop()
        await second.stop()


async def test_watch_config_reloads_when_the_file_changes(tmp_path: Path) -> None:
    grpc_endpoint = f"127.0.0.1:{free_port()}"
    text = f"""
receivers:
  otlp:
    protocols: {{grpc: {{endpoint: "{grpc_endpoint}"}}}}
processors:
  batch: {{timeout: 200ms}}
exporters:
  debug: {{verbosity: basic}}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces: {{receivers: [otlp], processors: [batch], exporters: [debug]}}
"""
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with GatewayProcess(path, args=("--watch-config",)) as gw:
        await asyncio.to_thread(gw.wait_ready, 30.0)
        path.write_text(text.replace("timeout: 200ms", "timeout: 100ms"))
        deadline = time.monotonic() + 15
        while not reload_lines(gw):
            assert time.monotonic() < deadline, "\n".join(gw.lines())
            await asyncio.sleep(0.05)
        (line,) = reload_lines(gw)
        assert line["msg"] == "configuration reloaded" and line["replaced"] == 1
        assert any(r.get("msg") == "config files changed; reloading" for r in gw.records())
        path.write_text("service: [")
        while len(reload_lines(gw)) < 2:
            assert time.monotonic() < deadline + 15, "\n".join(gw.lines())
            await asyncio.sleep(0.05)
        assert reload_lines(gw)[1]["msg"].startswith("invalid configuration (1 error)")
        assert await asyncio.to_thread(gw.stop) == 0
