"""The gateway's own telemetry: logs (text or JSON lines) and metrics with the Collector's
``otelcol_*`` names, so existing Collector dashboards work."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import prometheus_client
import psutil
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pipeline.component import ComponentID, Kind
from pipeline.pdata import Signal

prometheus_client.disable_created_metrics()

LOGGER_NAME = "pipeline"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``msg`` and any extra fields."""

    _STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in self._STANDARD and not key.startswith("_"):
                out[key] = (
                    value if isinstance(value, str | int | float | bool | None) else str(value)
                )
        if record.exc_info:
            out["error"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``2026-01-01T00:00:00.000Z info pipeline.receiver msg {"k": "v"}``."""

    _STANDARD = JsonFormatter._STANDARD

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        extras = {
            k: v if isinstance(v, str | int | float | bool | None) else str(v)
            for k, v in record.__dict__.items()
            if k not in self._STANDARD and not k.startswith("_")
        }
        line = f"{ts}.{int(record.msecs):03d}Z\t{record.levelname.lower()}\t{record.name}\t"
        line += record.getMessage()
        if extras:
            line += "\t" + json.dumps(extras, ensure_ascii=False)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure_logging(level: str = "info", encoding: str = "console") -> None:
    """Send the gateway's logs to stderr as text (``console``) or JSON lines (``json``)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if encoding == "json" else TextFormatter())
    root = logging.getLogger(LOGGER_NAME)
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


class ComponentLogger(logging.LoggerAdapter[logging.Logger]):
    """A logger adapter that keeps the call's own ``extra`` fields beside the component's."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        kwargs["extra"] = {**(self.extra or {}), **(kwargs.get("extra") or {})}
        return msg, kwargs


def component_logger(
    kind: Kind, component_id: ComponentID | str
) -> logging.LoggerAdapter[logging.Logger]:
    """The logger of one component; every line carries ``kind`` and ``component``."""
    logger = logging.getLogger(f"{LOGGER_NAME}.{kind}")
    return ComponentLogger(logger, {"kind": str(kind), "component": str(component_id)})


class ProcessCollector(Collector):
    """The gateway process's own resource use, with the Collector's ``otelcol_process_*``
    names as its Prometheus endpoint exposes them.

    Python has no Go runtime: ``otelcol_process_runtime_heap_alloc_bytes`` is the process's
    private resident memory (RSS minus shared pages: the interpreter's heap and arenas) and
    ``otelcol_process_runtime_total_sys_memory_bytes`` the virtual memory obtained from the
    OS. Read on each scrape (the service scrapes off the event loop).
    """

    def __init__(self) -> None:
        self._process = psutil.Process()
        self._created = self._process.create_time()

    def collect(self) -> Iterator[Metric]:
        times = os.times()
        mem = self._process.memory_info()
        uptime = CounterMetricFamily("otelcol_process_uptime_seconds", "Uptime of the process.")
        uptime.add_metric([], max(time.time() - self._created, 0.0))
        yield uptime
        cpu = CounterMetricFamily(
            "otelcol_process_cpu_seconds", "Total CPU user and system time in seconds."
        )
        cpu.add_metric([], times.user + times.system)
        yield cpu
        yield GaugeMetricFamily(
            "otelcol_process_memory_rss_bytes",
            "Total physical memory (resident set size).",
            value=float(mem.rss),
        )
        yield GaugeMetricFamily(
            "otelcol_process_runtime_heap_alloc_bytes",
            "Bytes of allocated heap objects (private resident memory of the interpreter).",
            value=float(max(mem.rss - getattr(mem, "shared", 0), 0)),
        )
        yield GaugeMetricFamily(
            "otelcol_process_runtime_total_sys_memory_bytes",
            "Total bytes of memory obtained from the OS (virtual memory size).",
            value=float(mem.vms),
        )


class SelfTelemetry:
    """The metrics of one running service, in its own prometheus_client registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(ProcessCollector())
        self._metrics: dict[str, Any] = {}

    def counter(self, name: str, documentation: str, labelnames: tuple[str, ...]) -> Counter:
        """Get or create a counter (exposed with the ``_total`` suffix)."""
        return self._get(Counter, name, documentation, labelnames)

    def gauge(self, name: str, documentation: str, labelnames: tuple[str, ...]) -> Gauge:
        """Get or create a gauge."""
        return self._get(Gauge, name, documentation, labelnames)

    def histogram(
        self, name: str, documentation: str, labelnames: tuple[str, ...], buckets: tuple[float, ...]
    ) -> Histogram:
        """Get or create a histogram."""
        metric = self._metrics.get(name)
        if metric is None:
            metric = Histogram(
                name, documentation, labelnames, registry=self.registry, buckets=buckets
            )
            self._metrics[name] = metric
        return metric

    def _get(self, cls: Any, name: str, documentation: str, labelnames: tuple[str, ...]) -> Any:
        metric = self._metrics.get(name)
        if metric is None:
            metric = cls(name, documentation, labelnames, registry=self.registry)
            self._metrics[name] = metric
        return metric

    def value(self, name: str, **labels: str) -> float:
        """A sample's current value (0 when absent): for tests and the health extension."""
        v = self.registry.get_sample_value(name, labels)
        return float(v) if v is not None else 0.0

    def component(self, kind: Kind, component_id: ComponentID | str) -> ComponentTelemetry:
        """The telemetry view of one component."""
        return ComponentTelemetry(self, kind, str(component_id))

    def component_samples(self) -> dict[tuple[str, str, str], dict[str, float]]:
        """Every counter and gauge sample labelled with a component, keyed by ``(kind,
        component ID, signal)`` (signal ``""`` when the sample names none; ``"traces ->
        metrics"`` for a connector's), each a map of short names (``accepted``, ``incoming``,
        ``queue_size``, ``dropped``...: the metric's name without ``otelcol_<kind>_``, the
        item suffix and ``_total``) to values summed over the other labels. For the status
        snapshot (:meth:`pipeline.Host.snapshot`): the same values ``/metrics`` shows."""
        out: dict[tuple[str, str, str], dict[str, float]] = {}
        for name, metric in list(self._metrics.items()):
            if isinstance(metric, Histogram):
                continue
            short_kind = _kind_of(name)
            if short_kind is None:
                continue
            kind, prefix = short_kind
            short = name[len(prefix) :]
            implied = ""
            for suffix, signal in _ITEM_SUFFIXES:
                if short.endswith(suffix):
                    short = short[: -len(suffix)]
                    implied = signal
                    break
            for family in metric.collect():
                for sample in family.samples:
                    if sample.name.endswith("_created"):
                        continue
                    labels = sample.labels
                    component = labels.get(kind) if kind != "component" else None
                    sample_kind = kind
                    if kind == "component":  # otelcol_component_*{kind, component}
                        sample_kind = labels.get("kind", "")
                        component = labels.get("component")
                    if component is None:
                        continue
                    if "from_signal" in labels:
                        signal = f"{labels['from_signal']} -> {labels.get('to_signal', '')}"
                    else:
                        signal = labels.get("otel_signal") or labels.get("data_type") or implied
                    values = out.setdefault((sample_kind, component, signal), {})
                    values[short] = values.get(short, 0.0) + sample.value
        return out


_KINDS = tuple(str(k) for k in Kind)
_ITEM_SUFFIXES = (
    ("_spans", "traces"),
    ("_metric_points", "metrics"),
    ("_log_records", "logs"),
    ("_items", ""),
)


def _kind_of(name: str) -> tuple[str, str] | None:
    """The component label of an ``otelcol_<kind>_*`` metric and the prefix to strip."""
    for kind in (*_KINDS, "component"):
        prefix = f"otelcol_{kind}_"
        if name.startswith(prefix):
            return kind, prefix
    return None


class LoopValue:
    """The value of a counter or gauge series (a ``prometheus_client`` child) that only the
    event loop's thread changes: no lock. A change is an attribute update (``value += n``,
    ``value = float(x)``) where the child's ``inc``/``set`` take four Python calls and a mutex
    (~4,400 instructions, by callgrind): the series the engine counts on every consume (a
    processor's incoming and outgoing items, a receiver's accepted) and the gauges a component
    sets on every request are changed this way. A scrape in another thread reads the value
    whole (a float, under the GIL); what prometheus_client calls on a value (``inc``, ``set``,
    ``get``, exemplars) still works.

    Take one with :func:`loop_value`; change ``value`` only from the event loop's thread
    (two threads adding to it could lose an update), and keep it a float (a gauge is set with
    ``float(x)``, as ``Gauge.set`` does)."""

    __slots__ = ("_exemplar", "value")

    _multiprocess = False

    def __init__(self, value: float = 0.0) -> None:
        self.value = value
        self._exemplar: Any = None

    def inc(self, amount: float) -> None:
        self.value += amount

    def set(self, value: float, timestamp: float | None = None) -> None:
        self.value = value

    def set_exemplar(self, exemplar: Any) -> None:
        self._exemplar = exemplar

    def get(self) -> float:
        return self.value

    def get_exemplar(self) -> Any:
        return self._exemplar


class ReadValue(LoopValue):
    """The value of a gauge series read from its component's state when collected (a
    scrape, an export) instead of set on every change: ``read()`` (called from the
    collecting thread: it must only read, e.g. a ``len()`` or an int attribute). Put it in
    place of a child's own value (``gauge.labels(...)._value = ReadValue(read)``); setting
    ``value`` does nothing."""

    __slots__ = ("_read",)

    def __init__(self, read: Callable[[], float]) -> None:
        self._read = read
        self._exemplar = None

    @property
    def value(self) -> float:
        return float(self._read())

    @value.setter
    def value(self, value: float) -> None:
        pass

    def get(self) -> float:
        return float(self._read())


def loop_value(child: Any) -> LoopValue:
    """The lock-free :class:`LoopValue` of a counter or gauge child (``metric.labels(...)``),
    put in place of its own value the first time (keeping what it counted)."""
    value = child._value
    if isinstance(value, LoopValue):
        return value
    loop = LoopValue(float(value.get()))
    child._value = loop
    return loop


class ComponentTelemetry:
    """Counters of one component, labelled as the Collector labels them."""

    def __init__(self, service: SelfTelemetry, kind: Kind, name: str) -> None:
        self.service = service
        self.kind = kind
        self.name = name
        self._children: dict[tuple[str, str], Any] = {}

    def _counter(self, what: str, signal: Signal, doc: str) -> Any:
        key = (what, signal)
        child = self._children.get(key)
        if child is None:
            label = str(self.kind)
            metric = self.service.counter(
                f"otelcol_{label}_{what}_{signal.item_name}", doc, (label,)
            )
            child = metric.labels(self.name)
            self._children[key] = child
        return child

    # receivers
    def accepted(self, signal: Signal, n: int) -> None:
        """Items a receiver pushed into the pipeline successfully."""
        self._counter("accepted", signal, "Items accepted by the receiver.").inc(n)

    def refused(self, signal: Signal, n: int) -> None:
        """Items a receiver could not push into the pipeline (or could not decode)."""
        self._counter("refused", signal, "Items refused by the receiver or the pipeline.").inc(n)

    def replayed(self, signal: Signal, n: int) -> None:
        """Items a receiver acknowledged before a crash, replayed from the write-ahead log
        (their delivery was not confirmed: some may reach the backend twice)."""
        self._counter(
            "replayed", signal, "Items replayed from the write-ahead log after a restart."
        ).inc(n)

    def refused_request(self, transport: str, reason: str, n: int = 1) -> None:
        """Requests (or datagrams, connections) a receiver refused before they reached the
        pipeline, by transport and reason: ``otelcol_receiver_refused_requests``. For another
        kind of component serving a network endpoint (the health check, the ``prometheus``
        exporter): ``otelcol_<kind>_refused_requests{<kind>,transport,reason}``."""
        key = ("refused_request", f"{transport}/{reason}")
        child = self._children.get(key)
        if child is None:
            label = str(self.kind)
            metric = self.service.counter(
                f"otelcol_{label}_refused_requests",
                "Requests or datagrams a receiver refused before they reached the pipeline."
                if self.kind == Kind.RECEIVER
                else f"Requests or connections the {label}'s endpoint refused.",
                (label, "transport", "reason"),
            )
            child = metric.labels(self.name, transport, reason)
            self._children[key] = child
        child.inc(n)

    # exporters
    def sent(self, signal: Signal, n: int) -> None:
        """Items an exporter delivered."""
        self._counter("sent", signal, "Items sent by the exporter.").inc(n)

    def send_failed(self, signal: Signal, n: int) -> None:
        """Items an exporter gave up on (permanent error, retries exhausted, shutdown)."""
        self._counter("send_failed", signal, "Items the exporter failed to send.").inc(n)

    def enqueue_failed(self, signal: Signal, n: int) -> None:
        """Items refused because the sending queue was full."""
        self._counter("enqueue_failed", signal, "Items refused by a full sending queue.").inc(n)

    def retried(self, signal: Signal, n: int) -> None:
        """Items whose sending is being retried."""
        self._counter("retried", signal, "Items whose sending was retried.").inc(n)

    # processors and exporters
    def incoming(self, signal: Signal, n: int) -> None:
        """Items the processor (exporter) was given: ``otelcol_<kind>_incoming_items``."""
        self._items("incoming", signal, n)

    def outgoing(self, signal: Signal, n: int) -> None:
        self._items("outgoing", signal, n)

    def _items(self, direction: str, signal: Signal, n: int) -> None:
        self._items_child(direction, signal).inc(n)

    def _items_child(self, direction: str, signal: Signal) -> Any:
        key = (direction, signal)
        child = self._children.get(key)
        if child is None:
            label = str(self.kind)
            metric = self.service.counter(
                f"otelcol_{label}_{direction}_items",
                f"Items {direction} to/from the {label}.",
                (label, "otel_signal"),
            )
            child = metric.labels(self.name, str(signal))
            self._children[key] = child
        return child

    def items_value(self, direction: str, signal: Signal) -> LoopValue:
        """The lock-free value of ``otelcol_<kind>_<direction>_items{otel_signal=signal}``
        (``incoming`` or ``outgoing``; the series exists from this call): for the engine's
        counting on every consume, on the event loop (:class:`LoopValue`)."""
        return loop_value(self._items_child(direction, signal))

    def receiver_values(self, signal: Signal) -> tuple[LoopValue, LoopValue]:
        """The lock-free values of a receiver's accepted and refused items of ``signal``
        (both series exist from this call): for the engine's counting of every request a
        receiver pushes, on the event loop (:class:`LoopValue`)."""
        accepted = self._counter("accepted", signal, "Items accepted by the receiver.")
        refused = self._counter("refused", signal, "Items refused by the receiver or the pipeline.")
        return loop_value(accepted), loop_value(refused)

    def connector_items(self, direction: str, source: str, target: str, n: int) -> None:
        """Items a connector takes in (``incoming``, from a pipeline of ``source``) or passes
        into its pipelines (``outgoing``, of ``target``)."""
        key = (direction, f"{source}->{target}")
        child = self._children.get(key)
        if child is None:
            metric = self.service.counter(
                f"otelcol_connector_{direction}_items",
                f"Items {direction} to/from the connector, by the signals it joins.",
                ("connector", "from_signal", "to_signal"),
            )
            child = metric.labels(self.name, str(source), str(target))
            self._children[key] = child
        child.inc(n)

    def connector_value(self, direction: str, source: str, target: str) -> LoopValue:
        """The lock-free value of ``otelcol_connector_<direction>_items`` (see
        :meth:`connector_items`; the series exists from this call), on the event loop."""
        self.connector_items(direction, source, target, 0)
        return loop_value(self._children[(direction, f"{source}->{target}")])

    def task_restarted(self, task: str) -> None:
        """A background task of the component failed and was restarted."""
        key = ("restart", task)
        child = self._children.get(key)
        if child is None:
            metric = self.service.counter(
                "otelcol_component_task_restarts",
                "Background tasks of a component restarted after they failed.",
                ("kind", "component", "task"),
            )
            child = metric.labels(str(self.kind), self.name, task)
            self._children[key] = child
        child.inc()

    def dropped(self, signal: Signal, n: int, reason: str = "") -> None:
        """Items a component dropped; every drop must be counted."""
        key = ("dropped", f"{signal}/{reason}")
        child = self._children.get(key)
        if child is None:
            metric = self.service.counter(
                f"otelcol_{self.kind}_dropped_items",
                "Items dropped by the component, by reason.",
                (str(self.kind), "otel_signal", "reason"),
            )
            child = metric.labels(self.name, str(signal), reason)
            self._children[key] = child
        child.inc(n)
