"""Attacks on the native gRPC server's edge (plugins/otlpreceiver/grpc_native.py with the
limits of plugins/_native/_h2server.c and pipeline/netedge.py), against a gateway subprocess
whose memory, CPU and descriptors are read from /proc: idle-connection flood, Rapid Reset,
header floods (one large block, HPACK amplification, CONTINUATION flood, an unfinished block),
zero-window readers and connections holding unfinished calls. During each, the OTel SDK's
exporter keeps getting its spans through."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings
import hpack
import pytest
from hyperframe.frame import ContinuationFrame, HeadersFrame, SettingsFrame

from tests.edge_support import EdgeGateway, rss_bound, sdk_grpc_export, wait_for
from tests.plugins._native_support import require_native
from tests.plugins.otlpreceiver.test_grpc_native import framed
from tests.plugins.otlpreceiver.test_grpc_server import GRPC_HEADERS, request

require_native("_h2server")

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
HEADERS = GRPC_HEADERS


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeGateway]:
    with EdgeGateway(tmp_path_factory.mktemp("grpc-edges")) as gw:
        assert sdk_grpc_export(gw.grpc)
        yield gw


class H2:
    """A raw HTTP/2 client connection (``h2``) on a blocking socket."""

    def __init__(self, port: int, window: int | None = None) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        if window is not None:
            self.conn.local_settings = h2.settings.Settings(
                client=True, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window}
            )
        self.conn.initiate_connection()
        self.events: list[Any] = []
        self.flush()

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def read(self, within: float = 5.0, until: Any = None) -> bool:
        """Read events until ``until()`` or the connection ends; False when it ended."""
        deadline = time.monotonic() + within
        while until is None or not until():
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                if time.monotonic() >= deadline:
                    return True
                continue
            except ConnectionResetError:
                return False
            if not data:
                return False
            try:
                self.events += self.conn.receive_data(data)
            except h2.exceptions.ProtocolError:
                return False
            try:
                self.flush()
            except OSError:
                return False
        return True

    def goaway(self) -> h2.events.ConnectionTerminated | None:
        for e in self.events:
            if isinstance(e, h2.events.ConnectionTerminated):
                return e
        return None

    def close(self) -> None:
        self.sock.close()


async def good_client_during(gw: EdgeGateway, attack: Any, *args: Any) -> tuple[bool, Any]:
    """Run ``attack(*args)`` in a thread while the SDK exports; both results."""
    result, ok = await asyncio.gather(
        asyncio.to_thread(attack, *args), asyncio.to_thread(sdk_grpc_export, gw.grpc)
    )
    return ok, result


# -- idle connections ------------------------------------------------------------------------
def idle_flood(port: int, n: int) -> list[socket.socket]:
    """``n`` connections: half say the HTTP/2 preface and SETTINGS, half say nothing."""
    out = []
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        if i % 2:
            s.sendall(PREFACE + SettingsFrame(0).serialize())
        out.append(s)
    return out


async def test_idle_connection_flood_is_capped_and_good_clients_get_through(
    gateway: EdgeGateway,
) -> None:
    gw = gateway
    rss, cpu, fds = gw.rss_mib(), gw.cpu_s(), gw.fds()
    closed = gw.refused("evicted_idle") + gw.refused("handshake_timeout")
    socks = await asyncio.to_thread(idle_flood, gw.grpc, 1000)
    try:
        # at most max_connections (300) kept: the oldest idle ones were closed to make room
        # (and those that never said the preface once handshake_timeout passed)
        wait_for(lambda: gw.fds() <= fds + 300 + 5)
        wait_for(
            lambda: (
                gw.refused("evicted_idle") + gw.refused("handshake_timeout") - closed
                >= 1000 - 300 - 5
            )
        )
        ok = await asyncio.to_thread(sdk_grpc_export, gw.grpc)
        assert ok, "the SDK's export failed during the idle flood"
        grown, spent = gw.rss_mib() - rss, gw.cpu_s() - cpu
        print(f"idle flood: 1000 connections, RSS +{grown:.1f} MiB, CPU {spent:.2f} s")
        assert grown < rss_bound(40)  # ~15 KB per kept connection
        # those that never said the HTTP/2 preface are closed after handshake_timeout (1s)
        wait_for(lambda: gw.refused("handshake_timeout") >= 100, within=5)
    finally:
        for s in socks:
            s.close()


# -- Rapid Reset ---------------------------------------------------------------------------------
def rapid_reset(port: int, streams: int, with_body: bool) -> tuple[H2, int]:
    """Open and reset ``streams`` calls as fast as possible (with a complete message before
    each reset when ``with_body``); returns the client and how many were sent."""
    c = H2(port)
    c.read(0.2, until=lambda: any(isinstance(e, h2.events.SettingsAcknowledged) for e in c.events))
    body = framed(request(2))
    sent = 0
    try:
        for _ in range(streams):
            sid = c.conn.get_next_available_stream_id()
            c.conn.send_headers(sid, HEADERS)
            if with_body:
                c.conn.send_data(sid, body, end_stream=True)
            c.conn.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
            sent += 1
            if sent % 50 == 0:
                c.flush()
    except (OSError, h2.exceptions.ProtocolError):
        pass
    try:
        c.flush()
    except OSError:
        pass
    c.read(3.0, until=lambda: c.goaway() is not None)
    return c, sent


@pytest.mark.parametrize("with_body", [False, True], ids=["headers", "complete-calls"])
async def test_rapid_reset_gets_goaway_enhance_your_calm(
    gateway: EdgeGateway, with_body: bool
) -> None:
    gw = gateway
    accepted, cpu = gw.accepted_spans(), gw.cpu_s()
    calm, cancelled = gw.refused("too_many_resets"), gw.refused("cancelled")
    ok, (client, sent) = await good_client_during(gw, rapid_reset, gw.grpc, 20000, with_body)
    try:
        assert ok, "the SDK's export failed during Rapid Reset"
        goaway = client.goaway()
        assert goaway is not None and goaway.error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
        assert goaway.additional_data == b"too_many_resets"
        # 50/s in bursts of 100: the connection is cut after about 100 resets, whatever was
        # queued behind them
        assert goaway.last_stream_id <= 2 * 160
        spent = gw.cpu_s() - cpu
        print(f"rapid reset: {sent} streams sent, GOAWAY at {goaway.last_stream_id}, {spent:.2f}s")
        assert spent < 5
        wait_for(lambda: gw.refused("too_many_resets") == calm + 1)
        # the calls reset before they were taken are not ingested
        assert gw.accepted_spans() == accepted + 3  # only the SDK's spans
        if with_body:
            assert gw.refused("cancelled") > cancelled
    finally:
        client.close()


# -- header floods --------------------------------------------------------------------------------
def call_with_headers(port: int, extra: list[tuple[str, str]]) -> H2:
    c = H2(port)
    sid = c.conn.get_next_available_stream_id()
    c.conn.send_headers(sid, [*HEADERS, *extra])
    c.conn.send_data(sid, framed(request(1)), end_stream=True)
    c.flush()
    c.read(3.0, until=lambda: any(getattr(e, "stream_id", 0) == sid for e in c.events))
    return c


@pytest.mark.parametrize(
    "extra",
    [
        [("x-large", "a" * 40000)],  # one block of 40 KB
        [("x-bomb", "b" * 4000)] * 200,  # 4 KB on the wire, 800 KB once decoded (HPACK index)
    ],
    ids=["large-block", "hpack-amplification"],
)
async def test_header_flood_resets_the_call(
    gateway: EdgeGateway, extra: list[tuple[str, str]]
) -> None:
    gw = gateway
    before, rss, accepted = gw.refused("header_too_large"), gw.rss_mib(), gw.accepted_spans()
    ok, client = await good_client_during(gw, call_with_headers, gw.grpc, extra)
    try:
        assert ok
        resets = [e for e in client.events if isinstance(e, h2.events.StreamReset)]
        assert resets and resets[0].error_code == h2.errors.ErrorCodes.INTERNAL_ERROR
        wait_for(lambda: gw.refused("header_too_large") == before + 1)
        assert gw.accepted_spans() == accepted + 3  # the SDK's, not the flooder's
        assert gw.rss_mib() - rss < rss_bound(10)
        # the connection goes on: a normal call on it is answered
        sid = client.conn.get_next_available_stream_id()
        client.conn.send_headers(sid, HEADERS)
        client.conn.send_data(sid, framed(request(1)), end_stream=True)
        client.flush()
        client.read(
            3.0,
            until=lambda: any(
                isinstance(e, h2.events.TrailersReceived) and e.stream_id == sid
                for e in client.events
            ),
        )
        trailers = [e for e in client.events if isinstance(e, h2.events.TrailersReceived)]
        assert dict(trailers[-1].headers)["grpc-status"] == "0"
    finally:
        client.close()


def continuation_flood(port: int, frames: int) -> tuple[bool, int]:
    """HEADERS without END_HEADERS, then CONTINUATION frames; (connection ended, sent)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    encoder = hpack.Encoder()
    block = encoder.encode(HEADERS)
    s.sendall(PREFACE + SettingsFrame(0).serialize())
    s.sendall(HeadersFrame(1, data=block).serialize())
    fragment = encoder.encode([("x-more", "c" * 100)])
    sent = 0
    ended = False
    try:
        for _ in range(frames):
            s.sendall(ContinuationFrame(1, data=fragment).serialize())
            sent += 1
    except OSError:
        ended = True
    if not ended:
        s.settimeout(3)
        try:
            while s.recv(65536):
                pass
            ended = True
        except (TimeoutError, OSError):
            ended = isinstance(s, socket.socket)
    s.close()
    return ended, sent


async def test_continuation_flood_ends_the_connection(gateway: EdgeGateway) -> None:
    gw = gateway
    cpu = gw.cpu_s()
    ok, (ended, sent) = await good_client_during(gw, continuation_flood, gw.grpc, 100000)
    assert ok
    assert ended
    spent = gw.cpu_s() - cpu
    print(f"CONTINUATION flood: {sent} frames sent before the connection ended, CPU {spent:.2f}s")
    assert sent < 100000  # cut off (libnghttp2 allows 8 CONTINUATION frames)
    assert spent < 5


def unfinished_header_block(port: int) -> float:
    """HEADERS without END_HEADERS and then silence: seconds until the server closes."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(PREFACE + SettingsFrame(0).serialize())
    s.sendall(HeadersFrame(1, data=hpack.Encoder().encode(HEADERS)).serialize())
    start = time.monotonic()
    try:
        while s.recv(65536):
            pass
    except OSError:
        pass
    s.close()
    return time.monotonic() - start


async def test_an_unfinished_header_block_is_cut_at_read_header_timeout(
    gateway: EdgeGateway,
) -> None:
    gw = gateway
    before = gw.refused("read_header_timeout")
    ok, waited = await good_client_during(gw, unfinished_header_block, gw.grpc)
    assert ok
    assert 1.0 <= waited < 4.0  # read_header_timeout: 1s, checked every 250 ms
    wait_for(lambda: gw.refused("read_header_timeout") == before + 1)


# -- slow readers --------------------------------------------------------------------------------
def zero_window(port: int, calls: int) -> tuple[H2, float]:
    """Calls from a client whose flow-control window is 0: no answer can be sent. Returns
    the client and the seconds until the server closed the connection."""
    c = H2(port, window=0)
    for _ in range(calls):
        sid = c.conn.get_next_available_stream_id()
        c.conn.send_headers(sid, HEADERS)
        c.conn.send_data(sid, framed(request(1)), end_stream=True)
    c.flush()
    start = time.monotonic()
    c.read(10.0)
    return c, time.monotonic() - start


async def test_zero_window_client_is_closed_at_write_timeout(gateway: EdgeGateway) -> None:
    gw = gateway
    before = gw.refused("write_timeout")
    ok, (client, waited) = await good_client_during(gw, zero_window, gw.grpc, 50)
    try:
        assert ok
        assert 2.0 <= waited < 5.0  # write_timeout: 2s
        assert not any(isinstance(e, h2.events.DataReceived) for e in client.events)
        wait_for(lambda: gw.refused("write_timeout") == before + 1)
    finally:
        client.close()


# -- unfinished calls held across connections (the process-wide budget) ----------------------
def hold_unfinished(port: int, connections: int, streams: int, chunk: int) -> list[H2]:
    """``connections`` x ``streams`` calls, each sent ``chunk`` bytes of a larger message and
    never ended."""
    out = []
    prefix = b"\x00" + (4 << 20).to_bytes(4, "big")
    filler = b"\x0a" * 16384
    for _ in range(connections):
        c = H2(port)
        c.read(
            0.5,
            until=lambda c=c: any(isinstance(e, h2.events.RemoteSettingsChanged) for e in c.events),
        )
        for _ in range(streams):
            sid = c.conn.get_next_available_stream_id()
            c.conn.send_headers(sid, HEADERS)
            c.conn.send_data(sid, prefix)
            left = chunk
            while left > 0:
                n = min(left, len(filler), c.conn.local_flow_control_window(sid))
                if n <= 0:
                    break
                c.conn.send_data(sid, filler[:n])
                left -= n
        try:
            c.flush()
        except OSError:
            pass
        out.append(c)
    return out


async def test_unfinished_calls_are_bounded_by_the_process_budget(gateway: EdgeGateway) -> None:
    gw = gateway
    rss = gw.rss_mib()
    busy = gw.refused("busy")
    # 32 connections x 16 calls x 1 MiB (each stream's window) = 512 MiB unfinished; the
    # budget is 32 MiB (service.limits.max_unfinished_request_bytes)
    clients = await asyncio.to_thread(hold_unfinished, gw.grpc, 32, 16, 1 << 20)
    try:
        wait_for(lambda: gw.refused("busy") - busy >= 512 - 32 - 16)
        held = gw.metric("otelcol_server_unfinished_request_bytes")
        peak = gw.rss_mib() - rss
        ok = await asyncio.to_thread(sdk_grpc_export, gw.grpc)
        assert ok, "the SDK's export failed while connections held unfinished calls"
        print(f"unfinished calls: 512 MiB sent, {held / 2**20:.1f} MiB held, RSS +{peak:.1f} MiB")
        assert held <= 32 << 20
        assert peak < rss_bound(32 * 3 + 16)
    finally:
        for c in clients:
            c.close()
