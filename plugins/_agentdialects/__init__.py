"""Agent-telemetry dialects, shared by the agent components (``workflow``, ``agentmetrics``,
``gen_ai_normalizer``): how each instrumentation library spells agent runs, workflows, tool
calls, inference calls, MCP and A2A messages, written as data (one table per dialect) and
compiled once into a classifier.

Typical use::

    from plugins._agentdialects import DialectsConfig, load_dialects, Role

    dialects = load_dialects(config.dialects)          # once, when the component is created
    facts = dialects.classify_span(span, scope=scope_name)
    if facts.role is Role.AGENT_RUN:
        agent = facts.label("agent_name", "unknown")

The tables: ``builtin.yaml`` beside this module (the OpenTelemetry GenAI/MCP conventions and the
dialects of real libraries), those registered by plugins through the
``register_agent_dialects`` hook (:mod:`pipeline.hookspecs`), and those of the component's
``dialects:`` option. ``docs/agent-conventions.md`` documents them.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

from plugins._agentdialects.classify import (
    NO_FACTS,
    CompiledMatch,
    CompiledRule,
    CompiledSource,
    CompiledTables,
    Dialects,
    SpanFacts,
    compile_tables,
    first_exception_type,
    looks_like_run_id,
    value_int,
    value_text,
)
from plugins._agentdialects.tables import (
    LABELS,
    DialectsConfig,
    DialectTable,
    Match,
    NameRegex,
    Role,
    Rule,
)

BUILTIN_FILE = Path(__file__).with_name("builtin.yaml")
DEFAULT_DIALECT = "genai"
SEMCONV_VERSION = "1.44.0"
"""The OpenTelemetry semantic conventions version whose GenAI and MCP names the default dialect
follows (see ``docs/agent-conventions.md``)."""
SEMCONV_SCHEMA_URL = f"https://opentelemetry.io/schemas/{SEMCONV_VERSION}"


class DialectRegistry:
    """What the ``register_agent_dialects`` hook receives: ``add(table)`` registers a dialect
    (a :class:`DialectTable` or a ``dict`` of the same shape, as in YAML)."""

    def __init__(self) -> None:
        self.tables: list[DialectTable] = []
        self._source = ""
        self.sources: dict[str, str] = {}

    def add(self, table: DialectTable | dict[str, Any]) -> None:
        if not isinstance(table, DialectTable):
            table = DialectTable.model_validate(table)
        if table.name in self.sources:
            raise ValueError(
                f"dialect {table.name!r} registered twice ({self.sources[table.name]} and "
                f"{self._source or 'builtin'})"
            )
        self.sources[table.name] = self._source or "builtin"
        self.tables.append(table)

    def _set_source(self, source: str) -> None:
        self._source = source


def read_tables(path: str | Path) -> list[DialectTable]:
    """The tables of a YAML file holding one table or a list of them (``ValueError`` when it
    cannot be read or does not validate)."""
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"dialect file {str(path)!r}: {exc}") from None
    if isinstance(data, dict) and "dialects" in data:
        data = data["dialects"]
    items = data if isinstance(data, list) else [data]
    return [DialectTable.model_validate(item) for item in items]


@functools.cache
def builtin_tables() -> tuple[DialectTable, ...]:
    """The built-in tables, in the order they are tried."""
    return tuple(read_tables(BUILTIN_FILE))


@functools.cache
def plugin_tables() -> tuple[DialectTable, ...]:
    """The tables plugins register through ``register_agent_dialects`` (once per process)."""
    from pipeline.pluginmanager import create_plugin_manager

    registry = DialectRegistry()
    pm = create_plugin_manager()
    hook = getattr(pm.hook, "register_agent_dialects", None)
    if hook is None:
        return ()
    for impl in reversed(hook.get_hookimpls()):
        registry._set_source(pm.get_name(impl.plugin) or repr(impl.plugin))
        impl.function(dialects=registry)
    return tuple(registry.tables)


def resolve_tables(
    config: DialectsConfig | None = None,
    builtin: Iterable[DialectTable] | None = None,
    plugins: Iterable[DialectTable] | None = None,
) -> list[DialectTable]:
    """The tables in the order they are tried: the config's (inline, then files), then the
    plugins', then the built-in ones; a later table named like an earlier one is dropped (the
    config replaces a built-in by naming it); those in ``config.disable`` are dropped."""
    config = config or DialectsConfig()
    ordered: list[DialectTable] = list(config.tables)
    for path in config.files:
        ordered.extend(read_tables(path))
    ordered.extend(plugin_tables() if plugins is None else plugins)
    ordered.extend(builtin_tables() if builtin is None else builtin)
    known = {t.name for t in ordered}
    unknown = [n for n in config.disable if n not in known]
    if unknown:
        raise ValueError(
            f"dialects.disable names unknown dialects {unknown}; known: {', '.join(sorted(known))}"
        )
    seen: set[str] = set(config.disable)
    out = []
    for table in ordered:
        if table.name not in seen:
            seen.add(table.name)
            out.append(table)
    return out


def load_dialects(
    config: DialectsConfig | None = None, attribute_names: Any | None = None
) -> Dialects:
    """The compiled classifier for a component's ``dialects:`` option (``None``: the default)
    and, for the ``gateway`` dialect, its ``attributes:`` option (an
    ``plugins._agentconv.AttributeNames``; ``None`` or the defaults: the built-in table).
    Raises ``ValueError`` for a file that cannot be read or a table that does not validate."""
    from plugins._agentconv import AttributeNames

    custom_names = attribute_names is not None and attribute_names != AttributeNames()
    if (config is None or config == DialectsConfig()) and not custom_names:
        return default_dialects()
    builtin: list[DialectTable] | None = None
    if custom_names:
        builtin = [
            gateway_table(attribute_names) if t.name == "gateway" else t for t in builtin_tables()
        ]
    return Dialects(resolve_tables(config, builtin=builtin))


@functools.cache
def default_dialects() -> Dialects:
    """The classifier of the built-in and plugin tables (shared, built once per process)."""
    return Dialects(resolve_tables())


def table_of(tables: Sequence[DialectTable], name: str) -> DialectTable | None:
    """The table named ``name``, or ``None``."""
    return next((t for t in tables if t.name == name), None)


def gateway_table(names: Any) -> DialectTable:
    """The built-in ``gateway`` dialect with the attribute names of an
    ``plugins._agentconv.AttributeNames`` (the ``attributes:`` option of the workflow
    processor and the agentmetrics connector), so a system configured with its own names keeps
    being recognised: ``load_dialects(config, attribute_names=names)`` uses it."""
    from plugins._agentconv import AttributeNames

    default = AttributeNames()
    base = table_of(builtin_tables(), "gateway")
    assert base is not None
    mapping = {
        getattr(default, f): getattr(names, f)
        for f in AttributeNames.model_fields
        if getattr(default, f) != getattr(names, f) and f != "workflow_span_prefix"
    }
    prefix = names.workflow_span_prefix

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            out: dict[Any, Any] = {}
            for key, value in node.items():
                if key == "name_prefix" and value == [default.workflow_span_prefix]:
                    out[key] = [prefix]
                elif key == "name_regex" and value == r"^workflow\.(.+)$":
                    out[key] = f"^{re.escape(prefix)}(.+)$"
                else:
                    out[mapping.get(key, key) if isinstance(key, str) else key] = walk(value)
            return out
        if isinstance(node, list):
            return [walk(v) for v in node]
        if isinstance(node, str):
            return mapping.get(node, node)
        return node

    data = walk(base.model_dump(mode="json", exclude_none=True))
    return DialectTable.model_validate(data)


__all__ = [
    "DEFAULT_DIALECT",
    "LABELS",
    "NO_FACTS",
    "SEMCONV_SCHEMA_URL",
    "SEMCONV_VERSION",
    "CompiledMatch",
    "CompiledRule",
    "CompiledSource",
    "CompiledTables",
    "DialectRegistry",
    "DialectTable",
    "Dialects",
    "DialectsConfig",
    "Match",
    "NameRegex",
    "Role",
    "Rule",
    "SpanFacts",
    "builtin_tables",
    "compile_tables",
    "default_dialects",
    "first_exception_type",
    "gateway_table",
    "load_dialects",
    "looks_like_run_id",
    "plugin_tables",
    "read_tables",
    "resolve_tables",
    "value_int",
    "value_text",
]
