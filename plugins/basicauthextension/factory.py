"""Factory of the ``basicauth`` extension."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline import ComponentConfig, CreateSettings, ExtensionFactory, Stability
from plugins.basicauthextension.config import BasicAuthConfig

if TYPE_CHECKING:
    from pipeline import Component


class BasicAuthFactory(ExtensionFactory):
    type = "basicauth"
    config_class = BasicAuthConfig
    description = "HTTP Basic authentication: htpasswd users for receivers, a user for exporters."
    extension_stability = Stability.BETA

    def create_default_config(self) -> BasicAuthConfig:
        # the Collector's default is empty (invalid until a side is set); a client for tests
        return BasicAuthConfig.model_validate(
            {"client_auth": {"username": "user", "password": "password"}}
        )

    def create(  # type: ignore[override]
        self, settings: CreateSettings, config: BasicAuthConfig
    ) -> Component:
        from plugins.basicauthextension.extension import BasicAuthClient, BasicAuthServer

        if config.htpasswd is not None:
            return BasicAuthServer(settings, config.htpasswd)
        assert config.client_auth is not None
        return BasicAuthClient(settings, config.client_auth)

    def auth_sides(self, config: ComponentConfig) -> frozenset[str]:
        assert isinstance(config, BasicAuthConfig)
        return frozenset({"server"} if config.htpasswd is not None else {"client"})
