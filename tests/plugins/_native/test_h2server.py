"""The HTTP/2 sessions of the native gRPC server (``plugins/_native/_h2server.c``), driven by a
real HTTP/2 client state machine (the ``h2`` library) in memory."""

from __future__ import annotations

import itertools
import random
import sys
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import hpack
import pytest
from hyperframe.frame import HeadersFrame, SettingsFrame

from tests.plugins._native_support import require_native

h2server = require_native("_h2server")

PATH = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def headers(path: str = PATH, content_type: str = "application/grpc", **extra: str) -> list:
    out = [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", "127.0.0.1"),
        ("content-type", content_type),
        ("te", "trailers"),
    ]
    return out + list(extra.items())


def framed(message: bytes, compressed: bool = False) -> bytes:
    return bytes([int(compressed)]) + len(message).to_bytes(4, "big") + message


class Pair:
    """A client (h2) and a server session, connected in memory."""

    def __init__(
        self,
        max_message: int = 1 << 20,
        max_streams: int = 100,
        max_buffered: int = -1,
        collect: bool = False,
        **limits: Any,
    ) -> None:
        self.client = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        self.client.initiate_connection()
        self.server: Any = h2server.Session(
            max_message=max_message,
            max_concurrent_streams=max_streams,
            stream_window=1 << 20,
            connection_window=1 << 24,
            max_buffered=max_buffered,
            headers=collect,
            **limits,
        )
        self.events: list[Any] = []
        self.calls: list[tuple] = []
        self.pump()

    def pump(self) -> list[tuple]:
        """Exchange bytes until both sides are quiet; returns the calls completed meanwhile."""
        new: list[tuple] = []
        for _ in range(100):
            out = self.client.data_to_send()
            if out:
                new += self.server.feed(out)
            back = self.server.data_to_send()
            if back:
                self.events += self.client.receive_data(back)
            if not out and not back:
                break
        self.calls += new
        return new

    def call(self, body: bytes, **kw: Any) -> int:
        sid = int(self.client.get_next_available_stream_id())
        self.client.send_headers(sid, headers(**kw))
        self.client.send_data(sid, body, end_stream=True)
        return sid

    def response(self, sid: int) -> dict[str, Any]:
        """What the client received on a stream: headers, data, trailers, ended, reset."""
        out: dict[str, Any] = {"headers": {}, "data": b"", "trailers": {}, "ended": False}
        for ev in self.events:
            if getattr(ev, "stream_id", None) != sid:
                continue
            if isinstance(ev, h2.events.ResponseReceived):
                out["headers"] = dict(ev.headers)
            elif isinstance(ev, h2.events.DataReceived):
                out["data"] += ev.data
            elif isinstance(ev, h2.events.TrailersReceived):
                out["trailers"] = dict(ev.headers)
            elif isinstance(ev, h2.events.StreamEnded):
                out["ended"] = True
            elif isinstance(ev, h2.events.StreamReset):
                out["reset"] = ev.error_code
        return out


def test_a_call_arrives_and_is_answered() -> None:
    p = Pair()
    sid = p.call(framed(b"\x0a\x00"))
    (call,) = p.pump()
    assert call == (sid, PATH, "application/grpc", "", 0, b"\x0a\x00")
    assert p.server.open_streams == 1
    assert p.server.respond(sid, 0) is True
    p.pump()
    r = p.response(sid)
    assert r["headers"] == {":status": "200", "content-type": "application/grpc"}
    assert r["data"] == framed(b"")
    assert r["trailers"] == {"grpc-status": "0"}
    assert r["ended"]
    assert p.server.open_streams == 0
    assert p.server.respond(sid, 0) is False  # gone: answered already


def test_errors_are_trailers_only_with_message_and_details() -> None:
    p = Pair()
    sid = p.call(framed(b""))
    p.pump()
    assert p.server.respond(sid, 14, b"busy %25", None, b"AAEC") is True
    p.pump()
    r = p.response(sid)
    assert r["headers"] == {
        ":status": "200",
        "content-type": "application/grpc",
        "grpc-status": "14",
        "grpc-message": "busy %25",
        "grpc-status-details-bin": "AAEC",
    }
    assert r["data"] == b"" and r["trailers"] == {} and r["ended"]


def test_a_bare_http_status() -> None:
    p = Pair()
    sid = p.call(b"{}", content_type="application/json")
    (call,) = p.pump()
    assert call[2] == "application/json"
    p.server.respond(sid, 0, http_status=415)
    p.pump()
    r = p.response(sid)
    assert r["headers"] == {":status": "415"} and r["ended"]


def test_a_body_split_in_frames_and_the_compressed_flag() -> None:
    p = Pair()
    message = bytes(range(256)) * 300  # 76,800 bytes: several DATA frames
    sid = int(p.client.get_next_available_stream_id())
    p.client.send_headers(sid, headers(**{"grpc-encoding": "gzip"}))
    body = framed(message, compressed=True)
    for i in range(0, len(body), 10_000):
        p.client.send_data(sid, body[i : i + 10_000])
        p.pump()
    assert p.calls == []
    p.client.end_stream(sid)
    (call,) = p.pump()
    assert call == (sid, PATH, "application/grpc", "gzip", 1, message)


@pytest.mark.parametrize(
    "body",
    [b"", b"\x00\x00\x00", framed(b"abc")[:-1], framed(b"abc") + b"x", b"\x02" + framed(b"a")[1:]],
    ids=["empty", "short prefix", "truncated", "trailing bytes", "bad flag"],
)
def test_a_body_that_is_not_one_message(body: bytes) -> None:
    p = Pair()
    sid = p.call(body)
    (call,) = p.pump()
    assert call == (sid, PATH, "application/grpc", "", h2server.FRAMING, None)


@pytest.mark.parametrize("size", [0, 1, 16_384, 262_144, 262_145, 700_001])
def test_a_message_received_in_pieces_of_any_size(size: int) -> None:
    """The message goes into the bytes handed out as it arrives (sized from its gRPC prefix,
    grown past the first allocation of 256 KiB): the prefix split across frames, the
    message in odd pieces, the bytes exactly those sent."""
    p = Pair()
    message = random.Random(size).randbytes(size)
    body = framed(message)
    sid = int(p.client.get_next_available_stream_id())
    p.client.send_headers(sid, headers())
    cuts = [0, 1, 3, 5, 6, *range(7, len(body), 12_347), len(body)]
    for a, b in itertools.pairwise(cuts):
        if b > a:
            p.client.send_data(sid, body[a:b])
            p.pump()
    assert p.calls == []
    p.client.end_stream(sid)
    (call,) = p.pump()
    assert call == (sid, PATH, "application/grpc", "", 0, message)
    assert p.server.buffered == 0


@pytest.mark.parametrize(
    "body",
    [
        framed(b"m" * 300_000) + b"x",  # more than the prefix said, past the first allocation
        framed(b"m" * 300_000)[:-1],  # less
        b"\x00" + (2000).to_bytes(4, "big") + b"m" * 100,  # a length over max_message, cut short
    ],
    ids=["trailing bytes", "truncated", "length over the limit"],
)
def test_a_large_body_that_is_not_one_message(body: bytes) -> None:
    p = Pair(max_message=1 << 20) if len(body) > 1000 else Pair(max_message=1000)
    sid = int(p.client.get_next_available_stream_id())
    p.client.send_headers(sid, headers())
    for i in range(0, len(body), 16_000):
        p.client.send_data(sid, body[i : i + 16_000])
        p.pump()
    p.client.end_stream(sid)
    (call,) = p.pump()
    assert call == (sid, PATH, "application/grpc", "", h2server.FRAMING, None)
    assert p.server.buffered == 0


def test_a_message_over_the_limit_is_discarded_as_it_arrives() -> None:
    p = Pair(max_message=1000)
    sid = p.call(framed(b"x" * 1000))  # exactly the limit
    ok = p.call(framed(b"y" * 3000))
    calls = p.pump()
    assert calls == [
        (sid, PATH, "application/grpc", "", 0, b"x" * 1000),
        (ok, PATH, "application/grpc", "", h2server.TOO_LARGE, 3005),
    ]


def test_unfinished_request_data_per_connection_is_bounded() -> None:
    p = Pair(max_message=1000, max_buffered=1500)
    first = int(p.client.get_next_available_stream_id())
    p.client.send_headers(first, headers())
    p.client.send_data(first, b"\x00\x00\x00\x03\x84" + b"a" * 895)  # 900 of 905 bytes
    second = int(p.client.get_next_available_stream_id())
    p.client.send_headers(second, headers())
    p.client.send_data(second, b"\x00\x00\x00\x03\x84" + b"b" * 895)
    assert p.pump() == []
    assert p.server.buffered == 900 and p.server.refused == 1
    assert p.response(second).get("reset") == h2.errors.ErrorCodes.REFUSED_STREAM
    p.client.send_data(first, b"a" * 5, end_stream=True)
    (call,) = p.pump()
    assert call[0] == first and call[5] == b"a" * 900
    assert p.server.buffered == 0
    third = p.call(framed(b"c" * 1000))  # room again
    (call,) = p.pump()
    assert call == (third, PATH, "application/grpc", "", 0, b"c" * 1000)


def test_many_concurrent_streams_and_answers_in_any_order() -> None:
    p = Pair()
    sids = [p.call(framed(str(i).encode())) for i in range(50)]
    calls = p.pump()
    assert [c[0] for c in calls] == sids
    assert [c[5] for c in calls] == [str(i).encode() for i in range(50)]
    for sid in reversed(sids):
        p.server.respond(sid, 0)
    p.pump()
    assert all(p.response(s)["trailers"] == {"grpc-status": "0"} for s in sids)
    assert p.server.open_streams == 0


def test_a_stream_reset_by_the_client_is_forgotten() -> None:
    p = Pair()
    sid = int(p.client.get_next_available_stream_id())
    p.client.send_headers(sid, headers())
    p.client.send_data(sid, b"\x00\x00\x00\x00\x10half")
    p.pump()
    assert p.server.open_streams == 1
    p.client.reset_stream(sid)
    assert p.pump() == []
    assert p.server.open_streams == 0
    # reset after its body ended: the answer has nowhere to go
    sid2 = p.call(framed(b"z"))
    p.pump()
    p.client.reset_stream(sid2)
    p.pump()
    assert p.server.respond(sid2, 0) is False
    assert p.server.open_streams == 0


# -- headers mode: a receiver with an authenticator ----------------------------------------------


def test_headers_mode_hands_out_headers_before_the_body() -> None:
    p = Pair(collect=True)
    sid = int(p.client.get_next_available_stream_id())
    p.client.send_headers(sid, headers(authorization="Bearer abc", **{"x-tenant": "t1"}))
    assert p.pump() == []
    ((hsid, got),) = p.server.take_heads()
    assert hsid == sid
    assert got == {
        "content-type": "application/grpc",
        "te": "trailers",
        "authorization": "Bearer abc",
        "x-tenant": "t1",
    }
    assert p.server.take_heads() == []
    # admitted before its body: the call comes from feed(), with the tag
    assert p.server.admit(sid, {"user": "u"}) is None
    p.client.send_data(sid, framed(b"m"), end_stream=True)
    (call,) = p.pump()
    assert call == (sid, PATH, "application/grpc", "", 0, b"m", {"user": "u"})
    assert p.server.admit(sid, None) is None  # once only


def test_headers_mode_holds_a_call_whose_body_ended_until_admitted() -> None:
    p = Pair(collect=True)
    sid = p.call(framed(b"body"))
    assert p.pump() == []  # ended, but not admitted
    assert p.server.buffered == 9
    ((hsid, _),) = p.server.take_heads()
    call = p.server.admit(hsid, "tag")
    assert call == (sid, PATH, "application/grpc", "", 0, b"body", "tag")
    assert p.server.buffered == 0
    p.server.respond(sid, 0)
    p.pump()
    assert p.response(sid)["trailers"] == {"grpc-status": "0"}


def test_headers_mode_refusal_before_the_body_discards_it() -> None:
    p = Pair(collect=True)
    sid = int(p.client.get_next_available_stream_id())
    p.client.send_headers(sid, headers())
    p.client.send_data(sid, b"\x00\x00\x01\x00\x00" + b"a" * 1000)
    p.pump()
    assert p.server.buffered == 1005
    (_,) = p.server.take_heads()
    assert p.server.respond(sid, 16, b"missing credentials") is True
    assert p.server.buffered == 0
    p.pump()
    r = p.response(sid)
    assert r["headers"]["grpc-status"] == "16" and r["ended"]
    # then RST_STREAM NO_ERROR: the client may stop sending the body (RFC 9113 8.1)
    assert r["reset"] == h2.errors.ErrorCodes.NO_ERROR
    assert p.server.open_streams == 0
    assert p.server.buffered == 0
    assert p.server.admit(sid, None) is None
    # a refused call whose body had ended: its held body is dropped too
    sid2 = p.call(framed(b"x" * 100))
    p.pump()
    (_,) = p.server.take_heads()
    assert p.server.buffered == 105
    assert p.server.respond(sid2, 16, b"no") is True
    assert p.server.buffered == 0
    assert p.server.admit(sid2, None) is None
    p.pump()
    assert "reset" not in p.response(sid2)  # its body had ended: nothing to stop
    assert p.server.open_streams == 0


def test_headers_mode_refusal_discards_data_still_in_flight() -> None:
    p = Pair(collect=True)
    sid = int(p.client.get_next_available_stream_id())
    p.client.send_headers(sid, headers())
    p.client.send_data(sid, b"\x00\x00\x01\x00\x00" + b"a" * 100)
    p.pump()
    (_,) = p.server.take_heads()
    p.server.respond(sid, 16, b"no")
    # the client sends more before it reads the answer
    p.client.send_data(sid, b"b" * 5000)
    p.server.feed(p.client.data_to_send())
    assert p.server.buffered == 0 and p.server.take_heads() == []


def test_headers_mode_bounds_the_headers_kept() -> None:
    # a header list larger than headers mode keeps, within max_header_list_size
    p = Pair(collect=True, max_header_list_size=1 << 16)
    sid = int(p.client.get_next_available_stream_id())
    many = {f"x-h{i:03d}": "v" for i in range(100)}
    p.client.send_headers(sid, headers(**many), end_stream=True)
    p.pump()
    ((_, got),) = p.server.take_heads()
    assert len(got) == 64  # MAX_HEADERS
    sid2 = int(p.client.get_next_available_stream_id())
    p.client.send_headers(
        sid2, headers(**{"x-big": "a" * 10_000, "x-bigger": "b" * 10_000, "x-small": "c"})
    )
    p.pump()
    ((_, got),) = p.server.take_heads()
    assert "x-big" in got and "x-bigger" not in got and got["x-small"] == "c"
    # beyond max_header_list_size the call is reset before Python sees its headers
    p = Pair(collect=True)
    sid = int(p.client.get_next_available_stream_id())
    p.client.send_headers(sid, headers(**{"x-big": "a" * 10_000, "x-bigger": "b" * 10_000}))
    p.pump()
    assert p.server.take_heads() == []
    assert p.server.stats[2] == 1  # header_refused


def test_headers_mode_forgets_a_stream_reset_while_held() -> None:
    p = Pair(collect=True)
    sid = p.call(framed(b"held"))
    p.pump()
    (_,) = p.server.take_heads()
    p.client.reset_stream(sid)
    p.pump()
    assert p.server.open_streams == 0 and p.server.buffered == 0
    assert p.server.admit(sid, object()) is None


def test_goaway_refuses_new_streams_and_answers_the_others() -> None:
    p = Pair()
    sid = p.call(framed(b"a"))
    p.pump()
    p.server.goaway()
    p.pump()
    (end,) = [e for e in p.events if isinstance(e, h2.events.ConnectionTerminated)]
    assert end.last_stream_id == sid and end.error_code == 0
    assert p.server.want_io() is True  # the call received is still to be answered
    # (the h2 client closes on GOAWAY; grpc clients finish the calls up to last_stream_id)
    assert p.server.respond(sid, 0) is True
    answer = p.server.data_to_send()
    assert framed(b"") in answer
    assert p.server.open_streams == 0
    assert p.server.want_io() is False


def test_garbage_is_a_protocol_error() -> None:
    s = h2server.Session(
        max_message=100, max_concurrent_streams=1, stream_window=65535, connection_window=65535
    )
    with pytest.raises(ValueError, match="HTTP/2"):
        s.feed(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert s.want_io() is False


def test_limits_are_checked() -> None:
    with pytest.raises(ValueError):
        h2server.Session(
            max_message=1, max_concurrent_streams=0, stream_window=65535, connection_window=65535
        )
    with pytest.raises(ValueError):
        h2server.Session(
            max_message=1, max_concurrent_streams=1, stream_window=1, connection_window=65535
        )


@pytest.mark.parametrize("collect", [False, True], ids=["plain", "headers mode"])
def test_random_corruption_never_crashes(collect: bool) -> None:
    rng = random.Random(7)
    good = Pair()
    good.call(framed(b"\x0a\x02ab"), authorization="Basic dTpw", **{"x-a": "b"})
    good.call(framed(b"\x0a\x02cd"))
    wire = good.client.data_to_send()
    for i in range(2000):
        data = bytearray(wire)
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        cut = rng.randint(1, len(data))
        s = h2server.Session(
            max_message=1 << 16,
            max_concurrent_streams=10,
            stream_window=65535,
            connection_window=65535,
            headers=collect,
        )
        try:
            calls = s.feed(bytes(data[:cut]))
            for n, (sid, heads) in enumerate(s.take_heads()):
                assert all(isinstance(k, str) and isinstance(v, str) for k, v in heads.items())
                if (i + n) % 3 == 0:  # refused, before or after its body ended
                    s.respond(sid, 16, b"no")
                else:
                    more = s.admit(sid, ("tag", sid))
                    calls += [more] if more is not None else []
            for call in calls:
                assert (isinstance(call[0], int) and call[1].startswith("/")) or call[1] == ""
                assert len(call) == (7 if collect else 6)
                s.respond(call[0], 0)
        except ValueError:
            continue
        s.data_to_send()


# -- the limits of the server sessions -------------------------------------------------------
def goaway(p: Pair) -> Any:
    ends = [e for e in p.events if isinstance(e, h2.events.ConnectionTerminated)]
    return ends[-1] if ends else None


def test_the_preface_and_first_settings_establish_the_session() -> None:
    s = h2server.Session(
        max_message=100, max_concurrent_streams=1, stream_window=65535, connection_window=65535
    )
    assert s.established is False
    s.feed(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    assert s.established is False
    s.feed(SettingsFrame(0).serialize())
    assert s.established is True


def test_a_header_block_over_the_limit_resets_the_call() -> None:
    p = Pair(max_header_list_size=1024)
    big = p.client.get_next_available_stream_id()
    p.client.send_headers(big, headers(**{"x-big": "a" * 2000}))
    p.client.send_data(big, framed(b"x"), end_stream=True)
    # many references to one indexed field: small on the wire, large once decoded
    bomb = p.client.get_next_available_stream_id()
    p.client.send_headers(bomb, headers() + [("x-bomb", "b" * 200)] * 10)
    p.client.send_data(bomb, framed(b"x"), end_stream=True)
    assert p.pump() == []
    assert p.response(big)["reset"] == h2.errors.ErrorCodes.INTERNAL_ERROR
    assert p.response(bomb)["reset"] == h2.errors.ErrorCodes.INTERNAL_ERROR
    assert p.server.stats[2] == 2 and p.server.notices >= 2
    ok = p.call(framed(b"fine"))
    (call,) = p.pump()
    assert call[0] == ok and call[5] == b"fine"


def test_resets_over_the_rate_get_goaway_enhance_your_calm() -> None:
    p = Pair(reset_rate=5.0, reset_burst=10.0)
    for _ in range(8):  # within the burst
        sid = p.client.get_next_available_stream_id()
        p.client.send_headers(sid, headers())
        p.client.reset_stream(sid)
    p.pump()
    assert goaway(p) is None and p.server.stats[4] == 0
    for _ in range(10):
        sid = p.client.get_next_available_stream_id()
        p.client.send_headers(sid, headers())
        p.client.reset_stream(sid)
    p.pump()
    end = goaway(p)
    assert end is not None and end.error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
    assert end.additional_data == b"too_many_resets"
    assert p.server.stats[4] == 1  # CALM_RESETS
    assert p.server.want_io() is False  # the GOAWAY is written: the connection is over
    assert p.server.feed(b"anything at all") == []  # nothing more is read


def test_a_call_reset_in_the_feed_that_completed_it_is_not_handed_out() -> None:
    p = Pair()
    sid = p.call(framed(b"gone"))
    p.client.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
    kept = p.call(framed(b"kept"))
    calls = p.pump()
    assert [c[0] for c in calls] == [kept]
    assert p.server.stats[1] == 1  # cancelled
    # handed out, then reset before its answer: no longer pending
    assert p.server.pending(kept) is True
    p.client.reset_stream(kept, h2.errors.ErrorCodes.CANCEL)
    p.pump()
    assert p.server.pending(kept) is False
    assert p.server.pending(0) is False and p.server.pending(999) is False


def test_pings_closer_than_min_time_get_goaway_too_many_pings() -> None:
    p = Pair(ping_min_time=60.0, permit_ping_without_stream=True)
    for i in range(3):  # the 2nd and 3rd are strikes; the limit is more than two
        p.client.ping(b"%08d" % i)
        p.pump()
    assert goaway(p) is None
    p.client.ping(b"%08d" % 3)
    p.pump()
    end = goaway(p)
    assert end is not None and end.error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
    assert end.additional_data == b"too_many_pings"
    assert p.server.stats[4] == 2  # CALM_PINGS
    # answers reset the count, as grpc-go does: a client pinging between calls is fine
    q = Pair(ping_min_time=60.0, permit_ping_without_stream=True)
    for i in range(6):
        sid = q.call(framed(b"x"))
        q.pump()
        q.server.respond(sid, 0)
        q.client.ping(b"%08d" % i)
        q.pump()
    assert goaway(q) is None


def test_server_pings_and_their_acks() -> None:
    p = Pair()
    assert p.server.ping() is True
    assert p.server.ping_outstanding is True
    assert p.server.ping() is False  # one at a time
    p.pump()  # the h2 client acknowledges
    assert p.server.ping_outstanding is False


def test_expire_resets_late_requests_and_reports_late_header_blocks() -> None:
    p = Pair()
    p.server.clock = 1000
    late = p.client.get_next_available_stream_id()
    p.client.send_headers(late, headers())
    p.client.send_data(late, b"\x00\x00\x00\x00\x10half")
    p.pump()
    p.server.clock = 5000
    fresh = p.client.get_next_available_stream_id()
    p.client.send_headers(fresh, headers())
    p.pump()
    assert p.server.expire(-1, 2000) is False
    p.pump()
    assert p.response(late)["reset"] == h2.errors.ErrorCodes.CANCEL
    assert "reset" not in p.response(fresh)
    assert p.server.stats[3] == 1 and p.server.buffered == 0
    # a header block begun and never ended (no CONTINUATION): the connection must go
    s = h2server.Session(
        max_message=100, max_concurrent_streams=5, stream_window=65535, connection_window=65535
    )
    s.clock = 100
    block = hpack.Encoder().encode(headers())
    s.feed(PREFACE + SettingsFrame(0).serialize() + HeadersFrame(1, data=block).serialize())
    assert s.open_streams == 1
    assert s.expire(99, -1) is False
    assert s.expire(100, -1) is True


def test_refuse_unfinished_frees_what_the_connection_holds() -> None:
    p = Pair()
    sids = []
    for _ in range(3):
        sid = p.client.get_next_available_stream_id()
        p.client.send_headers(sid, headers())
        p.client.send_data(sid, b"\x00\x00\x00\x10\x00" + b"z" * 1000)
        sids.append(sid)
    done = p.call(framed(b"complete"))
    (call,) = p.pump()
    assert call[0] == done and p.server.buffered == 3 * 1005
    assert p.server.refuse_unfinished() == 3 * 1005
    p.pump()
    assert p.server.buffered == 0 and p.server.refused == 3
    assert all(p.response(s)["reset"] == h2.errors.ErrorCodes.REFUSED_STREAM for s in sids)
    assert p.server.respond(done, 0) is True  # the complete call is still answered
    # max_buffered can be lowered: new data is then refused
    p.server.max_buffered = 0
    sid = p.client.get_next_available_stream_id()
    p.client.send_headers(sid, headers())
    p.client.send_data(sid, b"\x00\x00\x00\x00\x05")
    p.pump()
    assert p.response(sid)["reset"] == h2.errors.ErrorCodes.REFUSED_STREAM
    with pytest.raises(ValueError):
        p.server.max_buffered = -1


def test_answers_are_counted_until_sent_and_terminate_says_why() -> None:
    p = Pair()
    sid = p.call(framed(b"a"))
    p.pump()
    p.server.respond(sid, 0)
    assert (p.server.responding, p.server.answered) == (1, 0)
    p.pump()
    assert (p.server.responding, p.server.answered) == (0, 1)
    p.server.terminate("max_connection_idle")
    p.pump()
    end = goaway(p)
    assert end.error_code == h2.errors.ErrorCodes.NO_ERROR
    assert end.additional_data == b"max_connection_idle"
    assert p.server.want_io() is False


def test_new_limits_are_checked() -> None:
    base = {
        "max_message": 1,
        "max_concurrent_streams": 1,
        "stream_window": 65535,
        "connection_window": 65535,
    }
    for bad in (
        {"max_header_list_size": 10},
        {"reset_rate": -1.0},
        {"reset_burst": 0.0},
        {"ping_min_time": -1.0},
    ):
        with pytest.raises(ValueError):
            h2server.Session(**base, **bad)


def test_random_client_behaviour_under_tight_limits_never_crashes() -> None:
    """Random sequences of what a hostile client can do (calls cut short, resets, pings,
    large and repeated headers, settings), with the owner's calls (expire, refuse_unfinished,
    pending, respond, ping, terminate) in between: no crash, consistent counts."""
    rng = random.Random(13)
    for _ in range(300):
        p = Pair(
            max_message=2000,
            max_streams=8,
            max_buffered=4000,
            max_header_list_size=1024,
            reset_rate=20.0,
            reset_burst=15.0,
            ping_min_time=1.0,
        )
        try:
            for step in range(rng.randint(5, 60)):
                op = rng.randrange(10)
                c = p.client
                if op <= 3 and c.open_outbound_streams < 8:
                    sid = c.get_next_available_stream_id()
                    extra = {"x-h": "v" * rng.choice((1, 300, 900))}
                    c.send_headers(sid, headers(**extra))
                    body = framed(b"q" * rng.choice((0, 10, 1500, 2500)))
                    c.send_data(
                        sid, body[: rng.randint(0, len(body))], end_stream=rng.random() < 0.6
                    )
                elif op == 4 and c.open_outbound_streams:
                    sid = rng.choice(list(c.streams))
                    if not c.streams[sid].closed:
                        c.reset_stream(sid)
                elif op == 5:
                    c.ping(rng.randbytes(8))
                elif op == 6:
                    p.server.clock = step * 100
                    p.server.expire(rng.randint(-1, step * 100), rng.randint(-1, step * 100))
                elif op == 7:
                    p.server.refuse_unfinished()
                elif op == 8:
                    for call in p.calls:
                        if p.server.pending(call[0]):
                            p.server.respond(call[0], rng.choice((0, 14)), b"m", None, None)
                    p.server.ping()
                elif op == 9 and rng.random() < 0.1:
                    p.server.terminate("test")
                p.pump()
                stats = p.server.stats
                assert p.server.buffered >= 0 and p.server.responding >= 0
                assert all(n >= 0 for n in stats)
        except (h2.exceptions.ProtocolError, h2.exceptions.StreamClosedError, ValueError):
            continue


# -- client sessions, against the server sessions above ---------------------------------------
CLIENT_HEADERS = [
    (b":method", b"POST"),
    (b":scheme", b"http"),
    (b":path", PATH.encode()),
    (b":authority", b"127.0.0.1:4317"),
    (b"content-type", b"application/grpc"),
    (b"te", b"trailers"),
]


class Both:
    """A native client session and a native server session, connected in memory."""

    def __init__(self) -> None:
        self.client: Any = h2server.ClientSession(stream_window=1 << 20, connection_window=1 << 24)
        self.server: Any = h2server.Session(
            max_message=1 << 20, max_concurrent_streams=100, stream_window=1 << 20,
            connection_window=1 << 24,
        )  # fmt: skip
        self.calls: list[tuple] = []
        self.ended: list[tuple] = []

    def pump(self) -> None:
        for _ in range(100):
            out = self.client.data_to_send()
            self.ended += self.client.take_done()
            if out:
                self.calls += self.server.feed(out)
            back = self.server.data_to_send()
            if back:
                self.ended += self.client.feed(back)
            if not out and not back:
                break


def test_client_calls_answered_ok_with_errors_and_reset() -> None:
    b = Both()
    ok = b.client.request(CLIENT_HEADERS, b"\x0a\x00", False)
    err = b.client.request(CLIENT_HEADERS, b"abc", True)
    gone = b.client.request(CLIENT_HEADERS, b"x" * 70_000, False)
    assert b.client.open_calls == 3
    b.pump()
    assert [(c[0], c[4], c[5]) for c in b.calls] == [
        (ok, 0, b"\x0a\x00"),
        (err, 1, b"abc"),
        (gone, 0, b"x" * 70_000),
    ]
    b.server.respond(ok, 0)
    b.server.respond(err, 14, b"busy %25", None, b"AAEC")
    b.client.cancel(gone)
    b.pump()
    by_id = {e[0]: e for e in b.ended}
    assert by_id[ok] == (ok, 200, 0, b"", None, framed(b""), 0)
    assert by_id[err] == (err, 200, 14, b"busy %25", b"AAEC", b"", 0)
    assert by_id[gone][1:3] == (0, -1) and by_id[gone][6] == 8  # CANCEL
    assert b.client.open_calls == 0 and b.server.open_streams == 0
    assert b.client.usable() is True


def test_client_after_goaway_takes_no_new_call() -> None:
    b = Both()
    sid = b.client.request(CLIENT_HEADERS, b"a", False)
    b.pump()
    b.server.goaway()
    b.pump()
    assert b.client.usable() is False
    b.server.respond(sid, 0)
    b.pump()
    assert [e[:3] for e in b.ended] == [(sid, 200, 0)]  # the call received is still answered
    late = b.client.request(CLIENT_HEADERS, b"b", False)
    b.pump()
    assert b.ended[-1] == (late, 0, -1, b"", None, b"", 7)  # REFUSED_STREAM: retry elsewhere


def test_client_protocol_garbage() -> None:
    c = h2server.ClientSession(stream_window=65535, connection_window=65535)
    sid = c.request(CLIENT_HEADERS, b"a", False)
    c.data_to_send()
    try:
        ended = c.feed(b"HTTP/1.1 400 Bad Request\r\n\r\n")
    except ValueError:
        ended = []
    c.data_to_send()  # the GOAWAY saying why
    ended += c.take_done()
    assert c.usable() is False and c.want_io() is False
    assert [e[0] for e in ended] in ([], [sid])


def test_client_sends_the_callers_message_where_it_is_and_lets_it_go_once_sent() -> None:
    """A request holds the caller's message (a reference, no copy of it made) until its last
    byte was handed out by data_to_send(), then releases it; a call cancelled or a session
    dropped before that releases it too. What arrives is the message, framed, whole."""
    b = Both()
    message = bytes(range(256)) * 1200  # 307,200 bytes: many DATA frames, window updates
    base = sys.getrefcount(message)
    sid = b.client.request(CLIENT_HEADERS, message, True)
    assert sys.getrefcount(message) == base + 1  # held by the call, not copied
    b.pump()
    assert [(c[0], c[4], c[5]) for c in b.calls] == [(sid, 1, message)]
    assert sys.getrefcount(message) == base  # sent: released
    b.server.respond(sid, 0)
    b.pump()
    assert [e[:3] for e in b.ended] == [(sid, 200, 0)]

    held = bytes(100_000)
    base = sys.getrefcount(held)
    gone = b.client.request(CLIENT_HEADERS, held, False)
    b.client.cancel(gone)
    b.pump()
    assert sys.getrefcount(held) == base
    c = h2server.ClientSession(stream_window=65535, connection_window=65535)
    c.request(CLIENT_HEADERS, held, False)
    c.data_to_send()  # the first 64 KiB: the rest waits for the server's window
    assert sys.getrefcount(held) == base + 1
    del c
    assert sys.getrefcount(held) == base
