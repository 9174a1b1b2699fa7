"""Authentication: what authenticator extensions implement and how components use them.

As the Collector's ``extensionauth`` and ``configauth``: an extension (``bearertokenauth``,
``basicauth``, a plugin's ``oidc``...) authenticates, and a receiver or exporter names it in its
``auth`` section::

    extensions:
      bearertokenauth: {token: "${env:TOKEN}"}
    receivers:
      otlp:
        protocols:
          grpc: {auth: {authenticator: bearertokenauth}}
    exporters:
      otlp: {endpoint: "backend:4317", auth: {authenticator: bearertokenauth}}
    service:
      extensions: [bearertokenauth]

**Server side** (receivers): the extension subclasses :class:`ServerAuthenticator`. A receiver
calls :meth:`ServerAuthenticator.authenticate` with the request's headers (gRPC metadata) as
soon as they have arrived, before the body is read; it returns what it learnt about the caller
(recorded in :attr:`pipeline.ClientInfo.auth`) or raises :class:`AuthenticationError`, and the
receiver answers gRPC ``UNAUTHENTICATED`` (16) or HTTP ``401`` with ``WWW-Authenticate``.

**Client side** (exporters): the extension subclasses :class:`ClientAuthenticator`; an exporter
adds :meth:`ClientAuthenticator.request_headers` to every request (HTTP headers or gRPC
metadata).

The extension's factory says which sides a config of it can serve
(:meth:`pipeline.ExtensionFactory.auth_sides`), so that ``auth.authenticator`` naming an
extension that is not configured, not in ``service.extensions`` or not able to authenticate
on that side is a config error, with its path and line, before anything starts.
"""

from __future__ import annotations

import abc
import inspect
import logging
from collections.abc import Awaitable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, field_validator

from pipeline.component import ComponentID
from pipeline.configtypes import ConfigModel

if TYPE_CHECKING:
    from pipeline.component import CreateSettings, Host

AuthSide = Literal["server", "client"]
"""``server``: authenticates the requests a receiver takes; ``client``: gives an exporter
the credentials to send."""

AuthInfo = Mapping[str, Any]
"""What a server authenticator established about a caller (``{"username": "agent-7"}``):
recorded in :attr:`pipeline.ClientInfo.auth` with ``authenticator`` (the extension's ID)."""


class AuthenticationError(Exception):
    """A request whose credentials are missing or wrong. The message is sent to the client
    (gRPC ``grpc-message``, HTTP body) and logged: never put a credential in it."""


class ServerAuthenticator(abc.ABC):
    """An extension that authenticates the requests receivers take (see the module docstring).

    Subclass it together with :class:`pipeline.Component` and implement :meth:`authenticate`.
    """

    www_authenticate: str = 'Bearer realm="pipeline"'
    """The challenge HTTP receivers send with ``401`` (``WWW-Authenticate``); a class or an
    instance attribute."""

    @abc.abstractmethod
    def authenticate(self, headers: Mapping[str, str]) -> AuthInfo | Awaitable[AuthInfo]:
        """Check one request's credentials; return what was established about the caller, or
        raise :class:`AuthenticationError`.

        ``headers`` holds the request's headers (HTTP) or metadata (gRPC): look names up in
        lower case (``headers.get("authorization")``); a name sent more than once gives its
        first value. Called on the event loop for every request, before its body is read: keep
        it cheap and never block. Work that takes time (a password hash, a call to an identity
        service) belongs in a coroutine: return an awaitable instead of the result (run CPU
        work with ``asyncio.to_thread``), and the receiver waits for it before it takes the
        request. Any other exception refuses the request too (logged as an error).
        """


class ClientAuthenticator(abc.ABC):
    """An extension that gives exporters the credentials to send (see the module docstring).

    Subclass it together with :class:`pipeline.Component` and implement
    :meth:`request_headers`.
    """

    @abc.abstractmethod
    async def request_headers(self) -> Mapping[str, str]:
        """The headers (gRPC metadata) to add to the next request, such as
        ``{"authorization": "Bearer ..."}``; called for every request (and every retry), so
        rotated credentials are used as soon as the extension has them. Names in lower case."""


class AuthConfig(ConfigModel):
    """``auth`` of a receiver or exporter: ``{authenticator: <extension ID>}``."""

    side: ClassVar[AuthSide]
    authenticator: str
    """The ID of an extension (``basicauth/server``) listed in ``service.extensions``."""

    @field_validator("authenticator")
    @classmethod
    def _component_id(cls, value: str) -> str:
        ComponentID.parse(value)  # a readable ValueError for a malformed ID
        return value

    @property
    def component_id(self) -> ComponentID:
        return ComponentID.parse(self.authenticator)


class ServerAuthConfig(AuthConfig):
    """``auth`` of a server (a receiver's protocol, an HTTP endpoint): requests are refused
    unless the named extension authenticates them."""

    side: ClassVar[AuthSide] = "server"


class ClientAuthConfig(AuthConfig):
    """``auth`` of a client (an exporter): every request carries the credentials of the named
    extension."""

    side: ClassVar[AuthSide] = "client"


def auth_references(model: BaseModel) -> Iterator[tuple[tuple[str | int, ...], AuthConfig]]:
    """Every ``auth`` section in a component's config: ``(path below the component, section)``
    (for the config check; the path names the YAML keys)."""
    for name, field in type(model).model_fields.items():
        yield from _walk(getattr(model, name), (field.alias or name,))


def _walk(value: Any, path: tuple[str | int, ...]) -> Iterator[tuple[tuple[str | int, ...], Any]]:
    if isinstance(value, AuthConfig):
        yield path, value
    elif isinstance(value, BaseModel):
        for name, field in type(value).model_fields.items():
            yield from _walk(getattr(value, name), (*path, field.alias or name))
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _walk(item, (*path, str(key)))
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from _walk(item, (*path, i))


def _resolve(host: Host, config: AuthConfig, owner: str, expected: type) -> Any:
    extension = host.get_extension(config.component_id)
    if extension is None:
        raise RuntimeError(
            f"{owner}: authenticator {config.authenticator!r} is not a running extension "
            "(define it in 'extensions' and list it in service.extensions)"
        )
    if not isinstance(extension, expected):
        side = "server" if expected is ServerAuthenticator else "client"
        raise RuntimeError(
            f"{owner}: extension {config.authenticator!r} cannot authenticate on the {side} side"
        )
    return extension


def client_authenticator(
    host: Host, config: ClientAuthConfig | None, owner: str
) -> ClientAuthenticator | None:
    """The running client authenticator named by an exporter's ``auth`` (``None`` without
    one); raises ``RuntimeError`` when it is not running or not a client authenticator."""
    if config is None:
        return None
    found: ClientAuthenticator = _resolve(host, config, owner, ClientAuthenticator)
    return found


class ServerAuth:
    """A receiver's use of its ``auth.authenticator``: authenticates each request's headers,
    and counts (``otelcol_receiver_refused_requests{reason="unauthenticated"}``) and logs (at
    most once a second) the requests refused.

    Build it in ``start`` with :meth:`from_config` (``None`` when the server has no ``auth``).
    """

    def __init__(
        self, settings: CreateSettings, authenticator: ServerAuthenticator, name: str
    ) -> None:
        self.settings = settings
        self.authenticator = authenticator
        self.name = name
        self.www_authenticate = authenticator.www_authenticate

    @classmethod
    def from_config(
        cls, settings: CreateSettings, host: Host, config: ServerAuthConfig | None
    ) -> ServerAuth | None:
        """The running authenticator named by ``config``; raises ``RuntimeError`` when it is
        not running or cannot authenticate requests (the config check makes that rare)."""
        if config is None:
            return None
        found: ServerAuthenticator = _resolve(host, config, settings.name, ServerAuthenticator)
        return cls(settings, found, config.authenticator)

    def authenticate(
        self, headers: Mapping[str, str], transport: str, peer: str
    ) -> AuthInfo | Awaitable[AuthInfo]:
        """What :attr:`pipeline.ClientInfo.auth` is to hold for this request (an awaitable of
        it when the authenticator needs time); raises :class:`AuthenticationError` (counted and
        logged already) for a request to refuse."""
        try:
            result = self.authenticator.authenticate(headers)
        except Exception as exc:
            raise self._refused(exc, transport, peer) from None
        if inspect.isawaitable(result):
            return self._later(result, transport, peer)
        return {"authenticator": self.name, **result}

    async def check(self, headers: Mapping[str, str], transport: str, peer: str) -> AuthInfo:
        """:meth:`authenticate`, waited for when it needs time: for a server that handles each
        request in a coroutine of its own anyway (an HTTP handler)."""
        result = self.authenticate(headers, transport, peer)
        return await result if inspect.isawaitable(result) else result

    async def _later(self, result: Awaitable[AuthInfo], transport: str, peer: str) -> AuthInfo:
        try:
            info = await result
        except Exception as exc:
            raise self._refused(exc, transport, peer) from None
        return {"authenticator": self.name, **info}

    def _refused(self, exc: Exception, transport: str, peer: str) -> AuthenticationError:
        self.settings.telemetry.refused_request(transport, "unauthenticated")
        if isinstance(exc, AuthenticationError):
            self.settings.log_limited(
                logging.WARNING,
                "refused an unauthenticated request from %s: %s",
                peer or "unknown peer",
                exc,
                key="unauthenticated",
                extra={"transport": transport, "authenticator": self.name, "client": peer},
            )
            return exc
        self.settings.log_limited(
            logging.ERROR,
            "authenticator %s failed; refusing the request from %s",
            self.name,
            peer or "unknown peer",
            key="authenticator failed",
            exc_info=exc,
            extra={"transport": transport, "client": peer},
        )
        return AuthenticationError("authentication failed")
