"""The ``basicauth`` extension: every htpasswd format the Collector accepts, written by the
tools that make them (Apache's ``htpasswd``, ``openssl passwd``), the Collector's rules, slow
hashes checked in a worker thread and remembered, files re-read when they change, and the
client side."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import inspect
import logging
import subprocess
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from pipeline import AuthenticationError, ConfigErrors
from pipeline.component import ComponentID, CreateSettings, Kind
from pipeline.telemetry import SelfTelemetry, component_logger
from plugins import _credentials
from plugins.basicauthextension import BasicAuthConfig, BasicAuthFactory
from plugins.basicauthextension import htpasswd as htpasswd_module
from plugins.basicauthextension.extension import BasicAuthClient, BasicAuthServer
from tests.support import config_from_text, require_program

PASSWORD = "pä ss:w0rd"  # not ASCII, a space and a ':' (only the first ':' splits)


def settings() -> CreateSettings:
    cid = ComponentID.parse("basicauth")
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
async def components() -> AsyncIterator[list[Any]]:
    made: list[Any] = []
    yield made
    for c in made:
        await c.shutdown()


async def make(options: dict[str, Any], keep: list[Any]) -> Any:
    config = BasicAuthConfig.model_validate(options)
    ext = BasicAuthFactory().create(settings(), config)
    await ext.start(None)  # type: ignore[arg-type]
    keep.append(ext)
    return ext


def basic(user: str, password: str) -> dict[str, str]:
    raw = f"{user}:{password}".encode()
    return {"authorization": "Basic " + base64.b64encode(raw).decode()}


async def check(ext: BasicAuthServer, headers: dict[str, str]) -> Any:
    result = ext.authenticate(headers)
    return await result if inspect.isawaitable(result) else result


async def refused(ext: BasicAuthServer, headers: dict[str, str]) -> str:
    with pytest.raises(AuthenticationError) as err:
        await check(ext, headers)
    return str(err.value)


def htpasswd_lines() -> dict[str, str]:
    """``{user: line}``, one user per format, all with PASSWORD."""
    tool = require_program("htpasswd", "apt-get install -y apache2-utils")
    openssl = require_program("openssl", "apt-get install -y openssl")
    lines: dict[str, str] = {}
    for flag, user in (("-m", "apr1"), ("-2", "sha256"), ("-5", "sha512"), ("-s", "sha")):
        out = subprocess.run(
            [tool, "-nb" + flag[1:], user, PASSWORD], check=True, capture_output=True, text=True
        )
        lines[user] = out.stdout.strip()
    out = subprocess.run(
        [tool, "-nbB", "-C", "4", "bcrypt", PASSWORD], check=True, capture_output=True, text=True
    )
    lines["bcrypt"] = out.stdout.strip()
    out = subprocess.run(
        [openssl, "passwd", "-1", PASSWORD], check=True, capture_output=True, text=True
    )
    lines["md5crypt"] = "md5crypt:" + out.stdout.strip()
    salt = b"s4lt"
    ssha = base64.b64encode(hashlib.sha1(PASSWORD.encode() + salt).digest() + salt).decode()
    lines["ssha"] = "ssha:{SSHA}" + ssha
    lines["plain"] = f"plain:{PASSWORD}"
    lines["nginx"] = "nginx:{PLAIN}" + PASSWORD
    return lines


def test_config_rules() -> None:
    base = "extensions:\n  basicauth: {options}\nservice:\n  extensions: [basicauth]\n"
    for options, message in [
        ("{}", "no credential source provided"),
        ("{htpasswd: {inline: 'u:p'}, client_auth: {username: u}}", "only one of `htpasswd`"),
        ("{htpasswd: {}}", "htpasswd needs file or inline"),
        ("{client_auth: {username: 'a:b'}}", "username must not contain ':'"),
    ]:
        with pytest.raises(ConfigErrors) as err:
            config_from_text(base.format(options=options))
        assert message in str(err.value), str(err.value)
    factory = BasicAuthFactory()
    server = BasicAuthConfig.model_validate({"htpasswd": {"inline": "u:p"}})
    client = BasicAuthConfig.model_validate({"client_auth": {"username": "u", "password": "p"}})
    assert factory.auth_sides(server) == {"server"}
    assert factory.auth_sides(client) == {"client"}
    assert "'p'" not in repr(client)  # the password is never printed


async def test_every_htpasswd_format(components: list[Any]) -> None:
    lines = htpasswd_lines()
    ext = await make({"htpasswd": {"inline": "\n".join(lines.values())}}, components)
    for user in lines:
        assert await check(ext, basic(user, PASSWORD)) == {"username": user}, user
        assert await refused(ext, basic(user, PASSWORD + "x")) == "invalid credentials", user
        assert await refused(ext, basic(user, PASSWORD[:-1])) == "invalid credentials", user
    slow = {user for user, entry in ext._users.items() if entry.slow}
    assert slow == {"apr1", "sha256", "sha512", "bcrypt", "md5crypt"}


async def test_the_collectors_refusals(components: list[Any]) -> None:
    ext = await make({"htpasswd": {"inline": "u:p"}}, components)
    assert await check(ext, {"authorization": "basic " + base64.b64encode(b"u:p").decode()})
    cases = [
        ({}, "no basic auth provided"),
        ({"authorization": "Bearer x"}, "invalid authorization scheme prefix"),
        ({"authorization": "Basic !!!"}, "invalid authorization format"),
        ({"authorization": "Basic " + base64.b64encode(b"no-colon").decode()},
         "invalid authorization format"),
        (basic("nobody", "p"), "invalid credentials"),
    ]  # fmt: skip
    for headers, message in cases:
        assert await refused(ext, headers) == message
    assert ext.www_authenticate == 'Basic realm="pipeline", charset="UTF-8"'


async def test_slow_hashes_are_checked_in_a_thread_and_remembered(
    components: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = htpasswd_lines()
    ext = await make({"htpasswd": {"inline": lines["bcrypt"]}}, components)
    threads: list[str] = []
    original = htpasswd_module.Entry.verify

    def recording(self: Any, password: bytes) -> bool:
        threads.append(threading.current_thread().name)
        return original(self, password)

    monkeypatch.setattr(htpasswd_module.Entry, "verify", recording)
    first = ext.authenticate(basic("bcrypt", PASSWORD))
    assert inspect.isawaitable(first)  # the receiver waits; the loop goes on
    assert await first == {"username": "bcrypt"}
    assert threads and threading.main_thread().name not in threads
    # remembered: answered at once, no hash computed again
    assert ext.authenticate(basic("bcrypt", PASSWORD)) == {"username": "bcrypt"}
    await refused(ext, basic("bcrypt", "wrong"))
    n = len(threads)
    with pytest.raises(AuthenticationError):
        ext.authenticate(basic("bcrypt", "wrong"))  # a repeated wrong password: at once too
    assert len(threads) == n
    # many requests at once with one new password: one hash
    results = await asyncio.gather(
        *(check(ext, basic("bcrypt", PASSWORD + "?")) for _ in range(5)), return_exceptions=True
    )
    assert all(isinstance(r, AuthenticationError) for r in results)
    assert len(threads) == n + 1


async def test_htpasswd_file_reloaded_inline_wins(
    tmp_path: Path, components: list[Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    path = tmp_path / ".htpasswd"
    path.write_text("a:from-file\nb:from-file\nbroken-line\nc:{SHA}not-base64!\n")
    ext = await make({"htpasswd": {"file": str(path), "inline": "b:inline"}}, components)
    assert await check(ext, basic("a", "from-file"))
    assert await check(ext, basic("b", "inline"))
    assert await refused(ext, basic("b", "from-file")) == "invalid credentials"
    assert "line 3: malformed line, no ':' (skipped)" in caplog.text
    assert "(user 'c'): malformed {SHA} hash (not base64) (skipped)" in caplog.text
    assert "not-base64" not in caplog.text  # the hash is never logged
    path.write_text("d:new\n")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while "d" not in ext._users:
        assert loop.time() < deadline
        await asyncio.sleep(0.01)
    assert await refused(ext, basic("a", "from-file")) == "invalid credentials"
    assert await check(ext, basic("b", "inline"))  # inline entries stay


async def test_client_side_and_credential_files(tmp_path: Path, components: list[Any]) -> None:
    client: BasicAuthClient = await make(
        {"client_auth": {"username": "agent", "password": PASSWORD}}, components
    )
    assert await client.request_headers() == basic("agent", PASSWORD)
    user_file, password_file = tmp_path / "user", tmp_path / "password"
    user_file.write_text("from-file\n")
    password_file.write_text("secret-1\n")
    client = await make(
        {
            "client_auth": {
                "username": "ignored",
                "username_file": str(user_file),
                "password_file": str(password_file),
            }
        },
        components,
    )
    assert await client.request_headers() == basic("from-file", "secret-1")
    password_file.write_text("secret-2")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while await client.request_headers() != basic("from-file", "secret-2"):
        assert loop.time() < deadline
        await asyncio.sleep(0.01)
    user_file.write_text("has:colon")  # refused: the last username stays
    await asyncio.sleep(0.1)
    assert await client.request_headers() == basic("from-file", "secret-2")
