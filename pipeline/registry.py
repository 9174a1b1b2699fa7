"""The registry of component factories, filled by the plugins' ``register_components`` hooks."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.component import Kind
from pipeline.factory import Factory


@dataclass(frozen=True)
class RegisteredFactory:
    """A factory and who provided it."""

    factory: Factory
    plugin: str
    distribution: str


class RegistrationError(Exception):
    """A plugin registered something invalid or a type already taken."""


class Registry:
    """Factories by kind and type name."""

    def __init__(self) -> None:
        self._factories: dict[tuple[Kind, str], RegisteredFactory] = {}
        self._aliases: dict[tuple[Kind, str], str] = {}
        self._plugin = "unknown"
        self._distribution = "unknown"

    def register(self, factory: Factory) -> None:
        """Register a factory instance. Its ``kind`` and ``type`` must be unique."""
        if not isinstance(factory, Factory):
            raise RegistrationError(
                f"plugin {self._plugin!r} registered {factory!r}, which is not a factory instance"
            )
        key = (factory.kind, factory.type)
        existing = self._factories.get(key)
        if existing is not None:
            raise RegistrationError(
                f"{factory.kind} type {factory.type!r} is registered twice: by plugin "
                f"{existing.plugin!r} ({existing.distribution}) and by {self._plugin!r} "
                f"({self._distribution})"
            )
        if key in self._aliases:
            raise RegistrationError(
                f"{factory.kind} type {factory.type!r} is already an alias of "
                f"{self._aliases[key]!r}"
            )
        for alias in factory.aliases:
            akey = (factory.kind, alias)
            if akey in self._factories or akey in self._aliases:
                raise RegistrationError(
                    f"{factory.kind} alias {alias!r} of {factory.type!r} is already registered"
                )
        self._factories[key] = RegisteredFactory(factory, self._plugin, self._distribution)
        for alias in factory.aliases:
            self._aliases[(factory.kind, alias)] = factory.type

    def _set_source(self, plugin: str, distribution: str) -> None:
        self._plugin = plugin
        self._distribution = distribution

    def get(self, kind: Kind, type_: str) -> Factory | None:
        """The factory of a type (or of an alias), or ``None``."""
        entry = self._factories.get((kind, self._aliases.get((kind, type_), type_)))
        return entry.factory if entry else None

    def types(self, kind: Kind) -> list[str]:
        """Every registered type name of a kind, sorted (aliases not included)."""
        return sorted(t for k, t in self._factories if k == kind)

    def aliases(self, kind: Kind) -> dict[str, str]:
        """``{alias: type}`` of a kind."""
        return {a: t for (k, a), t in self._aliases.items() if k == kind}

    def entries(self) -> list[RegisteredFactory]:
        """Every registration, sorted by kind then type."""
        order = list(Kind)
        return sorted(
            self._factories.values(), key=lambda e: (order.index(e.factory.kind), e.factory.type)
        )
