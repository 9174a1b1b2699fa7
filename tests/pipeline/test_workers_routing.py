"""Routing by first arrival (``service.worker_routing: first_arrival``): the ownership table
shared by the workers (``plugins/_native/_route.c`` ``table_owner``, its twin
``pipeline._route.table_owner_python``). Two workers are two :class:`OwnerTable` views of one
buffer, as two processes map one file."""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from typing import Any

import pytest

from pipeline import _route
from pipeline._route import OwnerTable, table_bytes, table_owner_python

Owner = Callable[[Any, bytes, int, int, int, int], int]


def _c_owner(table: Any, tid: bytes, workers: int, index: int, now: int, ttl: int) -> int:
    mod = _route.native()
    return int(mod.trace_owner(tid, workers, table, index, now, ttl))


IMPLS = [
    pytest.param(table_owner_python, id="python"),
    pytest.param(
        _c_owner,
        id="c",
        marks=pytest.mark.skipif(_route.native() is None, reason="_route not built"),
    ),
]


def _tid(owner_by_hash: int, workers: int, rnd: random.Random) -> bytes:
    """A random trace id whose hash owner is ``owner_by_hash``."""
    while True:
        tid = rnd.randbytes(16)
        if _route.trace_owner(tid, workers) == owner_by_hash:
            return tid


@pytest.mark.parametrize("owner", IMPLS)
def test_the_first_worker_to_see_a_trace_owns_it_for_every_worker(owner: Owner) -> None:
    rnd = random.Random(3)
    table = bytearray(table_bytes(64))
    mine = _tid(0, 2, rnd)  # hashes to worker 0, arrives first at worker 1
    assert owner(table, mine, 2, 1, 1000, 60) == 1
    assert owner(table, mine, 2, 0, 1001, 60) == 1  # worker 0 hands it to worker 1
    assert owner(table, mine, 2, 1, 1002, 60) == 1
    other = _tid(1, 2, rnd)
    assert owner(table, other, 2, 0, 1002, 60) == 0
    assert owner(table, other, 2, 1, 1002, 60) == 0


@pytest.mark.parametrize("owner", IMPLS)
def test_a_trace_is_forgotten_only_after_ttl_without_spans(owner: Owner) -> None:
    rnd = random.Random(4)
    table = bytearray(table_bytes(1))
    t = _tid(0, 2, rnd)
    assert owner(table, t, 2, 1, 1000, 10) == 1
    assert owner(table, t, 2, 0, 1010, 10) == 1  # 10 s after its last span: still owned
    assert owner(table, t, 2, 0, 1020, 10) == 1  # its spans renew it
    # a new trace takes a free slot; the known one keeps its slot
    assert owner(table, _tid(1, 2, rnd), 2, 0, 1020, 10) == 0
    # more than ttl after its last span the slot may be claimed again: by whoever sees it
    for _ in range(7):
        owner(table, _tid(0, 2, rnd), 2, 1, 1031, 10)
    late = _tid(1, 2, rnd)
    assert owner(table, late, 2, 0, 1031, 10) == 0  # the expired slot of t, claimed by 0
    assert owner(table, t, 2, 0, 1031, 10) == 0  # t is new again: its bucket is full -> hash


@pytest.mark.parametrize("owner", IMPLS)
def test_a_full_bucket_routes_new_traces_by_hash_while_they_keep_coming(owner: Owner) -> None:
    """A trace routed by hash because its bucket was full is never claimed by first arrival
    while its spans come at most ttl seconds apart, even once slots have expired."""
    rnd = random.Random(5)
    table = bytearray(table_bytes(1))  # one bucket: 8 traces
    for _ in range(8):
        assert owner(table, _tid(0, 2, rnd), 2, 1, 100, 10) == 1
    spill = _tid(0, 2, rnd)
    assert owner(table, spill, 2, 1, 100, 10) == 0  # full: its hash owner
    assert owner(table, spill, 2, 1, 108, 10) == 0
    # at 115 every slot has expired (seen at 100), but spill's last span was at 108
    assert owner(table, spill, 2, 1, 115, 10) == 0
    assert owner(table, spill, 2, 1, 125, 10) == 0
    # more than ttl after the bucket last routed by hash, a new trace is claimed again
    fresh = _tid(0, 2, rnd)
    assert owner(table, fresh, 2, 1, 136, 10) == 1


def test_the_c_table_and_its_twin_agree_on_owners_and_bytes() -> None:
    """Random requests from random workers at advancing times over tables of 1, 2 and 64
    buckets (full buckets, expiry, hash mode): the same split, the same table bytes."""
    mod = _route.native()
    if mod is None:
        pytest.skip("_route not built")
    rnd = random.Random(6)
    for buckets in (1, 2, 64):
        c_table = bytearray(table_bytes(buckets))
        py_table = bytearray(c_table)
        pool = [rnd.randbytes(16) for _ in range(200)] + [b"", b"\x01" * 5]
        for step in range(200):
            now, workers = 1000 + step // 4, 3
            index = rnd.randrange(workers)
            data = _request([rnd.choice(pool) for _ in range(rnd.randrange(1, 12))], rnd)
            got = mod.route_traces(data, workers, c_table, index, now, 5)
            if isinstance(got, int):
                got = {} if got < 0 else {got: (data, None)}
            else:
                got = {o: (raw, n) for o, raw, n in got}
            want = _route.split_traces_python(data, workers, OwnerTable(py_table, index, 5), now)
            assert got == want, (buckets, step)
            assert c_table == py_table, (buckets, step)


def _request(trace_ids: list[bytes], rnd: random.Random) -> bytes:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.add(key="service.name").value.string_value = "svc"
    for i, tid in enumerate(trace_ids):
        if i == 0 or rnd.random() < 0.3:
            ss = rs.scope_spans.add()
            ss.scope.name = f"scope{i}"
        span = ss.spans.add()
        span.trace_id = tid
        span.span_id = os.urandom(8)
        span.name = f"s{i}"
    return req.SerializeToString()


def test_bad_arguments_are_refused_before_any_claim() -> None:
    table = bytearray(table_bytes(4))
    with pytest.raises(ValueError, match="at most 256 workers"):
        table_owner_python(table, b"x" * 16, 300, 0, 1, 1)
    with pytest.raises(ValueError, match="out of range"):
        table_owner_python(table, b"x" * 16, 2, 2, 1, 1)
    with pytest.raises(ValueError, match="too small"):
        table_owner_python(bytearray(10), b"x" * 16, 2, 0, 1, 1)
    with pytest.raises(BufferError):
        table_owner_python(bytes(table_bytes(1)), b"x" * 16, 2, 0, 1, 1)
    data = _request([b"y" * 16], random.Random(1))
    with pytest.raises(ValueError):
        _route.split_traces_python(data, 300, OwnerTable(table, 0, 1), 1)
    mod = _route.native()
    if mod is not None:
        with pytest.raises(ValueError, match="at most 256 workers"):
            mod.route_traces(data, 300, table, 0, 1, 1)
        with pytest.raises(ValueError, match="out of range"):
            mod.route_traces(data, 2, table, 5, 1, 1)
        with pytest.raises(ValueError, match="too small"):
            mod.route_traces(data, 2, bytearray(10), 0, 1, 1)
        with pytest.raises(BufferError):
            mod.route_traces(data, 2, bytes(table_bytes(1)), 0, 1, 1)
    assert table == bytearray(table_bytes(4))  # nothing claimed


def test_log_records_follow_the_table() -> None:
    """A record goes to the worker that claimed its trace (its spans' worker), not to the
    trace id's hash owner; a record of a new trace claims it for the worker that received
    it."""
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    rnd = random.Random(8)
    table = bytearray(table_bytes(16))
    spans_trace = _tid(0, 2, rnd)
    assert _route.claim(OwnerTable(table, 1, 60), spans_trace, 2, 100) == 1  # spans at 1
    new_trace = _tid(1, 2, rnd)
    req = ExportLogsServiceRequest()
    sl = req.resource_logs.add().scope_logs.add()
    sl.log_records.add().trace_id = spans_trace
    sl.log_records.add().trace_id = new_trace
    parts = _route.split_logs(req.SerializeToString(), 2, 0, OwnerTable(table, 0, 60), 101)
    assert set(parts) == {0, 1} and parts[0][1] == 1 and parts[1][1] == 1
    got = ExportLogsServiceRequest.FromString(parts[1][0])
    assert got.resource_logs[0].scope_logs[0].log_records[0].trace_id == spans_trace
    assert _route.claim(OwnerTable(table, 1, 60), new_trace, 2, 102) == 0  # claimed by 0
