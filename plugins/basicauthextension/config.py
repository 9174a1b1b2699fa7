"""Config of the ``basicauth`` extension, with the Collector's option names."""

from __future__ import annotations

from pydantic import SecretStr, model_validator

from pipeline import ComponentConfig, ConfigModel


class HtpasswdSettings(ConfigModel):
    """``htpasswd``: the users receivers accept, from a file and/or inline (inline entries
    win over the file's for the same user)."""

    file: str = ""
    """An htpasswd file (``user:hash`` lines), re-read when it changes."""
    inline: str = ""
    """htpasswd lines written in the config (``${env:...}`` works here)."""


class ClientAuthSettings(ConfigModel):
    """``client_auth``: the user and password exporters send."""

    username: str = ""
    username_file: str = ""
    """A file holding the username (wins over ``username``), re-read when it changes."""
    password: SecretStr = SecretStr("")
    password_file: str = ""
    """A file holding the password (wins over ``password``), re-read when it changes."""

    @model_validator(mode="after")
    def _username(self) -> ClientAuthSettings:
        if ":" in self.username:
            raise ValueError("username must not contain ':' (Basic authentication's separator)")
        return self


class BasicAuthConfig(ComponentConfig):
    """``extensions.basicauth``: ``htpasswd`` (a server authenticator, for receivers) or
    ``client_auth`` (a client authenticator, for exporters), not both."""

    htpasswd: HtpasswdSettings | None = None
    client_auth: ClientAuthSettings | None = None

    @model_validator(mode="after")
    def _one_side(self) -> BasicAuthConfig:
        if self.htpasswd is not None and self.client_auth is not None:
            raise ValueError("only one of `htpasswd` or `client_auth` can be specified")
        if self.htpasswd is None and self.client_auth is None:
            raise ValueError(
                "no credential source provided: set htpasswd (to authenticate what receivers "
                "take) or client_auth (for exporters)"
            )
        if self.htpasswd is not None and not (self.htpasswd.file or self.htpasswd.inline):
            raise ValueError("htpasswd needs file or inline")
        return self
