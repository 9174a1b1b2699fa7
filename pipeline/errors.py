"""Errors shared by the engine and the components.

Two families:

* :class:`ConfigError` for mistakes in the user's configuration, always reported with the config
  path and the file line before anything starts;
* :class:`ConsumeError` and its subclasses for data that a component cannot take. They follow
  the OTLP specification's split: a :class:`RetryableError` tells the sender to try again later
  (receivers answer ``UNAVAILABLE``/``RESOURCE_EXHAUSTED`` or HTTP 429/503 with a retry delay),
  a :class:`PermanentError` says the same data will never be accepted.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Location:
    """Where a config value came from."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file} line {self.line}"


class ConfigError(Exception):
    """One mistake in the configuration: the config path, the message and where it stands."""

    def __init__(self, path: str, message: str, location: Location | None = None) -> None:
        self.path = path
        self.message = message
        self.location = location
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f" ({self.location})" if self.location else ""
        prefix = f"{self.path}: " if self.path else ""
        return f"{prefix}{self.message}{where}"


class ConfigErrors(Exception):
    """Every mistake found in a configuration, reported together."""

    def __init__(self, errors: list[ConfigError]) -> None:
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))


class ConsumeError(Exception):
    """Data was not accepted by a consumer."""


class RetryableError(ConsumeError):
    """The data was refused for now; the sender should retry after ``retry_after`` seconds.

    ``resource_exhausted`` marks refusals caused by the gateway's own limits (memory, queue
    capacity); gRPC receivers then answer ``RESOURCE_EXHAUSTED`` rather than ``UNAVAILABLE``.
    """

    def __init__(
        self, message: str, retry_after: float | None = None, *, resource_exhausted: bool = False
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.resource_exhausted = resource_exhausted


class PermanentError(ConsumeError):
    """The data can never be accepted (malformed, rejected by policy); retrying is pointless."""


class DataDroppedError(PermanentError):
    """A component could not process the data, dropped it and already counted the drop
    (``otelcol_<kind>_dropped_items``) and logged it: upstream components pass the refusal on
    without counting it again. Raised by the engine's isolation of each consumer boundary."""


class RequestTooLargeError(PermanentError):
    """The receiving side refused a request as too large (gRPC "message larger than max", HTTP
    413). The exporter helper sends such a request again in halves, down to single items."""


class MalformedDataError(ValueError):
    """A component found the encoded data it tried to decode corrupt (:meth:`Payload.message`).

    Not a :class:`ConsumeError`: it is a failure of the component on this payload, which the
    engine isolates (the payload is halved until the corrupt items are found and dropped, see
    :class:`pipeline.consumer.IsolatedConsumer`)."""


class ComponentStartError(Exception):
    """A component could not start (for example its endpoint could not be bound)."""
