"""Test helpers for plugin authors: the lifecycle contract every component must meet.

Run it on your factory in your plugin's tests::

    import asyncio
    from pipeline.testing import check_factory

    def test_contract():
        asyncio.run(check_factory(MyExporterFactory()))

For every signal (or signal pair) the factory declares, :func:`check_factory` creates the
component from ``create_default_config()`` (endpoints moved to free local ports), checks that
``shutdown`` is safe on an instance never started, then on a fresh instance starts it, feeds an
empty payload to consumers and shuts it down twice; it also checks that the config class rejects
unknown options.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from pydantic import BaseModel, ValidationError

from pipeline.component import ComponentID, CreateSettings, Kind
from pipeline.configtypes import ComponentConfig
from pipeline.factory import (
    ConnectorFactory,
    ExporterFactory,
    ExtensionFactory,
    Factory,
    ProcessorFactory,
    ReceiverFactory,
)
from pipeline.pdata import PAYLOAD_TYPES, Payload, Signal
from pipeline.status import ProviderEntry, ServiceSnapshot
from pipeline.telemetry import SelfTelemetry, component_logger


class SinkConsumer:
    """A consumer that keeps everything it is given."""

    mutates_data = False

    def __init__(self) -> None:
        self.received: list[Payload] = []

    async def consume(self, data: Payload) -> None:
        self.received.append(data)

    def item_count(self) -> int:
        return sum(p.item_count() for p in self.received)


class StubHost:
    """A host with no extensions that records reported statuses and fatal errors."""

    def __init__(self) -> None:
        self.statuses: dict[str, tuple[str, BaseException | None]] = {}
        self.fatal: list[BaseException] = []

    def get_extension(self, component_id: ComponentID) -> Any | None:
        return None

    def report_status(
        self, component: str, status: str, error: BaseException | None = None
    ) -> None:
        self.statuses[component] = (status, error)

    def report_fatal_error(self, error: BaseException) -> None:
        self.fatal.append(error)

    def snapshot(self, counters: bool = True) -> ServiceSnapshot:
        return ServiceSnapshot(time.time(), time.time(), 1, (), ())

    def providers(self, interface: type) -> list[ProviderEntry]:
        return []

    def get_factory(self, kind: Kind, type_: str) -> Any | None:
        from pipeline.pluginmanager import default_registry

        return default_registry().get(kind, type_)


def create_settings(kind: Kind, type_: str, name: str = "") -> CreateSettings:
    """Settings for creating a component outside a running service."""
    cid = ComponentID(type_, name)
    return CreateSettings(
        id=cid,
        kind=kind,
        logger=component_logger(kind, cid),
        telemetry=SelfTelemetry().component(kind, cid),
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def with_free_endpoints(config: ComponentConfig) -> ComponentConfig:
    """A copy of ``config`` whose listen endpoints are free ports on 127.0.0.1."""
    copy = config.model_copy(deep=True)
    for ep in copy.listen_endpoints():
        node: Any = copy
        parts = ep.path.split(".")
        for part in parts[:-1]:
            node = node[int(part)] if isinstance(node, list) else getattr(node, part)
        setattr(node, parts[-1], f"127.0.0.1:{_free_port()}")
    return copy


def _check_rejects_unknown(config: ComponentConfig) -> None:
    data = config.model_dump(by_alias=True, exclude_unset=True)
    data["surely_not_an_option"] = 1
    try:
        type(config).model_validate(data)
    except ValidationError:
        return
    raise AssertionError(f"{type(config).__name__} accepts unknown options")


async def _exercise(create: Callable[[], Any], consumer_signal: Signal | None) -> None:
    """Shutdown before start on one instance; start, consume, shutdown twice on another."""
    await create().shutdown()  # safe before start
    component = create()
    await component.start(StubHost())
    if consumer_signal is not None:
        assert isinstance(component.mutates_data, bool), "consumers must declare mutates_data"
        await component.consume(PAYLOAD_TYPES[consumer_signal]())
    await component.shutdown()
    await component.shutdown()  # safe twice


async def check_factory(factory: Factory, config: ComponentConfig | None = None) -> None:
    """Run the lifecycle contract on every signal the factory declares."""
    assert factory.type, "a factory needs a type"
    config = config or factory.create_default_config()
    assert isinstance(config, BaseModel)
    _check_rejects_unknown(config)
    cfg = with_free_endpoints(config)
    assert factory.signal_stability(), f"{factory.type}: declares no signal"

    def settings() -> CreateSettings:
        return create_settings(factory.kind, factory.type)

    if isinstance(factory, ReceiverFactory):
        for signal in factory.stability:
            create = partial(factory.create, signal, settings(), cfg, SinkConsumer())
            await _exercise(create, None)
    elif isinstance(factory, ProcessorFactory):
        for signal in factory.stability:
            create = partial(factory.create, signal, settings(), cfg, SinkConsumer())
            await _exercise(create, signal)
    elif isinstance(factory, ExporterFactory):
        for signal in factory.stability:
            await _exercise(partial(factory.create, signal, settings(), cfg), signal)
    elif isinstance(factory, ConnectorFactory):
        for from_signal, to_signal in factory.stability:
            create = partial(
                factory.create, from_signal, to_signal, settings(), cfg, SinkConsumer()
            )
            await _exercise(create, from_signal)
    elif isinstance(factory, ExtensionFactory):
        await _exercise(partial(factory.create, settings(), cfg), None)
    else:  # pragma: no cover
        raise AssertionError(f"unknown factory kind {type(factory).__name__}")
