"""Config of the ``kafka`` exporter, with the Collector's option names."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from pipeline import ConfigModel, Duration, ExporterHelperConfig
from plugins._kafka import ClientConfig


class CompressionParams(ConfigModel):
    level: int = -1
    """The codec's level (-1: its default)."""


class ProducerConfig(ConfigModel):
    """``producer``."""

    max_message_bytes: int = Field(1_000_000, ge=1000)
    """A message above this is split (by items) before it is sent."""
    required_acks: Literal[-1, 0, 1] = 1
    """0: no answer awaited; 1: the leader wrote it; -1: every in-sync replica did."""
    compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "none"
    compression_params: CompressionParams = CompressionParams()
    flush_max_messages: int = Field(0, ge=0)
    """At most this many messages in one produce request (0: librdkafka's default)."""
    linger: Duration | None = None
    """How long messages wait to fill a produce request (librdkafka's default, 5 ms)."""
    allow_auto_topic_creation: bool = True


class KafkaExporterConfig(ClientConfig, ExporterHelperConfig):
    """``exporters.kafka``."""

    partition_traces_by_id: bool = False
    """One message per trace, keyed by its trace id (hex): a trace stays in one partition."""
    partition_metrics_by_resource_attributes: bool = False
    """One message per resource, keyed by a hash of it."""
    partition_logs_by_resource_attributes: bool = False
    """One message per resource, keyed by a hash of it."""
    topic_from_attribute: str = ""
    """Accepted for Collector configs; not supported: every message goes to the signal's
    topic (an error when set)."""
    producer: ProducerConfig = ProducerConfig()

    @model_validator(mode="after")
    def _no_topic_from_attribute(self) -> KafkaExporterConfig:
        if self.topic_from_attribute:
            raise ValueError("topic_from_attribute is not supported; set the topic per signal")
        return self

    def producer_properties(self) -> dict[str, Any]:
        p = self.producer
        out = self.librdkafka()
        out.update(
            {
                "acks": {-1: "all", 0: "0", 1: "1"}[p.required_acks],
                "compression.type": p.compression,
                "message.max.bytes": p.max_message_bytes + 4096,
                "allow.auto.create.topics": p.allow_auto_topic_creation,
                # a key's partition from its FNV-1a hash, as the Collector's client (sarama)
                "partitioner": "fnv1a_random",
                "message.timeout.ms": max(1000, int((self.timeout or 30.0) * 1000)),
            }
        )
        if p.compression != "none" and p.compression_params.level >= 0:
            out["compression.level"] = p.compression_params.level
        if p.flush_max_messages:
            out["batch.num.messages"] = p.flush_max_messages
        if p.linger is not None:
            out["linger.ms"] = p.linger * 1000
        return out
