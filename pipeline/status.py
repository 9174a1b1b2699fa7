"""Component status and the service's state, as plain data: what extensions read through the
host (the Collector's ``componentstatus``, with its ``Reporter`` and ``Watcher``).

Reporting. A component reports its status with :meth:`pipeline.Host.report_status`, naming
itself by ``settings.instance``; the engine reports ``starting``, ``ok``, ``stopping`` and
``stopped`` around ``start`` and ``shutdown``, and supervised tasks (:func:`pipeline.supervise`)
report ``recoverable_error`` / ``permanent_error`` when they fail::

    host.report_status(settings.instance, Status.RECOVERABLE_ERROR, exc)

Reading. :meth:`pipeline.Host.snapshot` returns a :class:`ServiceSnapshot`: the pipelines,
every running instance with its kind, signal, pipelines and downstream instances, its last
:class:`StatusEvent`, its counters (every ``otelcol_<kind>_*`` sample labelled with the
component, summed over the other labels but its signal) and the state of its sending queues
(:class:`ExporterState`), and the history of config reloads. Everything in it is plain data
(numbers, strings, tuples, frozen dataclasses): it can be serialised with
:meth:`ServiceSnapshot.to_dict`, sent between processes and merged (counters add up).

Watching. An extension that subclasses :class:`StatusWatcher` is told of every status
change (``component_status_changed``), on the event loop, as it happens.

Providers. A component offers data of its own to other components (an extension such as
``console`` or ``health_check``) through a *provider*: an object implementing one of the
interfaces below, registered at creation with :meth:`pipeline.CreateSettings.provide`.
Others find it with :meth:`pipeline.Host.providers` (``host.providers(WorkflowProvider)``),
never by importing the component or looking into its attributes. Providers return plain data.

==============================  ===========================  ==================================
interface                       offered by                   read by
==============================  ===========================  ==================================
:class:`ExporterStateProvider`  ``pipeline.ExporterHelper``  ``health_check``, ``console``
:class:`DependencyProvider`     ``healthcheck`` receiver     ``health_check``
:class:`WorkflowProvider`       ``workflow`` processor       ``console``
:class:`AgentMetricsProvider`   ``agentmetrics`` connector   ``console``
==============================  ===========================  ==================================
"""

from __future__ import annotations

import abc
import dataclasses
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


class Status(enum.StrEnum):
    """A component's status (the Collector's ``componentstatus.Status``)."""

    STARTING = "starting"
    OK = "ok"
    RECOVERABLE_ERROR = "recoverable_error"
    """It works but something failed (a background task restarted, a dependency down)."""
    PERMANENT_ERROR = "permanent_error"
    """It cannot do its work any more until the gateway is restarted or reconfigured."""
    FATAL_ERROR = "fatal_error"
    """It asked the service to stop (:meth:`pipeline.Host.report_fatal_error`)."""
    STOPPING = "stopping"
    STOPPED = "stopped"


FAILED_STATUSES = frozenset({Status.PERMANENT_ERROR, Status.FATAL_ERROR})
"""Statuses that make the gateway not live."""


@dataclass(frozen=True, slots=True)
class StatusEvent:
    """A status reported at ``timestamp`` (Unix seconds), with the error's text if any."""

    status: str
    error: str | None = None
    timestamp: float = 0.0


@dataclass(frozen=True, slots=True)
class ExporterState:
    """The sending side of an exporter (one :class:`pipeline.ExporterHelper`)."""

    signal: str
    queue_size: int
    """What waits in the sending queue, in its ``sizer``'s units (batches by default)."""
    queue_capacity: int
    """The queue's capacity in the same units (0: no queue)."""
    consecutive_failures: int
    """Failed attempts since the last success (retries included)."""
    last_error: str | None
    """The last failure's message, kept after a success."""
    last_error_time: float | None
    """When it happened (Unix seconds)."""


@dataclass(frozen=True, slots=True)
class PipelineSnapshot:
    """A pipeline and the instances it runs through (instance names)."""

    id: str
    signal: str
    receivers: tuple[str, ...]
    processors: tuple[str, ...]
    exporters: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ComponentSnapshot:
    """One running instance."""

    instance: str
    """As the host names it: ``processor batch (pipeline traces)``."""
    kind: str
    id: str
    type: str
    signal: str
    """``traces``; ``traces -> metrics`` for a connector; empty for an extension."""
    pipelines: tuple[str, ...]
    downstream: tuple[str, ...]
    """The instances it passes data to."""
    status: StatusEvent | None
    """The last status reported (``None``: none yet)."""
    counters: Mapping[str, float] = field(default_factory=dict)
    """``accepted``, ``refused``, ``incoming``, ``outgoing``, ``sent``, ``send_failed``,
    ``enqueue_failed``, ``dropped``, ``queue_size``...: the component's ``otelcol_*`` samples
    by name without the ``otelcol_<kind>_`` prefix, the item suffix and ``_total``."""
    exporters: tuple[ExporterState, ...] = ()


@dataclass(frozen=True, slots=True)
class ReloadRecord:
    """One config reload: when, what asked for it, what came of it."""

    time: float
    trigger: str
    """``SIGHUP``, ``watch`` (``--watch-config``) or ``api``."""
    result: str
    """``applied``, ``unchanged``, ``invalid`` (the running config stays) or ``failed`` (a
    component could not be built or started: the running config stays, or the part of the
    change that failed is reported in ``errors``)."""
    errors: tuple[str, ...] = ()
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    replaced: tuple[str, ...] = ()
    kept: int = 0
    duration: float = 0.0
    generation: int = 0
    """The config generation running after this reload (1: the one started with)."""


@dataclass(frozen=True, slots=True)
class ServiceSnapshot:
    """The service as it is at ``time``: see the module docstring."""

    time: float
    start_time: float
    generation: int
    pipelines: tuple[PipelineSnapshot, ...]
    components: tuple[ComponentSnapshot, ...]
    reloads: tuple[ReloadRecord, ...] = ()

    def component(self, instance: str) -> ComponentSnapshot | None:
        for c in self.components:
            if c.instance == instance:
                return c
        return None

    def to_dict(self) -> dict[str, Any]:
        """As JSON-ready dicts and lists."""
        out: dict[str, Any] = plain(self)
        return out


_SCALARS = (str, int, float, bool, type(None))
_FIELDS: dict[type, tuple[str, ...]] = {}


def plain(value: Any) -> Any:
    """A dataclass (or mapping, list, tuple of them) as JSON-ready dicts and lists."""
    cls = type(value)
    if cls in _SCALARS:
        return value
    names = _FIELDS.get(cls)
    if names is None and dataclasses.is_dataclass(value) and not isinstance(value, type):
        names = _FIELDS[cls] = tuple(f.name for f in dataclasses.fields(value))
    if names is not None:
        return {name: plain(getattr(value, name)) for name in names}
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


# -- watchers and providers --------------------------------------------------------------------
class StatusWatcher(abc.ABC):
    """An extension told of every component status change (the Collector's
    ``componentstatus.Watcher``). Called on the event loop: keep it cheap, never block."""

    @abc.abstractmethod
    def component_status_changed(self, instance: str, event: StatusEvent) -> None: ...


class Provider(abc.ABC):  # noqa: B024 (a marker: what every provider interface derives from)
    """Base of the interfaces a component offers others through the host."""


@dataclass(frozen=True, slots=True)
class ProviderEntry:
    """A provider and the instance that registered it."""

    instance: str
    kind: str
    id: str
    provider: Any


class ExporterStateProvider(Provider):
    """A sending queue: ``pipeline.ExporterHelper`` registers itself."""

    @abc.abstractmethod
    def exporter_state(self) -> ExporterState: ...


class DependencyProvider(Provider):
    """The latest results of dependency checks (the ``healthcheck`` receiver): check name ->
    ``{"status": "healthy"|"degraded"|"unhealthy", "critical": bool, "message": str, ...}``."""

    @abc.abstractmethod
    def dependencies(self) -> Mapping[str, Mapping[str, Any]]: ...


@dataclass(frozen=True, slots=True)
class WorkflowSummary:
    """A workflow trace a component released."""

    seq: int
    """Increasing with each workflow a provider records: ``recent_workflows(after=seq)``."""
    trace_id: str
    workflow_id: str
    type: str
    agent: str
    outcome: str
    tier: str
    spans: int
    tool_calls: int
    start_time: float | None
    """The root span's start (Unix seconds)."""
    duration: float | None
    """The root span's duration in seconds."""
    released_at: float
    reason: str
    """Why it was released: ``wait``, ``max_wait``, ``max_traces``, ``max_bytes``,
    ``shutdown``."""


@dataclass(frozen=True, slots=True)
class SpanSummary:
    """One span of a workflow, for a waterfall."""

    span_id: str
    parent_span_id: str
    name: str
    kind: str
    start_time: float
    end_time: float
    status: str
    """``unset``, ``ok`` or ``error``."""
    status_message: str
    service: str
    attributes: Mapping[str, str]
    """At most a few dozen, values shortened."""


@dataclass(frozen=True, slots=True)
class HeldTrace:
    trace_id: str
    age: float
    """Seconds since its first span arrived."""
    spans: int
    workflow_type: str | None
    """Known once its root arrived (``None`` before, or when it is no workflow)."""


@dataclass(frozen=True, slots=True)
class HeldTraces:
    """What a grouping component holds now."""

    traces: int
    spans: int
    bytes: int
    max_traces: int
    max_bytes: int
    oldest: tuple[HeldTrace, ...] = ()
    """The traces held the longest (a few)."""


class WorkflowProvider(Provider):
    """Workflows a component (the ``workflow`` processor) holds and released.

    Recording the released workflows costs something, so a provider records them only while
    someone asks: from the first call of :meth:`recent_workflows` until ``WATCH_SECONDS``
    after the last one.
    """

    WATCH_SECONDS = 15.0

    @abc.abstractmethod
    def held_traces(self, limit: int = 10) -> HeldTraces: ...

    @abc.abstractmethod
    def recent_workflows(self, after: int = 0, limit: int = 100) -> list[WorkflowSummary]:
        """The last ``limit`` workflows released with ``seq > after``, oldest first."""

    @abc.abstractmethod
    def workflow_spans(self, trace_id: str) -> list[SpanSummary] | None:
        """The spans of a recent workflow (hex trace id), ``None`` when no longer kept."""


@dataclass(frozen=True, slots=True)
class GaugeSample:
    """One value of a gauge: its name and labels as exported."""

    name: str
    labels: Mapping[str, str]
    value: float


class AgentMetricsProvider(Provider):
    """The agent gauges as they would be exported now (``agent_workflow_failure_ratio``,
    ``agent_workflow_sla_compliance_ratio``, ``agent_workflow_error_budget_burn_rate``...)."""

    @abc.abstractmethod
    def agent_gauges(self) -> list[GaugeSample]: ...
