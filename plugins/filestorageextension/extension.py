"""The ``file_storage`` extension: a directory whose subdirectories hold the segment logs
(:mod:`pipeline.storage`) of the write-ahead log and of the exporters' persistent queues."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from pipeline import Component, CreateSettings, Host, workers
from pipeline.errors import ComponentStartError
from pipeline.storage import SegmentLog, safe_name
from plugins.filestorageextension.config import CompactionConfig, FileStorageConfig


class FileStorageExtension(Component):
    """Hands each user a :class:`~pipeline.storage.SegmentLog` of its own
    (:class:`pipeline.storage.StorageExtension`)."""

    def __init__(self, settings: CreateSettings, config: FileStorageConfig) -> None:
        self.settings = settings
        self.config = config
        self.directory = Path(config.directory)
        self.logs: dict[str, SegmentLog] = {}
        self._collector: _StorageCollector | None = None

    def log(self, owner: str) -> SegmentLog:
        existing = self.logs.get(owner)
        if existing is not None:
            return existing
        cfg = self.config
        sub = safe_name(owner)
        ctx = workers.current()
        if ctx is not None and ctx.count > 1:
            sub += f".worker{ctx.index}"  # each worker process its own log (service.workers)
        created = SegmentLog(
            self.directory / sub,
            fsync=cfg.fsync,
            fsync_interval=cfg.fsync_interval,
            lock_timeout=cfg.timeout,
            dir_mode=int(cfg.directory_permissions, 8),
            name=f"{self.settings.name}/{owner}",
        )
        self.logs[owner] = created
        return created

    async def start(self, host: Host) -> None:
        path = self.directory
        cfg = self.config
        if not path.exists():
            if not cfg.create_directory:
                raise ComponentStartError(
                    f"file_storage directory {path} does not exist: create it, or set "
                    "create_directory: true"
                )
            try:
                path.mkdir(mode=int(cfg.directory_permissions, 8), parents=True, exist_ok=True)
            except OSError as exc:
                raise ComponentStartError(
                    f"cannot create file_storage directory {path}: {exc.strerror or exc}"
                ) from exc
        if not path.is_dir():
            raise ComponentStartError(f"file_storage directory {path} is not a directory")
        if not os.access(path, os.W_OK | os.X_OK):
            raise ComponentStartError(f"file_storage directory {path} is not writable")
        if self._collector is None:
            self._collector = _StorageCollector(self)
            self.settings.telemetry.service.registry.register(self._collector)
        extra = {"directory": str(path), "fsync": cfg.fsync}
        if cfg.compaction != CompactionConfig():
            extra["compaction"] = (
                "nothing to compact: each segment file is deleted once all its records are done"
            )
        self.settings.logger.info("file storage ready", extra=extra)

    async def shutdown(self) -> None:
        # users close their logs first (the extension shuts down last); what is left open
        # (a user that never started) is closed here
        for owned in self.logs.values():
            owned.close()
        if self._collector is not None:
            self.settings.telemetry.service.registry.unregister(self._collector)
            self._collector = None


class _StorageCollector(Collector):
    """The logs' sizes and write counts, read on each scrape."""

    def __init__(self, extension: FileStorageExtension) -> None:
        self.extension = extension

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        labels = ["storage", "client"]
        records = GaugeMetricFamily(
            "otelcol_storage_records",
            "Records held by a storage client and not done yet (write-ahead log: requests "
            "acknowledged and not yet delivered; persistent queue: batches queued).",
            labels=labels,
        )
        size = GaugeMetricFamily(
            "otelcol_storage_bytes", "Bytes of a storage client's segment files.", labels=labels
        )
        segments = GaugeMetricFamily(
            "otelcol_storage_segments", "Segment files of a storage client.", labels=labels
        )
        written = CounterMetricFamily(
            "otelcol_storage_records_written",
            "Records written by a storage client.",
            labels=labels,
        )
        commits = CounterMetricFamily(
            "otelcol_storage_commits",
            "Group commits of a storage client (one write, and one fsync with fsync: true, "
            "for all the records waiting).",
            labels=labels,
        )
        errors = CounterMetricFamily(
            "otelcol_storage_errors",
            "Errors of a storage client's writer (I/O errors, and errors of its own code), "
            "each logged.",
            labels=labels,
        )
        failed = GaugeMetricFamily(
            "otelcol_storage_failed",
            "1 while a storage client has failed (it refuses writes until it is opened again: "
            "a restart or a reload); what it had acknowledged stays on disk.",
            labels=labels,
        )
        name = self.extension.settings.name
        for owner, owned in self.extension.logs.items():
            st = owned.stats
            values = [name, owner]
            records.add_metric(values, st.live)
            size.add_metric(values, st.bytes)
            segments.add_metric(values, st.segments)
            written.add_metric(values, st.records_written)
            commits.add_metric(values, st.commits)
            errors.add_metric(values, st.errors)
            failed.add_metric(values, 1 if st.failed else 0)
        yield from (records, size, segments, written, commits, errors, failed)
