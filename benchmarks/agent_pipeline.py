"""Benchmark: the agent pipeline on workflow-shaped traces, beside rotel's plain forward path.

Cases (each on the same generated load, the server pinned to CPU 0, the load generator and the
sink to CPU 1):

* ``rotel``: rotel-agent, OTLP/gRPC in -> OTLP/gRPC out (its plain forward path);
* ``grpc floor``: a grpc.aio server that takes each request as raw bytes and answers at once
  (``benchmarks/grpc_floor.py``): what grpcio itself costs any Python receiver per request;
* ``forward``: this gateway, otlp -> batch -> otlp;
* ``agent``: otlp -> memory_limiter -> workflow -> batch -> otlp, with agentmetrics feeding a
  metrics pipeline (-> otlp); ``agent + spanmetrics`` adds the spanmetrics connector.

Every server exports OTLP/gRPC to one sink (a rotel-agent with a blackhole exporter), gzip
compressed as the default settings of the gateway, the Collector and rotel are
(``--compression none`` for uncompressed); ``--exporter blackhole`` uses blackhole exporters
instead (``benchmarks/blackhole.py``, rotel's ``--exporter blackhole``). Then the agent pipeline
again while one dimension grows: attributes per span, spans per trace, traces held (the workflow
wait times the trace rate) and metric series (distinct workflow types x agents x tools).

Reported per case: CPU seconds of the server process per million spans (user + system, from
the start of the load until everything sent has been exported), peak RSS, and whether every
span came out. Write-up: ``benchmarks/results/agent-pipeline.md``.

    python -m benchmarks.agent_pipeline --rate 10000          # all cases (raw table to build/)
    python -m benchmarks.agent_pipeline --quick               # fewer, shorter cases
    python -m benchmarks.agent_pipeline --only "agent pipeline" --repeat 3
    python -m benchmarks.agent_pipeline --traces-per-request 50   # 500 spans per request
    python -m benchmarks.agent_pipeline --tool-ids none   # tool calls without gen_ai.tool.call.id
    # this tree against another checkout (its own .venv), runs alternated, medians and ratio:
    python -m benchmarks.agent_pipeline --only "agent pipeline" --rate 10000 --repeat 5 \
        --baseline ../base
    # where each run's CPU goes (py-spy from the measured load's start; benchmarks/profile.py):
    python -m benchmarks.agent_pipeline --only "agent pipeline" --rate 100000 --profile build/spy
    python -m benchmarks.profile build/spy/*.txt

The tool-call spans carry ``gen_ai.tool.call.id`` as pydantic-ai's ``execute_tool`` does (one
per call): the recorded real libraries' tool spans all carry such ids (call ids, JSON-RPC
ids), which decide what the agentmetrics join can do in C; ``--tool-ids none`` gives the
id-less load of the figures before (issue 12's id-keyed join).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import psutil
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from benchmarks import profile as spy

ROOT = Path(__file__).resolve().parent.parent
# set BENCH_PROFILE=/path/out.prof to run the gateway under cProfile (one case at a time)
PROFILE = (
    ["-m", "cProfile", "-o", os.environ["BENCH_PROFILE"]] if os.environ.get("BENCH_PROFILE") else []
)
EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


@dataclass
class Load:
    """The shape and rate of the generated load."""

    spans_per_trace: int = 10
    attrs_per_span: int = 8
    traces_per_request: int = 20
    rate: float = 5000.0  # spans per second
    seconds: float = 10.0
    workflow_types: int = 4
    agents: int = 5
    tools: int = 5
    in_flight: int = 1  # requests a load generator keeps in flight (its answers awaited later)
    # "workflow": a workflow.<type> root (the gateway's own dialect); "http": an HTTP server
    # root above an invoke_agent span naming its agent (the GenAI conventions: the execution
    # is found with the dialect tables)
    root: str = "workflow"
    # the load generator's gRPC client: "grpcio", or "nghttp2" (benchmarks.loadgen's
    # LeanGrpcClient: libnghttp2 from one thread, a fraction of grpcio's CPU per request)
    client: str = "grpcio"
    # connections of one load generator ("nghttp2" client): requests take them in turn, so
    # that the kernel's SO_REUSEPORT spreads them over the workers as it would many clients'
    connections: int = 1
    # the join ids on the tool-call layers: "real" as the recorded real libraries put them
    # (tests/data/agent_sources: pydantic-ai's execute_tool carries gen_ai.tool.call.id, one per
    # call), "none" the id-less load of the earlier figures (--tool-ids none)
    tool_ids: str = "real"
    # the trace ids: 0 a random range per load generator process; else a range fixed by the
    # seed, so that every server given the same load gets the same requests, byte for byte
    # (rotel and the gateway, one worker or two); a server given two loads (a warm-up, then
    # the measured load) needs two seeds, or its traces would repeat
    id_seed: int = 0
    # pre-encoded requests (:func:`write_requests`) to send instead of building them: the
    # file's requests [requests_first, requests_first + requests_count) (count 0: all), the
    # same bytes for every server the file is sent to
    requests_file: str = ""
    requests_first: int = 0
    requests_count: int = 0
    # the most memory (MiB) a load generator spends on the requests it builds ahead of a
    # saturation run (a fixed-rate run builds all it sends); a run that sent them all before
    # its seconds were over stops early (``pool_exhausted``)
    pool_mib: int = 512

    @property
    def spans_per_request(self) -> int:
        return self.spans_per_trace * self.traces_per_request


def _kv(key: str, value: Any) -> KeyValue:
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=str(value)))


def placeholder(k: int) -> bytes:
    """A 16-byte trace id marker replaced by a fresh id for every trace sent."""
    return b"\xee\xd1\x7a\x3c" * 3 + k.to_bytes(4, "big")


TEXT_ID_LEN = 36


def text_id(trace_id: bytes) -> bytes:
    """A trace id as the text of the run ids derived from it (its workflow id, its tool call
    ids): a UUID string, as agent run ids usually are (36 ASCII bytes). Its groups of at most
    12 hex digits never hold a card-like run of 13 digits: with bare hex, the redaction
    benchmark's card pattern matched in about one load in twelve (the random part of the ids
    is fixed per load) and sent every request of that run down redaction's decoding path."""
    h = trace_id.hex()  # str(uuid.UUID(bytes=trace_id)), without building a UUID (~10x cheaper)
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}".encode()


def hex_placeholder(k: int) -> bytes:
    """The marker of trace ``k``'s id as text (:func:`text_id`, in its workflow id and call
    ids), replaced by the fresh id's text: every workflow has its own id, as in real traffic."""
    return text_id(placeholder(k))


def marker_offsets(template: bytes, traces: int) -> list[tuple[int, int, bool]]:
    """Where each trace's id goes in ``template``: (offset, trace, in hex)."""
    at = []
    for k in range(traces):
        for mark, hexed in ((placeholder(k), False), (hex_placeholder(k), True)):
            i = template.find(mark)
            while i >= 0:
                at.append((i, k, hexed))
                i = template.find(mark, i + 1)
    return at


class Filler:
    """Writes fresh trace ids into one template (:func:`marker_offsets`) without a Python
    step per marker: the template is cut at its markers once; a request is the pieces joined
    with the ids (raw or as text, :func:`text_id`) put between them, which ``bytes.join`` and
    a slice assignment do in C (~30x cheaper than writing 260 markers one by one: the load
    generator's CPU goes to the server at saturation)."""

    def __init__(self, template: bytes, offsets: list[tuple[int, int, bool]], traces: int) -> None:
        at = sorted(offsets)
        pieces: list[bytes] = []
        prev = 0
        for i, _, hexed in at:
            pieces += [template[prev:i], b""]
            prev = i + (TEXT_ID_LEN if hexed else 16)
        pieces.append(template[prev:])
        self.pieces = pieces
        self.traces = traces
        # which id goes into each gap: trace k raw is k, as text traces + k
        self.order = [k + (traces if hexed else 0) for _, k, hexed in at]

    def fill(self, ids: list[bytes]) -> bytes:
        table = ids + [text_id(x) for x in ids]
        pieces = self.pieces.copy()
        pieces[1::2] = map(table.__getitem__, self.order)
        return b"".join(pieces)


def fill(template: bytes, offsets: list[tuple[int, int, bool]], ids: list[bytes]) -> bytes:
    """``template`` with the trace ids ``ids`` written at ``offsets`` (see marker_offsets);
    for many requests of one template, a :class:`Filler` (this makes one each call)."""
    return Filler(template, offsets, len(ids)).fill(ids)


def build_template(load: Load, variant: int) -> bytes:
    """One request of ``traces_per_request`` workflow traces, trace ids as placeholders.

    A trace: ``workflow.<type>`` root, ``invoke_agent``, then children cycling through an MCP
    tool call, an A2A send/receive pair, a database call and an HTTP server span; every 5th
    workflow fails (its first tool call too). A tool call (``execute_tool``) carries the
    ``gen_ai.tool.call.id`` pydantic-ai gives it (``pyd_ai_`` and a hex id; here the trace id and
    the span's index: unique per call, as in real traffic) unless ``load.tool_ids`` is
    ``"none"``."""
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.extend([_kv("service.name", "bench-agents"), _kv("host.name", "h1")])
    ss = rs.scope_spans.add()
    ss.scope.name = "bench"
    t0 = 1_700_000_000_000_000_000
    for k in range(load.traces_per_request):
        n = variant * load.traces_per_request + k
        trace_id = placeholder(k)
        wf_type = f"type{n % load.workflow_types}"
        agent = f"agent-{n % load.agents}"
        failed = n % 5 == 0
        pad = [_kv(f"app.attr.{i}", f"value-{i}-{n % 7}") for i in range(load.attrs_per_span)]

        def add(
            span_id: int,
            parent: int,
            name: str,
            kind: int,
            attrs: list[KeyValue],
            duration_ms: float,
            error: str | None = None,
            *,
            _trace_id: bytes = trace_id,
            _pad: list[KeyValue] = pad,
            _n: int = n,
        ) -> None:
            s = ss.spans.add(
                trace_id=_trace_id,
                span_id=(span_id + 1).to_bytes(8, "big"),
                parent_span_id=(parent + 1).to_bytes(8, "big") if parent >= 0 else b"",
                name=name,
                kind=kind,  # type: ignore[arg-type]
                start_time_unix_nano=t0 + span_id * 1000,
                end_time_unix_nano=t0 + span_id * 1000 + int(duration_ms * 1e6),
            )
            s.attributes.extend(attrs)
            s.attributes.extend(_pad[: max(0, load.attrs_per_span - len(attrs))])
            if error:
                s.status.CopyFrom(Status(code=Status.STATUS_CODE_ERROR, message=error))

        if load.root == "http":
            add(
                0,
                -1,
                "POST /chat",
                Span.SPAN_KIND_SERVER,
                [_kv("http.request.method", "POST"), _kv("http.route", "/chat")],
                800 + 100 * (n % 30),
                "tool chain failed" if failed else None,
            )
            add(
                1,
                0,
                f"invoke_agent {wf_type}",
                Span.SPAN_KIND_INTERNAL,
                [_kv("gen_ai.operation.name", "invoke_agent"), _kv("gen_ai.agent.name", agent)],
                700,
                "tool chain failed" if failed else None,
            )
        else:
            add(
                0,
                -1,
                f"workflow.{wf_type}",
                Span.SPAN_KIND_INTERNAL,
                [
                    _kv("workflow.id", "wf-" + hex_placeholder(k).decode()),
                    _kv("gen_ai.agent.id", agent),
                ],
                800 + 100 * (n % 30),
                "tool chain failed" if failed else None,
            )
            add(
                1,
                0,
                "invoke_agent",
                Span.SPAN_KIND_INTERNAL,
                [_kv("gen_ai.operation.name", "invoke_agent"), _kv("gen_ai.agent.id", agent)],
                700,
            )
        for i in range(2, load.spans_per_trace):
            which = (i - 2) % 5
            if which == 0:
                add(
                    i,
                    1,
                    f"execute_tool tool{i % load.tools}",
                    Span.SPAN_KIND_CLIENT,
                    [
                        _kv("gen_ai.operation.name", "execute_tool"),
                        _kv("gen_ai.tool.name", f"tool{(n + i) % load.tools}"),
                        _kv("mcp.server.name", "server-a"),
                        *(
                            [
                                _kv(
                                    "gen_ai.tool.call.id",
                                    f"pyd_ai_{hex_placeholder(k).decode()}{i:02x}",
                                )
                            ]
                            if load.tool_ids == "real"
                            else []
                        ),
                    ],
                    20 + 10 * (i % 9),
                    "connection refused" if failed and i == 2 else None,
                )
            elif which == 1:
                add(
                    i,
                    1,
                    "a2a send",
                    Span.SPAN_KIND_PRODUCER,
                    [
                        _kv("a2a.message.type", "task"),
                        _kv("a2a.recipient.type", "worker"),
                        _kv("a2a.priority", "high"),
                    ],
                    1,
                )
            elif which == 2:
                add(
                    i,
                    i - 1,
                    "a2a receive",
                    Span.SPAN_KIND_CONSUMER,
                    [_kv("a2a.message.type", "task"), _kv("a2a.sender.type", "planner")],
                    3,
                )
            elif which == 3:
                add(
                    i,
                    1,
                    "SELECT orders",
                    Span.SPAN_KIND_CLIENT,
                    [_kv("db.system.name", "postgresql"), _kv("db.operation.name", "SELECT")],
                    4,
                )
            else:
                add(
                    i,
                    1,
                    "GET /api/items/{id}",
                    Span.SPAN_KIND_SERVER,
                    [
                        _kv("http.request.method", "GET"),
                        _kv("http.route", "/api/items/{id}"),
                        _kv("http.response.status_code", 200),
                    ],
                    12,
                )
    return bytes(req.SerializeToString())


# -- the load generator (a separate process, pinned to the other CPU) ----------------------------
def trace_id_base(seed: int) -> int:
    """The number before a load's first trace id (ids are ``base + 1``, ``base + 2``, ...,
    16 bytes big-endian): seed 0 a random one (each load generator process its own), else one
    fixed by the seed (the same ids for every server sent this load)."""
    if seed == 0:
        head = os.urandom(6)
    else:
        head = hashlib.sha256(f"benchmark trace ids {seed}".encode()).digest()[:6]
    return int.from_bytes(head, "big") << 40


def build_requests(load: Load, first: int, count: int, variants: int = 8) -> list[bytes]:
    """Requests ``first`` .. ``first + count - 1`` of ``load``: request ``r`` is template
    ``r % variants`` with trace ids ``base + r * traces_per_request + 1`` onwards
    (:func:`trace_id_base`): every trace its own id, the same bytes for the same seed."""
    templates = [build_template(load, v) for v in range(variants)]
    per = load.traces_per_request
    fillers = [Filler(t, marker_offsets(t, per), per) for t in templates]
    base = trace_id_base(load.id_seed)
    out = []
    for r in range(first, first + count):
        seq = base + r * per
        out.append(
            fillers[r % variants].fill([(seq + k + 1).to_bytes(16, "big") for k in range(per)])
        )
    return out


def write_requests(path: Path, load: Load, count: int, chunk: int = 256) -> None:
    """``count`` requests of ``load`` (:func:`build_requests`) pre-encoded into ``path`` (their
    bytes one after the other) and ``path.idx`` (their ``count + 1`` offsets, 8 bytes each):
    built once, sent by every load generator given the file (:func:`read_requests`), to every
    server, byte for byte."""
    import array

    offsets = array.array("Q", [0])
    with open(path, "wb") as f:
        for first in range(0, count, chunk):
            for data in build_requests(load, first, min(chunk, count - first)):
                f.write(data)
                offsets.append(offsets[-1] + len(data))
    Path(f"{path}.idx").write_bytes(offsets.tobytes())


def read_requests(path: str, first: int = 0, count: int = 0) -> list[memoryview]:
    """Requests ``first`` .. ``first + count - 1`` of a :func:`write_requests` file (count 0:
    all from ``first``), as views of the file mapped into memory (no copy: the page cache's,
    shared by every load generator of the file)."""
    import array
    import mmap

    offsets = array.array("Q")
    offsets.frombytes(Path(f"{path}.idx").read_bytes())
    last = len(offsets) - 1 if count == 0 else min(len(offsets) - 1, first + count)
    with open(path, "rb") as f:
        view = memoryview(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))
    return [view[offsets[r] : offsets[r + 1]] for r in range(first, last)]


def load_requests(load: Load) -> list[Any]:
    """The requests a load generator sends, all encoded before it starts: the load's
    ``requests_file`` slice, else built here (a fixed-rate load: all it sends; a saturation
    load, ``in_flight`` > 1: as many as ``pool_mib`` holds, at most what its rate would send)."""
    if load.requests_file:
        return read_requests(load.requests_file, load.requests_first, load.requests_count)
    total = max(1, int(load.rate * load.seconds / load.spans_per_request))
    if load.in_flight > 1:
        one = len(build_requests(load, 0, 1)[0])
        total = max(1, min(total, (load.pool_mib << 20) // one))
    return build_requests(load, 0, total)


def run_load(
    endpoint: str, load: Load, on_sending: Callable[[float], None] | None = None
) -> dict[str, Any]:
    """Send ``load`` from this process: requests encoded before the sending starts
    (:func:`load_requests`: from a file of pre-encoded requests or built here, fresh trace ids
    written into templates at known offsets), then nothing done per request but the send
    and the reading of answers; up to ``load.in_flight`` requests outstanding (a saturation
    run keeps several in flight so that the gateway, not the round trip, sets the pace).
    ``on_sending(time)`` is called once connected, as the sending starts.

    Besides what was sent: the process's CPU while sending (``cpu_s``, user and system
    apart) and before it (``startup_cpu_s``: imports, requests), and whether the requests ran
    out before ``load.seconds`` were over (``pool_exhausted``: the sending stopped there)."""
    import collections

    requests = load_requests(load)
    if load.client == "nghttp2":
        return _run_load_lean(endpoint, load, requests, on_sending)
    import grpc

    requests = [bytes(r) for r in requests]  # grpcio sends bytes only (a file's: copied once)

    channel = grpc.insecure_channel(endpoint, options=[("grpc.max_send_message_length", 64 << 20)])
    grpc.channel_ready_future(channel).result(timeout=20)
    export = channel.unary_unary(EXPORT_METHOD)
    interval = load.spans_per_request / load.rate
    total_requests = max(1, int(load.rate * load.seconds / load.spans_per_request))
    sent_spans = 0
    failures = 0
    window: collections.deque[Any] = collections.deque()
    depth = max(1, load.in_flight)

    def settle(fut: Any) -> None:
        nonlocal sent_spans, failures
        try:
            fut.result()
            sent_spans += load.spans_per_request
        except grpc.RpcError:
            failures += 1

    cpu0 = _own_cpu_split()
    started_at = time.time()
    if on_sending is not None:
        on_sending(started_at)
    start = time.monotonic()
    behind = 0.0
    stop = start + load.seconds
    exhausted = False
    for r in range(total_requests):
        if depth > 1 and time.monotonic() > stop:  # saturation: a duration, not a count
            break
        if r >= len(requests):
            exhausted = True
            break
        if depth == 1:
            try:
                export(requests[r], timeout=30)
                sent_spans += load.spans_per_request
            except grpc.RpcError:
                failures += 1
        else:
            if len(window) >= depth:
                settle(window.popleft())
            window.append(export.future(requests[r], timeout=30))
        due = start + (r + 1) * interval
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        else:
            behind = max(behind, now - due)
    while window:
        settle(window.popleft())
    elapsed = time.monotonic() - start
    cpu1 = _own_cpu_split()
    channel.close()
    return {
        "sent_spans": sent_spans,
        "failed_requests": failures,
        "elapsed": elapsed,
        "started_at": started_at,
        "ended_at": started_at + elapsed,
        **_cpu_stats(cpu0, cpu1),
        "achieved_rate": sent_spans / elapsed,
        "max_lag": behind,
        "pool_requests": len(requests),
        "pool_exhausted": exhausted,
    }


def _own_cpu() -> float:
    """CPU seconds of this process so far, every thread (grpcio's included)."""
    return sum(_own_cpu_split())


def _own_cpu_split() -> tuple[float, float]:
    """User and system CPU seconds of this process so far, every thread."""
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime


def _cpu_stats(cpu0: tuple[float, float], cpu1: tuple[float, float]) -> dict[str, float]:
    """The CPU of the sending (``cpu0`` -> ``cpu1``), user and system (the kernel's: sockets,
    loopback TCP) apart, and the process's CPU before it (start-up)."""
    return {
        "cpu_s": (cpu1[0] - cpu0[0]) + (cpu1[1] - cpu0[1]),
        "cpu_user_s": cpu1[0] - cpu0[0],
        "cpu_sys_s": cpu1[1] - cpu0[1],
        "startup_cpu_s": cpu0[0] + cpu0[1],
    }


def _run_load_lean(
    endpoint: str,
    load: Load,
    requests: list[Any],
    on_sending: Callable[[float], None] | None = None,
) -> dict[str, Any]:
    """:func:`run_load` with :class:`benchmarks.loadgen.LeanGrpcClient` (one thread,
    ``load.connections`` HTTP/2 connections taking the requests in turn, up to
    ``load.in_flight`` calls outstanding in all)."""
    from benchmarks.loadgen import LeanGrpcClient, wait_any

    clients = [LeanGrpcClient(endpoint, EXPORT_METHOD) for _ in range(max(1, load.connections))]

    def in_flight() -> int:
        return sum(c.in_flight for c in clients)

    interval = load.spans_per_request / load.rate
    total_requests = max(1, int(load.rate * load.seconds / load.spans_per_request))
    depth = max(1, load.in_flight)
    # which connection sends request r: every one in turn
    turns = [clients[r % len(clients)].send for r in range(len(clients))]
    cpu0 = _own_cpu_split()
    started_at = time.time()
    if on_sending is not None:
        on_sending(started_at)
    start = time.monotonic()
    stop = start + load.seconds
    behind = 0.0
    exhausted = total_requests > len(requests)
    if depth > 1:
        # saturation: as fast as the answers come, until the seconds are over (or the
        # requests are: pool_exhausted); what the server sent read after each send (its
        # answers, its flow-control window updates)
        exhausted = True
        n = len(turns)
        for r, body in enumerate(requests):
            while in_flight() >= depth:
                wait_any(clients, None)
            if time.monotonic() > stop:
                exhausted = False
                break
            turns[r % n](body)
            wait_any(clients, 0)
    else:
        for r in range(min(total_requests, len(requests))):
            while in_flight() >= depth:
                wait_any(clients, None)
            clients[r % len(clients)].send(requests[r])
            due = start + (r + 1) * interval
            now = time.monotonic()
            if due > now:
                wait_any(clients, due - now)
                while (now := time.monotonic()) < due:  # answers came early: wait the rest
                    wait_any(clients, due - now)
            else:
                behind = max(behind, now - due)
                wait_any(clients, 0)
    deadline = time.monotonic() + 60
    while in_flight() > 0 and time.monotonic() < deadline:
        wait_any(clients, deadline - time.monotonic())
    elapsed = time.monotonic() - start
    cpu1 = _own_cpu_split()
    ok = sum(c.ok for c in clients)
    codes: dict[str, int] = {}
    messages: dict[str, str] = {}
    for c in clients:
        for code, n in c.codes.items():
            codes[code] = codes.get(code, 0) + n
        for code, text in c.messages.items():
            messages.setdefault(code, text)
        c.close()
    unanswered = in_flight()
    if unanswered:  # no answer within the minute after the sending
        codes["unanswered"] = unanswered
    return {
        "sent_spans": ok * load.spans_per_request,
        "failed_requests": sum(c.failed for c in clients) + unanswered,
        "codes": codes,
        "messages": messages,
        "elapsed": elapsed,
        "started_at": started_at,
        "ended_at": started_at + elapsed,
        **_cpu_stats(cpu0, cpu1),
        "achieved_rate": ok * load.spans_per_request / elapsed,
        "max_lag": behind,
        "pool_requests": len(requests),
        "pool_exhausted": exhausted,
    }


# -- servers ---------------------------------------------------------------------------------------
def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


FORWARD = """
receivers:
  otlp: {{protocols: {{grpc: {{endpoint: "127.0.0.1:{port}"}}}}}}
processors:
  batch: {{timeout: 200ms, send_batch_size: {batch}, send_batch_max_size: {batch}}}
exporters:
{exporter_def}
service:
  pipelines:
    traces: {{receivers: [otlp], processors: [batch], exporters: [{exporter}]}}
  telemetry:
    logs: {{level: warn}}
    metrics: {{address: "127.0.0.1:{telemetry}"}}
"""

AGENT = """
receivers:
  otlp: {{protocols: {{grpc: {{endpoint: "127.0.0.1:{port}"}}}}}}
processors:
  memory_limiter: {{check_interval: 1s, limit_mib: 1024}}
  workflow: {{wait_duration: {wait}, max_traces: {max_traces}, max_bytes: {max_bytes}}}
  batch: {{timeout: 200ms, send_batch_size: {batch}, send_batch_max_size: {batch}}}
connectors:
  agentmetrics: {{metrics_flush_interval: 5s, aggregation_cardinality_limit: 100000}}
{spanmetrics_def}
exporters:
{exporter_def}
service:
  pipelines:
    traces:
      receivers: [otlp]
      processors: [memory_limiter, workflow, batch]
      exporters: [{exporter}, agentmetrics{spanmetrics_use}]
    metrics:
      receivers: [agentmetrics{spanmetrics_use}]
      exporters: [{exporter}]
  telemetry:
    logs: {{level: warn}}
    metrics: {{address: "127.0.0.1:{telemetry}"}}
"""


# the export compression of every server (--compression): gzip, the default settings' choice
COMPRESSION = {"value": "gzip"}

# --profile DIR: py-spy records each gateway case's measured load into DIR
SPY_PROFILE: dict[str, str | None] = {"dir": None}

# --equal-wait: the agent cases wait for the join's settling in every tree (_wait_joined)
EQUAL_WAIT = {"value": False}


def exporter_def(sink: str | None) -> tuple[str, str]:
    """The exporter section and the exporter's ID: the OTLP exporter to the sink, or the
    blackhole when there is no sink."""
    if sink is None:
        return "  blackhole:", "blackhole"
    compression = COMPRESSION["value"]
    return (
        f'  otlp: {{endpoint: "{sink}", tls: {{insecure: true}}, compression: {compression}}}',
        "otlp",
    )


@dataclass
class Case:
    """One benchmark case."""

    name: str
    server: str  # rotel | floor (grpc_floor.py) | forward | agent
    load: Load
    wait: str = "1s"
    max_traces: int = 100_000
    max_bytes: int = 256 * 1024 * 1024
    spanmetrics: bool = False
    batch: int = 8192  # send_batch_size = send_batch_max_size


@dataclass
class Result:
    case: str
    server: str
    spans_per_trace: int
    attrs_per_span: int
    rate: float
    sent_spans: int
    out_spans: int | None
    cpu_s: float
    cpu_s_per_million: float
    peak_rss_mib: float
    traces_held_peak: float | None
    series: float | None
    lag_s: float
    # the kernel's share of cpu_s_per_million (sockets, loopback TCP, page faults, timers)
    sys_s_per_million: float | None = None


def _telemetry_value(port: int, name: str, **labels: str) -> float | None:
    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return None
    total = 0.0
    found = False
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
                found = True
    return total if found else None


def tree_python(tree: Path) -> str:
    """The Python that runs the gateway of source tree ``tree``: this one for this tree, else
    the tree's own virtual environment (its dependencies and C extensions), else this one."""
    own = tree / ".venv" / "bin" / "python"
    if tree.resolve() != ROOT.resolve() and own.exists():
        return str(own)
    return sys.executable


@contextlib.contextmanager
def server(
    case: Case, workdir: Path, sink: str | None, overlay: str = "", cwd: Path = ROOT
) -> Iterator[tuple[psutil.Process, str, int]]:
    """The server of ``case`` (the gateway with ``overlay``, a config merged over the case's,
    run from the source tree ``cwd``)."""
    port = free_port()
    telemetry = free_port()
    exporter_text, exporter_id = exporter_def(sink)
    if case.server == "rotel":
        rotel = rotel_binary()
        args = [
            "taskset", "-c", "0", rotel, "start",
            "--otlp-grpc-endpoint", f"127.0.0.1:{port}",
            "--otlp-http-endpoint", f"127.0.0.1:{free_port()}",
            "--pid-file", str(workdir / "rotel.pid"),
            "--log-file", str(workdir / "rotel.log"),
        ]  # fmt: skip
        if sink is None:
            args += ["--exporter", "blackhole"]
        else:
            args += [
                "--exporter", "otlp",
                "--otlp-exporter-endpoint", f"http://{sink}",
                "--otlp-exporter-protocol", "grpc",
                "--otlp-exporter-compression", COMPRESSION["value"],
            ]  # fmt: skip
        env = dict(os.environ)
    elif case.server == "floor":
        args = [
            "taskset", "-c", "0", sys.executable, "-m", "benchmarks.grpc_floor",
            "--port", str(port),
        ]  # fmt: skip
        env = dict(os.environ)
    else:
        if case.server == "forward":
            text = FORWARD.format(
                port=port,
                telemetry=telemetry,
                exporter_def=exporter_text,
                exporter=exporter_id,
                batch=case.batch,
            )
        else:
            sm_def = (
                "  spanmetrics: {metrics_flush_interval: 5s, aggregation_cardinality_limit: 100000}"
                if case.spanmetrics
                else ""
            )
            text = AGENT.format(
                port=port,
                telemetry=telemetry,
                wait=case.wait,
                max_traces=case.max_traces,
                max_bytes=case.max_bytes,
                spanmetrics_def=sm_def,
                spanmetrics_use=", spanmetrics" if case.spanmetrics else "",
                exporter_def=exporter_text,
                exporter=exporter_id,
                batch=case.batch,
            )
        slug = "".join(c if c.isalnum() else "_" for c in case.name)
        config = workdir / f"{slug}.yaml"
        config.write_text(text)
        args = [
            "taskset",
            "-c",
            "0",
            tree_python(cwd),
            *PROFILE,
            "-m",
            "pipeline",
            "run",
            "--config",
            str(config),
        ]
        if overlay:
            extra = workdir / f"{slug}-overlay.yaml"
            extra.write_text(overlay)
            args.append(str(extra))
        env = {**os.environ, "PIPELINE_PLUGINS": "benchmarks.blackhole"}
    slug = "".join(c if c.isalnum() else "_" for c in case.name)
    log = open(workdir / f"{slug}.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=cwd, env=env)
    try:
        ps = psutil.Process(proc.pid)
        yield ps, f"127.0.0.1:{port}", telemetry
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


@contextlib.contextmanager
def sink_process(workdir: Path) -> Iterator[str]:
    """A rotel-agent with a blackhole exporter on CPU 1: where the OTLP exporters send."""
    port = free_port()
    args = [
        "taskset", "-c", "1", rotel_binary(), "start",
        "--otlp-grpc-endpoint", f"127.0.0.1:{port}",
        "--otlp-http-endpoint", f"127.0.0.1:{free_port()}",
        "--exporter", "blackhole",
        "--pid-file", str(workdir / "sink.pid"),
        "--log-file", str(workdir / "sink.log"),
    ]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        import grpc

        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=20)
        yield f"127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def rotel_binary() -> str:
    return shutil.which("rotel-agent") or str(
        Path(sys.executable).parent.parent
        / "lib"
        / f"python{sys.version_info.major}.{sys.version_info.minor}"
        / "site-packages"
        / "rotel"
        / "rotel-agent"
    )


def run_case(
    case: Case,
    workdir: Path,
    sink: str | None,
    overlay: str = "",
    around: Callable[[int], contextlib.AbstractContextManager[Any]] | None = None,
    cwd: Path = ROOT,
) -> Result:
    """One case: ``overlay`` is merged over the gateway's config; ``around(telemetry port)``
    is entered once the server started and left after the measurement (a browser watching the
    console)."""
    with (
        server(case, workdir, sink, overlay, cwd) as (ps, endpoint, telemetry),
        around(telemetry) if around is not None else contextlib.nullcontext(),
    ):
        # warm up: one small load, so start-up costs are not counted (its own trace ids: a
        # random range, not the measured load's)
        warm = replace(case.load, seconds=1.0, rate=min(case.load.rate, 2000), id_seed=0)
        _spawn_load(endpoint, warm)
        if case.server not in ("rotel", "floor"):
            _wait_out(telemetry, None, timeout=10, settle=_settle(case))
        base_out = _out_spans(telemetry) if case.server not in ("rotel", "floor") else 0.0
        if case.server == "agent":
            _wait_joined(telemetry, timeout=30)
        times0 = ps.cpu_times()
        cpu0 = times0.user + times0.system
        peak = {"rss": ps.memory_info().rss, "held": 0.0}
        stop = threading.Event()
        loaded = threading.Event()

        def sample() -> None:
            ticks = 0
            while not stop.is_set():
                ticks += 1
                with contextlib.suppress(psutil.Error):
                    peak["rss"] = max(peak["rss"], ps.memory_info().rss)
                # a scrape costs the server CPU too: read the held traces once a second only,
                # and only while the load runs (the most are held then)
                if case.server == "agent" and ticks % 5 == 0 and not loaded.is_set():
                    held = _telemetry_value(
                        telemetry, "otelcol_processor_workflow_traces_held", processor="workflow"
                    )
                    peak["held"] = max(peak["held"], held or 0.0)
                stop.wait(0.2)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        profiling = contextlib.ExitStack()
        spy_out = None
        if SPY_PROFILE["dir"] is not None and case.server not in ("rotel", "floor"):
            # from the measured load's start until its CPU is read (benchmarks/profile.py)
            tree = "this" if cwd == ROOT else "baseline"
            stem = f"{re.sub(r'[^a-z0-9]+', '-', case.name.lower())}-{tree}-{time.time_ns()}"
            spy_out = Path(SPY_PROFILE["dir"]) / f"{stem}.txt"
            profiling.enter_context(spy.recording(ps.pid, spy_out))
        # the measured load: the same requests, byte for byte, for every server (rotel's and
        # the gateway's runs, this tree's and the baseline's)
        stats = _spawn_load(
            endpoint, case.load if case.load.id_seed else replace(case.load, id_seed=1)
        )
        loaded_at = time.monotonic()
        loaded.set()
        out = None
        if case.server not in ("rotel", "floor"):
            expected = base_out + stats["sent_spans"]
            out = _wait_out(telemetry, expected, timeout=60, settle=_settle(case)) - base_out
            if case.server == "agent":
                # the connector's join settles a trace's tool calls when its window ends (10 s
                # by default), after the spans left: that CPU belongs to the run too
                _wait_joined(telemetry, timeout=30, loaded_at=loaded_at, held=_settle(case))
        else:
            time.sleep(0.5)  # rotel's batch timeout is 200 ms
        times1 = ps.cpu_times()
        cpu = times1.user + times1.system - cpu0
        profiling.close()
        if spy_out is not None and spy_out.exists():
            spy_out.rename(spy_out.with_name(f"{spy_out.stem}-spans{stats['sent_spans']}.txt"))
        stop.set()
        sampler.join()
        series = None
        if case.server == "agent":
            series = _telemetry_value(telemetry, "otelcol_connector_aggregation_series")
    return Result(
        case=case.name,
        server=case.server,
        spans_per_trace=case.load.spans_per_trace,
        attrs_per_span=case.load.attrs_per_span,
        rate=round(stats["achieved_rate"]),
        sent_spans=stats["sent_spans"],
        out_spans=int(out) if out is not None else None,
        cpu_s=round(cpu, 3),
        cpu_s_per_million=round(cpu / stats["sent_spans"] * 1e6, 2),
        sys_s_per_million=round((times1.system - times0.system) / stats["sent_spans"] * 1e6, 2),
        peak_rss_mib=round(peak["rss"] / 2**20, 1),
        traces_held_peak=peak["held"] if case.server == "agent" else None,
        series=series,
        lag_s=round(stats["max_lag"], 3),
    )


def _settle(case: Case) -> float:
    from pipeline.configtypes import parse_duration

    return parse_duration(case.wait) + 0.5 if case.server == "agent" else 0.5


def _out_spans(telemetry: int) -> float:
    """Spans the traces exporter (otlp or blackhole) delivered."""
    return _telemetry_value(telemetry, "otelcol_exporter_sent_spans_total") or 0.0


def _wait_out(telemetry: int, expected: float | None, timeout: float, settle: float) -> float:
    """Wait until the exporter has sent ``expected`` spans (or, when ``None``, until the count
    stops moving for ``settle`` seconds)."""
    deadline = time.monotonic() + timeout
    last = -1.0
    last_change = time.monotonic()
    while time.monotonic() < deadline:
        now_out = _out_spans(telemetry)
        if expected is not None and now_out >= expected:
            return now_out
        if now_out != last:
            last, last_change = now_out, time.monotonic()
        elif expected is None and time.monotonic() - last_change > settle:
            return now_out
        time.sleep(0.25)  # each poll is a scrape, which costs the server some CPU
    return last


# the agentmetrics connector's default join window (the benchmark's config keeps it): a trace
# is held from its first span's arrival for this long
JOIN_WINDOW_S = 10.0


# the agentmetrics connector's flush interval in the AGENT config: with no request coming, a
# trace whose window ended is settled by the next flush
FLUSH_S = 5.0


def _wait_joined(
    telemetry: int, timeout: float, loaded_at: float | None = None, held: float = 0.0
) -> None:
    """Wait until the agentmetrics connector holds no trace for its tool-call join (its
    window ended and a flush settled it; a tree without the join has no such gauge). The
    idle gateway costs ~1-1.5 ms of CPU a second meanwhile (update 4): ~0.02 s over a 10-15 s
    wait, ~2 % of a 10,000 spans/s run's CPU and ~0.3 % of a 100,000 spans/s run's.

    Each poll is a scrape of the gateway's own metrics, ~1 ms of its CPU (Update 25: 27 polls
    were ~0.27 CPU-s per 1M spans at 10,000 spans/s): when the load ended at ``loaded_at``
    (monotonic) and traces are pending, the last of them reached the connector at most
    ``held`` seconds later (the workflow wait and the batch timeout), its window ends
    ``JOIN_WINDOW_S`` after that and, with no request coming, the next flush (within
    ``FLUSH_S``) settles it: the second poll waits until then (one poll instead of ~10 at
    0.5 s from the window's end on, each ~1.9 ms of the gateway's CPU with its scrape thread:
    ~0.17 CPU-s per 1M spans at 10,000 spans/s, more than the ~3 ms of idle CPU the longer
    wait costs).

    With ``EQUAL_WAIT`` (``--equal-wait``), the first poll waits until then too, whatever the
    tree: a tree without the join (no such gauge) is measured over the same time after its
    load, so the CPU an idle gateway spends per second (timers, flushes: ~1 ms a second)
    counts alike in both trees of a comparison, and only the settling is the join's."""
    deadline = time.monotonic() + timeout
    if loaded_at is not None and EQUAL_WAIT["value"]:
        settled_by = loaded_at + held + JOIN_WINDOW_S + FLUSH_S
        time.sleep(max(0.0, min(settled_by, deadline) - time.monotonic()))
        loaded_at = None  # (then polled every 0.5 s)
    first = True
    while time.monotonic() < deadline:
        pending = _telemetry_value(telemetry, "otelcol_connector_agentmetrics_join_pending_traces")
        if not pending:
            return
        if first and loaded_at is not None:
            settled_by = loaded_at + held + JOIN_WINDOW_S + FLUSH_S
            time.sleep(max(0.0, min(settled_by, deadline) - time.monotonic()))
        else:
            time.sleep(0.5)
        first = False


def _spawn_load(endpoint: str, load: Load) -> dict[str, Any]:
    args = [
        "taskset", "-c", "1", sys.executable, "-m", "benchmarks.agent_pipeline",
        "--load-only", endpoint, "--load-json", json.dumps(asdict(load)),
    ]  # fmt: skip
    out = subprocess.run(args, capture_output=True, cwd=ROOT, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(
            f"the load generator failed (exit {out.returncode}):\n{out.stderr.decode()[-2000:]}"
        )
    stats: dict[str, Any] = json.loads(out.stdout.decode().strip().splitlines()[-1])
    return stats


def cases(quick: bool) -> list[Case]:
    seconds = 6.0 if quick else 10.0
    base = Load(seconds=seconds)
    out = [
        Case("rotel forward", "rotel", base),
        Case("grpc floor", "floor", base),
        Case("gateway forward", "forward", base),
        Case("agent pipeline", "agent", base),
        Case("agent + spanmetrics", "agent", base, spanmetrics=True),
    ]
    for attrs in (4, 32) if quick else (2, 16, 32, 64):
        # 8192 spans of 64 attributes make requests above gRPC's default 4 MiB message limit
        batch = 1024 if attrs >= 64 else 8192
        out.append(
            Case(f"attrs/span={attrs}", "agent", replace(base, attrs_per_span=attrs), batch=batch)
        )
        if not quick:
            out.append(
                Case(f"rotel attrs/span={attrs}", "rotel", replace(base, attrs_per_span=attrs))
            )
    for spt in (5, 50) if quick else (5, 25, 100):
        load = replace(base, spans_per_trace=spt, traces_per_request=max(1, 200 // spt))
        out.append(Case(f"spans/trace={spt}", "agent", load))
    for wait in ("200ms", "5s") if quick else ("200ms", "2s", "10s"):
        out.append(Case(f"wait={wait}", "agent", base, wait=wait))
    # the held traces bounded by max_bytes instead of by the wait (early releases counted)
    out.append(Case("max_bytes=16MiB", "agent", base, max_bytes=16 << 20))
    for types, agents, tools in (
        ((2, 2, 2), (40, 50, 50))
        if quick
        else (
            (2, 2, 2),
            (20, 20, 20),
            (100, 100, 100),
        )
    ):
        load = replace(base, workflow_types=types, agents=agents, tools=tools)
        out.append(Case(f"series types={types} agents={agents}", "agent", load))
    return out


def tree_commit(tree: Path) -> str:
    """The commit a source tree is at (short), or "unknown"."""
    out = subprocess.run(
        ["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    return out.stdout.strip() or "unknown"


def against_baseline(results: list[Result]) -> list[str]:
    """Per case run against a baseline tree: the runs of both, their medians and the ratio."""
    lines: list[str] = []
    for name in dict.fromkeys(r.case for r in results if not r.case.endswith(" @ baseline")):
        ours = [r.cpu_s_per_million for r in results if r.case == name]
        theirs = [r.cpu_s_per_million for r in results if r.case == f"{name} @ baseline"]
        if not theirs:
            continue
        if not lines:
            lines = [
                "",
                "| case | this tree (CPU-s per 1M spans) | baseline | median | median baseline "
                "| this / baseline |",
                "|---|---|---|---:|---:|---:|",
            ]
        mo, mt = statistics.median(ours), statistics.median(theirs)
        lines.append(
            f"| {name} | {', '.join(map(str, ours))} | {', '.join(map(str, theirs))} | "
            f"{mo:.2f} | {mt:.2f} | {mo / mt:.2f} |"
        )
    return lines


def report(results: list[Result], path: Path, note: str) -> None:
    lines = [
        "# Agent pipeline benchmark",
        "",
        note,
        "",
        "| case | server | spans/trace | attrs/span | rate (spans/s) | sent | out | CPU-s | "
        "CPU-s per 1M spans | of it sys | peak RSS MiB | traces held (peak) | series | "
        "load lag s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.case} | {r.server} | {r.spans_per_trace} | {r.attrs_per_span} | {r.rate} | "
            f"{r.sent_spans} | {r.out_spans if r.out_spans is not None else 'n/a'} | {r.cpu_s} | "
            f"{r.cpu_s_per_million} | "
            f"{r.sys_s_per_million if r.sys_s_per_million is not None else ''} | "
            f"{r.peak_rss_mib} | "
            f"{r.traces_held_peak if r.traces_held_peak is not None else ''} | "
            f"{r.series if r.series is not None else ''} | {r.lag_s} |"
        )
    lines += against_baseline(results)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--only", help="comma-separated case names to run (default: all)")
    p.add_argument("--rate", type=float, help="spans per second for every case")
    p.add_argument(
        "--traces-per-request",
        type=int,
        help="traces per request for every case (default 20: 200 spans per request)",
    )
    p.add_argument("--repeat", type=int, default=1, help="run each case this many times")
    p.add_argument(
        "--seconds",
        type=float,
        help="seconds of load for every case (default 10; longer runs "
        "read low rates more steadily)",
    )
    p.add_argument(
        "--exporter",
        choices=("otlp", "blackhole"),
        default="otlp",
        help="otlp: every server exports OTLP/gRPC to a rotel sink on CPU 1",
    )
    p.add_argument(
        "--compression",
        choices=("gzip", "none"),
        default="gzip",
        help="export compression of every server (default gzip, as the default settings)",
    )
    p.add_argument(
        "--tool-ids",
        choices=("real", "none"),
        default="real",
        help="join ids on the tool-call layers: as the real libraries put them (default), or "
        "none (the id-less load of the earlier figures)",
    )
    p.add_argument(
        "--baseline",
        metavar="TREE",
        help="also run every gateway case from the source tree TREE (another checkout, with its "
        "own .venv), alternated with this tree's run of the case, and give each case's median "
        "ratio: this tree / TREE",
    )
    p.add_argument(
        "--equal-wait",
        action="store_true",
        help="measure every agent case until the join's last window ended and a flush settled "
        "it, in a tree without the join too (the same time after the load in both trees of a "
        "--baseline comparison: idle CPU per second counts alike)",
    )
    p.add_argument(
        "--profile",
        metavar="DIR",
        help="record each gateway run with py-spy (--native, 100 Hz) from its measured load's "
        "start until its CPU is read, into DIR (summary: python -m benchmarks.profile DIR/*.txt; "
        "sampling pauses the gateway: these runs' CPU figures are not headline figures)",
    )
    p.add_argument("--out", default=str(ROOT / "build" / "benchmarks" / "agent-pipeline-raw.md"))
    p.add_argument("--load-only", help=argparse.SUPPRESS)
    p.add_argument("--load-json", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    COMPRESSION["value"] = a.compression
    EQUAL_WAIT["value"] = a.equal_wait
    SPY_PROFILE["dir"] = a.profile
    if a.load_only:
        load = Load(**json.loads(a.load_json))

        def sending(at: float) -> None:  # connected, the requests ready: the sending starts
            print(json.dumps({"sending": at}), flush=True)

        print(json.dumps(run_load(a.load_only, load, sending)), flush=True)
        return 0
    wanted = [w for w in (a.only or "").split(",") if w]
    selected = [c for c in cases(a.quick) if not wanted or any(w == c.name for w in wanted)]
    if a.rate:
        selected = [replace(c, load=replace(c.load, rate=a.rate)) for c in selected]
    if a.seconds:
        selected = [replace(c, load=replace(c.load, seconds=a.seconds)) for c in selected]
    if a.tool_ids != "real":
        selected = [replace(c, load=replace(c.load, tool_ids=a.tool_ids)) for c in selected]
    if a.traces_per_request:
        tpr = a.traces_per_request
        selected = [replace(c, load=replace(c.load, traces_per_request=tpr)) for c in selected]
    results = []
    keep = os.environ.get("BENCH_KEEP")  # keep the configs and logs in this directory
    with (
        (
            contextlib.nullcontext(keep)
            if keep
            else tempfile.TemporaryDirectory(prefix="agent-bench-")
        ) as tmp,
        contextlib.ExitStack() as stack,
    ):
        sink = stack.enter_context(sink_process(Path(tmp))) if a.exporter == "otlp" else None
        baseline = Path(a.baseline) if a.baseline else None
        for case in [c for c in selected for _ in range(a.repeat)]:
            r = run_case(case, Path(tmp), sink)
            print(json.dumps(asdict(r)), flush=True)
            results.append(r)
            if baseline is not None and case.server in ("forward", "agent"):
                b = run_case(case, Path(tmp), sink, cwd=baseline)
                b = replace(b, case=f"{case.name} @ baseline")
                print(json.dumps(asdict(b)), flush=True)
                results.append(b)
    note = (
        f"Generated by `python -m benchmarks.agent_pipeline` on {time.strftime('%Y-%m-%d %H:%M')} "
        f"UTC; {os.cpu_count()} CPUs; server on CPU 0, load generator on CPU 1; exporter: "
        f"{a.exporter}"
        + (
            f" ({a.compression}, to a rotel blackhole sink on CPU 1)"
            if a.exporter == "otlp"
            else ""
        )
    )
    if a.baseline:
        note += f"; baseline: the gateway of `{a.baseline}` ({tree_commit(Path(a.baseline))})"
    report(results, Path(a.out), note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
