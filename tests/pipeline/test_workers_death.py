"""What happens to the traces a dead worker owned (``service.workers``): real gateway processes,
a worker killed with SIGKILL, spans sent by a real gRPC client; the supervisor's rule that keeps
a poison input from killing every worker; the adoption in the ownership table and by trace id
(the C module and its twin)."""

from __future__ import annotations

import contextlib
import mmap
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline import _route
from tests.pipeline.test_workers import SINK, ready
from tests.support import GatewayProcess, free_port, write_config

# -- the routing functions ------------------------------------------------------------------------


def _tid(n: int) -> bytes:
    return b"\x00" * 8 + n.to_bytes(8, "big")


@pytest.mark.parametrize("native", [True, False])
def test_a_dead_owners_known_traces_are_adopted_once_and_stay_with_the_adopter(
    native: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Worker 1 owns traces in the table and dies: worker 0 (and 2) adopt them, one adopter
    per trace (whoever comes first: the other finds it adopted), the slot rewritten; with worker
    1 back (no dead map) they stay with their adopter; traces never owned by 1 do not move."""
    if not native:
        monkeypatch.setenv("PIPELINE_NATIVE", "0")
    elif _route.native() is None:
        pytest.skip("the C module was not built")
    table = bytearray(_route.table_bytes(1024))
    ones = [_route.OwnerTable(table, i, 120) for i in range(3)]
    tids = [_tid(n) for n in range(1, 200)]
    for k, tid in enumerate(tids):
        assert _route.claim(ones[k % 3], tid, 3, 1000) == k % 3
    dead = b"\x00\x01\x00"
    for k, tid in enumerate(tids):
        adopter = 0 if k % 2 else 2
        got = _route.claim(ones[adopter], tid, 3, 1001, dead)
        if k % 3 == 1:
            assert got == adopter  # adopted by the first to see it
            assert _route.claim(ones[2 - adopter], tid, 3, 1001, dead) == adopter
        else:
            assert got == k % 3  # a live owner's trace is not touched
    for k, tid in enumerate(tids):  # worker 1 back: its adopted traces stay adopted
        want = (0 if k % 2 else 2) if k % 3 == 1 else k % 3
        assert _route.claim(ones[1], tid, 3, 1002) == want


def test_by_trace_id_a_dead_owners_traces_go_to_live_workers_spread_and_back_after() -> None:
    """No table: a trace whose hash owner is dead goes to a live worker chosen by its trace id
    (the same in every worker; spread over the live ones), to its hash owner again once that
    one is back; the C split and its twin agree."""
    from tests.durable_support import build_request

    dead = b"\x00\x00\x01\x00"
    seen: dict[int, int] = {}
    for n in range(2, 4000, 4):  # hash owner 2
        v = int.from_bytes(_tid(n)[-8:], "big")
        owner = _route.hash_fallback(v, 4, v % 4, dead)
        assert owner != 2
        seen[owner] = seen.get(owner, 0) + 1
    assert set(seen) == {0, 1, 3} and min(seen.values()) > 250
    data = build_request(1, 400, spans_per_trace=1)
    want = _route.split_traces_python(data, 4, None, 0, dead)
    assert 2 not in want and sum(n or 0 for _, n in want.values()) == 400
    assert _route.split_traces(data, 4, None, 0, dead) == want
    assert 2 in _route.split_traces(data, 4)


def test_log_records_of_a_dead_owners_trace_follow_its_adoption() -> None:
    """Log records of a dead worker's trace go where its spans go: adopted by the receiving
    worker in the table, or by trace id to the live fallback; records of live owners' traces
    and records without a trace id do not move."""
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    table = bytearray(_route.table_bytes(16))
    ones = [_route.OwnerTable(table, i, 60) for i in range(3)]
    assert _route.claim(ones[1], _tid(1), 3, 100) == 1
    assert _route.claim(ones[2], _tid(2), 3, 100) == 2
    req = ExportLogsServiceRequest()
    sl = req.resource_logs.add().scope_logs.add()
    for n in (1, 2):
        sl.log_records.add().trace_id = _tid(n)
    sl.log_records.add().body.string_value = "no trace"
    data = req.SerializeToString()
    dead = b"\x00\x01\x00"
    parts = _route.split_logs(data, 3, 0, ones[0], 101, dead)
    assert {o: n for o, (_, n) in parts.items()} == {0: 2, 2: 1}
    assert _route.claim(ones[2], _tid(1), 3, 102) == 0  # adopted by the receiving worker
    by_hash = _route.split_logs(data, 3, 0, None, 0, dead)  # _tid(1): hash owner 1, dead
    assert 1 not in by_hash and sum(n or 0 for _, n in by_hash.values()) == 3


def test_a_poison_input_kills_its_owner_and_at_most_one_adopter(tmp_path: Path) -> None:
    """The supervisor's rule (no process started): a first death is taken over; a second
    worker dying within ADOPT_WINDOW of it (the adopter, maybe of what it adopted) is not, nor
    are its crash-loop deaths after; a death after the window, the others serving, is again.
    The board says so (epoch bumped at every change) and a worker reads it."""
    from pipeline import workers

    sup = workers.Supervisor(["run"], 3, 5.0)
    try:
        board = sup._deaths
        ctx = workers.WorkerContext(0, 3, sup.run_dir)
        ctx._deaths = workers._open_deaths(sup.run_dir, 3)
        assert ctx.dead_owners() is None and board[0] == 0
        _, s1, s2 = sup.slots
        assert sup._dead(s1, quick=False) is None  # the owner: taken over
        assert board[2] == workers.DEATH_ADOPTED and board[0] == 1
        assert ctx.dead_owners() == b"\x00\x01\x00"
        reason = sup._dead(s2, quick=False)  # the adopter dies: not taken over
        assert reason is not None and "worker 1" in reason
        assert board[3] == workers.DEATH_REFUSED
        assert ctx.dead_owners() == b"\x00\x01\x00"

        def back(slot: Any) -> None:  # what _serving_again does once it serves
            slot.down = False
            board[1 + slot.index] = workers.DEATH_SERVING
            board[0] += 1

        # both back; worker 2 crash-loops (within 5 s of its starts), still refused
        back(s1)
        back(s2)
        assert ctx.dead_owners() is None
        assert sup._dead(s2, quick=True) is not None
        back(s2)
        s1.adopted_at = time.monotonic() - workers.ADOPT_WINDOW - 1  # the window passed
        assert "keeps dying" in (sup._dead(s2, quick=True) or "")
        back(s2)
        assert sup._dead(s2, quick=False) is None  # it had run: taken over again
        assert ctx.dead_owners() == b"\x00\x00\x01"
    finally:
        import shutil

        shutil.rmtree(sup.run_dir, ignore_errors=True)


# -- real gateways ------------------------------------------------------------------------------


# no processor holding spans, a persistent sending queue: what a worker acknowledged is on disk
# (its log, taken up again by the restarted worker), so nothing acknowledged may be missing
FORWARDING = """
extensions:
  file_storage: {{directory: "{storage}"}}
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:{grpc}"}}
exporters:
  otlp:
    endpoint: "127.0.0.1:{sink}"
    tls: {{insecure: true}}
    sending_queue: {{storage: file_storage}}
service:
  worker_routing: {routing}
  worker_acknowledge: {acknowledge}
  extensions: [file_storage]
  pipelines:
    traces: {{receivers: [otlp], exporters: [otlp]}}
  telemetry:
    metrics: {{address: "127.0.0.1:{telemetry}"}}
"""


@contextlib.contextmanager
def _gateways(
    tmp_path: Path, routing: str, acknowledge: str = "owner"
) -> Iterator[tuple[GatewayProcess, str, dict[str, int], dict[str, int]]]:
    """A sink gateway and a forwarding one of two workers (by ``routing``, answering by
    ``acknowledge``; its config ``forwarding.yaml`` in ``tmp_path``), both ready: the
    forwarding gateway, its OTLP endpoint, the sink's ports and its own."""
    sink_ports = {"grpc": free_port(), "telemetry": free_port()}
    sink_path = write_config(tmp_path, SINK.format(**sink_ports), "sink.yaml")
    ports = {"grpc": free_port(), "telemetry": free_port()}
    storage = tmp_path / "storage"
    storage.mkdir()
    text = FORWARDING.format(
        sink=sink_ports["grpc"], storage=storage, routing=routing, acknowledge=acknowledge, **ports
    )
    path = write_config(tmp_path, text, "forwarding.yaml")
    with GatewayProcess(sink_path) as sink, GatewayProcess(path, args=("--workers", "2")) as gw:
        sink.wait_ready(timeout=120)
        ready(gw, 2, timeout=120)
        yield gw, f"127.0.0.1:{ports['grpc']}", sink_ports, ports


def _logged(records: Callable[[], list[dict[str, Any]]], start: str) -> bool:
    """Whether a log record's message starts with ``start``."""
    return any(r.get("msg", "").startswith(start) for r in records())


def _send(endpoint: str, first: int, timeout: float = 10.0) -> bool:
    """One single-span trace (its id ``first``) over a new gRPC connection, no retry: whether
    the gateway accepted it (``False``: refused as retryable)."""
    import grpc

    from tests.durable_support import build_request
    from tests.otlp_support import TRACE_METHOD

    with grpc.insecure_channel(endpoint) as channel:
        try:
            channel.unary_unary(TRACE_METHOD)(build_request(first, 1, 1), timeout=timeout)
        except grpc.RpcError as exc:
            assert exc.code() in (
                grpc.StatusCode.UNAVAILABLE,
                grpc.StatusCode.DEADLINE_EXCEEDED,
            ), exc
            return False
    return True


@contextlib.contextmanager
def _table(run_dir: str) -> Iterator[Any]:
    fd = os.open(Path(run_dir) / "owners", os.O_RDWR)
    try:
        buf = mmap.mmap(fd, 0)
    finally:
        os.close(fd)
    try:
        yield buf
    finally:
        buf.close()


def _owner(buf: Any, n: int) -> int:
    """The owner the table gives the (known) trace ``n``: a lookup claims nothing."""
    return _route.claim(_route.OwnerTable(buf, 0, 120), _tid(n), 2, int(time.time()))


def _send_theirs(endpoint: str, routing: str, run_dir: str) -> tuple[list[int], int]:
    """Traces worker 1 owns, their first spans sent and accepted, and how many spans were sent
    in all: by trace id the 8 odd trace ids; by first arrival the first 4 traces the kernel's
    placing (a new connection each) gave worker 1, worker 0's claimed on the way."""
    if routing == "trace_id":
        theirs = [2 * k + 1 for k in range(8)]  # odd trace ids: worker 1's
        for n in theirs:
            assert _send(endpoint, n)
        return theirs, len(theirs)
    theirs = []
    with _table(run_dir) as buf:
        for n in range(1, 200):  # a new connection each: the kernel places them
            assert _send(endpoint, n)
            if _owner(buf, n) == 1:
                theirs.append(n)
            if len(theirs) == 4:
                break
    assert len(theirs) == 4
    return theirs, n


@pytest.mark.slow
@pytest.mark.parametrize("routing", ["trace_id", "first_arrival", "balanced"])
def test_a_killed_workers_traces_are_taken_over_and_nothing_acknowledged_is_lost(
    tmp_path: Path, routing: str
) -> None:
    """Worker 1 owns traces (by trace id: odd ids; by first arrival and balanced: the traces
    whose first span a connection to it received) and is killed (SIGKILL). While it is down,
    the spans of its traces sent to worker 0 are accepted (before: refused as retryable until
    it served again) within a bound, counted (``otelcol_worker_adopted_items_total``) and
    logged; it is restarted and counted as before; by the table the adopted traces stay with
    worker 0 after its return, by trace id they go back to it. Every span the gateway
    acknowledged, before, during and after the death, reaches the next tier."""
    from tests.pipeline.test_workers import scrape_port, wait_for, worker_pids

    if routing != "trace_id" and _route.native() is None:
        pytest.skip("routing by first arrival needs the C module")

    accepted = 0
    with _gateways(tmp_path, routing) as (gw, endpoint, sink_ports, ports):
        records = gw.records
        run_dir = next(r for r in records() if r.get("msg") == "every worker is ready; serving")[
            "run_dir"
        ]
        # traces worker 1 owns, their first spans accepted before its death
        theirs, accepted = _send_theirs(endpoint, routing, run_dir)
        killed = time.monotonic()
        os.kill(worker_pids(gw)[1], signal.SIGKILL)

        def back() -> bool:
            return (
                sum(
                    1
                    for r in records()
                    if r.get("msg") == "everything is ready; serving" and r.get("worker") == 1
                )
                == 2
            )

        # while it is down: its traces' spans are taken over (after at most a retry or two
        # while the supervisor learns of the death)
        taken: list[float] = []
        taken_ids: set[int] = set()
        refused = 0
        k = 0
        while not back() and time.monotonic() - killed < 60:
            if _send(endpoint, theirs[k % len(theirs)], timeout=5):
                accepted += 1
                if not back():
                    taken.append(time.monotonic() - killed)
                    taken_ids.add(theirs[k % len(theirs)])
            else:
                refused += 1
            k += 1
            time.sleep(0.05)
        assert taken, f"no span of a dead worker's trace was accepted ({refused} refused)"
        assert taken[0] < 10.0, taken[0]  # the bound: the death noticed, a client retry
        died = [r for r in records() if r.get("msg") == "worker died; starting it again"]
        assert died and died[0]["worker"] == 1 and died[0]["exit_code"] == -9
        assert died[0]["traces"] == "taken over"
        assert any(
            r.get("msg", "").startswith("the dead worker's traces are taken over")
            and r.get("worker") == 1
            for r in records()
        )
        assert any(
            r.get("msg", "").startswith("a dead worker's traces taken over")
            and r.get("worker") == 0
            and r.get("dead") == "1"
            for r in records()
        )
        wait_for(back, timeout=120)
        wait_for(
            lambda: any(
                r.get("msg") == "worker serves again; the others stop taking over its traces"
                for r in records()
            ),
            timeout=30,
        )
        own = scrape_port(ports["telemetry"])
        adopted = own[("otelcol_worker_adopted_items_total", (("signal", "traces"),))]
        if routing != "trace_id":  # each trace adopted once; its later spans are 0's own
            assert adopted == len(taken_ids)
        else:  # each span sent to worker 0 while its owner was down
            assert adopted >= len(taken)
        assert own[("otelcol_worker_restarts_total", (("worker", "1"),))] == 1.0
        # back: by first arrival the adopted traces stay with their adopter (the table), by
        # trace id they are worker 1's again; either way accepted
        adopted_ids = sorted(taken_ids)
        if routing != "trace_id":
            with _table(run_dir) as buf:
                assert [_owner(buf, n) for n in adopted_ids] == [0] * len(adopted_ids)
        for n in theirs:
            ok = False
            for _ in range(20):  # a connection made as worker 1 starts may be refused once
                if _send(endpoint, n):
                    ok = True
                    break
                time.sleep(0.2)
            assert ok
            accepted += 1
        if routing != "trace_id":
            with _table(run_dir) as buf:
                assert [_owner(buf, n) for n in adopted_ids] == [0] * len(adopted_ids)
        sink_key = ("otelcol_receiver_accepted_spans_total", (("receiver", "otlp"),))
        wait_for(lambda: scrape_port(sink_ports["telemetry"]).get(sink_key, 0) >= accepted, 60)
        assert gw.stop(signal.SIGTERM, timeout=60) == 0
        # nothing acknowledged lost; at least once: a span may arrive twice, never missing
        assert scrape_port(sink_ports["telemetry"])[sink_key] >= accepted


@pytest.mark.slow
def test_a_second_death_within_the_window_is_refused_not_taken_over(tmp_path: Path) -> None:
    """Worker 1 killed: taken over by worker 0. Worker 0 killed right after (as a poison input
    taken over would kill its adopter): its traces are refused (retryable) until it serves
    again, logged with the reason, not handed on to worker 1; once both serve, every trace is
    accepted again."""
    from tests.pipeline.test_workers import wait_for, worker_pids

    with _gateways(tmp_path, "trace_id") as (gw, endpoint, _, _):
        records = gw.records
        os.kill(worker_pids(gw)[1], signal.SIGKILL)
        wait_for(lambda: _logged(records, "the dead worker's traces are taken over"), timeout=30)
        os.kill(worker_pids(gw)[0], signal.SIGKILL)
        wait_for(lambda: _logged(records, "the dead worker's traces are refused"), timeout=30)
        refused = [
            r for r in records() if r.get("msg", "").startswith("the dead worker's traces are")
        ]
        assert [(r["worker"], "refused" in r["msg"]) for r in refused] == [(1, False), (0, True)]
        assert "worker 1" in refused[1]["reason"]

        def serving(i: int) -> int:
            return sum(
                1
                for r in records()
                if r.get("msg") == "everything is ready; serving" and r.get("worker") == i
            )

        wait_for(lambda: serving(0) == 2 and serving(1) >= 2, timeout=120)
        for n in (1, 2, 3, 4):  # both workers' traces
            ok = False
            for _ in range(30):
                if _send(endpoint, n):
                    ok = True
                    break
                time.sleep(0.2)
            assert ok


@pytest.mark.slow
def test_a_killed_primary_serves_again_and_its_traces_are_taken_over_meanwhile(
    tmp_path: Path,
) -> None:
    """The primary (worker 0, which checks the endpoints at its first start) killed: worker 1
    takes its traces over, and it is started again and serves (before, its restart found the
    data endpoints, held by worker 1 with SO_REUSEPORT, "in use" and failed for as long as
    worker 1 ran); the merged /metrics is back with the restart counted."""
    from tests.pipeline.test_workers import scrape_port, wait_for, worker_pids

    with _gateways(tmp_path, "trace_id") as (gw, endpoint, _, ports):
        records = gw.records
        os.kill(worker_pids(gw)[0], signal.SIGKILL)
        wait_for(lambda: _logged(records, "the dead worker's traces are taken over"), timeout=30)
        assert any(_send(endpoint, 2 * k) for k in range(1, 40))  # worker 0's, taken over
        wait_for(
            lambda: any(
                r.get("msg") == "worker serves again; the others stop taking over its traces"
                and r.get("worker") == 0
                for r in records()
            ),
            timeout=120,
        )
        assert not [r for r in records() if r.get("exit_code") == 1]  # no failed restart
        key = ("otelcol_worker_restarts_total", (("worker", "0"),))
        wait_for(lambda: scrape_port(ports["telemetry"]).get(key) == 1.0, timeout=30)


@pytest.mark.slow
@pytest.mark.parametrize("routing", ["trace_id", "first_arrival"])
def test_parts_handed_over_to_a_worker_that_dies_go_to_the_adopter_not_late_to_it(
    tmp_path: Path, routing: str
) -> None:
    """``worker_acknowledge: handover``, by trace id and by first arrival (the traces whose
    first span worker 1 received). Worker 1 stopped (SIGSTOP): the spans of
    its traces that worker 0 received were acknowledged and wait in worker 0 for it (written
    and unanswered, or queued); worker 1 is then killed (SIGKILL) with its restarts held back
    (its config unreadable: a crash loop). Before, those parts waited until it served again
    and reached it late, after worker 0 had taken its traces' later spans; now, once its
    death is on the board, worker 0 splits them again and takes them over: they reach the
    next tier while worker 1 is still down, counted (``otelcol_worker_adopted_items_total``)
    and logged. Nothing acknowledged is lost."""
    from tests.pipeline.test_workers import scrape_port, wait_for, worker_pids

    sink_key = ("otelcol_receiver_accepted_spans_total", (("receiver", "otlp"),))
    config = tmp_path / "forwarding.yaml"
    if routing != "trace_id" and _route.native() is None:
        pytest.skip("routing by first arrival needs the C module")
    with _gateways(tmp_path, routing, "handover") as (gw, endpoint, sink_ports, ports):
        records = gw.records

        def sunk() -> float:
            return scrape_port(sink_ports["telemetry"]).get(sink_key, 0)

        def serving_1() -> int:
            return sum(
                1
                for r in records()
                if r.get("msg") == "everything is ready; serving" and r.get("worker") == 1
            )

        run_dir = next(r for r in records() if r.get("msg") == "every worker is ready; serving")[
            "run_dir"
        ]
        theirs, accepted = _send_theirs(endpoint, routing, run_dir)
        wait_for(lambda: sunk() >= accepted, timeout=60)  # what worker 1 took is delivered
        pid = worker_pids(gw)[1]
        text = config.read_text()
        os.kill(pid, signal.SIGSTOP)
        try:
            held = 0
            k = 0
            start = time.monotonic()
            while held < 8 and time.monotonic() - start < 90:
                # a connection to worker 1 hangs (not acknowledged); worker 0 acknowledges
                # and holds the span for worker 1
                if _send(endpoint, theirs[k % len(theirs)], timeout=1):
                    held += 1
                k += 1
            assert held, "worker 0 acknowledged nothing while worker 1 was stopped"
            accepted += held
            config.write_text("receivers: [\n")  # worker 1's restarts fail while it is so
        finally:
            os.kill(pid, signal.SIGKILL)
        try:
            wait_for(lambda: _logged(records, "the dead worker's traces are taken over"), 30)
            # before: nothing held for worker 1 arrived until it served again
            wait_for(lambda: sunk() >= accepted, timeout=30)
            assert serving_1() == 1  # still down
            moved = [
                r
                for r in records()
                if r.get("msg", "").startswith("parts handed over to a worker that died")
            ]
            assert moved and moved[0]["worker"] == 0 and moved[0]["dead"] == 1
            assert moved[0]["to"] == "0" and moved[0]["signal"] == "traces"
            assert sum(r["items"] for r in moved) == held
            own = scrape_port(ports["telemetry"])
            assert own[("otelcol_worker_adopted_items_total", (("signal", "traces"),))] >= held
        finally:
            config.write_text(text)
        wait_for(lambda: serving_1() == 2, timeout=120)
        assert gw.stop(signal.SIGTERM, timeout=60) == 0
        assert sunk() >= accepted
