"""An in-test exporter that keeps what reaches it, for the Jaeger tests: registered in the
default registry as ``jaeger_test_capture`` (``key`` names the list the payloads go to;
``refuse: retryable`` makes it push back)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Literal

from pipeline import (
    Component,
    ComponentConfig,
    CreateSettings,
    ExporterFactory,
    Kind,
    Payload,
    RetryableError,
    Signal,
    Stability,
    current_client,
)
from pipeline.pluginmanager import default_registry

CAPTURED: dict[str, list[Payload]] = defaultdict(list)
CLIENTS: dict[str, list[Any]] = defaultdict(list)  # current_client() of each payload


class CaptureConfig(ComponentConfig):
    key: str
    refuse: Literal["", "retryable"] = ""


class CaptureExporter(Component):
    mutates_data = False

    def __init__(self, config: CaptureConfig) -> None:
        self.config = config

    async def consume(self, data: Payload) -> None:
        if self.config.refuse == "retryable":
            raise RetryableError("the test exporter pushes back", retry_after=7.0)
        CAPTURED[self.config.key].append(data)
        CLIENTS[self.config.key].append(current_client())


class CaptureFactory(ExporterFactory):
    type = "jaeger_test_capture"
    config_class = CaptureConfig
    stability = {Signal.TRACES: Stability.DEVELOPMENT}

    def create_default_config(self) -> CaptureConfig:
        return CaptureConfig(key="default")

    def create_traces(self, settings: CreateSettings, config: CaptureConfig) -> Any:
        return CaptureExporter(config)


def install() -> None:
    registry = default_registry()
    if registry.get(Kind.EXPORTER, CaptureFactory.type) is None:
        registry.register(CaptureFactory())


def spans(key: str) -> list[tuple[Any, Any, Any]]:
    """``(resource_spans, scope_spans, span)`` of every captured span, in order."""
    out = []
    for payload in CAPTURED[key]:
        for rs in payload.message().resource_spans:
            for ss in rs.scope_spans:
                for span in ss.spans:
                    out.append((rs, ss, span))
    return out
