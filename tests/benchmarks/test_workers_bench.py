"""The workers benchmark's load generator and report (benchmarks/agent_pipeline.py
``run_load``, benchmarks/workers.py ``report``)."""

from __future__ import annotations

import time
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from benchmarks.agent_pipeline import (
    EXPORT_METHOD,
    Load,
    hex_placeholder,
    placeholder,
    run_load,
    text_id,
)
from benchmarks.workers import Run, report


def _server(got: list[bytes], refuse_every: int = 0) -> tuple[grpc.Server, int]:
    def export(request: bytes, context: grpc.ServicerContext) -> bytes:
        got.append(request)
        if refuse_every and len(got) % refuse_every == 0:
            context.abort(grpc.StatusCode.UNAVAILABLE, "refused by the test")
        return b""

    handler = grpc.method_handlers_generic_handler(
        EXPORT_METHOD.split("/")[1],
        {EXPORT_METHOD.split("/")[2]: grpc.unary_unary_rpc_method_handler(export)},
    )
    server = grpc.server(futures.ThreadPoolExecutor(4), handlers=[handler])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


def _native_client() -> bool:
    try:
        from plugins._native import _h2server  # noqa: F401
    except ImportError:
        return False
    return True


def _nghttp2(connections: int) -> Any:
    return pytest.param(
        "nghttp2",
        connections,
        marks=pytest.mark.skipif(not _native_client(), reason="libnghttp2 module not built"),
    )


CLIENTS = [("grpcio", 1), _nghttp2(1)]


@pytest.mark.parametrize(("client", "connections"), [*CLIENTS, _nghttp2(3)])
@pytest.mark.parametrize("in_flight", [1, 4])
def test_load_generator_sends_fresh_trace_ids_with_requests_in_flight(
    client: str, connections: int, in_flight: int
) -> None:
    got: list[bytes] = []
    server, port = _server(got)  # grpcio's server: a peer independent of the client
    try:
        load = Load(
            rate=4000.0, seconds=0.5, in_flight=in_flight, client=client, connections=connections
        )
        stats = run_load(f"127.0.0.1:{port}", load)
    finally:
        server.stop(None)
    assert stats["failed_requests"] == 0
    assert stats["sent_spans"] == len(got) * load.spans_per_request > 0
    seen: set[bytes] = set()
    for raw in got:
        marks = [
            m(k) for k in range(load.traces_per_request) for m in (placeholder, hex_placeholder)
        ]
        assert not any(mark in raw for mark in marks)
        req = ExportTraceServiceRequest.FromString(raw)
        spans = [s for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]
        assert len(spans) == load.spans_per_request
        ids = {s.trace_id for s in spans}
        for s in spans:  # a workflow's id is its trace's, as text
            wf_ids = [a.value.string_value for a in s.attributes if a.key == "workflow.id"]
            assert wf_ids in ([], [f"wf-{text_id(s.trace_id).decode()}"])
        assert len(ids) == load.traces_per_request  # every trace of a request its own id
        assert not ids & seen  # and never one of an earlier request
        seen |= ids
    assert stats["cpu_s"] > 0
    assert stats["started_at"] < stats["ended_at"]


@pytest.mark.parametrize(("client", "connections"), [*CLIENTS, _nghttp2(2)])
def test_load_generator_counts_refused_requests(client: str, connections: int) -> None:
    got: list[bytes] = []
    server, port = _server(got, refuse_every=3)
    try:
        load = Load(rate=4000.0, seconds=0.5, in_flight=4, client=client, connections=connections)
        stats = run_load(f"127.0.0.1:{port}", load)
    finally:
        server.stop(None)
    refused = len(got) // 3
    assert refused > 0
    assert stats["failed_requests"] == refused
    assert stats["sent_spans"] == (len(got) - refused) * load.spans_per_request
    if client == "nghttp2":  # each refusal's status and the server's message: the cause
        from benchmarks.workers import _failures

        assert stats["codes"] == {"grpc 14": refused}
        assert _failures([stats]) == f'grpc 14 x{refused} ("refused by the test")'


def test_cpu_between_samples_is_interpolated() -> None:
    from benchmarks.workers import _cpu_at

    samples = [(10.0, 1.0), (11.0, 2.0), (12.0, 4.0)]
    assert _cpu_at(samples, 11.5) == 3.0
    assert _cpu_at(samples, 9.0) == 1.0 and _cpu_at(samples, 13.0) == 4.0
    assert _cpu_at([], 5.0) == 0.0


def test_report_gives_the_ratios_to_one_process(tmp_path: Path) -> None:
    runs = [
        Run("rotel", "cost", 100, 1.0, 0.1, 1.0, 100.0, None, 0.1),
        Run("rotel", "saturation", 1000, 1.0, 1.0, 1.0, 1000.0, None, 0.5),
        Run("agent x1", "cost", 100, 1.0, 0.2, 2.0, 100.0, 100, 0.1),
        Run(
            "agent x1", "saturation", 1000, 1.0, 4.0, 4.0, 1000.0, 1000, 1.0, processed_per_s=900.0
        ),
        Run("agent x2", "cost", 100, 1.0, 0.3, 3.0, 100.0, 100, 0.1, wakeups_per_request=2.5),
        Run(
            "agent x2",
            "saturation",
            1600,
            1.0,
            6.0,
            4.4,
            1600.0,
            1600,
            1.6,
            0.8,
            cores_sending=1.7,
            processed_per_s=1500.0,
            worker_cores="0.95 / 0.75",
            worker_connections="5 / 3",
            crossing_failed_items=12.0,
            # the harness: 0.25 CPU-s per 1M spans in the load generators (0.06 kernel), 0.02
            # in this benchmark, 0.01 in the supervisor
            loadgen_user_s=0.0003,
            loadgen_sys_s=0.0001,
            loadgen_startup_s=0.5,
            bench_cpu_s=0.00003,
            supervisor_cpu_s=0.000016,
            scrapes=2,
            scrape_cpu_ms=3.5,
            pools_exhausted=1,
        ),
    ]
    # the mid-load runs: x1 1.5 CPU-s per 1M and kept up, x2 1.8 and kept 0.9 of the rate
    runs += [
        Run("agent x1", "mid", 1000, 1.0, 1.5, 1.5, 1000.0, 1000, 0.1, rate=1000.0),
        Run("agent x2", "mid", 1000, 1.0, 1.8, 1.8, 900.0, 1000, 0.1, rate=1000.0),
    ]
    runs[5].scrapes_cpu_s = 0.007  # its two scrapes' 3.5 ms, taken out of its CPU-s
    out = tmp_path / "w.md"
    report(runs, out, "note", 2)
    text = out.read_text()
    assert (
        "| agent x2 | 3.00 | 1.50x | 2.50 | 1.80 | 1.20x | 0.90 | 4.40 | 1.10x | 1,600 | 1.60x | "
        "500.00 (0.80) | 1.70 | 1,500 | 1.67x | 0.25 (0.06) / 0.02 / 0.01 | 3.5 | 3 |" in (text)
    )
    assert "| agent x1 | 2.00 | 1.00x | 0.00 | 1.50 | 1.00x | 1.00 | 4.00 |" in text
    assert "is read on the mid-load figure" in text
    assert (
        "| agent x1 | saturation | 1000 | 0 | 1.0 | 4.0 | 4.0 | 1,000 | 1000 | 1.0 (0.0) | 0.0 | "
        "900 | 0.0 | 0.0 | 0.0 |  |  | 0 | 0.000 / 0.000 (0.00) | 0.000 | 0.000 | 0 | 0.0 | 0.0 | "
        "0 | 0 |" in text
    )
    assert (
        "| 1.7 | 1,500 | 0.0 | 0.0 | 0.0 | 0.95 / 0.75 | 5 / 3 | 12 | 0.000 / 0.000 (0.50) | "
        "0.000 | 0.000 | 2 | 3.5 | 0.007 | 1 | 0 |" in text
    )
    assert "| agent x2 | mid | 1000 |" in text and "| 1,000 |\n" in text
    assert "by cause" not in text  # no failed request, no list of causes
    from benchmarks.workers import _where_cores_went

    runs[5].others_cores = 0.2
    assert _where_cores_went(runs, ["agent x2"], cpus=2) == [
        "Where the cores went while the saturation load was sent (medians):",
        "",
        "* agent x2, saturation: of 2 cores, the server 1.70, the load generators 0.00, this "
        "benchmark 0.00, other processes 0.20, unused 0.10",
    ]
    runs[3].failures = 'grpc 8 x128 ("processor workflow cannot pass released traces on")'
    report(runs, out, "note", 2)
    assert (
        '* agent x1, saturation: grpc 8 x128 ("processor workflow cannot pass released traces '
        'on")' in out.read_text()
    )


def test_connections_are_counted_per_process_and_port() -> None:
    """The benchmark's placement figure: the client connections a process serves on a port."""
    import socket

    import psutil

    from benchmarks.workers import _connections, _workers

    me = psutil.Process()
    assert _workers(me) == [me]  # no worker children: the process itself
    server = socket.create_server(("127.0.0.1", 0))
    idle = socket.create_server(("127.0.0.1", 0))  # a port nobody connected to
    port = server.getsockname()[1]
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
    accepted = [server.accept()[0] for _ in clients]
    try:
        # the accepted sockets have the port as local port (the clients' is another one)
        assert _connections(me, port) == 3
        assert _connections(me, idle.getsockname()[1]) == 0
    finally:
        for s in (*clients, *accepted, server, idle):
            s.close()


def test_report_without_one_process_gives_no_ratios(tmp_path: Path) -> None:
    """``--servers 2``: no ``agent x1`` run to divide by; the report still comes out (it used to
    end in a ``KeyError`` after the runs), its ratios ``nan``."""
    runs = [
        Run("agent x2", "cost", 100, 1.0, 0.3, 3.0, 100.0, 100, 0.1),
        Run("agent x2", "saturation", 1600, 1.0, 6.0, 4.4, 1600.0, 1600, 1.6),
    ]
    out = tmp_path / "w.md"
    report(runs, out, "note", 2)
    assert "| agent x2 | 3.00 | nanx |" in out.read_text()


def _trace_ids(raw: bytes) -> list[bytes]:
    req = ExportTraceServiceRequest.FromString(raw)
    return [s.trace_id for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]


@pytest.mark.parametrize(("client", "connections"), [*CLIENTS, _nghttp2(2)])
def test_every_server_is_sent_the_same_pre_encoded_requests(
    client: str, connections: int, tmp_path: Path
) -> None:
    """The requests are encoded once into a file (``write_requests``) and every server is sent
    its bytes, each load generator its own slice: two servers receive the same requests, byte
    for byte, every trace with its own id; a load built in the generator with a seed is the
    same for two servers too (agent_pipeline's rotel and gateway runs), without one it is not."""
    from benchmarks.agent_pipeline import read_requests, write_requests

    path = tmp_path / "requests.bin"
    write_requests(path, Load(id_seed=1), 12)
    received: list[list[bytes]] = []
    for first in (0, 0, 6):
        got: list[bytes] = []
        server, port = _server(got)
        try:
            load = Load(
                rate=4000.0,
                seconds=0.3,
                in_flight=4,
                client=client,
                connections=connections,
                requests_file=str(path),
                requests_first=first,
                requests_count=6,
            )
            stats = run_load(f"127.0.0.1:{port}", load)
        finally:
            server.stop(None)
        assert stats["failed_requests"] == 0 and stats["pool_requests"] == 6
        received.append(sorted(got))
    assert received[0] == received[1]  # two servers, the same bytes
    assert received[0] == sorted(bytes(v) for v in read_requests(str(path), 0, 6))
    ids = [i for raw in received[0] + received[2] for i in _trace_ids(raw)]
    assert len(set(ids)) == len(ids) // 10  # 10 spans a trace, no trace id twice
    built: list[list[bytes]] = []
    for seed in (7, 7, 0, 0):
        got = []
        server, port = _server(got)
        try:
            run_load(
                f"127.0.0.1:{port}", Load(rate=4000.0, seconds=0.2, id_seed=seed, client=client)
            )
        finally:
            server.stop(None)
        built.append(sorted(got))
    assert built[0] == built[1] and built[0]
    assert not set(built[2]) & set(built[3])


def test_a_load_generator_stops_when_its_requests_run_out(tmp_path: Path) -> None:
    """A saturation load whose file slice is sent before its seconds are over stops there and
    says so (``pool_exhausted``): its rate is over the sending it did."""
    from benchmarks.agent_pipeline import write_requests

    path = tmp_path / "requests.bin"
    write_requests(path, Load(id_seed=1), 8)
    got: list[bytes] = []
    server, port = _server(got)
    try:
        load = Load(rate=1e9, seconds=60.0, in_flight=4, client="nghttp2", requests_file=str(path))
        stats = run_load(f"127.0.0.1:{port}", load) if _native_client() else None
    finally:
        server.stop(None)
    if stats is None:
        pytest.skip("libnghttp2 module not built")
    assert stats["pool_exhausted"] and len(got) == 8
    assert stats["sent_spans"] == 8 * load.spans_per_request and stats["elapsed"] < 30
    assert stats["cpu_user_s"] + stats["cpu_sys_s"] == pytest.approx(stats["cpu_s"])


@pytest.mark.skipif(not _native_client(), reason="libnghttp2 module not built")
def test_connections_are_counted_once_every_load_generator_sends() -> None:
    """The placement figure (client connections per worker) used to be read ~2 s after the load
    generators were launched, before slow-starting ones had connected (0 / 0 on a loaded
    machine); it is read once every generator said it sends (``during``)."""
    import psutil

    from benchmarks.workers import _connections, _loads

    got: list[bytes] = []
    server, port = _server(got)
    seen: list[int] = []

    def during(begin: float) -> None:
        time.sleep(0.3)  # the server's accept
        seen.append(_connections(psutil.Process(), port))

    try:
        load = Load(rate=4000.0, seconds=1.0, client="nghttp2", connections=2)
        stats = _loads(f"127.0.0.1:{port}", load, 2, during)
    finally:
        server.stop(None)
    assert seen == [4]  # 2 generators x 2 connections, all in this process's server
    assert all(s["failed_requests"] == 0 for s in stats)


@pytest.mark.parametrize("drained", [True, False])
def test_no_scrape_of_the_server_is_inside_a_cost_window(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, drained: bool
) -> None:
    """A merged scrape of N workers costs more than one process's: the counters a cost run
    needs are read before its CPU window and after it, never inside (x1 and x2 alike). A drain
    not over at the window's end is polled: that scrape is inside, counted and its cost taken
    out of the CPU-s (shown apart)."""
    import contextlib
    import io
    import urllib.request
    from collections.abc import Iterator

    import psutil

    from benchmarks import workers as bench

    events: list[str] = []
    sent = 1000
    outs = iter([0] if drained else [0, 600])  # the base, then what the scrapes after see

    class _Body(io.BytesIO):
        def __enter__(self) -> _Body:
            return self

        def __exit__(self, *exc: object) -> None:
            self.close()

    def urlopen(url: str, timeout: float = 0.0) -> _Body:
        events.append("scrape")
        out = next(outs, sent)
        acc = 0 if events.count("scrape") == 1 else sent
        return _Body(
            f"# TYPE otelcol_receiver_accepted_spans counter\n"
            f"otelcol_receiver_accepted_spans_total {acc}\n"
            f"# TYPE otelcol_exporter_sent_spans counter\n"
            f"otelcol_exporter_sent_spans_total {out}\n".encode()
        )

    cpu = iter(range(1, 1000))

    def tree_cpu(root: psutil.Process) -> float:
        events.append("cpu")
        return float(next(cpu))

    @contextlib.contextmanager
    def server(kind: str, workers: int, workdir: Path) -> Iterator[tuple[Any, str, int]]:
        yield psutil.Process(), "127.0.0.1:1", 1

    def loads(endpoint: str, load: Load, clients: int, during: Any = None) -> list[Any]:
        if load.id_seed == 0:  # the warm-up
            return [{"sent_spans": 0}]
        now = time.time()
        events.append("load")
        return [{"sent_spans": sent, "started_at": now - 1, "ended_at": now}]

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    monkeypatch.setattr(bench, "_server", server)
    monkeypatch.setattr(bench, "_loads", loads)
    monkeypatch.setattr(bench, "_tree_cpu", tree_cpu)
    monkeypatch.setattr(bench, "DRAIN_S", 0.0, raising=False)
    monkeypatch.setattr(bench.time, "sleep", lambda s: None)
    r = bench.measure("agent", 2, "cost", Load(rate=1000, seconds=1.0, id_seed=1), 1, tmp_path)
    window = events[events.index("cpu") : len(events) - events[::-1].index("cpu")]
    assert r.out_spans == sent and r.sent_spans == sent
    if drained:
        assert "scrape" not in window, events
        assert r.scrapes == 0 and r.scrapes_cpu_s == 0.0
    else:  # one scrape found 600 of 1000 out: inside the window, counted, its cost taken out
        assert window.count("scrape") == 1, events
        assert r.scrapes == 1 and r.scrapes_cpu_s == round(r.scrape_cpu_ms / 1000, 4)
