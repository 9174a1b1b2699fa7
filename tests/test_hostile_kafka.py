"""Hostile messages through the ``kafka`` receiver, against a real broker (Tansu), written by
kcat: corrupt but framing-valid requests (invalid UTF-8, truncated fields, an attribute nested
200 deep, ids of the wrong length), seeded random mutations of good requests, garbage, a huge
good request and a huge corrupt one, interleaved with good requests, a good one last.

Every message the edge check accepts is delivered, each once; every other one is skipped
without blocking the partition, counted (the receiver's own counter and
``otelcol_receiver_refused_requests``) and its offset logged, even when a burst of them comes
faster than the receiver's one line a second; the group's committed offset ends after the
last message."""

from __future__ import annotations

import asyncio
import logging
import random
from pathlib import Path

import pytest

from pipeline import Signal
from plugins._kafka import decode
from tests.hostile import mutate, refused_requests
from tests.kafka_support import broker, committed_offset
from tests.otlp_support import recording_backend
from tests.plugins.test_kafka import kcat_produce, receiver_gateway, receiver_of, traces
from tests.poison import poison_traces
from tests.support import running_service, wait_until


def _huge(seed: int, size: int) -> bytes:
    req = traces(1, 1, seed=seed, prefix=f"huge{seed}-")
    span = req.resource_spans[0].scope_spans[0].spans[0]
    span.attributes.add(key="payload").value.string_value = "x" * size
    return req.SerializeToString()


def _accepted(value: bytes) -> int | None:
    """The spans of a message the receiver's check accepts, ``None`` if it refuses it."""
    try:
        return decode(Signal.TRACES, value, "otlp_proto").item_count()
    except Exception:
        return None


def _logged_offsets(records: list[logging.LogRecord]) -> set[int]:
    """The offsets named by the receiver's lines about skipped messages."""
    out: set[int] = set()
    for r in records:
        if "skipped" not in r.getMessage():
            continue
        if isinstance(getattr(r, "offset", None), int):
            out.add(r.offset)  # type: ignore[attr-defined]
        for piece in str(getattr(r, "offsets", "")).split(","):
            if piece:
                first, _, last = piece.partition("-")
                out.update(range(int(first), int(last or first) + 1))
    return out


async def test_every_hostile_message_is_skipped_counted_and_its_offset_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    rng = random.Random(20261207)
    goods = [traces(2, 2, seed=i, prefix=f"g{i}-").SerializeToString() for i in range(10)]
    bads = [data for _, data in poison_traces()]
    bads += [b"\xff\x00garbage", b"\x0a", b"\x0a\xff\xff\xff\xff\x0f", b"{}"]
    huge_good = _huge(1, 600_000)
    huge_bad = bytearray(_huge(2, 600_000))
    huge_bad[-300_000] = 0xFF  # invalid UTF-8 deep inside the huge attribute
    fuzzed = [mutate(goods[i % 10], rng, goods[(i + 3) % 10]) for i in range(120)]
    values = goods[:-1] + bads + fuzzed + [huge_good, bytes(huge_bad)]
    rng.shuffle(values)
    values.append(goods[-1])  # a good one after all the bad ones
    verdicts = [_accepted(v) for v in values]
    bad_offsets = {i for i, n in enumerate(verdicts) if n is None}
    spans = sum(n for n in verdicts if n is not None)
    assert len(bad_offsets) > 100 and verdicts[-1] == 4  # the mix is as hostile as meant

    with broker() as b:
        b.create_topic("otlp_spans", 1)
        kcat_produce(b, "otlp_spans", values, tmp_path)
        async with recording_backend() as sink:
            async with running_service(receiver_gateway(b, sink), tmp_path) as service:
                receiver = receiver_of(service)
                await wait_until(lambda: receiver.messages == len(values), within=60)
                await wait_until(lambda: sink.span_count() >= spans, within=30)
                await asyncio.sleep(0.2)  # (time for a duplicate to arrive: none may)
                assert receiver.undecodable == len(bad_offsets)
                assert refused_requests(service) == len(bad_offsets)
                families = {f.name: f for f in service.telemetry.registry.collect()}
                (failed,) = [
                    s.value
                    for s in families["otelcol_kafka_receiver_unmarshal_failed_messages"].samples
                    if s.name.endswith("_total")
                ]
                assert failed == len(bad_offsets)
            assert sink.span_count() == spans
            names = {s.name for s in sink.spans}
            assert {
                f"g{i}-{t}-s{s}" for i in range(10) for t in range(2) for s in range(2)
            } <= names
            assert {"huge1-0-s0"} <= names
        # every skipped message's offset is in the log (some lines name several)
        assert _logged_offsets(caplog.records) == bad_offsets
        assert committed_offset(b) == len(values)
