"""What the native gRPC server (plugins/otlpreceiver/grpc_native.py) decides itself, seen by
a raw HTTP/2 client (the ``h2`` library over a socket): requests that are not gRPC, bodies that
are not one gRPC message, resets, compression by hand, protocol garbage, and the GOAWAY at
shutdown; and its status encodings."""

from __future__ import annotations

import asyncio
import gzip
import selectors
import socket
from pathlib import Path
from typing import Any

import grpc
import h2.config
import h2.connection
import h2.events
import pytest

from pipeline import current_client
from pipeline.client import ClientInfo
from plugins.otlpreceiver.grpc_native import percent_encode, status_details
from plugins.otlpreceiver.receiver import OTLPReceiver
from tests.plugins._native_support import require_native
from tests.plugins.otlpreceiver.test_grpc_server import (
    GRPC_HEADERS,
    TRACE_EXPORT,
    accepted,
    config,
    refused,
    request,
)
from tests.support import free_port, running_service, wait_until


@pytest.fixture
def native(monkeypatch: pytest.MonkeyPatch) -> None:
    """For the tests of what only the native server decides: it must be there (not skipped
    under CI), and those tests run once."""
    require_native("_h2server")
    monkeypatch.delenv("PIPELINE_GRPC_SERVER", raising=False)


# -- raw HTTP/2: what the native server decides itself ----------------------------------------
class RawClient:
    """An HTTP/2 client connection (``h2``) over a socket."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        self.conn.initiate_connection()
        self.events: list[Any] = []

    @classmethod
    async def open(cls, port: int) -> RawClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        client = cls(reader, writer)
        await client.flush()
        return client

    async def flush(self) -> None:
        self.writer.write(self.conn.data_to_send())
        await self.writer.drain()

    async def read_until(self, done: Any, within: float = 5.0) -> None:
        async with asyncio.timeout(within):
            while not done():
                data = await self.reader.read(65536)
                if not data:
                    self.events.append("eof")
                    return
                self.events += self.conn.receive_data(data)
                await self.flush()

    def ended(self, sid: int) -> bool:
        return any(
            isinstance(e, h2.events.StreamEnded | h2.events.StreamReset) and e.stream_id == sid
            for e in self.events
        )

    def headers(self, sid: int) -> dict[str, str]:
        out: dict[str, str] = {}
        for e in self.events:
            kinds = h2.events.ResponseReceived | h2.events.TrailersReceived
            if isinstance(e, kinds) and e.stream_id == sid:
                out.update(dict(e.headers))
        return out

    def start(self, content_type: str = "application/grpc", encoding: str = "") -> int:
        """Open a call (its headers queued, not its body); returns its stream id."""
        sid = int(self.conn.get_next_available_stream_id())
        headers = [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", TRACE_EXPORT),
            (":authority", "127.0.0.1"),
            ("content-type", content_type),
            ("te", "trailers"),
        ]
        if encoding:
            headers.append(("grpc-encoding", encoding))
        self.conn.send_headers(sid, headers)
        return sid

    async def call(
        self, body: bytes, content_type: str = "application/grpc", encoding: str = ""
    ) -> int:
        sid = self.start(content_type, encoding)
        self.conn.send_data(sid, body, end_stream=True)
        await self.flush()
        return sid

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except OSError:
            pass


def framed(message: bytes) -> bytes:
    return b"\x00" + len(message).to_bytes(4, "big") + message


async def test_raw_http2_not_grpc_bad_framing_resets_and_compression(
    tmp_path: Path, native: None
) -> None:
    port = free_port()
    async with running_service(config(port), tmp_path) as service:
        c = await RawClient.open(port)
        sid = await c.call(b'{"resourceSpans": []}', content_type="application/json")
        await c.read_until(lambda: c.ended(sid))
        assert c.headers(sid)[":status"] == "415"
        sid = await c.call(framed(request(2))[:-1])  # the prefix says one byte more
        await c.read_until(lambda: c.ended(sid))
        assert c.headers(sid)["grpc-status"] == "13"
        # a call reset half-way: nothing of it is taken, the connection goes on
        half = c.start()
        c.conn.send_data(half, framed(request(5))[:20])
        c.conn.reset_stream(half)
        await c.flush()
        # compressed with gzip by hand
        body = gzip.compress(request(4))
        sid = await c.call(
            b"\x01" + len(body).to_bytes(4, "big") + body,
            content_type="application/grpc+proto",
            encoding="gzip",
        )
        await c.read_until(lambda: c.ended(sid))
        assert c.headers(sid)["grpc-status"] == "0"
        # compressed, with an encoding the server does not know
        sid = await c.call(b"\x01\x00\x00\x00\x01x", encoding="snappy")
        await c.read_until(lambda: c.ended(sid))
        assert c.headers(sid)["grpc-status"] == "12"
        await c.close()
        await wait_until(lambda: accepted(service) == 4)
        assert refused(service, "not_grpc") == 1
        assert refused(service, "bad_framing") == 1
        assert refused(service, "unsupported_encoding") == 1


async def test_garbage_closes_only_that_connection(tmp_path: Path, native: None) -> None:
    port = free_port()
    async with running_service(config(port), tmp_path) as service:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        async with asyncio.timeout(5):
            while await reader.read(65536):
                pass  # the server may say GOAWAY first; then it closes
        writer.close()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            assert await channel.unary_unary(TRACE_EXPORT)(request(2)) == b""
        await wait_until(lambda: accepted(service) == 2)


async def test_shutdown_says_goaway_to_connected_clients(tmp_path: Path, native: None) -> None:
    port = free_port()
    async with running_service(config(port), tmp_path):
        c = await RawClient.open(port)
        sid = await c.call(framed(request(1)))
        await c.read_until(lambda: c.ended(sid))
    # the service stopped: the idle connection got a GOAWAY, then was closed
    await c.read_until(lambda: "eof" in c.events)
    assert any(isinstance(e, h2.events.ConnectionTerminated) for e in c.events)
    await c.close()


async def test_the_answers_to_calls_read_together_leave_in_one_write(
    tmp_path: Path, native: None
) -> None:
    """Calls that arrive in one read and are answered in one turn of the loop are answered in
    one write (one ``send``, one wake-up of the client) together with what the read itself
    called for (window updates), not in one write each."""
    port = free_port()
    async with running_service(config(port), tmp_path) as service:
        receiver = next(n.component for n in service.graph.nodes if str(n.id) == "otlp")
        assert isinstance(receiver, OTLPReceiver)
        c = await RawClient.open(port)
        settled = h2.events.RemoteSettingsChanged
        await c.read_until(lambda: any(isinstance(e, settled) for e in c.events))
        (conn,) = receiver._servers[0].connections
        reads, writes = conn.reads, conn.writes
        sids = [c.start() for _ in range(8)]
        for sid in sids:  # the eight calls in one write of the client (~1 KB)
            c.conn.send_data(sid, framed(request(1, name=f"c{sid}-")), end_stream=True)
        await c.flush()
        await c.read_until(lambda: all(c.ended(sid) for sid in sids))
        assert [c.headers(sid)["grpc-status"] for sid in sids] == ["0"] * 8
        reads, writes = conn.reads - reads, conn.writes - writes
        assert 1 <= writes <= reads < len(sids)
        await c.close()
        await wait_until(lambda: accepted(service) == 8)


async def test_the_pipeline_knows_the_sender_of_each_call(
    tmp_path: Path, native: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every call's payload is pushed with its sender as the current client (its connection's
    address, the receiver, ``grpc``, no authenticator's facts), calls of one connection and of
    another alike; outside a call there is none."""
    seen: list[ClientInfo | None] = []
    original = OTLPReceiver.push_payload

    async def recording(self: OTLPReceiver, signal: Any, payload: Any) -> int:
        seen.append(current_client())
        return await original(self, signal, payload)

    monkeypatch.setattr(OTLPReceiver, "push_payload", recording)
    port = free_port()
    async with running_service(config(port), tmp_path) as service:
        first, second = await RawClient.open(port), await RawClient.open(port)
        addrs = []
        for c in (first, second, first):
            sid = await c.call(framed(request(1)))
            await c.read_until(lambda c=c, sid=sid: c.ended(sid))
            assert c.headers(sid)["grpc-status"] == "0"
            host, peer_port = c.writer.get_extra_info("sockname")[:2]
            addrs.append(f"{host}:{peer_port}")
        await first.close()
        await second.close()
        await wait_until(lambda: accepted(service) == 3)
    assert addrs[0] != addrs[1]
    assert [c.addr if c else None for c in seen] == addrs
    assert all(
        c is not None and (c.receiver, c.transport, c.auth) == ("otlp", "grpc", {}) for c in seen
    )
    assert current_client() is None


def test_grpc_message_and_details_encoding() -> None:
    assert percent_encode("plain text: ok") == b"plain text: ok"
    assert percent_encode("100% caf\u00e9\n") == b"100%25 caf%C3%A9%0A"
    details = status_details(14, "busy", 2.5)
    import base64

    from google.rpc import error_details_pb2, status_pb2

    st = status_pb2.Status.FromString(base64.b64decode(details + b"=" * (-len(details) % 4)))
    assert st.code == 14 and st.message == "busy"
    info = error_details_pb2.RetryInfo()
    assert st.details[0].Unpack(info)
    assert info.retry_delay.seconds == 2 and info.retry_delay.nanos == 500_000_000
    assert b"=" not in details


class _CountingSelector(selectors.DefaultSelector):  # type: ignore[misc,valid-type]
    """The event loop's selector, counting its calls: one a turn of the loop (an
    ``epoll_wait``)."""

    def __init__(self) -> None:
        super().__init__()
        self.selects = 0

    def select(self, timeout: float | None = None) -> list[Any]:
        self.selects += 1
        return super().select(timeout)  # type: ignore[no-any-return]


def _calls_one_after_another(port: int, bodies: list[bytes]) -> list[str]:
    """A blocking HTTP/2 client (``h2`` over a socket, in its own thread): each call sent
    once the previous one was answered; their ``grpc-status``."""
    statuses = []
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        conn.initiate_connection()
        sock.sendall(conn.data_to_send())
        for body in bodies:
            sid = conn.get_next_available_stream_id()
            conn.send_headers(sid, GRPC_HEADERS)
            status = None

            def receive() -> str | None:
                data = sock.recv(65536)
                assert data, "the server closed the connection"
                found = None
                for e in conn.receive_data(data):
                    if isinstance(e, h2.events.TrailersReceived | h2.events.ResponseReceived):
                        found = dict(e.headers).get("grpc-status", found)
                sock.sendall(conn.data_to_send())
                return found

            sent = 0
            while sent < len(body):  # in frames, within the server's flow-control windows
                room = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size)
                if room <= 0:
                    status = receive() or status
                    continue
                chunk = body[sent : sent + room]
                sent += len(chunk)
                conn.send_data(sid, chunk, end_stream=sent == len(body))
                sock.sendall(conn.data_to_send())
            while status is None:
                status = receive()
            statuses.append(status)
    return statuses


def test_a_call_answered_at_once_takes_no_turn_of_the_loop_after_its_answer(
    tmp_path: Path, native: None
) -> None:
    """A call the pipeline takes without waiting costs the server two turns of its loop (the
    read; then the call's task, its answer and the write): none more once it is over (its
    task is dropped by its last step, not by a done callback run in a turn of its own: one
    ``epoll_wait`` and one callback a call less). The client is in another thread, its calls
    one after the other, so that each turn of the loop is the server's."""
    selector = _CountingSelector()
    calls = 40

    async def run() -> float:
        port = free_port()
        async with running_service(config(port), tmp_path) as service:
            bodies = [framed(request(1, name=f"c{i}-")) for i in range(calls + 1)]
            assert await asyncio.to_thread(_calls_one_after_another, port, bodies[:1]) == ["0"]
            await wait_until(lambda: accepted(service) == 1)
            before = selector.selects
            done = asyncio.get_running_loop().run_in_executor(
                None, _calls_one_after_another, port, bodies[1:]
            )
            assert await done == ["0"] * calls
            turns = (selector.selects - before) / calls
            await wait_until(lambda: accepted(service) == calls + 1)
            return turns

    with asyncio.Runner(loop_factory=lambda: asyncio.SelectorEventLoop(selector)) as runner:
        turns = runner.run(run())
    assert turns < 2.6, turns
