"""Config of the ``file_storage`` extension, with the Collector's option names."""

from __future__ import annotations

from pydantic import Field, field_validator

from pipeline import ComponentConfig, ConfigModel, Duration, Seconds


class CompactionConfig(ConfigModel):
    """``compaction``: accepted as the Collector writes it. The Collector's file storage is a
    bbolt database that keeps the pages a drained backlog used until it is compacted; this
    extension's storage is a log of segment files, each deleted as soon as every record in
    it is done, so the space a backlog took is returned while it drains (what ``on_rebound``
    asks for) and there is never anything to compact at start. The options are checked and
    have no further effect (the extension says so in its start-up log line)."""

    on_start: bool = False
    on_rebound: bool = False
    directory: str = ""
    max_transaction_size: int = Field(65536, ge=0)
    rebound_needed_threshold_mib: int = Field(100, ge=0)
    rebound_trigger_threshold_mib: int = Field(10, ge=0)
    check_interval: Duration = Seconds(5.0)
    cleanup_on_start: bool = False


class FileStorageConfig(ComponentConfig):
    """``extensions.file_storage``."""

    directory: str = "/var/lib/otelcol/file_storage"
    """Where the data is kept: one subdirectory per user (``service_wal``,
    ``exporter_otlp__traces``), named as the Collector names its files."""
    timeout: Duration = Seconds(1.0)
    """How long to wait for the lock of a subdirectory another process holds."""
    fsync: bool = False
    """``true``: every write is fsynced before it is acknowledged (writes waiting meanwhile
    share one fsync: group commit); survives a power loss. ``false``: a write is acknowledged
    once it is in the page cache (survives the process being killed, not a power loss) and the
    files are fsynced every ``fsync_interval``."""
    fsync_interval: Duration = Seconds(1.0)
    """With ``fsync: false``: how often written data is fsynced in the background (``0``: never,
    the kernel writes it back on its own, typically within 30 s). Not a Collector option."""
    create_directory: bool = False
    """Create ``directory`` (and its parents) when missing."""
    directory_permissions: str = "0750"
    """Octal permissions of the directories created (minus the umask)."""
    compaction: CompactionConfig = CompactionConfig()

    @field_validator("directory")
    @classmethod
    def _directory(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("directory must not be empty")
        return value

    @field_validator("directory_permissions")
    @classmethod
    def _permissions(cls, value: str) -> str:
        try:
            mode = int(value, 8)
        except ValueError:
            raise ValueError(
                f"directory_permissions must be octal such as '0750', got {value!r}"
            ) from None
        if not 0 <= mode <= 0o7777:
            raise ValueError(f"directory_permissions out of range: {value!r}")
        return value
