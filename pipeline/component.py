"""Component identity, kinds, stability and lifecycle."""

from __future__ import annotations

import enum
import logging
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from pipeline.ratelimit import LogLimiter

if TYPE_CHECKING:
    from pipeline.status import ProviderEntry, ServiceSnapshot
    from pipeline.telemetry import ComponentTelemetry

_TYPE_RE = re.compile(r"^[a-zA-Z][0-9a-zA-Z_]{0,62}$")
_NAME_RE = re.compile(r"^[^\s/]+$")


class Kind(enum.StrEnum):
    """What part a component plays in a pipeline."""

    RECEIVER = "receiver"
    PROCESSOR = "processor"
    EXPORTER = "exporter"
    CONNECTOR = "connector"
    EXTENSION = "extension"

    @property
    def section(self) -> str:
        """The top-level config section holding components of this kind."""
        return f"{self.value}s"


class Stability(enum.StrEnum):
    """The Collector's stability levels."""

    UNDEVELOPED = "undeveloped"
    DEVELOPMENT = "development"
    ALPHA = "alpha"
    BETA = "beta"
    STABLE = "stable"
    DEPRECATED = "deprecated"
    UNMAINTAINED = "unmaintained"


@dataclass(frozen=True, order=True)
class ComponentID:
    """``type[/name]``, as in the Collector: ``batch``, ``otlp/backend``."""

    type: str
    name: str = ""

    @classmethod
    def parse(cls, text: str) -> ComponentID:
        """Parse ``type[/name]``; raises ``ValueError`` with a readable message."""
        if not isinstance(text, str) or not text:
            raise ValueError(
                "a component ID must be a non-empty string such as 'otlp' or 'otlp/name'"
            )
        type_, sep, name = text.partition("/")
        if not _TYPE_RE.match(type_):
            raise ValueError(
                f"invalid component type {type_!r}: it must start with a letter and hold only "
                "letters, digits and '_'"
            )
        if sep and not _NAME_RE.match(name):
            raise ValueError(
                f"invalid component name {name!r} in {text!r}: it must be non-empty "
                "and hold no spaces or '/'"
            )
        return cls(type_, name)

    def __str__(self) -> str:
        return f"{self.type}/{self.name}" if self.name else self.type


class Host(Protocol):
    """What the running service offers its components (see :mod:`pipeline.status`)."""

    def get_extension(self, component_id: ComponentID) -> Any | None:
        """The running extension with this ID, or ``None``."""

    def report_status(
        self, component: str, status: str, error: BaseException | None = None
    ) -> None:
        """Report a component's status (a :class:`pipeline.Status`: ``ok``,
        ``recoverable_error``, ``permanent_error``...); ``component`` is
        ``settings.instance``."""

    def report_fatal_error(self, error: BaseException) -> None:
        """Ask the service to shut down because this component cannot go on."""

    def snapshot(self, counters: bool = True) -> ServiceSnapshot:
        """The pipelines, every running instance with its status, counters (unless
        ``counters`` is false) and sending queues, and the reload history: plain data."""

    def providers(self, interface: type) -> list[ProviderEntry]:
        """The providers of ``interface`` (a :class:`pipeline.status.Provider` subclass) the
        running components registered with :meth:`CreateSettings.provide`."""

    def get_factory(self, kind: Kind, type_: str) -> Any | None:
        """The registered factory of a component type (or alias), or ``None``: for a
        component that creates others at run time (the ``loadbalancing`` exporter creates an
        ``otlp`` exporter per backend) without importing their internals."""


@dataclass
class CreateSettings:
    """What a factory receives besides the config: the component's ID, logger and telemetry.

    ``instance`` names this running instance as the host knows it (``processor batch (pipeline
    traces)``): the name to give :meth:`Host.report_status`.
    """

    id: ComponentID
    kind: Kind
    logger: logging.LoggerAdapter[logging.Logger]
    telemetry: ComponentTelemetry
    extra: dict[str, Any] = field(default_factory=dict)
    instance: str = ""
    log_limiter: LogLimiter = field(default_factory=LogLimiter, repr=False, compare=False)
    providers: list[Any] = field(default_factory=list, repr=False, compare=False)

    def provide(self, provider: Any) -> None:
        """Offer ``provider`` (an object implementing a :class:`pipeline.status.Provider`
        interface) to other components through :meth:`Host.providers`."""
        self.providers.append(provider)

    @property
    def name(self) -> str:
        """The ID as written in the config (``otlp/backend``)."""
        return str(self.id)

    def log_limited(
        self,
        level: int,
        msg: str,
        *args: object,
        key: str | None = None,
        extra: dict[str, Any] | None = None,
        exc_info: Any = None,
    ) -> bool:
        """Log through the component's logger at most once a second per ``key`` (by default
        the message template), with a count of the lines held back in between. For anything
        a sender can cause once per request: refusals, malformed data, dropped payloads."""
        return self.log_limiter.log(
            self.logger, level, msg, *args, key=key, extra=extra, exc_info=exc_info
        )


class Component:
    """Base of every running component.

    ``start`` and ``shutdown`` are coroutines. ``shutdown`` must be safe before ``start`` and
    safe to call twice; it drains what the component holds. When the service's shutdown deadline
    passes, the engine cancels the ``shutdown`` call: a component that still holds data then
    counts it as dropped.

    Two optional methods of a processor let the engine's entrance take a payload without a
    coroutine of the processor (its fixed cost a consume, paid per worker's part):

    * ``admit(data) -> None``: the processor passes its input on unchanged to the consumer it
      was created with, after this synchronous check (which raises a
      :class:`~pipeline.errors.ConsumeError` to refuse): its ``consume`` must be exactly
      ``self.admit(data); await next_consumer.consume(data)``; the engine then calls the two
      itself (``memory_limiter``);
    * ``consume_now(data) -> Awaitable | None``: ``consume`` done synchronously as far as it
      can be: ``None`` once the payload is taken, else an awaitable that finishes it (awaiting
      it must be equivalent to awaiting ``consume(data)``; ``workflow``).
    """

    async def start(self, host: Host) -> None:
        """Start serving (bind sockets, spawn tasks). Raise to abort the service's start."""

    async def shutdown(self) -> None:
        """Stop, after draining what this component holds."""
