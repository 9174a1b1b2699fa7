"""The ``httpcheck`` receiver against real HTTP servers: status classes, duration, errors."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp import web

from pipeline import ConfigErrors
from tests.otlp_support import any_value, recording_backend
from tests.support import config_from_text, free_port, running_service, wait_until


def _points(requests: list[Any], name: str) -> list[tuple[dict[str, Any], Any]]:
    out = []
    for req in requests:
        for rm in req.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    if m.name == name:
                        data = getattr(m, m.WhichOneof("data"))
                        for p in data.data_points:
                            attrs = {kv.key: any_value(kv.value) for kv in p.attributes}
                            value = p.as_int if p.WhichOneof("value") == "as_int" else p.as_double
                            out.append((attrs, value))
    return out


async def test_checks_status_duration_and_errors() -> None:
    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def missing(request: web.Request) -> web.Response:
        return web.Response(status=404)

    app = web.Application()
    app.router.add_get("/ok", ok)
    app.router.add_get("/missing", missing)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    closed = free_port()
    try:
        async with recording_backend() as backend:
            config = {
                "receivers": {
                    "http_check/frontend": {
                        "collection_interval": "200ms",
                        "initial_delay": "0s",
                        "targets": [
                            {"endpoint": f"http://127.0.0.1:{port}/ok"},
                            {"endpoints": [f"http://127.0.0.1:{port}/missing",
                                           f"http://127.0.0.1:{closed}/"]},
                        ],
                    }
                },
                "exporters": {"otlp": {"endpoint": f"127.0.0.1:{backend.grpc_port}",
                                       "tls": {"insecure": True}}},
                "service": {"telemetry": {"metrics": {"level": "none"}},
                            "pipelines": {"metrics": {"receivers": ["http_check/frontend"],
                                                      "exporters": ["otlp"]}}},
            }  # fmt: skip
            async with running_service(json.dumps(config)):
                await wait_until(lambda: bool(_points(backend.metrics, "httpcheck.error")))
        status = {
            (a["http.url"].rsplit("/", 1)[1], a["http.status_class"]): v
            for a, v in _points(backend.metrics, "httpcheck.status")
        }
        assert status[("ok", "2xx")] == 1 and status[("ok", "4xx")] == 0
        assert status[("missing", "4xx")] == 1 and status[("missing", "2xx")] == 0
        codes = {a["http.status_code"] for a, _ in _points(backend.metrics, "httpcheck.status")}
        assert codes == {200, 404}
        errors = _points(backend.metrics, "httpcheck.error")
        assert errors[0][0]["http.url"] == f"http://127.0.0.1:{closed}/" and errors[0][1] == 1
        assert errors[0][0]["error.message"]
        durations = _points(backend.metrics, "httpcheck.duration")
        assert len({a["http.url"] for a, _ in durations}) == 3
        assert all(v >= 0 for _, v in durations)
    finally:
        await runner.cleanup()


def test_a_target_needs_an_http_endpoint() -> None:
    with pytest.raises(ConfigErrors, match="must be an http:// or https:// URL"):
        config_from_text(
            "receivers: {httpcheck: {targets: [{endpoint: 'localhost:80'}]}}\n"
            "exporters: {debug: }\n"
            "service: {pipelines: {metrics: {receivers: [httpcheck], exporters: [debug]}}}\n"
        )


async def test_a_huge_response_body_is_read_without_being_kept() -> None:
    """A target answering with 48 MiB: the check reads it to the end (status 200) and the
    receiver's Python memory stays far below the body's size (the body used to be read
    whole into memory, an endless one until the timeout)."""
    import tracemalloc

    chunk = b"x" * (1 << 20)

    async def huge(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        for _ in range(48):
            await resp.write(chunk)
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_get("/huge", huge)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with recording_backend() as backend:
            config = {
                "receivers": {"http_check": {
                    "collection_interval": "1h", "initial_delay": "1h",
                    "targets": [{"endpoint": f"http://127.0.0.1:{port}/huge"}]}},
                "exporters": {"otlp": {"endpoint": f"127.0.0.1:{backend.grpc_port}",
                                       "tls": {"insecure": True}}},
                "service": {"telemetry": {"metrics": {"level": "none"}},
                            "pipelines": {"metrics": {"receivers": ["http_check"],
                                                      "exporters": ["otlp"]}}},
            }  # fmt: skip
            async with running_service(json.dumps(config)) as service:
                receiver = next(
                    n.component
                    for n in service.graph.nodes
                    if type(n.component).__name__ == "HTTPCheckReceiver"
                )
                tracemalloc.start()
                try:
                    await receiver.check_once()
                    peak = tracemalloc.get_traced_memory()[1]
                finally:
                    tracemalloc.stop()
                await wait_until(lambda: bool(_points(backend.metrics, "httpcheck.status")))
        codes = {a["http.status_code"] for a, _ in _points(backend.metrics, "httpcheck.status")}
        assert codes == {200}
        assert peak < 8 << 20, peak
    finally:
        await runner.cleanup()
