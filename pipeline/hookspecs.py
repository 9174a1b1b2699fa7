"""Hook specifications: the plugin author's reference.

A plugin is a module (or object) with functions marked ``@pipeline.hookimpl`` whose names are
those of the hooks below. Ship it as a distribution that declares an entry point in the group
``pipeline.plugins``; the entry point's name is the plugin's name::

    # pyproject.toml of your distribution
    [project.entry-points."pipeline.plugins"]
    myplugin = "my_package.plugin"

    # my_package/plugin.py
    import pipeline

    @pipeline.hookimpl
    def register_components(registry):
        registry.register(MyExporterFactory())

The gateway loads every plugin of that group at start unless the environment variable
``PIPELINE_DISABLE_PLUGIN_AUTOLOAD`` is set; ``PIPELINE_PLUGINS=mod1,mod2`` loads modules by
import name in addition (also when autoload is off). ``pipeline components`` lists what is
registered and which distribution provided it. The built-in components register through these
same hooks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from pipeline.ottl.compiler import Functions
    from pipeline.registry import Registry
    from plugins._agentdialects import DialectRegistry

PROJECT_NAME = "pipeline"
ENTRY_POINT_GROUP = "pipeline.plugins"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def register_components(registry: Registry) -> None:
    """Register the plugin's component factories.

    Called once per process, before any config is read. Call ``registry.register(factory)``
    with an instance of a subclass of :class:`pipeline.ReceiverFactory`,
    :class:`pipeline.ProcessorFactory`, :class:`pipeline.ExporterFactory`,
    :class:`pipeline.ConnectorFactory` or :class:`pipeline.ExtensionFactory` for each component
    type the plugin provides.

    A factory declares:

    * ``type``: the name used in YAML (``otlp``, ``batch``); unique per kind across all plugins,
      or the gateway refuses to start and names both plugins;
    * ``config_class``: a :class:`pipeline.ComponentConfig` subclass whose field defaults are
      the default config. Unknown options are rejected with a "did you mean"; use
      :data:`pipeline.Duration` for durations and :data:`pipeline.Endpoint` for ``host:port``.
      Override ``listen_endpoints()`` to have endpoints checked before anything starts;
    * ``stability``: the signals it supports, each with a :class:`pipeline.Stability`
      (for connectors, keyed by ``(from_signal, to_signal)``);
    * one creator per supported signal, ``create_traces(settings, config, next_consumer)`` and
      so on (exporters take no ``next_consumer``; connectors are ``create_traces_to_metrics``).

    Components subclass :class:`pipeline.Component` (``start(host)``/``shutdown()``, both
    coroutines; shutdown safe before start and safe twice) and, unless receivers or extensions,
    implement :class:`pipeline.Consumer` (``async consume(payload)`` and ``mutates_data``).
    Payloads (:class:`pipeline.Traces`, :class:`pipeline.Metrics`) stay encoded until read:
    call ``payload.message()`` to read and ``payload.mutable_message()`` to change one.

    An extension that authenticates (for receivers' ``auth: {authenticator: ...}``) or gives
    exporters credentials subclasses :class:`pipeline.ServerAuthenticator` and/or
    :class:`pipeline.ClientAuthenticator`, and its factory's ``auth_sides(config)`` returns the
    sides (``"server"``, ``"client"``) a config of it serves; see ``docs/plugins.md``.

    :func:`pipeline.testing.check_factory` runs the lifecycle contract on a factory; run it
    in your plugin's tests.
    """


@hookspec
def register_ottl_functions(functions: Functions) -> None:
    """Add OTTL functions (editors and converters) for the ``transform`` and ``filter``
    processors and any other component that runs OTTL.

    Called once per process, the first time a config with OTTL statements is validated.
    Register each function with ``functions.add(name, params, factory)``:

    * ``name``: an editor (changes telemetry) starts with a lower-case letter (``set_tenant``),
      a converter (returns a value, changes nothing) with an upper-case one (``Reverse``);
      names are unique across the standard functions and every plugin;
    * ``params``: a list of :class:`pipeline.ottl.Param` ``(name, kind, optional=False,
      default=None)``. ``kind`` says how the argument is compiled: ``"getter"`` (any
      expression, passed as ``get(ctx) -> value``), ``"string_getter"``, ``"int_getter"``,
      ``"float_getter"``, ``"bool_getter"``, ``"map_getter"``, ``"slice_getter"`` (the same,
      type-checked at run time), ``"stringlike_getter"`` (numbers and booleans converted to a
      string), ``"target"`` (a path, passed as an accessor with ``.get(ctx)`` and
      ``.set(ctx, value)``), literals ``"string"``, ``"int"``, ``"float"``, ``"bool"``,
      ``"string_list"`` (checked when the config is validated), ``"getter_list"`` (a list
      ``[...]`` of expressions), ``"function"`` (the name of a one-value converter, passed as
      a Python callable) and ``"enum"``;
    * ``factory(*arguments)``: called once per use of the function in a statement, when the
      config is validated, with the compiled arguments in ``params`` order; it returns the
      function that runs for each item, ``run(ctx) -> value``. Raise ``ValueError`` for
      arguments that can never work (the config is refused with the statement's column);
      raise :class:`pipeline.ottl.OTTLRuntimeError` for one item's bad data (handled by the
      component's ``error_mode``);
    * ``contexts=[...]`` (keyword): the only contexts the function may be used in.

    Values are ``None``, ``str``, ``int``, ``float``, ``bool``, ``bytes``, maps (read with
    ``.get(key)``, ``.items()``, ``in``; changed with ``.set(key, value)``, ``.remove(key)``,
    ``.remove_if(predicate)``; a converter may return a ``dict``) and slices (sequences; a
    converter may return a ``list``). Example::

        from pipeline.ottl import Param

        @pipeline.hookimpl
        def register_ottl_functions(functions):
            def reverse(value):
                return lambda ctx: value(ctx)[::-1]

            functions.add("Reverse", [Param("value", "string_getter")], reverse)

    after which ``set(attributes["r"], Reverse(name))`` works in every OTTL statement.
    """


@hookspec
def register_agent_dialects(dialects: DialectRegistry) -> None:
    """Teach the agent components (``workflow``, ``agentmetrics``, ``gen_ai_normalizer``) the
    span dialect of another agent library.

    Called once per process, the first time an agent component is created. Call
    ``dialects.add(table)`` for each dialect, with a ``dict`` shaped like the YAML tables of
    ``plugins/_agentdialects/builtin.yaml`` (or a ``plugins._agentdialects.DialectTable``):
    ``name`` (unique across plugins), ``detect`` (cheap tests that a span may be in this
    dialect), ``rules`` (the first rule whose ``match`` holds gives the span's role:
    ``workflow``, ``agent_run``, ``create_agent``, ``tool_call``, ``inference``,
    ``mcp_client``, ``mcp_server``, ``a2a_client``, ``a2a_server`` or ``none``), ``labels``
    (which attributes give ``agent_name``, ``tool_name``, ``tool_call_id``, ``error_type``,
    ``input_tokens``, ...), ``run_ids`` (attributes holding per-run ids, never used as
    labels). Plugin dialects are tried after those of a component's ``dialects:`` option and
    before the built-in ones. Example::

        @pipeline.hookimpl
        def register_agent_dialects(dialects):
            dialects.add({
                "name": "acme_agents",
                "detect": [{"present": ["acme.kind"]}],
                "rules": [
                    {"role": "agent_run", "match": [{"attributes": {"acme.kind": ["agent"]}}]},
                    {"role": "tool_call", "match": [{"attributes": {"acme.kind": ["tool"]}}],
                     "labels": {"tool_name": ["acme.tool"]}},
                ],
                "labels": {"agent_name": ["acme.agent"], "error_type": ["acme.error"]},
                "run_ids": ["acme.run_id"],
            })

    A table that does not validate raises ``pydantic.ValidationError`` (the component is
    refused with the message). See ``docs/agent-conventions.md``.
    """
