"""Payloads an exporter has already translated for its protocol, and how its persistent
sending queue stores them.

An exporter that translates each payload once, when it arrives (so that a retry resends the
same bytes, and state such as delta-to-cumulative totals advances once), hands the shared
exporter helper a :class:`PreparedPayload` instead of the OTLP payload: a list of ready
*chunks* (request bodies, datagrams, encoded requests to be joined at send time) and how many
items each holds. The helper's sending queue handles it on its own terms:

* ``sending_queue.batch`` merges prepared payloads by concatenating their chunk lists (the
  chunks themselves are not copied) and splits a batch (``max_size``) between chunks, never
  inside one: a chunk holding more than ``max_size`` items (or bytes) is a part of its own;
* ``sizer: bytes`` counts the chunks' bytes (what is sent);
* :meth:`PreparedPayload.copy` shares the chunks;
* the persistent queue stores them with a :class:`PreparedQueueCodec`.

There is no OTLP encoding behind a prepared payload: :meth:`PreparedPayload.to_bytes` (and so
``message()``, ``encoded_parts()``, ``validate()``) raises :class:`TypeError` instead of
answering an empty request, so nothing can read one as OTLP and lose its items silently.

A subclass derives from this class *and* from the payload class of its signal
(``class WriteBatch(PreparedPayload, Metrics)``), sets :attr:`PreparedPayload.description`
and, when its exporter sends the chunks of a batch as one request, overrides
:meth:`PreparedPayload.join_chunks`.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import ClassVar

from pipeline.exporterhelper import QueueCodec
from pipeline.pdata import Payload, union_acks


class PreparedPayload(Payload):
    """A payload translated for an exporter's protocol: ``chunks`` and ``counts`` (items per
    chunk; ``None`` when not known, and then the payload is never split).

    ``chunks`` and ``counts`` are never changed once the payload is built (merge, split and
    copy make new lists or share these). ``done`` is how many chunks were already delivered,
    for an exporter that sends chunk by chunk and resumes after them on a retry."""

    __slots__ = ("_joined", "chunks", "counts", "done")

    description: ClassVar[str] = "prepared items"
    """What the chunks hold, for error messages ("spans prepared for Jaeger")."""

    def __init__(
        self, chunks: list[bytes], item_count: int, counts: list[int] | None = None
    ) -> None:
        super().__init__(b"", item_count=item_count)
        if counts is not None and len(counts) != len(chunks):
            raise ValueError(f"{len(chunks)} chunks but {len(counts)} item counts")
        self.chunks = chunks
        self.counts = counts
        self.done = 0
        self._joined: bytes | None = None

    # -- the sending queue --------------------------------------------------------------------
    @classmethod
    def merge(cls, payloads: Sequence[Payload]) -> Payload:
        """The chunks of ``payloads`` (none of them sent yet) in order, in one payload; the
        acknowledgement tokens united, ``whole_traces`` kept when every part has it (as
        :meth:`Payload.merge` does)."""
        if len(payloads) == 1:
            return payloads[0]
        prepared = [cls._own(p) for p in payloads]
        known = all(p.counts is not None for p in prepared)
        merged = cls(
            [c for p in prepared for c in p.chunks],
            sum(p.item_count() for p in prepared),
            [n for p in prepared for n in p.counts or ()] if known else None,
        )
        acks = [p.ack_tokens for p in prepared if p.ack_tokens]
        if acks:
            merged.carry_acks(acks[0] if len(acks) == 1 else union_acks(acks))
        merged.whole_traces = all(p.whole_traces for p in prepared)
        return merged

    @classmethod
    def _own(cls, data: Payload) -> PreparedPayload:
        if not isinstance(data, cls):
            raise TypeError(f"cannot merge {cls.description} with {type(data).__name__}")
        return data

    def split(self, max_items: int, first: int = 0) -> list[Payload]:
        """Payloads of whole chunks, at most ``max_items`` items each (``first`` for the first
        one); a chunk is never cut, so one holding more items makes a payload of its own. Not
        split: a payload whose item counts per chunk are unknown, or one partly sent."""
        limit = first or max_items
        if (
            max_items <= 0
            or self.item_count() <= limit
            or self.counts is None
            or self.done
            or len(self.chunks) < 2
        ):
            return [self]
        cls = type(self)
        out: list[Payload] = []
        chunks: list[bytes] = []
        counts: list[int] = []
        held = 0
        for chunk, n in zip(self.chunks, self.counts, strict=True):
            if chunks and held + n > limit:
                out.append(cls(chunks, held, counts))
                chunks, counts, held, limit = [], [], 0, max_items
            chunks.append(chunk)
            counts.append(n)
            held += n
        if chunks:
            out.append(cls(chunks, held, counts))
        for part in out:  # every part holds the whole payload's durability tokens
            part.carry_acks(self.ack_tokens)
        return out

    def copy(self) -> Payload:
        """The same chunks (shared: they are never changed), tokens, flags and progress."""
        out = type(self)(self.chunks, self.item_count(), self.counts)
        out.done = self.done
        out._joined = self._joined
        out.carry_acks(self.ack_tokens)
        out.whole_traces = self.whole_traces
        return out

    @property
    def nbytes(self) -> int:
        """The chunks' size in bytes (what is sent)."""
        return sum(map(len, self.chunks))

    # -- sending ------------------------------------------------------------------------------
    def joined(self) -> bytes:
        """The chunks as one request body (:meth:`join_chunks`, computed once: a retry
        resends the same bytes); a single chunk as it is."""
        if self._joined is None:
            chunks = self.chunks
            self._joined = chunks[0] if len(chunks) == 1 else self.join_chunks(chunks)
        return self._joined

    @classmethod
    def join_chunks(cls, chunks: Sequence[bytes]) -> bytes:
        """Several chunks as one request body; for an exporter that sends them together."""
        raise NotImplementedError(f"{cls.__name__} chunks are sent one by one")

    # -- no OTLP ------------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        raise TypeError(
            f"{self.description} have no OTLP encoding: they are merged, split, copied "
            f"and stored as {type(self).__name__} (their chunks), never read as OTLP bytes"
        )

    def encoded_parts(self) -> tuple[bytes, ...]:
        return (self.to_bytes(),)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(items={self.item_count()}, chunks={len(self.chunks)}, "
            f"bytes={self.nbytes})"
        )


class PreparedQueueCodec(QueueCodec):
    """Prepared payloads (of :attr:`payload_class`) in a persistent sending queue.

    A record is the item count (little-endian u32, where every queue codec has it), a
    4-byte mark, the number of chunks, each chunk's item count (``0xFFFFFFFF`` when not
    known) and size, then the chunks. An exporter whose records had another layout before
    overrides :meth:`decode_legacy` to read those (any record without the mark)."""

    payload_class: ClassVar[type[PreparedPayload]]
    MARK = b"\xffPQ1"  # no legacy layout has these bytes at offset 4
    _RECORD = struct.Struct("<I4sI")  # items, MARK, chunks
    _CHUNK = struct.Struct("<II")  # items, size
    _UNKNOWN = 0xFFFFFFFF

    def encode(self, data: Payload) -> list[bytes]:
        assert isinstance(data, self.payload_class), type(data)
        chunks = data.chunks
        counts = data.counts if data.counts is not None else [self._UNKNOWN] * len(chunks)
        pack = self._CHUNK.pack
        table = b"".join(pack(n, len(c)) for n, c in zip(counts, chunks, strict=True))
        return [self._RECORD.pack(data.item_count(), self.MARK, len(chunks)), table, *chunks]

    def decode(self, body: bytes) -> Payload:
        """The payload of a record; :class:`ValueError` for a record that is not whole."""
        try:
            if body[4:8] != self.MARK:
                return self.decode_legacy(body)
            return self._decode(body)
        except struct.error as exc:
            raise ValueError(f"prepared queue entry: {exc}") from None

    def _decode(self, body: bytes) -> Payload:
        count, _, n = self._RECORD.unpack_from(body)
        pos = self._RECORD.size
        table_end = pos + n * self._CHUNK.size
        if table_end > len(body):
            raise ValueError(f"prepared queue entry: {n} chunks in {len(body)} bytes")
        sizes = []
        counts: list[int] | None = []
        for items, size in self._CHUNK.iter_unpack(body[pos:table_end]):
            sizes.append(size)
            if items == self._UNKNOWN:
                counts = None
            elif counts is not None:
                counts.append(items)
        if table_end + sum(sizes) != len(body):
            raise ValueError(
                f"prepared queue entry: chunks of {sum(sizes)} bytes, "
                f"{len(body) - table_end} stored"
            )
        if counts is not None and sum(counts) != count:
            raise ValueError(f"prepared queue entry: {count} items, chunks hold {sum(counts)}")
        chunks = []
        pos = table_end
        for size in sizes:
            chunks.append(body[pos : pos + size])
            pos += size
        return self.payload_class(chunks, count, counts)

    def measure(self, body: bytes) -> tuple[int, int]:
        """The items and the chunks' bytes of a stored payload; a record that cannot be read
        counts as its whole body (it is dropped, and counted, when a worker reads it back)."""
        try:
            data = self.decode(body)
        except ValueError:
            return self.count(body), len(body)
        return data.item_count(), data.nbytes

    def decode_legacy(self, body: bytes) -> Payload:
        """A record written in an earlier layout (none by default)."""
        raise ValueError("not a prepared queue entry")
