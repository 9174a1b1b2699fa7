"""Config of the ``console`` extension."""

from __future__ import annotations

from pydantic import Field

from pipeline import (
    ComponentConfig,
    Duration,
    Endpoint,
    ListenEndpoint,
    Seconds,
    ServerAuthConfig,
    ServerTLSConfig,
)
from pipeline.netedge import ControlHTTPServerLimits


class ConsoleConfig(ControlHTTPServerLimits, ComponentConfig):
    """``extensions.console`` (with the connection limits and timeouts of
    :class:`pipeline.netedge.ControlHTTPServerLimits`)."""

    endpoint: Endpoint = "localhost:55679"
    """The zpages port of the Collector; ``localhost`` only unless configured."""
    tls: ServerTLSConfig | None = None
    """HTTPS; with ``client_ca_file``, only clients with a certificate of that CA."""
    auth: ServerAuthConfig | None = None
    """``{authenticator: bearertokenauth}``: the API (``/api/...``) answers only requests the
    extension authenticates (the page asks for the token); the page's own files carry no
    data and are served to anyone who can connect."""
    refresh_interval: Duration = Field(Seconds(1), ge=0.1, le=60)
    """How often the view is computed and pushed to the browsers watching."""
    history: Duration = Field(Seconds(900), ge=60, le=86400)
    """How far back the agent metric charts go."""
    chart_interval: Duration = Field(Seconds(5), ge=1, le=300)
    """How often the agent gauges are sampled for the charts."""
    max_workflows: int = Field(200, ge=1, le=10000)
    """Recent workflows listed (and kept for new browsers)."""

    def listen_endpoints(self) -> list[ListenEndpoint]:
        return [ListenEndpoint("endpoint", self.endpoint)]
