"""Bounded network edges: how every server of the gateway accepts and keeps connections.

An audit found that nothing bounded the listening side: 10,500 idle HTTP/2 connections and
300 slowloris connections were all kept, unfinished request data was bounded per connection
only (20 connections holding unfinished streams took 1.5 GB), and at the file-descriptor limit
every endpoint became unreachable while asyncio's accept loop logged thousands of lines a
second. This module gives every server the same edge:

* :class:`Listener` accepts connections itself (``loop.add_reader`` on the listening sockets,
  then ``loop.connect_accepted_socket``): at most ``max_connections`` per endpoint (at the cap
  the connection idle the longest is closed to make room; with none idle, the new one is
  refused), the TLS handshake within ``handshake_timeout``, and data endpoints never keep a
  descriptor from the top :data:`FDS` reserve, so the health check and the metrics endpoints
  (``reserved=True``) stay reachable when the data endpoints are flooded. Accept errors
  (``EMFILE``, ``ENFILE``, ...) pause accepting on that socket for :data:`ACCEPT_PAUSE` seconds
  (asyncio's own loop logged one traceback per attempt and re-armed itself per attempt), are
  counted and logged at most once a second.
* Connections implement :class:`EdgeConnection`: the listener's sweeper calls
  ``edge_check(now)`` every ``tick`` seconds while it has connections (timeouts; it sleeps
  without a timer while it has none), ``edge_evict()`` to make room.
  :class:`HTTPEdge` is that for HTTP/1.1 around the protocol that serves it (aiohttp's, or
  asyncio streams'): ``read_header_timeout``, ``read_timeout``, ``write_timeout`` and
  ``idle_timeout`` with the meaning of Go's ``net/http`` (the Collector's ``confighttp``).
* :data:`BUDGET` bounds the unfinished request data of all connections of the process (HTTP
  bodies being received, gRPC calls whose message has not fully arrived). When a connection
  needs room, connections holding more than it would are evicted, largest first, so hoarders
  lose their calls before small requests are refused.

What is refused is counted by the owner's ``refused(reason)`` callback (for a receiver
``otelcol_receiver_refused_requests{receiver,transport,reason}``) and logged through its
rate-limited logger.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import heapq
import itertools
import logging
import os
import resource
import socket
import ssl as ssl_module
import struct
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, ClassVar, Protocol

from pydantic import Field

from pipeline.configtypes import ConfigModel, Duration, Seconds, split_endpoint

log = logging.getLogger("pipeline.netedge")

ACCEPT_PAUSE = 0.25  # seconds a listening socket rests after an accept error
ACCEPT_BATCH = 64  # connections accepted per readiness event (asyncio: its backlog)
DEFAULT_MAX_CONNECTIONS = 4096  # per data endpoint (~15 KB each when idle)
DEFAULT_CONTROL_CONNECTIONS = 64  # per health / metrics endpoint
DEFAULT_UNFINISHED_BYTES = 128 << 20
# set in a worker process (pipeline.workers): data endpoints are shared with the sibling
# workers through SO_REUSEPORT, the kernel spreading connections over them
REUSE_PORT = False

# how a refusal is logged: (level, message, *args, key=...)
LogFn = Callable[..., Any]


# -- configuration -----------------------------------------------------------------------------
class ServerLimits(ConfigModel):
    """Options every listening endpoint has (the gateway's; the Collector has none)."""

    max_connections: int = Field(DEFAULT_MAX_CONNECTIONS, ge=1)
    """Connections kept open at once on this endpoint. At the cap, the connection idle the
    longest is closed to make room; when none is idle, the new connection is closed."""
    handshake_timeout: Duration = Seconds(10)
    """The TLS handshake (and, for gRPC, the HTTP/2 connection preface) must complete within
    this; 0: no limit."""


class HTTPServerLimits(ServerLimits):
    """The timeouts of the Collector's ``confighttp`` server settings, with the meaning of Go's
    ``net/http`` (0: no limit), and ``max_connections`` / ``handshake_timeout``."""

    read_timeout: Duration = Seconds(30)
    """A whole request (head and body) must arrive within this, from its first byte."""
    read_header_timeout: Duration = Seconds(10)
    """A request head must arrive within this (from its first byte, or from the accept)."""
    write_timeout: Duration = Seconds(30)
    """A response must be handled and written within this, from the end of the request head."""
    idle_timeout: Duration = Seconds(60)
    """A keep-alive connection is closed after this long without a request."""


class ControlHTTPServerLimits(HTTPServerLimits):
    """:class:`HTTPServerLimits` of a control endpoint (health check, metrics): few clients."""

    max_connections: int = Field(DEFAULT_CONTROL_CONNECTIONS, ge=1)


class NetworkLimitsConfig(ConfigModel):
    """``service.limits``: what all endpoints of the process share (a gateway addition)."""

    max_unfinished_request_bytes: int = Field(DEFAULT_UNFINISHED_BYTES, ge=1 << 20)
    """Request data held by all connections together while requests are incomplete (HTTP
    bodies being received, gRPC messages not fully arrived)."""
    reserved_file_descriptors: int = Field(0, ge=0)
    """Descriptors data endpoints never use, kept for the health check, the metrics endpoints,
    exporters and files; 0: automatic (an eighth of the limit, between 64 and 1024)."""


# -- file descriptors ---------------------------------------------------------------------------
class FdBudget:
    """The process's descriptor limit and the part of it data endpoints leave alone.

    Data endpoints together keep at most ``limit - reserve - baseline`` connections, where the
    baseline is what the process had open besides them when the last data endpoint started
    (listening sockets, the log, the event loop's own): the ``reserve`` stays for the health
    and metrics endpoints, exporters and files. As a second guard, the kernel hands out the
    lowest free descriptor: an accepted socket numbered in the upper half of the reserve means
    the process is nearly out, and a data endpoint closes it at once."""

    def __init__(self) -> None:
        self.limit = 1024
        self.reserve = 64
        self.baseline = 0
        self.configured = 0
        self.refresh()

    def measure(self, data_connections: int) -> None:
        """Count what the process has open besides the data connections."""
        try:
            self.baseline = max(0, len(os.listdir("/proc/self/fd")) - data_connections)
        except OSError:
            self.baseline = 0

    def refresh(self) -> None:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        self.limit = soft if soft != resource.RLIM_INFINITY else 1 << 20
        self.reserve = self.configured or max(64, min(1024, self.limit // 8))
        self.reserve = min(self.reserve, self.limit // 2)

    def configure(self, reserve: int) -> None:
        self.configured = reserve
        self.refresh()

    @property
    def data_connections(self) -> int:
        """Connections all data endpoints together may keep."""
        return max(1, self.limit - self.reserve - self.baseline)

    @property
    def deep_in_reserve(self) -> int:
        """An accepted descriptor numbered this or above is closed by a data endpoint."""
        return self.limit - self.reserve // 2


FDS = FdBudget()


def raise_fd_limit() -> tuple[int, int]:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit (as the Go runtime does for the
    Collector at start); returns the limits now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft == resource.RLIM_INFINITY or soft >= hard:
        FDS.refresh()
        return soft, hard
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    FDS.refresh()
    return soft, hard


# -- the process-wide budget of unfinished request data -----------------------------------------
class BudgetHolder(Protocol):
    def budget_evict(self) -> None:
        """Give up every unfinished request (and call ``BUDGET.update(self, 0)``)."""


class RequestDataBudget:
    """Unfinished request bytes of all connections of the process, under ``max_bytes``."""

    def __init__(self, max_bytes: int = DEFAULT_UNFINISHED_BYTES) -> None:
        self.max_bytes = max_bytes
        self.used = 0
        self.evictions = 0
        self._held: dict[BudgetHolder, int] = {}
        self._heap: list[tuple[int, int, BudgetHolder]] = []  # (-held, n, holder), lazy
        self._seq = itertools.count()

    @property
    def room(self) -> int:
        return self.max_bytes - self.used

    def held(self, holder: BudgetHolder) -> int:
        return self._held.get(holder, 0)

    def update(self, holder: BudgetHolder, held: int) -> None:
        """``holder`` now holds ``held`` unfinished bytes."""
        before = self._held.get(holder, 0)
        if held == before:
            return
        self.used += held - before
        if held:
            self._held[holder] = held
            heapq.heappush(self._heap, (-held, next(self._seq), holder))
            if len(self._heap) > 4 * len(self._held) + 64:
                self._heap = [(-n, next(self._seq), h) for h, n in self._held.items()]
                heapq.heapify(self._heap)
        else:
            del self._held[holder]
            if not self._held:
                self._heap.clear()

    def make_room(self, holder: BudgetHolder, need: int) -> int:
        """Evict holders that hold more than twice what ``holder`` would (its bytes plus
        ``need``), largest first, until ``need`` bytes fit; returns the room left. (Twice: two
        hoarders of about the same size do not evict each other in turn.)"""
        mine = 2 * (self._held.get(holder, 0) + need)
        heap = self._heap
        while self.room < need and heap:
            neg, _, victim = heap[0]
            if self._held.get(victim) != -neg:  # a stale entry
                heapq.heappop(heap)
                continue
            if victim is holder or -neg <= mine:
                break
            heapq.heappop(heap)
            self.evictions += 1
            victim.budget_evict()
            if self._held.get(victim):  # it could not give everything back
                self.update(victim, 0)
        return self.room


BUDGET = RequestDataBudget()


# -- listeners ------------------------------------------------------------------------------
class EdgeConnection(Protocol):
    """What a :class:`Listener` needs of the connections it accepted."""

    def edge_check(self, now: float) -> None:
        """Apply the timeouts (called every ``tick`` seconds)."""

    def edge_evict(self) -> bool:
        """Close this idle connection to make room for a new one; ``False`` when it turned
        out to be busy (it is kept)."""


class SocketHandover:
    """Listening sockets kept open across a config reload.

    While a reload runs (:meth:`begin` ... :meth:`end`), a listener that closes parks its
    listening sockets here instead of closing them, and a listener that starts on the same
    address takes them over: the socket never stops listening, so a client connecting while
    the receiver behind it is replaced waits in the kernel's backlog instead of being
    refused. Sockets nobody took over are closed by :meth:`end`."""

    def __init__(self) -> None:
        self.active = 0
        self._parked: dict[tuple[int, Any], list[socket.socket]] = {}

    def begin(self) -> None:
        self.active += 1

    def park(self, sock: socket.socket) -> bool:
        """Keep ``sock`` for a listener of the same address; ``False`` when no reload runs."""
        if not self.active:
            return False
        try:
            key = (sock.family, sock.getsockname())
        except OSError:
            return False
        self._parked.setdefault(key, []).append(sock)
        return True

    def take(self, family: int, addr: Any) -> socket.socket | None:
        """A parked listening socket bound to ``addr``, or ``None``."""
        socks = self._parked.get((family, addr))
        if not socks:
            return None
        sock = socks.pop()
        if not socks:
            del self._parked[(family, addr)]
        return sock

    def end(self) -> None:
        """The reload is over: close what was not taken over."""
        self.active = max(self.active - 1, 0)
        if self.active:
            return
        for socks in self._parked.values():
            for sock in socks:
                sock.close()
        self._parked.clear()


HANDOVER = SocketHandover()


class Listener:
    """Accepts connections on one endpoint (every address it resolves to) with the limits.

    ``factory()`` makes the protocol of a new connection; it must call :meth:`connected`
    from ``connection_made`` and :meth:`forget` from ``connection_lost``, and tell the
    listener when it is idle (evictable) or busy (:meth:`set_idle`). A new connection counts
    as idle until it says otherwise."""

    # the started listeners of data endpoints: at the descriptor ceiling, the connection idle
    # the longest on any of them makes room
    _data: ClassVar[set[Listener]] = set()

    def __init__(
        self,
        endpoint: str,
        factory: Callable[[], Any],
        *,
        refused: Callable[[str], None],
        log_limited: LogFn,
        ssl: ssl_module.SSLContext | None = None,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        handshake_timeout: float = 10.0,
        reserved: bool = False,
        tick: float = 1.0,
        backlog: int = 1024,
    ) -> None:
        self.endpoint = endpoint
        self.factory = factory
        self.refused = refused
        self.log_limited = log_limited
        self.ssl = ssl
        self.max_connections = max_connections
        self.handshake_timeout = handshake_timeout
        self.reserved = reserved
        self.tick = tick
        self.backlog = backlog
        self.connections: set[Any] = set()
        self.by_transport: dict[Any, Any] = {}
        self._idle: OrderedDict[Any, float] = OrderedDict()  # conn -> idle since
        self._handshakes: dict[Any, asyncio.Task[Any]] = {}
        self._sockets: list[socket.socket] = []
        self._paused: set[socket.socket] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # set when a connection is added: the sweeper sleeps on it while there is none, so an
        # idle listener does not wake every tick; ``sweeps`` counts the ticks it ran
        self._active = asyncio.Event()
        self.sweeps = 0

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        """Bind and listen; ``OSError`` naming the endpoint when it cannot."""
        loop = self._loop = asyncio.get_running_loop()
        host, port = split_endpoint(self.endpoint)
        try:
            infos = await loop.getaddrinfo(
                host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )
            seen: set[Any] = set()
            for family, stype, proto, _, addr in infos:
                if (family, addr) in seen:
                    continue
                seen.add((family, addr))
                parked = HANDOVER.take(family, addr)
                if parked is not None:  # listening all along (a config reload)
                    self._sockets.append(parked)
                    continue
                sock = socket.socket(family, stype, proto)
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    if REUSE_PORT:
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                    if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                    sock.bind(addr)
                    sock.listen(self.backlog)
                    sock.setblocking(False)
                except OSError:
                    sock.close()
                    raise
                self._sockets.append(sock)
        except OSError as exc:
            self._close_sockets()
            raise OSError(exc.errno, f"cannot listen on {self.endpoint}: {exc.strerror}") from exc
        FDS.refresh()
        if not self.reserved:
            Listener._data.add(self)
            FDS.measure(Listener.data_open())
        for sock in self._sockets:
            loop.add_reader(sock.fileno(), self._accept, sock)
        self._sweeper = loop.create_task(self._sweep(), name=f"edge-sweeper {self.endpoint}")

    @property
    def sockets(self) -> list[socket.socket]:
        return list(self._sockets)

    def close(self) -> None:
        """Stop accepting (connections already accepted stay; their owner closes them)."""
        Listener._data.discard(self)
        self._close_sockets()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for task in list(self._handshakes.values()):
            task.cancel()

    def _close_sockets(self) -> None:
        for sock in self._sockets:
            if self._loop is not None and sock not in self._paused:
                with contextlib.suppress(Exception):
                    self._loop.remove_reader(sock.fileno())
            if not HANDOVER.park(sock):
                sock.close()
        self._sockets = []
        self._paused.clear()

    # -- connections --------------------------------------------------------------------------
    def connected(self, conn: Any, transport: Any) -> None:
        """From ``connection_made``: the connection is up (TLS done)."""
        self.by_transport[transport] = conn
        if conn not in self.connections:  # made outside the accept loop (tests)
            self.connections.add(conn)
            self._idle[conn] = self._now()
            self._active.set()

    def forget(self, conn: Any, transport: Any = None) -> None:
        """From ``connection_lost``."""
        self.connections.discard(conn)
        self._idle.pop(conn, None)
        if transport is not None:
            self.by_transport.pop(transport, None)

    def set_idle(self, conn: Any, idle: bool) -> None:
        """Idle connections may be closed to make room (the longest idle first)."""
        if idle:
            if conn in self.connections:
                self._idle[conn] = self._now()
                self._idle.move_to_end(conn)
        else:
            self._idle.pop(conn, None)

    @staticmethod
    def data_open() -> int:
        """Connections open on all data endpoints."""
        return sum(len(listener.connections) for listener in Listener._data)

    def _now(self) -> float:
        return self._loop.time() if self._loop is not None else 0.0

    def _accept(self, sock: socket.socket) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn_sock, _addr = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                self._accept_failed(sock, exc)
                return
            if not self._admit(conn_sock):
                return

    def _accept_failed(self, sock: socket.socket, exc: OSError) -> None:
        exhausted = exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
        reason = "fd_exhausted" if exc.errno in (errno.EMFILE, errno.ENFILE) else "accept_error"
        self.refused(reason)
        self.log_limited(
            logging.ERROR if exhausted else logging.WARNING,
            "cannot accept connections on %s: %s; accepting again in %gs",
            self.endpoint,
            exc.strerror or exc,
            ACCEPT_PAUSE,
            key=f"accept {self.endpoint}",
        )
        loop = self._loop
        assert loop is not None
        loop.remove_reader(sock.fileno())
        self._paused.add(sock)
        loop.call_later(ACCEPT_PAUSE, self._resume, sock)

    def _resume(self, sock: socket.socket) -> None:
        if sock in self._paused and sock in self._sockets and self._loop is not None:
            self._paused.discard(sock)
            self._loop.add_reader(sock.fileno(), self._accept, sock)

    def _refuse(self, conn_sock: socket.socket, reason: str, message: str) -> None:
        with contextlib.suppress(OSError):
            # RST rather than FIN: nothing lingers in TIME_WAIT on our side
            conn_sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn_sock.close()
        self.refused(reason)
        self.log_limited(
            logging.WARNING,
            "refused a connection on %s: %s",
            self.endpoint,
            message,
            key=f"refused {self.endpoint} {reason}",
        )

    def _admit(self, conn_sock: socket.socket) -> bool:
        """Take or refuse an accepted socket; ``False`` to accept no more until the next
        event (a connection closed to make room frees its descriptor only then)."""
        if not self.reserved and conn_sock.fileno() >= FDS.deep_in_reserve:
            self._refuse(
                conn_sock,
                "fd_reserve",
                f"the process is within {FDS.limit - conn_sock.fileno()} descriptors of its "
                f"limit ({FDS.limit}), which are kept for the health and metrics endpoints",
            )
            return True
        fd_full = not self.reserved and Listener.data_open() >= FDS.data_connections
        conn_full = len(self.connections) >= self.max_connections
        # full: the connection idle the longest makes room (on this endpoint, or on any data
        # endpoint when it is the descriptors that ran short)
        if (fd_full or conn_full) and not self._make_room(anywhere=fd_full and not conn_full):
            if conn_full:
                self._refuse(
                    conn_sock,
                    "max_connections",
                    f"{len(self.connections)} connections are open (max_connections) and "
                    "none is idle",
                )
            else:
                self._refuse(
                    conn_sock,
                    "fd_reserve",
                    f"data endpoints hold {FDS.data_connections} connections, all the "
                    f"descriptor limit ({FDS.limit}) allows besides the {FDS.reserve} kept for "
                    "the health and metrics endpoints, and none is idle",
                )
            return True
        loop = self._loop
        assert loop is not None
        conn_sock.setblocking(False)
        conn = self.factory()
        self.connections.add(conn)
        self._idle[conn] = loop.time()
        self._active.set()
        timeout = (self.handshake_timeout or None) if self.ssl is not None else None
        task = loop.create_task(
            loop.connect_accepted_socket(
                lambda: conn, conn_sock, ssl=self.ssl, ssl_handshake_timeout=timeout
            )
        )
        self._handshakes[conn] = task
        task.add_done_callback(lambda t: self._handshake_done(conn, t))
        return not fd_full

    def _make_room(self, anywhere: bool = False) -> bool:
        """Close the connection idle the longest, here or (``anywhere``) on any data
        endpoint; a few tries, as one may turn out busy."""
        for _ in range(8):
            owner = self
            if anywhere:
                oldest = None
                for listener in Listener._data:
                    first = next(iter(listener._idle.items()), None)
                    if first is not None and (oldest is None or first[1] < oldest):
                        owner, oldest = listener, first[1]
            victim = next(iter(owner._idle), None)
            if victim is None:
                return False
            owner._idle.pop(victim)
            if owner._evict(victim):
                owner.refused("evicted_idle")
                owner.log_limited(
                    logging.INFO,
                    "closed an idle connection on %s to make room (%s)",
                    owner.endpoint,
                    "file descriptors" if anywhere else f"max_connections {self.max_connections}",
                    key=f"evicted {owner.endpoint}",
                )
                return True
        return False

    def _evict(self, conn: Any) -> bool:
        task = self._handshakes.pop(conn, None)
        if task is not None:  # still in its TLS handshake
            task.cancel()
            self.forget(conn)
            return True
        try:
            if not conn.edge_evict():
                return False
        except Exception:
            log.exception("closing a connection failed")
        self.forget(conn)
        return True

    def _handshake_done(self, conn: Any, task: asyncio.Task[Any]) -> None:
        # the socket belongs to the transport now, which closes it (closing it here could
        # close a descriptor number already handed to another connection)
        self._handshakes.pop(conn, None)
        if task.cancelled():
            self.forget(conn)
            return
        exc = task.exception()
        if exc is None:
            return
        self.forget(conn)
        reason = "handshake_timeout" if isinstance(exc, ConnectionAbortedError) else "handshake"
        self.refused(reason)
        self.log_limited(
            logging.WARNING,
            "TLS handshake failed on %s: %s",
            self.endpoint,
            exc,
            key=f"handshake {self.endpoint} {reason}",
        )

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        active = self._active
        while True:
            if not self.connections:
                # nothing to check: no tick until a connection comes (whose first check is
                # then a tick after it came, as before at most a tick after)
                active.clear()
                await active.wait()
            await asyncio.sleep(self.tick)
            self.sweeps += 1
            now = loop.time()
            for conn in list(self.connections):
                if conn in self._handshakes:
                    continue
                try:
                    conn.edge_check(now)
                except Exception:
                    log.exception("checking a connection's limits failed")


def sweep_tick(*timeouts: float) -> float:
    """How often a listener checks its connections: a quarter of the shortest timeout, between
    50 ms and 1 s."""
    active = [t for t in timeouts if t > 0]
    return min(1.0, max(0.05, min(active) / 4)) if active else 1.0


# -- HTTP/1.1 ------------------------------------------------------------------------------------
class HTTPEdge(asyncio.Protocol):
    """An HTTP/1.1 connection's limits, around the protocol that serves it.

    States: ``HEAD`` (waiting for, or reading, a request head: ``read_header_timeout`` from
    the accept or from the first byte), ``BUSY`` (in the handler: the body within
    ``read_timeout`` of the head's first byte, the response within ``write_timeout`` of the
    handler's start), ``WRITING`` (the handler returned; the response is being written, still
    within ``write_timeout``), ``IDLE`` (``idle_timeout``). The server tells it where a request
    starts and ends (:func:`request_started`, :func:`body_read`, :func:`request_ended`).
    Bytes received from a request's first byte until its body was read count in
    :data:`BUDGET`."""

    HEAD: ClassVar[int] = 0
    BUSY: ClassVar[int] = 1
    WRITING: ClassVar[int] = 2
    IDLE: ClassVar[int] = 3
    STREAMING: ClassVar[int] = 4  # a response written as it happens (server-sent events)

    def __init__(self, inner: asyncio.Protocol, listener: Listener, limits: HTTPServerLimits):
        self.inner = inner
        self.listener = listener
        self.limits = limits
        self.transport: asyncio.Transport | None = None
        self.state = self.HEAD
        self.since = 0.0  # when the state began (HEAD: the head's first byte or the accept)
        self.busy_since = 0.0
        self.reading = True  # the request's body is not read yet
        self.pending = 0  # unfinished request bytes (in BUDGET)
        self.stalled_since = 0.0  # STREAMING: when the client stopped reading (0: it reads)
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- asyncio.Protocol, forwarded --------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._loop = asyncio.get_running_loop()
        self.since = self._loop.time()
        self.listener.connected(self, transport)
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        state = self.state
        if state == self.IDLE or state == self.WRITING:
            # the next request; while the last answer is still being written it is still
            # the write_timeout that applies
            assert self.transport is not None and self._loop is not None
            if state == self.IDLE or not self.transport.get_write_buffer_size():
                if state == self.IDLE:
                    self.listener.set_idle(self, False)
                self.since = self._loop.time()
                self.state = self.HEAD
            self.reading = True
        if self.reading:
            self._charge(len(data))
            if self.transport is None or self.transport.is_closing():
                return
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.listener.forget(self, self.transport)
        if self.pending:
            self.pending = 0
            BUDGET.update(self, 0)
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    # -- the budget -------------------------------------------------------------------------------
    def _charge(self, n: int) -> None:
        if n > BUDGET.room and BUDGET.make_room(self, n) < n:
            self._abort("budget", "the process holds max_unfinished_request_bytes already")
            return
        self.pending += n
        BUDGET.update(self, self.pending)

    def budget_evict(self) -> None:
        self._abort(
            "budget", "its unfinished request was evicted: max_unfinished_request_bytes reached"
        )

    # -- request boundaries (from the server) -----------------------------------------------------
    def started(self) -> None:
        if self.state == self.IDLE:
            self.listener.set_idle(self, False)
        assert self._loop is not None
        if self.state != self.HEAD:
            self.since = self._loop.time()
        self.state = self.BUSY
        self.busy_since = self._loop.time()
        self.reading = True

    def read_done(self) -> None:
        self.reading = False
        if self.pending:
            self.pending = 0
            BUDGET.update(self, 0)

    def ended(self) -> None:
        self.read_done()
        self.state = self.WRITING

    def streaming(self) -> None:
        """The handler streams its response for as long as the client stays (server-sent
        events): instead of a deadline for the whole response, ``write_timeout`` bounds how
        long written data may wait for the client to read it."""
        self.read_done()
        self.state = self.STREAMING
        self.stalled_since = 0.0

    # -- limits ----------------------------------------------------------------------------------
    def edge_check(self, now: float) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        lim = self.limits
        state = self.state
        if state == self.HEAD:
            if lim.read_header_timeout and now - self.since > lim.read_header_timeout:
                self._abort("read_header_timeout", "no complete request head in time")
        elif state == self.BUSY:
            if self.reading and lim.read_timeout and now - self.since > lim.read_timeout:
                self._abort("read_timeout", "the request body did not arrive in time")
            elif lim.write_timeout and now - self.busy_since > lim.write_timeout:
                self._abort("write_timeout", "the response was not written in time")
        elif state == self.WRITING:
            if transport.get_write_buffer_size() == 0:
                self.since = now
                if self.pending:  # part of the next request arrived meanwhile
                    self.state = self.HEAD
                else:
                    self.state = self.IDLE
                    self.listener.set_idle(self, True)
            elif lim.write_timeout and now - self.busy_since > lim.write_timeout:
                self._abort("write_timeout", "the client did not read the response in time")
        elif state == self.STREAMING:
            if transport.get_write_buffer_size() == 0:
                self.stalled_since = 0.0
            elif not self.stalled_since:
                self.stalled_since = now
            elif lim.write_timeout and now - self.stalled_since > lim.write_timeout:
                self._abort("write_timeout", "the client did not read the stream in time")
        elif lim.idle_timeout and now - self.since > lim.idle_timeout:
            transport.close()

    def edge_evict(self) -> bool:
        if self.state == self.BUSY or self.state == self.STREAMING:
            return False
        if self.transport is not None:
            self.transport.close()
        return True

    def _abort(self, reason: str, message: str) -> None:
        listener = self.listener
        if self.transport is None or self.transport.is_closing():
            return
        listener.refused(reason)
        peer = self.transport.get_extra_info("peername")
        listener.log_limited(
            logging.WARNING,
            "closed a connection on %s from %s: %s",
            listener.endpoint,
            peer[0] if isinstance(peer, tuple) else peer,
            message,
            key=f"closed {listener.endpoint} {reason}",
            extra={"reason": reason},
        )
        self.transport.abort()
        if self.pending:
            self.pending = 0
            BUDGET.update(self, 0)


def http_edge(transport: Any, listener: Listener | None) -> HTTPEdge | None:
    """The :class:`HTTPEdge` of a request's transport (``None`` outside a listener)."""
    if listener is None or transport is None:
        return None
    edge = listener.by_transport.get(transport)
    return edge if isinstance(edge, HTTPEdge) else None


async def serve_http(
    endpoint: str,
    factory: Callable[[], asyncio.Protocol],
    limits: HTTPServerLimits,
    *,
    refused: Callable[[str], None],
    log_limited: LogFn,
    ssl: ssl_module.SSLContext | None = None,
    reserved: bool = False,
) -> Listener:
    """Listen on ``endpoint`` for HTTP/1.1, each connection served by ``factory()`` inside an
    :class:`HTTPEdge`; returns the started :class:`Listener`."""
    listener: Listener

    def make() -> HTTPEdge:
        return HTTPEdge(factory(), listener, limits)

    listener = Listener(
        endpoint,
        make,
        refused=refused,
        log_limited=log_limited,
        ssl=ssl,
        max_connections=limits.max_connections,
        handshake_timeout=limits.handshake_timeout,
        reserved=reserved,
        tick=sweep_tick(
            limits.read_timeout,
            limits.read_header_timeout,
            limits.write_timeout,
            limits.idle_timeout,
        ),
    )
    await listener.start()
    return listener
