"""The running ``bearertokenauth`` extension: a server and a client authenticator.

Server side: a request is let in when its ``header`` (``Authorization``) is exactly
``<scheme> <token>`` for one of the tokens, compared in constant time against every token
(``hmac.compare_digest``: how long the check takes says nothing about how much of a token was
right). Client side: the first token, as ``<scheme> <token>``, on every request. With
``filename``, the tokens are the file's lines, re-read when the file changes.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping

from pipeline import (
    AuthenticationError,
    ClientAuthenticator,
    Component,
    CreateSettings,
    Host,
    ServerAuthenticator,
)
from plugins._credentials import WatchedFiles
from plugins.bearertokenauthextension.config import BearerTokenAuthConfig, check_token


class BearerTokenAuth(Component, ServerAuthenticator, ClientAuthenticator):
    """Checks (receivers) and sends (exporters) ``<scheme> <token>``."""

    def __init__(self, settings: CreateSettings, config: BearerTokenAuthConfig) -> None:
        self.settings = settings
        self.config = config
        self.header = config.header.lower()
        self.www_authenticate = f'{config.scheme or "Bearer"} realm="pipeline"'
        self._expected: list[bytes] = []
        self._outgoing: dict[str, str] = {}
        self._files = WatchedFiles(settings)
        self._file_read = False
        if config.filename:
            if config.token.get_secret_value() or config.tokens:
                settings.logger.warning("filename is set: the configured token(s) are ignored")
        elif config.tokens:
            self._set_tokens([t.get_secret_value() for t in config.tokens])
        else:
            self._set_tokens([config.token.get_secret_value()])

    def _set_tokens(self, tokens: list[str]) -> None:
        scheme = self.config.scheme
        values = [f"{scheme} {t}" if scheme else t for t in tokens]
        self._expected = [v.encode() for v in values]
        self._outgoing = {self.header: values[0]} if values else {}

    def _load_file(self, text: str) -> None:
        tokens = [line.strip() for line in text.splitlines() if line.strip()]
        for i, token in enumerate(tokens):
            check_token(token, f"{self.config.filename} line {i + 1}")
        if not tokens:
            self.settings.logger.warning(
                "the token file holds no token: every request will be refused and exporters "
                "send none",
                extra={"file": self.config.filename},
            )
        self._set_tokens(tokens)

    async def start(self, host: Host) -> None:
        if self.config.filename and not self._file_read:
            self._files.add(self.config.filename, self._load_file)
            self._file_read = True
        self._files.start(host)

    async def shutdown(self) -> None:
        await self._files.stop()

    # -- server side -------------------------------------------------------------------------
    def authenticate(self, headers: Mapping[str, str]) -> Mapping[str, str]:
        value = headers.get(self.header)
        if not value:
            raise AuthenticationError(
                f"missing or empty authorization header: {self.config.header}"
            )
        got = value.encode("utf-8", "surrogateescape")
        match = False
        for expected in self._expected:  # every token compared: no early exit
            match |= hmac.compare_digest(expected, got)
        if not match:
            raise AuthenticationError("scheme or token does not match")
        return {}

    # -- client side -------------------------------------------------------------------------
    async def request_headers(self) -> Mapping[str, str]:
        return self._outgoing
