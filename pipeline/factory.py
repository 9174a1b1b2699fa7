"""Factories: how the engine creates components from their configs.

A plugin defines one factory class per component type and registers an instance in its
``register_components`` hook. A factory names its ``type``, its ``config_class`` (whose field
defaults are the default config), the signals it supports with their stability, and one creator
per supported signal: ``create_traces``, ``create_metrics``, ``create_logs`` (and, for
connectors, ``create_<from>_to_<to>``).
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from typing import Any, ClassVar

from pipeline.component import Component, CreateSettings, Kind, Stability
from pipeline.configtypes import ComponentConfig, EmptyConfig
from pipeline.consumer import Consumer
from pipeline.pdata import Signal


class Factory:
    """Common part of every factory."""

    type: ClassVar[str]
    kind: ClassVar[Kind]
    config_class: ClassVar[builtins.type[ComponentConfig]] = EmptyConfig
    description: ClassVar[str] = ""
    aliases: ClassVar[tuple[str, ...]] = ()
    """Other type names the component answers to in YAML (the Collector's newer snake_case
    names, such as ``otlp_grpc`` for ``otlp``)."""

    def create_default_config(self) -> ComponentConfig:
        """A complete, valid config for programmatic use and the contract tests.

        YAML is validated against ``config_class`` directly: its field defaults are the
        defaults users get (use pydantic's ``default_factory`` for computed ones)."""
        return self.config_class()

    def signal_stability(self) -> dict[str, Stability]:
        """Supported signals (``traces``, ``traces_to_metrics``...) and their stability."""
        raise NotImplementedError

    def _creator(self, name: str) -> Any:
        creator = getattr(self, f"create_{name}", None)
        if creator is None:
            raise NotImplementedError(
                f"{self.kind} {self.type!r} declares {name} but has no create_{name} method"
            )
        return creator


class _SignalFactory(Factory):
    stability: ClassVar[Mapping[Signal, Stability]] = {}

    def signal_stability(self) -> dict[str, Stability]:
        return {str(s): st for s, st in self.stability.items()}

    def supports(self, signal: Signal) -> bool:
        return signal in self.stability


class ReceiverFactory(_SignalFactory):
    """Creates receivers: ``create_<signal>(settings, config, next_consumer) -> Component``.

    A receiver that serves several signals from one listener (such as ``otlp``) should return
    the same instance from each creator: use :class:`pipeline.SharedComponents`.
    """

    kind = Kind.RECEIVER

    def create(
        self,
        signal: Signal,
        settings: CreateSettings,
        config: ComponentConfig,
        next_consumer: Consumer,
    ) -> Component:
        component: Component = self._creator(str(signal))(settings, config, next_consumer)
        return component


class ProcessorFactory(_SignalFactory):
    """Creates processors: ``create_<signal>(settings, config, next_consumer)`` returning a
    component that is also a :class:`~pipeline.Consumer`."""

    kind = Kind.PROCESSOR

    def create(
        self,
        signal: Signal,
        settings: CreateSettings,
        config: ComponentConfig,
        next_consumer: Consumer,
    ) -> Any:
        return self._creator(str(signal))(settings, config, next_consumer)


class ExporterFactory(_SignalFactory):
    """Creates exporters: ``create_<signal>(settings, config)`` returning a component that is
    also a :class:`~pipeline.Consumer`."""

    kind = Kind.EXPORTER

    def create(self, signal: Signal, settings: CreateSettings, config: ComponentConfig) -> Any:
        return self._creator(str(signal))(settings, config)


class ConnectorFactory(Factory):
    """Creates connectors, the exporter of one pipeline and the receiver of another:
    ``create_<from>_to_<to>(settings, config, next_consumer)`` returning a component that is
    also a :class:`~pipeline.Consumer` (it consumes ``<from>`` and sends ``<to>`` to
    ``next_consumer``)."""

    kind = Kind.CONNECTOR
    stability: ClassVar[Mapping[tuple[Signal, Signal], Stability]] = {}

    def signal_stability(self) -> dict[str, Stability]:
        return {f"{a}_to_{b}": st for (a, b), st in self.stability.items()}

    def supports(self, from_signal: Signal, to_signal: Signal) -> bool:
        return (from_signal, to_signal) in self.stability

    def create(
        self,
        from_signal: Signal,
        to_signal: Signal,
        settings: CreateSettings,
        config: ComponentConfig,
        next_consumer: Consumer,
    ) -> Any:
        return self._creator(f"{from_signal}_to_{to_signal}")(settings, config, next_consumer)


class ExtensionFactory(Factory):
    """Creates extensions: ``create(settings, config) -> Component``."""

    kind = Kind.EXTENSION
    extension_stability: ClassVar[Stability] = Stability.DEVELOPMENT

    def signal_stability(self) -> dict[str, Stability]:
        return {"extension": self.extension_stability}

    def create(self, settings: CreateSettings, config: ComponentConfig) -> Component:
        raise NotImplementedError

    def auth_sides(self, config: ComponentConfig) -> frozenset[str]:
        """The sides on which an extension made from ``config`` authenticates: ``"server"``
        (receivers' requests; the extension is a :class:`pipeline.ServerAuthenticator`) and/or
        ``"client"`` (exporters' credentials; a :class:`pipeline.ClientAuthenticator`). Read by
        the config check of every ``auth.authenticator``; none by default."""
        return frozenset()


class SharedComponents:
    """One component instance per config, shared by a factory's signal creators.

    ``get_or_create(config, create)`` returns the instance made for this config object, making
    it with ``create()`` the first time; ``release(config)`` forgets it (call it in shutdown).
    """

    def __init__(self) -> None:
        self._instances: dict[int, tuple[ComponentConfig, Any]] = {}

    def get_or_create(self, config: ComponentConfig, create: Any) -> Any:
        key = id(config)
        entry = self._instances.get(key)
        if entry is None or entry[0] is not config:
            entry = (config, create())
            self._instances[key] = entry
        return entry[1]

    def release(self, config: ComponentConfig) -> None:
        self._instances.pop(id(config), None)
