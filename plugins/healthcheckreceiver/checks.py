"""The checks: each probes one dependency and returns a :class:`CheckResult`.

A probe never decides its own deadline: :meth:`Check.run` bounds it with ``asyncio.timeout``
and turns an overrun into *unhealthy*. Connections a probe opens are registered with
:class:`Cleanup` and closed after the deadline too, so a hung peer costs neither the event loop
nor a leaked socket.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import enum
import functools
import json
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import psutil

from pipeline import __version__
from plugins.healthcheckreceiver.config import CheckConfig


class Status(enum.StrEnum):
    """A check's verdict, with the value ``health_check_status`` reports."""

    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNHEALTHY = "unhealthy"

    @property
    def value_number(self) -> float:
        return {"healthy": 1.0, "degraded": 0.5, "unhealthy": 0.0}[self.value]


@dataclass
class CheckResult:
    """The outcome of one run of one check."""

    name: str
    type: str
    critical: bool
    status: Status
    response_time: float
    """Seconds the whole check took."""
    message: str
    details: dict[str, Any] = field(default_factory=dict)
    timestamp: float = 0.0
    consecutive_failures: int = 0
    """Unhealthy runs in a row, this one included (0 when this run was not unhealthy)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "critical": self.critical,
            "status": str(self.status),
            "response_time_seconds": round(self.response_time, 6),
            "message": self.message,
            "details": self.details,
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.timestamp)),
            "consecutive_failures": self.consecutive_failures,
        }


class ProbeFailed(Exception):
    """The dependency answered, but wrongly: unhealthy, with this message."""

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.details = details or {}


class Cleanup:
    """Closers registered by a probe, run after it ends (even on timeout)."""

    def __init__(self) -> None:
        self._closers: list[tuple[Callable[[], Awaitable[Any]], Callable[[], Any] | None]] = []
        self.clean = False

    def add(
        self, close: Callable[[], Awaitable[Any]], abort: Callable[[], Any] | None = None
    ) -> None:
        """``close`` when the probe ended normally, ``abort`` (sync) when it did not."""
        self._closers.append((close, abort))

    async def run(self) -> None:
        for close, abort in reversed(self._closers):
            try:
                if self.clean:
                    # (asyncio.timeout: wait_for on Python 3.11 loses a cancellation that
                    # arrives as the close ends, and the next closers ran on)
                    async with asyncio.timeout(2.0):
                        await close()
                elif abort is not None:
                    abort()
            except Exception:  # closing is best effort
                pass
        self._closers.clear()


Probe = tuple[Status, str, dict[str, Any]]

_closing: set[asyncio.Task[Any]] = set()


def close_in_background(close: Callable[[], Awaitable[Any]]) -> Callable[[], None]:
    """An ``abort`` for clients with no synchronous close: close them in a task of their own
    (bounded to 2 s) so a check past its deadline does not wait for it."""

    def abort() -> None:
        async def run() -> None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2.0):
                    await close()

        task = asyncio.get_running_loop().create_task(run())
        _closing.add(task)
        task.add_done_callback(_closing.discard)

    return abort


class Check:
    """Base of every check type."""

    def __init__(self, config: CheckConfig) -> None:
        self.config = config

    async def open(self) -> None:
        """Create long-lived clients (called from the receiver's start)."""

    async def close(self) -> None:
        """Release them (called from the receiver's shutdown)."""

    async def probe(self, cleanup: Cleanup) -> Probe:
        """Talk to the dependency; return (status, message, details) or raise."""
        raise NotImplementedError

    def _slow(self, elapsed: float) -> str | None:
        limit = self.config.response_time_threshold()
        if elapsed > limit:
            return f"responding slowly ({elapsed * 1000:.0f} ms > {limit * 1000:.0f} ms)"
        return None

    async def run(self) -> CheckResult:
        """One bounded run: never longer than ``timeout`` (plus closing what it opened)."""
        cfg = self.config
        loop = asyncio.get_running_loop()
        started = loop.time()
        cleanup = Cleanup()
        details: dict[str, Any] = {}
        try:
            async with asyncio.timeout(cfg.timeout):
                status, message, details = await self.probe(cleanup)
            cleanup.clean = True
            slow = self._slow(loop.time() - started)
            if status == Status.HEALTHY and slow is not None:
                status, message = Status.DEGRADED, slow
        except TimeoutError:
            status = Status.UNHEALTHY
            message = f"no answer within the timeout of {cfg.timeout:g}s"
            details = {"error_type": "Timeout"}
        except ProbeFailed as exc:
            status, message, details = Status.UNHEALTHY, str(exc), exc.details
        except Exception as exc:
            status = Status.UNHEALTHY
            message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            details = {"error_type": type(exc).__name__}
        except asyncio.CancelledError:  # the receiver is shutting down
            await cleanup.run()
            raise
        # The response time is the probe's, not the time spent closing what it opened.
        elapsed = loop.time() - started
        await cleanup.run()
        return CheckResult(
            name=cfg.name,
            type=cfg.type,
            critical=cfg.critical,
            status=status,
            response_time=elapsed,
            message=message,
            details=details,
            timestamp=time.time(),
        )


# -- postgresql ------------------------------------------------------------------------------
class PostgreSQLCheck(Check):
    """Connect, ``SELECT 1``, active connections, database size; degraded above 1 s or above
    80 active connections."""

    async def probe(self, cleanup: Cleanup) -> Probe:
        import asyncpg

        assert self.config.endpoint is not None
        # statement_timeout: the server itself gives up on a statement still running when
        # the check does, so a timed-out check leaves no query behind.
        conn = await asyncpg.connect(
            self.config.endpoint,
            timeout=self.config.timeout,
            server_settings={
                "application_name": f"pipeline-healthcheck {self.config.name}",
                "statement_timeout": str(max(int(self.config.timeout * 1000), 1)),
            },
        )
        cleanup.add(lambda: conn.close(timeout=1.0), conn.terminate)
        one = await conn.fetchval("SELECT 1")
        if one != 1:
            raise ProbeFailed(
                f"SELECT 1 returned {one!r}", {"expected": 1, "actual": str(one)[:100]}
            )
        active = int(
            await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE state = 'active'")
        )
        size = int(await conn.fetchval("SELECT pg_database_size(current_database())"))
        if self.config.query:
            await conn.execute(self.config.query)
        details = {
            "active_connections": active,
            "database_size_bytes": size,
            "server_version": str(conn.get_settings().server_version).split()[0],
        }
        limit = self.config.thresholds.active_connections
        limit = 80 if limit is None else limit
        if active > limit:
            return Status.DEGRADED, f"high connection count ({active} > {limit} active)", details
        return Status.HEALTHY, "database operating normally", details


# -- redis -----------------------------------------------------------------------------------
def _count_failed_nodes(nodes: Any) -> int:
    """Failed nodes in a ``CLUSTER NODES`` answer (raw text or as redis-py parses it)."""
    if isinstance(nodes, bytes):
        nodes = nodes.decode()
    if isinstance(nodes, str):
        flags = [line.split()[2] for line in nodes.splitlines() if len(line.split()) > 2]
    elif isinstance(nodes, dict):
        flags = [str(v.get("flags", "")) for v in nodes.values()]
    else:
        return 0
    return sum(1 for f in flags if "fail" in f.split(",") or "fail?" in f.split(","))


def _count_nodes(nodes: Any) -> int:
    """Nodes in a ``CLUSTER NODES`` answer (raw text or as redis-py parses it)."""
    if isinstance(nodes, bytes):
        nodes = nodes.decode()
    if isinstance(nodes, str):
        return sum(1 for line in nodes.splitlines() if len(line.split()) > 2)
    if isinstance(nodes, dict):
        return len(nodes)
    return 0


class RedisCheck(Check):
    """PING, a set/get/delete round trip with expiry, failed cluster nodes; degraded above
    500 ms or with failed nodes."""

    async def probe(self, cleanup: Cleanup) -> Probe:
        import redis.asyncio as aioredis

        assert self.config.endpoint is not None
        client = aioredis.from_url(
            self.config.endpoint,
            socket_connect_timeout=self.config.timeout,
            socket_timeout=self.config.timeout,
            decode_responses=True,
        )
        cleanup.add(client.aclose, close_in_background(client.aclose))
        if not await client.ping():
            raise ProbeFailed("PING got no PONG")
        key = f"pipeline:health_check:{self.config.name}:{uuid.uuid4().hex}"
        value = uuid.uuid4().hex
        await client.set(key, value, ex=60)
        ttl = await client.ttl(key)
        got = await client.get(key)
        deleted = await client.delete(key)
        if got != value:
            raise ProbeFailed("data integrity round trip failed: GET returned another value")
        if not 0 < ttl <= 60:
            raise ProbeFailed(f"the expiry was not kept (TTL {ttl})")
        if deleted != 1:
            raise ProbeFailed("DEL did not remove the test key")
        info = await client.info("cluster")
        details: dict[str, Any] = {"cluster_enabled": int(info.get("cluster_enabled", 0))}
        if details["cluster_enabled"]:
            nodes = await client.execute_command("CLUSTER NODES")
            failed = _count_failed_nodes(nodes)
            details["cluster_failed_nodes"] = failed
            details["cluster_known_nodes"] = _count_nodes(nodes)
            limit = self.config.thresholds.failed_nodes or 0
            if failed > limit:
                return Status.DEGRADED, f"redis cluster has {failed} failed node(s)", details
        return Status.HEALTHY, "redis operating normally", details


# -- http ------------------------------------------------------------------------------------
class _HTTPCheck(Check):
    def __init__(self, config: CheckConfig) -> None:
        super().__init__(config)
        self.session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        if self.session is None:
            self.session = aiohttp.ClientSession(
                headers={"User-Agent": f"pipeline-gateway-healthcheck/{__version__}"}
            )

    async def close(self) -> None:
        session, self.session = self.session, None
        if session is not None:
            await session.close()

    async def _session(self) -> aiohttp.ClientSession:
        if self.session is None:
            await self.open()
        assert self.session is not None
        return self.session


class HTTPCheck(_HTTPCheck):
    """Status code, latency and an optional body match."""

    async def probe(self, cleanup: Cleanup) -> Probe:
        cfg = self.config
        assert cfg.endpoint is not None
        session = await self._session()
        async with session.request(
            cfg.method, cfg.endpoint, headers=cfg.headers, allow_redirects=True
        ) as resp:
            details: dict[str, Any] = {"http_status_code": resp.status}
            ok = (
                resp.status in cfg.expected_status
                if cfg.expected_status is not None
                else resp.status < 400
            )
            if not ok:
                raise ProbeFailed(f"unexpected HTTP status {resp.status}", details)
            if cfg.body_match:
                found = await body_matches(resp, _pattern(cfg.body_match))
                if found is None:
                    raise ProbeFailed(
                        f"the response body does not match {cfg.body_match!r} in its first "
                        f"{BODY_MATCH_MAX_BYTES} bytes",
                        details,
                    )
                if not found:
                    raise ProbeFailed(
                        f"the response body does not match {cfg.body_match!r}", details
                    )
        return Status.HEALTHY, f"HTTP {resp.status}", details


BODY_MATCH_WINDOW = 64 * 1024
"""Characters of the body kept from one chunk to the next for ``body_match``: a match up to
this long is found wherever it lies, across the chunks the body arrives in."""
BODY_MATCH_MAX_BYTES = 16 << 20
"""How much of a body ``body_match`` reads at most: a body without a match in its first 16 MiB
fails the check (a server sending a huge or endless body costs a window, not the body)."""
_BODY_CHUNK = 1 << 16


@functools.lru_cache(maxsize=64)
def _pattern(text: str) -> re.Pattern[str]:
    return re.compile(text)


async def body_matches(resp: aiohttp.ClientResponse, pattern: re.Pattern[str]) -> bool | None:
    """Whether ``pattern`` matches the body, read as it streams in (decoded with the
    response's charset, UTF-8 by default, invalid bytes replaced): each chunk is searched
    with the last :data:`BODY_MATCH_WINDOW` characters before it, and reading stops at the
    first match. ``None``: no match in the first :data:`BODY_MATCH_MAX_BYTES` bytes (the rest
    is not read). Memory stays at a window and a chunk whatever the body's size. (``^``,
    ``$`` and ``\\A`` apply to the window searched, not to the whole body.)"""
    try:
        decoder = codecs.getincrementaldecoder(resp.charset or "utf-8")(errors="replace")
    except LookupError:  # a charset Python does not know
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    tail = ""
    read = 0
    async for chunk in resp.content.iter_chunked(_BODY_CHUNK):
        read += len(chunk)
        text = tail + decoder.decode(chunk)
        if pattern.search(text):
            return True
        if read >= BODY_MATCH_MAX_BYTES:
            return None
        tail = text[-BODY_MATCH_WINDOW:]
    return pattern.search(tail + decoder.decode(b"", final=True)) is not None


# -- mcp -------------------------------------------------------------------------------------
MAX_ANSWER_BYTES = 1 << 20  # an MCP answer (initialize, tools/list) is a few KB


def _too_large(method: str) -> ProbeFailed:
    return ProbeFailed(
        f"{method}: the answer is larger than {MAX_ANSWER_BYTES} bytes",
        {"error_type": "ProtocolError"},
    )


async def _read_capped(resp: aiohttp.ClientResponse, method: str) -> bytes:
    """The body, refused past :data:`MAX_ANSWER_BYTES` (a server answering with a huge or
    endless body costs no more memory than that)."""
    parts: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(1 << 16):
        size += len(chunk)
        if size > MAX_ANSWER_BYTES:
            raise _too_large(method)
        parts.append(chunk)
    return b"".join(parts)


MCP_PROTOCOL_VERSION = "2025-06-18"


class MCPCheck(_HTTPCheck):
    """An MCP server over streamable HTTP: ``initialize``, ``notifications/initialized``,
    ``tools/list`` (with the ``mcp-session-id`` the server gave); answers may come as JSON or
    as an event stream. Any protocol error is unhealthy."""

    async def _rpc(
        self,
        session: aiohttp.ClientSession,
        message: dict[str, Any],
        headers: dict[str, str],
    ) -> tuple[dict[str, Any] | None, aiohttp.ClientResponse]:
        assert self.config.endpoint is not None
        async with session.post(
            self.config.endpoint,
            data=json.dumps(message),
            headers={
                "Content-Type": "application/json",
                "Accept": "application/json, text/event-stream",
                **self.config.headers,
                **headers,
            },
        ) as resp:
            method = message["method"]
            if "id" not in message:  # a notification: 202 Accepted, no body
                if resp.status not in (200, 202, 204):
                    raise ProbeFailed(
                        f"{method}: HTTP {resp.status}", {"http_status_code": resp.status}
                    )
                return None, resp
            if resp.status != 200:
                raise ProbeFailed(
                    f"{method}: HTTP {resp.status}", {"http_status_code": resp.status}
                )
            ctype = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
            if ctype == "text/event-stream":
                answer = await self._from_event_stream(resp, message["id"], method)
            elif ctype == "application/json":
                answer = self._parse(await _read_capped(resp, method), method)
            else:
                raise ProbeFailed(
                    f"{method}: unexpected content type {ctype or 'none'!r}",
                    {"error_type": "ProtocolError"},
                )
            return self._check_response(answer, message["id"], method), resp

    def _parse(self, raw: bytes | str, method: str) -> Any:
        try:
            return json.loads(raw)
        except (ValueError, RecursionError) as exc:  # (RecursionError: nested too deeply)
            raise ProbeFailed(
                f"{method}: the answer is not JSON ({exc})", {"error_type": "ProtocolError"}
            ) from None

    async def _from_event_stream(
        self, resp: aiohttp.ClientResponse, request_id: int, method: str
    ) -> Any:
        """Read SSE events until the response to ``request_id`` arrives."""
        data: list[str] = []
        size = 0
        async for raw_line in resp.content:
            line = raw_line.decode("utf-8", errors="replace").rstrip("\r\n")
            if line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))
                size += len(raw_line)
                if size > MAX_ANSWER_BYTES:
                    raise _too_large(method)
                continue
            if line or not data:
                continue  # event:, id:, retry:, comments; or a blank line with no data
            message = self._parse("\n".join(data), method)
            data = []
            size = 0
            if isinstance(message, dict) and message.get("id") == request_id:
                return message
        if data:
            message = self._parse("\n".join(data), method)
            if isinstance(message, dict) and message.get("id") == request_id:
                return message
        raise ProbeFailed(
            f"{method}: the event stream ended without a response",
            {"error_type": "ProtocolError"},
        )

    def _check_response(self, answer: Any, request_id: int, method: str) -> dict[str, Any]:
        if isinstance(answer, list):  # a batch: take ours
            answer = next(
                (a for a in answer if isinstance(a, dict) and a.get("id") == request_id), None
            )
        if not isinstance(answer, dict) or answer.get("jsonrpc") != "2.0":
            raise ProbeFailed(
                f"{method}: not a JSON-RPC 2.0 response", {"error_type": "ProtocolError"}
            )
        if answer.get("id") != request_id:
            raise ProbeFailed(
                f"{method}: response id {answer.get('id')!r} does not match {request_id}",
                {"error_type": "ProtocolError"},
            )
        if "error" in answer:
            err = answer["error"] if isinstance(answer["error"], dict) else {}
            raise ProbeFailed(
                f"{method}: JSON-RPC error {err.get('code')}: {err.get('message')}",
                {"error_type": "JSONRPCError", "jsonrpc_error_code": err.get("code")},
            )
        result = answer.get("result")
        if not isinstance(result, dict):
            raise ProbeFailed(
                f"{method}: the response has no result object", {"error_type": "ProtocolError"}
            )
        return result

    async def probe(self, cleanup: Cleanup) -> Probe:
        session = await self._session()
        init, resp = await self._rpc(
            session,
            {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "initialize",
                "params": {
                    "protocolVersion": MCP_PROTOCOL_VERSION,
                    "capabilities": {},
                    "clientInfo": {"name": "pipeline-gateway-healthcheck", "version": __version__},
                },
            },
            {},
        )
        assert init is not None
        version = init.get("protocolVersion")
        server = init.get("serverInfo")
        if not isinstance(version, str) or not isinstance(server, dict):
            raise ProbeFailed(
                "initialize: the result lacks protocolVersion or serverInfo",
                {"error_type": "ProtocolError"},
            )
        headers = {"MCP-Protocol-Version": version}
        session_id = resp.headers.get("mcp-session-id")
        if session_id:
            headers["mcp-session-id"] = session_id
            cleanup.add(lambda: self._end_session(session, headers))
        await self._rpc(session, {"jsonrpc": "2.0", "method": "notifications/initialized"}, headers)
        listed, _ = await self._rpc(
            session, {"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}}, headers
        )
        assert listed is not None
        tools = listed.get("tools")
        if not isinstance(tools, list):
            raise ProbeFailed(
                "tools/list: the result has no tools list", {"error_type": "ProtocolError"}
            )
        details = {
            "tools_count": len(tools),
            "protocol_version": version,
            "server_name": str(server.get("name", "")),
        }
        return (
            Status.HEALTHY,
            f"MCP server {details['server_name']} lists {len(tools)} tools",
            details,
        )

    async def _end_session(self, session: aiohttp.ClientSession, headers: dict[str, str]) -> None:
        assert self.config.endpoint is not None
        with contextlib.suppress(aiohttp.ClientError):
            async with session.delete(self.config.endpoint, headers=headers):
                pass


# -- system ----------------------------------------------------------------------------------
class SystemCheck(Check):
    """CPU, memory and disk pressure against thresholds (psutil, in a worker thread)."""

    def __init__(self, config: CheckConfig) -> None:
        super().__init__(config)
        self._primed = False

    def _measure(self) -> dict[str, float]:
        # The first call of cpu_percent(None) has no reference point: measure over 200 ms.
        cpu = psutil.cpu_percent(interval=None if self._primed else 0.2)
        self._primed = True
        return {
            "cpu_percent": float(cpu),
            "memory_percent": float(psutil.virtual_memory().percent),
            "disk_percent": float(psutil.disk_usage(self.config.path).percent),
        }

    async def probe(self, cleanup: Cleanup) -> Probe:
        details: dict[str, Any] = await asyncio.to_thread(self._measure)
        t = self.config.thresholds
        limits = {
            "cpu_percent": t.cpu_percent if t.cpu_percent is not None else 90.0,
            "memory_percent": t.memory_percent if t.memory_percent is not None else 90.0,
            "disk_percent": t.disk_percent if t.disk_percent is not None else 90.0,
        }
        over = [f"{k} {details[k]:.1f} > {v:g}" for k, v in limits.items() if details[k] > v]
        if over:
            return Status.DEGRADED, "resource pressure: " + ", ".join(over), details
        return Status.HEALTHY, "resources within thresholds", details


CHECKS: dict[str, type[Check]] = {
    "postgresql": PostgreSQLCheck,
    "redis": RedisCheck,
    "http": HTTPCheck,
    "mcp": MCPCheck,
    "system": SystemCheck,
}


def make_check(config: CheckConfig) -> Check:
    return CHECKS[config.type](config)
