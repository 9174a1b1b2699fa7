"""The ``file_storage`` extension: durable storage on the local file system for the write-ahead
log (``service.durability``) and the exporters' persistent queue (``sending_queue.storage``),
with the Collector's option names."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

import pipeline
from plugins.filestorageextension.config import FileStorageConfig
from plugins.filestorageextension.factory import FileStorageExtensionFactory

if TYPE_CHECKING:
    from plugins.filestorageextension.extension import FileStorageExtension

_LAZY = {"FileStorageExtension": "plugins.filestorageextension.extension"}

__all__ = ["FileStorageConfig", "FileStorageExtension", "FileStorageExtensionFactory"]


@pipeline.hookimpl
def register_components(registry: pipeline.Registry) -> None:
    registry.register(FileStorageExtensionFactory())


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
