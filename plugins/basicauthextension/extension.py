"""The running ``basicauth`` extension: :class:`BasicAuthServer` (``htpasswd``) checks the
``Authorization: Basic ...`` of what receivers take; :class:`BasicAuthClient` (``client_auth``)
gives exporters theirs.

Password hashes made to be slow (bcrypt, MD5-crypt, SHA-crypt: ~1-100 ms each) are checked in a
worker thread, at most two at a time, never on the event loop; the outcome is remembered for
that user, password and hash (the last 4096, as SHA-256 digests, both matches and mismatches),
so a sender pays for the hash once, not per request, and a misconfigured sender repeating a
wrong password costs one hash (requests arriving with the same credentials while it is computed
wait for that one). Plain, ``{SHA}`` and ``{SSHA}`` entries are checked at once.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
from collections import OrderedDict
from collections.abc import Awaitable, Mapping

from pipeline import (
    AuthenticationError,
    ClientAuthenticator,
    Component,
    CreateSettings,
    Host,
    ServerAuthenticator,
)
from plugins._credentials import WatchedFiles
from plugins.basicauthextension import htpasswd
from plugins.basicauthextension.config import ClientAuthSettings, HtpasswdSettings

CACHE_SIZE = 4096  # remembered outcomes of slow hash checks
SLOW_CHECKS = 2  # slow hash checks running at once (each takes a worker thread)


def _parse_basic(value: str) -> tuple[str, bytes]:
    """``(username, password)`` of an ``Authorization: Basic <base64(user:password)>``."""
    if len(value) < 6 or value[:6].lower() != "basic ":
        raise AuthenticationError("invalid authorization scheme prefix")
    try:
        decoded = base64.b64decode(value[6:].strip(), validate=True)
    except (binascii.Error, ValueError):
        raise AuthenticationError("invalid authorization format") from None
    user, sep, password = decoded.partition(b":")
    if not sep:
        raise AuthenticationError("invalid authorization format")
    return user.decode("utf-8", "surrogateescape"), password


class BasicAuthServer(Component, ServerAuthenticator):
    """Checks users and passwords against htpasswd entries (``htpasswd.file``, re-read when it
    changes, and ``htpasswd.inline``, whose entries win)."""

    www_authenticate = 'Basic realm="pipeline", charset="UTF-8"'

    def __init__(self, settings: CreateSettings, config: HtpasswdSettings) -> None:
        self.settings = settings
        self.config = config
        self._from_file: dict[str, htpasswd.Entry] = {}
        self._inline = htpasswd.parse(config.inline, "htpasswd.inline", self._warn)
        self._users: dict[str, htpasswd.Entry] = dict(self._inline)
        self._files = WatchedFiles(settings)
        self._file_read = False
        self._outcomes: OrderedDict[bytes, bool] = OrderedDict()
        self._pending: dict[bytes, asyncio.Future[bool]] = {}  # hashes being computed
        self._slow = asyncio.Semaphore(SLOW_CHECKS)

    def _warn(self, message: str) -> None:
        self.settings.logger.warning("htpasswd entry skipped: %s", message)

    def _load_file(self, text: str) -> None:
        self._from_file = htpasswd.parse(text, self.config.file, self._warn)
        self._users = {**self._from_file, **self._inline}
        if not self._users:
            self.settings.logger.warning("no htpasswd user: every request will be refused")

    async def start(self, host: Host) -> None:
        if self.config.file and not self._file_read:
            self._files.add(self.config.file, self._load_file)
            self._file_read = True
        elif not self._users:
            self.settings.logger.warning("no htpasswd user: every request will be refused")
        self._files.start(host)

    async def shutdown(self) -> None:
        await self._files.stop()

    def authenticate(
        self, headers: Mapping[str, str]
    ) -> Mapping[str, str] | Awaitable[Mapping[str, str]]:
        value = headers.get("authorization")
        if not value:
            raise AuthenticationError("no basic auth provided")
        user, password = _parse_basic(value)
        entry = self._users.get(user)
        if entry is None:
            raise AuthenticationError("invalid credentials")
        if not entry.slow:
            if not entry.verify(password):
                raise AuthenticationError("invalid credentials")
            return {"username": user}
        key = hashlib.sha256(
            b"\0".join((entry.encoded.encode(), user.encode("utf-8", "surrogateescape"), password))
        ).digest()
        known = self._outcomes.get(key)
        if known is None:
            return self._check_slow(key, entry, user, password)
        self._outcomes.move_to_end(key)
        if not known:
            raise AuthenticationError("invalid credentials")
        return {"username": user}

    async def _check_slow(
        self, key: bytes, entry: htpasswd.Entry, user: str, password: bytes
    ) -> Mapping[str, str]:
        pending = self._pending.get(key)
        if pending is None:  # the first request with these credentials computes the hash
            pending = asyncio.get_running_loop().create_future()
            self._pending[key] = pending
            try:
                async with self._slow:
                    known = await asyncio.to_thread(entry.verify, password)
                self._outcomes[key] = known
                if len(self._outcomes) > CACHE_SIZE:
                    self._outcomes.popitem(last=False)
                pending.set_result(known)
            except BaseException as exc:
                pending.set_exception(exc)
                pending.exception()  # retrieved: no "never retrieved" warning without waiters
                raise
            finally:
                del self._pending[key]
        else:  # the others with the same credentials wait for its outcome
            known = await asyncio.shield(pending)
        if not known:
            raise AuthenticationError("invalid credentials")
        return {"username": user}


class BasicAuthClient(Component, ClientAuthenticator):
    """Sends ``Authorization: Basic base64(username:password)``; ``username_file`` and
    ``password_file`` are re-read when they change."""

    def __init__(self, settings: CreateSettings, config: ClientAuthSettings) -> None:
        self.settings = settings
        self.config = config
        self._username = config.username
        self._password = config.password.get_secret_value()
        self._files = WatchedFiles(settings)
        self._files_read = False
        self._headers: dict[str, str] = {}
        self._update()

    def _update(self) -> None:
        raw = f"{self._username}:{self._password}".encode()
        self._headers = {"authorization": "Basic " + base64.b64encode(raw).decode("ascii")}

    def _set_username(self, text: str) -> None:
        username = text.strip()
        if ":" in username:
            raise ValueError("the username must not contain ':'")
        self._username = username
        self._update()

    def _set_password(self, text: str) -> None:
        self._password = text.strip()
        self._update()

    async def start(self, host: Host) -> None:
        if not self._files_read:
            if self.config.username_file:
                self._files.add(self.config.username_file, self._set_username)
            if self.config.password_file:
                self._files.add(self.config.password_file, self._set_password)
            self._files_read = True
        self._files.start(host)

    async def shutdown(self) -> None:
        await self._files.stop()

    async def request_headers(self) -> Mapping[str, str]:
        return self._headers
