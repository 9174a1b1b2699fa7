"""The hash ring, the resolvers, and the factory lookup of the ``loadbalancing`` exporter."""

from __future__ import annotations

import asyncio
import bisect
import socket
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

from pipeline import Kind

# as the Collector's ring: each endpoint takes WEIGHT positions on a circle of MAX_POSITIONS,
# at crc32("<endpoint>-<i>"); a key goes to the first position at or after crc32(key)
MAX_POSITIONS = 36000
WEIGHT = 100
DEFAULT_PORT = 4317


def otlp_config_class() -> Any | None:
    """The config class of the registered ``otlp`` exporter (for checking
    ``protocol.otlp``), or ``None`` when no ``otlp`` exporter is registered."""
    from pipeline.pluginmanager import default_registry

    factory = default_registry().get(Kind.EXPORTER, "otlp")
    return factory.config_class if factory is not None else None


class HashRing:
    """Consistent hashing: adding or removing an endpoint moves only the keys of the arcs it
    takes or gives back."""

    def __init__(self, endpoints: list[str]) -> None:
        self.endpoints = sorted(set(endpoints))
        points: dict[int, str] = {}
        for ep in self.endpoints:
            for i in range(WEIGHT):
                pos = zlib.crc32(f"{ep}-{i}".encode()) % MAX_POSITIONS
                # a position two endpoints hash to keeps the one sorted first: the same on
                # every gateway of the tier
                points.setdefault(pos, ep)
        self._positions = sorted(points)
        self._owners = [points[p] for p in self._positions]

    def __len__(self) -> int:
        return len(self.endpoints)

    def endpoint_for(self, key: bytes) -> str:
        if not self._positions:
            raise LookupError("no backends")
        pos = zlib.crc32(key) % MAX_POSITIONS
        i = bisect.bisect_left(self._positions, pos)
        return self._owners[i if i < len(self._owners) else 0]


def with_port(hostname: str, port: int = DEFAULT_PORT) -> str:
    """``host[:port]`` with the default port added when missing (IPv6 in brackets)."""
    host = hostname.split("://", 1)[-1].rstrip("/")
    if host.startswith("["):
        return host if "]:" in host else f"{host}:{port}"
    if host.count(":") == 1:
        return host
    if host.count(":") > 1:  # a bare IPv6 address
        return f"[{host}]:{port}"
    return f"{host}:{port}"


Lookup = Callable[[str], Awaitable[list[str]]]


async def system_lookup(hostname: str) -> list[str]:
    """Every address the system's resolver gives for ``hostname`` (A and AAAA)."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(hostname, None, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


class DNSResolver:
    """Resolves ``hostname`` every ``interval``; every address is a backend on ``port``. A
    failed resolution keeps the backends known so far (counted and logged)."""

    def __init__(
        self,
        hostname: str,
        port: int,
        interval: float,
        timeout: float,
        lookup: Lookup = system_lookup,
    ) -> None:
        self.hostname = hostname
        self.port = port
        self.interval = interval
        self.timeout = timeout
        self.lookup = lookup

    async def resolve(self) -> list[str]:
        # (asyncio.timeout: wait_for on Python 3.11 loses a cancellation that arrives as the
        # lookup ends)
        async with asyncio.timeout(self.timeout or None):
            addresses = await self.lookup(self.hostname)
        return sorted(with_port(a, self.port) for a in addresses)
