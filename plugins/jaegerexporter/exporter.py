"""The ``jaeger`` exporter over Thrift: ``thrift_http`` (collector, binary Thrift over HTTP)
and ``thrift_compact`` (agent, compact Thrift over UDP)."""

from __future__ import annotations

import asyncio
import socket
import struct
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
    PreparedPayload,
    PreparedQueueCodec,
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


class PreparedTraces(PreparedPayload, Traces):
    """Spans already encoded for the wire: HTTP bodies or UDP datagrams (``chunks``), and
    how many spans each holds (``counts``).

    The exporter encodes once, when the payload arrives, so retries resend the same bytes and
    resume after the chunks already delivered (``done``). The sending queue handles these
    payloads as every :class:`pipeline.PreparedPayload`: a batch (``sending_queue.batch``)
    merges them by joining their chunk lists, splits them (``max_size``) between chunks, sizes
    them (``sizer: bytes``) by their encoded chunks, and the persistent queue stores them with
    :class:`PreparedCodec`. There is no OTLP encoding behind them: :meth:`to_bytes` (and so
    :meth:`message`) raises instead of answering an empty request, so that nothing can read
    them as OTLP and lose their spans silently. Each chunk is one POST (one datagram): they
    are never joined."""

    __slots__ = ()
    description = "spans prepared for Jaeger"


class PreparedCodec(PreparedQueueCodec):
    """Prepared spans in a persistent sending queue (see :class:`pipeline.PreparedQueueCodec`);
    also reads the records of earlier versions (item count, chunks; no count per chunk)."""

    payload_class = PreparedTraces
    _U32 = struct.Struct("<I")

    def decode_legacy(self, body: bytes) -> Payload:
        unpack = self._U32.unpack_from
        count, n = unpack(body, 0)[0], unpack(body, 4)[0]
        pos = 8
        chunks = []
        for _ in range(n):
            (size,) = unpack(body, pos)
            if pos + 4 + size > len(body):
                raise ValueError("truncated Jaeger queue entry")
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
