"""Factory of the ``console`` extension."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline import CreateSettings, ExtensionFactory, Stability
from plugins.consoleextension.config import ConsoleConfig

if TYPE_CHECKING:
    from plugins.consoleextension.extension import ConsoleExtension


class ConsoleExtensionFactory(ExtensionFactory):
    type = "console"
    config_class = ConsoleConfig
    description = (
        "A live console in the browser: the pipeline graph, throughput, queues, errors, "
        "workflows and agent metrics (and the API `pipeline top` reads)."
    )
    extension_stability = Stability.ALPHA

    def create(  # type: ignore[override]
        self, settings: CreateSettings, config: ConsoleConfig
    ) -> ConsoleExtension:
        from plugins.consoleextension.extension import ConsoleExtension

        return ConsoleExtension(settings, config)
