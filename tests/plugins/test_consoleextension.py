"""The ``console`` extension's server side: its API (state, stream, workflows), the page's
files, bearer-token auth through an authenticator extension, read-only, bounded streams.
The page itself is driven in Chromium by tests/configs/test_console_browser.py."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from pipeline.config import load_config
from pipeline.registry import Registry
from pipeline.service import Service
from pipeline.telemetry import SelfTelemetry
from plugins.consoleextension.config import ConsoleConfig
from plugins.consoleextension.extension import STREAM_BACKLOG, _Subscriber, totals_of
from tests.pipeline.test_service import Injector, make_service, registry, traces
from tests.plugins._agent_support import request as agent_request
from tests.plugins.test_workflowprocessor import workflow_spans
from tests.support import free_port, wait_until, write_config

__all__ = ["registry"]


def config_text(port: int, extra: str = "", console: str = "") -> str:
    return f"""\
receivers:
  inject:
processors:
  workflow: {{wait_duration: 50ms}}
  batch: {{timeout: 10ms}}
exporters:
  record:
extensions:
  console:
    endpoint: 127.0.0.1:{port}
    refresh_interval: 200ms
{console}
{extra}
service:
  extensions: [{"bearertokenauth, " if "bearertokenauth" in extra else ""}console]
  pipelines:
    traces:
      receivers: [inject]
      processors: [workflow, batch]
      exporters: [record]
"""


async def get(url: str, **kw: Any) -> tuple[int, Any, Any]:
    async with aiohttp.ClientSession() as s, s.get(url, **kw) as resp:
        body = await resp.read()
        try:
            data: Any = json.loads(body)
        except ValueError:
            data = body.decode(errors="replace")
        return resp.status, data, resp.headers


async def sse_events(url: str, n: int, **kw: Any) -> list[dict[str, Any]]:
    """The first ``n`` events of a stream."""
    events: list[dict[str, Any]] = []
    async with aiohttp.ClientSession() as s, s.get(url, **kw) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        buf = b""
        async for chunk in resp.content.iter_any():
            buf += chunk
            while b"\n\n" in buf:
                raw, buf = buf.split(b"\n\n", 1)
                data = [line[5:] for line in raw.split(b"\n") if line.startswith(b"data:")]
                if data:
                    events.append(json.loads(b"".join(data)))
                if len(events) >= n:
                    return events
    return events


@pytest.fixture
async def console(tmp_path: Path, registry: Registry) -> AsyncIterator[tuple[Service, str]]:
    port = free_port()
    service = make_service(tmp_path, registry, config_text(port))
    await service.start()
    try:
        yield service, f"http://127.0.0.1:{port}"
    finally:
        await service.shutdown()


def test_defaults() -> None:
    cfg = ConsoleConfig()
    assert cfg.endpoint == "localhost:55679"
    assert cfg.auth is None and cfg.tls is None
    assert cfg.refresh_interval == 1.0 and cfg.max_workflows == 200
    assert cfg.max_connections == 64  # a control endpoint's
    with pytest.raises(ValueError):
        ConsoleConfig.model_validate({"refresh": "1s"})
    with pytest.raises(ValueError):
        ConsoleConfig.model_validate({"refresh_interval": "0s"})


def test_auth_must_name_a_running_authenticator(tmp_path: Path, registry: Registry) -> None:
    text = config_text(free_port(), console="    auth: {authenticator: bearertokenauth}")
    with pytest.raises(Exception, match="authenticator 'bearertokenauth' is not defined"):
        load_config([str(write_config(tmp_path, text))], registry)


async def test_state_has_the_graph_and_counts_as_metrics(console: tuple[Service, str]) -> None:
    service, base = console
    await Injector.instances["inject"].push(traces("a", "b"))
    status, state, headers = await get(f"{base}/api/state")
    assert status == 200
    assert headers["Cache-Control"] == "no-store"
    assert state["type"] == "full" and state["generation"] == 1
    comps = {c["instance"]: c for c in state["components"]}
    assert set(comps) == {
        "receiver inject (traces)",
        "processor workflow (pipeline traces)",
        "processor batch (pipeline traces)",
        "exporter record (traces)",
        "extension console",
    }
    # flow order: receivers, processors in pipeline order, exporters, extensions
    assert [c["instance"] for c in state["components"]][:3] == [
        "receiver inject (traces)",
        "processor workflow (pipeline traces)",
        "processor batch (pipeline traces)",
    ]
    receiver = comps["receiver inject (traces)"]
    assert (
        receiver["totals"]["out"]
        == 2
        == service.telemetry.value("otelcol_receiver_accepted_spans_total", receiver="inject")
    )
    assert receiver["status"] == "ok" and receiver["health"] == "ok"
    assert receiver["downstream"] == ["processor workflow (pipeline traces)"]
    assert state["held"][0]["processor"] == "processor workflow (pipeline traces)"
    assert state["pipelines"][0]["id"] == "traces"
    # rates appear from the second view on
    await asyncio.sleep(0.5)
    await Injector.instances["inject"].push(traces("c"))
    await asyncio.sleep(0.5)
    _, state, _ = await get(f"{base}/api/state")
    receiver = next(c for c in state["components"] if c["kind"] == "receiver")
    assert receiver["rates"]["in"] is not None
    assert receiver["totals"]["in"] == 3


async def test_page_and_assets_are_local_and_read_only(console: tuple[Service, str]) -> None:
    _, base = console
    status, page, headers = await get(f"{base}/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    assets = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert set(assets) == {
        "/static/favicon.svg",
        "/static/console.css",
        "/static/console.js",
        "#graph",
        "#components",
        "#workflows",
        "#agents",
        "#reloads",
    }
    for path in assets:
        if path.startswith("/"):
            status, body, _ = await get(f"{base}{path}")
            assert status == 200
            # nothing loaded from elsewhere: no CDN, works offline
            assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", str(body)), path
    assert (await get(f"{base}/static/../extension.py"))[0] == 404
    assert (await get(f"{base}/static/nothing.js"))[0] == 404
    async with aiohttp.ClientSession() as s:
        for method in ("POST", "PUT", "DELETE"):
            async with s.request(method, f"{base}/api/state") as resp:
                assert resp.status == 405


async def test_stream_pushes_the_state_then_updates(console: tuple[Service, str]) -> None:
    _, base = console
    reader = asyncio.ensure_future(sse_events(f"{base}/api/stream", 10))
    await asyncio.sleep(0.3)
    await Injector.instances["inject"].push(traces("x", "y", "z"))
    events = await asyncio.wait_for(reader, 10)
    assert events[0]["type"] == "full"
    assert {e["type"] for e in events[1:]} == {"update"}
    last = events[-1]  # 10 views at 200 ms: the push is in the last one
    receiver = next(c for c in last["components"] if c["kind"] == "receiver")
    assert receiver["totals"]["out"] == 3


async def test_stream_outlives_the_write_timeout(tmp_path: Path, registry: Registry) -> None:
    """A stream is not a response that must end within write_timeout: it stays while the
    client reads."""
    port = free_port()
    service = make_service(tmp_path, registry, config_text(port, console="    write_timeout: 1s"))
    await service.start()
    try:
        events = await asyncio.wait_for(
            sse_events(f"http://127.0.0.1:{port}/api/stream", 12), 20
        )  # 12 views at 200 ms: longer than 1 s
        assert len(events) == 12
    finally:
        await service.shutdown()


def test_a_stream_that_falls_behind_gets_the_whole_state_again() -> None:
    sub = _Subscriber()
    for i in range(STREAM_BACKLOG):
        sub.push(f"{i}".encode())
    assert len(sub.queue) == STREAM_BACKLOG and not sub.resync
    sub.push(b"one too many")
    assert sub.resync and not sub.queue  # bounded: the backlog is dropped, a full state follows


async def test_workflows_and_their_spans(console: tuple[Service, str]) -> None:
    _, base = console
    await get(f"{base}/api/state")  # someone watches: the processor records workflows
    for t in (1, 2):
        root, agent, tools = workflow_spans(t, tool_error="connection refused" if t == 2 else None)
        await Injector.instances["inject"].push(agent_request([root, agent, *tools]))

    async def listed() -> list[dict[str, Any]]:
        return (await get(f"{base}/api/workflows"))[1]["workflows"]  # type: ignore[no-any-return]

    for _ in range(100):
        if len(await listed()) == 2:
            break
        await asyncio.sleep(0.1)
    first, second = await listed()
    assert first["workflow_id"] == "wf-1" and second["workflow_id"] == "wf-2"
    assert first["processor"] == "processor workflow (pipeline traces)"
    assert (await get(f"{base}/api/workflows?after={first['seq']}"))[1]["workflows"] == [second]
    status, detail, _ = await get(f"{base}/api/workflows/{second['trace_id']}")
    assert status == 200
    assert detail["workflow"]["workflow_id"] == "wf-2"
    names = {s["name"]: s for s in detail["spans"]}
    assert names["execute_tool t0"]["status"] == "error"
    assert (await get(f"{base}/api/workflows/{'0' * 32}"))[0] == 404
    assert (await get(f"{base}/api/workflows?after=x"))[0] == 400


async def test_bearer_token_through_the_authenticator(tmp_path: Path, registry: Registry) -> None:
    port = free_port()
    text = config_text(
        port,
        extra="  bearertokenauth:\n    token: s3cret",
        console="    auth: {authenticator: bearertokenauth}",
    )
    config = load_config([str(write_config(tmp_path, text))], registry)
    service = Service(config, SelfTelemetry())
    await service.start()
    base = f"http://127.0.0.1:{port}"
    try:
        status, body, headers = await get(f"{base}/api/state")
        assert status == 401
        assert headers["WWW-Authenticate"] == 'Bearer realm="pipeline"'
        assert "s3cret" not in json.dumps(body)
        assert (await get(f"{base}/api/state", headers={"Authorization": "Bearer nope"}))[0] == 401
        status, state, _ = await get(
            f"{base}/api/state", headers={"Authorization": "Bearer s3cret"}
        )
        assert status == 200 and state["type"] == "full"
        async with aiohttp.ClientSession() as s, s.get(f"{base}/api/stream") as resp:
            assert resp.status == 401
        # the page's files carry no data: served without the token (the page asks for it)
        assert (await get(f"{base}/"))[0] == 200
        assert (
            service.telemetry.value(
                "otelcol_extension_refused_requests_total",
                extension="console",
                transport="http",
                reason="unauthenticated",
            )
            == 3
        )
    finally:
        await service.shutdown()


def test_totals_per_kind() -> None:
    assert totals_of("receiver", {"accepted": 5, "refused": 2}) == {
        "in": 7,
        "out": 5,
        "refused": 2,
        "dropped": 0,
        "failed": 0,
    }
    assert totals_of("exporter", {"incoming": 9, "sent": 7, "send_failed": 2})["failed"] == 2
    assert totals_of("extension", {"refused_requests": 1}) == {"refused": 1}


async def test_not_watched_means_no_view_and_no_recording(console: tuple[Service, str]) -> None:
    service, base = console
    ext = service.get_extension(next(iter(service.graph.extensions)))
    assert ext is not None and not ext.watched()
    await asyncio.sleep(0.5)
    assert ext.state is None  # nobody asked: no snapshot taken
    await get(f"{base}/api/state")
    assert ext.watched()
    await wait_until(lambda: ext.state is not None)


async def test_pipeline_top_reads_the_console(console: tuple[Service, str]) -> None:
    import io

    from pipeline.top import run

    _, base = console
    await Injector.instances["inject"].push(traces("a", "b"))
    out = io.StringIO()
    code = await asyncio.to_thread(run, base, None, 0.3, True, None, out, 160)
    assert code == 0
    lines = out.getvalue().splitlines()
    assert lines[0].startswith(f"pipeline top - {base} - up ")
    assert lines[2].split()[:3] == ["COMPONENT", "STATUS", "IN/s"]
    rows = {
        line.split("  ")[0]: line
        for line in lines[3:]
        if line.startswith(("receiver", "processor", "exporter")) and ": " not in line
    }
    assert set(rows) == {
        "receiver inject (traces)",
        "processor workflow (pipeline traces)",
        "processor batch (pipeline traces)",
        "exporter record (traces)",
    }
    assert rows["receiver inject (traces)"].split()[3] == "ok"
    assert any(
        line.startswith("processor workflow (pipeline traces): 0 traces held") for line in lines
    )


async def test_pipeline_top_says_what_is_wrong(
    tmp_path: Path, registry: Registry, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipeline.cli import main

    code = await asyncio.to_thread(
        main, ["top", "--endpoint", f"127.0.0.1:{free_port()}", "--once"]
    )
    assert code == 1
    assert "cannot reach the console at http://127.0.0.1:" in capsys.readouterr().err
    port = free_port()
    text = config_text(
        port,
        extra="  bearertokenauth:\n    token: s3cret",
        console="    auth: {authenticator: bearertokenauth}",
    )
    service = Service(load_config([str(write_config(tmp_path, text))], registry), SelfTelemetry())
    await service.start()
    try:
        code = await asyncio.to_thread(main, ["top", "--endpoint", f"127.0.0.1:{port}", "--once"])
        assert code == 1
        assert "refused the request (401)" in capsys.readouterr().err
        token = tmp_path / "token"
        token.write_text("s3cret\n")
        args = ["top", "--endpoint", f"127.0.0.1:{port}", "--once", "--interval", "0.2"]
        code = await asyncio.to_thread(main, [*args, "--token-file", str(token)])
        assert code == 0
        assert "receiver inject (traces)" in capsys.readouterr().out
    finally:
        await service.shutdown()


async def test_served_over_tls_and_read_by_pipeline_top(tmp_path: Path, registry: Registry) -> None:
    """``tls``: HTTPS only; ``pipeline top --url https://... --cacert`` reads it."""
    import ssl

    from pipeline.cli import main
    from tests.tls_support import make_pki

    pki = make_pki(tmp_path / "pki")
    port = free_port()
    tls = f"    tls: {{cert_file: '{pki.server_cert}', key_file: '{pki.server_key}'}}"
    service = make_service(tmp_path, registry, config_text(port, console=tls))
    await service.start()
    try:
        ctx = ssl.create_default_context(cafile=str(pki.ca))
        status, state, _ = await get(f"https://localhost:{port}/api/state", ssl=ctx)
        assert status == 200 and state["type"] == "full"
        with pytest.raises(aiohttp.ClientError):
            await get(f"http://127.0.0.1:{port}/api/state")
        args = ["top", "--url", f"https://localhost:{port}", "--cacert", str(pki.ca), "--once"]
        assert await asyncio.to_thread(main, [*args, "--interval", "0.2"]) == 0
    finally:
        await service.shutdown()
