"""The ``resourcedetection`` processor: env, system and docker detectors, merged into every
resource of each signal, with ``override``."""

from __future__ import annotations

import json
import platform
import socket
import threading
from pathlib import Path

import pytest

from pipeline import Signal
from plugins.resourcedetectionprocessor import detectors
from plugins.resourcedetectionprocessor.factory import DockerConfig, SystemConfig
from tests.plugins.ottl.support import logs, metrics, through_gateway, traces


@pytest.mark.parametrize("signal", list(Signal))
async def test_env_and_system_on_every_signal(signal: Signal,
                                              monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=prod,team=a%20b")
    payload = {Signal.TRACES: traces([{}]), Signal.METRICS: metrics([{"name": "m"}]),
               Signal.LOGS: logs([{}])}[signal]  # fmt: skip
    out = await through_gateway(
        {
            "resource_detection": {
                "detectors": ["env", "system", "docker"],
                "system": {
                    "hostname_sources": ["os"],
                    "resource_attributes": {"host.arch": {"enabled": True},
                                            "os.description": {"enabled": True}},
                },
            }
        },
        signal,
        payload,
    )  # fmt: skip
    resource = out[0]["resource"]
    assert resource["deployment.environment"] == "prod" and resource["team"] == "a b"
    assert resource["host.name"] == socket.gethostname()
    assert resource["os.type"] == platform.system().lower()
    assert resource["host.arch"] in ("amd64", "arm64", platform.machine())
    assert resource["service.name"] == "svc"


async def test_override_false_keeps_what_the_telemetry_says(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.name=detected,extra=1")
    out = await through_gateway(
        {"resourcedetection": {"detectors": ["env"], "override": False}},
        Signal.TRACES,
        traces([{}]),
    )
    assert out[0]["resource"] == {"service.name": "svc", "extra": "1"}


def test_env_refuses_a_malformed_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "a=1,broken")
    with pytest.raises(detectors.DetectionError, match="not key=value"):
        detectors.env()


def test_system_cpu_facts() -> None:
    config = SystemConfig.model_validate(
        {"resource_attributes": {k: {"enabled": True} for k in SystemConfig.DEFAULTS}}
    )
    found = detectors.system(config)
    assert found["os.type"] == "linux"
    if Path("/proc/cpuinfo").exists() and "model name" in Path("/proc/cpuinfo").read_text():
        assert found["host.cpu.model.name"]
    if Path("/etc/machine-id").exists() and Path("/etc/machine-id").read_text().strip():
        assert found["host.id"] == Path("/etc/machine-id").read_text().strip()


def test_docker_detector_reads_the_daemon_info(tmp_path: Path) -> None:
    """Against a unix socket answering ``GET /info`` as the Docker Engine API documents it (no
    Docker daemon runs on the test machines); and a missing daemon is a DetectionError."""
    path = str(tmp_path / "docker.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    body = json.dumps({"Name": "docker-host", "OSType": "linux", "ID": "x"}).encode()

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            request = conn.recv(4096)
            assert request.startswith(b"GET /info HTTP/1.0")
            conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n" + body)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        found = detectors.docker(DockerConfig(), 2.0, path)
    finally:
        thread.join(5)
        server.close()
    assert found == {"host.name": "docker-host", "os.type": "linux"}
    with pytest.raises(detectors.DetectionError, match="cannot reach the Docker daemon"):
        detectors.docker(DockerConfig(), 1.0, str(tmp_path / "none.sock"))


def test_unknown_detectors_are_refused() -> None:
    from pipeline import ConfigErrors
    from tests.support import config_from_text

    with pytest.raises(ConfigErrors, match="unsupported detector"):
        config_from_text(
            "receivers: {otlp: {protocols: {grpc: {endpoint: '127.0.0.1:0'}}}}\n"
            "processors: {resourcedetection: {detectors: [env, ec2]}}\n"
            "exporters: {debug: }\n"
            "service: {pipelines: {traces: {receivers: [otlp], processors: [resourcedetection],"
            " exporters: [debug]}}}\n"
        )
