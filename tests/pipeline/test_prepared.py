"""Prepared payloads (pipeline/prepared.py): merged, split, copied, sized and stored by their
chunks; never read as OTLP."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest

from pipeline import Logs, PreparedPayload, PreparedQueueCodec, Signal, Traces


class Lines(PreparedPayload, Logs):
    """A test protocol: chunks are lines, joined by newlines."""

    __slots__ = ()
    description = "records prepared as lines"

    @classmethod
    def join_chunks(cls, chunks: Sequence[bytes]) -> bytes:
        return b"\n".join(chunks)


class PreparedSpans(PreparedPayload, Traces):
    __slots__ = ()
    description = "spans prepared for a test"


class LinesCodec(PreparedQueueCodec):
    payload_class = Lines


def test_merge_concatenates_the_chunks_without_copying_them() -> None:
    first, second = b"a" * 1000, b"b" * 10
    a = Lines([first, b"x"], 3, [2, 1])
    b = Lines([second], 4, [4])
    a.carry_acks(["tok-a", "shared"])
    b.carry_acks(["shared", "tok-b"])
    merged = Lines.merge([a, b])
    assert isinstance(merged, Lines)
    assert merged.chunks == [first, b"x", second] and merged.counts == [2, 1, 4]
    assert merged.chunks[0] is first and merged.chunks[2] is second  # not copied
    assert merged.item_count() == 7 and merged.nbytes == 1011
    assert merged.ack_tokens == ("tok-a", "shared", "tok-b")
    assert Lines.merge([a]) is a
    # one part of unknown counts (read back from an old queue entry): the merge has none
    assert Lines.merge([a, Lines([b"y"], 2)]).counts is None  # type: ignore[attr-defined]
    with pytest.raises(TypeError, match="cannot merge records prepared as lines with Logs"):
        Lines.merge([a, Logs(b"")])


def test_merge_keeps_whole_traces_only_when_every_part_has_it() -> None:
    a, b = PreparedSpans([b"1"], 1, [1]), PreparedSpans([b"2"], 1, [1])
    a.whole_traces = b.whole_traces = True
    assert PreparedSpans.merge([a, b]).whole_traces
    assert PreparedSpans.merge([a, b]).copy().whole_traces
    b.whole_traces = False
    assert not PreparedSpans.merge([a, b]).whole_traces


def test_split_between_chunks_and_a_large_chunk_stays_whole() -> None:
    p = Lines([b"a", b"bb", b"ccc", b"dddd"], 10, [1, 2, 3, 4])
    p.carry_acks(["tok"])
    parts = p.split(3)
    assert [(q.chunks, q.item_count()) for q in parts] == [  # type: ignore[attr-defined]
        ([b"a", b"bb"], 3),
        ([b"ccc"], 3),
        ([b"dddd"], 4),  # more than max_size: alone, not cut
    ]
    assert all(isinstance(q, Lines) and q.ack_tokens == ("tok",) for q in parts)
    assert [q.item_count() for q in p.split(6, first=1)] == [1, 5, 4]
    assert p.split(10) == [p] and p.split(0) == [p]
    assert Lines([b"a", b"b"], 2).split(1)[0].item_count() == 2  # counts unknown: whole
    p.done = 1  # partly sent: resumes as it is
    assert p.split(1) == [p]


def test_copy_shares_chunks_progress_and_the_joined_body() -> None:
    p = Lines([b"a", b"b"], 2, [1, 1])
    p.carry_acks(["tok"])
    assert p.joined() == b"a\nb"
    p.done = 1
    dup = p.copy()
    assert isinstance(dup, Lines) and dup is not p
    assert dup.chunks is p.chunks and dup.counts == [1, 1] and dup.done == 1
    assert dup.item_count() == 2 and dup.nbytes == 2 and dup.ack_tokens == ("tok",)
    assert dup.joined() is p.joined()


def test_joined_is_computed_once_and_a_single_chunk_is_sent_as_it_is() -> None:
    single = b"only"
    assert Lines([single], 1, [1]).joined() is single
    merged = Lines.merge([Lines([b"a"], 1, [1]), Lines([b"b"], 1, [1])])
    assert isinstance(merged, Lines)
    assert merged.joined() == b"a\nb" and merged.joined() is merged.joined()
    with pytest.raises(NotImplementedError, match="one by one"):
        PreparedSpans([b"1", b"2"], 2, [1, 1]).joined()


def test_a_prepared_payload_cannot_be_read_as_otlp() -> None:
    p = Lines([b"a", b"b"], 2, [1, 1])
    for read in (p.to_bytes, p.encoded_parts, p.message, p.mutable_message, p.validate):
        with pytest.raises(TypeError, match="records prepared as lines have no OTLP encoding"):
            read()
    assert repr(p) == "Lines(items=2, chunks=2, bytes=2)"
    with pytest.raises(ValueError, match="2 chunks but 1 item counts"):
        Lines([b"a", b"b"], 2, [2])


def test_the_codec_round_trips_merged_payloads() -> None:
    codec = LinesCodec(Signal.LOGS)
    merged = Lines.merge([Lines([b"a", b""], 3, [1, 2]), Lines([b"\x00" * 70000], 4, [4])])
    body = b"".join(codec.encode(merged))
    back = codec.decode(body)
    assert isinstance(back, Lines)
    assert back.chunks == [b"a", b"", b"\x00" * 70000] and back.counts == [1, 2, 4]
    assert back.item_count() == 7 and codec.count(body) == 7 and back.done == 0
    unknown = codec.decode(b"".join(codec.encode(Lines([b"x", b"y"], 5))))
    assert isinstance(unknown, Lines) and unknown.counts is None and unknown.item_count() == 5


def test_the_codec_refuses_damaged_records() -> None:
    """Every truncation, a wrong table, a huge chunk count and random flips: a ValueError (the
    helper drops the entry and counts it) or a payload as consistent as the record says."""
    codec = LinesCodec(Signal.LOGS)
    body = b"".join(codec.encode(Lines([b"first", b"second", b"third"], 6, [1, 2, 3])))
    for cut in range(len(body)):
        with pytest.raises(ValueError):
            codec.decode(body[:cut])
    with pytest.raises(ValueError, match="4294967295 chunks"):
        codec.decode(body[:8] + b"\xff\xff\xff\xff" + body[12:])
    with pytest.raises(ValueError, match="bytes"):
        codec.decode(body + b"more")
    with pytest.raises(ValueError, match="7 items, chunks hold 6"):
        codec.decode(b"\x07" + body[1:])
    with pytest.raises(ValueError, match="not a prepared queue entry"):
        codec.decode(b"\x01\x00\x00\x00[]")
    rng = random.Random(7)
    for _ in range(2000):
        damaged = bytearray(body)
        for _ in range(rng.randint(1, 4)):
            damaged[rng.randrange(len(damaged))] = rng.randrange(256)
        try:
            back = codec.decode(bytes(damaged))
        except ValueError:
            continue
        assert isinstance(back, Lines)
        assert len(back.chunks) == 3 and back.nbytes == len(body) - 36
        assert back.counts is None or sum(back.counts) == back.item_count()
