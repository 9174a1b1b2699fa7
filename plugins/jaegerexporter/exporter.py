"""The ``jaeger`` exporter over Thrift: ``thrift_http`` (collector, binary Thrift over HTTP)
and ``thrift_compact`` (agent, compact Thrift over UDP)."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Sequence
from typing import Any

import aiohttp

from pipeline import (
    ClientAuthenticator,
    Component,
    CreateSettings,
    ExporterHelper,
    Host,
    Payload,
    PermanentError,
    QueueCodec,
    RetryableError,
    Signal,
    Traces,
    client_authenticator,
    split_endpoint,
)
from plugins._jaegerthrift.model import EmitBatchFramer, encode_struct
from plugins._jaegerthrift.translate import traces_to_batches
from plugins.jaegerexporter.config import JaegerExporterConfig

THRIFT_CONTENT_TYPE = "application/x-thrift"
_RETRYABLE_HTTP = {408, 429, 502, 503, 504}


class PreparedTraces(Traces):
    """Spans already encoded for the wire: HTTP bodies or UDP datagrams (``chunks``), and
    how many spans each holds (``counts``).

    The exporter encodes once, when the payload arrives, so retries resend the same bytes and
    resume after the chunks already delivered (``done``). The sending queue handles these
    payloads on their own terms: a batch (``sending_queue.batch``) merges them by joining
    their chunk lists, splits them (``max_size``) between chunks, sizes them (``sizer:
    bytes``) by their encoded chunks, and the persistent queue stores them with
    :class:`PreparedCodec`. There is no OTLP encoding behind them: :meth:`to_bytes` (and so
    :meth:`message`) raises instead of answering an empty request, so that nothing can read
    them as OTLP and lose their spans silently."""

    __slots__ = ("chunks", "counts", "done")

    def __init__(
        self, chunks: list[bytes], item_count: int, counts: list[int] | None = None
    ) -> None:
        super().__init__(b"", item_count=item_count)
        self.chunks = chunks
        # spans per chunk; None when not known (an entry read back from the persistent
        # queue), and then the payload is never split
        self.counts = counts
        self.done = 0

    @classmethod
    def merge(cls, payloads: Sequence[Payload]) -> Payload:
        """The chunks of ``payloads`` (none of them sent yet) in order, in one payload."""
        if len(payloads) == 1:
            return payloads[0]
        prepared = [_prepared(p) for p in payloads]
        known = all(p.counts is not None for p in prepared)
        merged = cls(
            [c for p in prepared for c in p.chunks],
            sum(p.item_count() for p in prepared),
            [n for p in prepared for n in p.counts or ()] if known else None,
        )
        for p in prepared:
            merged.carry_acks(p.ack_tokens)
        merged.whole_traces = all(p.whole_traces for p in prepared)
        return merged

    def split(self, max_items: int, first: int = 0) -> list[Payload]:
        """Payloads of whole chunks, at most ``max_items`` spans each (``first`` for the
        first one); a chunk is never cut, so one holding more spans makes a payload of its
        own (one Jaeger batch of a resource, or one datagram)."""
        limit = first or max_items
        if (
            max_items <= 0
            or self.item_count() <= limit
            or self.counts is None
            or self.done
            or len(self.chunks) < 2
        ):
            return [self]
        out: list[Payload] = []
        chunks: list[bytes] = []
        counts: list[int] = []
        for chunk, n in zip(self.chunks, self.counts, strict=True):
            if chunks and sum(counts) + n > limit:
                out.append(PreparedTraces(chunks, sum(counts), counts))
                chunks, counts, limit = [], [], max_items
            chunks.append(chunk)
            counts.append(n)
        if chunks:
            out.append(PreparedTraces(chunks, sum(counts), counts))
        for part in out:  # every part holds the whole payload's durability tokens
            part.carry_acks(self.ack_tokens)
        return out

    def copy(self) -> Payload:
        out = PreparedTraces(self.chunks, self.item_count(), self.counts)
        out.done = self.done
        out.carry_acks(self.ack_tokens)
        out.whole_traces = self.whole_traces
        return out

    @property
    def nbytes(self) -> int:
        """The encoded chunks' size (what is sent)."""
        return sum(map(len, self.chunks))

    def to_bytes(self) -> bytes:
        raise TypeError(
            "spans prepared for Jaeger have no OTLP encoding: they are merged, split, copied "
            "and stored as PreparedTraces (their chunks), never read as OTLP bytes"
        )

    def encoded_parts(self) -> tuple[bytes, ...]:
        return (self.to_bytes(),)


def _prepared(data: Payload) -> PreparedTraces:
    if not isinstance(data, PreparedTraces):
        raise TypeError(f"cannot merge spans prepared for Jaeger with {type(data).__name__}")
    return data


class PreparedCodec(QueueCodec):
    """Prepared spans in a persistent sending queue: the item count and the chunks."""

    _U32 = struct.Struct("<I")

    def encode(self, data: Payload) -> list[bytes]:
        assert isinstance(data, PreparedTraces)
        pack = self._U32.pack
        parts = [pack(data.item_count()), pack(len(data.chunks))]
        for chunk in data.chunks:
            parts += (pack(len(chunk)), chunk)
        return parts

    def decode(self, body: bytes) -> Payload:
        unpack = self._U32.unpack_from
        count, n = unpack(body, 0)[0], unpack(body, 4)[0]
        pos = 8
        chunks = []
        for _ in range(n):
            (size,) = unpack(body, pos)
            chunks.append(body[pos + 4 : pos + 4 + size])
            pos += 4 + size
        return PreparedTraces(chunks, count)


class JaegerThriftExporter(Component):
    """Sends spans to a Jaeger collector (HTTP) or agent (UDP) in Jaeger's Thrift encoding."""

    mutates_data = False

    def __init__(self, settings: CreateSettings, config: JaegerExporterConfig) -> None:
        self.settings = settings
        self.config = config
        self.udp = config.protocol == "thrift_compact"
        # UDP has no acknowledgement: a send that fails is counted, never retried.
        self.helper = ExporterHelper(
            settings,
            Signal.TRACES,
            config,
            self._send,
            retry_enabled=False if self.udp else None,
            codec=PreparedCodec(Signal.TRACES),
        )
        self._session: aiohttp.ClientSession | None = None
        self._auth: ClientAuthenticator | None = None
        self._sock: socket.socket | None = None
        self._addr: Any = None
        self._started = False

    # -- preparing ------------------------------------------------------------------------
    def prepare(self, data: Payload) -> PreparedTraces | None:
        """Translate and encode; spans too large for a datagram are counted and dropped."""
        try:
            batches = traces_to_batches(data.message())
            if not self.udp:
                bodies = [encode_struct(b, "binary") for b in batches]
                counts = [len(b.spans or ()) for b in batches]
                n = sum(counts)
                return PreparedTraces(bodies, n, counts) if n else None
            return self._packets(batches)
        except Exception as exc:  # a span the Thrift encoder cannot take
            n = data.item_count()
            self.settings.telemetry.send_failed(Signal.TRACES, n)
            self.settings.logger.error(
                "cannot encode spans for Jaeger, dropping them: %s",
                exc,
                extra={"dropped_items": n},
            )
            raise PermanentError(f"cannot encode spans for Jaeger: {exc}") from exc

    def _packets(self, batches: list[Any]) -> PreparedTraces | None:
        packets: list[bytes] = []
        counts: list[int] = []  # spans per packet
        kept = 0
        oversize: list[tuple[str, int]] = []
        for batch in batches:
            framer = EmitBatchFramer(batch.process, "compact")
            room = self.config.max_packet_size - framer.overhead
            current: list[bytes] = []
            used = 0
            for span in batch.spans or ():
                encoded = framer.encode_span(span)
                if len(encoded) > room:
                    oversize.append((span.operationName, len(encoded) + framer.overhead))
                    continue
                if used + len(encoded) > room:
                    packets.append(framer.packet(current))
                    counts.append(len(current))
                    current, used = [], 0
                current.append(encoded)
                used += len(encoded)
                kept += 1
            if current:
                packets.append(framer.packet(current))
                counts.append(len(current))
        if oversize:
            self._drop_oversize(oversize)
        return PreparedTraces(packets, kept, counts) if kept else None

    def _drop_oversize(self, spans: list[tuple[str, int]]) -> None:
        n = len(spans)
        tel = self.settings.telemetry
        tel.send_failed(Signal.TRACES, n)
        tel.dropped(Signal.TRACES, n, reason="span_too_large")
        name, size = max(spans, key=lambda s: s[1])
        self.settings.logger.error(
            "dropping %d span(s) too large for one UDP packet: the largest is %d bytes "
            "encoded, max_packet_size is %d",
            n,
            size,
            self.config.max_packet_size,
            extra={
                "dropped_items": n,
                "span_name": name,
                "span_bytes": size,
                "max_packet_size": self.config.max_packet_size,
            },
        )

    # -- the consumer ---------------------------------------------------------------------
    async def consume(self, data: Payload) -> None:
        # Translating and encoding is Python work proportional to the spans (~35 µs a span):
        # done in a worker thread, so a large batch does not stall the event loop (receivers,
        # other exporters) for its whole duration. The payload is only read (mutates_data is
        # false), so sharing it with the consumers on the loop is safe.
        prepared = await asyncio.to_thread(self.prepare, data)
        if prepared is not None:
            await self.helper.consume(prepared)

    # -- sending --------------------------------------------------------------------------
    async def _send(self, data: Payload) -> None:
        assert isinstance(data, PreparedTraces)
        if self.udp:
            await self._send_udp(data)
        else:
            await self._send_http(data)

    async def _send_udp(self, data: PreparedTraces) -> None:
        if self._sock is None:
            raise RetryableError("the exporter is not started")
        loop = asyncio.get_running_loop()
        while data.done < len(data.chunks):
            packet = data.chunks[data.done]
            try:
                await loop.sock_sendto(self._sock, packet, self._addr)
            except OSError as exc:
                raise RetryableError(
                    f"UDP send of {len(packet)} bytes to {self.config.resolved_endpoint} "
                    f"failed: {exc.strerror or exc}"
                ) from exc
            data.done += 1

    async def _send_http(self, data: PreparedTraces) -> None:
        if self._session is None:
            raise RetryableError("the exporter is not started")
        url = self.config.resolved_endpoint
        headers = {**self.config.headers, "Content-Type": THRIFT_CONTENT_TYPE}
        if self._auth is not None:
            headers.update(await self._auth.request_headers())
        while data.done < len(data.chunks):
            try:
                async with self._session.post(
                    url, data=data.chunks[data.done], headers=headers
                ) as resp:
                    body = (await resp.read())[:300].decode(errors="replace")
                    if resp.status >= 300:
                        message = f"{url} answered HTTP {resp.status}: {body.strip()}"
                        if resp.status in _RETRYABLE_HTTP:
                            raise RetryableError(
                                message, retry_after=_retry_after(resp.headers.get("Retry-After"))
                            )
                        raise PermanentError(message)
            except aiohttp.ClientError as exc:
                raise RetryableError(f"cannot reach {url}: {exc}") from exc
            data.done += 1

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self, host: Host) -> None:
        if self.udp:
            if self._sock is None:
                host_name, port = split_endpoint(self.config.resolved_endpoint)
                loop = asyncio.get_running_loop()
                infos = await loop.getaddrinfo(host_name, port, type=socket.SOCK_DGRAM)
                family, stype, proto, _, addr = infos[0]
                sock = socket.socket(family, stype, proto)
                sock.setblocking(False)
                self._sock, self._addr = sock, addr
        elif self._session is None:
            self._auth = client_authenticator(host, self.config.auth, self.settings.name)
            if self._auth is not None and self.config.resolved_endpoint.startswith("http://"):
                self.settings.logger.warning(
                    "credentials of %s are sent without TLS: anyone on the path can read them",
                    self.config.auth.authenticator if self.config.auth else "",
                )
            self._session = aiohttp.ClientSession()
        await self.helper.start(host)
        self._started = True

    async def shutdown(self) -> None:
        if not self._started:
            # Before start there is nothing to drain; the helper's shutdown would also mark
            # it closed for good, and a later start could not take data.
            return
        self._started = False
        try:
            await self.helper.shutdown()
        finally:
            # also when the shutdown deadline cancels the helper's (the persistent queue's
            # entries stay on disk): the connections are not left open
            if self._session is not None:
                session, self._session = self._session, None
                await asyncio.shield(session.close())
            if self._sock is not None:
                self._sock.close()
                self._sock = None


def _retry_after(value: str | None) -> float | None:
    if value and value.strip().isdigit():
        return float(value.strip())
    return None
