"""Who sent the data being handled: set by a receiver for the duration of each request.

As the Collector's ``client.Info``: components read :func:`current_client` to name the sender
in what they log (and authenticators record what they learnt about the caller). It is a
context variable, so it follows a request through every ``await`` of the components it passes
on the receiver's own call path; a component that works from a background task (a batch, a
held trace) no longer knows the sender.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ClientInfo:
    """The sender of a request: its address (``ip:port``), the receiver and transport that
    took it, and what an authenticator established (``auth``: for example the subject)."""

    addr: str = ""
    receiver: str = ""
    transport: str = ""
    auth: Mapping[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        """``'127.0.0.1:5000 via otlp (grpc)'``."""
        out = self.addr or "unknown peer"
        if self.receiver:
            out += f" via {self.receiver}"
            if self.transport:
                out += f" ({self.transport})"
        return out


_current: ContextVar[ClientInfo | None] = ContextVar("pipeline_client", default=None)


def current_client() -> ClientInfo | None:
    """The sender of the data being handled, when known."""
    return _current.get()


@contextlib.contextmanager
def client_context(info: ClientInfo) -> Iterator[ClientInfo]:
    """Set the sender for the block (a receiver wraps its hand-off to the pipeline)."""
    token = _current.set(info)
    try:
        yield info
    finally:
        _current.reset(token)


def set_client(info: ClientInfo) -> None:
    """Set the sender for the rest of the current task (for a request handler that runs in a
    task of its own, as aiohttp's do: the task's context ends with it)."""
    _current.set(info)


def peer_address(peer: Any) -> str:
    """``ip:port`` from a socket's peer name (IPv4 or IPv6 tuple), else its text."""
    if isinstance(peer, tuple) and len(peer) >= 2:
        host = str(peer[0])
        return f"[{host}]:{peer[1]}" if ":" in host else f"{host}:{peer[1]}"
    return str(peer) if peer is not None else ""
