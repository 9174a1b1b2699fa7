"""Typed component configs: the base class and the value types the Collector's YAML uses.

A component's config is a :class:`ComponentConfig` (a pydantic model): every option has a
default, unknown options are rejected, and cross-field rules go in a ``model_validator``. The
engine turns validation failures into messages naming the config path and the file line.
"""

from __future__ import annotations

import re
import socket
import types
import typing
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, PlainSerializer, model_validator

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


class Seconds(float):
    """A duration already in seconds: how code writes a :data:`Duration` default
    (``timeout: Duration = Seconds(5)``). Plain numbers from YAML are refused (no unit)."""

    __slots__ = ()


def parse_duration(value: Any) -> float:
    """Parse a Go-style duration (``200ms``, ``1m30s``) into seconds."""
    if isinstance(value, Seconds):
        return float(value)
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as '200ms', got {value!r}")
    if isinstance(value, int | float):
        if value == 0:
            return 0.0
        raise ValueError(
            f"expected a duration such as '200ms', got {value!r} (a number has no unit; "
            f"write '{value}s' or '{value}ms')"
        )
    if not isinstance(value, str):
        raise ValueError(f"expected a duration such as '200ms', got {value!r}")
    text = value.strip()
    if text in ("0", ""):
        if text == "":
            raise ValueError("expected a duration such as '200ms', got an empty string")
        return 0.0
    sign = -1.0 if text.startswith("-") else 1.0
    body = text.lstrip("+-")
    pos = 0
    total = 0.0
    for match in _DURATION_PART.finditer(body):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(body) or pos == 0:
        raise ValueError(f"expected a duration such as '200ms', got {value!r}")
    return sign * total


def format_duration(seconds: float) -> str:
    """Seconds back into the Collector's notation (``1.5s``, ``200ms``)."""
    if seconds == 0:
        return "0s"
    if seconds < 1 and abs(seconds * 1000 - round(seconds * 1000)) < 1e-9:
        return f"{round(seconds * 1000)}ms"
    return f"{seconds:g}s"


def _non_negative(value: float) -> float:
    if value < 0:
        raise ValueError(f"expected a duration that is not negative, got {format_duration(value)}")
    return value


Duration = Annotated[
    float,
    BeforeValidator(lambda v: _non_negative(parse_duration(v))),
    PlainSerializer(format_duration, return_type=str),
]
"""A duration option; written ``200ms``, ``5s``, ``1m``; held as seconds (float)."""


def parse_endpoint(value: Any) -> str:
    """Check ``host:port`` (``[::1]:4317`` for IPv6); the port must be a number 0-65535."""
    if not isinstance(value, str):
        raise ValueError(f"expected an endpoint such as '0.0.0.0:4317', got {value!r}")
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected an endpoint 'host:port' such as '0.0.0.0:4317', got {value!r}")
    if host.startswith("[") != host.endswith("]"):
        raise ValueError(f"malformed IPv6 address in endpoint {value!r}")
    return value


Endpoint = Annotated[str, BeforeValidator(parse_endpoint)]
"""A ``host:port`` option."""


def split_endpoint(endpoint: str) -> tuple[str, int]:
    """``"0.0.0.0:4317"`` -> ``("0.0.0.0", 4317)``; brackets are removed from IPv6 hosts."""
    host, _, port = endpoint.rpartition(":")
    return host.strip("[]"), int(port)


def check_bindable(endpoint: str, kind: str = "tcp") -> str | None:
    """Try to bind ``endpoint``; ``None`` when it can be bound, else the reason it cannot."""
    host, port = split_endpoint(endpoint)
    try:
        infos = socket.getaddrinfo(
            host or None,
            port,
            type=socket.SOCK_STREAM if kind == "tcp" else socket.SOCK_DGRAM,
            flags=socket.AI_PASSIVE,
        )
    except socket.gaierror as exc:
        return f"cannot resolve host {host!r}: {exc.strerror}"
    family, stype, proto, _, addr = infos[0]
    sock = socket.socket(family, stype, proto)
    try:
        if kind == "tcp":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
    except OSError as exc:
        return exc.strerror or str(exc)
    finally:
        sock.close()
    return None


class ListenEndpoint(typing.NamedTuple):
    """A socket a component will listen on: checked before anything starts."""

    path: str  # the config path below the component, such as "protocols.grpc.endpoint"
    endpoint: str
    transport: str = "tcp"  # or "udp"


def _section_with_defaults(annotation: Any) -> bool:
    """Whether a field is an optional section that can be built from defaults alone."""
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        return any(
            _section_with_defaults(a) for a in typing.get_args(annotation) if a is not type(None)
        )
    return (
        isinstance(annotation, type)
        and issubclass(annotation, BaseModel)
        and all(not f.is_required() for f in annotation.model_fields.values())
    )


class ConfigModel(BaseModel):
    """Base of config sections: unknown keys rejected; a section written with no value
    (``grpc:``) means "present, with every default", as in the Collector (for sections whose
    options all have defaults)."""

    model_config = ConfigDict(extra="forbid", validate_default=True, populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _empty_sections_mean_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name, field in cls.model_fields.items():
                key = field.alias or name
                if key in data and data[key] is None and _section_with_defaults(field.annotation):
                    data = {**data, key: {}}
        return data


class ComponentConfig(ConfigModel):
    """Base of every component's config.

    Override :meth:`listen_endpoints` if the component listens on sockets, so that an endpoint
    that cannot be bound is reported before anything starts, and
    :meth:`extension_references` if options name extensions.
    """

    def listen_endpoints(self) -> list[ListenEndpoint]:
        """Sockets this component will listen on."""
        return []

    def extension_references(self) -> list[tuple[str, str, str]]:
        """Extensions this component's options name: ``(option path, extension ID, what it
        must provide)``, such as ``("sending_queue.storage", "file_storage", "storage")``;
        checked before anything starts."""
        return []


class ProtocolsReceiverConfig(ComponentConfig):
    """Base of a receiver config whose ``protocols`` sections each turn on one listener, as the
    Collector's ``otlp`` and ``jaeger`` receivers: a section is served when present (even
    empty), at least one must be present, and each one's ``endpoint`` is checked before start.

    Subclasses declare ``protocols`` and set ``receiver_title`` and ``protocol_example`` (for the
    error message) and ``udp_protocols`` (sections that listen on UDP).
    """

    receiver_title: ClassVar[str] = "this receiver"
    protocol_example: ClassVar[str] = "protocols: {...}"
    udp_protocols: ClassVar[frozenset[str]] = frozenset()

    def enabled_protocols(self) -> list[tuple[str, Any]]:
        """``(name, section)`` of every protocol present."""
        protocols = getattr(self, "protocols")  # noqa: B009 - declared by subclasses
        return [
            (name, section)
            for name in type(protocols).model_fields
            if (section := getattr(protocols, name)) is not None
        ]

    @model_validator(mode="after")
    def _at_least_one_protocol(self) -> ProtocolsReceiverConfig:
        if not self.enabled_protocols():
            raise ValueError(
                f"must specify at least one protocol when using {self.receiver_title}: add "
                f"'{self.protocol_example}'"
            )
        return self

    def listen_endpoints(self) -> list[ListenEndpoint]:
        return [
            ListenEndpoint(
                f"protocols.{name}.endpoint",
                section.endpoint,
                "udp" if name in self.udp_protocols else "tcp",
            )
            for name, section in self.enabled_protocols()
        ]


class EmptyConfig(ComponentConfig):
    """Config of a component with no options."""
