"""The ``resourcedetection`` processor instance."""

from __future__ import annotations

import asyncio
from typing import Any

from pipeline import Component, Consumer, CreateSettings, Host, Payload, Signal
from pipeline.ottl.runner import rewrite_resources
from plugins.resourcedetectionprocessor import detectors
from plugins.resourcedetectionprocessor.factory import ResourceDetectionConfig


class ResourceDetectionProcessor(Component):
    """Detects at start (each detector off the event loop, within ``timeout``); a detector that
    fails is logged and skipped (the others still apply). Earlier detectors win a conflict;
    ``override: true`` replaces what the telemetry already has, ``false`` only adds."""

    mutates_data = False

    def __init__(self, settings: CreateSettings, config: ResourceDetectionConfig, signal: Signal,
                 nxt: Consumer) -> None:  # fmt: skip
        self.settings = settings
        self.config = config
        self.signal = signal
        self.next = nxt
        self.detected: dict[str, Any] = {}

    async def start(self, host: Host) -> None:
        self.detected = await asyncio.to_thread(self.detect)

    def detect(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        c = self.config
        for name in c.detectors:
            try:
                if name == "env":
                    found = detectors.env()
                elif name == "system":
                    found = detectors.system(c.system)
                else:
                    found = detectors.docker(c.docker, c.timeout or 5.0)
            except detectors.DetectionError as exc:
                self.settings.logger.warning(
                    "resource detector %s failed; its attributes are not added: %s", name, exc
                )
                continue
            for key, value in found.items():
                out.setdefault(key, value)
        if c.attributes is not None:
            out = {k: v for k, v in out.items() if k in c.attributes}
        self.settings.logger.info("detected resource attributes", extra={"attributes": out})
        return out

    def _apply(self, attrs: Any) -> None:
        for key, value in self.detected.items():
            if (self.config.override or key not in attrs) and attrs.get(key) != value:
                attrs.set(key, value)

    async def consume(self, data: Payload) -> None:
        if self.detected and data.item_count():
            data = rewrite_resources(data, self._apply)
        await self.next.consume(data)
