"""The ``bearertokenauth`` extension: the Collector's options and rules, both sides, and the
token file re-read when it changes (edited in place, or a Kubernetes secret's symlink swap)."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from pipeline import AuthenticationError, ConfigErrors
from pipeline.component import ComponentID, CreateSettings, Kind
from pipeline.telemetry import SelfTelemetry, component_logger
from plugins import _credentials
from plugins.bearertokenauthextension import BearerTokenAuth, BearerTokenAuthConfig
from tests.support import config_from_text


def settings(name: str = "bearertokenauth") -> CreateSettings:
    cid = ComponentID.parse(name)
    return CreateSettings(
        cid,
        Kind.EXTENSION,
        component_logger(Kind.EXTENSION, cid),
        SelfTelemetry().component(Kind.EXTENSION, cid),
    )


@pytest.fixture(autouse=True)
def fast_watch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_credentials, "CHECK_INTERVAL", 0.02)


@pytest.fixture
async def started() -> AsyncIterator[list[BearerTokenAuth]]:
    extensions: list[BearerTokenAuth] = []
    yield extensions
    for ext in extensions:
        await ext.shutdown()


async def make(options: dict[str, Any], keep: list[BearerTokenAuth]) -> BearerTokenAuth:
    ext = BearerTokenAuth(settings(), BearerTokenAuthConfig.model_validate(options))
    await ext.start(None)  # type: ignore[arg-type]
    keep.append(ext)
    return ext


def refused(ext: BearerTokenAuth, headers: dict[str, str]) -> str:
    with pytest.raises(AuthenticationError) as err:
        ext.authenticate(headers)
    return str(err.value)


def test_config_rules() -> None:
    base = "extensions:\n  bearertokenauth: {options}\nservice:\n  extensions: [bearertokenauth]\n"
    for options, message in [
        ("{}", "no bearer token provided"),
        ("{token: a, tokens: [b]}", "either tokens or token should be provided, not both"),
        ('{token: "a\\nb"}', "token: a token may hold only printable ASCII characters"),
        ("{tokens: [a, '']}", "tokens[1] is empty"),
        ("{token: a, header: 'X Bad'}", "header 'X Bad' is not a valid header name"),
        ("{token: a, scheme: 'Two words'}", "scheme 'Two words' must be one word"),
    ]:
        with pytest.raises(ConfigErrors) as err:
            config_from_text(base.format(options=options))
        assert message in str(err.value), str(err.value)
    cfg = BearerTokenAuthConfig.model_validate({"token": "secret"})
    assert (cfg.header, cfg.scheme) == ("Authorization", "Bearer")  # the Collector's defaults
    assert "secret" not in repr(cfg)  # never printed


async def test_server_side(started: list[BearerTokenAuth]) -> None:
    ext = await make({"tokens": ["t1", "t2"]}, started)
    assert ext.authenticate({"authorization": "Bearer t1"}) == {}
    assert ext.authenticate({"authorization": "Bearer t2"}) == {}
    assert refused(ext, {}) == "missing or empty authorization header: Authorization"
    assert refused(ext, {"authorization": ""}) == (
        "missing or empty authorization header: Authorization"
    )
    for wrong in ("Bearer t3", "Bearer t1 ", "bearer t1", "t1", "Bearer t", "Bearer t1t2", "Ωx"):
        assert refused(ext, {"authorization": wrong}) == "scheme or token does not match"
    assert ext.www_authenticate == 'Bearer realm="pipeline"'


async def test_own_header_and_no_scheme(started: list[BearerTokenAuth]) -> None:
    ext = await make({"token": "k-1", "header": "X-Api-Key", "scheme": ""}, started)
    assert ext.authenticate({"x-api-key": "k-1"}) == {}  # names are looked up in lower case
    assert refused(ext, {"authorization": "k-1"}) == (
        "missing or empty authorization header: X-Api-Key"
    )
    assert await ext.request_headers() == {"x-api-key": "k-1"}


async def test_client_side_sends_the_first_token(started: list[BearerTokenAuth]) -> None:
    ext = await make({"tokens": ["first", "second"], "scheme": "Token"}, started)
    assert await ext.request_headers() == {"authorization": "Token first"}
    assert ext.www_authenticate == 'Token realm="pipeline"'


async def wait(predicate: Any, within: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not predicate():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def accepts(ext: BearerTokenAuth, token: str) -> bool:
    try:
        ext.authenticate({"authorization": f"Bearer {token}"})
    except AuthenticationError:
        return False
    return True


async def test_token_file_is_reloaded_when_it_changes(
    tmp_path: Path, started: list[BearerTokenAuth], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    path = tmp_path / "tokens"
    path.write_text("old-1\n\n  old-2  \n")
    ext = await make({"filename": str(path), "token": "ignored"}, started)
    assert "the configured token(s) are ignored" in caplog.text
    assert accepts(ext, "old-1") and accepts(ext, "old-2") and not accepts(ext, "ignored")
    assert not accepts(ext, "")  # blank lines are not tokens
    assert await ext.request_headers() == {"authorization": "Bearer old-1"}
    path.write_text("new-1\n")
    await wait(lambda: accepts(ext, "new-1"))
    assert not accepts(ext, "old-1")
    assert await ext.request_headers() == {"authorization": "Bearer new-1"}
    # gone or unreadable: the last tokens stay, the problem is logged
    path.unlink()
    await asyncio.sleep(0.1)
    assert accepts(ext, "new-1")
    assert "cannot reload credentials" in caplog.text


async def test_kubernetes_secret_symlink_swap(
    tmp_path: Path, started: list[BearerTokenAuth]
) -> None:
    """A mounted secret: ``token -> ..data/token``, ``..data -> ..2024_1``; an update writes a
    new directory and swaps ``..data`` atomically."""
    first = tmp_path / "..2024_1"
    first.mkdir()
    (first / "token").write_text("v1")
    (tmp_path / "..data").symlink_to(first.name)
    (tmp_path / "token").symlink_to("..data/token")
    ext = await make({"filename": str(tmp_path / "token")}, started)
    assert accepts(ext, "v1")
    second = tmp_path / "..2024_2"
    second.mkdir()
    (second / "token").write_text("v2")
    (tmp_path / "..data_tmp").symlink_to(second.name)
    os.replace(tmp_path / "..data_tmp", tmp_path / "..data")
    await wait(lambda: accepts(ext, "v2"))
    assert not accepts(ext, "v1")


async def test_a_token_file_that_cannot_be_read_fails_the_start(tmp_path: Path) -> None:
    ext = BearerTokenAuth(
        settings(), BearerTokenAuthConfig.model_validate({"filename": str(tmp_path / "none")})
    )
    with pytest.raises(OSError, match=r"cannot read .*none"):
        await ext.start(None)  # type: ignore[arg-type]
    await ext.shutdown()
