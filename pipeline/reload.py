"""Config reload: what a new config changes in the running graph, and the file watcher of
``pipeline run --watch-config``.

:meth:`pipeline.service.Service.reload` validates the new config first (as ``pipeline
validate``: on any error the running config stays), builds the new graph taking over every
instance whose config did not change (:class:`pipeline.graph.Graph` with ``previous``),
starts what is new, points the kept instances at their new successors, and shuts down what
left the config in flow order, so what the replaced components hold drains through them
into the exporters. A new component that needs what an old one holds (the same listening
address, the same persistent queue, the same extension) starts once that one has stopped:
listening sockets are handed over (:data:`pipeline.netedge.HANDOVER`), so a receiver's port
never stops listening, and data for an exporter being replaced waits at its gate.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

from pipeline.component import Kind
from pipeline.config import Config
from pipeline.configtypes import split_endpoint
from pipeline.graph import Node
from pipeline.telemetry import LOGGER_NAME

log = logging.getLogger(f"{LOGGER_NAME}.reload")

WATCH_INTERVAL = 1.0  # seconds between two looks at the config files
SETTLE = 0.5  # a changed file must stay unchanged this long before it is read (editors)


def restart_needed(old: Config, new: Config) -> list[str]:
    """What a reload cannot change (the error messages; empty when it can apply ``new``)."""
    out = []
    if old.service.durability != new.service.durability:
        out.append(
            "service.durability: the write-ahead log cannot change while the gateway runs; "
            "restart it to apply this change"
        )
    return out


def endpoints(node: Node) -> set[tuple[str, int, str]]:
    """The addresses a component listens on (``port 0`` never conflicts)."""
    out: set[tuple[str, int, str]] = set()
    if node.config is None:
        return out
    for ep in node.config.listen_endpoints():
        host, port = split_endpoint(ep.endpoint)
        if port:
            out.add((host, port, ep.transport))
    return out


def blockers(node: Node, removed: list[Node]) -> list[Node]:
    """The old components ``node`` must wait for: those holding its listening addresses, its
    persistent queue, or (an extension) the same ID."""
    mine = endpoints(node)
    out = []
    for old in removed:
        same = old.kind == node.kind and old.id == node.id
        if (
            mine & endpoints(old)
            or (same and node.kind == Kind.EXTENSION)
            or (
                same
                and node.kind == Kind.EXPORTER
                and old.signal == node.signal
                and (_storage(node) or _storage(old))
            )
        ):
            out.append(old)
    return out


def _storage(node: Node) -> bool:
    return (
        any(what == "storage" for *_, what in node.config.extension_references())
        if (node.config is not None)
        else False
    )


Fingerprint = tuple[tuple[str, int, int, str], ...]


def fingerprint(paths: list[str]) -> Fingerprint:
    """What the watcher compares: each file's modification time, size and content hash."""
    out = []
    for p in paths:
        try:
            st = os.stat(p)
            digest = hashlib.sha256(Path(p).read_bytes()).hexdigest()
        except OSError:
            out.append((p, -1, -1, ""))
            continue
        out.append((p, st.st_mtime_ns, st.st_size, digest))
    return tuple(out)


class ConfigWatcher:
    """Polls the config files (``--watch-config``): when their content changed and stayed so
    for ``SETTLE`` seconds, calls ``on_change()``. Contents are compared (a touched file with
    the same bytes reloads nothing); a file that vanished is waited for (an editor replacing
    it), and reloading it then reports what is wrong."""

    def __init__(
        self,
        paths: list[str],
        on_change: Callable[[], Awaitable[object]],
        interval: float = WATCH_INTERVAL,
        initial: Fingerprint | None = None,
    ) -> None:
        """``initial``: the files as they were when the running config was read."""
        self.paths = paths
        self.on_change = on_change
        self.interval = interval
        self.initial = initial

    async def run(self) -> None:
        current = self.initial
        if current is None:
            current = await asyncio.to_thread(fingerprint, self.paths)
        while True:
            await asyncio.sleep(self.interval)
            seen = await asyncio.to_thread(fingerprint, self.paths)
            if seen == current:
                continue
            await asyncio.sleep(SETTLE)
            settled = await asyncio.to_thread(fingerprint, self.paths)
            if settled != seen:
                continue  # still being written: look again next time
            if any(size < 0 for _, _, size, _ in settled):
                continue  # a file is missing (being replaced): wait for it
            if [d for *_, d in settled] == [d for *_, d in current]:
                current = settled  # touched, same content
                continue
            current = settled
            log.info("config files changed; reloading", extra={"files": ",".join(self.paths)})
            try:
                await self.on_change()
            except Exception as exc:  # never stop watching
                log.error("config reload failed: %s", exc, exc_info=exc)
