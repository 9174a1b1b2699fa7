"""Factory of the ``bearertokenauth`` extension."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline import ComponentConfig, CreateSettings, ExtensionFactory, Stability
from plugins.bearertokenauthextension.config import BearerTokenAuthConfig

if TYPE_CHECKING:
    from plugins.bearertokenauthextension.extension import BearerTokenAuth


class BearerTokenAuthFactory(ExtensionFactory):
    type = "bearertokenauth"
    config_class = BearerTokenAuthConfig
    description = "Bearer token authentication: required by receivers, sent by exporters."
    extension_stability = Stability.BETA

    def create_default_config(self) -> BearerTokenAuthConfig:
        # the Collector's default has no token (invalid until one is set); one for tests
        return BearerTokenAuthConfig.model_validate({"token": "default-token"})

    def create(  # type: ignore[override]
        self, settings: CreateSettings, config: BearerTokenAuthConfig
    ) -> BearerTokenAuth:
        from plugins.bearertokenauthextension.extension import BearerTokenAuth

        return BearerTokenAuth(settings, config)

    def auth_sides(self, config: ComponentConfig) -> frozenset[str]:
        return frozenset({"server", "client"})
