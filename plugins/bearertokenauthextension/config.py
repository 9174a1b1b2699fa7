"""Config of the ``bearertokenauth`` extension, with the Collector's option names."""

from __future__ import annotations

import re

from pydantic import SecretStr, field_validator, model_validator

from pipeline import ComponentConfig

# an HTTP header name (RFC 9110 token); gRPC metadata names are its lower-case subset
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
# a header value: visible ASCII and spaces (a token with a line break would split the header)
_HEADER_VALUE = re.compile(r"^[\x20-\x7e]*$")


def check_token(token: str, where: str) -> str:
    """A token must fit in a header value: printable ASCII, no line breaks."""
    if not _HEADER_VALUE.match(token):
        raise ValueError(f"{where}: a token may hold only printable ASCII characters")
    return token


class BearerTokenAuthConfig(ComponentConfig):
    """``extensions.bearertokenauth``.

    Exactly one source of tokens: ``token``, ``tokens`` or ``filename`` (when ``filename`` is
    given with one of the others, the file wins, as in the Collector). Receivers accept any of
    the tokens; exporters send the first.
    """

    header: str = "Authorization"
    """The header (gRPC metadata) that carries the token."""
    scheme: str = "Bearer"
    """Written before the token, with a space (``Bearer <token>``); empty: the token alone."""
    token: SecretStr = SecretStr("")
    tokens: list[SecretStr] = []
    filename: str = ""
    """A file of tokens, one a line (blank lines ignored), re-read when it changes."""

    @field_validator("header")
    @classmethod
    def _header(cls, value: str) -> str:
        if not _HEADER_NAME.match(value):
            raise ValueError(f"header {value!r} is not a valid header name")
        return value

    @field_validator("scheme")
    @classmethod
    def _scheme(cls, value: str) -> str:
        if value and not _HEADER_NAME.match(value):
            raise ValueError(f"scheme {value!r} must be one word such as 'Bearer'")
        return value

    @model_validator(mode="after")
    def _source(self) -> BearerTokenAuthConfig:
        token = self.token.get_secret_value()
        if not token and not self.tokens and not self.filename:
            raise ValueError("no bearer token provided: set token, tokens or filename")
        if token and self.tokens:
            raise ValueError("either tokens or token should be provided, not both")
        check_token(token, "token")
        for i, t in enumerate(self.tokens):
            if not t.get_secret_value():
                raise ValueError(f"tokens[{i}] is empty")
            check_token(t.get_secret_value(), f"tokens[{i}]")
        return self
