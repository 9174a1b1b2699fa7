"""Validating a whole config against the registry: every mistake found before anything starts.

:func:`load_config` reads the files, checks each component's options with its typed config,
checks the pipelines (undefined components, unsupported signals, connector cycles) and returns
a :class:`Config`, or raises :class:`~pipeline.errors.ConfigErrors` listing every mistake with
its config path and file line.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, model_validator

from pipeline.auth import auth_references
from pipeline.component import ComponentID, Kind
from pipeline.configtls import ServerTLSConfig
from pipeline.configtypes import ComponentConfig, ConfigModel, Duration, Endpoint, Seconds
from pipeline.confmap import Path, RawConfig, format_path, load
from pipeline.errors import ConfigError, ConfigErrors
from pipeline.factory import ConnectorFactory, ExtensionFactory, Factory
from pipeline.netedge import NetworkLimitsConfig
from pipeline.pdata import Signal
from pipeline.registry import Registry

SUPPORTED_PIPELINE_SIGNALS = (Signal.TRACES, Signal.METRICS, Signal.LOGS)
TOP_LEVEL = ("receivers", "processors", "exporters", "connectors", "extensions", "service")


class OTLPTelemetryExporter(ConfigModel):
    """``exporter.otlp`` of a telemetry reader or log processor (the OpenTelemetry
    declarative configuration's names)."""

    protocol: Literal["http/protobuf", "grpc"] = "http/protobuf"
    endpoint: str
    headers: dict[str, str] | list[dict[str, str]] = {}
    compression: Literal["gzip", "none"] | None = None
    timeout: int = Field(10000, ge=0)
    """Milliseconds."""
    insecure: bool | None = None

    @model_validator(mode="after")
    def _check(self) -> OTLPTelemetryExporter:
        if self.protocol == "http/protobuf" and not self.endpoint.startswith(
            ("http://", "https://")
        ):
            raise ValueError(
                f"endpoint {self.endpoint!r} must be an http:// or https:// URL for "
                "protocol http/protobuf"
            )
        return self

    def header_items(self) -> list[tuple[str, str]]:
        if isinstance(self.headers, dict):
            return list(self.headers.items())
        return [(h.get("name", ""), h.get("value", "")) for h in self.headers]


class TelemetryExporterConfig(ConfigModel):
    """``exporter``: ``otlp`` (pushing readers and log processors) or ``console``."""

    otlp: OTLPTelemetryExporter | None = None
    console: dict[str, object] | None = None

    @model_validator(mode="after")
    def _check(self) -> TelemetryExporterConfig:
        if (self.otlp is None) == (self.console is None):
            raise ValueError("give exactly one exporter: otlp or console")
        return self


class PrometheusPullExporter(ConfigModel):
    """``pull.exporter.prometheus``: where the own metrics are served."""

    host: str = "localhost"
    port: int = Field(8888, ge=0, le=65535)
    without_units: bool | None = None
    without_type_suffix: bool | None = None
    without_scope_info: bool | None = None
    with_resource_constant_labels: dict[str, object] | None = None


class PullExporterConfig(ConfigModel):
    prometheus: PrometheusPullExporter


class PullReader(ConfigModel):
    exporter: PullExporterConfig


class PeriodicReader(ConfigModel):
    interval: int = Field(60000, gt=0)
    """Milliseconds between two pushes."""
    timeout: int = Field(30000, ge=0)
    exporter: TelemetryExporterConfig


class ReaderConfig(ConfigModel):
    """One of ``service.telemetry.metrics.readers``: ``pull`` (a Prometheus endpoint) or
    ``periodic`` (pushed by OTLP)."""

    pull: PullReader | None = None
    periodic: PeriodicReader | None = None

    @model_validator(mode="after")
    def _check(self) -> ReaderConfig:
        if (self.pull is None) == (self.periodic is None):
            raise ValueError("a reader is either 'pull' or 'periodic'")
        return self


class BatchLogProcessor(ConfigModel):
    schedule_delay: int = Field(1000, ge=0)
    """Milliseconds."""
    export_timeout: int = Field(30000, ge=0)
    max_queue_size: int = Field(2048, ge=1)
    max_export_batch_size: int = Field(512, ge=1)
    exporter: TelemetryExporterConfig


class SimpleLogProcessor(ConfigModel):
    exporter: TelemetryExporterConfig


class LogProcessorConfig(ConfigModel):
    """One of ``service.telemetry.logs.processors``: ``batch`` or ``simple``."""

    batch: BatchLogProcessor | None = None
    simple: SimpleLogProcessor | None = None

    @model_validator(mode="after")
    def _check(self) -> LogProcessorConfig:
        if (self.batch is None) == (self.simple is None):
            raise ValueError("a log processor is either 'batch' or 'simple'")
        return self


class LogsTelemetryConfig(ConfigModel):
    """``service.telemetry.logs``."""

    level: Literal["debug", "info", "warn", "error"] = "info"
    encoding: Literal["console", "json"] = "console"
    processors: list[LogProcessorConfig] = []
    """The gateway's own logs also sent by OTLP (as the Collector's declarative form)."""


class MetricsTelemetryConfig(ConfigModel):
    """``service.telemetry.metrics``: the gateway's own metrics, in Prometheus format at
    ``address`` or as ``readers`` say (Prometheus endpoints and OTLP pushes)."""

    level: Literal["none", "basic", "normal", "detailed"] = "normal"
    address: Endpoint = "localhost:8888"
    tls: ServerTLSConfig | None = None
    """HTTPS for ``/metrics``; with ``client_ca_file``, only scrapers with a certificate of
    that CA. Not a Collector option (its own metrics endpoint has no TLS)."""
    readers: list[ReaderConfig] = []

    def pull_addresses(self) -> list[tuple[int, str]]:
        """``(reader index or -1 for address, host:port)`` of every Prometheus endpoint."""
        pulls = [
            (i, f"{r.pull.exporter.prometheus.host}:{r.pull.exporter.prometheus.port}")
            for i, r in enumerate(self.readers)
            if r.pull is not None
        ]
        if self.readers:
            return pulls
        return [(-1, self.address)]


class TelemetryConfig(ConfigModel):
    """``service.telemetry``."""

    logs: LogsTelemetryConfig = LogsTelemetryConfig()
    metrics: MetricsTelemetryConfig = MetricsTelemetryConfig()
    resource: dict[str, str | None] = {}
    """Resource attributes of the own telemetry pushed by OTLP (``null`` removes one)."""


class PipelineModel(ConfigModel):
    """One entry of ``service.pipelines``."""

    receivers: list[str] = []
    processors: list[str] = []
    exporters: list[str] = []


DURABILITY_WITH_WORKERS = (
    "service.durability cannot be combined with service.workers other than 1: a request "
    "acknowledged once its write-ahead-log record is written would be split across workers "
    "whose logs replay independently; run one worker, or several gateways each with its own "
    "log behind a load balancer or Kafka"
)


class DurabilityConfig(ConfigModel):
    """``service.durability``: acknowledge a request only once it is in a write-ahead log kept
    in a storage extension, and replay what was not delivered after a restart (not a
    Collector option; see ``docs/durability.md``)."""

    storage: str
    """A ``file_storage`` extension, listed in ``service.extensions``."""
    receivers: list[str] | None = None
    """The receivers whose requests are logged (default: every receiver of the pipelines)."""


class ServiceModel(ConfigModel):
    """``service``."""

    extensions: list[str] = []
    pipelines: dict[str, PipelineModel | None] = {}
    telemetry: TelemetryConfig = TelemetryConfig()
    shutdown_timeout: Duration = Seconds(30.0)
    """How long shutdown may take to drain what is in flight before the rest is dropped
    (counted). Not a Collector option."""
    limits: NetworkLimitsConfig = NetworkLimitsConfig()
    """What all network endpoints of the process share (not a Collector option)."""
    durability: DurabilityConfig | None = None
    workers: int = Field(1, ge=0)
    """Worker processes sharing the receiving ports (0: one per core; not a Collector option;
    see ``docs/architecture.md``, "Workers"). ``pipeline run --workers`` overrides it."""
    worker_routing: Literal["trace_id", "first_arrival", "balanced"] = "trace_id"
    """With several workers, which one processes a trace: ``trace_id`` (its hash: the load
    spreads by trace, a client request's spans usually cross between workers),
    ``first_arrival`` (the worker that received its first span: a trace sent over one
    connection stays in its worker; the load spreads by connection) or ``balanced`` (first
    arrival, except that a worker at least half busy, by its event loop's busy fraction, with
    client requests queueing up, whose sibling is at least 0.15 less busy claims its new
    traces for that sibling: at a low rate nothing crosses, under load the work of a few
    connections spreads over every worker).
    Read when the gateway starts (a reload does not change it). Not a Collector option; see
    ``docs/architecture.md``, "Workers"."""
    worker_acknowledge: Literal["owner", "handover"] = "owner"
    """With several workers, when a client request whose spans (points, records) other workers
    own is answered: ``owner`` once every owner's pipelines accepted its part (a refusal there
    reaches the client), ``handover`` once the receiving worker's pipelines accepted its own
    part and the others' parts were queued for their owners (retained until accepted, sent
    again after a refusal or a restart of the owner, joined over 50 ms: fewer wake-ups of
    both workers). Read when the gateway starts. Not a Collector option; see
    ``docs/architecture.md``, "Workers"."""


@dataclass(frozen=True, order=True)
class PipelineID:
    """``traces``, ``metrics/agent``: a signal and an optional name."""

    signal: Signal
    name: str = ""

    def __str__(self) -> str:
        return f"{self.signal}/{self.name}" if self.name else str(self.signal)


@dataclass
class PipelineConfig:
    """A validated pipeline."""

    id: PipelineID
    receivers: list[ComponentID]
    processors: list[ComponentID]
    exporters: list[ComponentID]


@dataclass
class Config:
    """A validated configuration."""

    components: dict[Kind, dict[ComponentID, ComponentConfig]]
    pipelines: dict[PipelineID, PipelineConfig]
    extensions: list[ComponentID]
    service: ServiceModel
    raw: RawConfig
    registry: Registry
    warnings: list[ConfigError] = field(default_factory=list)

    def factory(self, kind: Kind, component_id: ComponentID) -> Factory:
        factory = self.registry.get(kind, component_id.type)
        assert factory is not None
        return factory


# -- pydantic errors into config errors ---------------------------------------------------------

_TYPE_MESSAGES = {
    "int_parsing": "expected an integer",
    "int_type": "expected an integer",
    "int_from_float": "expected an integer",
    "float_parsing": "expected a number",
    "float_type": "expected a number",
    "bool_parsing": "expected true or false",
    "bool_type": "expected true or false",
    "string_type": "expected a string",
    "dict_type": "expected a map",
    "model_type": "expected a map",
    "model_attributes_type": "expected a map",
    "list_type": "expected a list",
}


def _unwrap(annotation: Any) -> list[Any]:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, __import__("types").UnionType, typing.Annotated):
        out = []
        for arg in (
            typing.get_args(annotation)
            if origin is not typing.Annotated
            else [typing.get_args(annotation)[0]]
        ):
            out.extend(_unwrap(arg))
        return out
    return [annotation]


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model class whose fields are valid at ``loc`` (for "did you mean")."""
    current: Any = model
    for part in loc:
        candidates = _unwrap(current)
        nxt = None
        for cand in candidates:
            if isinstance(cand, type) and issubclass(cand, BaseModel):
                fld = cand.model_fields.get(part) if isinstance(part, str) else None
                if fld is None:
                    for f in cand.model_fields.values():
                        if f.alias == part:
                            fld = f
                if fld is not None:
                    nxt = fld.annotation
                    break
            origin = typing.get_origin(cand)
            if origin in (list, dict, tuple, set) or (
                isinstance(origin, type) and origin.__name__ in ("Sequence", "Mapping")
            ):
                args = typing.get_args(cand)
                nxt = args[-1] if args else None
                break
        if nxt is None:
            return None
        current = nxt
    for cand in _unwrap(current):
        if isinstance(cand, type) and issubclass(cand, BaseModel):
            return cand
    return None


def did_you_mean(word: str, choices: typing.Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` or an empty string."""
    import difflib  # only when a config is wrong (0.4 MiB a running gateway does not need)

    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _describe_input(value: Any) -> str:
    if isinstance(value, dict):
        return "a map"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing"
    return repr(value)


def _data_path(data: Any, loc: tuple[Any, ...], keep_last: bool) -> tuple[Any, ...]:
    """``loc`` without the union tags pydantic inserts (parts that index nothing in ``data``)."""
    out: list[Any] = []
    current = data
    for i, part in enumerate(loc):
        if (isinstance(current, dict) and part in current) or (
            isinstance(current, list) and isinstance(part, int) and part < len(current)
        ):
            current = current[part]
            out.append(part)
        elif keep_last and i == len(loc) - 1:
            out.append(part)
    return tuple(out)


def validation_errors(
    exc: ValidationError, model: type[BaseModel], base: Path, raw: RawConfig, data: Any = None
) -> list[ConfigError]:
    """Turn a pydantic ``ValidationError`` into config errors at their paths and lines."""
    out: list[ConfigError] = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        etype = err["type"]
        shown = _data_path(data, loc, keep_last=etype in ("missing", "extra_forbidden"))
        path = (*base, *shown)
        if etype == "extra_forbidden":
            key = str(loc[-1])
            parent = _model_at(model, shown[:-1])
            names = [f.alias or n for n, f in parent.model_fields.items()] if parent else []
            msg = f"unknown option {key!r}{did_you_mean(key, names)}"
            if parent and not did_you_mean(key, names) and names:
                msg += f"; valid options: {', '.join(sorted(names))}"
        elif etype == "missing":
            msg = "required option is missing"
        elif etype == "literal_error":
            expected = err.get("ctx", {}).get("expected", "")
            msg = f"expected one of {expected}, got {_describe_input(err.get('input'))}"
        elif etype in ("value_error", "assertion_error"):
            ctx_error = err.get("ctx", {}).get("error")
            msg = str(ctx_error) if ctx_error is not None else err["msg"]
        elif etype in _TYPE_MESSAGES:
            msg = f"{_TYPE_MESSAGES[etype]}, got {_describe_input(err.get('input'))}"
        else:
            msg = f"{err['msg']}, got {_describe_input(err.get('input'))}"
        out.append(raw.error(path, msg))
    return out


def _validate_model(
    model: type[BaseModel], data: Any, base: Path, raw: RawConfig, errors: list[ConfigError]
) -> Any:
    try:
        return model.model_validate(data if data is not None else {})
    except ValidationError as exc:
        errors.extend(validation_errors(exc, model, base, raw, data))
        return None


# -- the whole config ---------------------------------------------------------------------------


def load_config(filenames: list[str], registry: Registry) -> Config:
    """Read, merge and validate config files. Raises ``ConfigErrors`` listing every mistake."""
    return validate_raw(load(filenames), registry)


def validate_raw(raw: RawConfig, registry: Registry) -> Config:
    """Validate already-loaded config data against the registry."""
    errors: list[ConfigError] = []
    warnings: list[ConfigError] = list(raw.warnings)
    data = raw.data

    for key in data:
        if key not in TOP_LEVEL:
            errors.append(
                raw.error(
                    (key,),
                    f"unknown section {key!r}{did_you_mean(key, TOP_LEVEL)}; "
                    f"valid sections: {', '.join(TOP_LEVEL)}",
                )
            )

    components: dict[Kind, dict[ComponentID, ComponentConfig]] = {k: {} for k in Kind}
    for kind in Kind:
        section = data.get(kind.section)
        if section is None:
            continue
        if not isinstance(section, dict):
            errors.append(
                raw.error(
                    (kind.section,),
                    f"expected a map of {kind.section}, got {_describe_input(section)}",
                )
            )
            continue
        for key, body in section.items():
            path: Path = (kind.section, key)
            try:
                cid = ComponentID.parse(key)
            except ValueError as exc:
                errors.append(raw.error(path, str(exc)))
                continue
            factory = registry.get(kind, cid.type)
            if factory is None:
                known = registry.types(kind)
                hint = did_you_mean(cid.type, [*known, *registry.aliases(kind)])
                listing = f"; known {kind} types: {', '.join(known)}" if not hint and known else ""
                errors.append(raw.error(path, f"unknown {kind} type {cid.type!r}{hint}{listing}"))
                continue
            if body is not None and not isinstance(body, dict):
                errors.append(
                    raw.error(path, f"expected a map of options, got {_describe_input(body)}")
                )
                continue
            cfg = _validate_model(factory.config_class, body, path, raw, errors)
            if cfg is not None:
                components[kind][cid] = cfg

    service_data = data.get("service")
    if service_data is None:
        errors.append(
            ConfigError(
                "service",
                "missing section 'service': it lists the pipelines to run",
                raw.location(()),
            )
        )
        service_data = {}
    service = _validate_model(ServiceModel, service_data, ("service",), raw, errors)
    pipelines: dict[PipelineID, PipelineConfig] = {}
    extensions: list[ComponentID] = []
    if service is not None:
        extensions = _check_extensions(service, components, raw, errors)
        _check_auth(components, extensions, registry, raw, errors)
        pipelines = _check_pipelines(service, components, registry, raw, errors, warnings)
        _check_extension_references(service, components, pipelines, registry, raw, errors)
        if service.durability is not None and service.workers != 1:
            errors.append(raw.error(("service", "durability"), DURABILITY_WITH_WORKERS))
        if not errors:
            from pipeline.graph import check_cycles

            errors.extend(check_cycles(pipelines, components, raw))

    if errors:
        raise ConfigErrors(errors)
    assert service is not None
    return Config(components, pipelines, extensions, service, raw, registry, warnings)


def _check_extensions(
    service: ServiceModel,
    components: dict[Kind, dict[ComponentID, ComponentConfig]],
    raw: RawConfig,
    errors: list[ConfigError],
) -> list[ComponentID]:
    out = []
    defined = components[Kind.EXTENSION]
    for i, text in enumerate(service.extensions):
        path: Path = ("service", "extensions", i)
        try:
            cid = ComponentID.parse(text)
        except ValueError as exc:
            errors.append(raw.error(path, str(exc)))
            continue
        if cid not in defined and not _defined_but_invalid(raw, Kind.EXTENSION, text):
            errors.append(
                raw.error(
                    path,
                    f"extension {text!r} is not defined in 'extensions'"
                    f"{did_you_mean(text, [str(c) for c in defined])}",
                )
            )
            continue
        out.append(cid)
    for cid in defined:
        if cid not in out:
            raw_path: Path = ("extensions", str(cid))
            raw.warnings.append(
                raw.error(
                    raw_path,
                    f"extension {str(cid)!r} is defined but not "
                    "listed in service.extensions; it will not run",
                )
            )
    return out


def _check_auth(
    components: dict[Kind, dict[ComponentID, ComponentConfig]],
    enabled: list[ComponentID],
    registry: Registry,
    raw: RawConfig,
    errors: list[ConfigError],
) -> None:
    """Every ``auth.authenticator`` names an extension that is defined, listed in
    ``service.extensions`` and able to authenticate on that side."""
    defined = components[Kind.EXTENSION]
    for kind, configs in components.items():
        for cid, cfg in configs.items():
            for sub, auth in auth_references(cfg):
                path: Path = (kind.section, str(cid), *sub, "authenticator")
                target = auth.component_id
                where = "requests a receiver takes" if auth.side == "server" else "exporters"
                if target not in defined:
                    if not _defined_but_invalid(raw, Kind.EXTENSION, auth.authenticator):
                        errors.append(
                            raw.error(
                                path,
                                f"authenticator {auth.authenticator!r} is not defined in "
                                "'extensions'"
                                + did_you_mean(auth.authenticator, map(str, defined)),
                            )
                        )
                    continue
                if target not in enabled:
                    errors.append(
                        raw.error(
                            path,
                            f"authenticator {auth.authenticator!r} is not listed in "
                            "service.extensions, so it would not run",
                        )
                    )
                    continue
                factory = registry.get(Kind.EXTENSION, target.type)
                sides = (
                    factory.auth_sides(defined[target])
                    if isinstance(factory, ExtensionFactory)
                    else frozenset()
                )
                if auth.side not in sides:
                    can = (
                        f"it authenticates only on the {next(iter(sides))} side"
                        if sides
                        else "it is not an authenticator"
                    )
                    errors.append(
                        raw.error(
                            path,
                            f"extension {auth.authenticator!r} cannot authenticate {where}: {can}",
                        )
                    )


def _check_extension_references(
    service: ServiceModel,
    components: dict[Kind, dict[ComponentID, ComponentConfig]],
    pipelines: dict[PipelineID, PipelineConfig],
    registry: Registry,
    raw: RawConfig,
    errors: list[ConfigError],
) -> None:
    """Options that name an extension (``service.durability.storage``, an exporter's
    ``sending_queue.storage``): it must be defined, listed in ``service.extensions`` and
    provide what the option needs."""
    refs: list[tuple[Path, str, str]] = []
    durability = service.durability
    if durability is not None:
        refs.append((("service", "durability", "storage"), durability.storage, "storage"))
        used = {cid for p in pipelines.values() for cid in p.receivers}
        for i, text in enumerate(durability.receivers or []):
            path: Path = ("service", "durability", "receivers", i)
            try:
                cid = ComponentID.parse(text)
            except ValueError as exc:
                errors.append(raw.error(path, str(exc)))
                continue
            if cid not in components[Kind.RECEIVER] or cid not in used:
                errors.append(
                    raw.error(path, f"receiver {text!r} is not a receiver of any pipeline")
                )
    for kind in (Kind.RECEIVER, Kind.PROCESSOR, Kind.EXPORTER, Kind.CONNECTOR):
        for cid, cfg in components[kind].items():
            for sub, ref, capability in cfg.extension_references():
                refs.append(((kind.section, str(cid), *sub.split(".")), ref, capability))
    listed = {str(c) for c in service.extensions}
    for path, text, capability in refs:
        try:
            ext = ComponentID.parse(text)
        except ValueError as exc:
            errors.append(raw.error(path, str(exc)))
            continue
        if ext not in components[Kind.EXTENSION]:
            if _defined_but_invalid(raw, Kind.EXTENSION, text):
                continue  # its own errors are reported
            defined = [str(c) for c in components[Kind.EXTENSION]]
            errors.append(
                raw.error(
                    path,
                    f"extension {text!r} is not defined in 'extensions'"
                    f"{did_you_mean(text, defined)}",
                )
            )
            continue
        factory = registry.get(Kind.EXTENSION, ext.type)
        if capability not in getattr(factory, "provides", frozenset()):
            errors.append(
                raw.error(
                    path,
                    f"extension {text!r} ({ext.type}) does not provide {capability}; use a "
                    "file_storage extension",
                )
            )
            continue
        if str(ext) not in listed:
            errors.append(
                raw.error(
                    path, f"extension {text!r} must also be listed in service.extensions to run"
                )
            )


def _defined_but_invalid(raw: RawConfig, kind: Kind, text: str) -> bool:
    """A component whose own section had errors: don't report it again as undefined."""
    section = raw.data.get(kind.section)
    return isinstance(section, dict) and text in section


def _check_pipelines(
    service: ServiceModel,
    components: dict[Kind, dict[ComponentID, ComponentConfig]],
    registry: Registry,
    raw: RawConfig,
    errors: list[ConfigError],
    warnings: list[ConfigError],
) -> dict[PipelineID, PipelineConfig]:
    pipelines: dict[PipelineID, PipelineConfig] = {}
    used: set[tuple[Kind, ComponentID]] = set()
    # connector ID -> signals of the pipelines using it as exporter / as receiver
    connector_as_exporter: dict[ComponentID, list[tuple[Signal, Path]]] = {}
    connector_as_receiver: dict[ComponentID, list[tuple[Signal, Path]]] = {}
    signal_names = [str(s) for s in SUPPORTED_PIPELINE_SIGNALS]

    if not service.pipelines:
        errors.append(
            raw.error(
                ("service", "pipelines"),
                "no pipelines are defined: add one such as service.pipelines.traces",
            )
        )
    for key, body in service.pipelines.items():
        base: Path = ("service", "pipelines", key)
        signal_text, _, name = key.partition("/")
        if signal_text not in signal_names or (_ and not name):
            errors.append(
                raw.error(
                    base,
                    f"invalid pipeline ID {key!r}: expected 'traces', 'metrics' or "
                    f"'logs', optionally followed by '/name'"
                    f"{did_you_mean(signal_text, signal_names)}",
                )
            )
            continue
        signal = Signal(signal_text)
        pid = PipelineID(signal, name)
        body = body or PipelineModel()
        resolved: dict[str, list[ComponentID]] = {
            "receivers": [],
            "processors": [],
            "exporters": [],
        }
        for role in ("receivers", "processors", "exporters"):
            entries = getattr(body, role)
            seen: set[ComponentID] = set()
            for i, text in enumerate(entries):
                path: Path = (*base, role, i)
                try:
                    cid = ComponentID.parse(text)
                except ValueError as exc:
                    errors.append(raw.error(path, str(exc)))
                    continue
                if cid in seen:
                    errors.append(
                        raw.error(path, f"{text!r} is listed twice in this pipeline's {role}")
                    )
                    continue
                seen.add(cid)
                kind = {
                    "receivers": Kind.RECEIVER,
                    "processors": Kind.PROCESSOR,
                    "exporters": Kind.EXPORTER,
                }[role]
                if cid in components[kind]:
                    factory = registry.get(kind, cid.type)
                    assert factory is not None
                    if not factory.supports(signal):  # type: ignore[attr-defined]
                        supported = ", ".join(factory.signal_stability()) or "none"
                        errors.append(
                            raw.error(
                                path,
                                f"{kind} {text!r} does not support {signal} "
                                f"(it supports: {supported})",
                            )
                        )
                        continue
                    used.add((kind, cid))
                elif role != "processors" and cid in components[Kind.CONNECTOR]:
                    used.add((Kind.CONNECTOR, cid))
                    target = connector_as_exporter if role == "exporters" else connector_as_receiver
                    target.setdefault(cid, []).append((signal, path))
                elif _defined_but_invalid(raw, kind, text) or (
                    role != "processors" and _defined_but_invalid(raw, Kind.CONNECTOR, text)
                ):
                    continue
                else:
                    candidates = [str(c) for c in components[kind]]
                    if role != "processors":
                        candidates += [str(c) for c in components[Kind.CONNECTOR]]
                    where = f"'{kind.section}'" + (
                        " or 'connectors'" if role != "processors" else ""
                    )
                    errors.append(
                        raw.error(
                            path,
                            f"{kind} {text!r} is not defined in {where}"
                            f"{did_you_mean(text, candidates)}",
                        )
                    )
                    continue
                resolved[role].append(cid)
        for role in ("receivers", "exporters"):
            if not getattr(body, role):
                errors.append(
                    raw.error(base, f"pipeline {key!r} has no {role}: it needs at least one")
                )
        pipelines[pid] = PipelineConfig(
            pid, resolved["receivers"], resolved["processors"], resolved["exporters"]
        )

    # connectors: each use as exporter must reach a supported receiver-side pipeline and back
    for cid in components[Kind.CONNECTOR]:
        factory = registry.get(Kind.CONNECTOR, cid.type)
        assert isinstance(factory, ConnectorFactory)
        as_exp = connector_as_exporter.get(cid, [])
        as_rec = connector_as_receiver.get(cid, [])
        if not as_exp and not as_rec:
            continue
        for signal, path in as_exp:
            if not any(factory.supports(signal, r) for r, _ in as_rec):
                errors.append(
                    raw.error(path, _connector_message(factory, cid, signal, as_rec, True))
                )
        for signal, path in as_rec:
            if not any(factory.supports(e, signal) for e, _ in as_exp):
                errors.append(
                    raw.error(path, _connector_message(factory, cid, signal, as_exp, False))
                )

    for kind in (Kind.RECEIVER, Kind.PROCESSOR, Kind.EXPORTER, Kind.CONNECTOR):
        for cid in components[kind]:
            if (kind, cid) not in used:
                warnings.append(
                    raw.error(
                        (kind.section, str(cid)),
                        f"{kind} {str(cid)!r} is defined but used by no pipeline; it will not run",
                    )
                )
    return pipelines


def _connector_message(
    factory: ConnectorFactory,
    cid: ComponentID,
    signal: Signal,
    other: list[tuple[Signal, Path]],
    as_exporter: bool,
) -> str:
    pairs = ", ".join(factory.signal_stability()) or "none"
    if as_exporter:
        if not other:
            return (
                f"connector {str(cid)!r} is used as an exporter of a {signal} pipeline but as "
                f"the receiver of no pipeline (it supports: {pairs})"
            )
        return (
            f"connector {str(cid)!r} cannot send {signal} to the pipelines it feeds "
            f"({', '.join(sorted({str(s) for s, _ in other}))}); it supports: {pairs}"
        )
    if not other:
        return (
            f"connector {str(cid)!r} is used as a receiver of a {signal} pipeline but as the "
            f"exporter of no pipeline (it supports: {pairs})"
        )
    return (
        f"connector {str(cid)!r} cannot produce {signal} from the pipelines it is an "
        f"exporter of ({', '.join(sorted({str(s) for s, _ in other}))}); it supports: {pairs}"
    )


def format_config_path(path: Path) -> str:
    return format_path(path)
