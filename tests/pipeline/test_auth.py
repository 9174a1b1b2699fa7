"""The engine's side of authentication (``pipeline/auth.py``): every ``auth.authenticator`` is
checked before anything starts (defined, running, able to authenticate on that side), with the
config path and line; :class:`pipeline.ServerAuth` counts and logs refusals, records what was
established, fails closed on an authenticator's bug, and waits for authenticators that need
time."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from pipeline import (
    AuthenticationError,
    ClientAuthConfig,
    Component,
    ServerAuth,
    ServerAuthConfig,
    ServerAuthenticator,
    client_authenticator,
)
from pipeline.auth import auth_references
from pipeline.cli import main
from pipeline.component import ComponentID, CreateSettings, Kind
from pipeline.telemetry import SelfTelemetry, component_logger
from plugins.otlpreceiver.config import OTLPReceiverConfig
from tests.support import free_port, write_config


def validate(tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    path = write_config(tmp_path, text, "gateway.yaml")
    code = main(["validate", "--config", str(path)])
    out = capsys.readouterr()
    return code, (out.out + out.err).replace(f"{tmp_path}/", "")


def config(receiver_auth: str, exporter_auth: str, extensions: str, enabled: str) -> str:
    port = free_port()
    return f"""\
extensions:
{extensions}
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{port}
        auth: {{authenticator: {receiver_auth}}}
exporters:
  otlp:
    endpoint: backend:4317
    auth: {{authenticator: {exporter_auth}}}
service:
  extensions: [{enabled}]
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces: {{receivers: [otlp], exporters: [otlp]}}
"""


EXTENSIONS = """\
  bearertokenauth: {token: abc}
  basicauth/server: {htpasswd: {inline: "u:p"}}
  basicauth/client: {client_auth: {username: u, password: p}}
  health_check: {endpoint: "127.0.0.1:0"}"""


def test_authenticators_on_the_right_sides_are_valid(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for server, client in [
        ("bearertokenauth", "bearertokenauth"),
        ("basicauth/server", "basicauth/client"),
    ]:
        text = config(
            server, client, EXTENSIONS, "bearertokenauth, basicauth/server, basicauth/client"
        )
        code, output = validate(tmp_path, text, capsys)
        assert code == 0, output


def test_an_authenticator_that_cannot_serve_is_an_error_with_path_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = config(
        "basicauth/client",  # a client authenticator on a receiver
        "basicauth/server",  # a server authenticator on an exporter
        EXTENSIONS,
        "bearertokenauth, basicauth/server, basicauth/client, health_check",
    )
    code, output = validate(tmp_path, text, capsys)
    assert code == 1
    assert (
        "receivers.otlp.protocols.grpc.auth.authenticator: extension 'basicauth/client' cannot "
        "authenticate requests a receiver takes: it authenticates only on the client side "
        "(gateway.yaml line 11)"
    ) in output
    assert (
        "exporters.otlp.auth.authenticator: extension 'basicauth/server' cannot authenticate "
        "exporters: it authenticates only on the server side (gateway.yaml line 15)"
    ) in output
    text = config("health_check", "bearertokenauth", EXTENSIONS, "bearertokenauth, health_check")
    code, output = validate(tmp_path, text, capsys)
    assert code == 1
    assert (
        "extension 'health_check' cannot authenticate requests a receiver takes: it is not an "
        "authenticator (gateway.yaml line 11)"
    ) in output


def test_an_authenticator_not_defined_or_not_running_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = config("bearertokenaut", "bearertokenauth", EXTENSIONS, "basicauth/server")
    code, output = validate(tmp_path, text, capsys)
    assert code == 1
    assert (
        "receivers.otlp.protocols.grpc.auth.authenticator: authenticator 'bearertokenaut' is not "
        "defined in 'extensions' (did you mean 'bearertokenauth'?) (gateway.yaml line 11)"
    ) in output
    assert (
        "exporters.otlp.auth.authenticator: authenticator 'bearertokenauth' is not listed in "
        "service.extensions, so it would not run (gateway.yaml line 15)"
    ) in output
    text = config("otlp//x", "bearertokenauth", EXTENSIONS, "bearertokenauth")
    code, output = validate(tmp_path, text, capsys)
    assert code == 1
    assert "receivers.otlp.protocols.grpc.auth.authenticator: " in output
    assert "invalid component name" in output


def test_auth_references_are_found_anywhere_in_a_config() -> None:
    cfg = OTLPReceiverConfig.model_validate(
        {
            "protocols": {
                "grpc": {"auth": {"authenticator": "a"}},
                "http": {"auth": {"authenticator": "b/x"}},
            }
        }
    )
    found = [(path, auth.component_id, auth.side) for path, auth in auth_references(cfg)]
    assert found == [
        (("protocols", "grpc", "auth"), ComponentID("a"), "server"),
        (("protocols", "http", "auth"), ComponentID("b", "x"), "server"),
    ]


# -- ServerAuth: what receivers do with their authenticator ------------------------------------
class Fixed(Component, ServerAuthenticator):
    www_authenticate = 'Custom realm="x"'

    def __init__(self, result: Any) -> None:
        self.result = result
        self.seen: list[Mapping[str, str]] = []

    def authenticate(self, headers: Mapping[str, str]) -> Any:
        self.seen.append(headers)
        if isinstance(self.result, Exception):
            raise self.result
        return self.result


class Host:
    def __init__(self, extensions: dict[ComponentID, Any]) -> None:
        self.extensions = extensions

    def get_extension(self, component_id: ComponentID) -> Any:
        return self.extensions.get(component_id)

    def report_status(self, *args: Any) -> None:
        pass

    def report_fatal_error(self, error: BaseException) -> None:
        pass


def settings() -> CreateSettings:
    telemetry = SelfTelemetry()
    cid = ComponentID("otlp")
    return CreateSettings(
        cid,
        Kind.RECEIVER,
        component_logger(Kind.RECEIVER, cid),
        telemetry.component(Kind.RECEIVER, cid),
    )


def server_auth(result: Any) -> tuple[ServerAuth, Fixed, CreateSettings]:
    ext = Fixed(result)
    s = settings()
    host = Host({ComponentID("myauth"): ext})
    auth = ServerAuth.from_config(s, host, ServerAuthConfig(authenticator="myauth"))
    assert auth is not None
    return auth, ext, s


def refused(s: CreateSettings) -> float:
    value = s.telemetry.service.value(
        "otelcol_receiver_refused_requests_total",
        receiver="otlp",
        transport="grpc",
        reason="unauthenticated",
    )
    return float(value or 0)


def test_what_was_established_is_returned_with_the_authenticator() -> None:
    auth, ext, _ = server_auth({"subject": "agent-7"})
    assert auth.www_authenticate == 'Custom realm="x"'
    info = auth.authenticate({"authorization": "x"}, "grpc", "1.2.3.4:5")
    assert info == {"authenticator": "myauth", "subject": "agent-7"}
    assert ext.seen == [{"authorization": "x"}]


def test_refusals_are_counted_and_logged_at_most_once_a_second(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    auth, _, s = server_auth(AuthenticationError("no token"))
    for _ in range(50):
        with pytest.raises(AuthenticationError, match="no token"):
            auth.authenticate({}, "grpc", "1.2.3.4:5")
    assert refused(s) == 50
    lines = [r for r in caplog.records if "unauthenticated" in r.getMessage()]
    assert len(lines) == 1
    assert lines[0].getMessage() == "refused an unauthenticated request from 1.2.3.4:5: no token"


def test_an_authenticator_bug_refuses_the_request(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    auth, _, s = server_auth(KeyError("bug"))
    with pytest.raises(AuthenticationError, match=r"^authentication failed$"):
        auth.authenticate({}, "grpc", "peer")
    assert refused(s) == 1
    (line,) = [r for r in caplog.records if "failed" in r.getMessage()]
    assert line.levelno == logging.ERROR and line.exc_info is not None


async def test_an_authenticator_that_needs_time_is_awaited() -> None:
    async def later(ok: bool) -> Mapping[str, str]:
        await asyncio.sleep(0.01)
        if not ok:
            raise AuthenticationError("checked: wrong")
        return {"username": "u"}

    class Slow(Fixed):
        def authenticate(self, headers: Mapping[str, str]) -> Any:
            return later(headers.get("ok") == "1")

    ext = Slow(None)
    s = settings()
    auth = ServerAuth.from_config(
        s, Host({ComponentID("slow"): ext}), ServerAuthConfig(authenticator="slow")
    )
    assert auth is not None
    pending = auth.authenticate({"ok": "1"}, "grpc", "peer")
    assert not isinstance(pending, Mapping)
    assert await pending == {"authenticator": "slow", "username": "u"}  # type: ignore[misc]
    with pytest.raises(AuthenticationError, match="checked: wrong"):
        await auth.authenticate({}, "grpc", "peer")  # type: ignore[misc]
    assert refused(s) == 1


def test_a_missing_or_unsuitable_extension_fails_the_start() -> None:
    s = settings()
    host = Host({ComponentID("other"): object()})
    assert ServerAuth.from_config(s, host, None) is None
    with pytest.raises(RuntimeError, match="'absent' is not a running extension"):
        ServerAuth.from_config(s, host, ServerAuthConfig(authenticator="absent"))
    with pytest.raises(RuntimeError, match="cannot authenticate on the server side"):
        ServerAuth.from_config(s, host, ServerAuthConfig(authenticator="other"))
    with pytest.raises(RuntimeError, match="cannot authenticate on the client side"):
        client_authenticator(host, ClientAuthConfig(authenticator="other"), "exporter otlp")
    assert client_authenticator(host, None, "exporter otlp") is None
