"""Factory of the ``file_storage`` extension."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from pipeline import CreateSettings, ExtensionFactory, Stability
from plugins.filestorageextension.config import FileStorageConfig

if TYPE_CHECKING:
    from plugins.filestorageextension.extension import FileStorageExtension


class FileStorageExtensionFactory(ExtensionFactory):
    type = "file_storage"
    config_class = FileStorageConfig
    description = (
        "Durable storage in a local directory: the write-ahead log of service.durability and "
        "the exporters' persistent sending queue (sending_queue.storage)."
    )
    extension_stability = Stability.ALPHA
    provides: ClassVar[frozenset[str]] = frozenset({"storage"})

    def create_default_config(self) -> FileStorageConfig:
        # The YAML default is the Collector's /var/lib/otelcol/file_storage, which must exist;
        # a config made in code (tests, embedding) gets a directory it can create.
        directory = Path(tempfile.gettempdir()) / f"pipeline-file-storage-{os.getuid()}"
        return FileStorageConfig(directory=str(directory), create_directory=True)

    def create(  # type: ignore[override]
        self, settings: CreateSettings, config: FileStorageConfig
    ) -> FileStorageExtension:
        from plugins.filestorageextension.extension import FileStorageExtension

        return FileStorageExtension(settings, config)
