"""Config of the ``kafka`` receiver, with the Collector's option names."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from pipeline import ComponentConfig, ConfigModel, Duration, Seconds
from plugins._kafka import ClientConfig


class AutoCommitConfig(ConfigModel):
    """``autocommit``: commit the marked offsets every ``interval`` (else after each batch)."""

    enable: bool = True
    interval: Duration = Seconds(1.0)


class MessageMarkingConfig(ConfigModel):
    """``message_marking``: when a message's offset is marked (stored for the next commit)."""

    after: bool = False
    """False: before the message enters the pipeline (at most once); true: once the pipeline
    accepted it (at least once: a message the pipeline refuses for now is retried, with
    ``error_backoff``, and the partition waits)."""
    on_error: bool = False
    """With ``after``: mark a message the pipeline refused for now anyway (it is lost)."""
    on_permanent_error: bool | None = None
    """Accepted for Collector configs. A message the pipeline refuses for good, or that
    cannot be decoded, is always counted, logged with its offset and marked: it would be
    refused again, and must not block its partition."""


class HeaderExtractionConfig(ConfigModel):
    """``header_extraction``: message headers copied to resource attributes
    (``kafka.header.<name>``)."""

    extract_headers: bool = False
    headers: list[str] = []
    """The header names to copy (exact match)."""


class ErrorBackoffConfig(ConfigModel):
    """``error_backoff``: the wait between two tries of a message the pipeline refused for
    now (with ``message_marking.after``)."""

    enabled: bool = True
    initial_interval: Duration = Seconds(0.1)
    max_interval: Duration = Seconds(5.0)
    multiplier: float = Field(2.0, ge=1)
    randomization_factor: float = Field(0.0, ge=0, le=1)
    max_elapsed_time: Duration = Seconds(0)


class KafkaReceiverConfig(ClientConfig, ComponentConfig):
    """``receivers.kafka``."""

    group_id: str = Field("otel-collector", min_length=1)
    group_instance_id: str = ""
    """A static group member id: a restart within ``session_timeout`` keeps the partitions."""
    initial_offset: Literal["latest", "earliest"] = "latest"
    """Where a group without committed offsets starts."""
    session_timeout: Duration = Seconds(10.0)
    heartbeat_interval: Duration = Seconds(3.0)
    group_rebalance_strategy: Literal["range", "roundrobin", "sticky", "cooperative-sticky"] = (
        "range"
    )
    min_fetch_size: int = Field(1, ge=1)
    default_fetch_size: int = Field(1_048_576, ge=1)
    max_fetch_size: int = Field(0, ge=0)
    max_fetch_wait: Duration = Seconds(0.25)
    autocommit: AutoCommitConfig = AutoCommitConfig()
    message_marking: MessageMarkingConfig = MessageMarkingConfig()
    header_extraction: HeaderExtractionConfig = HeaderExtractionConfig()
    error_backoff: ErrorBackoffConfig = ErrorBackoffConfig()
    max_batch: int = Field(500, ge=1)
    """Messages taken from the client at a time (not a Collector option)."""

    def consumer_properties(self) -> dict[str, Any]:
        out = self.librdkafka()
        strategy = {"sticky": "cooperative-sticky"}.get(
            self.group_rebalance_strategy, self.group_rebalance_strategy
        )
        out.update(
            {
                "group.id": self.group_id,
                "auto.offset.reset": self.initial_offset,
                "session.timeout.ms": int(self.session_timeout * 1000),
                "heartbeat.interval.ms": int(self.heartbeat_interval * 1000),
                "partition.assignment.strategy": strategy,
                "enable.auto.commit": self.autocommit.enable,
                "auto.commit.interval.ms": max(1, int(self.autocommit.interval * 1000)),
                # offsets are stored by the receiver when a message is marked, never by poll
                "enable.auto.offset.store": False,
                "fetch.min.bytes": self.min_fetch_size,
                "max.partition.fetch.bytes": self.default_fetch_size,
                "fetch.wait.max.ms": int(self.max_fetch_wait * 1000),
                "enable.partition.eof": False,
            }
        )
        if self.max_fetch_size:
            out["fetch.max.bytes"] = self.max_fetch_size
        if self.group_instance_id:
            out["group.instance.id"] = self.group_instance_id
        return out
