"""Exposure of the shipped configs: without their environment variables every endpoint listens
on localhost only; the container image sets each variable to all interfaces (the Docker case);
servers bound to ``localhost`` answer on the loopback addresses."""

from __future__ import annotations

import re
import socket
import urllib.request
from pathlib import Path

import grpc
import pytest

from pipeline.component import Kind
from pipeline.config import load_config
from pipeline.configtypes import split_endpoint
from pipeline.pluginmanager import default_registry
from tests.plugins.otlpreceiver.test_grpc_server import TRACE_EXPORT, request
from tests.support import free_port, running_service

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
# ${env:NAME:-localhost:port}: a listening endpoint's variable (not an exporter's target, not a
# directory); that listening endpoints default to localhost is checked on the loaded configs
REFERENCE = re.compile(r"\$\{env:([A-Z_]+):-(localhost:\d+)\}")


def variables() -> dict[str, str]:
    """Every ``${env:NAME:-localhost:port}`` of the shipped configs: NAME -> default."""
    found: dict[str, str] = {}
    for path in CONFIGS:
        for name, default in REFERENCE.findall(path.read_text()):
            assert found.setdefault(name, default) == default, f"{name} differs in {path.name}"
    return found


def listening(path: Path) -> list[tuple[str, str]]:
    """``(config path, endpoint)`` of everything a config listens on."""
    config = load_config([str(path)], default_registry())
    out = []
    for kind in (Kind.RECEIVER, Kind.EXPORTER, Kind.EXTENSION):
        for cid, cfg in config.components[kind].items():
            out += [
                (f"{kind.section}.{cid}.{ep.path}", ep.endpoint) for ep in cfg.listen_endpoints()
            ]
    metrics = config.service.telemetry.metrics
    if metrics.level != "none":
        out.append(("service.telemetry.metrics.address", metrics.address))
    return out


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_endpoint_listens_on_localhost_by_default(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in variables():
        monkeypatch.delenv(name, raising=False)
    # what a config requires without a default (an exporter's target, a storage directory)
    monkeypatch.setenv("OTLP_EXPORTER_ENDPOINT", "backend.example:4317")
    monkeypatch.setenv("PIPELINE_STORAGE_DIR", "/tmp/pipeline-storage")
    endpoints = listening(path)
    assert endpoints
    for where, endpoint in endpoints:
        assert split_endpoint(endpoint)[0] == "localhost", f"{path.name}: {where} = {endpoint}"


def test_the_container_image_listens_on_all_interfaces() -> None:
    """The Dockerfile sets every variable the configs read to 0.0.0.0 and the default port."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    env = dict(re.findall(r"\b([A-Z_]+)=(\S+)", " ".join(re.findall(r"^ENV (.*)$", text, re.M))))
    for name, default in variables().items():
        port = split_endpoint(default)[1]
        assert env.get(name) == f"0.0.0.0:{port}", name
    exposed = set(re.findall(r"\b(\d+)(?:/udp)?\b", re.search(r"^EXPOSE (.*)$", text, re.M)[1]))  # type: ignore[index]
    assert {str(split_endpoint(d)[1]) for d in variables().values()} <= exposed


def localhost_addresses() -> list[str]:
    """What ``localhost`` resolves to here (127.0.0.1, and ::1 where /etc/hosts says so)."""
    infos = socket.getaddrinfo("localhost", 1, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    hosts = {str(info[4][0]) for info in infos}
    return sorted(f"[{h}]" if ":" in h else h for h in hosts)


async def test_servers_bound_to_localhost_answer_on_loopback(tmp_path: Path) -> None:
    grpc_port, http_port, health_port, own_port = (free_port() for _ in range(4))
    config = f"""
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "localhost:{grpc_port}"}}
      http: {{endpoint: "localhost:{http_port}"}}
exporters:
  debug: {{verbosity: basic}}
extensions:
  health_check: {{endpoint: "localhost:{health_port}"}}
service:
  extensions: [health_check]
  telemetry: {{metrics: {{address: "localhost:{own_port}"}}}}
  pipelines:
    traces: {{receivers: [otlp], exporters: [debug]}}
"""
    hosts = localhost_addresses()
    assert all(h in ("127.0.0.1", "[::1]") for h in hosts)
    async with running_service(config, tmp_path):
        for host in hosts:
            async with grpc.aio.insecure_channel(f"{host}:{grpc_port}") as channel:
                assert await channel.unary_unary(TRACE_EXPORT)(request(1), timeout=5) == b""
            for port, path in ((health_port, "/"), (own_port, "/metrics")):
                url = f"http://{host}:{port}{path}"
                status = await _status(url)
                assert status == 200, url
            assert await _status(f"http://{host}:{http_port}/v1/traces") == 405  # GET
        # not on the machine's other addresses
        other = _non_loopback_address()
        if other is not None:
            with pytest.raises(OSError), socket.create_connection((other, grpc_port), 2):
                pass


async def _status(url: str) -> int:
    import asyncio

    def get() -> int:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return int(r.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)

    return await asyncio.to_thread(get)


def _non_loopback_address() -> str | None:
    """An IPv4 address of this machine that is not loopback (the route to the outside)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: no packet is sent for a UDP connect
        except OSError:
            return None
        address = str(s.getsockname()[0])
    return None if address.startswith("127.") else address
