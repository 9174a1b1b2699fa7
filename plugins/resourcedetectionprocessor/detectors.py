"""The detectors: each returns the attributes it found (blocking reads; run off the loop)."""

from __future__ import annotations

import json
import os
import platform
import socket
import urllib.parse
from collections.abc import Sequence
from typing import Any

from plugins.resourcedetectionprocessor.factory import DockerConfig, SystemConfig

_ARCH = {
    "x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64", "i386": "x86",
    "i686": "x86", "ppc64le": "ppc64", "s390x": "s390x", "armv7l": "arm32",
}  # fmt: skip


class DetectionError(Exception):
    """A detector could not read what it needs."""


def env() -> dict[str, Any]:
    """``OTEL_RESOURCE_ATTRIBUTES`` (``k=v,k2=v2``, values percent-decoded)."""
    text = os.environ.get("OTEL_RESOURCE_ATTRIBUTES", "").strip()
    out: dict[str, Any] = {}
    if not text:
        return out
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise DetectionError(f"OTEL_RESOURCE_ATTRIBUTES: {part!r} is not key=value")
        out[key.strip()] = urllib.parse.unquote(value.strip())
    return out


def _cpuinfo() -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if not line.strip():
                    break  # the first processor is enough
                key, _, value = line.partition(":")
                out[key.strip()] = value.strip()
    except OSError:
        pass
    return out


def _hostname(sources: Sequence[str]) -> str:
    for source in sources:
        try:
            if source == "os":
                name = socket.gethostname()
            elif source in ("dns", "lookup", "cname"):
                name = socket.getfqdn()
            else:
                continue
        except OSError:
            continue
        if name:
            return name
    raise DetectionError(f"no host name from the sources {sources}")


def system(config: SystemConfig) -> dict[str, Any]:
    """The host: name (by ``hostname_sources``), OS, architecture, machine id, CPU."""
    out: dict[str, Any] = {}
    on = config.enabled
    if on("host.name"):
        out["host.name"] = _hostname(config.hostname_sources)
    if on("os.type"):
        out["os.type"] = platform.system().lower()
    if on("host.arch"):
        machine = platform.machine().lower()
        out["host.arch"] = _ARCH.get(machine, machine)
    if on("host.id"):
        for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
            try:
                with open(path, encoding="utf-8") as fh:
                    machine_id = fh.read().strip()
            except OSError:
                continue
            if machine_id:
                out["host.id"] = machine_id
                break
    if on("os.description"):
        out["os.description"] = f"{platform.system()} {platform.release()} {platform.version()}"
    if on("os.version"):
        out["os.version"] = platform.release()
    if on("host.ip") or on("host.mac"):
        import psutil

        ips, macs = [], []
        for name, addrs in sorted(psutil.net_if_addrs().items()):
            if name == "lo":
                continue
            for a in addrs:
                if a.family in (socket.AF_INET, socket.AF_INET6):
                    ips.append(a.address.split("%")[0])
                elif a.address and a.address.count(":") == 5:
                    macs.append(a.address.upper().replace(":", "-"))
        if on("host.ip"):
            out["host.ip"] = ips
        if on("host.mac"):
            out["host.mac"] = macs
    cpu = _cpuinfo()
    fields = {
        "host.cpu.vendor.id": "vendor_id",
        "host.cpu.family": "cpu family",
        "host.cpu.model.id": "model",
        "host.cpu.model.name": "model name",
        "host.cpu.stepping": "stepping",
    }
    for attr, key in fields.items():
        if on(attr) and key in cpu:
            value = cpu[key]
            out[attr] = int(value) if attr == "host.cpu.stepping" and value.isdigit() else value
    if on("host.cpu.cache.l2.size") and "cache size" in cpu:
        parts = cpu["cache size"].split()
        if parts and parts[0].isdigit():
            out["host.cpu.cache.l2.size"] = int(parts[0]) * (1024 if parts[-1] == "KB" else 1)
    return out


def docker(config: DockerConfig, timeout: float,
           socket_path: str = "/var/run/docker.sock") -> dict[str, Any]:  # fmt: skip
    """``GET /info`` of the Docker daemon over its unix socket: its host name and OS type."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(socket_path)
            sock.sendall(b"GET /info HTTP/1.0\r\nHost: docker\r\n\r\n")
            chunks = []
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
    except OSError as exc:
        raise DetectionError(f"cannot reach the Docker daemon at {socket_path}: {exc}") from None
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.") or b" 200 " not in head.split(b"\r\n", 1)[0] + b" ":
        status = head.split(b"\r\n", 1)[0]
        raise DetectionError(f"the Docker daemon answered {status!r}")
    try:
        info = json.loads(body)
    except ValueError as exc:
        raise DetectionError(f"the Docker daemon's /info is not JSON: {exc}") from None
    out: dict[str, Any] = {}
    if config.enabled("host.name") and info.get("Name"):
        out["host.name"] = str(info["Name"])
    if config.enabled("os.type") and info.get("OSType"):
        out["os.type"] = str(info["OSType"]).lower()
    return out
